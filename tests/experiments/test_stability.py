"""The stability check: perturbed copies of a model, the comparison of outcomes and medians, and the toy sweep that
runs every seed and its perturbed reruns as one program."""
import pytest
import torch

from l3d.experiments.stability import compare, perturbed
from l3d.experiments.tmcs import TMCSExperiment
from l3d.experiments.toy_experiment import decompose_toys, l3d_samples
from l3d.experiments.toys import circuit_superposition


def test_perturbed_moves_every_weight_by_its_relative_scale_and_leaves_the_model_alone():
    torch.manual_seed(0)
    model = circuit_superposition(6, 3, "authors")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    assert perturbed(model, 0.0, 1) is model
    other = perturbed(model, 1e-6, 1)
    for n, p in other.named_parameters():
        relative = ((p - before[n]) / before[n].abs().clamp_min(1e-30)).abs()   # a zero weight stays zero
        assert relative.max() < 1e-5 and torch.equal(dict(model.named_parameters())[n], before[n]), n
        assert (relative > 0).sum() == (before[n] != 0).sum(), n
    assert not torch.equal(next(perturbed(model, 1e-6, 2).parameters()), next(other.parameters()))


def test_compare_counts_the_seeds_whose_outcome_changed_and_the_median_shift():
    rows = [{"seed": 0, "ok": True, "live": 5, "error": 0.10}, {"seed": 1, "ok": True, "live": 5, "error": 0.20},
            {"seed": 2, "ok": False, "live": 4, "error": 0.30}]
    same = [dict(r) for r in rows]
    flipped = [dict(r) for r in rows]
    flipped[2].update(ok=True, live=5, error=0.12)
    result = compare(rows, [same, flipped], ["ok", "live"], ["error"])
    assert result.changed == [2] and result.changed_rate == pytest.approx(1 / 6)
    assert result.median_shift["error"] == pytest.approx(0.08)    # median 0.20 -> 0.12
    assert "changed for 1 of 3 seeds (seeds [2])" in result.describe()
    assert compare(rows, [same], ["ok"]).changed == []


def test_decompose_toys_runs_every_seed_and_its_perturbed_reruns_and_equals_them_alone():
    settings = TMCSExperiment.from_parameters({"seeds": [0, 1], "n_features": 6, "n_hidden": 3, "n_subnetworks": 6,
                                               "n_samples": 96, "epochs": 3, "lr_decay_every": 1, "perturbations": 2})
    torch.manual_seed(0)
    models = [circuit_superposition(6, 3, "authors") for _ in settings.seeds]
    inputs = [l3d_samples(settings, s, 6) for s in settings.seeds]
    runs, reruns = decompose_toys(settings, models, inputs, progress=False)
    assert [r.config.seed for r in runs] == [0, 1] and len(reruns) == 2
    assert all(r.config.start_noise == 1e-6 and r.config.seed == s for rerun in reruns for r, s in zip(rerun, [0, 1]))
    assert reruns[0][0].collector.model is not models[0] and runs[0].collector.model is models[0]
    alone, _ = decompose_toys(settings, models[:1], inputs[:1], progress=False, stability=False)
    assert runs[0].history.reconstruction_error == pytest.approx(alone[0].history.reconstruction_error, rel=1e-4)
    for base, moved in zip(runs, reruns[0]):     # a 1e-6 perturbation moves three epochs' error by far less than 1e-3
        assert base.history.reconstruction_error[-1] != moved.history.reconstruction_error[-1]
        assert base.history.reconstruction_error[-1] == pytest.approx(moved.history.reconstruction_error[-1], rel=1e-3)
