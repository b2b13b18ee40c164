"""Notebook 02's experiment: settings, toys, decompositions and scores equal what the notebook computed inline; the
seeds and the stability check's reruns as one sweep; the headline and the stability check from scored rows."""
import copy
import dataclasses
import math
import statistics

import pytest
import torch

import l3d
from l3d.experiments import tmcs
from l3d.experiments.ground_truth import (
    aligned_then_paper,
    circuit_aligned_error,
    decoder_paths,
    evaluate_and_recover,
    low_rank_r2,
    mmcs,
    paper_r,
    path_coefficients,
    r_squared,
    squared_correlation,
)
from l3d.experiments.toy_experiment import l3d_samples
from l3d.experiments.toys import circuit_superposition, random_coefficients, sparse_features, train_toys_best_of

SMALL = {"variant": "paper_text", "seeds": [0, 1], "seed": 0, "device": "cpu", "n_features": 3, "n_hidden": 2,
         "coefficient_max": 3.0,
         "p_active": 0.3, "n_train": 64, "toy_epochs": 2, "toy_batch_size": 16, "toy_restarts": 2, "toy_compile": False,
         "n_samples": 60, "n_subnetworks": 3, "rank": 1, "top_k": 0.2, "epochs": 3, "batch_size": 10, "lr": 0.01,
         "lr_decay": 0.8, "lr_decay_every": 2, "warm_start_epochs": 1, "init": "random", "restarts": 1,
         "aligned_epochs": 2, "aligned_lr_decay_every": 1, "n_probe": 4, "n_ref": 2}


@pytest.fixture(scope="module")
def small():
    settings = tmcs.TMCSExperiment.from_parameters(SMALL)
    return settings, *tmcs.train_tmcs(settings, torch.device("cpu"))


def test_settings_are_read_from_the_notebooks_parameters_and_checked_together():
    settings = tmcs.TMCSExperiment.from_parameters(SMALL)
    assert settings.l3d.warm_start_epochs == 1 and settings.training.n_train == 64 and settings.n_probe == 4
    assert settings.to_dict()["aligned_epochs"] == 2
    with pytest.raises(ValueError) as error:
        tmcs.TMCSExperiment.from_parameters({**SMALL, "coefficient_max": 0.0, "n_probe": 1, "aligned_epochs": 0})
    assert all(name in str(error.value) for name in ("coefficient_max", "n_probe", "aligned_epochs"))
    with pytest.raises(ValueError, match="lr_decay"):
        tmcs.TMCSExperiment.from_parameters({**SMALL, "lr_decay": 0})


def test_train_tmcs_is_the_notebooks_training(small):
    settings, models, losses, coefficients = small
    expected_A, train_sets = [], []
    for s in (0, 1):
        generator = torch.Generator().manual_seed(10_000 + s)
        expected_A.append(random_coefficients(3, 3, 3.0, generator))
        train_sets.append(sparse_features(64, 3, 0.3, generator=generator))
    expected, expected_losses = train_toys_best_of(lambda: circuit_superposition(3, 2, "paper_text"),
                                                   [(x, x @ A.T) for x, A in zip(train_sets, expected_A)], [0, 1], 2,
                                                   epochs=2, batch_size=16, lr=1e-3, compile=False, progress=False)
    assert losses == expected_losses
    for A, A_expected in zip(coefficients, expected_A):
        torch.testing.assert_close(A, A_expected, rtol=0, atol=0)
    for model, reference in zip(models, expected):
        for p, q in zip(model.parameters(), reference.parameters()):
            torch.testing.assert_close(p, q, rtol=0, atol=0)


def _nan_as_text(value):
    """The value with every nan float replaced by "nan", so that == compares nan with nan as equal."""
    if isinstance(value, dict):
        return {k: _nan_as_text(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_as_text(v) for v in value]
    return "nan" if isinstance(value, float) and math.isnan(value) else value


def _own_paths_by_differences(toy, n):
    """Each input's path at x = e_j by central differences, unit-normed, on the diagonal of (n, n_out, n)."""
    paths = torch.zeros(n, n, n, dtype=torch.float64)
    h = 1e-3
    for j in range(n):
        e = torch.eye(n, dtype=torch.float64)[j]
        double = {k: v.double() for k, v in toy.state_dict().items()}

        def f(x, double=double):
            return torch.func.functional_call(toy, double, (x,))

        column = (f(e * (1 + h)) - f(e * (1 - h))) / (2 * h)
        paths[j, :, j] = column / column.norm().clamp_min(1e-30)   # an input the toy drops: a zero path
    return paths


def _notebook_score(toy, run, A, toy_loss):
    """The scoring loop of notebook 02 before it moved into the package (one seed)."""
    s = run.config.seed

    def score(decomposition):
        evaluation, found = evaluate_and_recover(decomposition, run.source, [[j] for j in range(3)], 3, n_samples=4,
                                                 n_ref=2, seed=s, first_layer="layers.0.weight")
        return evaluation, found, *path_coefficients(toy, decomposition, "layers.0.weight", "layers.1.weight")

    eye = torch.eye(3)
    evaluation, found, a_hat, reads = score(run.decomposition)
    with torch.no_grad():
        model_map = (toy(eye) - toy(torch.zeros_like(eye))).T
    decoder = run.decomposition.decoder_directions()
    samples = run.source.inputs
    gradients = run.collector(samples, generator=torch.Generator().manual_seed(s)).dense().flat()
    aligned_error, _ = circuit_aligned_error(gradients, samples > 0)
    row = {
        "seed": s, "toy_loss": toy_loss, "reconstruction_error": evaluation["reconstruction_error"],
        "final_training_error": run.history.reconstruction_error[-1], "circuit_aligned_error": aligned_error,
        "p_act": evaluation["p_act"], **found.summary(), "inputs_read": reads,
        "paper_r": paper_r(decoder_paths(run.decomposition), A),
        "paper_r2": paper_r(decoder_paths(run.decomposition), A) ** 2,
        "paper_r_own_paths": paper_r(_own_paths_by_differences(toy, 3), A),
        "r2": squared_correlation(a_hat, A),
        "r2_determination": r_squared(a_hat, A), "model_r2": squared_correlation(model_map, A),
        "r2_ceiling": low_rank_r2(A, 2), "r2_model_map": squared_correlation(a_hat, model_map),
        "mmcs": mmcs(decoder["layers.0.weight"].detach().transpose(1, 2), toy.layers[0].weight.detach().T),
    }
    fresh = l3d.Decomposition(run.collector.shapes, 3, rank=1, top_k=0.2, seed=s)
    for stage, aligned in aligned_then_paper(fresh, run.source, samples > 0, 2, 0.01, 0.8, 1, 10, seed=s):
        evaluation, found_aligned, a_aligned, _ = score(aligned)
        row.update({f"{stage}_reconstruction_error": evaluation["reconstruction_error"],
                    f"{stage}_min_impact_share": found_aligned.summary()["min_impact_share"],
                    f"{stage}_r2": squared_correlation(a_aligned, A)})
    return row, found, a_hat


def test_decompose_and_score_equal_the_notebooks_loop(small):
    settings, models, losses, coefficients = small
    runs, reruns = tmcs.decompose_tmcs(settings, models, torch.device("cpu"), stability=False, progress=False)
    assert reruns == [] and [r.config.seed for r in runs] == settings.seeds
    rows = []
    for toy, toy_losses, A, run in zip(models, losses, coefficients, runs):
        assert run.collector.model is toy and run.config.chunk_size == 60 and run.config.warm_start_epochs == 1
        twin = copy.deepcopy(run)          # scoring draws on from the run's source: the twin starts where it does
        score = tmcs.score_tmcs(settings, run, A, toy_losses[-1])
        expected, found, a_hat = _notebook_score(toy, twin, A, toy_losses[-1])
        ours = score.metrics.pop("paper_r_own_paths")
        assert ours == pytest.approx(expected.pop("paper_r_own_paths"), abs=1e-6)   # central differences: to 1e-6
        assert score.metrics.pop("start_errors") == []                               # one start
        assert _nan_as_text(score.metrics) == _nan_as_text(expected)
        score.metrics["paper_r_own_paths"] = ours
        assert score.found.matches == found.matches
        torch.testing.assert_close(score.a_hat, a_hat, rtol=0, atol=0)
        rows.append(score.metrics)
    median = tmcs.summarize(rows)
    for key in tmcs.MEDIAN_KEYS + ["aligned_r2", "aligned_then_paper_min_impact_share"]:
        assert _nan_as_text(median[key]) == _nan_as_text(statistics.median(float(r[key]) for r in rows))
    assert median["all_matched_seeds"] == sum(r["all_matched"] for r in rows)
    assert median["one_per_circuit_seeds"] == sum(r["one_per_circuit"] for r in rows) and median["n_seeds"] == 2
    assert "with the labels" in tmcs.describe(rows[0], 2) and f"{rows[0]['r2']:.3f}" in tmcs.describe(rows[0], 2)


def test_scoring_every_seed_at_once_trains_their_labelled_diagnostics_as_one_stack(small):
    """`score_seeds`: every score but the labelled diagnostic's stages exactly what scoring each seed alone gives
    (its references drawn in the same order); the stages, trained as one stack, to float32 rounding."""
    settings, models, losses, coefficients = small
    runs, _ = tmcs.decompose_tmcs(settings, models, torch.device("cpu"), stability=False, progress=False)
    twins = copy.deepcopy(runs)
    together = tmcs.score_seeds(settings, runs, coefficients, [toy_losses[-1] for toy_losses in losses])
    for twin, A, toy_losses, score in zip(twins, coefficients, losses, together):
        alone = tmcs.score_tmcs(settings, twin, A, toy_losses[-1]).metrics
        assert list(score.metrics) == list(alone)
        staged = [k for k in alone if k.startswith(tmcs.STAGES)]
        assert len(staged) == 6
        for key in staged:
            assert score.metrics[key] == pytest.approx(alone[key], rel=1e-3, abs=1e-5, nan_ok=True), key
        assert _nan_as_text({k: v for k, v in score.metrics.items() if k not in staged}) == _nan_as_text(
            {k: v for k, v in alone.items() if k not in staged})


def test_decompose_tmcs_is_one_sweep_of_the_seeds_and_their_perturbed_reruns_each_equal_to_it_alone(small):
    settings, models = small[:2]
    settings = dataclasses.replace(settings, perturbations=2)
    runs, reruns = tmcs.decompose_tmcs(settings, models, torch.device("cpu"), progress=False)
    assert len(reruns) == 2 and all(len(rerun) == 2 for rerun in reruns)
    for s, toy, run in zip(settings.seeds, models, runs):
        alone = l3d.decompose(toy, l3d_samples(settings, s, 3), "*", settings.l3d_config(s), progress=False)
        assert torch.equal(run.source.inputs, alone.source.inputs) and run.config == alone.config
        # a stack of members computes each one's sums in another order: float32 rounding, rel 1e-5
        assert run.history.reconstruction_error == pytest.approx(alone.history.reconstruction_error, rel=1e-5)
    for p, rerun in enumerate(reruns, start=1):
        for s, toy, run in zip(settings.seeds, models, rerun):
            assert run.config.seed == s and run.config.start_noise == 1e-6 and run.config.start_noise_seed == p
            moved = [(q - t).abs().max() / t.abs().max()
                     for q, t in zip(run.collector.model.parameters(), toy.parameters())]
            assert 0 < max(moved) < 1e-5        # the toy's weights perturbed by a relative 1e-6 (6 sigma: < 1e-5)
    best = tmcs.decompose_tmcs(settings, models, torch.device("cpu"), stability=False, progress=False, restarts=2,
                               restart_epochs=None)[0]
    assert all(len(run.start_errors) == 2 and run.history.reconstruction_error[-1] == min(run.start_errors)
               for run in best)             # best of 2 full starts by the final training error


def test_reruns_are_scored_without_the_labelled_diagnostics_and_otherwise_alike(small):
    settings, models, losses, coefficients = small
    run = tmcs.decompose_tmcs(settings, models[:1], torch.device("cpu"), stability=False, progress=False)[0][0]
    twin = copy.deepcopy(run)
    full = tmcs.score_tmcs(settings, run, coefficients[0], losses[0][-1]).metrics
    cheap = tmcs.score_tmcs(settings, twin, coefficients[0], losses[0][-1], diagnostics=False).metrics
    labelled = {k for k in full if k == "circuit_aligned_error" or k.startswith("aligned")}
    assert labelled == {"circuit_aligned_error"} | {f"{stage}_{key}"
                                                    for stage in tmcs.STAGES for key in tmcs.STAGE_KEYS}
    assert _nan_as_text(cheap) == _nan_as_text({k: v for k, v in full.items() if k not in labelled})
    assert ("one direction per input" not in tmcs.describe(cheap, 2)
            and "one direction per input" in tmcs.describe(full, 2))
    assert set(tmcs.summarize([cheap, cheap])) == {k for k in tmcs.MEDIAN_KEYS if k != "circuit_aligned_error"} | {
        "all_matched_seeds", "one_per_circuit_seeds", "n_seeds"}


def _row(seed, one_per_circuit, paper_r, error=0.06):
    return {"seed": seed, "all_matched": True, "one_per_circuit": one_per_circuit, "n_live": 10,
            "reconstruction_error": error, "paper_r": paper_r, "r2": 0.6, "mmcs": 0.8, "min_impact_share": 0.8}


def test_headline_states_k_of_n_and_median_with_range_and_the_stability_check_counts_flips():
    rows = [_row(0, True, 0.95, 0.05), _row(1, True, 0.90, 0.09), _row(2, False, 0.70, 0.07)]
    text = tmcs.headline(rows)
    assert "one subnetwork per input: 2 of 3 seeds; every input matched to a distinct live subnetwork: 3 of 3" in text
    assert "paper_r: median 0.900 (0.700-0.950)" in text and "reconstruction_error: median 0.070 (0.050-0.090)" in text
    same = [dict(r) for r in rows]
    flipped = [dict(r) for r in rows]
    flipped[1].update(one_per_circuit=False, paper_r=0.70)          # seed 1 loses an input's subnetwork
    check = tmcs.stability(rows, [same, flipped])
    assert check.keys == list(tmcs.OUTCOME_KEYS) and check.changed == [1] and check.changed_rate == pytest.approx(1 / 6)
    assert check.median_shift["paper_r"] == pytest.approx(0.90 - 0.70) and check.median_shift["mmcs"] == 0
    assert set(check.median_shift) == set(tmcs.HEADLINE_KEYS)
    table = check.rows()
    assert [r["changed"] for r in table] == [False, True, False]
    assert (table[1]["perturbed 2"] == "True, False, 10"
            and table[1]["outcome (all_matched, one_per_circuit, n_live)"] == "True, True, 10")


def test_summarize_leaves_out_the_labelled_diagnostic_when_it_did_not_run():
    row = {key: 0.5 for key in tmcs.MEDIAN_KEYS} | {"all_matched": True, "one_per_circuit": False}
    median = tmcs.summarize([row, {**row, "r2": 0.7}])
    assert (median["r2"] == pytest.approx(0.6) and median["all_matched_seeds"] == 2
            and median["one_per_circuit_seeds"] == 0)
    assert not any(key.startswith("aligned") for key in median)
