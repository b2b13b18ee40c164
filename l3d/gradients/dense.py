"""A batch of materialized per-sample gradients: every chosen tensor's gradient flattened, side by side.

    g_i = (vec ∇_{W_1} D_i, …, vec ∇_{W_T} D_i)  ∈ R^{n_w},   stored as one (N, n_w) matrix
so <v_k, g_i> for all directions is one matrix product and ||g_i||² is computed once.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ..tucker import Tucker


class DenseGradients:
    """A batch of materialized per-sample gradients: name -> (N, *shape), stored side by side as (N, n_w)."""

    def __init__(self, grads: dict[str, Tensor]):
        self.shapes = {n: tuple(g.shape[1:]) for n, g in grads.items()}
        self._flat = torch.cat([g.flatten(1) for g in grads.values()], dim=1)
        self._sq_norms = torch.linalg.vecdot(self._flat, self._flat)      # = pow(2).sum(1), bit for bit, without a copy

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
