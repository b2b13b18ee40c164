"""The fast path of `Decomposition.loss`: the loss of materialized gradients, with a written-out backward.

On small models a step costs per operation, not per flop. For flat gradients g (N, n_w), encoder and decoder
directions E, D (C, n_w) of 1- and 2-mode Tucker tensors, c = g Eᵀ, p = g Dᵀ, G = D Dᵀ and c̃ = m ⊙ c:
    error = Σ_i ||g_i||² + Σ_ik c̃_ik ((c̃ G)_ik − 2 p_ik),    loss = error / Σ_i ||g_i||²
    ∂error/∂c = 2 (c̃ G − p) ⊙ m,    ∂error/∂D = 2 (c̃ᵀ c̃ D − c̃ᵀ g),    ∂error/∂E = (∂error/∂c)ᵀ g
and the dropped energy S = Σ_ik (1 − m_ik) c_ik² adds 2 (1 − m) ⊙ c to ∂/∂c. `DenseLoss` does the same
computation as the generic path with a third of the operations; the Tucker chain rule is `_full_backward`.
"""
from __future__ import annotations

import torch
from torch import Tensor


def as_divisor(total: Tensor) -> Tensor:
    """Σ||g||² as a divisor: a batch whose gradients are all zero has error 0 and loss 0, not 0/0."""
    return total.clamp_min(torch.finfo(total.dtype).tiny)


def flat_tucker(core: Tensor, factors: list[Tensor]) -> Tensor:
    """A 1- or 2-mode Tucker tensor, flattened: (C, n)."""
    if len(factors) == 1:
        return torch.bmm(factors[0], core.unsqueeze(-1)).squeeze(-1)
    return torch.bmm(torch.bmm(factors[0], core), factors[1].transpose(1, 2)).flatten(1)


def _full_backward(g: Tensor, core: Tensor, factors: list[Tensor]) -> list[Tensor]:
    """Gradients w.r.t. core and factors of `flat_tucker(core, factors)` given its gradient g: (C, n)."""
    if len(factors) == 1:
        (u,) = factors
        return [torch.bmm(u.transpose(1, 2), g.unsqueeze(-1)).squeeze(-1), g.unsqueeze(-1) * core.unsqueeze(1)]
    u, v = factors
    g = g.view(-1, u.shape[1], v.shape[1])
    gv = torch.bmm(g, v)                                                   # (C, I, R_2)
    return [torch.bmm(u.transpose(1, 2), gv), torch.bmm(gv, core.transpose(1, 2)),
            torch.bmm(g.transpose(1, 2), torch.bmm(u, core))]


class DenseLoss(torch.autograd.Function):
    """The loss of materialized gradients for 1- and 2-mode Tucker directions, with a written-out backward.

    Inputs: flat gradients (N, n_w), their squared norms (N,), `keep` (coefficients c (N, C) -> the (N, C) bool
    mask of those kept: `batch_top_k` at the decomposition's top_k), modes per tensor, whether to return the
    dropped energy S too, then core and factors of every encoder tensor followed by those of every decoder tensor.
    Outputs: loss, error, total (scalars), the mask (N, C) [, S].
    """

    @staticmethod
    def forward(ctx, flat, sq_norms, keep, n_modes, dropped_energy, *params):
        enc, dec = params[:len(params) // 2], params[len(params) // 2:]

        def directions(ps):
            out, i = [], 0
            for n in n_modes:
                out.append(flat_tucker(ps[i], ps[i + 1:i + 1 + n]))
                i += 1 + n
            return torch.cat(out, 1) if len(out) > 1 else out[0]

        E, D = directions(enc), directions(dec)                             # (C, n_w) each
        c, p = torch.mm(flat, torch.cat([E, D]).T).split(E.shape[0], 1)
        gram = torch.mm(D, D.T)
        total = sq_norms.sum()
        mask = keep(c)
        ct = c * mask
        error = total + (torch.addmm(p, ct, gram, beta=-2) * ct).sum()
        dropped = c - ct if dropped_energy else None
        ctx.save_for_backward(flat, ct, mask, p, gram, D, total, dropped, *params)
        ctx.n_modes = n_modes
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
        grads = []
        for dfull, ps in ((dE, params[:len(params) // 2]), (dD, params[len(params) // 2:])):
            i, offset = 0, 0
            for n in ctx.n_modes:
                core, factors = ps[i], ps[i + 1:i + 1 + n]
                size = factors[0].shape[1] * (factors[1].shape[1] if n == 2 else 1)
                grads += _full_backward(dfull[:, offset:offset + size], core, factors)
                i, offset = i + 1 + n, offset + size
        return (None, None, None, None, None, *grads)
