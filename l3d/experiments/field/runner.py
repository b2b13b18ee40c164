"""Running notebook 07: the toys trained, every setting's seeds (and their perturbed reruns) decomposed as one
`l3d.sweep`, the controls, the sparser-samples variant and the residual MLP decomposed and scored, the stability
check, and the medians per setting (`summarize`)."""
from __future__ import annotations

import copy
import dataclasses
import time
import warnings
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ...gradients import GradientCollector
from ...pipeline import L3DConfig, Run, decompose, sweep
from ...refit import Refit, refit_
from ...runtime.medians import median
from ...train import GradientSource
from ..stability import Stability, compare, perturbed
from ..toy_models import TMS
from .metrics import median_min_success, resid_scores, tms_scores
from .models import ResidMLP, benchmark_features
from .settings import TMS_SIZES, BenchmarkSetting, FieldExperiment
from .training import random_tms, train_benchmark_tms, train_resid_mlp

OUTCOME_KEYS = ("recovered", "all_recovered", "dead")   # a decomposition's outcome (the count of dead subnetworks)
MEDIAN_KEYS = ("mmcs", "ml2r", "reconstruction_error")  # a setting's medians over seeds


def l3d_samples(settings: FieldExperiment, n_features: int, seed: int, p_active: float | None = None,
                n_samples: int | None = None, low: float = 0.0) -> Tensor:
    """The L3D samples of `seed` (generator seeded 20,000 + seed): the benchmarks' data, features on with probability
    l3d_p_active (or the given p_active), all-zero samples kept; n_samples of them (None: settings.n_samples, the
    5-2 settings' count; `decompose_tms` passes each setting's own, `BenchmarkSetting.n_samples`)."""
    p = p_active if p_active is not None else settings.l3d_p_active or settings.toy.p_active
    return benchmark_features(n_samples or settings.n_samples, n_features, p, low=low,
                              generator=torch.Generator().manual_seed(20_000 + seed))


def score_row(run: Run, scores: dict, setting: str, seed: int, seconds: float) -> dict:
    """A decomposition's row for metrics.json: the setting, seed, reconstruction error (one more pass), dead
    subnetworks, the epochs at which resampling re-seeded a subnetwork, the field's metrics and our recovery
    numbers, and the seconds it took."""
    evaluation = run.evaluate()
    return {"setting": setting, "seed": seed, "reconstruction_error": evaluation["reconstruction_error"],
            "dead": evaluation["dead"], "reseeded_at": [r["epoch"] for r in run.history.resampled if r["replaced"]],
            "seconds": seconds,
            **{k: scores[k] for k in ("mmcs", "ml2r", "recovered", "all_recovered", "max_cos", "l2_ratio",
                                      "matched_cos", "pairs")}}


def without_gradients(model: nn.Module, inputs: Tensor, config: L3DConfig) -> str | None:
    """Why `model` has nothing to decompose on `inputs`: every per-sample gradient (of every tensor, references
    drawn with config.seed) is zero, as for an untrained toy whose ReLU outputs are zero on every sample; None when
    some gradient is not zero."""
    collector = GradientCollector(model, "*", divergence=config.divergence, reference=config.reference,
                                  engine=config.engine)
    with warnings.catch_warnings():   # the collector's warning about zero gradients: what this reports
        warnings.simplefilter("ignore")
        grads = collector(inputs, generator=torch.Generator().manual_seed(config.seed))
    if grads.sq_norms().sum() > 0:
        return None
    return f"every per-sample gradient of its {inputs.shape[0]} samples is zero (the sum of ||g||^2 is 0)"


def decompose_tms(settings: FieldExperiment, setting: str | BenchmarkSetting, toys: Sequence[TMS],
                  device: torch.device,
                  label: str | None = None, progress: bool = True, skipped: list[dict] | None = None,
                  perturbations: int = 0) -> tuple[list[dict], dict[int, Run], list[dict]]:
    """L3D of one TMS setting's toy per seed (every tensor, the identity layer too for `-id`), scored by
    `tms_scores`, and of `perturbations` reruns of each with the toy's weights and the start perturbed by a relative
    settings.perturbation (drawn as `toy_experiment.decompose_toys` draws them): all of it one `l3d.sweep`. setting:
    a name (its values: `FieldExperiment.benchmark`) or a `BenchmarkSetting`.

    Returns a row per seed (`score_row`; "seconds": the sweep's time, reruns included, shared evenly among the
    seeds), the runs by seed, and a row per rerun with its "perturbation" (1, 2, ...). With refit_min_share each
    seed and rerun also has a row labelled "<label> refit": the same decomposition after `l3d.refit.refit_` (the
    runs keep the trained one). skipped: a list to collect the seeds whose toy gives no gradient at all
    ({"setting", "seed", "reason"}: `without_gradients`), which then get no row; None: such a toy is an error (from
    `l3d.fit`)."""
    bench = setting if isinstance(setting, BenchmarkSetting) else settings.benchmark(setting)
    n_features, own = bench.n_features, bench.l3d_changes()
    label = label or bench.name
    live = []                                                   # (seed, model, its L3D samples)
    for seed, toy in zip(settings.seeds, toys):
        model = (toy.with_identity() if bench.identity else toy).to(device)
        x = l3d_samples(settings, n_features, seed, bench.p_active, bench.n_samples).to(device)
        config = settings.l3d_config(n_features, x.shape[0], seed, **own)
        why = skipped is not None and without_gradients(model, x, config)
        if why:
            skipped.append({"setting": label, "seed": seed, "reason": why})
        else:
            live.append((seed, model, x))
    if not live:
        return [], {}, []
    jobs = [(p, seed, perturbed(model, settings.perturbation if p else 0.0, 1000 * seed + p), x)
            for p in range(perturbations + 1) for seed, model, x in live]      # p 0: the seeds themselves
    configs = [settings.l3d_config(n_features, x.shape[0], seed, **own,
                                   start_noise=settings.perturbation if p else 0.0, start_noise_seed=p)
               for p, seed, _, x in jobs]
    started = time.perf_counter()
    runs = sweep([model for _, _, model, _ in jobs], [x for *_, x in jobs], "*", configs, progress=progress)
    seconds = (time.perf_counter() - started) / len(live)
    scored = [_scored(settings, run, model, x, label, seed, seconds, {"perturbation": p} if p else {})
              for (p, seed, model, x), run in zip(jobs, runs)]                # [row, refit row] per run
    every = [pair[0] for pair in scored] + [row for pair in scored for row in pair[1:]]
    return ([r for r in every if "perturbation" not in r], dict(zip([seed for seed, *_ in live], runs)),
            [r for r in every if "perturbation" in r])


def _scored(settings: FieldExperiment, run: Run, model: TMS, inputs: Tensor, label: str, seed: int,
            seconds: float, extra: dict) -> list[dict]:
    """A decomposition's row (`score_row` of `tms_scores`, with `extra`), and with refit_min_share the row of its
    refitted copy, labelled "<label> refit" (seconds: the decomposition's and the refit's)."""
    scores = tms_scores(model, run.decomposition.decoder_directions())
    rows = [{**score_row(run, scores, label, seed, seconds), **extra}]
    if settings.refit_min_share is not None:
        started = time.perf_counter()
        refitted, done = refit_decomposition(run, inputs, settings.refit_min_share)
        rows.append({**score_row(refitted, tms_scores(model, refitted.decomposition.decoder_directions()),
                                 f"{label} refit", seed, seconds + time.perf_counter() - started),
                     "refit": done.to_dict(), **extra})
    return rows


def check_stability(rows: Sequence[dict], reruns: Sequence[dict]) -> dict[str, Stability]:
    """The stability check of every setting that has reruns (`decompose_tms`'s third result): per setting label,
    `stability.compare` of each seed's outcome (OUTCOME_KEYS: features recovered, all of them or not, the count of
    dead subnetworks) with its reruns', and how far the MEDIAN_KEYS medians move."""
    def outcome(row: dict) -> list:
        return [row["recovered"], row["all_recovered"], len(row["dead"])]

    found = {}
    for setting in dict.fromkeys(r["setting"] for r in reruns):
        mine = [r for r in rows if r["setting"] == setting]
        perturbations = sorted({r["perturbation"] for r in reruns if r["setting"] == setting})
        by_seed = {(r["perturbation"], r["seed"]): r for r in reruns if r["setting"] == setting}
        found[setting] = compare(mine, [[by_seed[p, r["seed"]] for r in mine] for p in perturbations], OUTCOME_KEYS,
                                 MEDIAN_KEYS, outcome=outcome)
    return found


def stability_metrics(settings: FieldExperiment, stability: dict[str, Stability]) -> dict:
    """metrics.json's "stability": per setting `Stability.to_dict()`, the counts over all of them (changed
    decompositions, of how many), and the perturbation's settings."""
    per_setting = {setting: s.to_dict() for setting, s in stability.items()}
    return {"settings": per_setting, "n_changed": sum(s["n_changed"] for s in per_setting.values()),
            "n_decompositions": sum(s["n_seeds"] for s in per_setting.values()),
            "perturbations": settings.perturbations, "perturbation": settings.perturbation}


def refit_decomposition(run: Run, inputs: Tensor, min_share: float) -> tuple[Run, Refit]:
    """A copy of `run` with its decomposition refitted (`l3d.refit.refit_`) on `inputs`, references drawn with
    config.seed + 2, and what the refit did; the run's own decomposition is left as trained."""
    decomposition = copy.deepcopy(run.decomposition)
    source = GradientSource(run.collector, inputs, run.config.batch_size, chunk_size=run.config.chunk_size,
                            seed=run.config.seed + 2)
    done = refit_(decomposition, source, min_share=min_share)
    return dataclasses.replace(run, decomposition=decomposition), done


def decompose_sparse(settings: FieldExperiment, setting: str, toys: Sequence[TMS], device: torch.device,
                     progress: bool = True) -> tuple[list[dict], dict[int, Run]]:
    """The sparser-samples variant of one 40-feature setting (`SparseSamples`): `decompose_tms` on its samples,
    rows labelled "<setting> sparse"."""
    s = settings.sparse
    sparse = dataclasses.replace(settings.benchmark(setting), p_active=s.p_active, n_samples=s.n_samples,
                                 top_k=s.top_k, epochs=s.epochs)
    rows, runs, _ = decompose_tms(settings, sparse, toys, device, label=f"{setting} sparse", progress=progress)
    return rows, runs


def train_all_tms(settings: FieldExperiment, progress: bool = True) -> dict[str, tuple[list[TMS], list[float]]]:
    """The trained toys of every size the settings use, one per seed: size ("5-2", "40-10") -> (toys, losses)."""
    sizes = sorted({s.removesuffix("-id") for s in settings.tms_settings}, key=lambda s: TMS_SIZES[s])
    toys = {}
    for size in sizes:
        b, t = settings.benchmark(size), settings.toy
        toys[size] = train_benchmark_tms(b.n_features, b.n_hidden, settings.seeds, t.steps, b.toy_batch_size, t.lr,
                                         t.p_active, zero_bias=b.zero_bias, restarts=b.toy_restarts,
                                         progress=progress)
    return toys


def decompose_controls(settings: FieldExperiment, size: str, device: torch.device,
                       progress: bool = True) -> tuple[list[dict], dict[int, Run], list[dict]]:
    """The control: `decompose_tms` of the untrained toy of `size` (SPD's initialization) of each of
    control_seeds, rows labelled "<size> random". Returns the rows, the runs and the seeds skipped because their
    untrained toy gives no gradient at all (its ReLU outputs are zero on every sample: nothing to decompose)."""
    b = settings.benchmark(size)
    seeds = settings.seeds if settings.control_seeds is None else settings.control_seeds
    toys = [random_tms(b.n_features, b.n_hidden, seed, zero_bias=b.zero_bias) for seed in seeds]
    skipped: list[dict] = []
    rows, runs, _ = decompose_tms(dataclasses.replace(settings, seeds=seeds, seed=seeds[0]), size, toys, device,
                                  label=f"{size} random", progress=progress, skipped=skipped)
    return rows, runs, skipped


def decompose_resid(settings: FieldExperiment, device: torch.device, progress: bool = True) -> tuple[list[dict], dict]:
    """Train and decompose the residual MLP per resid seed (mlp_in and mlp_out, n_features subnetworks), scored by
    `resid_scores`; also the untrained model of each seed as its control. Returns rows (setting "resid-mlp" and
    "resid-mlp random") and {seed: (model, run)} of the trained ones."""
    r = settings.resid
    rows, kept = [], {}
    for seed in r.seeds:
        trained, loss = train_resid_mlp(seed, r.n_features, r.d_embed, r.d_mlp, r.steps, r.batch_size, r.lr,
                                        r.p_active, progress=progress)
        torch.manual_seed(seed)
        untrained = ResidMLP(r.n_features, r.d_embed, r.d_mlp)
        inputs = l3d_samples(settings, r.n_features, seed, r.p_active, r.n_samples, low=-1.0).to(device)
        for label, model in (("resid-mlp", trained), ("resid-mlp random", untrained)):
            model = model.to(device)
            config = settings.l3d_config(r.n_features, r.n_samples, seed, top_k=r.top_k, epochs=r.epochs,
                                         engine="auto", lr_decay_every=max(1, r.epochs // 10))
            started = time.perf_counter()
            run = decompose(model, inputs, ["layers.0.mlp_in.weight", "layers.0.mlp_out.weight"], config,
                            progress=progress)
            row = score_row(run, resid_scores(model, run.decomposition.decoder_directions()), label, seed,
                            time.perf_counter() - started)
            rows.append({**row, "toy_loss": loss if model is trained else None})
            if model is trained:
                kept[seed] = (model, run)
    return rows, kept


def summarize(rows: Sequence[dict]) -> dict[str, dict]:
    """Per setting (in the order met): `median_min_success` of MMCS with ML2R, the median reconstruction error and
    its range, the fewest features recovered in a seed, and the decompositions' CPU minutes."""
    summary: dict[str, dict] = {}
    for setting in dict.fromkeys(r["setting"] for r in rows):
        mine = [r for r in rows if r["setting"] == setting]
        errors = sorted(r["reconstruction_error"] for r in mine)
        summary[setting] = {**median_min_success(mine), "reconstruction_error_median": median(errors),
                            "reconstruction_error_min": errors[0], "reconstruction_error_max": errors[-1],
                            "fewest_recovered": min(r["recovered"] for r in mine),
                            "n_features": len(mine[0]["max_cos"]),
                            "minutes": sum(r["seconds"] for r in mine) / 60}
    return summary
