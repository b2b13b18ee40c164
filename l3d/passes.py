"""Passes over a decomposition's gradient sources: checking them, an epoch's batches, and `evaluate` (no training).

`fit` (l3d.train) and `evaluate` read one GradientSource, or for a stack (`Decomposition.stack`) one per group of
members, step by step: `epoch_batches` hands out one batch per step (for several sources every source's batch: a
tuple, or one StackedGradients where a sweep's joint pass computed them together). A pass whose per-sample
gradients are all zero (Σ ||g||² = 0) raises `ZeroGradients`.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from .decomposition import Decomposition, check_matches
from .gradients import GradientCollector
from .gradients.joint import JointPool, joinable
from .history import EpochSums, batch_summary
from .runtime.threads import threads_for
from .source import GradientSource


class ZeroGradients(ValueError):
    """Every per-sample gradient of a pass is zero: there is nothing to decompose (e.g. an untrained model whose
    outputs do not depend on the decomposed tensors at these inputs)."""


@torch.no_grad()
def evaluate(decomposition: Decomposition, source: GradientSource | Sequence[GradientSource],
             threads: int | None = None) -> dict | list[dict]:
    """Reconstruction error and P_act over one pass of `source`, without training (threads: as for `fit`):
    {"reconstruction_error": float, "p_act": C floats, "dead": the subnetworks of P_act 0}; for a stack, one such
    dict per member (sources as for `fit`)."""
    sources = check_sources(decomposition, source)
    M = decomposition.members
    sums = EpochSums(decomposition.n_subnetworks, decomposition.decoder[0].core.device, members=M)
    with threads_for(sum(s.work for s in sources), threads):
        for grads in epoch_batches(sources):
            parts = decomposition.loss(grads, distributed=sources[0].shard.distributed)
            sums.add(batch_summary(parts), parts.mask.shape[0] * sources[0].shard.world_size)
    check_not_all_zero(sums, "evaluate", [s.collector for s in sources])
    results = [{"reconstruction_error": error, "p_act": p_act, "dead": [k for k, p in enumerate(p_act) if p == 0]}
               for error, p_act, _ in sums.results()]
    return results[0] if M == 1 else results


def check_sources(decomposition: Decomposition, source, resample_every: int = 0) -> list[GradientSource]:
    """`source` as a list (one GradientSource, or a stack's sources), each checked against the decomposition
    (resample_every: `fit`'s, refused with labels)."""
    sources = [source] if isinstance(source, GradientSource) else list(source)
    if not sources or not all(isinstance(s, GradientSource) for s in sources):
        raise TypeError("source must be a GradientSource, or for a stack a list of GradientSources")
    M = decomposition.members
    if M % len(sources) or (len(sources) > 1 and M == 1):
        raise ValueError(f"a stack of {M} member(s) cannot share {len(sources)} sources evenly: give one source, or "
                         f"one per group of members (a number that divides {M})")
    for s in sources:
        decomposition.check_shapes(s.collector.shapes, "the collector")
        check_matches(decomposition, s.collector)
    if resample_every and sources[0].active_circuits is not None:
        raise ValueError("resample_every needs a source without labels (active_circuits): the labels fix which "
                         "subnetwork serves which circuit; set resample_every=0 with labels")
    if M > 1:
        if sources[0].shard.distributed:
            raise ValueError("a stack of decompositions trains on one process")
        if len({s.active_circuits is None for s in sources}) > 1:
            raise ValueError("a stack's sources must all have labels (active_circuits) or none")
        same = [(len(s), s.batch_size, s.chunk_size, s.batch_references, s.drop_last) for s in sources]
        if len(set(same)) > 1:
            raise ValueError(f"a stack's sources must give the same batches: (batches, batch_size, chunk_size, "
                             f"batch_references, drop_last) differ: {same}")
    return sources


def epoch_batches(sources: list[GradientSource]) -> Iterator:
    """One epoch of batches: the one source's, or every source's batch, step by step. Sources whose gradients can
    share a pass (`joinable`: dense gradients of models of one form) get them from one `JointPool`, as one
    StackedGradients (G, N, n_w); others as a tuple of G batches."""
    if len(sources) == 1:
        yield from sources[0]
        return
    collectors = [s.collector for s in sources]
    pool = JointPool(collectors) if joinable(collectors) else None
    for s in sources:
        s.pool = pool
    try:
        epochs = [iter(s) for s in sources]
        for batches in zip(*epochs):
            stacked = None if pool is None else pool.stack(batches)       # one tensor, no copy
            yield tuple(b.dense() for b in batches) if stacked is None else stacked
        for rest in epochs:     # zip stops at the first that ends: let every other end its epoch too
            next(rest, None)
    finally:
        for s in sources:
            s.pool = None


def check_not_all_zero(sums: EpochSums, where: str, collectors: Sequence[GradientCollector]) -> None:
    """`ZeroGradients` if a pass's per-sample gradients were all zero (Σ ||g||² = 0) for a member (collectors: the
    one collector, or a stack's collector of each group of members)."""
    zero = [m for m, total in enumerate(sums.totals.tolist()) if total == 0]
    if not zero:
        return
    collector = collectors[zero[0] * len(collectors) // sums.members]
    if sums.members > 1:
        where = f"{where}, member {zero[0]}"
    raise ZeroGradients(
        f"{where}: every per-sample gradient of its {sums.samples} samples is zero (the sum of ||g||^2 is 0), so "
        f"there is nothing to decompose and a reconstruction error (0 / 0) would mean nothing. The divergence does "
        f"not depend on the decomposed tensors {collector.names} at these inputs: check that they affect the "
        f"model's outputs, and that the inputs differ (with reference={collector.reference!r}, a sample whose "
        f"reference output equals its own output has gradient 0)"
    )
