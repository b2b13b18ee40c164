"""Diagnostics that use the labels: what one subnetwork per circuit reaches, as the best single direction per
circuit (`circuit_aligned_error`) or trained with the labels (`fit_circuit_aligned`), and whether the paper's loss
keeps such a decomposition (`aligned_then_paper`). Never a way to choose a decomposition."""
from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

from ...decomposition import Decomposition
from ...gradients import GradientCollector
from ...runtime.validate import renamed_keywords
from ...train import GradientSource, History, fit


@renamed_keywords(active="active_circuits")
def circuit_aligned_error(grads: Tensor, active_circuits: Tensor) -> tuple[float, Tensor]:
    """The reconstruction error of a decomposition that gives every circuit exactly one direction of its own.

    grads: (N, n_w) per-sample gradients; active_circuits: (N, n_circuits) bool, which circuits each sample has on.
    Circuit c's direction is the top right singular vector of the gradients of the samples where only c is
    on (the best single direction for them). Each sample is reconstructed by least squares on the
    directions of its active circuits; a sample with none on, by the one direction that explains most of it.
    Tucker ranks and the BatchTopK budget are ignored. Uses the labels: a diagnostic of how well circuits
    *can* be told apart by single directions, never a way to choose a decomposition.
    Returns Σ‖g − ĝ‖² / Σ‖g‖² and the (n_circuits, n_w) unit directions.
    """
    if (grads.dim() != 2 or active_circuits.shape != (grads.shape[0], active_circuits.shape[-1])
            or active_circuits.dim() != 2):
        raise ValueError(f"grads must be (N, n_w) and active_circuits (N, n_circuits), "
                         f"got {tuple(grads.shape)} and {tuple(active_circuits.shape)}")
    g, on = grads.detach().double().cpu(), active_circuits.bool().cpu()
    only = on.sum(1) == 1
    if not all((only & on[:, c]).any() for c in range(on.shape[1])):
        raise ValueError("every circuit needs at least one sample where only it is on")
    directions = torch.stack([torch.linalg.svd(g[only & on[:, c]], full_matrices=False).Vh[0]
                              for c in range(on.shape[1])])
    residual = 0.0
    patterns, which = torch.unique(on, dim=0, return_inverse=True)
    for p, pattern in enumerate(patterns):                        # samples with the same circuits on share a basis
        x = g[which == p]                                         # (m, n_w)
        if pattern.any():
            basis = directions[pattern].T                         # (n_w, a)
            residual += (x.T - basis @ torch.linalg.lstsq(basis, x.T).solution).pow(2).sum().item()
        else:
            residual += (x.pow(2).sum(1) - (x @ directions.T).pow(2).max(1).values).sum().item()
    return residual / g.pow(2).sum().item(), directions.float()


@renamed_keywords(active="active_circuits")
def fit_circuit_aligned(
    decomposition: Decomposition,
    collector: GradientCollector | Sequence[GradientCollector],
    inputs: Tensor | Sequence[Tensor],
    active_circuits: Tensor | Sequence[Tensor],
    epochs: int,
    lr: float = 0.01,
    lr_decay: float = 0.8,
    lr_decay_every: int = 100,
    batch_size: int = 32,
    silence: float = 1.0,
    seed: int | Sequence[int] = 0,
    progress: bool = False,
) -> History | list[History]:
    """Train `decomposition` with the labels: subnetwork c serves a sample only where circuit c is on, in the
    sample or in its reference. This is `l3d.fit` on a source with labels (`GradientSource(active_circuits=...)`): the
    L3D loss with BatchTopK's choice replaced by that mask, plus the silence penalty, `silence` times the energy
    of the coefficients the mask drops (so the encoders stay silent elsewhere), all inputs in one gradient pass per
    epoch with a random other sample as every sample's reference.

    inputs: (N, n_in); active_circuits: (N, C) bool, which circuits each input has on (one circuit per
    subnetwork; the old keyword `active=` is read with a DeprecationWarning).
    A stack of decompositions (`Decomposition.stack`, e.g. one per seed) trains as one program: collector, inputs,
    active_circuits and seed are then sequences, one per group of members (as `fit`'s sources), and one History per
    member comes back.
    Uses the labels: a diagnostic of what a decomposition with one subnetwork per circuit can reach (its error,
    its impact share, whether the paper's loss keeps it; notebook 04), never a way to choose a decomposition.
    Returns the training history.
    """
    groups = _groups(decomposition, collector=collector, inputs=inputs, active_circuits=active_circuits, seed=seed)
    sources = []
    for col, x, active, s in zip(*groups.values()):
        n = x.shape[0]
        if active.shape != (n, decomposition.per_member):
            raise ValueError(f"active_circuits must be (n_inputs, n_subnetworks) = ({n}, {decomposition.per_member}), "
                             f"got {tuple(active.shape)}")
        if not 2 <= batch_size <= n:
            raise ValueError(f"batch_size must lie in 2..{n} (the number of inputs), got {batch_size}")
        sources.append(GradientSource(col, x, batch_size, chunk_size=n // batch_size * batch_size, seed=s,
                                      active_circuits=active))
    return fit(decomposition, sources if len(sources) > 1 else sources[0], epochs, lr, lr_decay, lr_decay_every,
               progress=progress, silence=silence)


@renamed_keywords(active="active_circuits")
def aligned_then_paper(
    decomposition: Decomposition,
    source: GradientSource | Sequence[GradientSource],
    active_circuits: Tensor | Sequence[Tensor],
    epochs: int,
    lr: float = 0.01,
    lr_decay: float = 0.8,
    lr_decay_every: int = 100,
    batch_size: int = 32,
    seed: int | Sequence[int] = 0,
) -> Iterator[tuple[str, Decomposition]]:
    """Does the paper's loss keep one subnetwork per circuit? Trains `decomposition` with the labels
    (`fit_circuit_aligned` on the source's collector and inputs; active_circuits: (N, C) bool, which circuits each
    input has on) and yields ("aligned", decomposition), then trains it on for as many epochs with the paper's loss
    (`l3d.fit`) and yields ("aligned_then_paper", decomposition). The same object is trained in place: score (or
    copy) each stage as it is yielded. A stack (`Decomposition.stack`) trains as one program, with source,
    active_circuits and seed one per group of members (sequences); score its members (`unstack`).
    """
    groups = _groups(decomposition, source=source, active_circuits=active_circuits, seed=seed)
    sources = groups["source"]
    fit_circuit_aligned(decomposition, [s.collector for s in sources], [s.inputs for s in sources],
                        groups["active_circuits"], epochs, lr, lr_decay, lr_decay_every, batch_size,
                        seed=groups["seed"])
    yield "aligned", decomposition
    fit(decomposition, sources if len(sources) > 1 else sources[0], epochs, lr, lr_decay, lr_decay_every,
        progress=False)
    yield "aligned_then_paper", decomposition


def aligned_then_paper_fresh(config, sources: Sequence[GradientSource], active_circuits: Sequence[Tensor],
                             seeds: Sequence[int], epochs: int,
                             lr_decay_every: int) -> Iterator[tuple[str, list[Decomposition]]]:
    """`aligned_then_paper` of a fresh decomposition per source (`config.new_decomposition` at its seed; config an
    L3DConfig: its lr, lr_decay and batch_size), all of them one stack: yields each stage with every source's
    decomposition (copies), in order."""
    stack = Decomposition.stack([config.new_decomposition(s.collector.shapes, seed) for s, seed in zip(sources, seeds)])
    for stage, trained in aligned_then_paper(stack.to(sources[0].inputs.device), list(sources), list(active_circuits),
                                             epochs, config.lr, config.lr_decay, lr_decay_every, config.batch_size,
                                             seed=list(seeds)):
        yield stage, trained.unstack()


def _groups(decomposition: Decomposition, **per_group) -> dict[str, list]:
    """Each argument as a list with one entry per group of members: a value alone is one group; a sequence (list or
    tuple) gives one each, as many as divide the members (a ValueError naming the arguments otherwise)."""
    out = {name: list(value) if isinstance(value, (list, tuple)) else [value] for name, value in per_group.items()}
    lengths = {len(v) for v in out.values()}
    if len(lengths) > 1 or decomposition.members % lengths.pop():
        raise ValueError(f"a stack of {decomposition.members} decomposition(s) takes one of each of {list(out)} per "
                         f"group of members, as many of each (a number that divides {decomposition.members}), got "
                         f"{[len(v) for v in out.values()]}")
    return out
