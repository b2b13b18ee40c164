"""Divergences between a sample's output and a reference output, and how references are drawn."""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor

from .runtime.validate import renamed

DIVERGENCES = ("mse", "output_times_residual", "kl")
DIVERGENCE_RENAMES = {"mse_authors": "output_times_residual"}   # old spelling -> current (DeprecationWarning)
REFERENCES = ("random", "random_or_self", "mean", "uniform")
DRAWN_REFERENCES = ("random", "random_or_self")   # another sample's output, drawn by index


def divergence(y: Tensor, y_ref: Tensor, kind: str) -> Tensor:
    """D(y, y_ref) over the last dimension (n_out values), y_ref held fixed:

    mse:                    Σ_o (y_o − y_ref,o)²                  gradient Jᵀ 2(y − y_ref), the paper's text
    output_times_residual:  (1/n_out) Σ_o y_o (y_o − y_ref,o)     gradient Jᵀ (2y − y_ref) / n_out
    kl:                     KL(softmax(y_ref) || softmax(y)) between logits

    "output_times_residual" (formerly "mse_authors", still read as it) is the per-sample loss of the authors'
    code (`MSEVectorLoss` in their utils/loss.py): the output times the residual, not a divergence (it is not 0
    at y = y_ref, and its gradient there is Jᵀ y / n_out), but the quantity whose gradients their published
    reconstruction errors were measured on.
    """
    kind = renamed("divergence", kind, DIVERGENCE_RENAMES)
    if kind == "mse":
        return (y - y_ref).pow(2).sum(-1)
    if kind == "output_times_residual":
        return (y * (y - y_ref)).mean(-1)
    if kind == "kl":
        log_p = F.log_softmax(y, dim=-1)
        log_p_ref = F.log_softmax(y_ref, dim=-1)
        return (log_p_ref.exp() * (log_p_ref - log_p)).sum(-1)
    raise ValueError(f"unknown divergence {kind!r}: use one of {DIVERGENCES}")


def check_outputs(outputs: Tensor, kind: str) -> None:
    """Raise a ValueError if model outputs (samples along dim 0, values along the last) cannot take divergence `kind`.

    Outputs must be finite; for "kl" they must be logits over at least 2 classes. Non-negative outputs whose
    rows sum to 1 within 0.01 are refused as probabilities; other outputs that are all in [0, 1] or all
    non-negative pass with a warning that they look like sigmoid or ReLU outputs (logits can be all positive,
    e.g. at random initialization, so these are not refused).
    """
    if not torch.isfinite(outputs).all():
        raise ValueError(f"the model's outputs contain nan or inf (shape {tuple(outputs.shape)}); "
                         "divergence gradients need finite outputs")
    if kind != "kl":
        return
    if outputs.dim() < 2 or outputs.shape[-1] < 2:
        raise ValueError(
            f"divergence='kl' needs logits over at least 2 classes in the last dimension, got outputs of shape "
            f"{tuple(outputs.shape)}; use divergence='mse' for regression outputs"
        )
    if not (outputs >= 0).all():
        return
    if torch.allclose(outputs.sum(-1), torch.ones((), dtype=outputs.dtype, device=outputs.device), atol=1e-2):
        raise ValueError(
            "divergence='kl' takes logits, but the model's outputs are probabilities (non-negative, each row sums "
            "to 1 within 0.01); return the logits (before softmax) or log-probabilities, "
            "e.g. forward=lambda m, x: m(x).log()"
        )
    looks = "all in [0, 1], like sigmoid outputs" if (outputs <= 1).all() else "all non-negative, like ReLU outputs"
    warnings.warn(
        f"divergence='kl' takes logits, but the model's outputs are {looks}; if they are not logits, use "
        f"divergence='mse' (regression) or return logits", stacklevel=2
    )


def random_others(n: int, generator: torch.Generator | None = None, device=None) -> Tensor:
    """For each of n samples the index of another sample drawn uniformly at random (never itself)."""
    if n < 2:
        raise ValueError("a random reference needs at least 2 samples in a batch")
    offset = torch.randint(1, n, (n,), generator=generator)
    return ((torch.arange(n) + offset) % n).to(device)


def random_any(n: int, generator: torch.Generator | None = None, device=None) -> Tensor:
    """For each of n samples the index of any sample drawn uniformly at random, itself included (with
    replacement, as the authors' code draws references within a batch)."""
    return torch.randint(0, n, (n,), generator=generator).to(device)


def reference_index(n: int, kind: str, generator: torch.Generator | None = None, device=None) -> Tensor:
    """For each of n samples the index of its reference sample, drawn as `kind` (one of DRAWN_REFERENCES) says:
    `random_others` for "random", `random_any` for "random_or_self"."""
    if kind not in DRAWN_REFERENCES:
        raise ValueError(f"a reference drawn by index needs reference one of {list(DRAWN_REFERENCES)}, got {kind!r}")
    return (random_any if kind == "random_or_self" else random_others)(n, generator, device)


def reference_outputs(
    outputs: Tensor, divergence_kind: str, kind: str = "random", generator: torch.Generator | None = None
) -> Tensor:
    """Reference outputs (same shape as `outputs`, samples along dim 0) drawn as `kind` says.

    random: the output of another sample of the batch (never the sample itself); random_or_self: the
    output of any sample of the batch, itself included with probability 1/N (the authors' code); mean: the
    batch-mean output (for KL the mixture of the batch's distributions); uniform: the uniform distribution
    (KL only).
    """
    divergence_kind = renamed("divergence", divergence_kind, DIVERGENCE_RENAMES)
    outputs = outputs.detach()
    check_outputs(outputs, divergence_kind)
    if kind in DRAWN_REFERENCES:
        return outputs[reference_index(outputs.shape[0], kind, generator, outputs.device)]
    if kind == "mean":
        if divergence_kind == "kl":
            mixture = F.softmax(outputs, dim=-1).mean(0, keepdim=True)
            return mixture.log().expand_as(outputs)
        return outputs.mean(0, keepdim=True).expand_as(outputs)
    if kind == "uniform":
        if divergence_kind != "kl":
            raise ValueError("reference='uniform' needs divergence='kl' (a uniform distribution over outputs)")
        return torch.zeros_like(outputs)
    raise ValueError(f"unknown reference {kind!r}: use one of {REFERENCES}")
