"""Scoring a decomposition against known ground truth: one-to-one matching and intervention selectivity."""
from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor


def match(score: Tensor) -> list[tuple[int, int]]:
    """One-to-one matching of rows (e.g. true circuits) to columns (subnetworks) maximizing total score.

    `score` is (n_rows, n_cols); returns (row, col) pairs, one per row when n_rows ≤ n_cols.
    """
    rows, cols = linear_sum_assignment(score.detach().cpu().double().numpy(), maximize=True)
    return list(zip(rows.tolist(), cols.tolist()))


def intervention_selectivity(effect: Tensor, own: Tensor) -> float:
    """Mean over interventions of (mean change of the intervention's own outputs) / (mean change of the others).

    effect: (S, O) mean |Δ output| of each of O outputs under each of S interventions.
    own: (S, O) bool, the outputs each intervention is meant to move.
    """
    if effect.shape != own.shape:
        raise ValueError(f"effect {tuple(effect.shape)} and own {tuple(own.shape)} must have the same shape")
    own = own.bool()
    if not (own.any(1) & (~own).any(1)).all():
        raise ValueError("every intervention needs at least one own output and one other output")
    own_mean = (effect * own).sum(1) / own.sum(1)
    other_mean = (effect * ~own).sum(1) / (~own).sum(1)
    return (own_mean / other_mean.clamp_min(1e-12)).mean().item()


def mmcs(slices: Tensor, weights: Tensor) -> float:
    """Mean max cosine similarity: mean over features of the largest |cos| over subnetworks.

    slices: (C, F, D) each subnetwork's slice for each feature; weights: (F, D) the model's own weights
    for each feature. 1 when every feature has a subnetwork whose slice is parallel to it.
    """
    if slices.dim() != 3 or weights.dim() != 2 or slices.shape[1:] != weights.shape:
        raise ValueError(f"slices must be (C, F, D) and weights (F, D), got {tuple(slices.shape)} and {tuple(weights.shape)}")
    cos = torch.nn.functional.cosine_similarity(slices, weights.unsqueeze(0), dim=-1, eps=1e-12)   # (C, F)
    return cos.abs().max(0).values.mean().item()
