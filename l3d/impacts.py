"""Impact of subnetworks on samples, and the samples each subnetwork matters most for."""
from __future__ import annotations

import torch
from torch import Tensor

from .decomposition import Decomposition, check_matches
from .divergences import reference_outputs
from .gradients import GradientCollector
from .runtime.threads import threads_for
from .runtime.validate import as_int, as_seed


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
    n_ref, seed = as_int("n_ref", n_ref), as_seed("seed", seed)
    if n_ref < 1:
        raise ValueError(f"n_ref must be at least 1, got {n_ref}")
    if not isinstance(inputs, Tensor) or inputs.dim() == 0 or inputs.shape[0] == 0:
        raise ValueError(f"inputs must be a tensor with at least one item along dim 0, got "
                         f"{tuple(inputs.shape) if isinstance(inputs, Tensor) else type(inputs).__name__}")
    decomposition.check_shapes(collector.shapes, "the collector")
    check_matches(decomposition, collector)
    generator = torch.Generator().manual_seed(seed)
    with threads_for(collector.work(inputs[:collector.gradient_chunk_size]), threads):
        try:
            outputs = collector.outputs(inputs)
        except RuntimeError as e:   # e.g. a matmul of mismatched shapes deep in the model
            raise ValueError(f"inputs of shape {tuple(inputs.shape)} do not fit the model: calling it raised "
                             f"{type(e).__name__}: {e}") from e
        total = 0
        for _ in range(n_ref):
            refs = reference_outputs(outputs, collector.divergence, collector.reference, generator)
            total = total + decomposition.encode(collector(inputs, references=refs)).abs()
    return total / n_ref


def top_samples(impact: Tensor, n: int = 10) -> Tensor:
    """Indices of the n samples of largest impact for every subnetwork, best first: (C, min(n, N)), for an impact
    (N, C) as `impact` returns."""
    n = as_int("n", n)
    if n < 1:
        raise ValueError(f"n must be at least 1 (samples per subnetwork), got {n}")
    if not isinstance(impact, Tensor) or impact.dim() != 2:
        raise ValueError(f"impact must be (n_samples, n_subnetworks), got "
                         f"{tuple(impact.shape) if isinstance(impact, Tensor) else type(impact).__name__}")
    return impact.topk(min(n, impact.shape[0]), dim=0).indices.T
