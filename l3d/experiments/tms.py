"""Toy model of superposition (paper §4.1, notebook 01): its settings, one trained TMS and one decomposition
per seed, and each seed's score against the ground truth, the features.

Feature i is embedded as W_in[:, i], read back by W_out[i, :] and filtered by b_i. A decomposition recovers
it when one subnetwork's decoder direction lies along those weights and on nothing else. Per seed:

* the reconstruction error Σ‖g − ĝ‖² / Σ‖g‖² over one more pass (fresh references);
* the one-to-one matching of features to subnetworks (`tms_feature_match`) and the |cos| of every pair,
  for the decoder directions and for the encoder directions;
* MMCS: per feature, the best |cos| over subnetworks between [W_in[:, i], W_out[i, :]] and the same slice
  of the subnetwork's decoder direction, averaged over features;
* intervention selectivity: W → W + δ d_k for the matched subnetworks, mean |Δ x̂_i| of the matched feature
  over the mean |Δ x̂_j| of the others (`intervention_selectivity`).

Every seed's decomposition and its perturbed reruns (the stability check, `l3d.experiments.stability`) train as one
`l3d.sweep`; a seed's outcome is whether every feature is recovered and how many subnetworks are dead.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import Tensor

from ..interventions import intervention_sweep
from ..pipeline import Run
from ..runtime.medians import median
from ..runtime.settings import bounded
from . import published
from .ground_truth import intervention_selectivity, mmcs, ordered_subnetworks, own_outputs
from .stability import Stability, compare
from .toy_experiment import (
    ToyExperiment,
    authors_parameters,
    decompose_toys,
    l3d_samples,
    medians,
    parameters_of,
    train_seed_toys,
)
from .toys import TMS, sparse_features, tms_feature_match

RECOVERED = 0.95   # a feature is recovered when its matched subnetwork's |cos| reaches this
# the axes of each tensor's heatmap (plots.subnetwork_heatmaps): W_in (hidden, feature), W_out (feature, hidden), b
AXES = {"W_in": ("hidden", "feature"), "W_out": ("feature", "hidden"), "b": ("feature", "")}
# The paper's numbers, and the authors' code's with the paper's settings, 3 seeds (l3d.experiments.published)
PAPER = published.numbers("01_toy_model_of_superposition", "paper")
AUTHORS = published.numbers("01_toy_model_of_superposition", "authors_code")
HEADLINE_KEYS = ("reconstruction_error", "mmcs", "intervention_selectivity")   # their medians over seeds
OUTCOME_KEYS = ("all_features_recovered", "dead_subnetworks")   # a seed's outcome: every feature? how many dead?


@dataclass(frozen=True)
class TMSExperiment(ToyExperiment):
    """Notebook 01: a TMS of n_features features in n_hidden dimensions; interventions move the weights by
    δ ∈ linspace(−max_delta, max_delta, n_deltas) along each unit-norm decoder direction."""

    n_features: int = bounded(5, low=2)
    n_hidden: int = bounded(2, low=1)
    max_delta: float = bounded(1.0, low=0, open_low=True)
    n_deltas: int = bounded(21, low=2)

    def deltas(self) -> Tensor:
        """The intervention sizes δ: (n_deltas,)."""
        return torch.linspace(-self.max_delta, self.max_delta, self.n_deltas)


def like_authors(settings: TMSExperiment) -> TMSExperiment:
    """The same experiment run as the authors' code runs TMS (scripts/1_tms), to compare with its errors like for
    like: the toy trained once (AdamW weight decay 1e-3, batches of 128), L3D samples without all-zero inputs, their
    gradient Jᵀ(2f − f_ref) with the reference drawn from the same batch, their decoder scaling, one random start
    and no warm start (their TMS script leaves warm_start_epochs at 0)."""
    return type(settings).from_parameters({**parameters_of(settings), **authors_parameters(0), "init": "random",
                                           "restarts": 1})


@dataclass
class TMSScore:
    """One seed's score: its row of metrics.json, the feature matching (`tms_feature_match` of the decoder
    directions) and the intervention sweep (C, n_deltas, n_features) mean |Δ x̂| of every subnetwork."""

    metrics: dict
    found: dict
    sweep: Tensor


def train_tms(settings: TMSExperiment, device: torch.device) -> tuple[list[TMS], list[list[float]]]:
    """One tied TMS per seed trained to reconstruct its n_train inputs (all-zero ones dropped, as the paper
    trains); returns the models and their epoch losses."""
    def data(generator: torch.Generator) -> tuple[Tensor, Tensor]:
        x = sparse_features(settings.training.n_train, settings.n_features, settings.training.p_active,
                            generator=generator)
        return x, x

    models, losses, _ = train_seed_toys(settings, lambda: TMS(settings.n_features, settings.n_hidden), data, device)
    return models, losses


def decompose_tms(settings: TMSExperiment, toys: list[TMS], device: torch.device, progress: bool = True,
                  stability: bool = True) -> tuple[list[Run], list[list[Run]]]:
    """L3D of every seed's toy (toys[i] of settings.seeds[i]), untied (W_in, W_out and b decomposed as separate
    tensors), on its L3D samples; with `stability` also settings.perturbations reruns of each with the toy's weights
    and the start perturbed. All of it one `l3d.sweep` (`toy_experiment.decompose_toys`). Returns the runs, one per
    seed, and per perturbation its runs in seed order; a run's collector holds its untied (for a rerun, perturbed)
    model, its source the samples."""
    inputs = [l3d_samples(settings, s, settings.n_features).to(device) for s in settings.seeds]
    untied = [toy.untied().to(device) for toy in toys]
    return decompose_toys(settings, untied, inputs, ["W_in", "W_out", "b"], progress, stability)


def score_tms(settings: TMSExperiment, run: Run, toy_loss: float) -> TMSScore:
    """One seed's scores (module docstring) for metrics.json, with its toy's final training loss beside them."""
    toy, decomposition = run.collector.model, run.decomposition
    decoder = decomposition.decoder_directions()
    found = tms_feature_match(toy, decoder)
    found_encoder = tms_feature_match(toy, decomposition.encoder_directions())
    sweep = intervention_sweep(toy, decomposition, settings.deltas(), run.source.inputs).cpu()   # (C, n_deltas, F)
    matched = [k for _, k in found["pairs"]]
    own = own_outputs([[i] for i, _ in found["pairs"]], settings.n_features)                    # (matched, F)
    slices = torch.cat([decoder["W_in"].transpose(1, 2), decoder["W_out"]], dim=-1)             # (C, F, 2 n_hidden)
    weights = torch.cat([toy.W_in.detach().T, toy.W_out.detach()], dim=-1)                      # (F, 2 n_hidden)
    evaluation = run.evaluate()
    metrics = {
        "seed": run.config.seed,
        "toy_loss": toy_loss,
        "reconstruction_error": evaluation["reconstruction_error"],
        "dead_subnetworks": evaluation["dead"],
        "feature_cosines": found["cosines"],
        "feature_shares": [found["share"][i, k].item() for i, k in found["pairs"]],
        "encoder_feature_cosines": found_encoder["cosines"],
        "matching": found["pairs"],
        "all_features_recovered": min(found["cosines"]) >= RECOVERED and len(found["pairs"]) == settings.n_features,
        "intervention_selectivity": intervention_selectivity(sweep.mean(1)[matched], own),
        "mmcs": mmcs(slices.cpu(), weights.cpu()),
        "history": run.history.to_dict(),
    }
    return TMSScore(metrics, found, sweep)


def rerun_rows(settings: TMSExperiment, reruns: list[list[Run]], toy_losses: list[list[float]]) -> list[list[dict]]:
    """The perturbed reruns scored as the seeds are (`score_tms`), without their histories: per perturbation, one
    row per seed."""
    return [[{k: v for k, v in score_tms(settings, run, losses[-1]).metrics.items() if k != "history"}
             for run, losses in zip(runs, toy_losses)] for runs in reruns]


def outcome(row: dict) -> list:
    """A seed's outcome (OUTCOME_KEYS): every feature recovered or not, and the number of dead subnetworks."""
    return [row["all_features_recovered"], len(row["dead_subnetworks"])]


def check_stability(per_seed: list[dict], reruns: list[list[dict]]) -> Stability:
    """The stability check (`stability.compare`): each seed's outcome against its perturbed reruns' (`rerun_rows`),
    and how far the median of each HEADLINE_KEYS number moves."""
    return compare(per_seed, reruns, OUTCOME_KEYS, HEADLINE_KEYS, outcome=outcome)


def stability_table(stability: Stability) -> list[dict]:
    """One row per seed: its outcome (every feature recovered, dead subnetworks) unperturbed and in each rerun."""
    def shown(o: list) -> str:
        return f"{'yes' if o[0] else 'no'}, {o[1]} dead"

    return [{"seed": r["seed"], "every feature, dead": shown(r["outcome"]),
             "perturbed reruns": " / ".join(map(shown, r["perturbed"])), "changed": "yes" if r["changed"] else "no"}
            for r in stability.per_seed]


def summarize(settings: TMSExperiment, per_seed: list[dict]) -> dict:
    """metrics.json's numbers: the shown seed's scores, medians and ranges [min, max] over seeds, the count of seeds
    with every feature recovered, and the per-seed rows."""
    shown = per_seed[settings.seeds.index(settings.seed)]
    return {
        "seed": settings.seed,
        **{key: shown[key] for key in ("reconstruction_error", "feature_cosines", "intervention_selectivity", "mmcs")},
        "median": medians(per_seed, HEADLINE_KEYS),
        "range": {key: [min(r[key] for r in per_seed), max(r[key] for r in per_seed)] for key in HEADLINE_KEYS},
        "median_min_feature_cosine": medians([{"min": min(r["feature_cosines"])} for r in per_seed], ["min"])["min"],
        "seeds_with_all_features_recovered": sum(r["all_features_recovered"] for r in per_seed),
        "n_seeds": len(per_seed),
        "per_seed": per_seed,
    }


def headline(metrics: dict) -> str:
    """The headline of a `summarize` result: k of n seeds with every feature recovered, each HEADLINE_KEYS median
    with its range over seeds."""
    k, n = metrics["seeds_with_all_features_recovered"], metrics["n_seeds"]
    lines = [f"seeds with every feature recovered (|cos| ≥ {RECOVERED}): {k} of {n}"]
    for key, label, digits in (("reconstruction_error", "reconstruction error", 3), ("mmcs", "MMCS", 4),
                               ("intervention_selectivity", "intervention selectivity", 1)):
        low, high = metrics["range"][key]
        lines.append(f"{label}: median {metrics['median'][key]:.{digits}f} ({low:.{digits}f}-{high:.{digits}f})")
    return "\n".join(lines)


def like_authors_metrics(settings: TMSExperiment, device: torch.device, progress: bool = True,
                         stability: bool = True) -> dict:
    """The experiment run as the authors' code runs it (`like_authors`): its toys trained, decomposed and scored,
    with `summarize`'s numbers, the settings it ran with, its seconds (toy training and L3D together) and, with
    `stability`, its stability check (`check_stability`, under "stability", with the perturbation settings)."""
    authors = like_authors(settings)
    start = time.time()
    models, losses = train_tms(authors, device)
    runs, reruns = decompose_tms(authors, models, device, progress, stability)
    per_seed = [score_tms(authors, run, toy_losses[-1]).metrics for run, toy_losses in zip(runs, losses)]
    metrics = {**summarize(authors, per_seed), "settings": authors.to_dict()}
    if reruns:
        checked = check_stability(per_seed, rerun_rows(authors, reruns, losses))
        metrics["stability"] = stability_metrics(authors, checked)
    return {**metrics, "runtime_seconds": time.time() - start}


def stability_metrics(settings: TMSExperiment, stability: Stability) -> dict:
    """metrics.json's "stability": `Stability.to_dict()` with the perturbation's settings."""
    return {**stability.to_dict(), "perturbations": settings.perturbations, "perturbation": settings.perturbation}


def seed_table(per_seed: list[dict]) -> list[dict]:
    """One row per seed: error, smallest matched |cos|, selectivity, MMCS and the dead subnetworks."""
    return [{"seed": r["seed"], "reconstruction error": f"{r['reconstruction_error']:.3f}",
             "min |cos|": f"{min(r['feature_cosines']):.3f}", "selectivity": f"{r['intervention_selectivity']:.1f}",
             "MMCS": f"{r['mmcs']:.3f}", "dead": r["dead_subnetworks"]} for r in per_seed]


def comparison(metrics: dict, settings: TMSExperiment | None = None) -> list[dict]:
    """The paper, the authors' code (3 seeds, paper settings) and this run's medians, one row per number, with the
    like-for-like run's medians (`like_authors_metrics`, metrics["like_authors"]) in a last column when present,
    and a last row with the stability check's count of changed seeds when a run has one (metrics["stability"]).
    With `settings`, the paper's and the authors' columns only when the run was made in their setting
    (`published.comparable`: 5 features in 2 dimensions, 5 rank-1 subnetworks)."""
    runs = {"this run (median)": metrics}
    if "like_authors" in metrics:
        runs["like for like (median)"] = metrics["like_authors"]
    shown = published.comparable("01_toy_model_of_superposition", settings) if settings is not None else \
        {"paper": PAPER, "authors_code": AUTHORS}
    errors = AUTHORS["reconstruction_errors"]
    rows = [{"": "reconstruction error", "paper": f"{PAPER['reconstruction_error']}",
             "authors' code": f"{median(errors)} ({' / '.join(map(str, errors))})"},
            {"": "seeds with every feature found", "paper": "-",
             "authors' code": AUTHORS["seeds_with_all_features_recovered"]},
            {"": "smallest matched |cos|", "paper": "-", "authors' code": f"{AUTHORS['min_feature_cosine']}"},
            {"": "intervention selectivity", "paper": "-", "authors' code": "-"}]
    if any("stability" in m for m in runs.values()):
        rows.append({"": "seeds whose outcome a perturbation changed", "paper": "-", "authors' code": "-"})
    for column, source in (("paper", "paper"), ("authors' code", "authors_code")):
        if source not in (shown or {}):
            for row in rows:
                del row[column]
    for column, m in runs.items():
        per_seed = m["per_seed"]
        rows[0][column] = f"{m['median']['reconstruction_error']:.3f}"
        rows[1][column] = f"{m['seeds_with_all_features_recovered']} of {len(per_seed)}"
        rows[2][column] = f"{min(min(r['feature_cosines']) for r in per_seed):.3f}"
        rows[3][column] = f"{m['median']['intervention_selectivity']:.1f}"
        if len(rows) > 4:
            s = m.get("stability")
            rows[4][column] = f"{s['n_changed']} of {s['n_seeds']}" if s else "-"
    return rows


def subnetwork_rows(found: dict, n_subnetworks: int) -> tuple[list[int], list[str], list[int | None]]:
    """Subnetworks ordered by their matched feature, then the unmatched ones: (order, row labels
    "subnetwork k (feature i)", the feature each one moves or None)."""
    order, labels = ordered_subnetworks(found["pairs"], n_subnetworks, "feature {}")
    feature_of = {k: i for i, k in found["pairs"]}
    return order, labels, [feature_of.get(k) for k in order]


def matched_directions(run: Run, found: dict) -> tuple[Tensor, Tensor]:
    """For every matched feature in order: its embedding W_in[:, i] and its subnetwork's hidden-space
    direction (column i of the subnetwork's W_in decoder component), both (n_matched, n_hidden)."""
    pairs = sorted(found["pairs"])
    columns = run.decomposition.decoder_directions()["W_in"].detach().transpose(1, 2)   # (C, F, H)
    features = run.collector.model.W_in.detach().T[[i for i, _ in pairs]]
    return features, torch.stack([columns[k, i] for i, k in pairs])
