"""The L3D decomposition: n_v subnetworks, each an encoder and a decoder direction in parameter space.

For per-sample gradients g_i (N samples) and subnetworks k = 1..C:
    c_ik = <e_k, g_i>                       encoder coefficients
    m_ik = batch_top_k(|c|, k)              keep the largest fraction k over the whole batch
    ĝ_i  = Σ_k m_ik c_ik d_k                reconstruction
    L    = Σ_i ||g_i − ĝ_i||² / Σ_i ||g_i||²
The loss is computed from projections and the decoder Gram matrix G_kl = <d_k, d_l>, so ĝ is never built:
    ||g_i − ĝ_i||² = ||g_i||² − 2 Σ_k c̃_ik <d_k, g_i> + c̃_iᵀ G c̃_i,   c̃ = m ⊙ c.
Beside it, the dropped energy, the energy of the coefficients BatchTopK drops, S = Σ_ik (1 − m_ik) c_ik² (not in
the paper; `l3d.fit(silence=...)` adds the silence penalty silence · S to the loss, so that an encoder stays silent
where its subnetwork is not used).

And the revival term (not in the paper; `l3d.fit(revive=...)`, for subnetworks BatchTopK no longer selects):
with the residuals r_i = g_i − ĝ_i held fixed and a set of dead subnetworks, a_ik = m'_ik c_ik their coefficients
with m' BatchTopK's choice among them alone, and r̂_i = Σ_k a_ik d_k,
    R = Σ_i ||r_i − r̂_i||² − ||r_i||² = Σ_i a_iᵀ G a_i − 2 Σ_ik a_ik <d_k, r_i>,
which trains only the dead subnetworks, towards what the others leave unexplained (the auxiliary loss of TopK
sparse autoencoders, AuxK: Gao et al. 2024, "Scaling and evaluating sparse autoencoders").

A stack (`Decomposition.stack`) holds M independent decompositions ("members": starts, seeds) of the same
shapes as one module of M·C subnetworks, member m owning subnetworks m·C … (m+1)·C − 1. Its loss is the sum of
the members' losses, each with its own BatchTopK, Gram matrix and error, so one optimizer step trains all M
exactly as M separate runs would (Adam acts per element), at about the cost of one run on small models.

Beside this module: l3d.dense_loss (the loss's fast path on small models), l3d.ranks (the rank argument's checks),
l3d.decomposition_files (`save` and `load`).
"""
from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .decomposition_files import load_decomposition, save_decomposition
from .dense_loss import DenseLoss, StackDenseLoss, as_divisor, flat_tucker
from .gradients import DenseGradients, StackedGradients
from .ranks import Rank, as_rank, check_rank
from .runtime.distributed import gather_rows
from .runtime.validate import as_float, as_int, as_seed, renamed
from .tucker import KEEP_FOR_BACKWARD, Tucker, tucker_approximation, tucker_ranks, tucker_tensor

DECODER_NORMS = ("unit", "sum")
DECODER_NORM_RENAMES = {"authors": "sum"}   # old spelling -> current, still read (with a DeprecationWarning)


def batch_top_k(c: Tensor, k: float, distributed: bool = False) -> Tensor:
    """Mask (N, C) bool keeping the round(k · c.numel()) entries of largest |c| of the coefficients c (N, C), at
    least one. (The selection is over every entry, so c of any other shape works too; the mask has c's shape.)

    distributed: c holds this process's rows of a batch spread over processes; the top k is taken over the
    whole batch (see l3d.runtime.distributed).
    """
    if not 0 < k <= 1:
        raise ValueError(f"top_k is the fraction of coefficients kept and must lie in (0, 1], got {k}")
    if distributed:
        everything, ours = gather_rows(c.detach())
        return batch_top_k(everything, k)[ours]
    n_keep = max(1, round(k * c.numel()))
    if n_keep == c.numel():
        return torch.ones_like(c, dtype=torch.bool)
    # a partial selection (no full sort)
    idx = c.detach().abs().view(-1).topk(n_keep, sorted=False).indices
    return torch.zeros(c.numel(), dtype=torch.bool, device=c.device).index_fill_(0, idx, True).view_as(c)


@dataclass
class LossParts:
    """Pieces of one batch's loss: the loss, its numerator and denominator, the top-k mask and the dropped
    energy (of the coefficients BatchTopK drops)."""

    loss: Tensor       # (): error / total (for a stack, the sum over its members)
    error: Tensor      # Σ_i ||g_i − ĝ_i||²: (), for a stack (M,), one per member
    total: Tensor      # Σ_i ||g_i||²: (), for a stack (M,)
    mask: Tensor       # (N, C) bool, C = n_subnetworks (M·C for a stack)
    dropped_energy: Tensor | None = None   # S = Σ_ik (1 − m_ik) c_ik², when asked for: (), for a stack (M,)


class Decomposition(nn.Module):
    """C subnetworks over named parameter tensors, with Tucker-form encoder and decoder directions.

    Args:
        shapes: name -> shape of each decomposed parameter tensor (order is kept everywhere).
        n_subnetworks: C.
        rank: one rank for every tensor, or name -> rank, where a rank is an int or a tuple with one
            entry per mode. An int is capped per mode at the mode's size (a 3×3 kernel stays full at
            rank 10) but may not exceed every dimension of every tensor it is given for; a tuple must
            fit each mode.
        top_k: fraction of coefficients BatchTopK keeps (0.1 in the paper).
        decoder_norm: how every subnetwork's decoder direction is scaled after each step: "unit" (Σ_t ‖d_t‖² = 1
            over its tensors t, the paper's unit norm) or "sum" (Σ_t ‖d_t‖ = 1, the fixed point of the
            authors' code's `normalize_low_ranks`; a direction spread over many tensors then has a smaller norm
            and larger coefficients, which BatchTopK favours). The old spelling "authors" is read as "sum".
        seed: seed of the random initialization (a generator of its own; torch's global generator is
            used, and advanced, only when seed is None).
        members: M >= 1; M > 1 makes a stack of M independent decompositions of n_subnetworks / M subnetworks
            each (see the module docstring; build one with `Decomposition.stack`, take it apart with `unstack`).
    """

    def __init__(
        self,
        shapes: dict[str, tuple[int, ...]],
        n_subnetworks: int,
        rank: Rank | dict[str, Rank] = 1,
        top_k: float = 0.1,
        seed: int | None = None,
        decoder_norm: str = "unit",
        members: int = 1,
    ):
        super().__init__()
        decoder_norm = renamed("decoder_norm", decoder_norm, DECODER_NORM_RENAMES)
        if decoder_norm not in DECODER_NORMS:
            raise ValueError(f"decoder_norm must be 'unit' (Σ_t ‖d_t‖² = 1, the paper) or 'sum' (Σ_t ‖d_t‖ = 1, "
                             f"the authors' code), got {decoder_norm!r}")
        self.decoder_norm = decoder_norm
        n_subnetworks, top_k = as_int("n_subnetworks", n_subnetworks), as_float("top_k", top_k)
        if n_subnetworks < 1:
            raise ValueError(f"n_subnetworks must be at least 1, got {n_subnetworks}")
        members = as_int("members", members)
        if members < 1 or n_subnetworks % members:
            raise ValueError(f"members must be an int >= 1 that divides n_subnetworks {n_subnetworks} (a stack of "
                             f"members decompositions of n_subnetworks / members subnetworks each), got {members}")
        self.members = members
        if not 0 < top_k <= 1:
            raise ValueError(f"top_k is the fraction of coefficients kept and must lie in (0, 1], got {top_k}")
        if not isinstance(shapes, dict) or not shapes:
            raise ValueError(f"shapes must be a non-empty dict name -> shape (a decomposition needs at least one "
                             f"parameter tensor), got {shapes!r}")
        if seed is not None:
            seed = as_seed("seed", seed)
        rank = ({n: as_rank(f"rank[{n!r}]", r) for n, r in rank.items()} if isinstance(rank, dict)
                else as_rank("rank", rank))
        if isinstance(rank, dict):
            missing, extra = set(shapes) - set(rank), set(rank) - set(shapes)
            if missing:
                raise ValueError(f"rank dict lacks tensors {sorted(missing)}; give a rank for every tensor")
            if extra:
                raise ValueError(f"rank dict names tensors {sorted(extra)} that are not decomposed "
                                 f"(tensors: {list(shapes)})")
        self.shapes = {name: tuple(shape) for name, shape in shapes.items()}
        self.names = list(self.shapes)
        self.n_subnetworks = n_subnetworks
        self.top_k = top_k
        check_rank(self.shapes, rank)
        self.ranks = {
            name: tucker_ranks(shape, rank[name] if isinstance(rank, dict) else rank)
            for name, shape in self.shapes.items()
        }
        generator = None if seed is None else torch.Generator().manual_seed(seed)
        self.decoder = nn.ModuleList(Tucker(n_subnetworks, s, self.ranks[n], generator) for n, s in self.shapes.items())
        self.encoder = nn.ModuleList(Tucker(n_subnetworks, s, self.ranks[n], generator) for n, s in self.shapes.items())
        self._n_modes = tuple(len(s) for s in self.shapes.values())
        self.normalize_decoder_()
        self.encoder.load_state_dict(self.decoder.state_dict())

    @property
    def config(self) -> dict:
        return {
            "shapes": {n: list(s) for n, s in self.shapes.items()},
            "n_subnetworks": self.n_subnetworks,
            "rank": {n: list(r) for n, r in self.ranks.items()},
            "top_k": self.top_k,
            **({} if self.decoder_norm == "unit" else {"decoder_norm": self.decoder_norm}),
            **({} if self.members == 1 else {"members": self.members}),
        }

    # --- stacks -----------------------------------------------------------------------------------
    @property
    def per_member(self) -> int:
        """C, the subnetworks of one member (n_subnetworks when the decomposition is not a stack)."""
        return self.n_subnetworks // self.members

    @classmethod
    def stack(cls, decompositions: Sequence[Decomposition]) -> Decomposition:
        """One stack of the given decompositions (same tensors, ranks, top_k and decoder scaling; members in order).
        The stack holds copies: train it, then `unstack` it."""
        decompositions = list(decompositions)
        if not decompositions or not all(isinstance(d, Decomposition) for d in decompositions):
            raise TypeError("decompositions must be a non-empty list of Decomposition")
        first = decompositions[0]
        for i, d in enumerate(decompositions):
            if d.members != 1:
                raise ValueError(f"decompositions[{i}] is a stack already ({d.members} members): stack single ones")
            if (d.shapes, d.ranks, d.n_subnetworks, d.top_k, d.decoder_norm) != (
                    first.shapes, first.ranks, first.n_subnetworks, first.top_k, first.decoder_norm):
                raise ValueError(f"decompositions[{i}] differs from decompositions[0] in its tensors, ranks, "
                                 f"n_subnetworks, top_k or decoder_norm: a stack's members must agree in all of them")
        core = first.decoder[0].core
        stacked = cls(first.shapes, first.n_subnetworks * len(decompositions), first.ranks, first.top_k, seed=0,
                      decoder_norm=first.decoder_norm, members=len(decompositions)).to(core.device, core.dtype)
        states = [d.state_dict() for d in decompositions]
        stacked.load_state_dict({k: torch.cat([st[k] for st in states]) for k in states[0]})
        return stacked

    def member(self, m: int) -> Decomposition:
        """A copy of member m of a stack, as a decomposition of its own."""
        m = as_int("m", m)
        if not 0 <= m < self.members:
            raise ValueError(f"m must be a member index in 0..{self.members - 1}, got {m}")
        C = self.per_member
        core = self.decoder[0].core
        one = type(self)(self.shapes, C, self.ranks, self.top_k, seed=0, decoder_norm=self.decoder_norm)
        one = one.to(core.device, core.dtype)
        one.load_state_dict({k: v[m * C:(m + 1) * C].clone() for k, v in self.state_dict().items()})
        return one

    def unstack(self) -> list[Decomposition]:
        """Every member of a stack as a decomposition of its own (copies)."""
        return [self.member(m) for m in range(self.members)]

    @torch.no_grad()
    def set_member_(self, m: int, decomposition: Decomposition) -> None:
        """Make member m of this stack equal to `decomposition` (a single decomposition of the same form)."""
        C = self.per_member
        for k, v in decomposition.state_dict().items():
            self.state_dict()[k][m * C:(m + 1) * C].copy_(v)

    # --- directions -----------------------------------------------------------------------------
    def encoder_directions(self) -> dict[str, Tensor]:
        """e_k per tensor: name -> (C, *shape)."""
        return {n: t.full() for n, t in zip(self.names, self.encoder)}

    def decoder_directions(self) -> dict[str, Tensor]:
        """d_k per tensor: name -> (C, *shape)."""
        return {n: t.full() for n, t in zip(self.names, self.decoder)}

    def flat_directions(self, part: str = "decoder") -> Tensor:
        """Every subnetwork's encoder or decoder direction over all tensors, flattened in order: (C, n_w)."""
        if part not in ("encoder", "decoder"):
            raise ValueError(f"part must be 'encoder' or 'decoder', got {part!r}")
        return torch.cat([t.full().flatten(1) for t in getattr(self, part)], dim=1)

    def unflatten(self, flat: Tensor) -> dict[str, Tensor]:
        """One flat direction (n_w,), in the order of `flat_directions`, as name -> a tensor of that shape."""
        parts = flat.split([math.prod(shape) for shape in self.shapes.values()])
        return {name: part.view(shape) for (name, shape), part in zip(self.shapes.items(), parts)}

    def decoder_gram(self) -> Tensor:
        """G_kl = <d_k, d_l> summed over tensors: (C, C)."""
        recompute = sum(t.full_size for t in self.decoder if t.full_is_cheaper(t.n_components)) > KEEP_FOR_BACKWARD
        return sum(t.inner(t, recompute) for t in self.decoder)

    @torch.no_grad()
    def normalize_decoder_(self) -> None:
        """Rescale every decoder direction to norm 1 over all its tensors, as `decoder_norm` says."""
        tuckers = list(self.decoder)
        parameters = [t.core_and_factors() for t in tuckers]
        if max(self._n_modes) <= 2 and all(t.full_size <= 1 << 16 for t in tuckers):
            # small models: fewest operations (see l3d.dense_loss)
            sq_norms = [flat_tucker(core, factors).pow(2).sum(1) for core, *factors in parameters]   # per tensor: (C,)
        else:
            sq_norms = [t.sq_norms() for t in tuckers]
        if self.decoder_norm == "unit":     # Σ_t ‖d_t‖² = 1
            scale = sum(sq_norms).clamp_min_(1e-30).rsqrt_()
        else:                               # Σ_t ‖d_t‖ = 1
            scale = sum(s.clamp_min(0).sqrt() for s in sq_norms).clamp_min_(1e-30).reciprocal_()
        torch._foreach_mul_([core for core, *_ in parameters],
                            [scale.view(-1, *([1] * len(t.shape))) for t in tuckers])

    @torch.no_grad()
    def set_subnetwork_(self, k: int, direction: dict[str, Tensor]) -> Tensor:
        """Make subnetwork k's encoder and decoder direction `direction` (name -> a tensor of that tensor's shape)
        reduced to the decomposition's Tucker ranks (`tucker_approximation`) and scaled to norm 1 over all tensors.
        Returns the direction set, flattened over the tensors in order: (n_w,) float64."""
        parts = [tucker_approximation(direction[name].double(), t.ranks) for name, t in zip(self.names, self.decoder)]
        full = torch.cat([tucker_tensor(core, factors).flatten() for core, factors in parts])
        norm = full.norm().clamp_min(1e-30)
        for tuckers in (self.decoder, self.encoder):
            for t, (core, factors) in zip(tuckers, parts):
                t.core[k] = (core / norm).to(t.core)
                for f, u in zip(t.factors, factors):
                    f[k] = u.to(f)
        return full / norm

    # --- the objective --------------------------------------------------------------------------
    def encode(self, grads) -> Tensor:
        """c_ik = <e_k, g_i>: (N, C)."""
        return grads.project(self.encoder)

    def loss(self, grads, top_k: float | None = None, distributed: bool = False, dropped_energy: bool = False,
             mask: Tensor | None = None) -> LossParts:
        """The normalized reconstruction loss of a batch of N per-sample gradients (see module docstring); with
        dropped_energy=True also S, the energy of the coefficients BatchTopK drops. Shapes: see `LossParts`.

        distributed: the batch is spread over processes and BatchTopK is taken over all of it; the loss,
        error and total are then this process's part (l3d.train sums them over processes).
        mask: (N, C) 0/1, the coefficients to keep in place of BatchTopK's choice (e.g. from known circuits,
        `l3d.experiments.ground_truth.fit_circuit_aligned`); S is then the energy of the others. For a stack
        (N, M·C), its columns member-major as `LossParts.mask`.
        """
        top_k = self.top_k if top_k is None else top_k
        n = (grads[0] if isinstance(grads, (list, tuple)) else grads).n_samples
        if mask is not None and mask.shape != (n, self.n_subnetworks):
            raise ValueError(f"mask must be (n_samples, n_subnetworks) = ({n}, {self.n_subnetworks}"
                             f"{', member-major for a stack' if self.members > 1 else ''}), got {tuple(mask.shape)}")
        if self.members > 1:
            if distributed:
                raise ValueError("a stack of decompositions trains on one process")
            return self._stack_loss(grads, top_k, dropped_energy, mask)
        n_modes = self._n_modes
        if isinstance(grads, DenseGradients) and max(n_modes) <= 2 and not distributed and mask is None:
            # (module attribute access costs more than the arithmetic here: read the parameter dicts)
            params = [p for t in (*self.encoder, *self.decoder) for p in t.core_and_factors()]
            loss, error, total, mask, *s = DenseLoss.apply(grads.flat(), grads.sq_norms(),
                                                           lambda c: batch_top_k(c, top_k),   # BatchTopK
                                                           n_modes, dropped_energy, *params)
            return LossParts(loss=loss, error=error, total=total, mask=mask,
                             dropped_energy=s[0] if dropped_energy else None)
        if isinstance(grads, DenseGradients):
            # materialized gradients: one product with all directions, the Gram from the same directions
            E, D = self.flat_directions("encoder"), self.flat_directions("decoder")     # (C, n_w) each
            c, p = (grads.flat() @ torch.cat([E, D]).T).split(self.n_subnetworks, dim=1)
            gram = D @ D.T
        else:
            c = self.encode(grads)                   # (N, C)
            p = grads.project(self.decoder)          # (N, C)  <d_k, g_i>
            gram = self.decoder_gram()
        total = grads.sq_norms().sum()
        mask = batch_top_k(c, top_k, distributed) if mask is None else mask.to(c.dtype)
        ct = c * mask
        # Σ_i ||g_i||² − 2 c̃_i·p_i + c̃_iᵀ G c̃_i
        error = total + (torch.addmm(p, ct, gram, beta=-2) * ct).sum()
        return LossParts(loss=error / as_divisor(total), error=error, total=total, mask=mask,
                         dropped_energy=(c - ct).pow(2).sum() if dropped_energy else None)

    def revival(self, grads, mask: Tensor, dead: Tensor, top_k: float | None = None,
                distributed: bool = False) -> Tensor:
        """The revival term R of a batch (module docstring), a scalar whose gradient reaches only the dead
        subnetworks: mask (N, C), the coefficients the loss kept (`LossParts.mask`); dead (C,) bool; BatchTopK
        among the dead keeps as many coefficients as the loss keeps (top_k; None: the decomposition's), at most
        all of theirs. distributed: as `loss`. One decomposition (not a stack)."""
        if self.members > 1:
            raise ValueError("revival trains one decomposition, not a stack (restarts = 1, one decomposition per fit)")
        if dead.shape != (self.n_subnetworks,) or dead.dtype != torch.bool:
            raise ValueError(f"dead must be a bool tensor of shape (n_subnetworks,) = ({self.n_subnetworks},), got "
                             f"{dead.dtype} {tuple(dead.shape)}")
        top_k = self.top_k if top_k is None else top_k
        n_dead = int(dead.sum())
        if n_dead == 0:
            return self.decoder[0].core.new_zeros(())
        c = self.encode(grads)                                        # (N, C)
        p = grads.project(self.decoder)                               # (N, C)  <d_k, g_i>
        mixed = sum(t.inner(t, detach_other=True) for t in self.decoder)   # <d_k, d_l> with d_l held fixed: (C, C)
        kept = (c * mask).detach()                                    # c̃
        residual = p - kept @ mixed.T                                 # <d_k, r_i>, r_i held fixed: (N, C)
        candidates = c * dead                                         # the dead subnetworks' coefficients
        a = candidates * batch_top_k(candidates, min(top_k, n_dead / self.n_subnetworks), distributed)
        gram = 2 * mixed - mixed.detach()                             # G, its gradient reaching both of its sides
        return (a * (a @ gram - 2 * residual)).sum()

    def _stack_loss(self, grads, top_k: float, dropped_energy: bool, mask: Tensor | None = None) -> LossParts:
        """The loss of every member of a stack (module docstring): error, total and dropped energy per member (M,),
        the mask (N, M·C). `grads` is one batch shared by all members, or G batches of the same size (a sequence, or
        one StackedGradients), the members split evenly over them in order (member m reads batch m // (M / G)).
        mask: as `loss`, (N, M·C), each member's coefficients to keep in place of its BatchTopK's choice."""
        M, C = self.members, self.per_member
        if isinstance(grads, StackedGradients):        # a sweep's batches, already one (G, N, n_w) tensor
            stacked, G, N = grads, len(grads), grads.n_samples
        else:
            groups = list(grads) if isinstance(grads, (list, tuple)) else [grads]
            G, N = len(groups), groups[0].n_samples
            if any(g.n_samples != N for g in groups):
                raise ValueError("the batches of a stack's members must have the same size, "
                                 f"got {[g.n_samples for g in groups]}")
            stacked = StackedGradients.stack(groups) if all(isinstance(g, DenseGradients) for g in groups) else None
        if M % G:
            raise ValueError(f"{G} batches of gradients cannot be shared evenly by {M} members")
        totals = stacked.totals() if stacked is not None else torch.stack([g.sq_norms().sum() for g in groups])  # (G,)
        n_keep = max(1, round(top_k * N * C))
        given = None if mask is None else mask.bool().view(N, M, C).transpose(0, 1).contiguous()   # (M, N, C)
        if stacked is not None and max(self._n_modes) <= 2:     # small models: the written-out backward (dense_loss)
            params = [p for t in (*self.encoder, *self.decoder) for p in t.core_and_factors()]
            loss, error, total, mask, *s = StackDenseLoss.apply(stacked.flat(), totals, M, n_keep, given,
                                                                self._n_modes, dropped_energy, *params)
            return LossParts(loss=loss, error=error, total=total, mask=mask,
                             dropped_energy=s[0] if dropped_energy else None)
        if stacked is not None:
            flat = stacked.flat()                                                     # (G, N, n_w)
            E, D = self.flat_directions("encoder"), self.flat_directions("decoder")  # (M·C, n_w) each
            c = torch.bmm(flat, E.view(G, -1, E.shape[1]).transpose(1, 2))          # (G, N, M/G·C)
            p = torch.bmm(flat, D.view(G, -1, D.shape[1]).transpose(1, 2))
            c, p = (x.transpose(0, 1).reshape(N, M * C) for x in (c, p))            # (N, M·C), member-major
            Dm = D.view(M, C, -1)
            gram = torch.bmm(Dm, Dm.transpose(1, 2))                                # (M, C, C)
        elif G == 1:
            c, p = groups[0].project(self.encoder), groups[0].project(self.decoder)  # (N, M·C)
            full = self.decoder_gram().view(M, C, M, C)
            gram = torch.diagonal(full, dim1=0, dim2=2).permute(2, 0, 1)             # (M, C, C): each member's block
        else:
            raise ValueError("a stack reads factored gradients from one shared batch only; use engine='dense' "
                             "for members with batches of their own")
        totals = totals.repeat_interleave(M // G)                                     # (M,)
        cm = c.view(N, M, C).transpose(0, 1).reshape(M, N * C)                       # each member's coefficients
        if given is not None:
            keep = given.view(M, N * C)
        elif n_keep == N * C:
            keep = torch.ones_like(cm, dtype=torch.bool)
        else:
            idx = cm.detach().abs().topk(n_keep, dim=1, sorted=False).indices
            keep = torch.zeros_like(cm, dtype=torch.bool).scatter_(1, idx, True)
        mask = keep.view(M, N, C).transpose(0, 1).reshape(N, M * C)
        ct = c * mask
        ctm = ct.view(N, M, C)
        quadratic = torch.einsum("nmc,mcd,nmd->m", ctm, gram, ctm)
        linear = (p * ct).view(N, M, C).sum((0, 2))
        error = totals - 2 * linear + quadratic                                      # (M,)
        dropped = (c - ct).pow(2).view(N, M, C).sum((0, 2)) if dropped_energy else None
        return LossParts(loss=(error / as_divisor(totals)).sum(), error=error, total=totals, mask=mask,
                         dropped_energy=dropped)

    def check_shapes(self, shapes: dict[str, tuple[int, ...]], what: str = "the model") -> None:
        """Raise a ValueError unless `shapes` (name -> shape, e.g. `collector.shapes`) are this decomposition's."""
        shapes = {n: tuple(s) for n, s in shapes.items()}
        if list(shapes.items()) == list(self.shapes.items()):   # the order matters: gradients are flattened in it
            return
        problems = [f"{n}: decomposition {self.shapes[n]}, {what} {shapes[n]}"
                    for n in self.shapes if n in shapes and shapes[n] != self.shapes[n]]
        if set(self.shapes) - set(shapes):
            problems.append(f"only in the decomposition: {sorted(set(self.shapes) - set(shapes))}")
        if set(shapes) - set(self.shapes):
            problems.append(f"only in {what}: {sorted(set(shapes) - set(self.shapes))}")
        if not problems:
            problems.append(f"tensor order differs: decomposition {self.names}, {what} {list(shapes)}")
        raise ValueError(f"the decomposition does not fit {what}'s tensors: " + "; ".join(problems))

    # --- saving ---------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write `path`/decomposition.safetensors and `path`/config.json, each atomically."""
        save_decomposition(self, path)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        map_location: str | torch.device = "cpu",
        shapes: dict[str, tuple[int, ...]] | None = None,
    ) -> Decomposition:
        """Read a decomposition written by `save` (no pickle), in the dtype it was saved in.

        shapes: name -> shape of the model's tensors (e.g. `collector.shapes`); loading refuses a
        decomposition of other tensors.
        A folder written by `Run.save` holds run.json, which records the SHA-256 of both files: loading refuses
        files that differ from it (a save cut short, or the decomposition saved again without its run).
        """
        return load_decomposition(cls, path, map_location, shapes)


def check_matches(decomposition: Decomposition, collector) -> None:
    """Raise a ValueError unless the decomposition has the dtype and device of the model's decomposed tensors
    (`collector.params`, e.g. a GradientCollector's)."""
    core = decomposition.decoder[0].core
    dtypes = {p.dtype for p in collector.params.values()}
    devices = {p.device for p in collector.params.values()}
    if dtypes != {core.dtype}:
        raise ValueError(
            f"the decomposition is {core.dtype} but the model's decomposed tensors are {sorted(map(str, dtypes))}: "
            f"convert one, e.g. decomposition.to({sorted(map(str, dtypes))[0]})"
        )
    if devices != {core.device}:
        raise ValueError(
            f"the decomposition is on {core.device} but the model's decomposed tensors on {sorted(map(str, devices))}: "
            f"move one, e.g. decomposition.to({str(sorted(map(str, devices))[0])!r})"
        )
