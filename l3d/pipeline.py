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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from .decomposition import DECODER_NORM_RENAMES, DECODER_NORMS, Decomposition, LossParts
from .divergences import DIVERGENCE_RENAMES, DIVERGENCES, REFERENCES
from .fingerprints import fingerprint, gradient_settings
from .gradients import ENGINES, GradientCollector
from .history import History
from .initialize import init_from_gradients_
from .passes import evaluate
from .runtime.atomic import sha256_file, write_file
from .runtime.settings import Settings, bounded, same_as
from .runtime.validate import SEED_MAX
from .source import GradientSource
from .train import Schedule, fit

RUN = "run.json"
DECOMPOSITION_FILES = ("decomposition.safetensors", "config.json")   # Decomposition.save's


@dataclass(frozen=True)
class L3DConfig(Settings):
    """Every setting of one decomposition: the gradients, the subnetworks, the start and the training.

    n_subnetworks (C), rank (one Tucker rank for every mode, capped at the mode's size, or a dict of
    per-tensor ranks), top_k (BatchTopK's fraction, 0.1 in every paper experiment), decoder_norm ("unit", the
    paper, or "sum", the authors' code: see `Decomposition`).
    divergence, reference, engine: as `GradientCollector` ("mse", "output_times_residual" or "kl"; "random" is the
    paper's reference; engine "auto" factors what it can, "dense" materializes every per-sample gradient).
    The old spellings decoder_norm="authors" and divergence="mse_authors" are read as "sum" and
    "output_times_residual", with a DeprecationWarning.
    batch_size: items per step; chunk_size: items per gradient pass, references drawn within it (a
    multiple of batch_size; None: one batch), or within each batch with batch_references=True (the authors'
    code; the same references as chunk_size = batch_size, fewer passes); gradient_chunk_size: items per
    vectorized gradient computation inside a pass (memory only; None: a whole pass at once).
    lr × lr_decay every lr_decay_every epochs; the first warm_start_epochs keep every coefficient.
    silence, silence_from: the silence penalty's weight on the coefficients BatchTopK drops, and the epoch it
    starts (`fit`; silence 0 is the paper's loss).
    resample_every: every that many epochs the subnetwork the error needs least may be re-seeded where the
    residuals point (`fit`, `l3d.resample`; 0, the paper: never).
    revive: the weight of the revival term, which trains the subnetworks dead in the epoch before on what the
    others leave unexplained (`fit`, `Decomposition.revival`; 0, the paper: none); with restarts = 1.
    init: "random" (the paper) or "gradients" (`init_from_gradients_` on the gradients of the first
    init_samples inputs; None: all). restarts > 1: that many starts (seeds 1000·seed + r), trained together as one
    stack (`Decomposition.stack`): for restart_epochs epochs at constant lr, then the lowest-error one goes on
    alone; with restart_epochs None every start trains the whole schedule and the lowest final error is kept.
    Either way only the training error chooses (no labels).
    start_noise: every start's parameters p become p·(1 + start_noise·ε), ε ~ N(0, 1) drawn from start_noise_seed
    and the start's seed: a perturbation of the floating point (1e-6) that leaves the method as it is, for checking
    that a result does not hinge on the last bits (`l3d.experiments.stability`); 0: none.
    seed: every random draw of the run follows from it; the seeds derived from it (1000·seed + r, seed + 1) must
    stay within 0..2**64 - 1, what torch's generators take.
    """

    n_subnetworks: int = bounded(5, low=1)
    rank: int | dict = 1
    top_k: float = bounded(0.1, low=0, high=1, open_low=True)
    decoder_norm: str = bounded("unit", choices=DECODER_NORMS, renamed=DECODER_NORM_RENAMES)
    divergence: str = bounded("mse", choices=DIVERGENCES, renamed=DIVERGENCE_RENAMES)
    reference: str = bounded("random", choices=REFERENCES)
    engine: str = bounded("auto", choices=ENGINES)
    epochs: int = same_as(Schedule, "epochs")
    batch_size: int = bounded(32, low=1)
    chunk_size: int | None = bounded(None, low=1)
    batch_references: bool = False
    gradient_chunk_size: int | None = bounded(None, low=1)
    lr: float = same_as(Schedule, "lr")
    lr_decay: float = same_as(Schedule, "lr_decay")
    lr_decay_every: int = same_as(Schedule, "lr_decay_every")
    warm_start_epochs: int = same_as(Schedule, "warm_start_epochs")
    silence: float = same_as(Schedule, "silence")
    silence_from: int = same_as(Schedule, "silence_from")
    resample_every: int = same_as(Schedule, "resample_every")
    revive: float = same_as(Schedule, "revive")
    init: str = bounded("random", choices=("random", "gradients"))
    init_samples: int | None = bounded(None, low=1)
    restarts: int = bounded(1, low=1)
    restart_epochs: int | None = bounded(100, low=1)
    start_noise: float = bounded(0.0, low=0)
    start_noise_seed: int = bounded(0, low=0, high=SEED_MAX)
    seed: int = bounded(0, low=0, high=SEED_MAX)

    def schedule(self) -> Schedule:
        """How `fit` trains with these settings."""
        return Schedule(**{f.name: getattr(self, f.name) for f in dataclasses.fields(Schedule)})

    def new_decomposition(self, shapes: dict[str, tuple[int, ...]], seed: int | None) -> Decomposition:
        """An untrained decomposition of `shapes` (name -> shape) with these subnetworks, ranks, top_k and decoder
        scaling, started from `seed`."""
        return Decomposition(shapes, self.n_subnetworks, self.rank, self.top_k, seed=seed,
                             decoder_norm=self.decoder_norm)

    def check(self) -> list[str]:
        problems = []
        if isinstance(self.rank, int) and (isinstance(self.rank, bool) or self.rank < 1):
            problems.append(f"rank must be an int >= 1 or a dict of per-tensor ranks, got {self.rank!r}")
        if self.chunk_size is not None and self.chunk_size % self.batch_size:
            problems.append(f"chunk_size {self.chunk_size} must be a multiple of batch_size {self.batch_size}")
        if self.init_samples is not None and self.init != "gradients":
            problems.append(f"init_samples {self.init_samples} needs init='gradients', got init={self.init!r}")
        if self.revive and self.restarts > 1:
            problems.append(f"revive {self.revive} trains one decomposition: it needs restarts = 1, "
                            f"got {self.restarts}")
        derived = max(self.seed + 1, 1000 * self.seed + self.restarts - 1 if self.restarts > 1 else 0)
        if self.seed <= SEED_MAX and derived > SEED_MAX:
            problems.append(f"seed {self.seed} is too large: the seeds derived from it (seed + 1 for held-out "
                            f"references, 1000·seed + r for restarts) must stay within 0..2**64 - 1, what torch's "
                            f"generators take; use a seed below "
                            f"{(SEED_MAX - self.restarts) // 1000 if self.restarts > 1 else SEED_MAX}")
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
    # every start's decomposition and history, in start order, where all trained the whole schedule and the sweep
    # was asked to keep them (`sweep(keep_starts=True)`); [] otherwise
    starts: list[tuple[Decomposition, History]] = dataclasses.field(default_factory=list)
    start_index: int | None = None   # which of the starts this run is, when taken alone (`one_start`)

    def one_start(self, r: int = 0) -> Run:
        """Start r of this run's `restarts` alone, as one start drawn from seed 1000·seed + r trains it: its
        decomposition and history, with this run's settings, gradients and source (shared: evaluations draw its
        references in turn). The run must keep its starts (`sweep(keep_starts=True)`)."""
        if not self.starts:
            raise ValueError("this run kept no starts: use sweep(..., keep_starts=True) with restarts > 1 and "
                             "restart_epochs None (every start trains the whole schedule)")
        if not 0 <= r < len(self.starts):
            raise ValueError(f"r must be a start of this run, 0 to {len(self.starts) - 1}, got {r}")
        decomposition, history = self.starts[r]
        return dataclasses.replace(self, decomposition=decomposition, history=history, start_errors=[], starts=[],
                                   start_index=r)

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
        return evaluate(self.decomposition,
                        GradientSource(self.collector, inputs, batch_size, seed=seed, drop_last=False))

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
                  **({} if self.start_index is None else {"start_index": self.start_index}),
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
    keep_starts: bool = False,
) -> Run:
    """L3D of `model`'s `tensors` (names or globs) on `inputs` (items along dim 0) with `config`.

    sequence, forward: as `GradientCollector` (every position a sample; how to call the model).
    checkpoint_dir, checkpoint_every, resume, callback: as `fit` (a screen of starts is not checkpointed); every
    checkpoint records the whole config, and resuming refuses any difference from it (`epochs` may grow).
    keep_starts: as `sweep` (every start of restarts > 1 kept, `Run.one_start`).
    The decomposition takes the dtype of the decomposed tensors: float32 or float64 (half precision is refused,
    naming the conversion). Under torchrun every process calls decompose on the same inputs and trains on its
    share of each batch. Several decompositions at once: `sweep`.
    """
    return sweep([model], [inputs], tensors, [config], sequence=sequence, forward=forward, progress=progress,
                 checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every, resume=resume, callback=callback,
                 keep_starts=keep_starts)[0]


# settings a sweep's decompositions may differ in; every other one is shared, as they train as one program
PER_RUN = ("seed", "start_noise", "start_noise_seed")


def sweep(
    models: Sequence[nn.Module],
    inputs: Sequence[Tensor],
    tensors: str | list[str],
    configs: Sequence[L3DConfig],
    *,
    sequence: bool = False,
    forward: Callable[[nn.Module, Tensor], Tensor] | None = None,
    progress: bool = True,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    callback: Callable[[int, LossParts], None] | None = None,
    keep_starts: bool = False,
) -> list[Run]:
    """`decompose` of every (models[j], inputs[j], configs[j]) as one batched program: one Run each, equal (to
    floating-point rounding) to what `decompose` gives for it alone.

    The decompositions (and the restarts of each) are the members of one stack (`Decomposition.stack`), trained by
    one `fit` with a GradientSource per decomposition, so on small models S of them cost about what one costs.
    They must agree in every setting but those in PER_RUN (a seed, the start's perturbation), in the tensors'
    shapes and in the number of inputs; the models may differ (one trained toy per seed) or be the same.
    Several decompositions need dense gradients (engine "dense"; "auto" with only dense tensors) and one process.
    keep_starts: each Run keeps every start's decomposition and history (`Run.starts`, `Run.one_start`), for
    restarts > 1 with restart_epochs None (every start trains the whole schedule).
    """
    configs, models, inputs = list(configs), list(models), list(inputs)
    _check_sweep(models, inputs, configs)
    if keep_starts and (configs[0].restarts == 1 or configs[0].restart_epochs is not None):
        raise ValueError(f"keep_starts needs every start trained the whole schedule: restarts > 1 and restart_epochs "
                         f"None, got restarts {configs[0].restarts} and restart_epochs {configs[0].restart_epochs}")
    started = time.perf_counter()
    c = configs[0]
    collectors = [GradientCollector(m, tensors, divergence=c.divergence, reference=c.reference, sequence=sequence,
                                    forward=forward, gradient_chunk_size=c.gradient_chunk_size or x.shape[0],
                                    engine=c.engine)
                  for m, x in zip(models, inputs)]
    dtype = _decomposition_dtype(collectors[0])
    sources = [GradientSource(col, x, cfg.batch_size, chunk_size=cfg.chunk_size, seed=cfg.seed,
                              batch_references=cfg.batch_references)
               for col, x, cfg in zip(collectors, inputs, configs)]
    fingerprints = [{"gradients": gradient_settings(col), "inputs": fingerprint(x)}
                    for col, x in zip(collectors, inputs)]
    starts = [_starts(cfg, col, x, dtype) for cfg, col, x in zip(configs, collectors, inputs)]   # J lists of R
    J, R = len(configs), c.restarts
    train = dict(progress=progress, checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every, resume=resume,
                 callback=callback, config=c.to_dict() if J == 1 else {"sweep": [cfg.to_dict() for cfg in configs]})
    schedule = c.schedule()
    start_errors: list[list[float]] = [[] for _ in range(J)]
    kept: list[list[tuple[Decomposition, History]]] = [[] for _ in range(J)]
    if R > 1 and c.restart_epochs is not None:      # a short screen of all starts, then the best of each goes on
        screen = Schedule(epochs=c.restart_epochs, lr=c.lr, lr_decay=1.0, lr_decay_every=max(c.restart_epochs, 1))
        screened = _fit_all([d for job in starts for d in job], sources, screen, progress=False)
        errors = [h.reconstruction_error[-1] for h in screened[1]]
        start_errors = [errors[j * R:(j + 1) * R] for j in range(J)]
        chosen = [screened[0][j * R + min(range(R), key=start_errors[j].__getitem__)] for j in range(J)]
        decompositions, histories = _fit_all(chosen, sources, schedule, **train)
    elif R > 1:                                      # every start the whole schedule; the best of each is kept
        members, trained = _fit_all([d for job in starts for d in job], sources, schedule, **train)
        start_errors = [[h.reconstruction_error[-1] for h in trained[j * R:(j + 1) * R]] for j in range(J)]
        best = [j * R + min(range(R), key=start_errors[j].__getitem__) for j in range(J)]
        decompositions, histories = [members[b] for b in best], [trained[b] for b in best]
        if keep_starts:
            kept = [list(zip(members[j * R:(j + 1) * R], trained[j * R:(j + 1) * R])) for j in range(J)]
    else:
        decompositions, histories = _fit_all([job[0] for job in starts], sources, schedule, **train)
    seconds = time.perf_counter() - started
    return [Run(cfg, d, h, col, src, errs, seconds, fp, keep) for cfg, d, h, col, src, errs, fp, keep in
            zip(configs, decompositions, histories, collectors, sources, start_errors, fingerprints, kept)]


def _check_sweep(models: list, inputs: list, configs: list) -> None:
    """A TypeError or ValueError naming what a sweep's decompositions do not share."""
    if not configs or not all(isinstance(c, L3DConfig) for c in configs):
        raise TypeError("configs must be a non-empty list of l3d.L3DConfig (decompose: config must be an L3DConfig)")
    if len(models) != len(configs) or len(inputs) != len(configs):
        raise ValueError(f"models, inputs and configs must have one entry per decomposition, got {len(models)}, "
                         f"{len(inputs)} and {len(configs)}")
    for x in inputs:
        if not isinstance(x, Tensor) or x.dim() == 0:
            raise TypeError(f"inputs must be a tensor with items along dim 0, got {type(x).__name__}"
                            + (" of 0 dimensions" if isinstance(x, Tensor) else ""))
        if configs[0].batch_size > x.shape[0]:
            raise ValueError(f"batch_size {configs[0].batch_size} must not exceed the {x.shape[0]} inputs")
    if len({x.shape[0] for x in inputs}) > 1:
        raise ValueError(f"inputs: a sweep's decompositions need as many inputs each, "
                         f"got {[x.shape[0] for x in inputs]}")
    shared = [{k: v for k, v in c.to_dict().items() if k not in PER_RUN} for c in configs]
    for j, other in enumerate(shared[1:], start=1):
        differ = sorted(k for k in shared[0] if shared[0][k] != other[k])
        if differ:
            raise ValueError(f"configs[{j}] differs from configs[0] in {differ}: a sweep's decompositions share every "
                             f"setting but {list(PER_RUN)}")


def _starts(config: L3DConfig, collector: GradientCollector, inputs: Tensor, dtype: torch.dtype) -> list[Decomposition]:
    """The config's starts: one (seed config.seed), or `restarts` (seeds 1000·seed + r); from the gradients of the
    first init_samples inputs with init "gradients"; perturbed by start_noise."""
    grads = None
    if config.init == "gradients":
        grads = collector(inputs[: config.init_samples], generator=torch.Generator().manual_seed(config.seed))
    seeds = [config.seed] if config.restarts == 1 else [1000 * config.seed + r for r in range(config.restarts)]
    starts = []
    for seed in seeds:
        decomposition = config.new_decomposition(collector.shapes, seed).to(inputs.device, dtype)
        if grads is not None:
            init_from_gradients_(decomposition, grads, seed=seed)
        if config.start_noise:
            generator = torch.Generator().manual_seed((seed * 1_000_003 + config.start_noise_seed) % SEED_MAX)
            with torch.no_grad():
                for p in decomposition.parameters():
                    noise = torch.randn(p.shape, generator=generator, dtype=torch.float64).to(p.device, p.dtype)
                    p.mul_(1 + config.start_noise * noise)
        starts.append(decomposition)
    return starts


def _fit_all(decompositions: list[Decomposition], sources: list[GradientSource], schedule: Schedule,
             **options) -> tuple[list[Decomposition], list[History]]:
    """Train the decompositions (members split evenly over the sources, in order) on `schedule` as one stack; each
    trained decomposition and its History, in order. One decomposition trains as itself (no stack)."""
    if len(decompositions) == 1:
        return decompositions, [fit(decompositions[0], sources[0], **schedule.to_dict(), **options)]
    stack = Decomposition.stack(decompositions)
    histories = fit(stack, sources, **schedule.to_dict(), **options)
    return stack.unstack(), histories


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
