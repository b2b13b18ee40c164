"""The fast path of `Decomposition.loss`: the loss of materialized gradients, with a written-out backward.

On small models a step costs per operation, not per flop. For flat gradients g (N, n_w), encoder and decoder
directions E, D (C, n_w) of 1- and 2-mode Tucker tensors, c = g Eᵀ, p = g Dᵀ, G = D Dᵀ and c̃ = m ⊙ c:
    error = Σ_i ||g_i||² + Σ_ik c̃_ik ((c̃ G)_ik − 2 p_ik),    loss = error / Σ_i ||g_i||²
    ∂error/∂c = 2 (c̃ G − p) ⊙ m,    ∂error/∂D = 2 (c̃ᵀ c̃ D − c̃ᵀ g),    ∂error/∂E = (∂error/∂c)ᵀ g
and the dropped energy S = Σ_ik (1 − m_ik) c_ik² adds 2 (1 − m) ⊙ c to ∂/∂c. `DenseLoss` does the same
computation as the generic path with a third of the operations; the Tucker chain rule is `_full_backward`.
`StackDenseLoss` is the same for a stack of M members (`Decomposition.stack`): every formula above per member m,
with its own c, mask, G_m and Σ_i ||g_i||², batched over the members (member m reads the flat gradients of its
group, m // (M / G) of G).
"""
from __future__ import annotations

import torch
from torch import Tensor


def as_divisor(total: Tensor) -> Tensor:
    """Σ||g||² as a divisor: a batch whose gradients are all zero has error 0 and loss 0, not 0/0."""
    return total.clamp_min(torch.finfo(total.dtype).tiny)


def bmm(a: Tensor, b: Tensor) -> Tensor:
    """torch.bmm (B, I, K) @ (B, K, J); with K = 1 (a rank-1 factor) the outer products as one broadcast product,
    the same numbers (one product each) without a batched matrix product per member."""
    return a * b if a.shape[-1] == 1 else torch.bmm(a, b)


def flat_tucker(core: Tensor, factors: list[Tensor]) -> Tensor:
    """A 1- or 2-mode Tucker tensor, flattened: (C, n)."""
    return _tucker_with_partial(core, factors)[0]


def _tucker_with_partial(core: Tensor, factors: list[Tensor]) -> tuple[Tensor, Tensor | None]:
    """`flat_tucker` and, for 2 modes, the partial product U S (C, I, R_2) its backward reuses (None for 1 mode)."""
    if len(factors) == 1:
        return bmm(factors[0], core.unsqueeze(-1)).squeeze(-1), None
    us = bmm(factors[0], core)                                             # (C, I, R_2)
    return bmm(us, factors[1].transpose(1, 2)).flatten(1), us


def _full_backward(g: Tensor, core: Tensor, factors: list[Tensor], us: Tensor | None) -> list[Tensor]:
    """Gradients w.r.t. core and factors of `flat_tucker(core, factors)` given its gradient g: (C, n), and for 2 modes
    the forward's partial product U S (`_tucker_with_partial`)."""
    if len(factors) == 1:
        (u,) = factors
        return [torch.bmm(u.transpose(1, 2), g.unsqueeze(-1)).squeeze(-1), g.unsqueeze(-1) * core.unsqueeze(1)]
    u, v = factors
    g = g.view(-1, u.shape[1], v.shape[1])
    gv = torch.bmm(g, v)                                                   # (C, I, R_2)
    return [torch.bmm(u.transpose(1, 2), gv), bmm(gv, core.transpose(1, 2)), torch.bmm(g.transpose(1, 2), us)]


class DenseLoss(torch.autograd.Function):
    """The loss of materialized gradients for 1- and 2-mode Tucker directions, with a written-out backward.

    Inputs: flat gradients (N, n_w), their squared norms (N,), `keep` (coefficients c (N, C) -> the (N, C) bool
    mask of those kept: `batch_top_k` at the decomposition's top_k), modes per tensor, whether to return the
    dropped energy S too, then core and factors of every encoder tensor followed by those of every decoder tensor.
    Outputs: loss, error, total (scalars), the mask (N, C) [, S].
    """

    @staticmethod
    def forward(ctx, flat, sq_norms, keep, n_modes, dropped_energy, *params):
        E, D, partials = _directions(params, n_modes)                       # (C, n_w) each
        c, p = torch.mm(flat, torch.cat([E, D]).T).split(E.shape[0], 1)
        gram = torch.mm(D, D.T)
        total = sq_norms.sum()
        mask = keep(c)
        ct = c * mask
        error = total + (torch.addmm(p, ct, gram, beta=-2) * ct).sum()
        dropped = c - ct if dropped_energy else None
        ctx.save_for_backward(flat, ct, mask, p, gram, D, total, dropped, *params)
        ctx.n_modes, ctx.partials = n_modes, partials
        ctx.mark_non_differentiable(total, mask)
        outputs = (error / as_divisor(total), error, total, mask)
        return outputs + (dropped.pow(2).sum(),) if dropped_energy else outputs

    @staticmethod
    def backward(ctx, g_loss, g_error, g_total, g_mask, *g_dropped_energy):
        flat, ct, mask, p, gram, D, total, dropped, *params = ctx.saved_tensors
        g = g_loss / as_divisor(total) + g_error
        dc = (2 * g) * torch.addmm(p, ct, gram, beta=-1) * mask                 # dL/dc: 2g(c̃G − p) on the mask
        if dropped is not None:
            dc = dc + (2 * g_dropped_energy[0]) * dropped                               # and 2(1 − m)c from S
        dD = torch.addmm(torch.mm((-2 * g) * ct.T, flat), torch.mm(ct.T, ct), D, alpha=2 * g)
        dE = torch.mm(dc.T, flat)
        return (None, None, None, None, None, *_tucker_backward(dE, dD, params, ctx.n_modes, ctx.partials))


class StackDenseLoss(torch.autograd.Function):
    """`DenseLoss` for a stack of M members of C subnetworks each, on G batches of materialized gradients.

    Inputs: flat gradients (G, N, n_w), their squared norms summed per batch (G,), M, n_keep (the coefficients
    BatchTopK keeps of each member's N·C), the (M, N, C) bool mask to keep in its place or None, modes per tensor,
    whether to return the dropped energy too, then core and factors of every encoder tensor followed by those of
    every decoder tensor (M·C rows each, member-major).
    Outputs: loss (Σ_m error_m / total_m), error, total (M,), the mask (N, M·C) [, S (M,)].
    """

    @staticmethod
    def forward(ctx, flat, totals, M, n_keep, given, n_modes, dropped_energy, *params):
        G, N, n_w = flat.shape
        E, D, partials = _directions(params, n_modes)                        # (M·C, n_w) each
        C = E.shape[0] // M
        ED = torch.cat([E.view(G, -1, n_w), D.view(G, -1, n_w)], 1)         # (G, 2·M/G·C, n_w)
        c, p = (_by_member(x, M) for x in torch.bmm(flat, ED.transpose(1, 2)).chunk(2, 2))   # (M, N, C) each
        Dm = D.view(M, C, n_w)
        gram = torch.bmm(Dm, Dm.transpose(1, 2))                             # (M, C, C)
        total = totals.repeat_interleave(M // G)                             # (M,)
        if given is not None:
            mask = given
        elif n_keep == N * C:
            mask = torch.ones_like(c, dtype=torch.bool)
        else:       # BatchTopK per member: the n_keep largest |c| of its N·C coefficients
            idx = c.abs().reshape(M, -1).topk(n_keep, dim=1, sorted=False).indices
            mask = torch.zeros(M, N * C, dtype=torch.bool, device=c.device).scatter_(1, idx, True).view(M, N, C)
        ct = c * mask
        error = total + (torch.baddbmm(p, ct, gram, beta=-2) * ct).sum((1, 2))
        dropped = c - ct if dropped_energy else None
        ctx.save_for_backward(flat, ct, mask, p, gram, Dm, total, dropped, *params)
        ctx.n_modes, ctx.M, ctx.partials = n_modes, M, partials
        columns = mask.transpose(0, 1).reshape(N, M * C)                      # member-major columns
        ctx.mark_non_differentiable(total, columns)
        outputs = ((error / as_divisor(total)).sum(), error, total, columns)
        return outputs + (dropped.pow(2).sum((1, 2)),) if dropped_energy else outputs

    @staticmethod
    def backward(ctx, g_loss, g_error, g_total, g_mask, *g_dropped_energy):
        flat, ct, mask, p, gram, Dm, total, dropped, *params = ctx.saved_tensors
        M, G = ctx.M, flat.shape[0]
        g = (g_loss / as_divisor(total) + g_error).view(M, 1, 1)             # per member
        dc = (2 * g) * torch.baddbmm(p, ct, gram, beta=-1) * mask            # (M, N, C)
        if dropped is not None:
            dc = dc + (2 * g_dropped_energy[0]).view(M, 1, 1) * dropped
        ctg, dcg = _by_group(ct, G), _by_group(dc, G)                        # (G, N, M/G·C)
        ctg_flat = torch.bmm(ctg.transpose(1, 2), flat).view_as(Dm)          # c̃ᵀg per member: (M, C, n_w)
        dD = (2 * g) * torch.baddbmm(ctg_flat, torch.bmm(ct.transpose(1, 2), ct), Dm, beta=-1)   # 2g(c̃ᵀc̃D − c̃ᵀg)
        dE = torch.bmm(dcg.transpose(1, 2), flat)
        n = Dm.shape[0] * Dm.shape[1]
        return (None, None, None, None, None, None, None,
                *_tucker_backward(dE.reshape(n, -1), dD.reshape(n, -1), params, ctx.n_modes, ctx.partials))


def _by_member(x: Tensor, M: int) -> Tensor:
    """(G, N, M/G·C), the columns of each batch's members in order -> (M, N, C)."""
    G, N, K = x.shape
    return x.view(G, N, M // G, K * G // M).transpose(1, 2).reshape(M, N, -1)


def _by_group(x: Tensor, G: int) -> Tensor:
    """(M, N, C) -> (G, N, M/G·C), the inverse of `_by_member`."""
    M, N, C = x.shape
    return x.view(G, M // G, N, C).transpose(1, 2).reshape(G, N, -1)


def _directions(params: tuple[Tensor, ...], n_modes: tuple[int, ...]) -> tuple[Tensor, Tensor, list]:
    """The encoder and decoder directions, flattened over the tensors: (rows, n_w) each, from core and factors of
    every encoder tensor followed by those of every decoder tensor; and the partial products of every tensor in
    that order (`_tucker_with_partial`), for `_tucker_backward`."""
    partials = []

    def directions(ps):
        out, i = [], 0
        for n in n_modes:
            flat, us = _tucker_with_partial(ps[i], ps[i + 1:i + 1 + n])
            out.append(flat)
            partials.append(us)
            i += 1 + n
        return torch.cat(out, 1) if len(out) > 1 else out[0]

    return directions(params[:len(params) // 2]), directions(params[len(params) // 2:]), partials


def _tucker_backward(dE: Tensor, dD: Tensor, params: tuple[Tensor, ...], n_modes: tuple[int, ...],
                     partials: list) -> list[Tensor]:
    """Gradients w.r.t. every core and factor (in the order of `params`) from those w.r.t. the flat encoder and
    decoder directions, dE and dD: (rows, n_w) each, with the forward's partial products (`_directions`)."""
    grads, partial = [], iter(partials)
    for dfull, ps in ((dE, params[:len(params) // 2]), (dD, params[len(params) // 2:])):
        i, offset = 0, 0
        for n in n_modes:
            core, factors = ps[i], ps[i + 1:i + 1 + n]
            size = factors[0].shape[1] * (factors[1].shape[1] if n == 2 else 1)
            grads += _full_backward(dfull[:, offset:offset + size], core, factors, next(partial))
            i, offset = i + 1 + n, offset + size
    return grads
