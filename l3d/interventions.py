"""Moving the model's weights along decoder directions: W0 + δ d_k."""
from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from .decomposition import Decomposition
from .gradients import call_with, default_forward, evaluating
from .params import select_tensors
from .runtime.validate import as_int


def _direction(
    model: nn.Module, decomposition: Decomposition, subnetworks: int | Sequence[int], tensors: str | list[str] | None
) -> dict[str, Tensor]:
    """Σ_k d_k over the chosen subnetworks, restricted to `tensors` (default: all decomposed tensors)."""
    try:
        ks = list(subnetworks)
    except TypeError:   # one subnetwork
        ks = [subnetworks]
    ks = [as_int("subnetworks", k.item() if isinstance(k, Tensor) and k.dim() == 0 else k) for k in ks]
    for k in ks:
        if not 0 <= k < decomposition.n_subnetworks:
            raise ValueError(f"subnetworks: subnetwork {k} does not exist: the decomposition has "
                             f"{decomposition.n_subnetworks} (0..{decomposition.n_subnetworks - 1})")
    params = dict(model.named_parameters())
    decomposition.check_shapes({n: tuple(params[n].shape) for n in decomposition.names if n in params}, "the model")
    names = decomposition.names if tensors is None else list(select_tensors(model, tensors))
    unknown = [n for n in names if n not in decomposition.shapes]
    if unknown:
        raise ValueError(f"tensors {unknown} are not part of the decomposition ({decomposition.names})")
    directions = decomposition.decoder_directions()
    return {n: directions[n][ks].sum(0).detach() for n in names}


def _deltas(deltas: Sequence[float] | Tensor) -> list[float]:
    """The step sizes δ as floats; a ValueError naming `deltas` unless there is at least one finite number."""
    try:
        values = [float(d) for d in (deltas.flatten().tolist() if isinstance(deltas, Tensor) else deltas)]
    except (TypeError, ValueError) as e:
        raise ValueError(f"deltas must be a sequence of numbers (the step sizes δ), got {deltas!r}") from e
    if not values:
        raise ValueError("deltas must hold at least one step size δ, got none")
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"deltas must be finite numbers, got {values}")
    return values


@torch.no_grad()
def intervene(
    model: nn.Module,
    decomposition: Decomposition,
    subnetworks: int | Sequence[int],
    deltas: Sequence[float] | Tensor,
    inputs: Tensor,
    tensors: str | list[str] | None = None,
    forward: Callable[[nn.Module, Tensor], Tensor] = default_forward,
) -> Tensor:
    """Outputs f(x; W0 + δ Σ_k d_k) for every δ: (len(deltas), *output shape), the model in eval mode (as the
    gradients are taken; its own mode is restored after).

    `tensors` restricts the move to some of the decomposed tensors (e.g. hidden layers only).
    """
    deltas = _deltas(deltas)
    direction = _direction(model, decomposition, subnetworks, tensors)
    params = dict(model.named_parameters())
    with evaluating(model):
        outs = [call_with(model, {n: params[n] + delta * d for n, d in direction.items()}, inputs, forward)
                for delta in deltas]
    return torch.stack(outs)


def output_derivative(
    model: nn.Module,
    decomposition: Decomposition,
    subnetworks: int | Sequence[int],
    inputs: Tensor,
    tensors: str | list[str] | None = None,
    forward: Callable[[nn.Module, Tensor], Tensor] = default_forward,
) -> Tensor:
    """∂f(x; W0 + δ Σ_k d_k)/∂δ at δ = 0, as one JVP: same shape as the outputs (the model in eval mode, as for
    `intervene`)."""
    direction = _direction(model, decomposition, subnetworks, tensors)
    params = {n: p.detach() for n, p in model.named_parameters() if n in direction}

    def f(delta: Tensor) -> Tensor:
        return call_with(model, {n: params[n] + delta * d for n, d in direction.items()}, inputs, forward)

    zero = torch.zeros((), device=inputs.device)
    with evaluating(model), warnings.catch_warnings():
        # torch's first forward-mode AD call loads its JVP decompositions through torch.jit.script, which warns that
        # torch.jit.script is deprecated: torch's own doing, not this call's, so that one warning is not shown
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
        _, tangent = torch.func.jvp(f, (zero,), (torch.ones_like(zero),))
    return tangent.detach()


def top_affected_outputs(derivative: Tensor, n: int = 5) -> tuple[Tensor, Tensor]:
    """The n outputs with the largest |∂f_j/∂δ| per sample: (values, indices), each (..., n)."""
    return derivative.abs().topk(n, dim=-1)


@torch.no_grad()
def intervention_sweep(
    model: nn.Module,
    decomposition: Decomposition,
    deltas: Sequence[float] | Tensor,
    inputs: Tensor,
    subnetworks: Sequence[int | Sequence[int]] | None = None,
    tensors: str | list[str] | None = None,
    forward: Callable[[nn.Module, Tensor], Tensor] = default_forward,
) -> Tensor:
    """Mean |f(x; W0 + δ Σ_k d_k) − f(x; W0)| over the samples of `inputs`, for every intervention and δ.

    `subnetworks` lists the interventions: a subnetwork, or several moved together (default: each
    subnetwork alone). Returns (n_interventions, len(deltas), *output shape without the batch dimension).
    """
    subnetworks = range(decomposition.n_subnetworks) if subnetworks is None else subnetworks
    deltas = _deltas(deltas)
    base = forward(model, inputs)
    return torch.stack([
        (intervene(model, decomposition, ks, deltas, inputs, tensors, forward) - base).abs().mean(1)
        for ks in subnetworks
    ])
