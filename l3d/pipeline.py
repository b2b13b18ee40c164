"""One pipeline: from a model, its inputs and the tensors to decompose, to a fitted, saved decomposition.

    config = l3d.L3DConfig(n_subnetworks=5, rank=1, top_k=0.1, epochs=1000, lr=0.01)
    run = l3d.decompose(model, inputs, ["W_in", "W_out", "b"], config)
    run.history.reconstruction_error[-1], run.evaluate(test_inputs), run.save("runs/tms")

Steps: a `GradientCollector` (per-sample divergence gradients of the chosen tensors), a
`GradientSource` (batches with fresh references every epoch), the start (random directions, or
per-sample gradients picked k-means++ style; `restarts` starts screened on the paper's loss), `fit`,
and a `Run` holding all of it with its settings. Notebooks, the command line (`python -m l3d`), the
toy experiments and the benchmarks all decompose through `decompose`.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from .decomposition import DECODER_NORMS, Decomposition, LossParts
from .divergences import DIVERGENCES, REFERENCES
from .gradients import ENGINES, GradientCollector
from .initialize import best_start, init_from_gradients_
from .runtime.atomic import sha256_file, write_file
from .runtime.settings import Settings, bounded
from .runtime.validate import SEED_MAX
from .train import GradientSource, History, evaluate, fingerprint, fit, gradient_settings

RUN = "run.json"
DECOMPOSITION_FILES = ("decomposition.safetensors", "config.json")   # Decomposition.save's


@dataclass(frozen=True)
class L3DConfig(Settings):
    """Every setting of one decomposition: the gradients, the subnetworks, the start and the training.

    n_subnetworks (C), rank (one Tucker rank for every mode, capped at the mode's size, or a dict of
    per-tensor ranks), top_k (BatchTopK's fraction, 0.1 in every paper experiment), decoder_norm ("unit", the
    paper, or "authors": see `Decomposition`).
    divergence, reference, engine: as `GradientCollector` ("mse", "mse_authors" or "kl"; "random" is the paper's
    reference; engine "auto" factors what it can, "dense" materializes every per-sample gradient).
    batch_size: items per step; chunk_size: items per gradient pass, references drawn within it (a
    multiple of batch_size; None: one batch), or within each batch with batch_references=True (the authors'
    code; the same references as chunk_size = batch_size, fewer passes); gradient_chunk_size: items per
    vectorized gradient computation inside a pass (memory only; None: a whole pass at once).
    lr × lr_decay every lr_decay_every epochs; the first warm_start_epochs keep every coefficient.
    silence, silence_from: the penalty on the coefficients BatchTopK drops (`fit`; 0 is the paper's loss).
    resample_every: every that many epochs the subnetwork the error needs least may be re-seeded where the
    residuals point (`fit`, `l3d.resample`; 0, the paper: never).
    init: "random" (the paper) or "gradients" (`init_from_gradients_` on the gradients of the first
    init_samples inputs; None: all). restarts > 1: that many starts (seeds 1000·seed + r) are trained for
    restart_epochs at constant lr and the lowest-error one goes on (`best_start`; no labels involved).
    seed: every random draw of the run follows from it; the seeds derived from it (1000·seed + r, seed + 1) must
    stay within 0..2**64 - 1, what torch's generators take.
    """

    n_subnetworks: int = bounded(5, low=1)
    rank: int | dict = 1
    top_k: float = bounded(0.1, low=0, high=1, open_low=True)
    decoder_norm: str = bounded("unit", choices=DECODER_NORMS)
    divergence: str = bounded("mse", choices=DIVERGENCES)
    reference: str = bounded("random", choices=REFERENCES)
    engine: str = bounded("auto", choices=ENGINES)
    epochs: int = bounded(1000, low=1)
    batch_size: int = bounded(32, low=1)
    chunk_size: int | None = bounded(None, low=1)
    batch_references: bool = False
    gradient_chunk_size: int | None = bounded(None, low=1)
    lr: float = bounded(0.01, low=0, open_low=True)
    lr_decay: float = bounded(0.8, low=0, high=1, open_low=True)
    lr_decay_every: int = bounded(100, low=1)
    warm_start_epochs: int = bounded(0, low=0)
    silence: float = bounded(0.0, low=0)
    silence_from: int = bounded(0, low=0)
    resample_every: int = bounded(0, low=0)
    init: str = bounded("random", choices=("random", "gradients"))
    init_samples: int | None = bounded(None, low=1)
    restarts: int = bounded(1, low=1)
    restart_epochs: int = bounded(100, low=1)
    seed: int = bounded(0, low=0, high=SEED_MAX)

    def new_decomposition(self, shapes: dict[str, tuple[int, ...]], seed: int | None) -> Decomposition:
        """An untrained decomposition of `shapes` (name -> shape) with these subnetworks, ranks, top_k and decoder
        scaling, started from `seed`."""
        return Decomposition(shapes, self.n_subnetworks, self.rank, self.top_k, seed=seed, decoder_norm=self.decoder_norm)

    def check(self) -> list[str]:
        problems = []
        if isinstance(self.rank, int) and (isinstance(self.rank, bool) or self.rank < 1):
            problems.append(f"rank must be an int >= 1 or a dict of per-tensor ranks, got {self.rank!r}")
        if self.chunk_size is not None and self.chunk_size % self.batch_size:
            problems.append(f"chunk_size {self.chunk_size} must be a multiple of batch_size {self.batch_size}")
        if self.init_samples is not None and self.init != "gradients":
            problems.append(f"init_samples {self.init_samples} needs init='gradients', got init={self.init!r}")
        derived = max(self.seed + 1, 1000 * self.seed + self.restarts - 1 if self.restarts > 1 else 0)
        if self.seed <= SEED_MAX and derived > SEED_MAX:
            problems.append(f"seed {self.seed} is too large: the seeds derived from it (seed + 1 for held-out "
                            f"references, 1000·seed + r for restarts) must stay within 0..2**64 - 1, what torch's "
                            f"generators take; use a seed below {(SEED_MAX - self.restarts) // 1000 if self.restarts > 1 else SEED_MAX}")
        return problems

    def replace(self, **changes) -> L3DConfig:
        """A copy with some settings changed (checked again)."""
        return dataclasses.replace(self, **changes)


@dataclass
class Run:
    """A fitted decomposition with everything that made it: settings, gradients, data, history."""

    config: L3DConfig
    decomposition: Decomposition
    history: History
    collector: GradientCollector
    source: GradientSource
    start_errors: list[float]   # last-epoch error of each screened start ([] with one start)
    seconds: float
    # what the result depends on besides config: "gradients" (`gradient_settings`: the tensors, the gradients'
    # settings, the model's fingerprint) and "inputs" (the training inputs' `fingerprint`), taken before training
    fingerprints: dict = dataclasses.field(default_factory=dict)

    def evaluate(self, inputs: Tensor | None = None, seed: int | None = None) -> dict:
        """Reconstruction error, P_act and dead subnetworks over one pass without training: of the training
        source (inputs None; its references go on from where training left them) or of every one of the held-out
        `inputs` (batches of config.batch_size in a shuffled order, the last one smaller: `GradientSource`'s
        drop_last=False; references drawn with `seed`, default config.seed + 1)."""
        if inputs is None:
            return evaluate(self.decomposition, self.source)
        if not isinstance(inputs, Tensor) or inputs.dim() == 0:
            raise TypeError(f"inputs must be a tensor with items along dim 0, got {type(inputs).__name__}")
        batch_size = min(self.config.batch_size, inputs.shape[0])
        seed = self.config.seed + 1 if seed is None else seed
        return evaluate(self.decomposition, GradientSource(self.collector, inputs, batch_size, seed=seed, drop_last=False))

    def save(self, folder: str | os.PathLike) -> Path:
        """The decomposition (`Decomposition.load(folder)` reads it) and run.json in `folder`: every setting
        (config, the gradients' settings with the model's fingerprint, the inputs' fingerprint), the screened
        starts' errors, the history, and the SHA-256 of the decomposition's two files.

        run.json is written last, and `Decomposition.load` checks the decomposition against the hashes it records,
        so a save cut short (a full disk, a kill) leaves the folder loading as it was or refusing to load, never a
        new decomposition beside the old record. (A run.json from before the hashes is given them first.)
        """
        folder = Path(folder)
        _seal(folder)
        self.decomposition.save(folder)
        record = {"config": self.config.to_dict(), **self.fingerprints, "start_errors": self.start_errors,
                  "history": self.history.to_dict(), "sha256": _hashes(folder)}
        write_file(folder / RUN, lambda f: Path(f).write_text(json.dumps(record, indent=1)))
        return folder


def _hashes(folder: Path) -> dict[str, str]:
    """The SHA-256 of the decomposition's files in `folder` (those that exist)."""
    return {name: sha256_file(folder / name) for name in DECOMPOSITION_FILES if (folder / name).exists()}


def _seal(folder: Path) -> None:
    """Before a save changes `folder`: give a run.json written without hashes (by an earlier l3d) the hashes of the
    decomposition files beside it, so that a save cut short cannot leave them to load under it."""
    path = folder / RUN
    if not path.is_file():
        return
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return   # unreadable: Decomposition.load refuses the folder already
    if isinstance(record, dict) and "sha256" not in record:
        record["sha256"] = _hashes(folder)
        write_file(path, lambda f: Path(f).write_text(json.dumps(record, indent=1)))


def decompose(
    model: nn.Module,
    inputs: Tensor,
    tensors: str | list[str],
    config: L3DConfig,
    *,
    sequence: bool = False,
    forward: Callable[[nn.Module, Tensor], Tensor] | None = None,
    progress: bool = True,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    callback: Callable[[int, LossParts], None] | None = None,
) -> Run:
    """L3D of `model`'s `tensors` (names or globs) on `inputs` (items along dim 0) with `config`.

    sequence, forward: as `GradientCollector` (every position a sample; how to call the model).
    checkpoint_dir, checkpoint_every, resume, callback: as `fit` (the screen of starts is not checkpointed); every
    checkpoint records the whole config, and resuming refuses any difference from it (`epochs` may grow).
    The decomposition takes the dtype of the decomposed tensors: float32 or float64 (half precision is refused,
    naming the conversion). Under torchrun every process calls decompose on the same inputs and trains on its
    share of each batch.
    """
    if not isinstance(config, L3DConfig):
        raise TypeError(f"config must be an l3d.L3DConfig, got {type(config).__name__}")
    if not isinstance(inputs, Tensor) or inputs.dim() == 0:
        raise TypeError(f"inputs must be a tensor with items along dim 0, got {type(inputs).__name__}"
                        + (" of 0 dimensions" if isinstance(inputs, Tensor) else ""))
    started = time.perf_counter()
    n = inputs.shape[0]
    if config.batch_size > n:
        raise ValueError(f"batch_size {config.batch_size} must not exceed the {n} inputs")
    collector = GradientCollector(model, tensors, divergence=config.divergence, reference=config.reference,
                                  sequence=sequence, forward=forward, chunk_size=config.gradient_chunk_size or n,
                                  engine=config.engine)
    dtype = _decomposition_dtype(collector)
    source = GradientSource(collector, inputs, config.batch_size, chunk_size=config.chunk_size, seed=config.seed,
                            batch_references=config.batch_references)
    fingerprints = {"gradients": gradient_settings(collector), "inputs": fingerprint(inputs)}
    start_inputs = inputs[: config.init_samples] if config.init == "gradients" else None
    start_grads = None if start_inputs is None else collector(start_inputs, generator=torch.Generator().manual_seed(config.seed))

    def make(seed: int) -> Decomposition:
        decomposition = config.new_decomposition(collector.shapes, seed).to(inputs.device, dtype)
        if start_grads is not None:
            init_from_gradients_(decomposition, start_grads, seed=seed)
        return decomposition

    if config.restarts > 1:
        decomposition, start_errors = best_start(make, source, config.restarts, config.restart_epochs, lr=config.lr,
                                                 seed=1000 * config.seed)
    else:
        decomposition, start_errors = make(config.seed), []
    history = fit(decomposition, source, config.epochs, config.lr, config.lr_decay, config.lr_decay_every,
                  config.warm_start_epochs, progress, silence=config.silence, silence_from=config.silence_from,
                  resample_every=config.resample_every,
                  checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every, resume=resume,
                  callback=callback, config=config.to_dict())
    return Run(config, decomposition, history, collector, source, start_errors, time.perf_counter() - started,
               fingerprints)


def _decomposition_dtype(collector: GradientCollector) -> torch.dtype:
    """The dtype the decomposition takes: that of the model's decomposed tensors (float32 or float64); a ValueError
    naming the tensors for several dtypes and for half precision."""
    dtypes = {name: p.dtype for name, p in collector.params.items()}
    if len(set(dtypes.values())) > 1:
        raise ValueError(f"tensors: the decomposed tensors have several dtypes "
                         f"({', '.join(f'{n}: {d}' for n, d in dtypes.items())}); decompose tensors of one dtype, or "
                         f"convert the model, e.g. model.float()")
    dtype = next(iter(dtypes.values()))
    if dtype not in (torch.float32, torch.float64):
        why = (f"in {dtype} the reconstruction error, a difference of sums of squared per-sample gradients, keeps "
               f"about {round(-math.log10(torch.finfo(dtype).eps))} digits" if dtype.is_floating_point else
               f"{dtype} tensors have no gradients")
        raise ValueError(f"tensors: the decomposed tensors are {dtype}; L3D decomposes float32 and float64 models (the "
                         f"decomposition takes the model's dtype, and {why}). Convert the model and the inputs first, "
                         f"e.g. model.float() and inputs.float()")
    return dtype
