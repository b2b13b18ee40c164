"""What the dashboard measures on the model: the |cos| of decoder directions to ground-truth circuits, what moving
along a decoder direction does to the outputs, and which subnetworks are active together."""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ...decomposition import Decomposition
from ...divergences import divergence
from ...gradients import evaluating
from ...interventions import intervene, output_derivative

Forward = Callable[[nn.Module, Tensor], Tensor]


def feature_circuits(model: nn.Module, axes: dict[str, int]) -> dict[str, Tensor]:
    """Ground-truth circuit directions of a toy whose features index one axis of each named tensor.

    Circuit i is the model's own weights with only slice i along `axes[name]` kept in every tensor, e.g. for
    TMS feature i's embedding column W_in[:, i], its output row W_out[i] and bias b[i]:
    `feature_circuits(toy, {"W_in": 1, "W_out": 0, "b": 0})`. Returns name -> (n_features, *shape), the layout
    of `Decomposition.decoder_directions()`, for `collect(circuits=...)`.
    """
    params = dict(model.named_parameters())
    unknown = sorted(set(axes) - set(params))
    if unknown:
        raise ValueError(f"tensors {unknown} are not parameters of the model ({sorted(params)})")
    sizes = {params[n].shape[a] for n, a in axes.items()}
    if len(sizes) != 1:
        raise ValueError(f"the feature axes have different sizes {sorted(sizes)}: {axes}")
    (n,) = sizes
    out = {}
    for name, axis in axes.items():
        w = params[name].detach()
        keep = torch.eye(n, dtype=w.dtype, device=w.device)                 # (n, n): row i keeps slice i
        shape = [n] + [1] * w.dim()
        shape[axis + 1] = n
        out[name] = w.unsqueeze(0) * keep.view(shape)
    return out


def circuit_cosines(decomposition: Decomposition, circuits: dict[str, Tensor]) -> Tensor:
    """|cos| between every decoder direction and every circuit direction, over the circuits' tensors: (C, M)."""
    unknown = sorted(set(circuits) - set(decomposition.names))
    if unknown:
        raise ValueError(f"circuit tensors {unknown} are not decomposed ({decomposition.names})")
    decoder = decomposition.decoder_directions()
    d = torch.cat([decoder[n].detach().flatten(1).double().cpu() for n in circuits], dim=1)
    g = torch.cat([c.detach().flatten(1).double().cpu() for c in circuits.values()], dim=1)
    if g.shape[1] != d.shape[1]:
        raise ValueError("circuit directions must have the decomposed tensors' shapes, name -> (n_circuits, *shape)")
    norms = d.norm(dim=1, keepdim=True) * g.norm(dim=1)
    return ((d @ g.T).abs() / norms.clamp_min(1e-30)).float()


def forward_at(forward: Forward, positions: Tensor) -> Forward:
    """`forward` of a sequence model read at one position per text: row r's output at positions[r], (n, out)."""
    rows = torch.arange(len(positions), device=positions.device)

    def at_positions(model: nn.Module, x: Tensor) -> Tensor:
        return forward(model, x)[rows, positions]

    return at_positions


def output_effects(
    model: nn.Module,
    forward: Forward,
    decomposition: Decomposition,
    k: int,
    x: Tensor,
    deltas: Tensor,
    n_outputs: int,
    divergence_kind: str,
) -> tuple[list[tuple[int, float]], list[tuple[int, float]], Tensor, Tensor]:
    """What moving along d_k does to the outputs `forward` gives for the samples x (one output row per sample).

    Returns the n_outputs outputs with the largest and with the most negative mean ∂f/∂δ at δ = 0 (one JVP),
    as (output, derivative) pairs of that sign, and for every δ of the sweep the mean output change
    f(W0 + δ d_k) − f(W0) (len(deltas), n_out) and the mean divergence of f(W0 + δ d_k) from f(W0) (len(deltas),).
    """
    slope = output_derivative(model, decomposition, k, x, forward=forward).float().mean(0).cpu()   # (out,)
    n = min(n_outputs, slope.shape[0])
    up = [(int(j), float(slope[j])) for j in slope.topk(n).indices if slope[j] > 0]
    down = [(int(j), float(slope[j])) for j in (-slope).topk(n).indices if slope[j] < 0]
    with torch.no_grad(), evaluating(model):
        base = forward(model, x).float()
        moved = intervene(model, decomposition, k, deltas, x, forward=forward).float()           # (D, n, out)
        spread = divergence(moved, base.expand_as(moved), divergence_kind).mean(1).cpu()
        change = (moved - base).mean(1).cpu()                                                   # (D, out)
    return up, down, change, spread


def coactive(together: Tensor, p_here: Tensor, k: int, n: int) -> list[tuple[int, float, float]]:
    """The up to n subnetworks most often active when k is: (j, P(j active | k active), lift = that / P(j active)),
    largest P first, only those ever active with k.

    together: (C, C) number of samples on which both are active; p_here: (C,) share of samples on which each is.
    """
    others = together[k] / together[k, k].clamp_min(1)
    others[k] = -1
    order = others.argsort(descending=True)[:n]
    return [(int(j), float(others[j]), float(others[j] / p_here[j].clamp_min(1e-12))) for j in order if others[j] > 0]
