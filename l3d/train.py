"""Training a decomposition: Adam, step learning-rate decay, warm start, history of error and P_act."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .decomposition import Decomposition
from .gradients import GradientCollector


class GradientSource:
    """Batches of per-sample gradients over a data set, with fresh references every epoch.

    Gradients are computed `chunk_size` items at a time (references drawn within the chunk) and handed
    out `batch_size` items at a time. For small models set chunk_size to the data set size: one
    vectorized gradient pass per epoch.
    """

    def __init__(
        self,
        collector: GradientCollector,
        inputs: Tensor,
        batch_size: int,
        chunk_size: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
    ):
        n = inputs.shape[0]
        if not 1 <= batch_size <= n:
            raise ValueError(f"batch_size {batch_size} must lie in 1..{n} (the number of inputs)")
        chunk_size = chunk_size or batch_size
        if chunk_size % batch_size:
            raise ValueError(f"chunk_size {chunk_size} must be a multiple of batch_size {batch_size}")
        self.collector = collector
        self.inputs = inputs
        self.batch_size = batch_size
        self.chunk_size = chunk_size
        self.shuffle = shuffle
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        """Batches per epoch (a last partial batch is dropped)."""
        return self.inputs.shape[0] // self.batch_size

    def __iter__(self) -> Iterator:
        n = len(self) * self.batch_size
        order = torch.randperm(self.inputs.shape[0], generator=self.generator) if self.shuffle else torch.arange(n)
        order = order[:n].to(self.inputs.device)
        for start in range(0, n, self.chunk_size):
            items = self.inputs[order[start:start + self.chunk_size]]
            chunk = self.collector(items, generator=self.generator)
            step = self.batch_size * (chunk.n_samples // items.shape[0])  # samples per batch
            for b in range(0, chunk.n_samples, step):
                yield chunk[b:b + step]


@dataclass
class History:
    """Per epoch: reconstruction error (Σ error / Σ ||g||² over the epoch), learning rate, P_act per subnetwork."""

    reconstruction_error: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    p_act: list[list[float]] = field(default_factory=list)

    @property
    def dead(self) -> list[int]:
        """Subnetworks never selected in the last epoch."""
        return [k for k, p in enumerate(self.p_act[-1]) if p == 0] if self.p_act else []

    def to_dict(self) -> dict:
        return {"reconstruction_error": self.reconstruction_error, "lr": self.lr, "p_act": self.p_act}


class _EpochStats:
    def __init__(self, n_subnetworks: int, device):
        self.error = torch.zeros((), device=device, dtype=torch.float64)
        self.total = torch.zeros((), device=device, dtype=torch.float64)
        self.active = torch.zeros(n_subnetworks, device=device, dtype=torch.float64)
        self.samples = 0

    def add(self, parts) -> None:
        self.error += parts.error.detach()
        self.total += parts.total.detach()
        self.active += parts.mask.sum(0)
        self.samples += parts.mask.shape[0]

    def result(self) -> tuple[float, list[float]]:
        return (self.error / self.total).item(), (self.active / max(self.samples, 1)).tolist()


def fit(
    decomposition: Decomposition,
    source: GradientSource,
    epochs: int,
    lr: float = 0.01,
    lr_decay: float = 0.8,
    lr_decay_every: int = 100,
    warm_start_epochs: int = 0,
    progress: bool = True,
) -> History:
    """Train `decomposition` on `source` with Adam; lr × lr_decay every lr_decay_every epochs.

    The first warm_start_epochs keep every coefficient (top_k = 1). Decoder directions are put back to
    unit norm after every step.
    """
    device = decomposition.decoder[0].core.device
    # fused Adam: one kernel for all parameters (CPU and CUDA)
    optimizer = torch.optim.Adam(decomposition.parameters(), lr=lr, fused=device.type in ("cpu", "cuda"))
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=lr_decay_every, gamma=lr_decay)
    history = History()
    bar = tqdm(range(epochs), desc="L3D", disable=not progress)
    for epoch in bar:
        top_k = 1.0 if epoch < warm_start_epochs else None
        stats = _EpochStats(decomposition.n_subnetworks, device)
        for grads in source:
            parts = decomposition.loss(grads, top_k)
            optimizer.zero_grad(set_to_none=True)
            parts.loss.backward()
            optimizer.step()
            decomposition.normalize_decoder_()
            stats.add(parts)
        error, p_act = stats.result()
        history.reconstruction_error.append(error)
        history.lr.append(scheduler.get_last_lr()[0])
        history.p_act.append(p_act)
        scheduler.step()
        bar.set_postfix(error=f"{error:.3f}", dead=sum(p == 0 for p in p_act))
    return history


@torch.no_grad()
def evaluate(decomposition: Decomposition, source: GradientSource) -> dict:
    """Reconstruction error and P_act over one pass of `source`, without training."""
    stats = _EpochStats(decomposition.n_subnetworks, decomposition.decoder[0].core.device)
    for grads in source:
        stats.add(decomposition.loss(grads))
    error, p_act = stats.result()
    return {"reconstruction_error": error, "p_act": p_act, "dead": [k for k, p in enumerate(p_act) if p == 0]}
