"""Batches of per-sample gradients over a data set, with fresh references every epoch: `GradientSource`.

An epoch is a fresh shuffle of the inputs cut into batches of batch_size items; the last len(inputs) % batch_size
items sit the epoch out, or with drop_last=False make a last, smaller batch (a lone item joins the batch before
it), so that every input is scored once (`evaluate` on held-out inputs). Gradients are computed a chunk
(chunk_size items, whole batches) at a time, in one vectorized pass, and handed out a batch at a time. Every
sample's reference output is drawn within its chunk, or with batch_references=True within its own batch (the
authors' code: the same references as chunk_size = batch_size, in fewer, larger passes). For small models set
chunk_size to the number of inputs: one gradient pass per epoch.

Three ways to compute a chunk's gradients:
  plain        one process, every sample of the chunk;
  sharded      under torchrun every process draws the same order and references and computes only its share of
               each batch (`distributed.Shard`): batch_size is the global batch;
  labelled     with `active_circuits` (which circuits each input has on, a diagnostic), the subnetworks each sample may
               use, those of the circuits on in it or in its reference, come with every batch (`mask`).
The position within an epoch (`Position`) is part of `state_dict`, so an interrupted epoch resumes where it
stopped, with the same batches and references.
"""
from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from .divergences import DRAWN_REFERENCES, check_outputs, reference_index, reference_outputs
from .gradients import GradientCollector
from .gradients.joint import JointPool
from .runtime import distributed
from .runtime.validate import as_seed, is_int, renamed_keywords


@dataclass
class Position:
    """Where an epoch stands: the generator's state when it began (its shuffle is drawn from it), the chunk being
    handed out, the generator's state when that chunk began (its references), and the chunk's batches taken."""

    epoch_generator: Tensor
    chunk: int
    chunk_generator: Tensor
    taken: int

    def to_dict(self) -> dict:
        return {"epoch_generator": self.epoch_generator, "chunk": self.chunk, "chunk_generator": self.chunk_generator,
                "taken": self.taken}


class GradientSource:
    """Batches of per-sample gradients of `collector` over `inputs` (see the module docstring).

    batch_size: items per batch; chunk_size: items per gradient pass, a multiple of batch_size (None: one batch);
    shuffle: a fresh order every epoch (False: the inputs' order); seed: of the shuffles and references;
    shard: the process's share under torchrun (None: l3d.runtime.distributed.current()); active_circuits:
    (n_inputs, C) bool labels, which circuits each input has on (the labelled mode; the old keyword `active=` is read
    with a DeprecationWarning); batch_references: references drawn within each batch; drop_last: False scores every
    input (a last, smaller batch).
    """

    @renamed_keywords(active="active_circuits")
    def __init__(
        self,
        collector: GradientCollector,
        inputs: Tensor,
        batch_size: int,
        chunk_size: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        shard: distributed.Shard | None = None,
        active_circuits: Tensor | None = None,
        batch_references: bool = False,
        drop_last: bool = True,
    ):
        self.shard = shard or distributed.current()
        batch_size, chunk_size = _check_batching(collector, inputs, batch_size, chunk_size, self.shard,
                                                 batch_references, drop_last)
        self.collector = collector
        self.inputs = inputs
        self.batch_size = batch_size
        self.chunk_size = chunk_size
        self.batch_references = batch_references
        self.drop_last = drop_last
        self.shuffle = shuffle
        groups = self._groups(self._batch_sizes()[-self._per_chunk_last():])   # the last chunk's reference pools
        if collector.reference == "random" and not collector.sequence and min(groups) < 2:
            pool = "batch" if batch_references else "chunk"
            raise ValueError(f"reference='random' draws another sample of the same {pool}: use {pool}_size >= 2"
                             + ("" if drop_last else " (with drop_last=False, the last chunk too)"))
        check_outputs(collector.outputs(inputs[: min(inputs.shape[0], 16)]), collector.divergence)
        self.active_circuits = _check_labels(active_circuits, collector, inputs, self.shard)
        self.mask: Tensor | None = None   # labelled mode: the (batch, C) mask of the batch just handed out
        self.generator = torch.Generator().manual_seed(as_seed("seed", seed))
        self._position: Position | None = None                  # within an epoch
        self._resume: tuple[Position, Tensor] | None = None     # a position to go on from, and the generator then
        self._resume_generator: Tensor | None = None
        self.pool: JointPool | None = None   # set by a sweep's training: gradients computed with other sources

    # --- the epoch's batches ------------------------------------------------------------------------
    def _batch_sizes(self) -> list[int]:
        """Items in each batch of an epoch, in order: whole batches, and with drop_last=False the rest."""
        n, b = self.inputs.shape[0], self.batch_size
        sizes = [b] * (n // b)
        rest = n % b
        if rest and not self.drop_last:
            if rest == 1:      # a lone item has no other sample to draw a reference from, and no batch to top-k in
                sizes[-1] += 1
            else:
                sizes.append(rest)
        return sizes

    def _per_chunk_last(self) -> int:
        """Batches in the epoch's last chunk."""
        per_chunk, batches = self.chunk_size // self.batch_size, len(self._batch_sizes())
        return batches - (batches - 1) // per_chunk * per_chunk

    def _groups(self, sizes: list[int]) -> list[int]:
        """Items per group that references are drawn within, for a chunk of batches of `sizes` items: the whole
        chunk, or each batch (batch_references)."""
        return list(sizes) if self.batch_references else [sum(sizes)]

    def __len__(self) -> int:
        """Batches per epoch (a last partial batch is dropped unless drop_last=False)."""
        return len(self._batch_sizes())

    @property
    def active(self) -> Tensor | None:
        """Deprecated: `active_circuits`."""
        warnings.warn("GradientSource.active is deprecated, renamed active_circuits", DeprecationWarning, stacklevel=2)
        return self.active_circuits

    @property
    def work(self) -> int:
        """Per-sample gradient entries of one batch (`GradientCollector.work`); `fit` and `evaluate` pick their
        CPU threads by it (l3d.runtime.threads)."""
        return self.collector.work(self.inputs[:self.batch_size])

    @property
    def batches_done(self) -> int:
        """Batches handed out so far in the current epoch."""
        if self._position is None:
            return 0
        return self._position.chunk * (self.chunk_size // self.batch_size) + self._position.taken

    def __iter__(self) -> Iterator:
        """One epoch of batches (this process's share of each), or the rest of an interrupted one."""
        first, skip, epoch_state = self._start_epoch()
        sizes = self._batch_sizes()
        n = sum(sizes)
        order = torch.randperm(self.inputs.shape[0], generator=self.generator) if self.shuffle else torch.arange(n)
        order = order[:n].to(self.inputs.device)
        per_chunk = self.chunk_size // self.batch_size
        bounds = [0, *itertools.accumulate(sizes)]          # where each batch starts in `order`
        if self._resume_generator is not None:
            self.generator.set_state(self._resume_generator)
        world = self.shard.world_size
        for chunk in range(first, math.ceil(len(sizes) / per_chunk)):
            self._position = Position(epoch_state, chunk, self.generator.get_state(), skip)
            chunk_sizes = sizes[chunk * per_chunk:(chunk + 1) * per_chunk]
            index = order[bounds[chunk * per_chunk]:bounds[chunk * per_chunk + len(chunk_sizes)]]
            grads, masks = self._chunk_gradients(index, chunk_sizes)
            per_item = grads.n_samples // (len(index) // world)     # samples per item (positions of a sequence)
            ends = [0, *itertools.accumulate(size // world * per_item for size in chunk_sizes)]
            for b in range(skip, len(chunk_sizes)):
                self._position.taken += 1
                self.mask = None if masks is None else masks[ends[b]:ends[b + 1]]
                yield grads[ends[b]:ends[b + 1]]
            skip = 0
        self._position = None

    def _start_epoch(self) -> tuple[int, int, Tensor]:
        """The chunk to start at, the batches of it to skip and the epoch's generator state: (0, 0, now) for a fresh
        epoch; for an interrupted one, where it stood. Leaves the generator at the epoch's start (its shuffle) and
        `_resume_generator` at the state the first chunk's references are drawn from (None: go on as it is)."""
        resume, self._resume = self._resume, None
        self._resume_generator = None
        if resume is None:
            return 0, 0, self.generator.get_state()
        position, generator_then = resume
        self.generator.set_state(position.epoch_generator)
        if position.taken == self.chunk_size // self.batch_size:   # that chunk was finished: go on after it
            self._resume_generator = generator_then
            return position.chunk + 1, 0, position.epoch_generator
        self._resume_generator = position.chunk_generator
        return position.chunk, position.taken, position.epoch_generator

    # --- a chunk's gradients ------------------------------------------------------------------------
    def _chunk_gradients(self, index: Tensor, sizes: list[int]):
        """This process's gradients of a chunk of batches of `sizes` items, and in the labelled mode the mask of
        the subnetworks allowed on each sample (None otherwise)."""
        items = self.inputs[index]
        if self.active_circuits is not None:
            return self._labelled_chunk(index, items, sizes)
        references = self._references(items, sizes)     # (samples, out), the same on every process
        if self.pool is not None:
            return self.pool.request(self.collector, items, references), None
        if not self.shard.distributed:
            return self.collector(items, references), None
        return self._shared_chunk(items, references), None

    def _references(self, items: Tensor, sizes: list[int]) -> Tensor:
        """Every sample's reference output, drawn within its group of items (`_groups`): (samples, out)."""
        outputs = self.collector.outputs(items)
        groups = self._groups(sizes)
        divergence, kind = self.collector.divergence, self.collector.reference
        if kind in DRAWN_REFERENCES:   # the draws of `reference_outputs` group by group, one check and one gather
            check_outputs(outputs, divergence)
            positions = outputs.shape[0] // items.shape[0]
            return outputs.detach()[self._draw([size * positions for size in groups], outputs.device)]
        per_item = outputs.view(items.shape[0], -1, outputs.shape[-1])     # (items, positions, out)
        return torch.cat([reference_outputs(group.flatten(0, 1), divergence, kind, self.generator)
                          for group in per_item.split(groups)])

    def _draw(self, groups: list[int], device: torch.device) -> Tensor:
        """A random reference index for every sample of consecutive groups of `groups` samples, each within its
        group (`reference_index`, as the collector's reference says): (Σ groups,)."""
        kind, starts = self.collector.reference, itertools.accumulate(groups[:-1], initial=0)
        return torch.cat([start + reference_index(size, kind, self.generator, device)
                          for start, size in zip(starts, groups)])

    def _shared_chunk(self, items: Tensor, references: Tensor):
        """The sharded mode: this process's share of every batch of the chunk (batch_size / world_size items each)."""
        world, share = self.shard.world_size, self.batch_size // self.shard.world_size
        ours = torch.arange(items.shape[0], device=items.device).view(-1, world, share)[:, self.shard.rank].flatten()
        if self.collector.sequence:  # every position of an item is a sample
            references = references.reshape(items.shape[0], -1, references.shape[-1])[ours].flatten(0, 1)
        else:
            references = references[ours]
        return self.collector(items[ours], references)

    def _labelled_chunk(self, index: Tensor, items: Tensor, sizes: list[int]):
        """The labelled mode: the chunk's gradients against the outputs of references drawn by index, and each
        sample's mask, the circuits on in it or in its reference."""
        others = self._draw(self._groups(sizes), items.device)
        references = self.collector.outputs(items).detach()[others]
        mask = self.active_circuits[index] | self.active_circuits[index[others]]
        if self.pool is not None:
            return self.pool.request(self.collector, items, references), mask
        return self.collector(items, references), mask

    # --- resuming -----------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """The generator and the position in the current epoch (None between epochs)."""
        return {"generator": self.generator.get_state(),
                "position": None if self._position is None else self._position.to_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Continue from `state_dict()`: the next iteration finishes the interrupted epoch, if any."""
        self.generator.set_state(state["generator"])
        position = None if state["position"] is None else Position(**state["position"])
        self._resume = None if position is None else (position, state["generator"])
        self._position = None if position is None else Position(**state["position"])


def _check_batching(collector: GradientCollector, inputs: Tensor, batch_size, chunk_size, shard: distributed.Shard,
                    batch_references, drop_last) -> tuple[int, int]:
    """batch_size and chunk_size as ints, or an error naming the argument that does not fit."""
    if not isinstance(inputs, Tensor) or inputs.dim() == 0:
        raise TypeError(f"inputs must be a tensor with items along dim 0, got {type(inputs).__name__}")
    n = inputs.shape[0]
    if not is_int(batch_size) or not 1 <= batch_size <= n:
        raise ValueError(f"batch_size {batch_size!r} must be an int in 1..{n} (the number of inputs)")
    chunk_size = batch_size if chunk_size is None else chunk_size
    if not is_int(chunk_size) or chunk_size < 1 or chunk_size % batch_size:
        raise ValueError(f"chunk_size {chunk_size!r} must be a multiple of batch_size {batch_size} "
                         "(or None: batch_size)")
    dtypes = sorted(map(str, {p.dtype for p in collector.params.values()}))
    if inputs.is_floating_point() and dtypes != [str(inputs.dtype)]:
        raise ValueError(f"inputs are {inputs.dtype} but the model's decomposed tensors are {dtypes}: convert the "
                         f"inputs, e.g. inputs.to({dtypes[0]}), or the model")
    if batch_size % shard.world_size:
        raise ValueError(f"batch_size {batch_size} must be a multiple of the {shard.world_size} processes: each takes "
                         f"batch_size / {shard.world_size} items of every batch")
    if not isinstance(batch_references, bool):
        raise TypeError(f"batch_references must be True (references drawn within each batch) or False (within each "
                        f"chunk), got {batch_references!r}")
    if not isinstance(drop_last, bool):
        raise TypeError(f"drop_last must be True (whole batches only) or False (every input, the last batch "
                        f"smaller), got {drop_last!r}")
    if not drop_last and shard.distributed:
        raise ValueError("drop_last=False (a last, smaller batch) needs a single process: under torchrun every batch "
                         "is split evenly over the processes")
    return int(batch_size), int(chunk_size)


def _check_labels(active_circuits: Tensor | None, collector: GradientCollector, inputs: Tensor,
                  shard: distributed.Shard) -> Tensor | None:
    """The labelled mode's (n_inputs, C) labels as bool on the inputs' device, or an error naming what is wrong."""
    if active_circuits is None:
        return None
    if collector.sequence or collector.reference not in DRAWN_REFERENCES or shard.distributed:
        raise ValueError(f"active_circuits (labels per input) needs one output per input, reference one of "
                         f"{list(DRAWN_REFERENCES)} and a single process")
    if active_circuits.dim() != 2 or active_circuits.shape[0] != inputs.shape[0]:
        raise ValueError(f"active_circuits must be (n_inputs, n_subnetworks) = ({inputs.shape[0]}, C), "
                         f"got {tuple(active_circuits.shape)}")
    return active_circuits.bool().to(inputs.device)
