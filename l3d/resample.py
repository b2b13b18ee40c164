"""Resampling: the subnetwork the decomposition needs least, re-seeded where it explains least (our addition).

BatchTopK training can settle with two subnetworks sharing one circuit while another circuit has none (notebook
07's 40-10 seeds that miss a feature). Two passes over the data measure, with the kept coefficients c̃ = m ⊙ c
and the residuals r_i = g_i − ĝ_i = g_i − Σ_k c̃_ik d_k,

    cost_k = Σ_i ||r_i + c̃_ik d_k||² − ||r_i||² = Σ_i 2 c̃_ik <r_i, d_k> + c̃_ik² ||d_k||²
             what the error grows by without subnetwork k (the others unchanged),
    v, λ   = the top eigenvector and eigenvalue of Σ_i r_i r_iᵀ: the direction the residuals share most, and
             their energy along it (what a subnetwork on v could explain at most),

v and λ from a randomized range finder (a sketch of `sketch` random directions and one power iteration: n_w ×
sketch numbers, never the residual matrix; one batch's gradients and residuals are materialized at a time, so a
large model's factored gradients cost (batch, n_w) memory here). If λ > min_k cost_k, the cheapest subnetwork k is
replaced by v reduced to its Tucker ranks (`Decomposition.set_subnetwork_`, encoder = decoder); otherwise nothing
changes.
Without labels: only the gradients the decomposition is trained on. Under torchrun every process passes over its
share of each batch (BatchTopK over the whole batch, as in training) and the sums are added over processes, so
every process measures, and replaces, the same. During `fit`, `resample_members_` resamples every member of a
stack, each as a run of its own would, and a re-seeded subnetwork's Adam state starts afresh.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .decomposition import Decomposition, batch_top_k, check_matches
from .history import History
from .runtime.distributed import all_sum_, current
from .runtime.validate import as_int, as_seed
from .source import GradientSource


@dataclass
class Resampling:
    """One resampling: the cheapest subnetwork, its cost, λ (the residual energy along v) and whether it was
    replaced (λ > cost), all as sums over one pass (the error's units, before dividing by Σ ||g||²)."""

    subnetwork: int
    cost: float
    gain: float
    replaced: bool

    def to_dict(self) -> dict:
        return {"subnetwork": self.subnetwork, "cost": self.cost, "gain": self.gain, "replaced": self.replaced}


def check_source(decomposition: Decomposition, source) -> None:
    """A ValueError unless `source` can be measured against `decomposition`: a GradientSource's collector must have the
    decomposition's tensors, in its order, and its dtype and device (as `evaluate` checks)."""
    collector = getattr(source, "collector", None)
    if collector is not None:
        decomposition.check_shapes(collector.shapes, "the source's collector")
        check_matches(decomposition, collector)


def dense_batch(decomposition: Decomposition, grads):
    """One batch's gradients materialized, after checking that they are of the decomposition's tensors, in its
    order (any iterable of gradient batches may be a source)."""
    dense = grads.dense()
    decomposition.check_shapes(dense.shapes, "the gradients")
    return dense


def _residuals(decomposition: Decomposition, grads, E: Tensor, D: Tensor, top_k: float,
               distributed: bool) -> tuple[Tensor, Tensor]:
    """One batch (this process's share of it when distributed): residuals r (N, n_w) and kept coefficients
    c̃ (N, C), float64, for encoder and decoder directions E, D (C, n_w)."""
    g = dense_batch(decomposition, grads).flat().double()
    c = g @ E.T
    kept = c * batch_top_k(c, top_k, distributed)
    return g - kept @ D, kept


@torch.no_grad()
def costs_and_top_residual(decomposition: Decomposition, source, top_k: float | None = None, sketch: int = 8,
                           seed: int = 0) -> tuple[Tensor, Tensor, float]:
    """cost_k per subnetwork (C,), the residuals' top direction v (n_w,) unit norm and λ (see module docstring),
    over two passes of `source` (a GradientSource; BatchTopK at top_k, None: the decomposition's)."""
    sketch, seed = as_int("sketch", sketch), as_seed("seed", seed)
    if sketch < 1:
        raise ValueError(f"sketch must be at least 1 (random directions of the range finder), got {sketch}")
    check_source(decomposition, source)
    top_k = decomposition.top_k if top_k is None else top_k
    distributed = current().distributed
    E, D = (decomposition.flat_directions(part).double() for part in ("encoder", "decoder"))   # (C, n_w) each
    n_w = D.shape[1]
    omega = torch.randn(n_w, min(sketch, n_w), generator=torch.Generator().manual_seed(seed),
                        dtype=torch.float64).to(D.device)
    costs = torch.zeros(decomposition.n_subnetworks, dtype=torch.float64, device=D.device)
    y = torch.zeros_like(omega)                              # Σ_i r_i r_iᵀ Ω: (n_w, q)
    for grads in source:
        r, kept = _residuals(decomposition, grads, E, D, top_k, distributed)
        costs += (2 * kept * (r @ D.T) + kept.pow(2) * D.pow(2).sum(1)).sum(0)
        y += r.T @ (r @ omega)
    all_sum_(costs)                                          # over processes (no-op on one)
    all_sum_(y)
    q, _ = torch.linalg.qr(y)                                # an orthonormal basis of the sketch
    z = torch.zeros_like(q)                                  # Σ_i r_i r_iᵀ Q
    for grads in source:
        r, _ = _residuals(decomposition, grads, E, D, top_k, distributed)
        z += r.T @ (r @ q)
    all_sum_(z)
    values, vectors = torch.linalg.eigh(q.T @ z)            # Rayleigh-Ritz on span(Q), ascending
    v = q @ vectors[:, -1]
    return costs, v / v.norm().clamp_min(1e-30), values[-1].item()


@torch.no_grad()
def resample_(decomposition: Decomposition, source, top_k: float | None = None, sketch: int = 8,
              seed: int = 0) -> Resampling:
    """Replace the cheapest subnetwork by the residuals' top direction if that explains more than the subnetwork
    does (see module docstring). Returns what was measured and done."""
    costs, v, gain = costs_and_top_residual(decomposition, source, top_k, sketch, seed)
    k = int(costs.argmin())
    replaced = gain > costs[k].item()
    if replaced:
        decomposition.set_subnetwork_(k, decomposition.unflatten(v))
        decomposition.normalize_decoder_()
    return Resampling(k, costs[k].item(), gain, replaced)


def resample_members_(decomposition: Decomposition, sources: list[GradientSource], optimizer: torch.optim.Adam,
                      histories: list[History], top_k: float | None, epoch: int) -> None:
    """`resample_` of every member (the decomposition itself when it is not a stack), each on its source as a run of
    its own would see it: a shared source is rewound to the same state for every member. A re-seeded subnetwork's
    Adam state starts afresh."""
    per = decomposition.members // len(sources)
    for g, source in enumerate(sources):
        start = source.state_dict()
        for r in range(per):
            if r:
                source.load_state_dict(start)   # every member of a source resamples from the same state
            m = g * per + r
            member = decomposition if decomposition.members == 1 else decomposition.member(m)
            done = resample_(member, source, top_k, seed=epoch)
            histories[m].resampled.append({"epoch": epoch, **done.to_dict()})
            if done.replaced:
                if member is not decomposition:
                    decomposition.set_member_(m, member)
                _forget_(optimizer, decomposition, m * decomposition.per_member + done.subnetwork)


@torch.no_grad()
def _forget_(optimizer: torch.optim.Adam, decomposition: Decomposition, k: int) -> None:
    """Zero Adam's moment estimates of subnetwork k (index k of every parameter's first dimension)."""
    for p in decomposition.parameters():
        for name in ("exp_avg", "exp_avg_sq"):
            if name in optimizer.state.get(p, {}):
                optimizer.state[p][name][k] = 0
