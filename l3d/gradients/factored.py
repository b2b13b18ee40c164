"""Factored per-sample gradients: projections and norms from activations and output-gradients.

For a module the engine knows, the per-sample gradient of its weight is a sum over the positions p
the module saw (tokens, pixels, repeated calls) of outer products, e.g. for nn.Linear
    g_i = Σ_p δ_ip a_ipᵀ          δ: output-gradient (out,),  a: input (in,)
so with a direction d_k = U_k H_k (U_k: first Tucker factor, H_k: the rest, `Tucker.half`)
    <d_k, g_i>  = Σ_p (δ_ipᵀ U_k) (H_k a_ip)
    ||g_i||²    = Σ_pq (δ_ip·δ_iq) (a_ip·a_iq)
and no per-sample gradient is ever built. For sequence models every position t is a sample and its
gradient is Σ_p δ^(t)_p a_pᵀ with δ^(t) the output-gradients of position t's divergence; all of them
come from one vmapped vector-Jacobian product per item.

Known modules (exact nn classes, or subclasses that keep their forward, not replaced on the instance):
Linear (weight, bias), Conv1d/Conv2d (weight, bias; zero padding), Embedding (weight), LayerNorm
(weight, bias). Anything else is left to the dense path: raw parameters, tied weights (a parameter of
two modules), known modules that are never called (their weights are used some other way, as
nn.MultiheadAttention does with out_proj), and, found on the first forward, weights whose value is
also used outside their module's forward (a tied decoder F.linear(h, enc.weight.t())). Forward hooks
and pre-hooks on a module are exact: δ is taken at the raw output, before the module's hooks run, and
a is the input forward receives. What none of this sees (a global forward hook that changes outputs,
anything else) the collector's self-check on its first call finds: it compares every factored
tensor's per-sample gradients with plain autograd's on a few samples and computes a tensor that
disagrees densely, with a warning (`selfcheck.py`).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ..tucker import ALWAYS_KEEP, KEEP_FOR_BACKWARD, Tucker
from .dense import DenseGradients

KNOWN_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Embedding, nn.LayerNorm)


# --- parts: the per-sample gradients of one tensor ------------------------------------------------
class DensePart:
    """Materialized per-sample gradients of one tensor: (M, *shape)."""

    def __init__(self, g: Tensor):
        self.g = g

    @property
    def n_samples(self) -> int:
        return self.g.shape[0]

    def __getitem__(self, index) -> DensePart:
        return DensePart(self.g[index])

    def project(self, t: Tucker) -> Tensor:
        return self.g.flatten(1) @ t.full().flatten(1).T

    def sq_norms(self) -> Tensor:
        return self.g.flatten(1).pow(2).sum(1)

    def full(self) -> Tensor:
        return self.g


class OuterPart:
    """Per-sample gradients Σ_p δ_mp ⊗ a_np of a tensor of shape (out, *rest), kept as the factors.

    delta: (M, P, out), one row of output-gradients per sample m and position p.
    act: (N, P, I) inputs per item n (I = prod(rest)); or, for an embedding, token ids (N, P) and the
        gradient is Σ_p onehot(token_np) ⊗ δ_mp (then `shape` is (vocabulary, dim)).
    Samples are item-major: m = n·T + t with T = M / N samples per item.
    """

    def __init__(self, delta: Tensor, act: Tensor, shape: tuple[int, ...], embedding: bool = False):
        if delta.shape[0] % act.shape[0]:
            raise ValueError(f"{delta.shape[0]} samples do not split evenly over {act.shape[0]} items")
        self.delta = delta
        self.act = act
        self.shape = shape
        self.embedding = embedding

    @property
    def n_samples(self) -> int:
        return self.delta.shape[0]

    @property
    def per_item(self) -> int:
        return self.delta.shape[0] // self.act.shape[0]

    def __getitem__(self, index) -> OuterPart:
        T = self.per_item
        if isinstance(index, slice) and index.step in (None, 1):
            start, stop, _ = index.indices(self.n_samples)
            if start % T == 0 and stop % T == 0:
                return OuterPart(self.delta[start:stop], self.act[start // T:stop // T], self.shape, self.embedding)
        idx = torch.arange(self.n_samples, device=self.delta.device)[index]
        return OuterPart(self.delta[idx], self.act[idx // T], self.shape, self.embedding)

    def _factors(self, t: Tucker) -> tuple[Tensor, Tensor]:
        """W: (C, out, R) acting on δ, and Q: (C, N·P, R) from the inputs, with
        <d_k, g_m> = Σ_p δ_mpᵀ W_k Q_k,np (n the item of sample m)."""
        half = t.half()                                              # (C, R_1, I)
        if self.embedding:
            # d_k[token] = U_k[token] H_k: δ meets H_k, the tokens pick rows of U_k
            return half.transpose(1, 2), t.factors[0][:, self.act.reshape(-1)]
        N, P, I = self.act.shape  # noqa: E741 (I, O: the input and output sizes, as in the shape comments)
        C, R = half.shape[:2]
        q = self.act.reshape(N * P, I) @ half.reshape(C * R, I).T    # (N·P, C·R)
        return t.factors[0], q.view(N * P, C, R).transpose(0, 1)

    def project(self, t: Tucker) -> Tensor:
        W, Q = self._factors(t)
        C, O, R = W.shape  # noqa: E741 (O: the output size, as in the shape comments)
        N, T, P = self.act.shape[0], self.per_item, self.act.shape[1]
        if T * R <= T + R:
            # S_mpk = δ_mpᵀ W_k (N, T, P, C, R), then meet Q
            s = (self.delta.reshape(-1, O) @ W.permute(1, 0, 2).reshape(O, C * R)).view(N, T, P, C, R)
            q = Q.view(C, N, 1, P, R).permute(1, 2, 3, 0, 4)
            return (s * q).sum((2, 4)).view(N * T, C)
        # Y_k,np = W_k Q_k,np: the change of the module's output that direction k makes at (n, p),
        # then every sample of item n meets it: Σ_po δ_mpo Y_k,npo
        y = torch.bmm(Q, W.transpose(1, 2))                          # (C, N·P, O)
        return torch.bmm(self.delta.view(N, T, P * O), y.view(C, N, P * O).permute(1, 2, 0)).view(N * T, C)

    def _input_gram(self) -> Tensor:
        """(N, P, P): a_np·a_nq, or [token_np == token_nq] for an embedding."""
        if self.embedding:
            return (self.act.unsqueeze(2) == self.act.unsqueeze(1)).to(self.delta.dtype)
        return self.act @ self.act.transpose(1, 2)

    def sq_norms(self) -> Tensor:
        M, P, O = self.delta.shape  # noqa: E741 (O: the output size, as in the shape comments)
        N, T = self.act.shape[0], self.per_item
        if self.embedding or P * (O + self.act.shape[2] / T) <= O * self.act.shape[2]:
            gram = (self.delta @ self.delta.transpose(1, 2)).view(N, T, P, P)
            return (gram * self._input_gram().unsqueeze(1)).flatten(2).sum(2).view(M)
        return self.full().flatten(1).pow(2).sum(1)

    def full(self) -> Tensor:
        """The per-sample gradients themselves: (M, *shape)."""
        N, P = self.act.shape[:2]
        T = self.per_item
        delta = self.delta.view(N, T, P, -1)
        if self.embedding:
            onehot = F.one_hot(self.act, self.shape[0]).to(delta.dtype)      # (N, P, V)
            g = torch.einsum("npv,ntpd->ntvd", onehot, delta)
        else:
            g = torch.einsum("ntpo,npi->ntoi", delta, self.act)
        return g.reshape(N * T, *self.shape)


class FactoredGradients:
    """A batch of per-sample gradients, one part per tensor (factored where the engine can)."""

    def __init__(self, parts: dict[str, DensePart | OuterPart]):
        self.parts = parts

    @property
    def n_samples(self) -> int:
        return next(iter(self.parts.values())).n_samples

    def __getitem__(self, index: slice | Tensor) -> FactoredGradients:
        """The gradients of a subset of the samples."""
        return FactoredGradients({n: p[index] for n, p in self.parts.items()})

    def project(self, directions: Sequence[Tucker]) -> Tensor:
        """<v_k, g_i> summed over tensors, for directions given per tensor in collector order: (N, C)."""
        pairs = list(zip(self.parts.values(), directions))
        work = [_workspace(p, t) for p, t in pairs]
        # when everything would not fit, the big parts' intermediates are recomputed in backward
        recompute = torch.is_grad_enabled() and sum(work) > KEEP_FOR_BACKWARD
        return sum(
            checkpoint(p.project, t, use_reentrant=False) if recompute and w > ALWAYS_KEEP else p.project(t)
            for (p, t), w in zip(pairs, work)
        )

    def sq_norms(self) -> Tensor:
        """||g_i||² over all chosen tensors: (N,)."""
        return sum(p.sq_norms() for p in self.parts.values())

    def dense(self):
        """The same gradients materialized, as DenseGradients."""
        return DenseGradients({n: p.full() for n, p in self.parts.items()})

    def flat(self) -> Tensor:
        """All chosen tensors' gradients materialized side by side: (N, n_w)."""
        return self.dense().flat()


def _workspace(part: DensePart | OuterPart, t: Tucker) -> int:
    """Elements of the intermediates `part.project(t)` keeps for backward (about)."""
    if isinstance(part, DensePart):
        return 0
    return t.n_components * part.n_samples * part.delta.shape[1] * part.delta.shape[2] // part.per_item


# --- which tensors can be factored ----------------------------------------------------------------
def _keeps_forward(module: nn.Module) -> bool:
    """The module computes its known module's forward: neither its class nor the instance replaces it."""
    base = next(b for b in KNOWN_MODULES if isinstance(module, b))
    cls = type(module)
    same = cls.forward is base.forward and "forward" not in vars(module)
    if isinstance(module, (nn.Conv1d, nn.Conv2d)):
        same = same and cls._conv_forward is base._conv_forward and "_conv_forward" not in vars(module)
    return same


def _supported(module: nn.Module, attr: str) -> bool:
    if not isinstance(module, KNOWN_MODULES) or not _keeps_forward(module) or attr not in ("weight", "bias"):
        return False
    if isinstance(module, (nn.Conv1d, nn.Conv2d)):
        return module.padding_mode == "zeros" and not isinstance(module.padding, str) or module.padding == "valid"
    if isinstance(module, nn.Embedding):
        return attr == "weight" and module.max_norm is None and not module.scale_grad_by_freq
    return True


def factorable(model: nn.Module, params: dict[str, nn.Parameter]) -> dict[str, tuple[str, str]]:
    """For each chosen tensor the engine can factor: name -> (module name, "weight" or "bias").

    A parameter shared by several modules (tied weights) is not factorable.
    """
    owners: dict[int, list[tuple[str, nn.Module, str]]] = {}
    for mname, module in model.named_modules(remove_duplicate=False):
        for attr, p in module.named_parameters(recurse=False):
            entry = (mname, module, attr)
            if all(o[1] is not module for o in owners.get(id(p), [])):
                owners.setdefault(id(p), []).append(entry)
    plan = {}
    for name, p in params.items():
        where = owners.get(id(p), [])
        if len(where) == 1 and _supported(where[0][1], where[0][2]):
            plan[name] = (where[0][0], where[0][2])
    return plan


# --- capturing inputs and output-gradients ---------------------------------------------------------
def _spatial(module: nn.Module) -> int:
    return 1 if isinstance(module, nn.Conv1d) else 2


def capture_input(module: nn.Module, x: Tensor) -> Tensor:
    """What a part needs from a module's input, computed per call (inside vmap): see `build_parts`."""
    if isinstance(module, nn.LayerNorm):
        return F.layer_norm(x, module.normalized_shape, None, None, module.eps)   # x̂
    return x


def _conv_patches(module: nn.Module, x: Tensor, n_items: int) -> Tensor:
    """(N, P, groups, in/groups · kernel) input patches of a conv (P = calls·batch·output positions)."""
    s = _spatial(module)
    x = x.reshape(-1, module.in_channels, *x.shape[x.dim() - s:])
    pad = (0,) * s if module.padding == "valid" else module.padding
    if s == 1:
        x = x.unsqueeze(-1)
        k, d, p, st = (module.kernel_size[0], 1), (module.dilation[0], 1), (pad[0], 0), (module.stride[0], 1)
    else:
        k, d, p, st = module.kernel_size, module.dilation, pad, module.stride
    patches = F.unfold(x, k, dilation=d, padding=p, stride=st)                # (B, in·k, L)
    g = module.groups
    patches = patches.view(patches.shape[0], g, -1, patches.shape[-1]).permute(0, 3, 1, 2)
    return patches.reshape(n_items, -1, g, patches.shape[-1])


def build_parts(
    module: nn.Module,
    attrs: list[str],
    inputs: list[Tensor],
    deltas: list[Tensor],
    n_items: int,
) -> dict[str, DensePart | OuterPart]:
    """The parts of `module`'s chosen parameters from its calls' captured inputs and output-gradients.

    inputs[c]: (N, *input of call c), deltas[c]: (M, *output of call c), M = N · samples per item.
    """
    M = deltas[0].shape[0]
    if isinstance(module, (nn.Conv1d, nn.Conv2d)):
        out, s = module.out_channels, _spatial(module)
        # output-gradients (M, P, out), positions P = (calls, batch, output positions) as in the patches
        delta = torch.cat([
            d.reshape(M, -1, out, math.prod(d.shape[d.dim() - s:])).transpose(2, 3).reshape(M, -1, out)
            for d in deltas
        ], 1)
        patches = torch.cat([_conv_patches(module, x, n_items) for x in inputs], 1)       # (N, P, g, I_g)
        parts = {}
        if "weight" in attrs:
            if module.groups == 1:
                parts["weight"] = OuterPart(delta, patches.squeeze(2), tuple(module.weight.shape))
            else:
                g, T = module.groups, M // n_items
                d = delta.view(n_items, T, delta.shape[1], g, out // g)
                w = torch.einsum("ntpgo,npgi->ntgoi", d, patches)
                parts["weight"] = DensePart(w.reshape(M, *module.weight.shape))
        if "bias" in attrs:
            parts["bias"] = DensePart(delta.sum(1))
        return parts
    last = module.embedding_dim if isinstance(module, nn.Embedding) else None
    if isinstance(module, nn.Linear):
        last = module.out_features
    if isinstance(module, nn.LayerNorm):
        last = module.weight.numel() if module.weight is not None else module.bias.numel()
    delta = torch.cat([d.reshape(M, -1, last) for d in deltas], 1)                        # (M, P, out)
    parts = {}
    if isinstance(module, nn.Linear):
        if "weight" in attrs:
            act = torch.cat([x.reshape(n_items, -1, module.in_features) for x in inputs], 1)
            parts["weight"] = OuterPart(delta, act, tuple(module.weight.shape))
        if "bias" in attrs:
            parts["bias"] = DensePart(delta.sum(1))
    elif isinstance(module, nn.Embedding):
        tokens = torch.cat([x.reshape(n_items, -1) for x in inputs], 1)
        if module.padding_idx is not None:
            T = M // n_items
            keep = (tokens != module.padding_idx).repeat_interleave(T, 0).unsqueeze(-1)
            delta = delta * keep
        parts["weight"] = OuterPart(delta, tokens, tuple(module.weight.shape), embedding=True)
    else:  # LayerNorm
        shape = tuple(module.normalized_shape)
        if "weight" in attrs:
            xhat = torch.cat([x.reshape(n_items, -1, last) for x in inputs], 1)               # (N, P, D)
            T = M // n_items
            w = torch.einsum("ntpd,npd->ntd", delta.view(n_items, T, -1, last), xhat)
            parts["weight"] = DensePart(w.reshape(M, *shape))
        if "bias" in attrs:
            parts["bias"] = DensePart(delta.sum(1).view(M, *shape))
    return parts
