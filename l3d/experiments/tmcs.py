"""Toy model of circuit superposition (paper §4.2, notebook 02): its settings, one trained toy and one
decomposition per seed, and each seed's score against the ground truth, the coefficients A of y = A x.

Every input j is a circuit: on a sample with only x_j on the toy computes A[:, j] x_j through weights it
shares with the other inputs. Per seed:

* reconstruction error and P_act over one more pass (fresh references), matching and impact share of the
  subnetworks against the inputs (`evaluate_and_recover`), MMCS of the first-layer columns;
* the paper's number (`paper_r`, printed in the paper as "r² = 0.92"): per subnetwork the product of its own
  decoder directions, no model involved, against A by Pearson r; `paper_r2` is its square; `paper_r_own_paths`
  is the same number for the toy's own path of each input, unit-normed (`own_paths`): a perfect one-subnetwork-
  per-input decomposition of this toy;
* the coefficients â the subnetworks imply (`path_coefficients`) against A: `r2` (squared correlation),
  `r2_determination` (1 − SS_res / SS_tot), and against the ceilings: `model_r2` (what the toy itself
  computes, f(e_j) − f(0), against A), `r2_ceiling` (the best any n_hidden-neuron model can reach,
  `low_rank_r2`) and `r2_model_map` (â against the toy's own map);
* two diagnostics with the labels: `circuit_aligned_error` (one best direction per input) and, when
  n_subnetworks = n_features, a decomposition trained with one subnetwork per input and then with the
  paper's loss (`aligned_then_paper`; `aligned_*` and `aligned_then_paper_*` keys); `score_seeds` scores every
  seed, their labelled decompositions trained as one stack.

All seeds, and the perturbed reruns of the stability check (`l3d.experiments.stability`), are decomposed as one
batched sweep (`decompose_tmcs`); the reruns are scored without the labelled diagnostics (`score_tmcs` with
diagnostics=False), which their outcome (OUTCOME_KEYS) and the compared medians (HEADLINE_KEYS) do not need.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..decomposition import Decomposition
from ..pipeline import Run
from ..runtime.settings import bounded
from . import published
from .ground_truth import (
    Recovery,
    aligned_then_paper_fresh,
    circuit_aligned_error,
    decoder_paths,
    evaluate_and_recover,
    low_rank_r2,
    mmcs,
    own_paths,
    paper_r,
    path_coefficients,
    r_squared,
    squared_correlation,
)
from .stability import Stability, compare
from .toy_experiment import (
    RunsAndReruns,
    VariantExperiment,
    decompose_toys,
    l3d_samples,
    medians,
    ranges,
    train_seed_toys,
    with_one_start,
)
from .toys import MLP, circuit_superposition, random_coefficients, sparse_features

# the axes of each tensor's heatmap (plots.subnetwork_heatmaps)
AXES = {"layers.0.weight": ("hidden", "input"), "layers.0.bias": ("hidden", ""),
        "layers.1.weight": ("output", "hidden"), "layers.1.bias": ("output", "")}
# The paper's numbers, and the authors' code's at their settings, seeds 0-2 (l3d.experiments.published)
PAPER = published.numbers("02_circuit_superposition", "paper")
AUTHORS_CODE = published.numbers("02_circuit_superposition", "authors_code")
FIRST, SECOND = "layers.0.weight", "layers.1.weight"   # the toy's two weight matrices
MEDIAN_KEYS = ["reconstruction_error", "circuit_aligned_error", "paper_r", "paper_r2", "paper_r_own_paths", "r2",
               "r2_determination", "model_r2", "r2_ceiling", "r2_model_map", "mmcs", "min_impact_share",
               "min_input_purity", "mean_impact_share", "n_live", "n_dead"]
HEADLINE_KEYS = ("reconstruction_error", "paper_r", "r2", "mmcs", "min_impact_share")   # stated as median (min-max)
OUTCOME_KEYS = ("all_matched", "one_per_circuit", "n_live")   # a seed's discrete outcome, for the stability check
STAGES = ("aligned", "aligned_then_paper")
STAGE_KEYS = ("reconstruction_error", "min_impact_share", "r2")


@dataclass(frozen=True)
class TMCSExperiment(VariantExperiment):
    """Notebook 02: a toy n_features → n_hidden → n_features (`toys.circuit_superposition`, `variant`) fit to
    y = A x with A_ij ~ U(0, coefficient_max). The labelled diagnostic trains aligned_epochs epochs (lr decayed
    every aligned_lr_decay_every epochs) with one subnetwork per input, then as many with the paper's loss. The
    impact share is probed with n_probe inputs per feature (only that feature on) and n_ref references per impact.
    single_start: with restarts > 1, every seed is also decomposed from one start, as the authors' code does
    (like-for-like numbers, with their stability check)."""

    n_features: int = bounded(10, low=2)
    n_hidden: int = bounded(5, low=1)
    coefficient_max: float = bounded(3.0, low=0, open_low=True)
    aligned_epochs: int = bounded(100, low=1)
    aligned_lr_decay_every: int = bounded(10, low=1)
    n_probe: int = bounded(200, low=2)
    n_ref: int = bounded(10, low=1)
    single_start: bool = True

    TOY = "tmcs"
    CONVENTIONS = {"authors": {}, "paper_text": {"drop_zero_inputs": False, "warm_start_epochs": 10}}


@dataclass
class TMCSScore:
    """One seed's score: its row of metrics.json, the matching of inputs to subnetworks and â (n_features,
    n_features)."""

    metrics: dict
    found: Recovery
    a_hat: Tensor


def train_tmcs(settings: TMCSExperiment, device: torch.device) -> tuple[list[MLP], list[list[float]], list[Tensor]]:
    """One toy per seed: the seed's training generator draws A (n_features, n_features) and then n_train inputs
    x (all-zero ones dropped); the toy is fit to (x, x Aᵀ). Returns the models, their epoch losses and each A."""
    coefficients = []   # each seed's A, drawn as train_seed_toys asks for the seeds' data, in order

    def data(generator: torch.Generator) -> tuple[Tensor, Tensor]:
        coefficients.append(random_coefficients(settings.n_features, settings.n_features, settings.coefficient_max,
                                                generator))
        x = sparse_features(settings.training.n_train, settings.n_features, settings.training.p_active,
                            generator=generator).to(device)
        return x, x @ coefficients[-1].to(device).T

    models, losses, _ = train_seed_toys(settings, lambda: circuit_superposition(settings.n_features, settings.n_hidden,
                                                                                settings.variant), data, device)
    return models, losses, coefficients


def decompose_tmcs(settings: TMCSExperiment, models: list[MLP], device: torch.device, stability: bool = True,
                   progress: bool = True, keep_starts: bool = False, **changes) -> tuple[list[Run], list[list[Run]]]:
    """L3D of all four tensors of every seed's toy (models in settings.seeds' order) on its L3D samples, and with
    stability settings.perturbations reruns of each with the toy and the start perturbed, all one batched sweep
    (`toy_experiment.decompose_toys`; keep_starts: every start kept, `Run.one_start`; `changes` override L3D
    settings, e.g. restarts=1). Returns the runs, one per seed (each run's collector holds its toy), and per
    perturbation the perturbed runs in the same order."""
    inputs = [l3d_samples(settings, s, settings.n_features).to(device) for s in settings.seeds]
    return decompose_toys(settings, models, inputs, progress=progress, stability=stability, keep_starts=keep_starts,
                          **changes)


def decompose_with_one_start(settings: TMCSExperiment, models: list[MLP],
                             device: torch.device) -> tuple[RunsAndReruns, RunsAndReruns]:
    """`decompose_tmcs`'s runs and reruns, and with single_start the same from one start per seed, the authors'
    procedure (`toy_experiment.with_one_start`: the first of the starts, kept from the same sweep)."""
    return with_one_start(settings.l3d, settings.single_start,
                          lambda **changes: decompose_tmcs(settings, models, device, **changes))


def _recover(settings: TMCSExperiment, run: Run,
             decomposition: Decomposition) -> tuple[dict, Recovery, Tensor, list[int]]:
    """Error and P_act (fresh references), the matching to the inputs, and the â it implies with the input
    each subnetwork reads."""
    evaluation, found = evaluate_and_recover(decomposition, run.source, [[j] for j in range(settings.n_features)],
                                             settings.n_features, n_samples=settings.n_probe, n_ref=settings.n_ref,
                                             seed=run.config.seed, first_layer=FIRST)
    return evaluation, found, *path_coefficients(run.collector.model, decomposition, FIRST, SECOND)


def score_tmcs(settings: TMCSExperiment, run: Run, coefficients: Tensor, toy_loss: float,
               diagnostics: bool = True) -> TMCSScore:
    """One seed's scores (module docstring) against its A (n_features, n_features), with the toy's final loss;
    diagnostics=False leaves out the two that use the labels (circuit_aligned_error, the `_aligned` stages)."""
    return score_seeds(settings, [run], [coefficients], [toy_loss], diagnostics)[0]


def score_seeds(settings: TMCSExperiment, runs: list[Run], coefficients: list[Tensor], toy_losses: list[float],
                diagnostics: bool = True) -> list[TMCSScore]:
    """`score_tmcs` of every seed's run, with its A and its toy's final loss; the labelled diagnostic's
    decompositions of all seeds train as one stack. Each run's source draws its references in the order a seed
    scored alone draws them (the L3D decomposition's scores first)."""
    scores = [_score(settings, run, A, loss, diagnostics) for run, A, loss in zip(runs, coefficients, toy_losses)]
    if diagnostics and settings.l3d.n_subnetworks == settings.n_features:   # one per input with the labels, then
        for score, stages in zip(scores, _aligned(settings, runs, [A.cpu() for A in coefficients])):   # the paper's
            score.metrics.update(stages)                                                           # loss
    return scores


def _score(settings: TMCSExperiment, run: Run, coefficients: Tensor, toy_loss: float,
           diagnostics: bool) -> TMCSScore:
    """`score_tmcs` but the `_aligned` stages."""
    toy, decomposition, seed = run.collector.model, run.decomposition, run.config.seed
    evaluation, found, a_hat, reads = _recover(settings, run, decomposition)
    eye = torch.eye(settings.n_features, device=run.source.inputs.device)
    with torch.no_grad():
        model_map = (toy(eye) - toy(torch.zeros_like(eye))).T.cpu()   # the toy's own coefficients
    A = coefficients.cpu()
    metrics = {
        "seed": seed,
        "toy_loss": toy_loss,
        "reconstruction_error": evaluation["reconstruction_error"],
        "final_training_error": run.history.reconstruction_error[-1],
        "start_errors": run.start_errors,
        "p_act": evaluation["p_act"],
        **found.summary(),
        "inputs_read": reads,
        "paper_r": (r := paper_r(decoder_paths(decomposition, FIRST, SECOND), A)),
        "paper_r2": r ** 2,
        "paper_r_own_paths": paper_r(own_paths(toy, settings.n_features), A),   # what the toy allows
        "r2": squared_correlation(a_hat, A),
        "r2_determination": r_squared(a_hat, A),
        "model_r2": squared_correlation(model_map, A),
        "r2_ceiling": low_rank_r2(A, settings.n_hidden),          # no n_hidden-neuron model's map can do better
        "r2_model_map": squared_correlation(a_hat, model_map),    # â against what the toy computes
        "mmcs": mmcs(decomposition.decoder_directions()[FIRST].detach().transpose(1, 2).cpu(),
                     toy.layers[0].weight.detach().T.cpu()),
    }
    if diagnostics:
        samples = run.source.inputs
        gradients = run.collector(samples, generator=torch.Generator().manual_seed(seed)).dense().flat()
        metrics["circuit_aligned_error"] = circuit_aligned_error(gradients, samples > 0)[0]
    return TMCSScore(metrics, found, a_hat)


def _aligned(settings: TMCSExperiment, runs: list[Run], As: list[Tensor]) -> list[dict]:
    """The labelled diagnostic's error, lowest impact share and r² after each stage of `aligned_then_paper`, for
    every run (its seed's fresh decomposition; all of them one stack)."""
    scores = [{} for _ in runs]
    for stage, members in aligned_then_paper_fresh(settings.l3d, [run.source for run in runs],
                                                   [run.source.inputs > 0 for run in runs],
                                                   [run.config.seed for run in runs], settings.aligned_epochs,
                                                   settings.aligned_lr_decay_every):
        for run, member, A, row in zip(runs, members, As, scores):
            evaluation, found, a_hat, _ = _recover(settings, run, member)
            row.update({f"{stage}_reconstruction_error": evaluation["reconstruction_error"],
                        f"{stage}_min_impact_share": found.summary()["min_impact_share"],
                        f"{stage}_r2": squared_correlation(a_hat, A)})
    return scores


def summarize(per_seed: list[dict]) -> dict:
    """Medians over seeds of every scalar score the rows have (the labelled diagnostics' where they ran) and
    counts of seeds: all_matched_seeds (every input a distinct live subnetwork), one_per_circuit_seeds (exactly one
    live subnetwork per input and no other), of n_seeds."""
    keys = [k for k in MEDIAN_KEYS if k in per_seed[0]]
    keys += [f"{stage}_{key}" for stage in STAGES for key in STAGE_KEYS if f"{stage}_{key}" in per_seed[0]]
    return {**medians(per_seed, keys), "all_matched_seeds": sum(r["all_matched"] for r in per_seed),
            "one_per_circuit_seeds": sum(r["one_per_circuit"] for r in per_seed), "n_seeds": len(per_seed)}


def headline(per_seed: list[dict]) -> str:
    """The headline in words: "k of n" seeds for the outcomes, and each of HEADLINE_KEYS as median (min-max) over
    seeds (`summarize`, `toy_experiment.ranges`)."""
    summary, spread, n = summarize(per_seed), ranges(per_seed, HEADLINE_KEYS), len(per_seed)
    lines = [f"one subnetwork per input: {summary['one_per_circuit_seeds']} of {n} seeds; every input matched to a "
             f"distinct live subnetwork: {summary['all_matched_seeds']} of {n}"]
    lines += [f"{key}: median {summary[key]:.3f} ({low:.3f}-{high:.3f})" for key, (low, high) in spread.items()]
    return "\n".join(lines)


def stability(rows: list[dict], rerun_rows: list[list[dict]]) -> Stability:
    """The stability check (`l3d.experiments.stability.compare`) of scored rows, one per seed, against the perturbed
    reruns' rows: a seed's outcome is its OUTCOME_KEYS, the medians compared are HEADLINE_KEYS'."""
    return compare(rows, rerun_rows, OUTCOME_KEYS, HEADLINE_KEYS)


def describe(row: dict, n_hidden: int) -> str:
    """One seed's scores in words."""
    aligned = (f" (one direction per input: {row['circuit_aligned_error']:.3f})" if "circuit_aligned_error" in row
               else "")
    text = (f"seed {row['seed']}: error {row['reconstruction_error']:.3f}{aligned}, paper's r {row['paper_r']:.3f} "
            f"(the toy's own paths {row['paper_r_own_paths']:.3f}), r² {row['r2']:.3f} "
            f"(model itself {row['model_r2']:.3f}, any "
            f"{n_hidden}-neuron model ≤ {row['r2_ceiling']:.3f}; against the model's map {row['r2_model_map']:.3f}), "
            f"min impact share {row['min_impact_share']:.2f}, dead {row['dead']}, MMCS {row['mmcs']:.3f}")
    if "aligned_r2" in row:
        text += (f"\n    with the labels: error {row['aligned_reconstruction_error']:.3f}, r² {row['aligned_r2']:.3f}, "
                 f"min impact share {row['aligned_min_impact_share']:.2f}; then the paper's loss: error "
                 f"{row['aligned_then_paper_reconstruction_error']:.3f}, r² {row['aligned_then_paper_r2']:.3f}, "
                 f"min impact share {row['aligned_then_paper_min_impact_share']:.2f}")
    return text
