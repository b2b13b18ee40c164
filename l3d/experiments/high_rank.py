"""Notebook 03, higher-rank circuits (paper §4.3): circuits that are groups of features switching on together.

n_groups groups of group_size features (`toys.group_features`); a one-hidden-layer network
n_groups·group_size → n_hidden → n_groups·group_size (`toys.high_rank_circuits`, `variant`) fit to y = A x,
A_ij ~ U(0, coefficient_max), so a group's circuit has rank up to group_size in each weight matrix. Every seed's
toy is decomposed at every Tucker rank of `ranks` (with the silence penalty when `silence` > 0, and again with
the paper's loss at each rank of `paper_loss_ranks`) and scored against the groups (`score_toy`), with the share
of each subnetwork's decoder direction in the first layer (what reads the inputs) and the number of groups with
a clean subnetwork (impact share ≥ CLEAN); `medians_by_rank` aggregates over seeds, `headline` states the counts as
"k of n seeds" with the median and range. All seeds of one (rank, loss), their starts and the stability check's
perturbed reruns (at `stability_ranks`; `l3d.experiments.stability`) train as one batched `l3d.sweep`.
"""
from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from ..decomposition import Decomposition
from ..pipeline import Run
from ..runtime.medians import median
from ..runtime.settings import bounded
from .ground_truth import Recovery
from .stability import Stability, compare
from .toy_experiment import (
    VariantExperiment,
    decompose_toys,
    first_starts,
    keeps_starts,
    medians,
    ranges,
    score_toy,
    train_seed_toys,
)
from .toys import feature_groups, group_features, high_rank_circuits, random_coefficients

MEDIAN_KEYS = ("reconstruction_error", "n_live", "clean_groups", "min_impact_share", "min_input_purity",
               "min_first_layer_share_matched", "max_first_layer_share_extra", "mmcs")
CLEAN = 0.8   # a group's subnetwork is clean when its impact share is at least this
LOSSES = ("silence", "paper")   # with the silence penalty (settings.l3d.silence), the paper's loss
# the stability check (l3d.experiments.stability): a seed's outcome, and the medians compared
OUTCOME_KEYS = ("clean_groups", "n_live", "one_per_circuit")
STABILITY_MEDIAN_KEYS = ("reconstruction_error", "min_impact_share")
# the headline's medians and ranges over seeds: key, name, format
HEADLINE_SPREADS = (("n_live", "live", "g"), ("min_impact_share", "lowest impact share", ".3f"),
                    ("reconstruction_error", "error", ".3f"))


@dataclass(frozen=True)
class HighRank(VariantExperiment):
    """Notebook 03's settings: the toy (n_groups, group_size, n_hidden, coefficient_max; n_groups None: 6 for the
    authors' toy as in their figures, 5 as the paper's text), the Tucker ranks decomposed (`ranks`; the figures
    show `show_rank`), the ranks also decomposed with the paper's loss when l3d.silence > 0 (`paper_loss_ranks`),
    the ranks whose decompositions (with either loss) get the stability check (`stability_ranks`), with
    `single_start` and restarts > 1 the paper's loss at paper_loss_ranks from one start as well (the authors'
    procedure), and the scoring (n_probe inputs per group, n_ref references).

    Starts: the authors' toy takes the best of 4 starts, each trained the whole schedule, by final training error
    (our choice, stable under the stability check; the authors' code trains one), the paper-text toy screens 6
    starts for restart_epochs = 30 (None for either: the toy's convention)."""

    n_groups: int = bounded(6, low=2)
    group_size: int = bounded(5, low=1)
    n_hidden: int = bounded(10, low=1)
    coefficient_max: float = bounded(3.0, low=0, open_low=True)
    ranks: list[int] = dataclasses.field(default_factory=lambda: [1, 2, 3, 4, 5], metadata={"low": 1})
    show_rank: int = bounded(3, low=1)
    paper_loss_ranks: list[int] = dataclasses.field(default_factory=lambda: [3], metadata={"low": 1})
    stability_ranks: list[int] = dataclasses.field(default_factory=lambda: [3], metadata={"low": 1})
    single_start: bool = True
    n_probe: int = bounded(200, low=2)
    n_ref: int = bounded(10, low=1)

    TOY = "high_rank"
    CONVENTIONS = {"authors": {"n_groups": 6, "restarts": 4, "restart_epochs": None},
                   "paper_text": {"n_groups": 5, "drop_zero_inputs": True, "warm_start_epochs": 0, "restarts": 6,
                                  "restart_epochs": 30, "toy_restarts": 1}}

    def check(self) -> list[str]:
        problems = super().check()
        if self.show_rank not in self.ranks:
            problems.append(f"ranks {self.ranks} must include show_rank {self.show_rank}")
        if not set(self.paper_loss_ranks) <= set(self.ranks):
            problems.append(f"paper_loss_ranks {self.paper_loss_ranks} must be among ranks {self.ranks}")
        if not set(self.stability_ranks) <= set(self.ranks):
            problems.append(f"stability_ranks {self.stability_ranks} must be among ranks {self.ranks}")
        return problems

    def decompositions(self) -> list[tuple[int, str]]:
        """The (rank, loss) decomposed per seed: every rank with l3d.silence ("silence", or "paper" when it is 0),
        then each of paper_loss_ranks with the paper's loss when l3d.silence > 0."""
        main = "silence" if self.l3d.silence > 0 else "paper"
        extra = [(rank, "paper") for rank in self.paper_loss_ranks] if main == "silence" else []
        return [(rank, main) for rank in self.ranks] + extra

    def single_start_decompositions(self) -> list[tuple[int, str]]:
        """The (rank, loss) also decomposed from one start, as the authors' code does (their loss at their
        procedure): each of paper_loss_ranks with the paper's loss, when single_start and l3d.restarts > 1."""
        if not (self.single_start and self.l3d.restarts > 1):
            return []
        return [(rank, "paper") for rank in self.paper_loss_ranks]

    @property
    def n_features(self) -> int:
        return self.n_groups * self.group_size

    @property
    def groups(self) -> list[list[int]]:
        """The features of each group (the circuits)."""
        return feature_groups(self.n_groups, self.group_size)


def train_high_rank_toys(settings: HighRank, device: torch.device) -> tuple[list[nn.Module], list[list[float]]]:
    """One toy per seed: A (n_features, n_features) then n_train grouped inputs from the generator seeded
    10,000 + seed, targets x Aᵀ. Returns the models and their epoch losses."""
    n = settings.n_features

    def data(generator: torch.Generator) -> tuple[Tensor, Tensor]:
        A = random_coefficients(n, n, settings.coefficient_max, generator).to(device)              # (out, in)
        x = group_features(settings.training.n_train, settings.n_groups, settings.group_size,
                           settings.training.p_active, generator=generator).to(device)              # (n_train, in)
        return x, x @ A.T

    models, losses, _ = train_seed_toys(settings, lambda: high_rank_circuits(n, settings.n_hidden, settings.variant),
                                        data, device)
    return models, losses


def group_samples(settings: HighRank, seed: int) -> Tensor:
    """The n_samples inputs L3D decomposes for `seed` (generator seeded 20,000 + seed): groups on with
    probability p_active; all-zero inputs dropped when drop_zero_inputs."""
    return group_features(settings.n_samples, settings.n_groups, settings.group_size, settings.training.p_active,
                          generator=torch.Generator().manual_seed(20_000 + seed), drop_zero=settings.drop_zero_inputs)


def first_layer_shares(decomposition: Decomposition, found: Recovery, first_layer: str = "layers.0.weight") -> dict:
    """How much of each subnetwork reads the inputs: the share ‖d_k^first‖² of its unit-norm decoder direction in
    the first layer (first_layer_share, per subnetwork), its lowest value over the subnetworks matched to a group
    and its highest over the live subnetworks matched to none (0 when there are none)."""
    direction = decomposition.decoder_directions()[first_layer].detach()        # (C, hidden, inputs)
    share = direction.flatten(1).pow(2).sum(1).tolist()
    matched = list(found.subnetwork_of.values())
    extra = [k for k in found.live if k not in matched]
    return {"first_layer_share": share,
            "min_first_layer_share_matched": min((share[k] for k in matched), default=0.0),
            "max_first_layer_share_extra": max((share[k] for k in extra), default=0.0)}


@dataclass
class RankRuns:
    """What `decompose_ranks` made: per (seed, rank, loss) the run and its Recovery, one metrics.json row per
    (seed, rank, loss) in seed order, the stability check per (rank, loss) (empty without reruns) and the
    seconds spent training (every sweep, reruns included), scoring the runs and scoring the reruns."""

    runs: dict[tuple[int, int, str], tuple[Run, Recovery]]
    per_seed: list[dict]
    stability: dict[tuple[int, str], Stability]
    seconds: dict[str, float]
    single: RankRuns | None = None   # the single_start decompositions from one start (`decompose_ranks`)


def score_run(settings: HighRank, run: Run, seed: int) -> tuple[dict, Recovery]:
    """`score_toy` of one decomposition of a (possibly perturbed) toy, `run.collector.model`, against the groups,
    with clean_groups: the number of groups whose matched subnetwork has an impact share >= CLEAN."""
    row, found = score_toy(run.decomposition, run.source, run.collector.model, settings.groups, seed, settings.n_probe,
                           settings.n_ref)
    return {**row, "clean_groups": sum(p >= CLEAN for p in row["impact_share"])}, found


def decompose_ranks(settings: HighRank, models: list[nn.Module], toy_losses: list[list[float]], device: torch.device,
                    out_dir: str | os.PathLike | None, decompositions: list[tuple[int, str]] | None = None,
                    single_start: Sequence[tuple[int, str]] = (), **changes) -> RankRuns:
    """Every seed's toy decomposed at every (rank, loss) of `decompositions` (None: `settings.decompositions()`),
    with the notebook's L3D settings (`changes` override some, e.g. restarts=1): per (rank, loss) one
    `decompose_toys` sweep over the seeds and, for a rank of settings.stability_ranks, their settings.perturbations
    perturbed reruns. Each run is saved to out_dir/decomposition_seed{s}_rank{r} (with _paper_loss for the paper's
    loss beside the silence penalty; out_dir None: not saved) and scored against the groups (`score_run`, plus
    `first_layer_shares`); each rerun only for the outcome (OUTCOME_KEYS) and the medians (STABILITY_MEDIAN_KEYS)
    that `stability.compare` checks.

    single_start: the (rank, loss) of `decompositions` also scored from one start, as the authors' code runs them
    (`settings.single_start_decompositions()`), in the result's `single`: start 0 of the sweep's starts where every
    start trains the whole schedule (`toy_experiment.first_starts`), else a sweep of their own with restarts=1."""
    decompositions = settings.decompositions() if decompositions is None else decompositions
    kept = keeps_starts(settings.l3d) and "restarts" not in changes
    inputs = [group_samples(settings, s).to(device) for s in settings.seeds]
    result = RankRuns({}, [], {}, {"l3d": 0.0, "scoring": 0.0, "stability_scoring": 0.0})
    first = RankRuns({}, [], {}, {"l3d": 0.0, "scoring": 0.0, "stability_scoring": 0.0})
    rows: dict[tuple[int, int, str], dict] = {}
    first_rows: dict[tuple[int, int, str], dict] = {}
    for rank, loss in decompositions:
        extra = {"silence": 0.0} if loss == "paper" else {}
        keep = kept and (rank, loss) in single_start
        own, reruns = decompose_toys(settings, models, inputs, progress=False,
                                     stability=rank in settings.stability_ranks, keep_starts=keep, rank=rank,
                                     **extra, **changes)
        result.seconds["l3d"] += own[0].seconds
        _score_rank(settings, rank, loss, own, reruns, toy_losses, out_dir, result, rows)
        if keep:
            _score_rank(settings, rank, loss, *first_starts(own, reruns), toy_losses, None, first, first_rows)
    result.per_seed = [rows[s, rank, loss] for s in settings.seeds for rank, loss in decompositions]
    if single_start and kept:
        first.per_seed = [first_rows[s, rank, loss] for s in settings.seeds for rank, loss in single_start]
        result.single = first
    elif single_start:
        result.single = decompose_ranks(settings, models, toy_losses, device, None, list(single_start), restarts=1)
    return result


def _score_rank(settings: HighRank, rank: int, loss: str, own: list[Run], reruns: list[list[Run]],
                toy_losses: list[list[float]], out_dir: str | os.PathLike | None, result: RankRuns,
                rows: dict[tuple[int, int, str], dict]) -> None:
    """`decompose_ranks`' scoring of one (rank, loss): each seed's run saved (to out_dir, unless None), scored and
    added to `result` and `rows`; with reruns, the stability check."""
    started = time.perf_counter()
    for s, run, losses in zip(settings.seeds, own, toy_losses):
        if out_dir is not None:
            run.save(Path(out_dir) / f"decomposition_seed{s}_rank{rank}{'_paper_loss' if loss == 'paper' else ''}")
        row, found = score_run(settings, run, s)
        rows[s, rank, loss] = {"seed": s, "rank": rank, "loss": loss, "toy_loss": losses[-1], **row,
                               "final_training_error": run.history.reconstruction_error[-1],
                               "start_errors": run.start_errors, **first_layer_shares(run.decomposition, found)}
        result.runs[s, rank, loss] = run, found
    result.seconds["scoring"] += time.perf_counter() - started
    started = time.perf_counter()
    if reruns:
        perturbed_rows = [[{"seed": s, **score_run(settings, run, s)[0]} for s, run in zip(settings.seeds, rerun)]
                          for rerun in reruns]
        result.stability[rank, loss] = compare([rows[s, rank, loss] for s in settings.seeds], perturbed_rows,
                                               OUTCOME_KEYS, STABILITY_MEDIAN_KEYS)
    result.seconds["stability_scoring"] += time.perf_counter() - started


def stability_metrics(settings: HighRank, checks: dict[tuple[int, str], Stability],
                      restarts: int | None = None) -> dict:
    """metrics["stability"]: the check's settings (restarts: of the runs checked, default settings.l3d.restarts),
    per loss and rank `Stability.to_dict()`, and over every (seed, rank, loss) checked how many changed outcome
    under some perturbation (n_changed of n_checked) and the share of reruns that changed it (changed_rate)."""
    by_loss: dict[str, dict[int, dict]] = {}
    for (rank, loss), check in checks.items():
        by_loss.setdefault(loss, {})[rank] = check.to_dict()
    restarts = settings.l3d.restarts if restarts is None else restarts
    reruns = [(row["outcome"], other) for c in checks.values() for row in c.per_seed for other in row["perturbed"]]
    return {"perturbations": settings.perturbations, "perturbation": settings.perturbation, "restarts": restarts,
            "restart_epochs": settings.l3d.restart_epochs if restarts > 1 else None,
            "outcome_keys": list(OUTCOME_KEYS), "median_keys": list(STABILITY_MEDIAN_KEYS),
            "n_changed": sum(len(c.changed) for c in checks.values()),
            "n_checked": sum(len(c.per_seed) for c in checks.values()),
            "changed_rate": sum(a != b for a, b in reruns) / max(len(reruns), 1), **by_loss}


def stability_table(checks: dict[tuple[int, str], Stability]) -> list[dict]:
    """`Stability.rows()` of every (rank, loss), each row led by its rank and loss, for `tables.markdown_table`."""
    return [{"rank": rank, "loss": loss, **row} for (rank, loss), check in checks.items() for row in check.rows()]


def medians_by_rank(settings: HighRank, per_seed: list[dict], loss: str) -> dict[int, dict]:
    """Per rank decomposed with `loss` ("silence" or "paper"), the medians over seeds of MEDIAN_KEYS, the number of
    seeds with one live subnetwork per group and the number with a clean subnetwork for every group."""
    return {rank: {**medians(rows, MEDIAN_KEYS), "one_per_group_seeds": sum(r["one_per_circuit"] for r in rows),
                   "all_clean_seeds": sum(r["clean_groups"] == settings.n_groups for r in rows)}
            for rank, rows in _by_rank(settings, per_seed, loss).items()}


def ranges_by_rank(settings: HighRank, per_seed: list[dict], loss: str) -> dict[int, dict]:
    """Per rank decomposed with `loss`, [min, max] over seeds of the headline's keys (HEADLINE_SPREADS)."""
    return {rank: ranges(rows, [key for key, _, _ in HEADLINE_SPREADS])
            for rank, rows in _by_rank(settings, per_seed, loss).items()}


def _by_rank(settings: HighRank, per_seed: list[dict], loss: str) -> dict[int, list[dict]]:
    """The rows of each rank decomposed with `loss`, ranks without any left out."""
    by_rank = {rank: [r for r in per_seed if (r["rank"], r["loss"]) == (rank, loss)] for rank in settings.ranks}
    return {rank: rows for rank, rows in by_rank.items() if rows}


def headline(per_seed: list[dict], loss: str) -> list[str]:
    """Per rank decomposed with `loss`, one line from metrics.json's per-seed rows: in how many of the n seeds each
    group has exactly one live subnetwork and no other is live (one_per_circuit), and in how many every group has a
    clean one; then the median (min-max over the seeds) of the live count, the lowest impact share and the error."""
    lines = []
    for rank in sorted({r["rank"] for r in per_seed if r["loss"] == loss}):
        rows = [r for r in per_seed if (r["rank"], r["loss"]) == (rank, loss)]
        n, one = len(rows), sum(r["one_per_circuit"] for r in rows)
        clean = sum(r["clean_groups"] == len(r["impact_share"]) for r in rows)
        spreads = ", ".join(f"{name} {spread([r[key] for r in rows], form)}" for key, name, form in HEADLINE_SPREADS)
        lines.append(f"rank {rank}: one live subnetwork per group in {one} of {n} seeds, every group clean in {clean} "
                     f"of {n}; {spreads}")
    return lines


def spread(values: list[float], form: str = ".3f") -> str:
    """"median (min-max)" of `values`, each formatted with `form`."""
    return f"{median(values):{form}} ({min(values):{form}}-{max(values):{form}})"


def errors_by_seed(settings: HighRank, per_seed: list[dict]) -> list[list[float]]:
    """(n_seeds, n_ranks) reconstruction errors of the decompositions at every rank, for `plots.error_against`."""
    main = settings.decompositions()[0][1]
    error = {(r["seed"], r["rank"]): r["reconstruction_error"] for r in per_seed if r["loss"] == main}
    return [[error[s, rank] for rank in settings.ranks] for s in settings.seeds]


def p_act_labels(found: Recovery, n_subnetworks: int) -> list[str]:
    """Bar labels for `plots.p_act_bars`: the subnetwork's index, and "g<group>" below it when it is matched."""
    group_of = {k: g for g, k in found.matches}
    return [f"{k}" + (f"\ng{group_of[k]}" if k in group_of else "") for k in range(n_subnetworks)]
