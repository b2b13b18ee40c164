"""Low-rank tensors in Tucker form: C tensors of one shape, each a small core times one factor per mode.

    T_k = core_k ×_1 U_k^(1) ×_2 U_k^(2) … ×_N U_k^(N)
    core: (C, R_1, …, R_N)     factors U^(n): (C, I_n, R_n)
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

_MODES = "abcdefgh"   # tensor modes I_n
_RANKS = "pqrstuvw"   # ranks R_n of the left operand
_RANKS2 = "ijmnoxyz"  # ranks R_n of the right operand (inner products); not k or l (component indices)


# Intermediates (in elements) a loss may keep for backward; above that the big ones are recomputed there
# (torch.utils.checkpoint), except those of at most ALWAYS_KEEP elements, never worth recomputing.
KEEP_FOR_BACKWARD = 1 << 26
ALWAYS_KEEP = 1 << 20


def _full_inner(a: Tucker, b: Tucker, detach_other: bool = False) -> Tensor:
    mine = a.full().flatten(1)
    other = mine if b is a else b.full().flatten(1)
    return mine @ (other.detach() if detach_other else other).T


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
    """C low-rank tensors of shape `shape` with Tucker ranks `ranks`, drawn at random (from `generator`,
    or torch's global generator when None): core entries N(0, 1 / prod(ranks)), factor entries N(0, 1 / I_n)."""

    def __init__(
        self, n_components: int, shape: tuple[int, ...], ranks: tuple[int, ...],
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        if len(shape) == 0 or len(shape) > len(_MODES):
            raise ValueError(f"Tucker tensors need 1 to {len(_MODES)} modes, got shape {tuple(shape)}")
        self.shape = tuple(shape)
        self.ranks = tucker_ranks(self.shape, ranks)
        C = n_components
        self.core = nn.Parameter(torch.randn(C, *self.ranks, generator=generator) / math.sqrt(math.prod(self.ranks)))
        self.factors = nn.ParameterList(
            nn.Parameter(torch.randn(C, size, r, generator=generator) / math.sqrt(size))
            for size, r in zip(self.shape, self.ranks)
        )

    @property
    def n_components(self) -> int:
        return self.core.shape[0]

    @property
    def full_size(self) -> int:
        """Elements of `full()`: C · prod(shape)."""
        return self.n_components * math.prod(self.shape)

    def core_and_factors(self) -> list[Tensor]:
        """[core, U^(1), …, U^(N)], the parameters themselves (for code where nn.Module's attribute lookup
        costs more than the arithmetic, as in a step on a toy model)."""
        return [self._parameters["core"], *self.factors._parameters.values()]

    def _core_and_factor_terms(self, ranks: str) -> list[str]:
        n = len(self.shape)
        return ["k" + ranks[:n]] + [f"k{_MODES[m]}{ranks[m]}" for m in range(n)]

    def full(self) -> Tensor:
        """The tensors themselves: (C, *shape)."""
        n = len(self.shape)
        # torch.bmm rather than @: at toy sizes the dispatch of batched matmul dominates
        if n == 1:
            return torch.bmm(self.factors[0], self.core.unsqueeze(-1)).squeeze(-1)
        if n == 2:
            return torch.bmm(torch.bmm(self.factors[0], self.core), self.factors[1].transpose(1, 2))
        spec = ",".join(self._core_and_factor_terms(_RANKS)) + "->k" + _MODES[:n]
        return torch.einsum(spec, self.core, *self.factors)

    def half(self) -> Tensor:
        """core ×_2 U^(2) … ×_N U^(N), i.e. T_k = U_k^(1) · half_k: (C, R_1, I_2 · … · I_N)."""
        n = len(self.shape)
        if n == 1:
            return self.core.unsqueeze(-1)
        if n == 2:
            return torch.bmm(self.core, self.factors[1].transpose(1, 2))
        terms = self._core_and_factor_terms(_RANKS)
        spec = ",".join([terms[0]] + terms[2:]) + "->k" + _RANKS[0] + _MODES[1:n]
        return torch.einsum(spec, self.core, *self.factors[1:]).flatten(2)

    def full_is_cheaper(self, n_other: int) -> bool:
        """Whether inner products go through the full tensors: small ones (where call overhead, not
        flops, decides), or where that costs fewer flops than the factor Grams and fits in memory."""
        size = self.n_components * math.prod(self.shape)
        if size <= 1 << 16:
            return True
        via_full = size * (self.ranks[0] + n_other)
        via_factors = self.n_components * n_other * (
            sum(i * r * r for i, r in zip(self.shape, self.ranks)) + math.prod(self.ranks) * max(self.ranks)
        )
        return via_full <= via_factors and size <= 1 << 26

    def inner(self, other: Tucker, recompute: bool = False, detach_other: bool = False) -> Tensor:
        """Inner products <self_k, other_l> for every pair: (C, C'), from the factors alone.

        Where it costs fewer operations the full tensors are built instead; with `recompute` they are
        not kept for backward but built again there. detach_other: no gradient flows to `other` (to self only,
        even when other is self).
        """
        if other.shape != self.shape:
            raise ValueError(f"inner product of Tucker tensors of shapes {self.shape} and {other.shape}")
        n = len(self.shape)
        if self.full_is_cheaper(other.n_components):
            if recompute and torch.is_grad_enabled() and self.full_size > ALWAYS_KEEP:
                return checkpoint(_full_inner, self, other, detach_other, use_reentrant=False)
            return _full_inner(self, other, detach_other)
        theirs = [other.core, *other.factors]
        if detach_other:
            theirs = [t.detach() for t in theirs]
        # contract core_k with the factor Grams (C, C', R_m, R'_m) one mode at a time, then with core'_l
        x = self.core.unsqueeze(1)                                   # (C, 1, R_1, …, R_N)
        for m, (u, v) in enumerate(zip(self.factors, theirs[1:])):
            gram = torch.einsum("kar,las->klrs", u, v)
            left, right = _RANKS[:m], _RANKS[m + 1:n]
            x = torch.einsum(f"kl{left}a{right},klab->kl{left}b{right}", x, gram)
        return (x * theirs[0].unsqueeze(0)).flatten(2).sum(2)

    def sq_norms(self) -> Tensor:
        """||T_k||² for each component: (C,)."""
        if self.full_is_cheaper(1):
            return self.full().flatten(1).pow(2).sum(1)
        # per component: <core, core ×_n (U^(n)ᵀ U^(n))>
        x = self.core
        n = len(self.shape)
        for m, u in enumerate(self.factors):
            gram = u.transpose(1, 2) @ u                              # (C, R_m, R_m)
            spec = f"k{_RANKS[:n]},k{_RANKS[m]}{_RANKS2[m]}->k" + _RANKS[:m] + _RANKS2[m] + _RANKS[m + 1:n]
            x = torch.einsum(spec, x, gram)
        return (x * self.core).flatten(1).sum(1)


def tucker_approximation(tensor: Tensor, ranks: tuple[int, ...]) -> tuple[Tensor, list[Tensor]]:
    """Truncated higher-order SVD of one tensor: core (R_1, …, R_N) and factors (I_n, R_n) with orthonormal columns."""
    factors = []
    for mode, r in enumerate(ranks):
        unfolded = tensor.movedim(mode, 0).reshape(tensor.shape[mode], -1)
        u, _, _ = torch.linalg.svd(unfolded, full_matrices=True)
        factors.append(u[:, :r])
    core = tensor
    for u in factors:   # contract mode 0 each time; the rank index moves to the back, so after N steps order is kept
        core = torch.tensordot(core, u, dims=([0], [0]))
    return core, factors


def tucker_tensor(core: Tensor, factors: list[Tensor]) -> Tensor:
    """The tensor (I_1, …, I_N) of a core (R_1, …, R_N) and factors (I_n, R_n): core ×_1 U_1 … ×_N U_N."""
    out = core
    for u in factors:   # contract mode 0 each time; the size index moves to the back, so after N steps order is kept
        out = torch.tensordot(out, u, dims=([0], [1]))
    return out
