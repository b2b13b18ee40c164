"""A batch of materialized per-sample gradients: every chosen tensor's gradient flattened, side by side.

    g_i = (vec ∇_{W_1} D_i, …, vec ∇_{W_T} D_i)  ∈ R^{n_w},   stored as one (N, n_w) matrix
so <v_k, g_i> for all directions is one matrix product and ||g_i||² is computed once. A stack's G groups of
members (`Decomposition.stack`) read G such batches of one size: `StackedGradients`, one (G, N, n_w) tensor.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ..tucker import Tucker

BLOCK = 1 << 18   # elements of a block of rows whose squares `row_sq_norms` makes at once (1 MiB in float32)


def row_sq_norms(flat: Tensor) -> Tensor:
    """Σ_j flat[..., j]² of every row: flat (..., n) -> (...). Bit for bit `torch.linalg.vecdot(flat, flat)`, a block
    of rows at a time so that the squares it makes stay in the cache. Every block has at least two rows: torch
    reduces each of several rows by itself, but a lone row in parallel pieces (another order of the sum)."""
    rows = flat.reshape(-1, flat.shape[-1])
    out = flat.new_empty(rows.shape[0])
    bounds = [*range(0, rows.shape[0], max(2, BLOCK // max(rows.shape[1], 1))), rows.shape[0]]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] == 1:
        del bounds[-2]                                       # a lone last row joins the block before it
    for start, end in zip(bounds, bounds[1:]):
        torch.linalg.vecdot(rows[start:end], rows[start:end], out=out[start:end])
    return out.view(flat.shape[:-1])


class DenseGradients:
    """A batch of materialized per-sample gradients: name -> (N, *shape), stored side by side as (N, n_w)."""

    def __init__(self, grads: dict[str, Tensor]):
        self.shapes = {n: tuple(g.shape[1:]) for n, g in grads.items()}
        self._flat = torch.cat([g.flatten(1) for g in grads.values()], dim=1)
        self._sq_norms = row_sq_norms(self._flat)

    @classmethod
    def from_flat(cls, flat: Tensor, sq_norms: Tensor, shapes: dict[str, tuple[int, ...]]) -> DenseGradients:
        """Gradients already side by side: flat (N, n_w), their squared norms (N,), name -> shape in order."""
        out = cls.__new__(cls)
        out.shapes, out._flat, out._sq_norms = shapes, flat, sq_norms
        return out

    @property
    def grads(self) -> dict[str, Tensor]:
        """name -> (N, *shape), views into the flat storage."""
        sizes = [math.prod(s) for s in self.shapes.values()]
        return {
            n: g.view(-1, *s) for (n, s), g in zip(self.shapes.items(), self._flat.split(sizes, dim=1))
        }

    @property
    def n_samples(self) -> int:
        return self._flat.shape[0]

    def __getitem__(self, index: slice | Tensor) -> DenseGradients:
        """The gradients of a subset of the samples."""
        return DenseGradients.from_flat(self._flat[index], self._sq_norms[index], self.shapes)

    def project(self, directions: Sequence[Tucker]) -> Tensor:
        """<v_k, g_i> summed over tensors, for directions given per tensor in collector order: (N, C)."""
        return self._flat @ torch.cat([v.full().flatten(1) for v in directions], dim=1).T

    def sq_norms(self) -> Tensor:
        """||g_i||² over all chosen tensors: (N,)."""
        return self._sq_norms

    def flat(self) -> Tensor:
        """All chosen tensors' gradients side by side: (N, n_w)."""
        return self._flat

    def dense(self) -> DenseGradients:
        return self


class StackedGradients:
    """G batches of materialized per-sample gradients of the same tensors and size, one per group of a stack's
    members (`Decomposition.stack`), as one (G, N, n_w) tensor and their squared norms (G, N); read one by one,
    a sequence of G `DenseGradients`. A sweep's joint pass gives its batches in this form, without a copy."""

    def __init__(self, flat: Tensor, sq_norms: Tensor, shapes: dict[str, tuple[int, ...]]):
        self._flat, self._sq_norms, self.shapes = flat, sq_norms, shapes

    @classmethod
    def stack(cls, batches: Sequence[DenseGradients]) -> StackedGradients:
        """G batches of the same size as one (one batch: a view, no copy)."""
        if len(batches) == 1:
            return cls(batches[0].flat().unsqueeze(0), batches[0].sq_norms().unsqueeze(0), batches[0].shapes)
        return cls(torch.stack([b.flat() for b in batches]), torch.stack([b.sq_norms() for b in batches]),
                   batches[0].shapes)

    def __len__(self) -> int:
        return self._flat.shape[0]

    def __getitem__(self, g: int) -> DenseGradients:
        """Group g's batch."""
        return DenseGradients.from_flat(self._flat[g], self._sq_norms[g], self.shapes)

    def __iter__(self):
        return (self[g] for g in range(len(self)))

    @property
    def n_samples(self) -> int:
        """Samples per batch (N)."""
        return self._flat.shape[1]

    def flat(self) -> Tensor:
        """Every batch's gradients side by side: (G, N, n_w)."""
        return self._flat

    def sq_norms(self) -> Tensor:
        """||g_i||² of every sample of every batch: (G, N)."""
        return self._sq_norms

    def totals(self) -> Tensor:
        """Σ_i ||g_i||² of each batch: (G,)."""
        return self._sq_norms.sum(1)
