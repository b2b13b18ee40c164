"""Low-rank tensors in Tucker form: C tensors of one shape, each a small core times one factor per mode.

    T_k = core_k ×_1 U_k^(1) ×_2 U_k^(2) … ×_N U_k^(N)
    core: (C, R_1, …, R_N)     factors U^(n): (C, I_n, R_n)
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

_MODES = "abcdefgh"   # tensor modes I_n
_RANKS = "pqrstuvw"   # ranks R_n of the left operand
_RANKS2 = "ijmnoxyz"  # ranks R_n of the right operand (inner products; not k, l: those index components)


def tucker_ranks(shape: tuple[int, ...], rank: int | tuple[int, ...]) -> tuple[int, ...]:
    """Per-mode ranks for a tensor of `shape`.

    An int is used for every mode, capped at the mode's size (a 3×3 kernel stays full at rank 10);
    a tuple names one rank per mode and must fit the shape.
    """
    if isinstance(rank, int):
        if rank < 1:
            raise ValueError(f"rank must be at least 1, got {rank}")
        return tuple(min(rank, size) for size in shape)
    rank = tuple(int(r) for r in rank)
    if len(rank) != len(shape):
        raise ValueError(f"ranks {rank} name {len(rank)} modes but the tensor has shape {tuple(shape)}")
    for n, (r, size) in enumerate(zip(rank, shape)):
        if not 1 <= r <= size:
            raise ValueError(f"rank {r} of mode {n} is outside 1..{size} for a tensor of shape {tuple(shape)}")
    return rank


class Tucker(nn.Module):
    """C low-rank tensors of shape `shape` with Tucker ranks `ranks`."""

    def __init__(self, n_components: int, shape: tuple[int, ...], ranks: tuple[int, ...]):
        super().__init__()
        if len(shape) == 0 or len(shape) > len(_MODES):
            raise ValueError(f"Tucker tensors need 1 to {len(_MODES)} modes, got shape {tuple(shape)}")
        self.shape = tuple(shape)
        self.ranks = tucker_ranks(self.shape, ranks)
        C = n_components
        self.core = nn.Parameter(torch.randn(C, *self.ranks) / math.sqrt(math.prod(self.ranks)))
        self.factors = nn.ParameterList(
            nn.Parameter(torch.randn(C, size, r) / math.sqrt(size)) for size, r in zip(self.shape, self.ranks)
        )

    @property
    def n_components(self) -> int:
        return self.core.shape[0]

    def _core_and_factor_terms(self, ranks: str) -> list[str]:
        n = len(self.shape)
        return ["k" + ranks[:n]] + [f"k{_MODES[m]}{ranks[m]}" for m in range(n)]

    def full(self) -> Tensor:
        """The tensors themselves: (C, *shape)."""
        n = len(self.shape)
        spec = ",".join(self._core_and_factor_terms(_RANKS)) + "->k" + _MODES[:n]
        return torch.einsum(spec, self.core, *self.factors)

    def inner(self, other: Tucker) -> Tensor:
        """Inner products <self_k, other_l> for every pair: (C, C'), from the factors alone."""
        if other.shape != self.shape:
            raise ValueError(f"inner product of Tucker tensors of shapes {self.shape} and {other.shape}")
        n = len(self.shape)
        # Gram of the factors per mode: (C, C', R_n, R'_n)
        grams = [torch.einsum("kar,las->klrs", u, v) for u, v in zip(self.factors, other.factors)]
        spec = (
            f"k{_RANKS[:n]},l{_RANKS2[:n]},"
            + ",".join(f"kl{_RANKS[m]}{_RANKS2[m]}" for m in range(n))
            + "->kl"
        )
        return torch.einsum(spec, self.core, other.core, *grams)

    def sq_norms(self) -> Tensor:
        """||T_k||² for each component: (C,)."""
        return self.inner(self).diagonal()

    @torch.no_grad()
    def scale_(self, scale: Tensor) -> None:
        """Multiply tensor k by scale[k] in place."""
        self.core.mul_(scale.view(-1, *([1] * len(self.shape))))
