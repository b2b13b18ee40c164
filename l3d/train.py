"""Training a decomposition: Adam, step learning-rate decay, warm start, the history of error and P_act.

`fit` trains one decomposition, or a stack of them as one program (`Decomposition.stack`: starts, seeds), on one
GradientSource or one per group of members. Each epoch: optionally re-seed the subnetwork the error needs least
(resampling), then for every batch one step (loss, backward, Adam, decoder norms back to 1), then the epoch's record.
Runs checkpoint every N steps and resume bit-identically (l3d.checkpoint), and run data-parallel under torchrun
(l3d.runtime.distributed): `batch_size` is always the global batch.
Beside this module: l3d.passes (the sources checked, an epoch's batches, `evaluate`) and l3d.resample (resampling).
"""
from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from .checkpoint import (
    ResumeRefused,
    check_resumable,
    checkpoints,
    newest_intact,
    remove_litter,
    rng_state,
    save_checkpoint,
    set_aside,
    set_rng_state,
)
from .decomposition import Decomposition, LossParts
from .dense_loss import as_divisor
from .fingerprints import fingerprint, gradient_settings
from .gradients import StackedGradients
from .history import EpochSums, History, batch_summary
from .passes import ZeroGradients as ZeroGradients  # re-exported: l3d.train.ZeroGradients, as before
from .passes import check_not_all_zero, check_sources, epoch_batches
from .passes import evaluate as evaluate  # re-exported: l3d.train.evaluate, as before
from .resample import resample_members_
from .runtime import distributed
from .runtime.lock import exclusive
from .runtime.progress import tqdm
from .runtime.settings import Settings, bounded
from .runtime.threads import threads_for
from .source import GradientSource


@dataclass(frozen=True)
class Schedule(Settings):
    """How `fit` trains (checked on construction: one ValueError naming every bad setting).

    epochs; Adam's lr, times lr_decay every lr_decay_every epochs; the first warm_start_epochs keep every
    coefficient; from epoch silence_from the loss adds the silence penalty, silence · S with S the dropped energy
    (of the coefficients BatchTopK drops), 0 the paper's loss; every resample_every epochs (0: never) the
    subnetwork the error needs least may be re-seeded; revive weighs the revival term of the subnetworks dead in
    the epoch before (0: none).
    """

    epochs: int = bounded(1000, low=1)
    lr: float = bounded(0.01, low=0, open_low=True)
    lr_decay: float = bounded(0.8, low=0, high=1, open_low=True)
    lr_decay_every: int = bounded(100, low=1)
    warm_start_epochs: int = bounded(0, low=0)
    silence: float = bounded(0.0, low=0)
    silence_from: int = bounded(0, low=0)
    resample_every: int = bounded(0, low=0)
    revive: float = bounded(0.0, low=0)


@dataclass(frozen=True)
class Checkpointing(Settings):
    """Where and how often `fit` writes checkpoints (folder None: never), and whether it continues one."""

    checkpoint_dir: str | None = None
    checkpoint_every: int | None = bounded(None, low=1)    # steps; None: at the end only
    keep_checkpoints: int = bounded(2, low=1)              # the newest checkpoints kept
    resume: bool = False

    def check(self) -> list[str]:
        if self.checkpoint_dir is None and (self.resume or self.checkpoint_every):
            return ["resume and checkpoint_every need a checkpoint_dir to read and write checkpoints in"]
        return []


def fit(
    decomposition: Decomposition,
    source: GradientSource | Sequence[GradientSource],
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
    revive: float = 0.0,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    keep_checkpoints: int = 2,
    callback: Callable[[int, LossParts], None] | None = None,
    threads: int | None = None,
    config: Mapping | None = None,
) -> History | list[History]:
    """Train `decomposition` on `source` with Adam; lr × lr_decay every lr_decay_every epochs. Returns its History.

    A stack of M members (`Decomposition.stack`) trains as M independent runs in one program and returns one
    History per member. `source` is then one GradientSource shared by every member (starts of one run), or a list
    of G sources of the same size and batch settings, the members split evenly over them in order (member m reads
    source m // (M / G): seeds, each with its starts); dense gradients (engine "dense") unless G is 1. A stack
    trains on one process; with labels, every source has them.

    The first warm_start_epochs keep every coefficient (top_k = 1). A source with labels (`active_circuits`) keeps,
    in place of BatchTopK's choice, the coefficients of the subnetworks its mask allows (a diagnostic:
    `l3d.experiments.ground_truth.fit_circuit_aligned`). Decoder directions are put back to
    unit norm after every step. A non-finite loss or gradient stops training with an error naming the step.

    silence: from epoch `silence_from` on, the loss minimized is (Σ ||g − ĝ||² + silence · S) / Σ ||g||², the
        silence penalty silence · S added, S the dropped energy, of the coefficients BatchTopK drops
        (`History.dropped_energy` records S / Σ ||g||²).
        0 is the paper's loss. Only the coefficients a subnetwork is
        selected for train its encoder, so nothing else stops an encoder from also responding to samples it
        does not serve; S penalizes that response (our addition; measured in notebook 03). Started late, once
        the subnetworks have found their circuits, it cleans the encoders without making a subnetwork give up
        its circuit.
    resample_every: at the start of every epoch that is a positive multiple of it (0: never), `l3d.resample.resample_`
        (two passes over the data, no step): the subnetwork the error needs least is re-seeded with the direction
        the residuals share most when that explains more; its Adam state starts afresh. Our addition, for seeds
        where two subnetworks share a circuit and another has none (notebook 07); `History.resampled` records each.
        Refused with labels (`source.active_circuits`); under torchrun every process re-seeds the same way.
    revive: the loss adds revive · R, R the revival term (`Decomposition.revival`) of the subnetworks that were
        dead in the epoch before (P_act = 0 in the History): with the others' residuals held fixed, the dead ones
        are trained to reconstruct them, so that they come back into BatchTopK's choice (our addition, the AuxK
        loss of TopK sparse autoencoders; measured in notebook 06). Only the dead subnetworks' parameters get its
        gradient; it costs a second projection of the batch on the steps where some are dead. 0: none. One
        decomposition, not a stack.

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
    An epoch whose per-sample gradients are all zero (Σ ||g||² = 0) stops training with `ZeroGradients`: there is
    nothing to decompose, and its error 0 / 0 would mean nothing.
    Under torchrun (l3d.runtime.distributed) every process runs fit on its share; only rank 0 writes checkpoints.
    """
    problems = []
    for make in (lambda: Schedule(epochs, lr, lr_decay, lr_decay_every, warm_start_epochs, silence, silence_from,
                                  resample_every, revive),
                 lambda: Checkpointing(None if checkpoint_dir is None else str(checkpoint_dir), checkpoint_every,
                                       keep_checkpoints, resume)):
        try:
            problems.append(make())
        except ValueError as e:
            problems.append(e)
    errors = [str(p) for p in problems if isinstance(p, ValueError)]
    if errors:
        raise ValueError("; ".join(errors))
    schedule, checkpointing = problems
    if config is not None and not isinstance(config, Mapping):
        raise TypeError(f"config must be a dict of the run's settings (e.g. L3DConfig.to_dict()) or None, got "
                        f"{type(config).__name__}")
    sources = check_sources(decomposition, source, schedule.resample_every)
    if schedule.revive and decomposition.members > 1:
        raise ValueError(f"revive={schedule.revive} trains one decomposition on a source without labels "
                         f"(active_circuits), got a stack of {decomposition.members} members")
    if schedule.revive and sources[0].active_circuits is not None:
        raise ValueError(f"revive={schedule.revive} needs a source without labels (active_circuits): the labels fix "
                         f"which subnetwork serves which circuit; set revive=0 with labels")
    with threads_for(sum(s.work for s in sources), threads), contextlib.ExitStack() as held:
        training = _Training(decomposition, sources, schedule, checkpointing, callback, config)
        training.start(held)
        training.run(progress)
        return training.histories[0] if decomposition.members == 1 else training.histories


class _Training:
    """The state of one `fit`: the decomposition, its sources, Adam and the schedule, the histories, where training
    stands (step, epoch, the sums of the epoch under way) and how to checkpoint and resume all of it."""

    def __init__(self, decomposition: Decomposition, sources: list[GradientSource], schedule: Schedule,
                 checkpointing: Checkpointing, callback: Callable | None, config: Mapping | None):
        self.decomposition, self.sources, self.schedule = decomposition, sources, schedule
        self.checkpointing, self.callback, self.members = checkpointing, callback, decomposition.members
        self.shard = sources[0].shard
        self.device = decomposition.decoder[0].core.device
        # fused Adam: one kernel for all parameters (CPU and CUDA)
        self.optimizer = torch.optim.Adam(decomposition.parameters(), lr=schedule.lr,
                                          fused=self.device.type in ("cpu", "cuda"))
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, step_size=schedule.lr_decay_every,
                                                         gamma=schedule.lr_decay)
        self.settings = self._settings(config)
        self.histories = [History() for _ in range(self.members)]
        self.step, self.epoch, self.sums = 0, 0, None

    def _settings(self, config: Mapping | None) -> dict:
        """What a checkpoint records and resuming compares: fit's settings, the decomposition's, and (only where a
        checkpoint is written) the gradients' and the inputs' fingerprints and the run's `config`."""
        s, source, recorded = self.schedule, self.sources[0], self.checkpointing.checkpoint_dir is not None
        return {
            "lr": s.lr, "lr_decay": s.lr_decay, "lr_decay_every": s.lr_decay_every,
            "warm_start_epochs": s.warm_start_epochs, "silence": s.silence, "silence_from": s.silence_from,
            "batch_size": source.batch_size, "chunk_size": source.chunk_size, "n_inputs": source.inputs.shape[0],
            **({"batch_references": True} if source.batch_references else {}),
            **({"resample_every": s.resample_every} if s.resample_every else {}),
            **({"revive": s.revive} if s.revive else {}),
            **({"shuffle": False} if not source.shuffle else {}),
            **({"drop_last": False} if not source.drop_last else {}),
            "decomposition": self.decomposition.config,
            "gradients": _one_or_list([gradient_settings(x.collector) for x in self.sources]) if recorded else None,
            "inputs": _one_or_list([fingerprint(x.inputs) for x in self.sources]) if recorded else None,
            "config": None if config is None else {k: v for k, v in config.items() if k != "epochs"},
        }

    # --- starting and resuming ----------------------------------------------------------------------
    def start(self, held: contextlib.ExitStack) -> None:
        """Take the checkpoint folder's lock, clear what killed runs left there, and resume from its newest intact
        checkpoint when asked (refusing a folder that holds one when not)."""
        folder = self.checkpointing.checkpoint_dir
        damaged = []
        if folder is not None:
            if Path(folder).exists() and not Path(folder).is_dir():
                raise NotADirectoryError(f"checkpoint_dir {folder!r} is a file: "
                                         "give a folder (new or holding checkpoints)")
            if self.shard.is_main:
                held.enter_context(exclusive(folder, "checkpoint_dir"))   # until fit returns
                remove_litter(folder)
            found = checkpoints(folder)
            if found and not self.checkpointing.resume:
                raise FileExistsError(f"{folder} already holds a checkpoint ({found[-1].name}); pass resume=True to "
                                      f"continue that run or choose an empty checkpoint_dir")
            newest, tensors, state, damaged = newest_intact(folder) if found else (None, {}, {}, [])
            if damaged:
                warnings.warn(f"skipped damaged checkpoint(s) {', '.join(f.name for f, _ in damaged)} in {folder} "
                              f"({'; '.join(e for _, e in damaged)}); resuming from {newest.name}; the damaged ones "
                              f"are renamed <name>.damaged", stacklevel=3)
            if newest is not None:
                self._resume(newest, tensors, state)
        self._agree_on_the_step()
        if self.shard.is_main:
            set_aside([f for f, _ in damaged])    # out of the rotation, kept for inspection
        distributed.broadcast_parameters_(self.decomposition)

    def _resume(self, found: Path, tensors: dict, state: dict) -> None:
        check_resumable(found, state["settings"], self.settings)
        if state["epoch"] > self.schedule.epochs:
            raise ResumeRefused(
                f"cannot resume {found}: it has done {state['epoch']} epochs, more than epochs={self.schedule.epochs}; "
                f"ask for epochs >= {state['epoch']} (the history of a finished run is in its last checkpoint)")
        self.decomposition.load_state_dict(tensors)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        for source, source_state in zip(self.sources, _as_list(state["source"], len(self.sources))):
            source.load_state_dict(source_state)
        set_rng_state(state["rng"])
        self.histories = [History.from_dict(h) for h in _as_list(state["history"], self.members)]
        self.step, self.epoch = state["step"], state["epoch"]
        if state["stats"] is not None:
            self.sums = self._new_sums()
            self.sums.load_state_dict(state["stats"])

    def _agree_on_the_step(self) -> None:
        """Under torchrun every process must continue from the same checkpoint (a folder they all see)."""
        if not self.shard.distributed:
            return
        steps, _ = distributed.gather_rows(torch.tensor([self.step], device=self.device))
        if not (steps == self.step).all():
            raise RuntimeError(f"the processes found different checkpoints in {self.checkpointing.checkpoint_dir} "
                               f"(steps {steps.tolist()}): checkpoint_dir must be a folder every process can read")

    def _new_sums(self) -> EpochSums:
        return EpochSums(self.decomposition.n_subnetworks, self.device, self.schedule.silence > 0, self.members)

    # --- training -----------------------------------------------------------------------------------
    def run(self, progress: bool) -> None:
        """Every epoch left, then wait for the other processes."""
        bar = tqdm(total=self.schedule.epochs, initial=self.epoch, desc="L3D",
                   disable=not progress or not self.shard.is_main)
        while self.epoch < self.schedule.epochs:
            self._epoch()
            error, p_act, _ = min(self._last_records(), key=lambda r: r[0])
            bar.set_postfix(error=f"{error:.3f}", dead=sum(p == 0 for p in p_act), refresh=False)
            bar.update(1)   # redraws at most every mininterval seconds, the postfix with it
        bar.close()
        distributed.barrier()

    def _epoch(self) -> None:
        """One epoch (or the rest of an interrupted one): resampling at its start, its steps, its record."""
        s = self.schedule
        top_k = 1.0 if self.epoch < s.warm_start_epochs else None
        silence = s.silence if self.epoch >= s.silence_from else 0.0    # the silence penalty's weight this epoch
        if s.resample_every and self.epoch and self.epoch % s.resample_every == 0 and self.sums is None:
            resample_members_(self.decomposition, self.sources, self.optimizer, self.histories, top_k, self.epoch)
        self.sums = self.sums or self._new_sums()
        for grads in epoch_batches(self.sources):
            parts = self._step(grads, top_k, silence)
            if self._checkpoint_due() and self.sources[0].batches_done < len(self.sources[0]):
                self._checkpoint()
            if self.callback is not None:
                self.callback(self.step, parts)
        self._end_epoch()

    def _step(self, grads, top_k: float | None, silence: float) -> LossParts:
        """One optimizer step on a batch: the loss (with the silence penalty silence · S, S the dropped energy),
        its gradient, Adam, decoder norms back to 1."""
        M = self.members
        parts = self.decomposition.loss(grads, top_k, distributed=self.shard.distributed,
                                        dropped_energy=self.schedule.silence > 0, mask=self._labels())
        summary = batch_summary(parts)                 # the whole batch's error, Σ||g||², active counts, [S]
        objective = parts.error + silence * parts.dropped_energy if silence else parts.error
        dead = self._dead() if top_k is None else None
        if dead is not None:      # the revival term of the subnetworks dead in the epoch before
            objective = objective + self.schedule.revive * self.decomposition.revival(
                grads, parts.mask, dead, distributed=self.shard.distributed)
        if M == 1:
            loss = objective / as_divisor(summary[1].to(parts.error.dtype))   # this process's part of the global loss
        else:    # the members' losses, each over its own Σ||g||²
            loss = (objective / as_divisor(parts.total)).sum()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        parameters = self.optimizer.param_groups[0]["params"]       # the decomposition's, without a walk of its modules
        distributed.sum_gradients_(parameters)
        self.step += 1
        grad_norms = torch._foreach_norm([p.grad for p in parameters if p.grad is not None])
        if not torch.isfinite(torch.cat([summary[:2 * M], torch.stack(grad_norms).double()])).all():  # one check
            _raise_non_finite(self, grads, summary)
        self.optimizer.step()
        self.decomposition.normalize_decoder_()
        self.sums.add(summary, parts.mask.shape[0] * self.shard.world_size)
        return parts

    def _labels(self) -> Tensor | None:
        """With labelled sources, the batch's coefficients to keep: (N, C), for a stack every member's its source's,
        (N, M·C) member-major; None without labels."""
        if self.sources[0].mask is None:
            return None
        if self.members == 1:
            return self.sources[0].mask
        return torch.cat([s.mask for s in self.sources for _ in range(self.members // len(self.sources))], dim=1)

    def _dead(self) -> Tensor | None:
        """With revive > 0, the subnetworks no sample selected in the epoch before, (C,) bool; None when there are
        none (or revive is 0, or no epoch is done)."""
        if not self.schedule.revive or not self.histories[0].p_act:
            return None
        dead = torch.tensor(self.histories[0].p_act[-1], device=self.device) == 0
        return dead if dead.any() else None

    def _end_epoch(self) -> None:
        """The epoch's record in every history, the learning rate's decay, and a checkpoint when one is due."""
        check_not_all_zero(self.sums, f"epoch {self.epoch}", [s.collector for s in self.sources])
        for history, (error, p_act, dropped) in zip(self.histories, self.sums.results()):
            history.append(error, self.scheduler.get_last_lr()[0], p_act, dropped)
        self.scheduler.step()
        self.epoch, self.sums = self.epoch + 1, None
        if self._checkpoint_due() or (self.checkpointing.checkpoint_dir is not None
                                      and self.epoch == self.schedule.epochs):
            self._checkpoint()

    def _last_records(self) -> list[tuple[float, list[float], None]]:
        return [(h.reconstruction_error[-1], h.p_act[-1], None) for h in self.histories]

    # --- checkpoints --------------------------------------------------------------------------------
    def _checkpoint_due(self) -> bool:
        every = self.checkpointing.checkpoint_every
        return self.checkpointing.checkpoint_dir is not None and bool(every) and self.step % every == 0

    def _checkpoint(self) -> None:
        """Write a checkpoint of everything training depends on (rank 0 only)."""
        if not self.shard.is_main:
            return
        state = {
            "settings": self.settings, "step": self.step, "epoch": self.epoch,
            "history": _one_or_list([h.to_dict() for h in self.histories]),
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "source": _one_or_list([s.state_dict() for s in self.sources]), "rng": rng_state(),
            "stats": None if self.sums is None else self.sums.state_dict(),
        }
        save_checkpoint(self.checkpointing.checkpoint_dir, self.step, self.decomposition, state,
                        keep=self.checkpointing.keep_checkpoints)


def _one_or_list(values: list):
    """A checkpoint's record of something per source or member: the one value, or the list."""
    return values[0] if len(values) == 1 else values


def _as_list(value, n: int) -> list:
    """Read `_one_or_list` back: a list of n values."""
    return list(value) if n > 1 else [value]


def _tensor_of(parameter_name: str, names: list[str]) -> str:
    """'decoder.1.factors.0' -> "decoder of tensor 'W_out' (decoder.1.factors.0)"."""
    part, index, *_ = parameter_name.split(".")
    return f"{part} of tensor {names[int(index)]!r} ({parameter_name})"


def _raise_non_finite(training: _Training, grads, summary: Tensor) -> None:
    """Find what is not finite after a step and raise a FloatingPointError naming it: the per-sample gradients, the
    decomposition's parameters, or the gradient of the loss (return if it was only a norm's overflow)."""
    decomposition, M, lr = training.decomposition, training.members, training.scheduler.get_last_lr()[0]
    where = f"step {training.step} (epoch {training.epoch})"
    if not torch.isfinite(summary[M:2 * M]).all():
        batches = grads if isinstance(grads, (list, tuple, StackedGradients)) else [grads]
        per_tensor = {}    # name -> (N, *shape), of every batch
        for batch in batches:
            per_tensor.update({n: g for n, g in (batch.dense().grads if hasattr(batch, "dense") else {}).items()
                               if not torch.isfinite(g).all()})
        named = f" of tensor(s) {', '.join(map(repr, per_tensor))}" if per_tensor else ""
        raise FloatingPointError(f"{where}: the per-sample gradients{named} are not finite (nan or inf); check the "
                                 f"model's outputs and the divergence on these inputs")
    parameters = list(decomposition.named_parameters())
    bad = [_tensor_of(n, decomposition.names) for n, p in parameters if not torch.isfinite(p).all()]
    if not torch.isfinite(summary[:M]).all() or bad:
        which = f"non-finite: {', '.join(bad)}"
        if not bad:  # overflow from finite but huge parameters: name the largest
            size, name = max((p.detach().abs().max().item(), n) for n, p in parameters)
            which = f"largest: {_tensor_of(name, decomposition.names)}, reaching {size:.3g}"
        raise FloatingPointError(f"{where}: the reconstruction error is not finite; the decomposition's parameters "
                                 f"diverged ({which}); try a lower learning rate than lr={lr}")
    bad = [_tensor_of(n, decomposition.names) for n, p in parameters
           if p.grad is not None and not torch.isfinite(p.grad).all()]
    if bad:
        raise FloatingPointError(f"{where}: the gradient of the loss is not finite for the {', '.join(bad)}; try a "
                                 f"lower learning rate than lr={lr}")
