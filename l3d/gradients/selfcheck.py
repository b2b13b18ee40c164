"""The fast engine checks itself: factored per-sample gradients against plain autograd, once per collector.

The factored engine (`factored.py`) builds a known module's weight gradient from what the module's forward saw,
    g_i = Σ_p δ_ip a_ipᵀ          δ: gradient at the module's raw output,  a: its input as forward got it
which is the whole gradient only if the weight reaches the output through that forward alone.

Up front, on the first forward of every input shape (`used_outside`), it looks for a factored weight whose
value also enters a torch operation, with gradients enabled, outside its module's forward (a tied decoder
`F.linear(h, enc.weight.t())`): that tensor is not factored. Module forward hooks and pre-hooks need nothing:
the engine adds its perturbation to the raw output before any module hook runs and captures the input as
forward receives it, so the chain rule through the hooks is exact. Global hooks
(`register_module_forward_hook`) run before the engine's and may change the output; they are named
(`hook_suspects`) when a tensor fails the check below.

Then on the collector's first call (`GradientCollector._self_check`) a few samples P (up to 4 items; for
sequence models 2 items at 2 positions each, the middle and the last: `probe_positions`) get references
y_ref = y + σ z (z ~ N(0, 1) from a fixed seed, σ the outputs' standard deviation: a generic output direction,
whatever the user's references are), and every chosen tensor t's per-sample gradients G_t (P, *shape) from the
collector are compared with A_t from plain autograd, one `torch.autograd.grad` per sample (`autograd_gradients`):
    e_t = ||G_t − A_t||_F / (||A_t||_F + √ε ||A||_F)      (A: all chosen tensors side by side)
and t passes if e_t ≤ √ε, half the digits of the arithmetic (ε its machine epsilon, `tolerance`): 1.5e-8 in
float64, 3.5e-4 in float32 on a CPU, 0.031 in float32 on CUDA (TF32 convolutions and matmuls), 0.088 in
bfloat16. Rounding leaves e_t near ε; the defects this guards against are off by tens of percent (a tied
decoder: up to 83 %).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torch.nn.modules import module as torch_module
from torch.overrides import TorchFunctionMode

from ..divergences import divergence

PROBE_ITEMS = 4              # items of a vector model's probe
PROBE_SEQUENCE_ITEMS = 2     # items of a sequence model's probe, each at `probe_positions`
PROBE_SEED = 0

# torch functions that return a tensor from a weight without passing it a gradient
_NO_GRADIENT = {"detach", "detach_", "data", "grad", "requires_grad_", "retain_grad"}


def tolerance(dtype: torch.dtype, device: torch.device) -> float:
    """√ε, the self-check's relative tolerance, for gradients computed in `dtype` on `device`.

    ε is the dtype's machine epsilon, or for float32 the reduced precision torch may use instead: TF32
    (ε = 2⁻¹⁰) on CUDA, where convolutions use it by default, or with float32 matmul precision "high";
    bfloat16 (ε = 2⁻⁷) with precision "medium".
    """
    eps = torch.finfo(dtype).eps
    if dtype == torch.float32:
        precision = torch.get_float32_matmul_precision()
        if precision == "medium":
            eps = 2.0 ** -7
        elif precision == "high" or device.type == "cuda":
            eps = 2.0 ** -10
    return math.sqrt(eps)


# --- up front: a weight used outside its module's forward -------------------------------------------------
def _name(func: Callable) -> str:
    """'t', 'linear', or for an attribute read such as `w.T` the attribute's name."""
    name = getattr(func, "__name__", repr(func))
    if name == "__get__":
        name = getattr(getattr(func, "__self__", None), "__name__", name)
    return name


def _tensors(value: object) -> Iterator[Tensor]:
    if isinstance(value, Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _tensors(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _tensors(v)


class _UseTracker(TorchFunctionMode):
    """Records the torch operations that compute a tensor from a tracked weight outside its module's forward."""

    def __init__(self, owners: dict[int, tuple[str, str]], inside: dict[str, int]):
        super().__init__()
        self.owners = owners          # id(weight) -> (tensor name, module name)
        self.inside = inside          # module name -> how deep in its own forward we are
        self.outside: dict[str, str] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        grad_enabled = torch.is_grad_enabled()
        result = func(*args, **kwargs)
        # a use: a tensor computed from the weight with gradients on (not reading its dtype, shape or a detached copy)
        if grad_enabled and next(_tensors(result), None) is not None and _name(func) not in _NO_GRADIENT:
            for t in _tensors((args, kwargs)):
                owner = self.owners.get(id(t))
                if owner is not None and not self.inside[owner[1]]:
                    self.outside.setdefault(owner[0], _name(func))
        return result


@contextmanager
def used_outside(
    model: nn.Module, plan: dict[str, tuple[str, str]], params: dict[str, Tensor]
) -> Iterator[dict[str, str]]:
    """Within the block, record the factored tensors (`plan`: name -> (module, attribute)) whose value enters a
    torch operation outside their module's own forward with gradients enabled: name -> the operation, in the
    dict yielded (filled when the block ends). A module's own forward spans from after its forward pre-hooks
    to before its forward hooks, so a hook that uses the weight counts as outside."""
    modules = {m for m, _ in plan.values()}
    inside = {m: 0 for m in modules}
    found: dict[str, str] = {}

    def enter(m):
        def hook(module, args):
            inside[m] += 1
        return hook

    def leave(m):
        def hook(module, args, out):
            inside[m] -= 1
        return hook

    handles = []
    for m in modules:
        module = model.get_submodule(m)
        handles.append(module.register_forward_pre_hook(enter(m)))
        handles.append(module.register_forward_hook(leave(m), prepend=True))
    tracker = _UseTracker({id(params[n]): (n, m) for n, (m, _) in plan.items()}, inside)
    try:
        with tracker:
            yield found
    finally:
        for h in handles:
            h.remove()
    found.update(tracker.outside)


def hook_suspects(model: nn.Module, module_name: str) -> str:
    """Hooks that may change the module's output behind the engine's back, as a clause for a message ('' if none)."""
    hooks = []
    if torch_module._global_forward_hooks:
        hooks.append("global forward hooks (register_module_forward_hook), which run before the engine's "
                     "and may change the module's output")
    module = model.get_submodule(module_name)
    if module._forward_hooks or module._forward_pre_hooks:
        hooks.append(f"hooks on {module_name!r}")
    return f" (the model has {' and '.join(hooks)})" if hooks else ""


# --- the check --------------------------------------------------------------------------------------------
def probe_positions(positions: int) -> list[int]:
    """The positions of a sequence item the probe takes: the middle and the last (which sees every earlier one)."""
    return sorted({positions // 2, positions - 1})


def probe_references(outputs: Tensor) -> Tensor:
    """y + σ z for outputs y (samples, out): z ~ N(0, 1) from a fixed seed, σ the outputs' standard deviation
    (1 if that is 0 or undefined). Divergence gradients at these references point in a generic output direction."""
    z = torch.randn(outputs.shape, generator=torch.Generator().manual_seed(PROBE_SEED), dtype=torch.float64)
    sigma = outputs.double().std().item() if outputs.numel() > 1 else 0.0
    sigma = sigma if math.isfinite(sigma) and sigma > 0 else 1.0
    return outputs + (sigma * z).to(dtype=outputs.dtype, device=outputs.device)


def autograd_gradients(
    call: Callable[[dict[str, Tensor], Tensor], Tensor],
    params: dict[str, Tensor],
    items: Tensor,
    references: Tensor,
    kind: str,
    positions: list[int] | None,
) -> dict[str, Tensor]:
    """name -> (samples, *shape): per-sample divergence gradients by one `torch.autograd.grad` per sample.

    call(weights, x): the model's output (1, [positions,] out) for one item x (1, ...) with the chosen tensors
    replaced by `weights`. references: (samples, out), item-major. positions: for a sequence model, the
    positions of every item to take (samples: items × positions, all positions of an item in `references`);
    None for a vector model.
    """
    weights = {n: p.detach().requires_grad_() for n, p in params.items()}
    per_item = references.shape[0] // items.shape[0]
    rows: dict[str, list[Tensor]] = {n: [] for n in params}
    with torch.enable_grad():
        for b in range(items.shape[0]):
            out = call(weights, items[b:b + 1]).squeeze(0)
            for t in positions if positions is not None else [None]:
                y = out if t is None else out[t]
                ref = references[b * per_item + (0 if t is None else t)]
                grads = torch.autograd.grad(divergence(y, ref, kind), list(weights.values()), retain_graph=True,
                                            allow_unused=True)
                for (n, w), g in zip(weights.items(), grads):
                    rows[n].append(torch.zeros_like(w) if g is None else g)
    return {n: torch.stack(r) for n, r in rows.items()}


def relative_errors(got: dict[str, Tensor], want: dict[str, Tensor], rtol: float) -> dict[str, float]:
    """e_t = ||got_t − want_t|| / (||want_t|| + rtol ||want||) per tensor (module docstring), in float64
    (float32 where the device has no float64)."""
    dtype = torch.float64 if next(iter(want.values())).device.type != "mps" else torch.float32
    diff = {n: (got[n].to(dtype) - want[n].to(dtype)).norm().item() for n in want}
    norm = {n: want[n].to(dtype).norm().item() for n in want}
    floor = rtol * math.sqrt(sum(v * v for v in norm.values()))
    errors = {}
    for n in want:
        scale = norm[n] + floor
        errors[n] = diff[n] / scale if scale > 0 else (0.0 if diff[n] == 0 else math.inf)
    return errors
