"""What one forward pass of an input shape shows the collector, before it computes any gradient (`discover`).

The factored engine needs, per factored module, the shape and dtype of every call's output (it adds a zero
perturbation of that shape to take the output-gradient there: `GradientCollector._factored`); the plan drops the
modules never called and the tensors used outside their module's forward (`selfcheck.used_outside`). The output head
is the nn.Linear whose output is the model's output (`is_head`): a sequence model backpropagates through it once,
not at every position. The outputs' shape checks the references.
"""
from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .calls import checked_outputs, output_tensor
from .selfcheck import used_outside


def plan_modules(plan: dict[str, tuple[str, str]]) -> dict[str, list[str]]:
    """Module name -> attributes ("weight", "bias") of its chosen tensors, for the factored ones (`plan`: tensor
    name -> (module name, attribute), as `factored.factorable` gives it)."""
    by_module: dict[str, list[str]] = {}
    for m, attr in plan.values():
        by_module.setdefault(m, []).append(attr)
    return by_module


def discover(
    model: nn.Module,
    forward: Callable[[nn.Module, Tensor], Tensor],
    plan: dict[str, tuple[str, str]],
    params: dict[str, nn.Parameter],
    sequence: bool,
    x: Tensor,
) -> dict:
    """For one item of `x`'s shape: its outputs' shape ([positions,] out), the shape and dtype of every
    call's output of the factored modules, the name of the nn.Linear whose output is the model's output
    (None if there is none, or if the output is not exactly that Linear of its input, e.g. a hook changed
    it), and the factored tensors used outside their module's forward (name -> the torch operation)."""
    modules = list(plan_modules(plan))
    seen: dict[str, list] = {m: [] for m in modules}
    linear_calls: dict[str, list] = {}
    handles = [
        model.get_submodule(m).register_forward_hook(
            lambda mod, args, out, m=m: seen[m].append((out.shape, out.dtype)), prepend=True)
        for m in modules
    ]
    for name, module in model.named_modules():
        if type(module) is nn.Linear:
            handles.append(module.register_forward_hook(
                lambda mod, args, out, name=name: linear_calls.setdefault(name, []).append((args[0], out))))
    tracking = used_outside(model, plan, params) if plan else nullcontext({})
    try:
        # with gradients on, so that a use of a weight counts only where a gradient could flow
        with tracking as outside, torch.enable_grad():
            out = output_tensor(forward(model, x[:1]))
    finally:
        for h in handles:
            h.remove()
    checked_outputs(out, 1, sequence)
    head = [n for n, calls in linear_calls.items() if is_head(model, n, calls, out)]
    return {"calls": seen, "head": head[0] if head else None, "outside": outside, "out_shape": tuple(out.shape[1:])}


@torch.no_grad()
def is_head(model: nn.Module, name: str, calls: list[tuple[Tensor, Tensor]], out: Tensor) -> bool:
    """Whether the nn.Linear `name` of `model`, called as `calls` ((input, output) per call), made the model's output
    `out` as F.linear of its input: called once, its output returned as is, its forward and output unchanged."""
    if len(calls) != 1 or calls[0][1] is not out:
        return False
    module = model.get_submodule(name)
    return "forward" not in vars(module) and torch.allclose(F.linear(calls[0][0], module.weight, module.bias), out)
