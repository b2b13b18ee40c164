"""The field's metrics, MMCS and ML2R, with our one-to-one recovery (`column_scores`), on the TMS (`tms_scores`)
and the residual MLP (`resid_scores`); the MMCS of random directions and the medians over seeds."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ...runtime.medians import median
from ..ground_truth import match, mmcs
from ..toy_models import TMS
from .models import ResidMLP

RECOVERED = 0.95   # a feature is recovered when its one-to-one matched subnetwork's |cos| reaches this


def least_squares_components(weights: dict[str, Tensor], directions: dict[str, Tensor]) -> Tensor:
    """Coefficients a (C,) minimizing Σ_tensors ‖W − Σ_k a_k d_k‖²: the model's weights in the basis of the
    subnetworks' directions (name -> (C, *shape)), over the tensors named in `weights`."""
    basis = torch.cat([directions[n].flatten(1) for n in weights], dim=1).double()     # (C, n_w)
    target = torch.cat([w.flatten() for w in weights.values()]).double()               # (n_w,)
    return torch.linalg.lstsq(basis.T, target[:, None]).solution[:, 0].float()


def column_scores(columns: Tensor, slices: Tensor, coefficients: Tensor) -> dict:
    """The field's metrics for one weight matrix. columns: (F, D) the model's weight column of every feature;
    slices: (C, F, D) the same slice of every subnetwork's unit-norm direction; coefficients: (C,) their
    least-squares sizes.

    Returns mmcs (`ground_truth.mmcs`: mean over features of the max |cos| over subnetworks), ml2r (mean
    ‖a_k slice_k‖ / ‖W column‖ for that best k), per-feature max_cos, l2_ratio and best, and the one-to-one
    matching (`match` on |cos| × the share of the subnetwork's norm in that feature's slice): pairs, matched_cos,
    recovered (matched |cos| ≥ RECOVERED), all_recovered.
    """
    if slices.dim() != 3 or columns.dim() != 2 or slices.shape[1:] != columns.shape:
        raise ValueError(f"slices must be (C, F, D) and columns (F, D), "
                         f"got {tuple(slices.shape)} and {tuple(columns.shape)}")
    columns, slices = columns.detach().float().cpu(), slices.detach().float().cpu()
    cos = torch.nn.functional.cosine_similarity(slices, columns[None], dim=-1, eps=1e-12).abs()   # (C, F)
    best_cos, best = cos.max(0)
    sizes = coefficients.detach().float().cpu().abs()[best] * slices[best, torch.arange(columns.shape[0])].norm(dim=-1)
    ratio = sizes / columns.norm(dim=-1).clamp_min(1e-30)
    share = slices.norm(dim=-1) / slices.flatten(1).norm(dim=1, keepdim=True).clamp_min(1e-30)     # (C, F)
    pairs = match((cos * share).T)
    matched = [cos[k, j].item() for j, k in pairs]
    recovered = sum(c >= RECOVERED for c in matched)
    return {"mmcs": mmcs(slices, columns), "ml2r": ratio.mean().item(), "max_cos": best_cos.tolist(),
            "l2_ratio": ratio.tolist(), "best": best.tolist(), "pairs": pairs, "matched_cos": matched,
            "recovered": recovered, "all_recovered": recovered == columns.shape[0]}


def tms_scores(model: TMS, directions: dict[str, Tensor]) -> dict:
    """`column_scores` of a TMS decomposition on linear1 (as SPD scores W): columns linear1.weight[:, j], slices
    the subnetworks' linear1 columns, sizes from least squares on linear1."""
    weight = model.weight_in().detach()                 # linear1.weight: a TMS of layout "linear"
    coefficients = least_squares_components({"linear1.weight": weight}, directions)
    return column_scores(weight.T, directions["linear1.weight"].transpose(1, 2), coefficients)


def chance_mmcs(n_features: int, n_hidden: int, n_subnetworks: int, trials: int = 200, seed: int = 0) -> float:
    """MMCS of random directions: the mean over trials of the max |cos| over n_subnetworks random
    n_hidden-dimensional directions against a fixed one, what a decomposition blind to the features scores."""
    g = torch.Generator().manual_seed(seed)
    target = torch.randn(trials, 1, n_hidden, generator=g)
    guesses = torch.randn(trials, n_subnetworks, n_hidden, generator=g)
    return torch.nn.functional.cosine_similarity(guesses, target, dim=-1).abs().max(1).values.mean().item()


def median_min_success(rows: Sequence[dict], key: str = "mmcs") -> dict:
    """Over seeds: median and min of `key`, median ML2R, and the success count (seeds with every feature recovered)."""
    values, ml2r = sorted(r[key] for r in rows), sorted(r["ml2r"] for r in rows)
    return {"median": median(values), "min": values[0], "max": values[-1], "ml2r_median": median(ml2r),
            "ml2r_min": ml2r[0], "ml2r_max": ml2r[-1], "success": sum(r["all_recovered"] for r in rows),
            "seeds": len(values)}


def resid_scores(model: ResidMLP, directions: dict[str, Tensor]) -> dict:
    """`column_scores` of a residual-MLP decomposition on mlp_in: feature j's column is mlp_in W_E[j] (the
    neurons' input from feature j), a subnetwork's slice its mlp_in direction applied to W_E[j]."""
    name = "layers.0.mlp_in.weight"
    weight, embedding = dict(model.named_parameters())[name].detach(), model.W_E
    coefficients = least_squares_components({name: weight}, directions)
    return column_scores(embedding @ weight.T, torch.einsum("fd,cmd->cfm", embedding, directions[name].detach()),
                         coefficients)


def slice_shares(directions: Tensor) -> Tensor:
    """Each subnetwork's share of its linear1 norm in each feature's column: directions (C, H, F) -> (C, F)."""
    columns = directions.detach().float().cpu().norm(dim=1)                      # (C, F)
    return columns / columns.norm(dim=1, keepdim=True).clamp_min(1e-30)
