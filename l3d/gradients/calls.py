"""Calling the model as the collector does: in eval mode (`evaluating`), with weights swapped in functionally
(`call_with`), through the user's `forward` (`default_forward`: the model itself), and its outputs checked: a tensor
(`output_tensor`) of the shape the collector's `sequence` setting says (`checked_outputs`), for inputs with items along
dim 0 (`check_inputs`).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from torch import Tensor, nn
from torch.func import functional_call


def default_forward(model: nn.Module, x: Tensor) -> Tensor:
    """The model's own forward: `model(x)`, inputs (items, …) to outputs (items, [positions,] out)."""
    return model(x)


def output_tensor(out: object) -> Tensor:
    """`out` if it is a tensor; a TypeError saying how to pick the tensor out of a tuple or model output otherwise."""
    if isinstance(out, Tensor):
        return out
    raise TypeError(
        f"the model (or forward) returned {type(out).__name__}, not a tensor of outputs: pass forward= to pick "
        f"the tensor, e.g. forward=lambda m, x: m(x)[0] for a tuple, forward=lambda m, x: m(x).logits for a "
        f"Hugging Face model output"
    )


class _ForwardWith(nn.Module):
    def __init__(self, model: nn.Module, forward: Callable[[nn.Module, Tensor], Tensor]):
        super().__init__()
        self.model = model
        self.fn = forward

    def forward(self, x: Tensor) -> Tensor:
        return output_tensor(self.fn(self.model, x))


@contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """`model` in eval mode within the block (every module's `training` flag set False, as `model.eval()` does), and
    every module's own flag restored after it."""
    training = [m for m in model.modules() if m.training]
    for m in training:
        m.training = False
    try:
        yield model
    finally:
        for m in training:
            m.training = True


def call_with(
    model: nn.Module,
    weights: dict[str, Tensor],
    x: Tensor,
    forward: Callable[[nn.Module, Tensor], Tensor] = default_forward,
) -> Tensor:
    """`forward(model, x)` with the named parameters of `model` replaced by `weights` (functionally): x (items, …),
    weights name -> a tensor of the parameter's shape."""
    wrapper = _ForwardWith(model, forward)
    return functional_call(wrapper, {f"model.{n}": w for n, w in weights.items()}, (x,), strict=False)


def check_inputs(inputs: Tensor) -> None:
    """Nothing if `inputs` is a tensor with at least one item along dim 0; a TypeError or ValueError otherwise."""
    if not isinstance(inputs, Tensor):
        raise TypeError(f"inputs must be a tensor with items along dim 0, got {type(inputs).__name__}")
    if inputs.dim() == 0 or inputs.shape[0] == 0:
        raise ValueError(f"inputs must be a tensor with at least one item along dim 0, got shape "
                         f"{tuple(inputs.shape)}" + (" (a 0-dim tensor: use inputs.unsqueeze(0) for one item)"
                                                      if inputs.dim() == 0 else ""))


def checked_outputs(out: Tensor, n_items: int, sequence: bool) -> Tensor:
    """`out` if it has the shape `sequence` says, (items, [positions,] out); a ValueError naming the setting
    or `forward` otherwise."""
    shape, items = tuple(out.shape), f"{n_items} item{'s' if n_items != 1 else ''}"
    if sequence:
        if out.dim() == 3 and shape[0] == n_items:
            return out
        hint = ("these look like a vector model's outputs (items, out): use sequence=False"
                if out.dim() == 2 else "return (items, positions, out) from forward")
        raise ValueError(f"sequence=True needs model outputs (items, positions, out), got shape {shape} for "
                         f"{items}: {hint}")
    if out.dim() == 2 and shape[0] == n_items:
        return out
    if out.dim() < 2:
        raise ValueError(
            f"the model's outputs have shape {shape} for {items}; L3D needs (items, out), one row of "
            f"output values per item: pass forward= that returns them, e.g. "
            f"forward=lambda m, x: m(x).view(-1, 1) for one value per item"
        )
    if shape[0] != n_items:
        raise ValueError(f"the model (or forward) returned outputs of shape {shape} for {items}: "
                         f"items must run along dim 0")
    raise ValueError(
        f"the model's outputs have shape {shape}, not (items, out): pass sequence=True if dim 1 indexes "
        f"positions (every position a sample), or a forward= that flattens them, e.g. "
        f"forward=lambda m, x: m(x).flatten(1)"
    )
