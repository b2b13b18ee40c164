"""How cleanly a subnetwork's top samples share one known label (a corpus pattern, an image class)."""
from __future__ import annotations

import torch
from torch import Tensor


def purity(top: Tensor, labels: Tensor, ignore: int | None = None) -> tuple[Tensor, Tensor]:
    """Share of each subnetwork's top samples carrying its most common label, and that label.

    top: (C, n) sample indices per subnetwork (from `top_samples`); labels: (N,) integer label per
    sample. Samples labelled `ignore` (e.g. the corpus's `none`) count against purity and are never
    a subnetwork's label; a subnetwork whose top samples are all `ignore` gets purity 0 and label -1.
    Returns (purity (C,), label (C,)).
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
    """Labels that some subnetwork serves with purity ≥ threshold, sorted."""
    return sorted({int(l) for p, l in zip(purity.tolist(), label.tolist()) if p >= threshold and l >= 0})
