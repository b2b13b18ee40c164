"""Correlation measures of implied coefficients against the true ones: the paper's r (`paper_r`), r² as the
coefficient of determination (`r_squared`) and as a squared correlation (`squared_correlation`), and the best
squared correlation any low-rank matrix reaches (`low_rank_r2`)."""
from __future__ import annotations

import torch
from scipy.optimize import minimize_scalar
from torch import Tensor

from .paths import paper_coefficients


def paper_r(paths: Tensor, coefficients: Tensor) -> float:
    """The TMCS number the paper prints as "r² = 0.92": a Pearson r, computed as in the authors' notebook
    (tm2_circuit_superposition.ipynb).

    paths: (C, n_out, n_in) each subnetwork's product of its own decoder directions (`decoder_paths`);
    coefficients: the true A (n_out, n_in) of y = A x. Per subnetwork k take the input j_k whose column of
    paths[k] has the largest sum of |·| and that column (`paper_coefficients`); concatenate those columns over
    subnetworks and A[:, j_k] likewise, and return np.corrcoef of the two (r, not r²). Scale and sign of each
    direction enter: subnetworks are not rescaled, and a direction's sign flips both of its tensors, so the
    product keeps its sign. Unlike `path_coefficients`, nothing here runs the model.
    """
    if coefficients.dim() != 2 or paths.shape[1:] != coefficients.shape:
        raise ValueError(f"paths must be (C, n_out, n_in) and coefficients (n_out, n_in), "
                         f"got {tuple(paths.shape)} and {tuple(coefficients.shape)}")
    columns, inputs = paper_coefficients(paths.detach().double().cpu())
    true = coefficients.detach().double().cpu()[:, inputs].T                  # (C, n_out)
    return torch.corrcoef(torch.stack([columns.flatten(), true.flatten()]))[0, 1].item()


def r_squared(predicted: Tensor, true: Tensor) -> float:
    """Coefficient of determination 1 − Σ(true − predicted)² / Σ(true − mean)² over all entries."""
    true, predicted = true.double().flatten(), predicted.double().flatten()
    return (1 - (true - predicted).pow(2).sum() / (true - true.mean()).pow(2).sum()).item()


def squared_correlation(predicted: Tensor, true: Tensor) -> float:
    """r² as a scatter plot's fitted line reports it: the squared Pearson correlation over all entries."""
    pair = torch.stack([predicted.detach().double().flatten(), true.detach().double().flatten()])
    return torch.corrcoef(pair)[0, 1].item() ** 2


def low_rank_r2(true: Tensor, rank: int) -> float:
    """The largest squared correlation with `true` (n_out, n_in) that any matrix of rank ≤ `rank` can reach.

    A network whose inputs pass through `rank` hidden units maps single inputs through a rank-`rank` matrix,
    so this bounds the r² of its own coefficients against `true`. corr(M, A)² = 1 − min_{a,b} ‖A − a − bM‖² /
    Σ(A − mean)², and for a fixed offset a the best rank-`rank` bM is the truncated SVD of A − a (Eckart–Young);
    the offset is searched on a grid over A's range, then refined.
    """
    if true.dim() != 2 or not 1 <= rank:
        raise ValueError(f"true must be a matrix and rank ≥ 1, got shape {tuple(true.shape)} and rank {rank}")
    a = true.detach().double().cpu()
    total = (a - a.mean()).pow(2).sum().item()
    if rank >= min(a.shape) or total == 0:
        return 1.0

    def missed(offset: float) -> float:
        return torch.linalg.svdvals(a - offset)[rank:].pow(2).sum().item()

    grid = torch.linspace(a.min().item(), a.max().item(), 201).tolist()
    best = min(range(len(grid)), key=lambda i: missed(grid[i]))
    low, high = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
    offset = minimize_scalar(missed, bounds=(low, high), method="bounded").x if high > low else low
    return 1 - min(missed(offset), missed(grid[best])) / total
