"""What the toy notebooks (01-04) share: their settings, the toy models trained per seed, the L3D samples,
the decomposition of each seed's toy, and medians over seeds.

A notebook's settings are one `ToyExperiment` subclass built from its papermill parameters
(`Settings.from_parameters(globals())`): the toy's training (`toy_*` parameters), the L3D samples, the
decomposition (`L3DConfig`, parameters under their own names) and what the notebook itself adds.

Notebooks 02-04 build one of two variants of their toy (`VariantExperiment.variant`): "authors", the model the
authors' code trained and decomposed for the paper's figures, or "paper_text", the model the paper's text
describes. Settings whose default depends on the variant (how the toy is trained, which gradient and which
samples L3D sees) are parameters set to None, "the variant's convention" (`VariantExperiment.CONVENTIONS`);
`from_parameters` resolves them, so the settings and metrics.json hold the values the run used, and
`VariantExperiment.conventional` names them. The variant's parameter was once called `toy` (and notebook 04's
`compare_variant` `compare_toy`): `from_parameters` still reads the old names, with a DeprecationWarning.
"""
from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..decomposition import Decomposition
from ..pipeline import L3DConfig, Run, decompose, sweep
from ..runtime.medians import median
from ..runtime.settings import Settings, bounded
from ..runtime.validate import renamed_parameters
from ..train import GradientSource
from .ground_truth import Recovery, evaluate_and_recover, mmcs
from .stability import perturbed
from .toys import AUTHORS_CONVENTIONS, VARIANTS, sparse_features, train_toys_best_of


@dataclass(frozen=True)
class ToyTraining(Settings):
    """How each seed's toy is trained (the paper: 10,000 samples, each feature on with probability p_active,
    1000 epochs of batch 32, AdamW lr 1e-3; the authors' code: weight decay 1e-3, a global batch of 128).
    restarts: initializations per seed, the lowest final training loss is kept (paper: 1). compile:
    torch.compile the training step (same result, faster)."""

    p_active: float = bounded(0.05, low=0, high=1, open_low=True, unprefixed=True)
    n_train: int = bounded(10_000, low=32, unprefixed=True)
    epochs: int = bounded(1000, low=1)
    batch_size: int = bounded(32, low=1)
    lr: float = bounded(1e-3, low=0, open_low=True)
    weight_decay: float = bounded(0.01, low=0)
    restarts: int = bounded(4, low=1)
    compile: bool = True


@dataclass(frozen=True)
class ToyExperiment(Settings):
    """Settings every toy notebook has: one toy and one decomposition per seed (figures show `seed`),
    n_samples L3D samples per seed (drop_zero_inputs: without all-zero inputs), the toy's training and L3D.
    reference_pool: where a sample's reference is drawn from, "samples" (all n_samples: one gradient pass
    per epoch) or "batch" (its own batch, as the authors' code).
    perturbations, perturbation: the stability check (`l3d.experiments.stability`): every decomposition is run again
    `perturbations` times with the toy's weights and the start perturbed by a relative `perturbation`."""

    seeds: list[int] = dataclasses.field(default_factory=lambda: [0, 1, 2, 3, 4])
    seed: int = bounded(0, low=0)
    device: str = bounded("auto", choices=("auto", "cpu", "cuda"))
    out_dir: str = "figures"
    n_samples: int = bounded(1000, low=2)
    drop_zero_inputs: bool = False
    reference_pool: str = bounded("samples", choices=("samples", "batch"))
    perturbations: int = bounded(3, low=0)
    perturbation: float = bounded(1e-6, low=0, open_low=True)
    training: ToyTraining = dataclasses.field(default_factory=ToyTraining, metadata={"prefix": "toy_"})
    l3d: L3DConfig = dataclasses.field(default_factory=L3DConfig)

    def check(self) -> list[str]:
        problems = []
        if not self.seeds or self.seed not in self.seeds:
            problems.append(f"seed {self.seed} must be one of seeds {self.seeds}")
        if any(s < 0 for s in self.seeds):
            problems.append(f"seeds must be ints >= 0, got {self.seeds}")
        if self.l3d.batch_size > self.n_samples:
            problems.append(f"batch_size {self.l3d.batch_size} must not exceed n_samples {self.n_samples}")
        return problems

    def l3d_config(self, seed: int, **changes) -> L3DConfig:
        """The decomposition's settings for one seed: all n_samples inputs in one gradient pass per epoch, the
        references drawn within each batch when reference_pool is "batch", unless `changes` (other L3DConfig
        settings) say otherwise."""
        batch = changes.get("batch_size", self.l3d.batch_size)
        return self.l3d.replace(**{"seed": seed, "chunk_size": self.n_samples // batch * batch,
                                   "batch_references": self.reference_pool == "batch", **changes})


@dataclass(frozen=True)
class VariantExperiment(ToyExperiment):
    """A toy notebook whose toy comes in the variants `toys.VARIANTS`: variant "authors" (the default: the
    authors' code made the paper's figures) or "paper_text" (the paper's text).

    Subclasses set TOY ("tmcs", "high_rank", "square") and CONVENTIONS: per variant, parameter name -> value for
    the parameters that take the variant's convention when given as None (or not given). The authors' variant
    shares `AUTHORS_CONVENTIONS`: their gradient ("output_times_residual"), references drawn from the same batch
    ("random_or_self", reference_pool "batch"), their decoder scaling (decoder_norm "sum"), L3D samples
    without all-zero inputs, their warm start, toys
    trained once with AdamW weight decay 1e-3 in batches of 128, and engine "dense" (faster on these tiny
    models, same result). The paper_text variant shares our earlier choices: the text's gradient ("mse"), a
    reference from all samples, the best of 4 toy initializations, weight decay 0.01, batches of 32, and engine
    "dense" too (the gradients "auto" gives, and what a sweep of several toys needs).
    conventional: the parameters that took the variant's convention.
    RENAMED: old parameter name -> new, still read by `from_parameters` with a DeprecationWarning.
    """

    TOY: ClassVar[str] = ""
    CONVENTIONS: ClassVar[dict[str, dict[str, Any]]] = {}
    RENAMED: ClassVar[dict[str, str]] = {"toy": "variant"}

    variant: str = bounded("authors", choices=VARIANTS)
    conventional: list[str] = dataclasses.field(default_factory=list)

    @classmethod
    def conventions(cls, variant: str) -> dict[str, Any]:
        """Parameter name -> value for the parameters whose default is `variant`'s convention."""
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {list(VARIANTS)}, got {variant!r}")
        shared = {"authors": authors_parameters(AUTHORS_CONVENTIONS.warm_start_epochs[cls.TOY]),
                  "paper_text": {"toy_weight_decay": 0.01, "toy_batch_size": 32, "toy_restarts": 4, "divergence": "mse",
                                 "reference": "random", "reference_pool": "samples", "engine": "dense",
                                 "decoder_norm": "unit"}}
        return {**shared[variant], **cls.CONVENTIONS[variant]}

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, Any], **fixed: Any):
        """As `Settings.from_parameters`, with every parameter of the variant's conventions that is None or absent
        replaced by its convention (`conventions`), and those parameters listed in `conventional`. A parameter
        under its old name (`RENAMED`) is read under the new one, with a DeprecationWarning."""
        parameters = renamed_parameters(parameters, cls.RENAMED)
        convention = cls.conventions(parameters.get("variant", cls.variant))   # refuses an unknown one, naming all
        taken = [name for name in convention if parameters.get(name) is None]
        resolved = {**parameters, **{name: convention[name] for name in taken}}
        return super().from_parameters(resolved, conventional=sorted(taken), **fixed)

    def parameters(self) -> dict[str, Any]:
        """The papermill parameters that give these settings (nested settings under their parameter names), with
        the conventional ones None: `type(self).from_parameters(self.parameters())` gives these settings again."""
        values = parameters_of(self)
        values.pop("conventional")
        return {**values, **{name: None for name in self.conventional}}

    def for_variant(self, variant: str) -> VariantExperiment:
        """The same settings for the other variant: every conventional parameter takes `variant`'s convention."""
        return type(self).from_parameters({**self.parameters(), "variant": variant})


def authors_parameters(warm_start_epochs: int) -> dict[str, Any]:
    """Parameter name -> value for a toy run as the authors' code runs it (`toys.AUTHORS_CONVENTIONS`; their toys
    trained once, engine "dense": the same gradients, faster on these tiny models), with their warm start for
    that toy."""
    a = AUTHORS_CONVENTIONS
    return {"toy_weight_decay": a.toy_weight_decay, "toy_batch_size": a.toy_batch_size, "toy_restarts": 1,
            "drop_zero_inputs": a.drop_zero_inputs, "divergence": a.divergence, "reference": a.reference,
            "reference_pool": a.reference_pool, "warm_start_epochs": warm_start_epochs, "engine": "dense",
            "decoder_norm": a.decoder_norm}


def parameters_of(settings: Settings) -> dict[str, Any]:
    """The papermill parameters that give `settings` (nested settings under their parameter names)."""
    return _parameters(settings, "")


def _parameters(settings: Settings, prefix: str) -> dict[str, Any]:
    """Parameter name -> value of every field of `settings`, nested settings flattened as `from_parameters` reads
    them."""
    hints = typing.get_type_hints(type(settings))
    values = {}
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if isinstance(hints[f.name], type) and issubclass(hints[f.name], Settings):
            values.update(_parameters(value, f.metadata.get("prefix", "")))
        else:
            values[f.name if f.metadata.get("unprefixed") else prefix + f.name] = value
    return values

def train_seed_toys(settings: ToyExperiment, build: Callable[[], nn.Module],
                    data: Callable[[torch.Generator], tuple[Tensor, Tensor]],
                    device: torch.device) -> tuple[list[nn.Module], list[list[float]], list[tuple[Tensor, Tensor]]]:
    """One trained toy per seed: data(generator seeded 10,000 + seed) gives its (inputs, targets); the best of
    settings.training.restarts initializations is kept. Returns the models, their epoch losses and the data."""
    data_sets = [tuple(t.to(device) for t in data(torch.Generator().manual_seed(10_000 + s))) for s in settings.seeds]
    t = settings.training
    models, losses = train_toys_best_of(build, data_sets, settings.seeds, t.restarts, epochs=t.epochs,
                                        batch_size=t.batch_size, lr=t.lr, weight_decay=t.weight_decay,
                                        compile=t.compile)
    return models, losses, data_sets


def l3d_samples(settings: ToyExperiment, seed: int, n_features: int, low: float = 0.0, high: float = 1.0) -> Tensor:
    """The n_samples inputs L3D decomposes for `seed` (generator seeded 20,000 + seed), each feature on with
    probability p_active, uniform on [low, high]; all-zero inputs kept unless drop_zero_inputs."""
    return sparse_features(settings.n_samples, n_features, settings.training.p_active, low=low, high=high,
                           generator=torch.Generator().manual_seed(20_000 + seed), drop_zero=settings.drop_zero_inputs)


def decompose_toy(settings: ToyExperiment, model: nn.Module, inputs: Tensor, seed: int, tensors: str | list[str] = "*",
                  progress: bool = True, **changes) -> Run:
    """`l3d.decompose` of one seed's toy with the notebook's L3D settings (`changes` override some)."""
    return decompose(model, inputs, tensors, settings.l3d_config(seed, **changes), progress=progress)


def decompose_toys(settings: ToyExperiment, models: Sequence[nn.Module], inputs: Sequence[Tensor],
                   tensors: str | list[str] = "*", progress: bool = True, stability: bool = True,
                   keep_starts: bool = False, **changes) -> tuple[list[Run], list[list[Run]]]:
    """Every seed's toy (models[i] on inputs[i], seed settings.seeds[i]) decomposed with the notebook's L3D settings
    (`changes` override some), and with stability, settings.perturbations more times with the toy and the start
    perturbed (`l3d.experiments.stability`): all of it one `l3d.sweep` (keep_starts: as its). Returns the runs, one
    per seed, and per perturbation the perturbed runs in the same order."""
    reruns = settings.perturbations if stability else 0
    models_, inputs_, configs = [], [], []
    for p in range(reruns + 1):
        scale = settings.perturbation if p else 0.0
        for seed, model, x in zip(settings.seeds, models, inputs):
            models_.append(perturbed(model, scale, 1000 * seed + p))
            inputs_.append(x)
            configs.append(settings.l3d_config(seed, start_noise=scale, start_noise_seed=p, **changes))
    runs = sweep(models_, inputs_, tensors, configs, progress=progress, keep_starts=keep_starts)
    n = len(settings.seeds)
    return runs[:n], [runs[p * n:(p + 1) * n] for p in range(1, reruns + 1)]


def keeps_starts(config: L3DConfig) -> bool:
    """Whether a sweep with `config` can keep its starts as one-start runs (`sweep(keep_starts=True)`): restarts > 1,
    every start trained the whole schedule (restart_epochs None)."""
    return config.restarts > 1 and config.restart_epochs is None


def first_starts(runs: Sequence[Run], reruns: Sequence[Sequence[Run]]) -> tuple[list[Run], list[list[Run]]]:
    """Start 0 of every run and of every perturbed rerun (`Run.one_start`): one random start per decomposition, the
    authors' procedure, from a `decompose_toys` sweep that kept its starts."""
    return [r.one_start(0) for r in runs], [[r.one_start(0) for r in rerun] for rerun in reruns]


RunsAndReruns = tuple[list[Run], list[list[Run]]]


def with_one_start(config: L3DConfig, single_start: bool,
                   decompose_all: Callable[..., RunsAndReruns]) -> tuple[RunsAndReruns, RunsAndReruns]:
    """The runs and reruns of `decompose_all` (a `decompose_toys` of a notebook's toys with L3D settings `config`,
    taking keep_starts and setting changes), and the same from one start per seed, as the authors' code, when
    single_start and config.restarts > 1 (otherwise the runs themselves): the first of the starts, kept from the
    same sweep, where every start trains the whole schedule (`keeps_starts`), else a sweep of their own with
    restarts=1."""
    one_start = single_start and config.restarts > 1
    kept = one_start and keeps_starts(config)
    runs = decompose_all(keep_starts=kept)
    if kept:
        return runs, first_starts(*runs)
    return runs, decompose_all(restarts=1) if one_start else runs


def score_toy(decomposition: Decomposition, source: GradientSource, model: nn.Module, circuits: Sequence[Sequence[int]],
              seed: int, n_probe: int, n_ref: int, low: float = 0.0, high: float = 1.0,
              first_layer: str = "layers.0.weight") -> tuple[dict, Recovery]:
    """One decomposition of a toy against its circuits (feature lists): `evaluate_and_recover` on `source` (error
    and P_act over one pass; matching, impact share, input purity on n_probe inputs per circuit, n_ref references,
    features uniform on [low, high]) and the MMCS of the first layer's input columns against the model's own.
    Returns the row for metrics.json (reconstruction_error, p_act, `Recovery.summary()`, mmcs) and the Recovery."""
    weight = dict(model.named_parameters())[first_layer].detach()                      # (hidden, n_features)
    evaluation, found = evaluate_and_recover(decomposition, source, circuits, weight.shape[1], low=low, high=high,
                                             n_samples=n_probe, n_ref=n_ref, seed=seed, first_layer=first_layer)
    directions = decomposition.decoder_directions()[first_layer].detach()             # (C, hidden, n_features)
    row = {"reconstruction_error": evaluation["reconstruction_error"], "p_act": evaluation["p_act"], **found.summary(),
           "mmcs": mmcs(directions.transpose(1, 2).cpu(), weight.T.cpu())}
    return row, found


def medians(rows: Iterable[dict], keys: Sequence[str]) -> dict[str, float]:
    """Median over seeds (rows) of each key."""
    rows = list(rows)
    return {key: median(float(r[key]) for r in rows) for key in keys}


def ranges(rows: Iterable[dict], keys: Sequence[str]) -> dict[str, list[float]]:
    """[min, max] over seeds (rows) of each key: with `medians`, a headline's "median (min-max)"."""
    rows = list(rows)
    return {key: [min(float(r[key]) for r in rows), max(float(r[key]) for r in rows)] for key in keys}
