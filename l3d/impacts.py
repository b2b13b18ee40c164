"""Impact of subnetworks on samples, and the samples each subnetwork matters most for."""
from __future__ import annotations

import torch
from torch import Tensor

from .decomposition import Decomposition
from .divergences import reference_outputs
from .gradients import GradientCollector
from .train import check_matches
from .runtime.validate import as_int
from .runtime.threads import threads_for


@torch.no_grad()
def impact(
    decomposition: Decomposition,
    collector: GradientCollector,
    inputs: Tensor,
    n_ref: int = 10,
    seed: int = 0,
    threads: int | None = None,
) -> Tensor:
    """I(x_i, v_k) = mean_j |<e_k, g_i(ref_j)>| over n_ref random references: (N, C).

    References are drawn among `inputs` (other samples, or other positions for sequence models).
    threads: CPU threads during the call, as for `l3d.fit` (None: the default for one gradient chunk's work).
    """
    n_ref, seed = as_int("n_ref", n_ref), as_int("seed", seed)
    if n_ref < 1:
        raise ValueError(f"n_ref must be at least 1, got {n_ref}")
    decomposition.check_shapes(collector.shapes, "the collector")
    check_matches(decomposition, collector)
    generator = torch.Generator().manual_seed(seed)
    with threads_for(collector.work(inputs[:collector.chunk_size]), threads):
        outputs = collector.outputs(inputs)
        total = 0
        for _ in range(n_ref):
            refs = reference_outputs(outputs, collector.divergence, collector.reference, generator)
            total = total + decomposition.encode(collector(inputs, references=refs)).abs()
    return total / n_ref


def top_samples(impact: Tensor, n: int = 10) -> Tensor:
    """Indices of the n samples of largest impact for every subnetwork, best first: (C, n)."""
    return impact.topk(min(n, impact.shape[0]), dim=0).indices.T
