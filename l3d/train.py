"""Training a decomposition: Adam, step learning-rate decay, warm start, history of error and P_act.

Runs can checkpoint every N steps and resume bit-identically (l3d.checkpoint), and run data-parallel
under torchrun (l3d.runtime.distributed): `batch_size` is always the global batch.
"""
from __future__ import annotations

import contextlib
import hashlib
import itertools
import math
import os
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor
from .runtime.progress import tqdm

from .checkpoint import (
    DamagedCheckpoint, ResumeRefused, checkpoints, load_checkpoint, remove_litter, rng_state, save_checkpoint,
    set_rng_state,
)
from .decomposition import Decomposition, LossParts, as_divisor, check_matches
from .divergences import check_outputs, random_any, random_others, reference_outputs
from .gradients import GradientCollector
from .resample import resample_
from .runtime import distributed
from .runtime.lock import exclusive
from .runtime.threads import threads_for
from .runtime.validate import as_seed, is_int, is_number


def _hash_bytes(digest, tensor: Tensor) -> None:
    """Feed the bytes of `tensor` (in row-major order) to a hashlib digest."""
    flat = tensor.detach().contiguous().view(-1)
    for part in (flat.view(torch.uint8) if flat.numel() else flat.new_empty(0, dtype=torch.uint8)).split(1 << 26):
        digest.update(part.cpu().numpy())


def fingerprint(inputs: Tensor) -> str:
    """dtype, shape and SHA-256 of the bytes of `inputs`, e.g. 'torch.float32[1000, 5] sha256:…'."""
    digest = hashlib.sha256()
    _hash_bytes(digest, inputs)
    return f"{inputs.dtype}{list(inputs.shape)} sha256:{digest.hexdigest()}"


def gradient_settings(collector: GradientCollector) -> dict:
    """Everything the collector's per-sample gradients depend on besides the inputs, as JSON values: the tensors
    decomposed (names, in order), divergence, reference, engine, sequence, and the model itself, as `fingerprint`
    of every decomposed tensor ("model") and one SHA-256 over the names, dtypes, shapes and bytes of the rest of
    its state_dict, its other parameters and buffers ("rest of model"). Checkpoints and run.json record it, and
    resuming compares it. (A `forward` function is not fingerprinted: resuming trusts that it is the same.)"""
    rest = hashlib.sha256()
    for name, tensor in collector.model.state_dict().items():
        if name not in collector.params:
            rest.update(f"{name} {tensor.dtype}{list(tensor.shape)};".encode())
            _hash_bytes(rest, tensor)
    return {
        "tensors": list(collector.names), "divergence": collector.divergence, "reference": collector.reference,
        "engine": collector.engine, "sequence": collector.sequence,
        "model": {name: fingerprint(p) for name, p in collector.params.items()},
        "rest of model": f"sha256:{rest.hexdigest()}",
    }


def _flat_settings(settings: Mapping, prefix: str = "") -> dict:
    """Nested settings as one level, keys joined by '.': {"a": {"b": 1}} -> {"a.b": 1}."""
    flat = {}
    for key, value in settings.items():
        if isinstance(value, Mapping) and value:
            flat.update(_flat_settings(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _check_resumable(found: Path, written: dict, settings: dict) -> None:
    """ResumeRefused naming every setting of `settings` (this call's) that differs from `written` (the checkpoint's),
    or when the checkpoint predates the record of the model and the run's settings."""
    if "gradients" not in written:
        raise ResumeRefused(
            f"cannot resume {found}: it was written by an earlier l3d, which did not record the model (a fingerprint "
            f"of its tensors), the divergence, reference and engine, nor the run's settings; resuming could go on "
            f"with other gradients without a word. Start again in an empty checkpoint_dir"
        )
    written = {"silence": 0.0, "silence_from": 0, **written}    # checkpoints from before silence
    old, new = _flat_settings(written), _flat_settings(settings)
    absent = "(not recorded)"
    changed = [k for k in [*new, *(k for k in old if k not in new)] if old.get(k, absent) != new.get(k, absent)]
    if changed:
        raise ResumeRefused(
            f"cannot resume {found}: it was written with other settings "
            + "; ".join(f"{k}: checkpoint {old.get(k, absent)!r}, now {new.get(k, absent)!r}" for k in changed)
            + ". Resume with the settings, model and inputs it was written with, or choose an empty checkpoint_dir"
        )


class ZeroGradients(ValueError):
    """Every per-sample gradient of a pass is zero: there is nothing to decompose (e.g. an untrained model whose
    outputs do not depend on the decomposed tensors at these inputs)."""


def _check_not_all_zero(stats: "_EpochStats", where: str, collector: GradientCollector) -> None:
    """A `ZeroGradients` error if the pass `stats` summed had only zero per-sample gradients (Σ ||g||² = 0)."""
    if stats.sums[1].item() != 0:
        return
    raise ZeroGradients(
        f"{where}: every per-sample gradient of its {stats.samples} samples is zero (the sum of ||g||^2 is 0), so "
        f"there is nothing to decompose and a reconstruction error (0 / 0) would mean nothing. The divergence does "
        f"not depend on the decomposed tensors {collector.names} at these inputs: check that they affect the "
        f"model's outputs, and that the inputs differ (with reference={collector.reference!r}, a sample whose "
        f"reference output equals its own output has gradient 0)"
    )


class GradientSource:
    """Batches of per-sample gradients over a data set, with fresh references every epoch.

    Gradients are computed `chunk_size` items at a time and handed out `batch_size` items at a time. Every
    sample's reference is drawn within its chunk, or with batch_references=True within its own batch (the
    authors' code; the same references and gradients as chunk_size = batch_size, in fewer, larger passes). A
    chunk_size that is not a multiple of batch_size is an error. For small models set chunk_size to the data set
    size, `len(inputs)`: one vectorized gradient pass per epoch. Every epoch takes len(inputs) // batch_size whole
    batches of a fresh shuffle; the last len(inputs) % batch_size items of the shuffled order sit that epoch out,
    unless drop_last=False: then they make a last, smaller batch (a lone item joins the batch before it, which
    then holds batch_size + 1), so that every input is scored once per epoch (`evaluate` on held-out inputs).
    Under torch.distributed every process draws the same order and references and computes the gradients of its
    share of each batch only (`shard`).
    The position within an epoch is part of `state_dict`, so an interrupted epoch resumes where it stopped.
    """

    def __init__(
        self,
        collector: GradientCollector,
        inputs: Tensor,
        batch_size: int,
        chunk_size: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        shard: distributed.Shard | None = None,
        active: Tensor | None = None,
        batch_references: bool = False,
        drop_last: bool = True,
    ):
        if not isinstance(inputs, Tensor) or inputs.dim() == 0:
            raise TypeError(f"inputs must be a tensor with items along dim 0, got {type(inputs).__name__}")
        n = inputs.shape[0]
        if not is_int(batch_size) or not 1 <= batch_size <= n:
            raise ValueError(f"batch_size {batch_size!r} must be an int in 1..{n} (the number of inputs)")
        batch_size = int(batch_size)
        chunk_size = batch_size if chunk_size is None else chunk_size
        if not is_int(chunk_size) or chunk_size < 1 or chunk_size % batch_size:
            raise ValueError(f"chunk_size {chunk_size!r} must be a multiple of batch_size {batch_size} (or None: batch_size)")
        chunk_size, seed = int(chunk_size), as_seed("seed", seed)
        dtypes = {p.dtype for p in collector.params.values()}
        if inputs.is_floating_point() and dtypes != {inputs.dtype}:
            raise ValueError(f"inputs are {inputs.dtype} but the model's decomposed tensors are {sorted(map(str, dtypes))}: "
                             f"convert the inputs, e.g. inputs.to({sorted(map(str, dtypes))[0]}), or the model")
        self.shard = shard or distributed.current()
        if batch_size % self.shard.world_size:
            raise ValueError(
                f"batch_size {batch_size} must be a multiple of the {self.shard.world_size} processes: "
                f"each takes batch_size / {self.shard.world_size} items of every batch"
            )
        if not isinstance(batch_references, bool):
            raise TypeError(f"batch_references must be True (references drawn within each batch) or False (within "
                            f"each chunk), got {batch_references!r}")
        if not isinstance(drop_last, bool):
            raise TypeError(f"drop_last must be True (whole batches only) or False (every input, the last batch "
                            f"smaller), got {drop_last!r}")
        if not drop_last and self.shard.active:
            raise ValueError("drop_last=False (a last, smaller batch) needs a single process: under torchrun every "
                             "batch is split evenly over the processes")
        self.collector = collector
        self.inputs = inputs
        self.batch_size = batch_size
        self.chunk_size = chunk_size
        self.batch_references = batch_references
        self.drop_last = drop_last
        self.shuffle = shuffle
        groups = self._groups(self._batch_sizes()[-(self._per_chunk_last()):])   # the last chunk's reference pools
        if collector.reference == "random" and not collector.sequence and min(groups) < 2:
            raise ValueError(f"reference='random' draws another sample of the same "
                             f"{'batch' if batch_references else 'chunk'}: use {'batch_size' if batch_references else 'chunk_size'} >= 2"
                             + ("" if drop_last else " (with drop_last=False, the last chunk too)"))
        check_outputs(collector.outputs(inputs[: min(n, 16)]), collector.divergence)
        if active is not None:
            if collector.sequence or collector.reference not in ("random", "random_or_self") or self.shard.active:
                raise ValueError("active (labels per input) needs one output per input, reference 'random' or "
                                 "'random_or_self' and a single process")
            if active.dim() != 2 or active.shape[0] != n:
                raise ValueError(f"active must be (n_inputs, n_subnetworks) = ({n}, C), got {tuple(active.shape)}")
            active = active.bool().to(inputs.device)
        self.active = active
        self.mask: Tensor | None = None   # with `active`: the (batch, C) mask of the batch just handed out
        self.generator = torch.Generator().manual_seed(seed)
        self._position: dict | None = None  # within an epoch: where it started, which chunk, batches taken
        self._resume: dict | None = None

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
    def work(self) -> int:
        """Per-sample gradient entries of one batch (`GradientCollector.work`); `fit` and `evaluate` pick their
        CPU threads by it (l3d.runtime.threads)."""
        return self.collector.work(self.inputs[:self.batch_size])

    @property
    def batches_done(self) -> int:
        """Batches handed out so far in the current epoch."""
        if self._position is None:
            return 0
        return self._position["chunk"] * (self.chunk_size // self.batch_size) + self._position["taken"]

    def __iter__(self) -> Iterator:
        """One epoch of batches (this process's share of each), or the rest of an interrupted one."""
        resume, self._resume = self._resume, None
        epoch_state = resume["epoch_generator"] if resume else self.generator.get_state()
        self.generator.set_state(epoch_state)
        sizes = self._batch_sizes()
        n = sum(sizes)
        order = torch.randperm(self.inputs.shape[0], generator=self.generator) if self.shuffle else torch.arange(n)
        order = order[:n].to(self.inputs.device)
        per_chunk = self.chunk_size // self.batch_size
        bounds = [0, *itertools.accumulate(sizes)]          # where each batch starts in `order`
        first, skip = 0, 0
        if resume:
            first, skip = resume["chunk"], resume["taken"]
            if skip == per_chunk:  # that chunk was finished: go on from the generator's state after it
                first, skip = first + 1, 0
                self.generator.set_state(resume["generator"])
            else:
                self.generator.set_state(resume["chunk_generator"])
        world = self.shard.world_size
        for chunk in range(first, math.ceil(len(sizes) / per_chunk)):
            self._position = {"epoch_generator": epoch_state, "chunk": chunk,
                              "chunk_generator": self.generator.get_state(), "taken": skip}
            chunk_sizes = sizes[chunk * per_chunk:(chunk + 1) * per_chunk]
            index = order[bounds[chunk * per_chunk]:bounds[chunk * per_chunk + len(chunk_sizes)]]
            grads, masks = self._chunk_gradients(index, chunk_sizes)
            per_item = grads.n_samples // (len(index) // world)     # samples per item (positions of a sequence)
            ends = [0, *itertools.accumulate(size // world * per_item for size in chunk_sizes)]
            for b in range(skip, len(chunk_sizes)):
                self._position["taken"] += 1
                self.mask = None if masks is None else masks[ends[b]:ends[b + 1]]
                yield grads[ends[b]:ends[b + 1]]
            skip = 0
        self._position = None

    def _references(self, items: Tensor, sizes: list[int]) -> Tensor:
        """Every sample's reference output, drawn within its group of items (`_groups`): (samples, out)."""
        outputs = self.collector.outputs(items)
        per_item = outputs.view(items.shape[0], -1, outputs.shape[-1])     # (items, positions, out)
        return torch.cat([reference_outputs(group.flatten(0, 1), self.collector.divergence, self.collector.reference,
                                            self.generator) for group in per_item.split(self._groups(sizes))])

    def _chunk_gradients(self, index: Tensor, sizes: list[int]):
        """This process's gradients of a chunk of batches of `sizes` items, and with `active` the subnetworks allowed
        on each sample: those of the circuits on in it or its reference."""
        items = self.inputs[index]
        if self.active is not None:
            draw = random_any if self.collector.reference == "random_or_self" else random_others
            groups = self._groups(sizes)
            starts = itertools.accumulate(groups[:-1], initial=0)
            others = torch.cat([start + draw(size, self.generator, items.device) for start, size in zip(starts, groups)])
            references = self.collector.outputs(items).detach()[others]
            return self.collector(items, references), self.active[index] | self.active[index[others]]
        references = self._references(items, sizes)     # (samples, out), the same on every process
        if not self.shard.active:
            return self.collector(items, references), None
        share = self.batch_size // self.shard.world_size
        ours = torch.arange(items.shape[0], device=items.device).view(-1, self.shard.world_size, share)[:, self.shard.rank].flatten()
        if self.collector.sequence:  # every position of an item is a sample
            references = references.reshape(items.shape[0], -1, references.shape[-1])[ours].flatten(0, 1)
        else:
            references = references[ours]
        return self.collector(items[ours], references), None

    def state_dict(self) -> dict:
        """The generator and the position in the current epoch (None between epochs)."""
        return {"generator": self.generator.get_state(), "position": None if self._position is None else dict(self._position)}

    def load_state_dict(self, state: dict) -> None:
        """Continue from `state_dict()`: the next iteration finishes the interrupted epoch, if any."""
        self.generator.set_state(state["generator"])
        self._resume = None if state["position"] is None else {**state["position"], "generator": state["generator"]}
        self._position = self._resume and dict(state["position"])


@dataclass
class History:
    """Per epoch: reconstruction error (Σ error / Σ ||g||² over the epoch), learning rate, P_act per subnetwork,
    and, when fit ran with silence > 0, the dropped energy, of the coefficients BatchTopK dropped (Σ S / Σ ||g||²).
    resampled: with resample_every, one entry per resampling (`l3d.resample.Resampling.to_dict()` and its epoch)."""

    reconstruction_error: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    p_act: list[list[float]] = field(default_factory=list)
    dropped_energy: list[float] = field(default_factory=list)
    resampled: list[dict] = field(default_factory=list)

    @property
    def dead(self) -> list[int]:
        """Subnetworks never selected in the last epoch."""
        return [k for k, p in enumerate(self.p_act[-1]) if p == 0] if self.p_act else []

    def to_dict(self) -> dict:
        fields = {"reconstruction_error": self.reconstruction_error, "lr": self.lr, "p_act": self.p_act}
        if self.dropped_energy:
            fields["dropped_energy"] = self.dropped_energy
        if self.resampled:
            fields["resampled"] = self.resampled
        return fields

    @classmethod
    def from_dict(cls, d: dict) -> History:
        """Read `to_dict()`, also as written before the dropped energy had its name (key "silent")."""
        dropped = d.get("dropped_energy", d.get("silent", []))
        return cls(list(d["reconstruction_error"]), list(d["lr"]), [list(p) for p in d["p_act"]], list(dropped),
                   [dict(r) for r in d.get("resampled", [])])


class _EpochStats:
    """Sums over an epoch, fed with every step's (error, total, active per subnetwork, [dropped energy]) of the
    whole batch."""

    def __init__(self, n_subnetworks: int, device, dropped_energy: bool = False):
        self.sums = torch.zeros(2 + n_subnetworks + dropped_energy, device=device, dtype=torch.float64)
        self.dropped_energy = dropped_energy
        self.samples = 0

    def add(self, summary: Tensor, n_samples: int) -> None:
        self.sums += summary
        self.samples += n_samples

    def result(self) -> tuple[float, list[float], float | None]:
        """Reconstruction error and P_act of the epoch, and the dropped energy (over Σ ||g||²) if summed."""
        error, total, active = self.sums[0], self.sums[1], self.sums[2:len(self.sums) - self.dropped_energy]
        dropped = (self.sums[-1] / as_divisor(total)).item() if self.dropped_energy else None
        return (error / as_divisor(total)).item(), (active / max(self.samples, 1)).tolist(), dropped


def _summary(parts: LossParts) -> Tensor:
    """(error, total, active per subnetwork, [dropped energy]) of the whole batch, summed over processes:
    (2 + C [+ 1],) float64."""
    pieces = [parts.error.detach().view(1), parts.total.detach().view(1), parts.mask.sum(0)]
    if parts.dropped_energy is not None:
        pieces.append(parts.dropped_energy.detach().view(1))
    local = torch.cat(pieces).double()
    return distributed.all_sum_(local)


def _check_fit_settings(epochs, lr, lr_decay, lr_decay_every, warm_start_epochs, checkpoint_every, silence,
                        silence_from, keep_checkpoints, resample_every) -> tuple:
    """The settings, NumPy numbers converted, or a ValueError naming every bad one."""
    problems = []
    if not is_int(epochs) or epochs < 1:
        problems.append(f"epochs must be an int >= 1, got {epochs!r}")
    if not is_number(lr) or not math.isfinite(lr) or lr <= 0:
        problems.append(f"lr must be a finite number > 0, got {lr!r}")
    if not is_number(lr_decay) or not 0 < lr_decay <= 1:
        problems.append(f"lr_decay must lie in (0, 1] (1: no decay), got {lr_decay!r}")
    if not is_int(lr_decay_every) or lr_decay_every < 1:
        problems.append(f"lr_decay_every must be an int >= 1 (epochs), got {lr_decay_every!r}")
    if not is_int(warm_start_epochs) or warm_start_epochs < 0:
        problems.append(f"warm_start_epochs must be an int >= 0, got {warm_start_epochs!r}")
    if not is_number(silence) or not math.isfinite(silence) or silence < 0:
        problems.append(f"silence must be a finite number >= 0 (0: the paper's loss), got {silence!r}")
    if not is_int(silence_from) or silence_from < 0:
        problems.append(f"silence_from must be an int >= 0 (the epoch the silence penalty starts at), got {silence_from!r}")
    if checkpoint_every is not None and (not is_int(checkpoint_every) or checkpoint_every < 1):
        problems.append(f"checkpoint_every must be an int >= 1 (steps) or None, got {checkpoint_every!r}")
    if not is_int(keep_checkpoints) or keep_checkpoints < 1:
        problems.append(f"keep_checkpoints must be an int >= 1 (the newest checkpoints kept), got {keep_checkpoints!r}")
    if not is_int(resample_every) or resample_every < 0:
        problems.append(f"resample_every must be an int >= 0 (epochs between resamplings; 0: never), got {resample_every!r}")
    if problems:
        raise ValueError("bad fit settings: " + "; ".join(problems))
    return (int(epochs), float(lr), float(lr_decay), int(lr_decay_every), int(warm_start_epochs),
            checkpoint_every if checkpoint_every is None else int(checkpoint_every), float(silence), int(silence_from),
            int(keep_checkpoints), int(resample_every))


def _tensor_of(parameter_name: str, names: list[str]) -> str:
    """'decoder.1.factors.0' -> "decoder of tensor 'W_out' (decoder.1.factors.0)"."""
    part, index, *_ = parameter_name.split(".")
    return f"{part} of tensor {names[int(index)]!r} ({parameter_name})"


def _raise_non_finite(step: int, epoch: int, grads, summary: Tensor, decomposition: Decomposition, lr: float) -> None:
    """Find what is not finite and raise a FloatingPointError naming it (return if it was only a norm's overflow)."""
    where = f"step {step} (epoch {epoch})"
    if not torch.isfinite(summary[1]):
        per_tensor = grads.dense().grads if hasattr(grads, "dense") else getattr(grads, "grads", {})  # name -> (N, *shape)
        bad = [n for n, g in per_tensor.items() if not torch.isfinite(g).all()]
        named = f" of tensor(s) {', '.join(map(repr, bad))}" if bad else ""
        raise FloatingPointError(
            f"{where}: the per-sample gradients{named} are not finite (nan or inf); check the model's outputs "
            f"and the divergence on these inputs"
        )
    bad = [_tensor_of(n, decomposition.names) for n, p in decomposition.named_parameters() if not torch.isfinite(p).all()]
    if not torch.isfinite(summary[0]) or bad:
        which = f"non-finite: {', '.join(bad)}"
        if not bad:  # overflow from finite but huge parameters: name the largest
            size, name = max((p.detach().abs().max().item(), n) for n, p in decomposition.named_parameters())
            which = f"largest: {_tensor_of(name, decomposition.names)}, reaching {size:.3g}"
        raise FloatingPointError(
            f"{where}: the reconstruction error is not finite; the decomposition's parameters diverged "
            f"({which}); try a lower learning rate than lr={lr}"
        )
    bad = [_tensor_of(n, decomposition.names) for n, p in decomposition.named_parameters()
           if p.grad is not None and not torch.isfinite(p.grad).all()]
    if not bad:
        return
    raise FloatingPointError(
        f"{where}: the gradient of the loss is not finite for the {', '.join(bad)}; "
        f"try a lower learning rate than lr={lr}"
    )


def fit(
    decomposition: Decomposition,
    source: GradientSource,
    epochs: int,
    lr: float = 0.01,
    lr_decay: float = 0.8,
    lr_decay_every: int = 100,
    warm_start_epochs: int = 0,
    progress: bool = True,
    *,
    silence: float = 0.0,
    silence_from: int = 0,
    resample_every: int = 0,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    keep_checkpoints: int = 2,
    callback: Callable[[int, LossParts], None] | None = None,
    threads: int | None = None,
    config: Mapping | None = None,
) -> History:
    """Train `decomposition` on `source` with Adam; lr × lr_decay every lr_decay_every epochs.

    The first warm_start_epochs keep every coefficient (top_k = 1). A source with labels (`active`) keeps,
    in place of BatchTopK's choice, the coefficients of the subnetworks its mask allows (a diagnostic:
    `l3d.experiments.ground_truth.fit_circuit_aligned`). Decoder directions are put back to
    unit norm after every step. A non-finite loss or gradient stops training with an error naming the step.

    silence: from epoch `silence_from` on, the loss minimized is (Σ ||g − ĝ||² + silence · S) / Σ ||g||², S the
        dropped energy, of the coefficients BatchTopK drops (`History.dropped_energy` records S / Σ ||g||²).
        0 is the paper's loss. Only the coefficients a subnetwork is
        selected for train its encoder, so nothing else stops an encoder from also responding to samples it
        does not serve; S penalizes that response (our addition; measured in notebook 03). Started late, once
        the subnetworks have found their circuits, it cleans the encoders without making a subnetwork give up
        its circuit.
    resample_every: at the start of every epoch that is a positive multiple of it (0: never), `l3d.resample.resample_`
        (two passes over the data, no step): the subnetwork the error needs least is re-seeded with the direction
        the residuals share most when that explains more; its Adam state starts afresh. Our addition, for seeds
        where two subnetworks share a circuit and another has none (notebook 07); `History.resampled` records each.
        Refused with labels (`source.active`); under torchrun every process re-seeds the same way.

    checkpoint_dir: write a checkpoint there every `checkpoint_every` steps and at the end (the
        `keep_checkpoints` >= 1 newest are kept). With resume=True an existing checkpoint there is continued
        (bit-identical to an uninterrupted run on CPU); without, a folder holding one is an error. Every
        checkpoint records fit's settings, `config`, the decomposition's shapes, the gradients' settings with a
        fingerprint of the model (`gradient_settings`) and one of the inputs (`fingerprint`); resuming refuses
        (`ResumeRefused`) any difference, naming each, and fewer epochs than already done. A checkpoint written
        before these were recorded is refused too: it cannot be checked. A damaged checkpoint is skipped with a
        warning (and renamed `<name>.damaged`) for the newest intact one. While fit runs it holds checkpoint_dir's
        lock (`l3d.runtime.lock`): a second process resuming the same folder is refused (FolderInUse). What
        killed runs left there (temporary folders) is removed first.
    callback: called as callback(step, loss_parts) after every step (step counts from 1).
    threads: CPU threads torch uses during the call. None: $L3D_THREADS, else $OMP_NUM_THREADS, else one
        thread for small work (`source.work` below l3d.runtime.threads.SMALL_WORK) and torch's setting otherwise.
    config: the settings of the whole run that fit does not see (decompose passes its `L3DConfig.to_dict()`: the
        seed, the start, the restarts, ...), JSON values; recorded in every checkpoint and compared on resume
        like fit's own (its "epochs" may grow).
    An epoch whose per-sample gradients are all zero (Σ ||g||² = 0) stops training with a ValueError: there is
    nothing to decompose, and its error 0 / 0 would mean nothing.
    Under torchrun (l3d.runtime.distributed) every process runs fit on its share; only rank 0 writes checkpoints.
    """
    if config is not None and not isinstance(config, Mapping):
        raise TypeError(f"config must be a dict of the run's settings (e.g. L3DConfig.to_dict()) or None, got "
                        f"{type(config).__name__}")
    with threads_for(source.work, threads), contextlib.ExitStack() as held:
        return _fit(decomposition, source, epochs, lr, lr_decay, lr_decay_every, warm_start_epochs, progress, silence,
                    silence_from, resample_every, checkpoint_dir, checkpoint_every, resume, keep_checkpoints, callback,
                    config, held)


def _fit(decomposition, source, epochs, lr, lr_decay, lr_decay_every, warm_start_epochs, progress, silence,
         silence_from, resample_every, checkpoint_dir, checkpoint_every, resume, keep_checkpoints, callback,
         config, held: contextlib.ExitStack) -> History:
    (epochs, lr, lr_decay, lr_decay_every, warm_start_epochs, checkpoint_every, silence, silence_from,
     keep_checkpoints, resample_every) = _check_fit_settings(epochs, lr, lr_decay, lr_decay_every, warm_start_epochs,
                                                             checkpoint_every, silence, silence_from, keep_checkpoints,
                                                             resample_every)
    if checkpoint_dir is None and (resume or checkpoint_every):
        raise ValueError("resume and checkpoint_every need a checkpoint_dir to read and write checkpoints in")
    if checkpoint_dir is not None and Path(checkpoint_dir).exists() and not Path(checkpoint_dir).is_dir():
        raise NotADirectoryError(f"checkpoint_dir {str(checkpoint_dir)!r} is a file: give a folder (new or holding checkpoints)")
    decomposition.check_shapes(source.collector.shapes, "the collector")
    check_matches(decomposition, source.collector)
    shard = source.shard
    if resample_every and source.active is not None:
        raise ValueError("resample_every needs a source without labels (active): the labels fix which subnetwork "
                         "serves which circuit; set resample_every=0 with labels")
    device = decomposition.decoder[0].core.device
    # fused Adam: one kernel for all parameters (CPU and CUDA)
    optimizer = torch.optim.Adam(decomposition.parameters(), lr=lr, fused=device.type in ("cpu", "cuda"))
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=lr_decay_every, gamma=lr_decay)
    settings = {
        "lr": lr, "lr_decay": lr_decay, "lr_decay_every": lr_decay_every, "warm_start_epochs": warm_start_epochs,
        "silence": silence, "silence_from": silence_from,
        "batch_size": source.batch_size, "chunk_size": source.chunk_size, "n_inputs": source.inputs.shape[0],
        **({"batch_references": True} if source.batch_references else {}),
        **({"resample_every": resample_every} if resample_every else {}),
        **({"shuffle": False} if not source.shuffle else {}),
        **({"drop_last": False} if not source.drop_last else {}),
        "decomposition": decomposition.config,
        # what the gradients depend on: fingerprinted only where a checkpoint records them
        "gradients": None if checkpoint_dir is None else gradient_settings(source.collector),
        "inputs": None if checkpoint_dir is None else fingerprint(source.inputs),
        "config": None if config is None else {k: v for k, v in config.items() if k != "epochs"},
    }
    history, step, epoch, stats = History(), 0, 0, None
    if checkpoint_dir is not None and shard.is_main:
        held.enter_context(exclusive(checkpoint_dir, "checkpoint_dir"))   # until fit returns
        remove_litter(checkpoint_dir)
    found, skipped = None, []
    candidates = checkpoints(checkpoint_dir) if checkpoint_dir is not None else []
    if candidates and not resume:
        raise FileExistsError(
            f"{checkpoint_dir} already holds a checkpoint ({candidates[-1].name}); pass resume=True to continue that run "
            f"or choose an empty checkpoint_dir"
        )
    for folder in reversed(candidates):
        try:
            _, tensors, state = load_checkpoint(folder)
            found = folder
            break
        except DamagedCheckpoint as e:
            skipped.append((folder, str(e)))
    if skipped and found is None:
        raise DamagedCheckpoint(f"no intact checkpoint in {checkpoint_dir} to resume from: " + "; ".join(e for _, e in skipped))
    if skipped:
        warnings.warn(f"skipped damaged checkpoint(s) {', '.join(f.name for f, _ in skipped)} in {checkpoint_dir} "
                      f"({'; '.join(e for _, e in skipped)}); resuming from {found.name}; the damaged ones are "
                      f"renamed <name>.damaged", stacklevel=2)
    if found is not None:
        _check_resumable(found, state["settings"], settings)
        if state["epoch"] > epochs:
            raise ResumeRefused(
                f"cannot resume {found}: it has done {state['epoch']} epochs, more than epochs={epochs}; ask for "
                f"epochs >= {state['epoch']} (the history of a finished run is in its last checkpoint)"
            )
        decomposition.load_state_dict(tensors)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        source.load_state_dict(state["source"])
        set_rng_state(state["rng"])
        history = History.from_dict(state["history"])
        step, epoch = state["step"], state["epoch"]
        if state["stats"] is not None:
            stats = _EpochStats(decomposition.n_subnetworks, device, silence > 0)
            stats.sums.copy_(state["stats"]["sums"])
            stats.samples = state["stats"]["samples"]
    if shard.active:  # every process must continue from the same checkpoint (a folder they all see)
        steps, _ = distributed.gather_rows(torch.tensor([step], device=device))
        if not (steps == step).all():
            raise RuntimeError(
                f"the processes found different checkpoints in {checkpoint_dir} (steps {steps.tolist()}): "
                f"checkpoint_dir must be a folder every process can read"
            )
    if shard.is_main:   # out of the rotation, kept for inspection
        for folder, _ in skipped:
            aside = folder.with_name(folder.name + ".damaged")
            while aside.exists():
                aside = aside.with_name(aside.name + "_")
            os.replace(folder, aside)
    distributed.broadcast_parameters_(decomposition)

    def checkpoint() -> None:
        if not shard.is_main:
            return
        state = {
            "settings": settings, "step": step, "epoch": epoch, "history": history.to_dict(),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "source": source.state_dict(), "rng": rng_state(),
            "stats": None if stats is None else {"sums": stats.sums, "samples": stats.samples},
        }
        save_checkpoint(checkpoint_dir, step, decomposition, state, keep=keep_checkpoints)

    bar = tqdm(total=epochs, initial=epoch, desc="L3D", disable=not progress or not shard.is_main)
    while epoch < epochs:
        top_k = 1.0 if epoch < warm_start_epochs else None
        penalty = silence if epoch >= silence_from else 0.0    # weight of the dropped energy in this epoch's loss
        if resample_every and epoch and epoch % resample_every == 0 and stats is None:    # a fresh epoch
            done = resample_(decomposition, source, top_k, seed=epoch)
            history.resampled.append({"epoch": epoch, **done.to_dict()})
            if done.replaced:
                _forget_(optimizer, decomposition, done.subnetwork)
        stats = stats or _EpochStats(decomposition.n_subnetworks, device, silence > 0)
        for grads in source:
            parts = decomposition.loss(grads, top_k, distributed=shard.active, dropped_energy=silence > 0,
                                      mask=source.mask)
            summary = _summary(parts)                     # the whole batch's error, Σ||g||², active counts, [S]
            objective = parts.error + penalty * parts.dropped_energy if penalty else parts.error
            loss = objective / as_divisor(summary[1].to(parts.error.dtype))   # this process's part of the global loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            distributed.sum_gradients_(decomposition.parameters())
            step += 1
            grad_norms = torch._foreach_norm([p.grad for p in decomposition.parameters() if p.grad is not None])
            if not torch.isfinite(torch.cat([summary[:2], torch.stack(grad_norms).double()])).all():  # one check per step
                _raise_non_finite(step, epoch, grads, summary, decomposition, scheduler.get_last_lr()[0])
            optimizer.step()
            decomposition.normalize_decoder_()
            stats.add(summary, parts.mask.shape[0] * shard.world_size)
            if checkpoint_dir is not None and checkpoint_every and step % checkpoint_every == 0 and source.batches_done < len(source):
                checkpoint()
            if callback is not None:
                callback(step, parts)
        _check_not_all_zero(stats, f"epoch {epoch}", source.collector)
        error, p_act, dropped = stats.result()
        history.reconstruction_error.append(error)
        history.lr.append(scheduler.get_last_lr()[0])
        history.p_act.append(p_act)
        if dropped is not None:
            history.dropped_energy.append(dropped)
        scheduler.step()
        epoch, stats = epoch + 1, None
        bar.set_postfix(error=f"{error:.3f}", dead=sum(p == 0 for p in p_act), refresh=False)
        bar.update(1)   # redraws at most every mininterval seconds, the postfix with it
        if checkpoint_dir is not None and (checkpoint_every and step % checkpoint_every == 0 or epoch == epochs):
            checkpoint()
    bar.close()
    distributed.barrier()
    return history


@torch.no_grad()
def _forget_(optimizer: torch.optim.Adam, decomposition: Decomposition, k: int) -> None:
    """Zero Adam's moment estimates of subnetwork k (index k of every parameter's first dimension)."""
    for p in decomposition.parameters():
        for name in ("exp_avg", "exp_avg_sq"):
            if name in optimizer.state.get(p, {}):
                optimizer.state[p][name][k] = 0


@torch.no_grad()
def evaluate(decomposition: Decomposition, source: GradientSource, threads: int | None = None) -> dict:
    """Reconstruction error and P_act over one pass of `source`, without training (threads: as for `fit`)."""
    decomposition.check_shapes(source.collector.shapes, "the collector")
    check_matches(decomposition, source.collector)
    stats = _EpochStats(decomposition.n_subnetworks, decomposition.decoder[0].core.device)
    with threads_for(source.work, threads):
        for grads in source:
            parts = decomposition.loss(grads, distributed=source.shard.active)
            stats.add(_summary(parts), parts.mask.shape[0] * source.shard.world_size)
    _check_not_all_zero(stats, "evaluate", source.collector)
    error, p_act, _ = stats.result()
    return {"reconstruction_error": error, "p_act": p_act, "dead": [k for k, p in enumerate(p_act) if p == 0]}
