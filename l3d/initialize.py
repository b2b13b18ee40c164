"""Starting a decomposition from the data: subnetwork directions seeded with per-sample gradients.

With random directions two subnetworks can settle on the same circuit while another circuit gets none
(the failure the paper's TMS runs show in some seeds). `init_from_gradients_` picks C gradients spread
over the data the way k-means++ picks centres: each next one with probability proportional to the
part of its squared norm that the directions chosen so far do not explain. Each picked gradient,
reduced to the decomposition's Tucker ranks, becomes one subnetwork's encoder and decoder direction
(unit norm). No labels are used: only the gradients the decomposition is trained on.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .decomposition import Decomposition
from .gradients import DenseGradients, GradientCollector


@torch.no_grad()
def init_from_gradients_(decomposition: Decomposition, grads, seed: int = 0) -> list[int]:
    """Set every subnetwork's encoder and decoder direction to a rank-reduced per-sample gradient.

    grads: a batch from a GradientCollector (dense or factored). Samples are picked k-means++ style (see
    module docstring); returns the picked sample indices.
    """
    grads: DenseGradients = grads.dense()
    C = decomposition.n_subnetworks
    if grads.n_samples < C:
        raise ValueError(f"need at least {C} gradients (one per subnetwork), got {grads.n_samples}")
    if list(grads.grads) != decomposition.names:
        raise ValueError(f"gradients for {list(grads.grads)} do not match the decomposition's tensors "
                         f"{decomposition.names}")
    generator = torch.Generator().manual_seed(seed)
    flat = grads.flat().double()                       # (N, n_w)
    residual = flat.pow(2).sum(1)                      # unexplained squared norm per sample
    chosen: list[Tensor] = []                          # orthonormal basis of the chosen directions
    picked = []
    for k in range(C):
        weights = residual.clamp_min(0).cpu()
        i = int(torch.multinomial(weights / weights.sum(), 1, generator=generator)) if weights.sum() > 0 else k
        picked.append(i)
        # the residual of every sample after projecting on all chosen directions (Gram-Schmidt)
        v = decomposition.set_subnetwork_(k, {name: g[i] for name, g in grads.grads.items()})
        for b in chosen:
            v = v - (v @ b) * b
        if v.norm() > 1e-12:
            v = v / v.norm()
            chosen.append(v)
            residual = residual - (flat @ v).pow(2)
    return picked


def init_from_inputs_(decomposition: Decomposition, collector: GradientCollector, inputs: Tensor,
                      seed: int = 0) -> list[int]:
    """`init_from_gradients_` on the per-sample gradients of `inputs` (references drawn with `seed`);
    returns the picked sample indices."""
    grads = collector(inputs, generator=torch.Generator().manual_seed(seed))
    return init_from_gradients_(decomposition, grads, seed=seed)
