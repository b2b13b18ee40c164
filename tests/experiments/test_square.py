"""Notebook 04's experiment: settings, toys, the (C, R) grid, interventions, the label diagnostic and medians, each
against the computation the notebook made inline before it moved into l3d.experiments.square; every (C, R) one sweep
over the seeds, the main one with the stability check's reruns; the headline and the check from scored rows."""
import copy
import itertools
import json
import math
import statistics

import pytest
import torch

import l3d
from l3d.experiments import square
from l3d.experiments.ground_truth import (
    aligned_then_paper,
    circuit_aligned_error,
    evaluate_and_recover,
    intervention_selectivity,
    recovery_from_impact,
)
from l3d.experiments.square import Square
from l3d.experiments.toys import sparse_features, square_mlp, train_toys_best_of

TINY = {"variant": "paper_text", "seeds": [0, 1], "seed": 0, "p_active": 0.3, "n_features": 3, "width": 3, "depth": 2,
        "n_train": 64, "toy_epochs": 2,
        "toy_restarts": 2, "toy_compile": False, "n_subnetworks": 3, "rank": 2, "sweep_subnetworks": [2, 3],
        "n_samples": 60, "epochs": 3, "batch_size": 8, "lr_decay_every": 2, "warm_start_epochs": 1, "n_probe": 6,
        "n_ref": 2, "n_deltas": 3, "aligned_epochs": 2, "aligned_lr_decay_every": 1, "hidden_tensors": ["layers.1.*"],
        "perturbations": 1}
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    s = Square.from_parameters(TINY)
    models, losses, mse = square.train_square_toys(s, CPU)
    out = tmp_path_factory.mktemp("square")
    runs, per_seed, rerun_rows = square.decompose_grid(s, models, losses, mse, CPU, out)
    return s, models, losses, mse, runs, per_seed, rerun_rows, out


def test_settings_grid_and_checks():
    s = Square.from_parameters(TINY)
    assert s.main == (3, 2) and s.grid() == [(3, 2), (2, 1), (3, 1)] and s.features == [[0], [1], [2]]
    assert Square.from_parameters({**TINY, "sweep_rank": 2}).grid() == [(3, 2), (2, 2)]   # the main one once
    sweeps = s.interventions()
    assert list(sweeps) == ["interventions", "interventions_large_delta", "interventions_hidden_only",
                            "interventions_pairs"]
    assert torch.equal(sweeps["interventions_large_delta"][0], torch.linspace(-2.0, 2.0, 3))
    assert sweeps["interventions_hidden_only"][1] == ["layers.1.*"] and sweeps["interventions_pairs"][2]
    assert s.to_dict()["hidden_tensors"] == ["layers.1.*"] and s.to_dict()["training"]["restarts"] == 2
    with pytest.raises(ValueError) as caught:
        Square.from_parameters({**TINY, "sweep_subnetworks": [], "max_delta": 0.0, "n_deltas": 1})
    text = str(caught.value)
    assert ("sweep_subnetworks must list" in text and "max_delta must be > 0" in text
            and "n_deltas must be >= 2" in text)
    with pytest.raises(ValueError, match="lr_decay must be > 0 and <= 1"):
        Square.from_parameters({**TINY, "lr_decay": 1.5})
    # -p on the command line
    assert Square.from_parameters({**TINY, "sweep_subnetworks": "[2, 4]"}).sweep_subnetworks == [2, 4]


def test_toys_are_trained_as_the_notebook_trained_them(experiment):
    s, models, losses, mse = experiment[:4]
    sets = [sparse_features(64, 3, 0.3, low=-1.0, high=1.0, generator=torch.Generator().manual_seed(10_000 + seed))
            for seed in s.seeds]
    old_models, old_losses = train_toys_best_of(lambda: square_mlp(3, 3, 2, "paper_text"), [(x, x ** 2) for x in sets],
                                                s.seeds, 2, epochs=2, batch_size=32, lr=1e-3, compile=False)
    assert losses == old_losses
    with torch.no_grad():
        assert mse == [(toy(x) - x ** 2).pow(2).mean(0).tolist() for toy, x in zip(old_models, sets)]
    for new, old in zip(models, old_models):
        assert all(torch.equal(p, q) for p, q in zip(new.parameters(), old.parameters()))


def test_decompose_grid_scores_each_run_as_the_notebook_did(experiment):
    s, models, losses, mse, runs, per_seed = experiment[:6]
    assert ([(r["seed"], r["n_subnetworks"], r["rank"]) for r in per_seed]
            == [(seed, C, R) for C, R in s.grid() for seed in s.seeds])
    seed, toy = 1, models[1]
    inputs = sparse_features(60, 3, 0.3, low=-1.0, high=1.0, generator=torch.Generator().manual_seed(20_000 + seed),
                             drop_zero=False)
    config = l3d.L3DConfig(n_subnetworks=2, rank=1, epochs=3, batch_size=8, chunk_size=56, lr_decay_every=2,
                           warm_start_epochs=1, seed=seed)
    run = l3d.decompose(toy, inputs, "*", config, progress=False)      # alone; the grid ran it in a sweep of the seeds
    evaluation, found = evaluate_and_recover(run.decomposition, run.source, s.features, 3, low=-1.0, high=1.0,
                                             n_samples=6, n_ref=2, seed=seed, first_layer="layers.0.weight")
    row = next(r for r in per_seed if (r["seed"], r["n_subnetworks"], r["rank"]) == (1, 2, 1))
    # a sweep sums each member's numbers in another order than a run alone: equal to float32 rounding (rel 1e-5)
    assert row["reconstruction_error"] == pytest.approx(evaluation["reconstruction_error"], rel=1e-5)
    assert row["p_act"] == pytest.approx(evaluation["p_act"], abs=1e-12)          # counts of the same choices
    assert row["final_training_error"] == pytest.approx(run.history.reconstruction_error[-1], rel=1e-5)
    assert row["toy_loss"] == losses[1][-1] and row["toy_output_mse"] == mse[1] and row["start_errors"] == []
    summary = found.summary()
    assert row["matches"] == summary["matches"]
    assert row["impact_share"] == pytest.approx(summary["impact_share"], abs=1e-5)
    assert torch.equal(runs[1, 2, 1][0].source.inputs, inputs) and runs[1, 2, 1][0].collector.model is toy


def test_the_main_setting_carries_the_stability_checks_reruns_scored_like_the_runs(experiment):
    s, models, _, _, runs, per_seed, rerun_rows, out = experiment
    main = [square.main_row(s, per_seed, seed) for seed in s.seeds]
    assert len(rerun_rows) == s.perturbations == 1 and [r["seed"] for r in rerun_rows[0]] == s.seeds
    for row, moved in zip(main, rerun_rows[0]):
        own = ("variant", "n_subnetworks", "rank", "toy_loss", "toy_output_mse")   # the run's, not its score's
        assert set(moved) == {k for k in row if k not in own}
        # a relative 1e-6 on the toy and the start moves three epochs' error by far less than 1e-3, but moves it
        assert moved["final_training_error"] != row["final_training_error"]
        assert moved["final_training_error"] == pytest.approx(row["final_training_error"], rel=1e-3)
    check = square.stability(main, rerun_rows)
    assert check.keys == list(square.OUTCOME_KEYS) and set(check.median_shift) == set(square.HEADLINE_KEYS)
    assert [r["outcome"] for r in check.per_seed] == [[r[k] for k in square.OUTCOME_KEYS] for r in main]
    saved = json.loads((out / f"decomposition_seed1_C{s.main[0]}_rank{s.main[1]}" / "run.json").read_text())
    assert saved["config"]["seed"] == 1 and saved["config"]["start_noise"] == 0   # the unperturbed run is saved
    _, rows, none = square.decompose_grid(s, models, *experiment[2:4], CPU, None, grid=[(2, 1)], stability=True)
    assert none == [] and len(rows) == 2                      # only the main (C, R) is checked; out_dir None: not saved


def test_the_other_variant_is_one_sweep_with_its_own_conventions(tmp_path):
    s = Square.from_parameters({**TINY, "variant": "authors", "width": 3, "seeds": [0, 1]})
    rows = square.other_variant(s, CPU, tmp_path)
    assert ([(r["seed"], r["variant"], (r["n_subnetworks"], r["rank"])) for r in rows]
            == [(0, "paper_text", s.main), (1, "paper_text", s.main)])
    folder = tmp_path / f"other_variant_seed1_C{s.main[0]}_rank{s.main[1]}"
    config = json.loads((folder / "run.json").read_text())["config"]
    assert (config["divergence"], config["engine"]) == ("mse", "dense")   # the paper-text convention, swept dense


def _row(seed, one_per_circuit, n_dead, error, impact_share=0.8):
    return {"seed": seed, "all_matched": True, "one_per_circuit": one_per_circuit, "n_dead": n_dead,
            "reconstruction_error": error, "min_impact_share": impact_share, "mmcs": 0.7}


def test_headline_states_k_of_n_and_median_with_range():
    rows = [_row(0, True, 0, 0.31), _row(1, False, 1, 0.35, 0.4), _row(2, True, 0, 0.33)]
    text = square.headline(rows)
    assert ("one subnetwork per input: 2 of 3 seeds; every input matched to a distinct live subnetwork: 3 of 3; "
            "no dead subnetwork: 2 of 3") in text
    assert ("reconstruction_error: median 0.330 (0.310-0.350)" in text
            and "min_impact_share: median 0.800 (0.400-0.800)" in text)
    moved = [dict(r) for r in rows]
    moved[2].update(n_dead=1)
    check = square.stability(rows, [moved])
    assert check.changed == [2] and check.median_shift == {"reconstruction_error": 0, "min_impact_share": 0, "mmcs": 0}


def test_intervention_groups_and_own_outputs_as_the_notebook_built_them():
    found = recovery_from_impact(torch.tensor([[4.0, 0.0, 1.0], [0.0, 3.0, 0.0], [1.0, 0.0, 5.0]]), [0.1, 0.1, 0.1])
    for pairs in (False, True):
        groups = square.intervention_groups(found, pairs)
        matched = sorted(found.subnetwork_of)
        assert groups == (list(itertools.combinations(matched, 2)) if pairs else [(j,) for j in matched])
        own = torch.zeros(len(groups), 4, dtype=torch.bool)
        for row, g in enumerate(groups):
            own[row, list(g)] = True
        assert torch.equal(square.own_outputs(groups, 4), own)
    assert square.panel_titles([(0,), (1, 2)], found) == ["subnetwork 0", "subnetworks 1 + 2"]


def test_intervene_matched_gives_the_notebooks_sweeps_and_selectivity(experiment):
    s, models, _, _, runs = experiment[:5]
    run, found = runs[0, 3, 2]
    result = square.intervene_matched(s, models[0], run, found)
    deltas, tensors, pairs = s.interventions()["interventions_hidden_only"]
    groups = [(j,) for j in sorted(found.subnetwork_of)]
    sweep = l3d.intervention_sweep(models[0], run.decomposition, deltas, run.source.inputs,
                                   subnetworks=[[found.subnetwork_of[j] for j in g] for g in groups], tensors=tensors)
    assert torch.equal(result["interventions_hidden_only"]["sweep"], sweep.cpu())
    assert result["interventions_hidden_only"]["selectivity"] == intervention_selectivity(
        sweep.mean(1), square.own_outputs(groups, 3))


def test_label_diagnostic_is_the_notebooks_aligned_then_paper(experiment):
    s, models, _, _, runs = experiment[:5]
    run, _ = runs[1, 3, 2]
    reference = copy.deepcopy(run.source)       # the diagnostic draws on from the source's generator
    additions, stages = square.label_diagnostic(s, models[1], run, 1)
    inputs = reference.inputs
    gradients = run.collector(inputs, generator=torch.Generator().manual_seed(1)).dense().flat()
    assert additions["circuit_aligned_error"] == circuit_aligned_error(gradients, inputs != 0)[0]
    assert (additions["circuit_aligned_error_by_sign"]
            == circuit_aligned_error(gradients, torch.cat([inputs > 0, inputs < 0], 1))[0])
    fresh = l3d.Decomposition(run.collector.shapes, 3, rank=2, top_k=0.1, seed=1)
    for stage, decomposition in aligned_then_paper(fresh, reference, inputs != 0, 2, 0.01, 0.8, 1, 8, seed=1):
        evaluation, found = evaluate_and_recover(decomposition, reference, s.features, 3, low=-1.0, high=1.0,
                                                 n_samples=6, n_ref=2, seed=1, first_layer="layers.0.weight")
        assert additions[f"{stage}_reconstruction_error"] == evaluation["reconstruction_error"]
        assert additions[f"{stage}_impact_share"] == found.impact_share and stages[stage][1].matches == found.matches
        assert additions[f"{stage}_min_input_purity"] == found.summary()["min_input_purity"]
    assert list(stages) == ["aligned", "aligned_then_paper"]


def test_label_diagnostics_of_every_seed_train_as_one_stack(experiment):
    """Both seeds' label diagnostics at once (one stack): what each gives alone, the circuit-aligned errors exactly,
    the stages' scores to float32 rounding."""
    s, models, _, _, runs = experiment[:5]
    main = [runs[seed, 3, 2][0] for seed in (0, 1)]
    together = square.label_diagnostics(s, models[:2], copy.deepcopy(main), [0, 1])
    for seed, run, (additions, stages) in zip((0, 1), copy.deepcopy(main), together):
        alone, alone_stages = square.label_diagnostic(s, models[seed], run, seed)
        assert list(additions) == list(alone)
        assert list(stages) == list(alone_stages) == ["aligned", "aligned_then_paper"]
        assert additions["circuit_aligned_error"] == alone["circuit_aligned_error"]
        for key, value in alone.items():
            assert additions[key] == pytest.approx(value, rel=1e-3, abs=1e-5, nan_ok=True), key
        for stage, (decomposition, found) in stages.items():
            assert found.matches == alone_stages[stage][1].matches
            for a, b in zip(decomposition.parameters(), alone_stages[stage][0].parameters()):
                torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)


def test_medians_by_setting_match_the_notebooks_aggregation():
    s = Square.from_parameters({**TINY, "seeds": [0, 1, 2]})
    names = [f"selectivity_{name}" for name in s.interventions()]
    rows = [{"seed": seed, "n_subnetworks": C, "rank": R, "all_matched": seed != 1, "one_per_circuit": seed == 0,
             **{key: float(seed + C + 10 * i) for i, key in enumerate(square.MEDIAN_KEYS)},
             **({name: float(seed * i) for i, name in enumerate(names)} if (C, R) == s.main else {})}
            for seed in s.seeds for C, R in s.grid()]
    median = square.medians_by_setting(s, rows)

    def median_of(key, C, R):
        return statistics.median(float(r[key]) for r in rows if (r["n_subnetworks"], r["rank"]) == (C, R))

    for C, R in s.grid():
        expected = {key: median_of(key, C, R) for key in square.MEDIAN_KEYS}
        expected.update(all_matched_seeds=2, one_per_circuit_seeds=1, n_seeds=3)
        if (C, R) == s.main:
            expected.update({name: median_of(name, C, R) for name in names})
            assert median[f"{C}x{R}"] == {"paper_text": expected}
        else:
            assert median[f"{C}x{R}"] == expected
    other = [{**r, "reconstruction_error": 7.0} for r in rows if (r["n_subnetworks"], r["rank"]) == s.main]
    both = square.medians_by_setting(s, rows, other)["3x2"]
    assert both["authors"]["reconstruction_error"] == 7.0 and both["authors"]["all_matched_seeds"] == 2
    assert both["paper_text"] == median["3x2"]["paper_text"]
    for r in rows:     # with the label diagnostic, its medians join the main setting's
        if (r["n_subnetworks"], r["rank"]) == s.main:
            r.update({f"{stage}_{key}": float(r["seed"]) for stage in square.STAGES
                      for key in ("reconstruction_error", "min_impact_share", "min_input_purity")})
            r.update(circuit_aligned_error=1.0, circuit_aligned_error_by_sign=math.pi)
    main = square.medians_by_setting(s, rows)["3x2"]["paper_text"]
    assert main["aligned_then_paper_min_input_purity"] == 1.0 and main["circuit_aligned_error_by_sign"] == math.pi
    assert square.errors_by_seed(s, rows) == [[float(seed + C) for C in s.sweep_subnetworks] for seed in s.seeds]
