"""Refitting: each subnetwork's decoder direction re-estimated from the samples it explains alone (our addition).

L3D trains the decoder on every sample, also those where several circuits are at work at once. Their gradients
hold cross terms that belong to no one circuit, and the trained directions absorb a little of them (notebook 07,
§7). After training, `refit_` takes for every subnetwork k the samples whose gradient it explains almost alone,
by the trained directions d_k,

    share_ik = <g_i, d_k>² / (||g_i||² ||d_k||²),
    S_k      = { i : k = argmax_j share_ij  and  share_ik ≥ min_share },

and replaces d_k by the top eigenvector of Σ_{i ∈ S_k} g_i g_iᵀ, reduced to its Tucker ranks
(`Decomposition.set_subnetwork_`, encoder = decoder). The eigenvector comes from power iteration started at d_k,
one pass over the data per iteration (memory C × n_w; one batch's gradients are materialized at a time). A
subnetwork with fewer than min_samples such samples in the first pass keeps its direction. No labels: only the
gradients and the trained directions. Under torchrun the sums are added over processes.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .decomposition import Decomposition
from .resample import check_source, dense_batch
from .runtime.distributed import all_sum_
from .runtime.validate import as_float, is_int


@dataclass
class Refit:
    """What `refit_` did, per subnetwork: samples it explained alone (first pass), whether it was refitted, and
    |cos| between its old and new direction (1.0 where kept)."""

    samples: list[int]
    refitted: list[bool]
    cos: list[float]

    def to_dict(self) -> dict:
        return {"samples": self.samples, "refitted": self.refitted, "cos": self.cos}


@torch.no_grad()
def refit_(decomposition: Decomposition, source, min_share: float = 0.8, min_samples: int = 3,
           iterations: int = 3) -> Refit:
    """Refit every subnetwork's direction on the samples it explains alone (see module docstring), over
    `iterations` passes of `source` (a GradientSource or any iterable of gradient batches). In place."""
    if not 0 < as_float("min_share", min_share) < 1:
        raise ValueError(f"min_share must be in (0, 1) (the share of ||g||² one subnetwork explains), got {min_share}")
    if not is_int(min_samples) or min_samples < 1:
        raise ValueError(f"min_samples must be an int >= 1, got {min_samples!r}")
    if not is_int(iterations) or iterations < 1:
        raise ValueError(f"iterations must be an int >= 1 (passes of power iteration), got {iterations!r}")
    min_share, min_samples, iterations = float(min_share), int(min_samples), int(iterations)
    check_source(decomposition, source)
    trained = decomposition.flat_directions().double()                      # (C, n_w)
    unit = trained / trained.norm(dim=1, keepdim=True).clamp_min(1e-30)
    v = unit.clone()                                                        # the power iterates
    counts = None
    for _ in range(iterations):
        step = torch.zeros_like(v)                                          # Σ_{i∈S_k} g_i g_iᵀ v_k, row k
        seen = torch.zeros(len(v), dtype=torch.float64, device=v.device)
        for grads in source:
            g = dense_batch(decomposition, grads).flat().double()           # (N, n_w)
            share = (g @ unit.T).pow(2) / g.pow(2).sum(1, keepdim=True).clamp_min(1e-30)   # (N, C)
            best, owner = share.max(1)
            alone = torch.nn.functional.one_hot(owner, len(v)).double() * (best >= min_share)[:, None]  # (N, C)
            step += (alone * (g @ v.T)).T @ g
            seen += alone.sum(0)
        all_sum_(step)
        all_sum_(seen)
        counts = seen if counts is None else counts
        moving = (counts >= min_samples) & (step.norm(dim=1) > 0)
        v = torch.where(moving[:, None], step / step.norm(dim=1, keepdim=True).clamp_min(1e-300), v)
    refitted = (counts >= min_samples).tolist()
    cos = []
    for k, redo in enumerate(refitted):
        if not redo:
            cos.append(1.0)
            continue
        new = decomposition.set_subnetwork_(k, decomposition.unflatten(v[k]))
        cos.append(abs(float(new @ unit[k])))
    decomposition.normalize_decoder_()
    return Refit([int(c) for c in counts.tolist()], refitted, cos)
