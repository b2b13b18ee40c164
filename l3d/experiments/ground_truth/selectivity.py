"""How selective interventions are: the change of each intervention's own outputs against the others'."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def own_outputs(groups: Sequence[Sequence[int]], n_outputs: int) -> Tensor:
    """(S, n_outputs) bool: row s marks the outputs of groups[s], what intervention s is meant to move
    (the `own` of `intervention_selectivity`)."""
    own = torch.zeros(len(groups), n_outputs, dtype=torch.bool)
    for row, outputs in enumerate(groups):
        own[row, list(outputs)] = True
    return own


def intervention_selectivity(effect: Tensor, own: Tensor) -> float:
    """Mean over interventions of (mean change of the intervention's own outputs) / (mean change of the others).

    effect: (S, O) mean |Δ output| of each of O outputs under each of S interventions.
    own: (S, O) bool, what each intervention is meant to move.
    """
    if effect.shape != own.shape:
        raise ValueError(f"effect {tuple(effect.shape)} and own {tuple(own.shape)} must have the same shape")
    own = own.bool()
    if not (own.any(1) & (~own).any(1)).all():
        raise ValueError("every intervention needs at least one own output and one other output")
    own_mean = (effect * own).sum(1) / own.sum(1)
    other_mean = (effect * ~own).sum(1) / (~own).sum(1)
    return (own_mean / other_mean.clamp_min(1e-12)).mean().item()
