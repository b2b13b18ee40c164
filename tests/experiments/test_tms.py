"""Notebook 01's experiment: settings, toys, decompositions and scores equal what the notebook computed inline."""
import pytest
import torch

import l3d
from l3d.experiments import tms
from l3d.experiments.ground_truth import intervention_selectivity, mmcs
from l3d.experiments.toys import TMS, sparse_features, tms_feature_match, train_toys_best_of

SMALL = {"seeds": [0, 1], "seed": 1, "device": "cpu", "n_features": 3, "n_hidden": 2, "p_active": 0.2, "n_train": 64,
         "toy_epochs": 2, "toy_batch_size": 16, "toy_restarts": 2, "toy_compile": False, "n_samples": 48,
         "n_subnetworks": 4, "rank": 1, "top_k": 0.2, "epochs": 3, "batch_size": 8, "lr": 0.01, "lr_decay": 0.8,
         "lr_decay_every": 2, "init": "gradients", "restarts": 2, "restart_epochs": 1, "max_delta": 0.5, "n_deltas": 3}


@pytest.fixture(scope="module")
def small():
    settings = tms.TMSExperiment.from_parameters(SMALL)
    models, losses = tms.train_tms(settings, torch.device("cpu"))
    return settings, models, losses


def test_settings_are_read_from_the_notebooks_parameters_and_checked_together():
    settings = tms.TMSExperiment.from_parameters({**SMALL, "seeds": "[0, 1]"})   # as `papermill -p` passes a list
    assert settings.seeds == [0, 1] and settings.training.compile is False and settings.l3d.init == "gradients"
    assert settings.deltas().tolist() == [-0.5, 0.0, 0.5]
    assert settings.to_dict()["training"]["restarts"] == 2 and settings.to_dict()["n_deltas"] == 3
    with pytest.raises(ValueError) as error:
        tms.TMSExperiment.from_parameters({**SMALL, "max_delta": 0.0, "n_deltas": 1, "n_hidden": 0})
    assert all(name in str(error.value) for name in ("max_delta", "n_deltas", "n_hidden"))
    with pytest.raises(ValueError, match="top_k"):
        tms.TMSExperiment.from_parameters({**SMALL, "top_k": 0})


def test_train_tms_is_the_notebooks_training(small):
    settings, models, losses = small
    train_sets = [sparse_features(64, 3, 0.2, generator=torch.Generator().manual_seed(10_000 + s)) for s in (0, 1)]
    expected, expected_losses = train_toys_best_of(lambda: TMS(3, 2), [(x, x) for x in train_sets], [0, 1], 2,
                                                   epochs=2, batch_size=16, lr=1e-3, compile=False, progress=False)
    assert losses == expected_losses
    for model, reference in zip(models, expected):
        torch.testing.assert_close(model.W_in, reference.W_in, rtol=0, atol=0)
        torch.testing.assert_close(model.b, reference.b, rtol=0, atol=0)


def _notebook_score(settings, toy, run, toy_loss):
    """The scoring loop of notebook 01 before it moved into the package."""
    decomposition = run.decomposition
    decoder = decomposition.decoder_directions()
    found = tms_feature_match(toy, decoder)
    found_encoder = tms_feature_match(toy, decomposition.encoder_directions())
    sweep = l3d.intervention_sweep(toy, decomposition, torch.linspace(-0.5, 0.5, 3), run.source.inputs).cpu()
    matched = [k for _, k in found["pairs"]]
    own = torch.zeros(len(found["pairs"]), 3, dtype=torch.bool)
    for row, (i, _) in enumerate(found["pairs"]):
        own[row, i] = True
    slices = torch.cat([decoder["W_in"].transpose(1, 2), decoder["W_out"]], dim=-1)
    weights = torch.cat([toy.W_in.detach().T, toy.W_out.detach()], dim=-1)
    evaluation = l3d.evaluate(decomposition, run.source)
    return {
        "seed": run.config.seed, "toy_loss": toy_loss,
        "reconstruction_error": evaluation["reconstruction_error"], "dead_subnetworks": evaluation["dead"],
        "feature_cosines": found["cosines"], "feature_shares": [found["share"][i, k].item() for i, k in found["pairs"]],
        "encoder_feature_cosines": found_encoder["cosines"], "matching": found["pairs"],
        "all_features_recovered": min(found["cosines"]) >= 0.95 and len(found["pairs"]) == 3,
        "intervention_selectivity": intervention_selectivity(sweep.mean(1)[matched], own),
        "mmcs": mmcs(slices.cpu(), weights.cpu()), "history": run.history.to_dict(),
    }, sweep


def test_decompose_and_score_equal_the_notebooks_loop(small):
    settings, models, losses = small
    runs, reruns = tms.decompose_tms(settings, models, torch.device("cpu"), progress=False, stability=False)
    twins, _ = tms.decompose_tms(settings, models, torch.device("cpu"), progress=False, stability=False)
    assert reruns == [] and [run.config.seed for run in runs] == settings.seeds
    for run, twin, toy, toy_losses in zip(runs, twins, models, losses):
        assert run.decomposition.names == ["W_in", "W_out", "b"] and run.config.chunk_size == 48
        # untied, same function
        torch.testing.assert_close(run.collector.model(run.source.inputs), toy(run.source.inputs))
        score = tms.score_tms(settings, run, toy_losses[-1])
        expected, sweep = _notebook_score(settings, twin.collector.model, twin, toy_losses[-1])
        assert score.metrics == expected
        torch.testing.assert_close(score.sweep, sweep, rtol=0, atol=0)
        assert score.found["pairs"] == expected["matching"]


def test_the_sweep_of_every_seed_equals_each_seed_decomposed_alone(small):
    settings, models, _ = small
    runs, _ = tms.decompose_tms(settings, models, torch.device("cpu"), progress=False, stability=False)
    for run, toy, s in zip(runs, models, settings.seeds):
        inputs = tms.l3d_samples(settings, s, 3)
        alone = l3d.decompose(toy.untied(), inputs, ["W_in", "W_out", "b"], settings.l3d_config(s), progress=False)
        assert torch.equal(run.source.inputs, inputs) and run.config == alone.config
        # float32 rounding of a stacked program against one alone: relative 1e-4 over 3 epochs
        assert run.history.reconstruction_error == pytest.approx(alone.history.reconstruction_error, rel=1e-4)
        assert run.start_errors == pytest.approx(alone.start_errors, rel=1e-4)


def test_the_perturbed_reruns_decompose_a_perturbed_toy_from_a_perturbed_start(small):
    settings, models, losses = small
    runs, reruns = tms.decompose_tms(settings, models, torch.device("cpu"), progress=False)
    assert len(reruns) == settings.perturbations == 3
    for p, rerun in enumerate(reruns, start=1):
        for run, moved, s in zip(runs, rerun, settings.seeds):
            assert (moved.config.seed, moved.config.start_noise, moved.config.start_noise_seed) == (s, 1e-6, p)
            for (name, a), b in zip(run.collector.model.named_parameters(), moved.collector.model.parameters()):
                relative = ((b - a) / a.abs().clamp_min(1e-30)).abs()
                assert 0 < relative.max() < 1e-5, name          # the toy's weights moved by a relative ~1e-6
            assert torch.equal(moved.source.inputs, run.source.inputs)
    rows = tms.rerun_rows(settings, reruns, losses)
    assert ([[r["seed"] for r in p] for p in rows] == [settings.seeds] * 3
            and all("history" not in r for p in rows for r in p))
    _, twins = tms.decompose_tms(settings, models, torch.device("cpu"), progress=False)   # evaluate draws references
    assert rows[1][0] == {k: v for k, v in tms.score_tms(settings, twins[1][0], losses[0][-1]).metrics.items()
                          if k != "history"}


def test_the_stability_check_compares_every_feature_recovered_and_the_dead_count():
    def row(seed, recovered, dead, error):
        return {"seed": seed, "all_features_recovered": recovered, "dead_subnetworks": dead,
                "reconstruction_error": error, "mmcs": 0.9, "intervention_selectivity": 10.0}
    rows = [row(0, True, [], 0.1), row(1, True, [], 0.2), row(2, False, [3], 0.3)]
    # another dead one: same outcome
    same_count = [row(0, True, [], 0.1), row(1, True, [], 0.2), row(2, False, [4], 0.3)]
    flipped = [row(0, True, [], 0.1), row(1, False, [], 0.25), row(2, False, [3], 0.3)]
    stability = tms.check_stability(rows, [same_count, flipped])
    assert stability.changed == [1] and stability.changed_rate == pytest.approx(1 / 6)
    assert (stability.per_seed[2]["outcome"] == [False, 1]
            and stability.per_seed[1]["perturbed"] == [[True, 0], [False, 0]])
    assert stability.median_shift == pytest.approx({"reconstruction_error": 0.05, "mmcs": 0.0,
                                                    "intervention_selectivity": 0.0})
    table = tms.stability_table(stability)
    assert table[1] == {"seed": 1, "every feature, dead": "yes, 0 dead", "perturbed reruns": "yes, 0 dead / no, 0 dead",
                        "changed": "yes"}
    assert table[2]["every feature, dead"] == "no, 1 dead" and table[0]["changed"] == "no"
    settings = tms.TMSExperiment(perturbations=2, perturbation=1e-5)
    saved = tms.stability_metrics(settings, stability)
    assert (saved["n_changed"], saved["n_seeds"], saved["perturbations"], saved["perturbation"]) == (1, 3, 2, 1e-5)


def test_summarize_takes_the_shown_seed_and_medians_over_seeds():
    rows = [{"seed": s, "reconstruction_error": e, "feature_cosines": c, "intervention_selectivity": q, "mmcs": m,
             "all_features_recovered": min(c) >= 0.95, "dead_subnetworks": []}
            for s, e, c, q, m in [(0, 0.3, [0.99, 0.5], 2.0, 0.7), (1, 0.1, [0.97, 0.98], 9.0, 0.99),
                                  (2, 0.2, [0.96, 0.99], 5.0, 0.9)]]
    settings = tms.TMSExperiment(seeds=[0, 1, 2], seed=1)
    metrics = tms.summarize(settings, rows)
    assert (metrics["seed"] == 1 and metrics["reconstruction_error"] == 0.1
            and metrics["feature_cosines"] == [0.97, 0.98])
    # with an odd number of seeds the median is torch's (the notebook's before) as well as statistics'
    for key in ("reconstruction_error", "intervention_selectivity", "mmcs"):
        assert metrics["median"][key] == torch.tensor([r[key] for r in rows], dtype=torch.float64).median().item()
    assert metrics["median_min_feature_cosine"] == 0.96
    assert metrics["seeds_with_all_features_recovered"] == 2 and metrics["per_seed"] is rows
    assert metrics["n_seeds"] == 3 and metrics["range"]["reconstruction_error"] == [0.1, 0.3]
    assert metrics["range"]["intervention_selectivity"] == [2.0, 9.0] and metrics["range"]["mmcs"] == [0.7, 0.99]
    assert tms.headline(metrics).splitlines() == [
        "seeds with every feature recovered (|cos| ≥ 0.95): 2 of 3", "reconstruction error: median 0.200 (0.100-0.300)",
        "MMCS: median 0.9000 (0.7000-0.9900)", "intervention selectivity: median 5.0 (2.0-9.0)"]
    table = tms.comparison(metrics)
    assert [r[""] for r in table] == ["reconstruction error", "seeds with every feature found",
                                      "smallest matched |cos|", "intervention selectivity"]
    assert table[0]["this run (median)"] == "0.200" and table[1]["this run (median)"] == "2 of 3"
    assert table[2]["this run (median)"] == "0.500" and table[3]["this run (median)"] == "5.0"
    assert [r["min |cos|"] for r in tms.seed_table(rows)] == ["0.500", "0.970", "0.960"]
    stable = {**metrics, "stability": {"n_changed": 1, "n_seeds": 3}}
    assert tms.comparison(stable)[4] == {"": "seeds whose outcome a perturbation changed", "paper": "-",
                                         "authors' code": "-", "this run (median)": "1 of 3"}


def test_subnetwork_rows_and_matched_directions_are_the_notebooks(small):
    settings, models, _ = small
    found = {"pairs": [(0, 2), (1, 0), (2, 3)]}
    order, labels, own = tms.subnetwork_rows(found, 4)
    assert order == [2, 0, 3, 1]
    assert labels == ["subnetwork 2 (feature 0)", "subnetwork 0 (feature 1)", "subnetwork 3 (feature 2)",
                      "subnetwork 1"]
    assert own == [0, 1, 2, None]
    run = tms.decompose_tms(settings, models[:1], torch.device("cpu"), progress=False, stability=False)[0][0]
    features, directions = tms.matched_directions(run, found)
    columns = run.decomposition.decoder_directions()["W_in"].detach().transpose(1, 2)
    torch.testing.assert_close(features, run.collector.model.W_in.detach().T)
    torch.testing.assert_close(directions, torch.stack([columns[2, 0], columns[0, 1], columns[3, 2]]))


def test_like_authors_takes_the_authors_tms_run_and_keeps_the_rest():
    settings = tms.TMSExperiment.from_parameters(SMALL)
    authors = tms.like_authors(settings)
    assert (authors.drop_zero_inputs, authors.reference_pool) == (True, "batch")
    assert (authors.training.weight_decay, authors.training.batch_size, authors.training.restarts) == (1e-3, 128, 1)
    c = authors.l3d
    assert (c.divergence, c.reference, c.decoder_norm, c.warm_start_epochs, c.init, c.restarts, c.engine) == (
        "output_times_residual", "random_or_self", "sum", 0, "random", 1, "dense")
    # everything the authors' script sets as the paper does stays the notebook's
    assert authors.seeds == settings.seeds and authors.n_features == 3 and authors.n_samples == 48
    assert (c.n_subnetworks, c.epochs, c.lr, c.top_k, c.batch_size) == (4, 3, 0.01, 0.2, 8)
    assert (authors.training.epochs, authors.training.lr, authors.training.n_train) == (2, 1e-3, 64)
    assert settings.l3d.divergence == "mse" and settings.drop_zero_inputs is False   # the notebook's own, untouched


def test_like_authors_metrics_are_the_like_authors_settings_run_and_scored():
    settings = tms.TMSExperiment.from_parameters({**SMALL, "toy_restarts": 1, "perturbations": 1})
    metrics = tms.like_authors_metrics(settings, torch.device("cpu"), progress=False)
    authors = tms.like_authors(settings)
    assert metrics["settings"] == authors.to_dict() and metrics["runtime_seconds"] > 0
    models, losses = tms.train_tms(authors, torch.device("cpu"))
    runs, reruns = tms.decompose_tms(authors, models, torch.device("cpu"), progress=False)
    for row, run, toy_losses in zip(metrics["per_seed"], runs, losses):
        assert (run.source.inputs != 0).any(1).all()              # no all-zero input among the L3D samples
        assert run.config.batch_references and run.config.divergence == "output_times_residual"
        assert row == tms.score_tms(authors, run, toy_losses[-1]).metrics
    expected = tms.check_stability(metrics["per_seed"], tms.rerun_rows(authors, reruns, losses))
    assert metrics["stability"] == tms.stability_metrics(authors, expected) and metrics["stability"]["n_seeds"] == 2
    assert "stability" not in tms.like_authors_metrics(settings, torch.device("cpu"), progress=False, stability=False)
    own = tms.summarize(settings, [{**r, "reconstruction_error": 0.5} for r in metrics["per_seed"]])
    table = tms.comparison({**own, "like_authors": metrics})
    assert table[0]["authors' code"] == "0.15 (0.11 / 0.28 / 0.15)" and table[0]["this run (median)"] == "0.500"
    assert table[0]["like for like (median)"] == f"{metrics['median']['reconstruction_error']:.3f}"
    assert table[1]["like for like (median)"] == f"{metrics['seeds_with_all_features_recovered']} of 2"
    assert "like for like (median)" not in tms.comparison(own)[0]
