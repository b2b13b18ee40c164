"""Notebook 04, a complex loss landscape (paper §4.4): a deep network computing y_i = x_i².

n_features inputs on [-1, 1], each a circuit (input i → output i), through `depth` hidden layers of `width`
(`toys.square_mlp`, `variant`: ELU everywhere and width 10 for the authors' toy, GeLU and width 5 for the
paper's text). Every seed's toy is decomposed at each (C, R) of `Square.grid()` (the main n_subnetworks × rank,
then sweep_rank with each of sweep_subnetworks; biases at bias_rank) and scored against the inputs
(`score_toy`); with compare_variant the other variant's toys are trained and decomposed at the main (C, R) with
that variant's conventions (`other_variant`); the main decomposition's matched subnetworks are moved alone, with
larger δ, in the hidden layers only and in pairs (`intervene_matched`), and `label_diagnostic` asks with the labels
whether the paper's loss keeps one subnetwork per input (`label_diagnostics`: every seed's at once, as one stack).
`medians_by_setting` aggregates over seeds.

Each (C, R) is one batched sweep over the seeds (`toy_experiment.decompose_toys`); at the main (C, R) the sweep also
holds the perturbed reruns of the stability check (`l3d.experiments.stability`), scored like the runs themselves
(`score_toy` uses no labels): a seed's outcome is OUTCOME_KEYS, the medians compared are HEADLINE_KEYS'.
"""
from __future__ import annotations

import dataclasses
import itertools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from ..decomposition import Decomposition
from ..interventions import intervention_sweep
from ..pipeline import Run
from ..runtime.settings import bounded
from .ground_truth import Recovery, aligned_then_paper_fresh, circuit_aligned_error, intervention_selectivity
from .stability import Stability, compare
from .toy_experiment import (
    VariantExperiment,
    decompose_toys,
    l3d_samples,
    medians,
    ranges,
    score_toy,
    train_seed_toys,
)
from .toys import VARIANTS, sparse_features, square_mlp, weight_bias_ranks

MEDIAN_KEYS = ("reconstruction_error", "n_dead", "min_impact_share", "min_input_purity", "mmcs")
HEADLINE_KEYS = ("reconstruction_error", "min_impact_share", "mmcs")  # stated as median (min-max) at the main (C, R)
OUTCOME_KEYS = ("all_matched", "one_per_circuit", "n_dead")      # a seed's discrete outcome, for the stability check
STAGES = ("aligned", "aligned_then_paper")


@dataclass(frozen=True)
class Square(VariantExperiment):
    """Notebook 04's settings: the toy (n_features, width, depth; width None: the variant's, 10 for the authors'
    toy, 5 for the paper's text), the biases' Tucker rank (bias_rank; None: the weights' rank), whether the other
    variant's toy is decomposed too at the main (C, R) (compare_variant), the sweep over subnetworks at sweep_rank, the
    label diagnostic (aligned_epochs, aligned_lr_decay_every), the interventions (n_deltas values of δ on
    [-max_delta, max_delta] and [-large_delta, large_delta]; hidden_tensors for the hidden-layers-only sweep) and
    the scoring (n_probe inputs per feature, n_ref references). single_start: with restarts > 1, every seed's main
    (C, R) is also decomposed from one start, as the authors' code does (like-for-like numbers, with their
    stability check)."""

    n_features: int = bounded(5, low=2)
    width: int = bounded(10, low=1)
    depth: int = bounded(4, low=1)
    bias_rank: int | None = bounded(None, low=1)
    compare_variant: bool = True
    sweep_rank: int = bounded(1, low=1)
    sweep_subnetworks: list[int] = dataclasses.field(default_factory=lambda: [3, 5, 10, 15], metadata={"low": 1})
    aligned_epochs: int = bounded(100, low=1)
    aligned_lr_decay_every: int = bounded(10, low=1)
    max_delta: float = bounded(0.5, low=0, open_low=True)
    large_delta: float = bounded(2.0, low=0, open_low=True)
    n_deltas: int = bounded(21, low=2)
    hidden_tensors: list[str] = dataclasses.field(default_factory=lambda: ["layers.1.*", "layers.2.*", "layers.3.*"])
    n_probe: int = bounded(200, low=2)
    n_ref: int = bounded(10, low=1)
    single_start: bool = True

    TOY = "square"
    CONVENTIONS = {"authors": {"width": 10, "bias_rank": 1},
                   "paper_text": {"width": 5, "bias_rank": None, "drop_zero_inputs": False, "warm_start_epochs": 10}}
    RENAMED = {**VariantExperiment.RENAMED, "compare_toy": "compare_variant"}

    def check(self) -> list[str]:
        problems = super().check()
        if not self.sweep_subnetworks:
            problems.append("sweep_subnetworks must list at least one number of subnetworks")
        return problems

    @property
    def main(self) -> tuple[int, int]:
        """The main decomposition's (C, R)."""
        return self.l3d.n_subnetworks, self.l3d.rank

    @property
    def other_variant(self) -> str:
        """The variant compared at the main (C, R) when compare_variant."""
        return next(v for v in VARIANTS if v != self.variant)

    def ranks(self, shapes: dict[str, tuple[int, ...]], rank: int) -> int | dict[str, int]:
        """The Tucker rank(s) of a decomposition at `rank`: per tensor with bias_rank for the biases, when set."""
        return rank if self.bias_rank is None else weight_bias_ranks(shapes, rank, self.bias_rank)

    def grid(self) -> list[tuple[int, int]]:
        """The (C, R) decomposed: the main one first, then (c, sweep_rank) for each c of sweep_subnetworks."""
        return [self.main] + [(c, self.sweep_rank) for c in self.sweep_subnetworks if (c, self.sweep_rank) != self.main]

    @property
    def features(self) -> list[list[int]]:
        """The circuits: one input each."""
        return [[j] for j in range(self.n_features)]

    def interventions(self) -> dict[str, tuple[Tensor, list[str] | None, bool]]:
        """Sweep name -> (δ values, tensors moved (None: all), pairs of subnetworks?) (paper Fig. 9, S7, S8, S9)."""
        deltas = torch.linspace(-self.max_delta, self.max_delta, self.n_deltas)
        large = torch.linspace(-self.large_delta, self.large_delta, self.n_deltas)
        return {"interventions": (deltas, None, False), "interventions_large_delta": (large, None, False),
                "interventions_hidden_only": (deltas, self.hidden_tensors, False),
                "interventions_pairs": (deltas, None, True)}


def train_square_toys(settings: Square,
                      device: torch.device) -> tuple[list[nn.Module], list[list[float]], list[list[float]]]:
    """One toy per seed, the best of toy.restarts initializations, on n_train inputs on [-1, 1] (generator seeded
    10,000 + seed) with targets x². Returns the models, their epoch losses and each model's mean squared error
    per output on its training data (a model that leaves x_i² out scores ≈ p_active · E[x⁴] on output i)."""
    def data(generator: torch.Generator) -> tuple[Tensor, Tensor]:
        x = sparse_features(settings.training.n_train, settings.n_features, settings.training.p_active, low=-1.0,
                            high=1.0, generator=generator).to(device)
        return x, x ** 2

    models, losses, data_sets = train_seed_toys(settings,
                                                lambda: square_mlp(settings.n_features, settings.width, settings.depth,
                                                                   settings.variant), data, device)
    with torch.no_grad():
        output_mse = [(toy(x) - y).pow(2).mean(0).tolist() for toy, (x, y) in zip(models, data_sets)]
    return models, losses, output_mse


def decompose_grid(settings: Square, models: list[nn.Module], toy_losses: list[list[float]],
                   toy_output_mse: list[list[float]], device: torch.device, out_dir: str | os.PathLike | None,
                   grid: list[tuple[int, int]] | None = None, name: str = "decomposition", stability: bool = True,
                   **changes) -> tuple[dict[tuple[int, int, int], tuple[Run, Recovery]], list[dict], list[list[dict]]]:
    """Every seed's toy decomposed at every (C, R) of `grid` (None: settings.grid()), each (C, R) one sweep over the
    seeds (saved to out_dir/{name}_seed{s}_C{C}_rank{R}; out_dir None: not saved) and scored against the inputs;
    with stability, the main (C, R)'s sweep also holds settings.perturbations reruns of every seed with the toy and
    the start perturbed, scored the same way. `changes` override L3D settings (e.g. restarts=1). Returns
    {(seed, C, R): (run, recovery)}, one row per (seed, C, R) for metrics.json (with the toy variant), and per
    perturbation the main (C, R)'s rows of the reruns in seed order ([] without stability or without the main
    (C, R) in the grid)."""
    runs, per_seed, rerun_rows = {}, [], []
    shapes = {n: tuple(p.shape) for n, p in models[0].named_parameters()}
    inputs = [l3d_samples(settings, s, settings.n_features, low=-1.0, high=1.0).to(device) for s in settings.seeds]
    for C, R in grid or settings.grid():
        main = stability and (C, R) == settings.main
        done, reruns = decompose_toys(settings, models, inputs, progress=False, stability=main, n_subnetworks=C,
                                      rank=settings.ranks(shapes, R), **changes)
        for s, run, losses, mse in zip(settings.seeds, done, toy_losses, toy_output_mse):
            if out_dir is not None:
                run.save(Path(out_dir) / f"{name}_seed{s}_C{C}_rank{R}")
            row, found = _score(settings, run)
            per_seed.append({"seed": s, "variant": settings.variant, "n_subnetworks": C, "rank": R,
                             "toy_loss": losses[-1], "toy_output_mse": mse, **row})
            runs[s, C, R] = run, found
        rerun_rows += [[_score(settings, run)[0] for run in rerun] for rerun in reruns]
    return runs, per_seed, rerun_rows


def _score(settings: Square, run: Run) -> tuple[dict, Recovery]:
    """`score_toy` of one run against the inputs, with its seed, final training error and screened starts' errors."""
    row, found = score_toy(run.decomposition, run.source, run.collector.model, settings.features, run.config.seed,
                           settings.n_probe, settings.n_ref, low=-1.0, high=1.0)
    return {"seed": run.config.seed, **row, "final_training_error": run.history.reconstruction_error[-1],
            "start_errors": run.start_errors}, found


def stability(rows: list[dict], rerun_rows: list[list[dict]]) -> Stability:
    """The stability check (`l3d.experiments.stability.compare`) of the main (C, R)'s rows, one per seed, against
    the perturbed reruns' rows: a seed's outcome is its OUTCOME_KEYS, the medians compared are HEADLINE_KEYS'."""
    return compare(rows, rerun_rows, OUTCOME_KEYS, HEADLINE_KEYS)


def headline(rows: list[dict]) -> str:
    """The main (C, R)'s headline in words: "k of n" seeds for the outcomes, and each of HEADLINE_KEYS as median
    (min-max) over seeds."""
    n, summary, spread = len(rows), medians(rows, HEADLINE_KEYS), ranges(rows, HEADLINE_KEYS)
    lines = [f"one subnetwork per input: {sum(r['one_per_circuit'] for r in rows)} of {n} seeds; every input "
             f"matched to a distinct live subnetwork: {sum(r['all_matched'] for r in rows)} of {n}; no dead "
             f"subnetwork: {sum(r['n_dead'] == 0 for r in rows)} of {n}"]
    lines += [f"{key}: median {summary[key]:.3f} ({low:.3f}-{high:.3f})" for key, (low, high) in spread.items()]
    return "\n".join(lines)


def intervention_groups(found: Recovery, pairs: bool) -> list[tuple[int, ...]]:
    """The inputs moved together by each intervention: every matched input alone, or every pair of them."""
    matched = sorted(found.subnetwork_of)
    return list(itertools.combinations(matched, 2)) if pairs else [(j,) for j in matched]


def own_outputs(groups: list[tuple[int, ...]], n_outputs: int) -> Tensor:
    """(len(groups), n_outputs) bool: the outputs each intervention is meant to move (output j computes x_j²)."""
    own = torch.zeros(len(groups), n_outputs, dtype=torch.bool)
    for row, group in enumerate(groups):
        own[row, list(group)] = True
    return own


def intervene_matched(settings: Square, model: nn.Module, run: Run, found: Recovery) -> dict[str, dict]:
    """Every sweep of `Square.interventions` on the run's inputs, moving the subnetworks matched to each group of
    inputs (`intervention_groups`). Returns name -> {"sweep": (groups, deltas, outputs) mean |Δ output|,
    "groups", "deltas", "selectivity" (`intervention_selectivity` of the change averaged over δ; nan without
    groups)}."""
    result = {}
    for name, (deltas, tensors, pairs) in settings.interventions().items():
        groups = intervention_groups(found, pairs)
        sweep = intervention_sweep(model, run.decomposition, deltas, run.source.inputs,
                                   subnetworks=[[found.subnetwork_of[j] for j in g] for g in groups],
                                   tensors=tensors).cpu()
        selectivity = (intervention_selectivity(sweep.mean(1), own_outputs(groups, settings.n_features)) if groups
                       else float("nan"))
        result[name] = {"sweep": sweep, "groups": groups, "deltas": deltas, "selectivity": selectivity}
    return result


def panel_titles(groups: list[tuple[int, ...]], found: Recovery) -> list[str]:
    """"subnetwork k" or "subnetworks k + l" for each intervention, for `plots.intervention_sweeps`."""
    return [("subnetwork " if len(g) == 1 else "subnetworks ") + " + ".join(str(found.subnetwork_of[j]) for j in g)
            for g in groups]


def label_diagnostic(settings: Square, model: nn.Module, run: Run,
                     seed: int) -> tuple[dict, dict[str, tuple[Decomposition, Recovery]]]:
    """With the labels, for the main decomposition's seed (needs n_subnetworks = n_features): the error one best
    direction per input leaves (`circuit_aligned_error`, on gradients against references drawn with `seed`),
    also per input and sign; then a fresh decomposition trained with the labels and on with the paper's loss
    (`aligned_then_paper` on the run's source), each stage scored like L3D. Returns the row's additions
    (circuit_aligned_error[_by_sign], <stage>_reconstruction_error, _min_impact_share, _min_input_purity, _impact_share)
    and stage -> (a copy of the decomposition, its recovery)."""
    return label_diagnostics(settings, [model], [run], [seed])[0]


def label_diagnostics(settings: Square, models: list[nn.Module], runs: list[Run],
                      seeds: list[int]) -> list[tuple[dict, dict[str, tuple[Decomposition, Recovery]]]]:
    """`label_diagnostic` of every seed (its toy, its main run); the seeds' fresh decompositions train as one
    stack."""
    rows, stages = [], [{} for _ in runs]
    for run, seed in zip(runs, seeds):
        inputs, collector = run.source.inputs, run.collector
        gradients = collector(inputs, generator=torch.Generator().manual_seed(seed)).dense().flat()     # (N, n_w)
        rows.append({"circuit_aligned_error": circuit_aligned_error(gradients, inputs != 0)[0],
                     "circuit_aligned_error_by_sign": circuit_aligned_error(
                         gradients, torch.cat([inputs > 0, inputs < 0], 1))[0]})
    for stage, members in aligned_then_paper_fresh(runs[0].config, [run.source for run in runs],
                                                   [run.source.inputs != 0 for run in runs], seeds,
                                                   settings.aligned_epochs, settings.aligned_lr_decay_every):
        for run, model, seed, member, row, found_stages in zip(runs, models, seeds, members, rows, stages):
            score, found = score_toy(member, run.source, model, settings.features, seed, settings.n_probe,
                                     settings.n_ref, low=-1.0, high=1.0)
            found_stages[stage] = member, found
            row.update({f"{stage}_{key}": score[key]
                        for key in ("reconstruction_error", "min_impact_share", "min_input_purity", "impact_share")})
    return list(zip(rows, stages))


def main_row(settings: Square, per_seed: list[dict], seed: int) -> dict:
    """The row of `seed`'s main decomposition (later stages add to it)."""
    return next(r for r in per_seed if (r["seed"], r["n_subnetworks"], r["rank"]) == (seed, *settings.main))


def other_variant(settings: Square, device: torch.device, out_dir: str | os.PathLike) -> list[dict]:
    """The other variant's toys (`Square.other_variant`, its conventions for every conventional setting) trained and
    decomposed at the main (C, R), one sweep over the seeds without the stability check (saved as
    out_dir/other_variant_seed{s}_C{C}_rank{R}); one scored row per seed."""
    other = settings.for_variant(settings.other_variant)
    models, losses, output_mse = train_square_toys(other, device)
    return decompose_grid(other, models, losses, output_mse, device, out_dir, grid=[other.main], name="other_variant",
                          stability=False)[1]


def summarize(rows: list[dict], keys: Sequence[str] = MEDIAN_KEYS) -> dict:
    """Medians of `keys` over the rows (seeds), and how many of the n_seeds have every input matched to a distinct
    live subnetwork (all_matched_seeds) and exactly one live subnetwork per input (one_per_circuit_seeds)."""
    return {**medians(rows, keys), "all_matched_seeds": sum(r["all_matched"] for r in rows),
            "one_per_circuit_seeds": sum(r["one_per_circuit"] for r in rows), "n_seeds": len(rows)}


def medians_by_setting(settings: Square, per_seed: list[dict], other_rows: list[dict] | None = None) -> dict[str, dict]:
    """Per "CxR" of the grid, the medians over seeds of MEDIAN_KEYS and the number of seeds with every input
    matched. The main setting's are per toy variant ({"authors": ..., "paper_text": ...}: this toy's, with the
    selectivities and the label diagnostic's numbers where present, and the other toy's from other_rows)."""
    rows = {(C, R): [r for r in per_seed if (r["n_subnetworks"], r["rank"]) == (C, R)] for C, R in settings.grid()}
    median = {f"{C}x{R}": summarize(rows[C, R], MEDIAN_KEYS) for C, R in settings.grid() if (C, R) != settings.main}
    main = rows[settings.main]
    keys = [f"selectivity_{name}" for name in settings.interventions()]
    keys += [f"{stage}_{key}" for key in ("reconstruction_error", "min_impact_share", "min_input_purity")
             for stage in STAGES]
    keys += ["circuit_aligned_error", "circuit_aligned_error_by_sign"]
    at_main = {settings.variant: summarize(main, [*MEDIAN_KEYS, *(k for k in keys if k in main[0])])}
    if other_rows:
        at_main[settings.other_variant] = summarize(other_rows, MEDIAN_KEYS)
    return {"{}x{}".format(*settings.main): at_main, **median}


def errors_by_seed(settings: Square, per_seed: list[dict]) -> list[list[float]]:
    """(n_seeds, len(sweep_subnetworks)) reconstruction errors at sweep_rank, for `plots.error_against`."""
    error = {(r["seed"], r["n_subnetworks"], r["rank"]): r["reconstruction_error"] for r in per_seed}
    return [[error[s, C, settings.sweep_rank] for C in settings.sweep_subnetworks] for s in settings.seeds]
