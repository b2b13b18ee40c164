"""Reading subnetworks: how cleanly their top samples share a known label (their label purity), which outputs
they move."""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..decomposition import Decomposition
from ..gradients import default_forward
from ..interventions import output_derivative, top_affected_outputs


def label_purity(top: Tensor, labels: Tensor, ignore: int | None = None) -> tuple[Tensor, Tensor]:
    """The label purity of each subnetwork, the share of its top samples carrying its most common label, and that
    label.

    top: (C, n) sample indices per subnetwork (from `top_samples`); labels: (N,) integer label per
    sample. Samples labelled `ignore` (e.g. the corpus's `none`) count against the purity and are never
    a subnetwork's label; a subnetwork whose top samples are all `ignore` gets purity 0 and label -1.
    Returns (label purity (C,), label (C,)).
    """
    chosen = labels[top]                                              # (C, n)
    n_labels = int(labels.max()) + 1
    counts = torch.zeros(top.shape[0], n_labels, dtype=torch.long)
    counts.scatter_add_(1, chosen.long(), torch.ones_like(chosen, dtype=torch.long))
    if ignore is not None:
        counts[:, ignore] = 0
    best, label = counts.max(1)
    label = torch.where(best > 0, label, torch.full_like(label, -1))
    return best.float() / top.shape[1], label


def owned_labels(purity: Tensor, label: Tensor, threshold: float = 0.8) -> list[int]:
    """Labels that some subnetwork serves with label purity (`purity`: (C,), `label_purity`'s) ≥ threshold, sorted."""
    return sorted({int(lab) for p, lab in zip(purity.tolist(), label.tolist()) if p >= threshold and lab >= 0})


def affected_outputs(
    model: nn.Module,
    decomposition: Decomposition,
    subnetwork: int,
    inputs: Tensor,
    positions: Tensor | None = None,
    forward: Callable[[nn.Module, Tensor], Tensor] = default_forward,
    n: int = 5,
) -> tuple[Tensor, Tensor]:
    """The n outputs that moving along d_k changes most, on average over `inputs` (e.g. its top samples).

    ∂f/∂δ at δ = 0 is averaged over the inputs (at `positions`, one per input, for sequence models)
    and ranked by size. Returns (derivatives (n,) with their signs, output indices (n,)).
    """
    derivative = output_derivative(model, decomposition, subnetwork, inputs, forward=forward)
    if positions is not None:
        derivative = derivative[torch.arange(len(positions)), positions]   # (n_inputs, out)
    mean = derivative.mean(0)
    _, index = top_affected_outputs(mean, n)
    return mean[index], index
