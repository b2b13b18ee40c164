"""Notebook 07: the field benchmarks' toys, their training, the field's metrics, and L3D recovering a TMS 5-2."""
import math

import pytest
import torch
from torch import nn

import l3d
from l3d.experiments import field
from l3d.experiments.toys import TMS


def linear_tms(weight: torch.Tensor, bias: torch.Tensor) -> TMS:
    """The field's TMS (SPD's nn.Linear layout) with linear1 = weight, linear2 = weightᵀ and bias."""
    return TMS.from_weights(weight, bias, layout="linear")


def pentagon(norm: float = 1.0) -> torch.Tensor:
    """A trained-looking TMS 5-2 embedding: five columns 72° apart, (2, 5)."""
    angles = torch.arange(5) * 2 * math.pi / 5
    return norm * torch.stack([angles.cos(), angles.sin()])


def test_benchmark_tms_forward_is_relu_of_the_materialized_product():
    torch.manual_seed(0)
    W, b = torch.randn(2, 5), torch.randn(5)
    x = torch.rand(7, 5)
    model = linear_tms(W, b)
    torch.testing.assert_close(model(x), torch.relu(x @ W.T @ W + b))
    with_identity = model.with_identity()
    assert [n for n, _ in with_identity.named_parameters()] == [
        "linear1.weight", "hidden_layers.0.weight", "linear2.weight", "linear2.bias"]
    torch.testing.assert_close(with_identity.hidden_layers[0].weight, torch.eye(2))
    torch.testing.assert_close(with_identity(x), model(x))


def test_training_applies_both_tied_parameters_adamw_updates_as_spds_view_tie_does():
    steps, batch = 3, 16
    toys, _ = field.train_benchmark_tms(5, 2, [3], steps=steps, batch_size=batch, lr=0.05, progress=False)
    # SPD's way (spd/experiments/tms/models.py:43-44, train_tms.py:37-51): linear2.weight's data is a view of
    # linear1.weight's, both handed to AdamW.
    torch.manual_seed(3)
    linear1, linear2 = nn.Linear(5, 2, bias=False), nn.Linear(2, 5)
    linear2.weight.data = linear1.weight.data.T
    optimizer = torch.optim.AdamW([*linear1.parameters(), *linear2.parameters()], lr=0.05, foreach=False)
    generator = torch.Generator().manual_seed(30_003)
    for _ in range(steps):
        x = field.benchmark_features(batch, 5, 0.05, generator=generator)
        loss = (x.abs() - torch.relu(linear2(linear1(x)))).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    torch.testing.assert_close(toys[0].linear1.weight, linear1.weight.detach())
    torch.testing.assert_close(toys[0].linear2.bias, linear2.bias.detach())
    assert not torch.allclose(linear1.weight, field.random_tms(5, 2, 3).linear1.weight)   # it did train


def test_restarts_keep_the_first_initialization_as_spds_own():
    toy = field.random_tms(5, 2, seed=4)
    torch.manual_seed(4)
    expected = nn.Linear(5, 2, bias=False).weight.detach()
    torch.testing.assert_close(toy.linear1.weight, expected)
    torch.testing.assert_close(field.random_tms(40, 10, seed=4, zero_bias=True).linear2.bias, torch.zeros(40))


def test_directions_equal_to_the_columns_score_mmcs_and_ml2r_one():
    W = pentagon(0.8)
    directions = torch.zeros(5, 2, 5)
    for j in range(5):
        directions[j, :, j] = W[:, j] / W[:, j].norm()
    scores = field.tms_scores(linear_tms(W, torch.zeros(5)), {"linear1.weight": directions})
    assert scores["mmcs"] == pytest.approx(1.0, abs=1e-6) and scores["ml2r"] == pytest.approx(1.0, abs=1e-5)
    assert (scores["recovered"] == 5 and scores["all_recovered"]
            and sorted(scores["pairs"]) == [(j, j) for j in range(5)])


def test_permuted_sign_flipped_scaled_directions_score_the_same_and_match_the_permutation():
    W = pentagon() * torch.tensor([0.5, 1.0, 1.5, 2.0, 2.5])
    permutation = [3, 0, 4, 1, 2]            # subnetwork k serves feature permutation[k]
    directions = torch.zeros(5, 2, 5)
    for k, j in enumerate(permutation):
        directions[k, :, j] = (-1) ** k * W[:, j] / W[:, j].norm()
    scores = field.tms_scores(linear_tms(W, torch.zeros(5)), {"linear1.weight": directions})
    assert scores["mmcs"] == pytest.approx(1.0, abs=1e-6) and scores["ml2r"] == pytest.approx(1.0, abs=1e-5)
    assert dict(scores["pairs"]) == {j: k for k, j in enumerate(permutation)}


def test_column_scores_by_hand():
    # two features along the axes; one subnetwork at 45° across both columns, one along feature 1 only
    columns = torch.tensor([[2.0, 0.0], [0.0, 1.0]])                 # (F, D): W[:, 0] = (2, 0), W[:, 1] = (0, 1)
    slices = torch.tensor([[[0.5, 0.5], [0.0, 0.0]],                 # subnetwork 0: column 0 along (1, 1)
                           [[0.0, 0.0], [0.0, 1.0]]])                # subnetwork 1: column 1 along (0, 1)
    scores = field.column_scores(columns, slices, torch.tensor([2.0, 1.0]))
    # feature 0: best |cos| 1/√2 (subnetwork 0), size 2 · ‖(0.5, 0.5)‖ = √2 against 2; feature 1: cos 1, size 1
    assert scores["max_cos"] == pytest.approx([1 / math.sqrt(2), 1.0])
    assert scores["mmcs"] == pytest.approx((1 / math.sqrt(2) + 1) / 2)
    assert scores["l2_ratio"] == pytest.approx([math.sqrt(2) / 2, 1.0])
    assert scores["recovered"] == 1 and not scores["all_recovered"]
    with pytest.raises(ValueError, match="slices must be"):
        field.column_scores(columns, slices[:, :1], torch.ones(2))


def test_least_squares_sizes_the_directions_so_that_they_add_up_to_the_weights():
    W = pentagon(1.3)
    directions = torch.zeros(5, 2, 5)
    for j in range(5):
        directions[j, :, j] = W[:, j] / W[:, j].norm()
    a = field.least_squares_components({"linear1.weight": W}, {"linear1.weight": directions})
    torch.testing.assert_close((a[:, None, None] * directions).sum(0), W, atol=1e-5, rtol=0)


def test_chance_mmcs_is_high_in_two_dimensions_and_lower_in_ten():
    assert field.chance_mmcs(5, 2, 5) > 0.9 > 0.8 > field.chance_mmcs(40, 10, 40)


def test_resid_mlp_forward_and_its_scores_for_per_feature_directions():
    torch.manual_seed(0)
    model = field.ResidMLP(n_features=6, d_embed=20, d_mlp=3)
    x = torch.rand(4, 6)
    r = x @ model.W_E
    mlp = model.layers[0]
    expected = (r + torch.relu(r @ mlp["mlp_in"].weight.T) @ mlp["mlp_out"].weight.T) @ model.W_E.T
    torch.testing.assert_close(model(x), expected)
    assert torch.allclose(model.W_E.norm(dim=1), torch.ones(6))
    # subnetwork j: mlp_in restricted to feature j's embedding, (mlp_in W_E[j]) W_E[j]ᵀ
    W_in = mlp["mlp_in"].weight.detach()
    pieces = torch.stack([torch.outer(W_in @ e, e) for e in model.W_E])
    directions = {"layers.0.mlp_in.weight": pieces / pieces.flatten(1).norm(dim=1)[:, None, None]}
    scores = field.resid_scores(model, directions)
    assert scores["mmcs"] > 0.9 and scores["matched_cos"] == pytest.approx(scores["max_cos"])


def test_settings_name_every_bad_parameter():
    good = field.FieldExperiment.from_parameters({"seeds": "[0, 1]", "seed": 1, "tms_settings": ["40-10-id"]})
    assert good.seeds == [0, 1] and parse_ok(good)
    with pytest.raises(ValueError) as error:
        field.FieldExperiment.from_parameters({"seeds": [0], "seed": 2, "tms_settings": ["5-3"], "top_k": 0,
                                               "toy_steps": 0, "resid_d_mlp": 0})
    for name in ("seed 2", "5-3", "top_k", "steps", "d_mlp"):
        assert name in str(error.value)
    with pytest.raises(ValueError, match="batch_size"):
        field.FieldExperiment.from_parameters({"n_samples": 16, "batch_size": 32})
    with pytest.raises(ValueError, match="restarts"):
        field.train_benchmark_tms(5, 2, [0], restarts=0)


def parse_ok(settings: field.FieldExperiment) -> bool:
    return all(field.parse_tms(s) for s in settings.tms_settings)


def test_l3d_recovers_every_feature_of_a_tms_5_2():
    toy = linear_tms(pentagon(1.1), torch.full((5,), -0.3))
    settings = field.FieldExperiment.from_parameters({"seeds": [0], "n_samples": 640, "epochs": 30, "lr_decay_every": 5,
                                                      "init": "gradients", "restarts": 2, "restart_epochs": 5,
                                                      "engine": "dense", "tms_settings": ["5-2"], "resample_every": 10})
    rows, runs, reruns = field.decompose_tms(settings, "5-2", [toy], torch.device("cpu"), progress=False)
    assert reruns == [] and rows[0]["all_recovered"] and rows[0]["mmcs"] > 0.99, rows[0]
    # resampling looked at epochs 10 and 20; the row and the seed table name the epochs it re-seeded at
    looks = runs[0].history.resampled
    assert [r["epoch"] for r in looks] == [10, 20]
    assert rows[0]["reseeded_at"] == [r["epoch"] for r in looks if r["replaced"]]
    assert field.seed_table(rows)[0]["re-seeded at epoch"] == (", ".join(map(str, rows[0]["reseeded_at"])) or "-")
    assert 0.8 < rows[0]["ml2r"] < 1.1 and 0 < rows[0]["reconstruction_error"] < 0.5
    # the refit row: the same decomposition refitted (l3d.refit), every feature still recovered, the trained run kept
    refit = rows[1]
    assert refit["setting"] == "5-2 refit" and refit["seed"] == 0 and refit["all_recovered"], refit
    assert refit["mmcs"] > rows[0]["mmcs"] - 1e-3 and sum(refit["refit"]["refitted"]) >= 4
    assert runs[0].decomposition.decoder_directions()["linear1.weight"].shape == (5, 2, 5)
    summary = field.summarize(rows)
    assert summary["5-2"]["success"] == 1 and summary["5-2"]["seeds"] == 1 and summary["5-2 refit"]["seeds"] == 1
    assert field.headline_table(summary)[0]["SPD MMCS / ML2R"] == "1.000 / 0.993"


def test_the_sparser_samples_variant_decomposes_with_its_own_samples_and_top_k(monkeypatch):
    settings = field.FieldExperiment.from_parameters({"seeds": [3], "seed": 3, "tms_settings": ["5-2", "40-10"],
                                                      "sparse_p_active": 0.02, "sparse_n_samples": 4000,
                                                      "sparse_top_k": 0.03, "sparse_epochs": 7,
                                                      "sparse_settings": ["40-10", "40-10-id"]})
    assert settings.sparse_settings() == ["40-10"]            # 40-10-id is not among tms_settings
    seen = {}

    def fake_sweep(models, inputs, params, configs, progress):
        assert len(models) == len(inputs) == len(configs) == 1
        seen.update(inputs=inputs[0], config=configs[0])
        raise StopIteration

    monkeypatch.setattr(field.runner, "sweep", fake_sweep)   # where decompose_tms looks it up
    with pytest.raises(StopIteration):
        field.decompose_sparse(settings, "40-10", [field.random_tms(40, 10, 3)], torch.device("cpu"), progress=False)
    inputs = seen["inputs"]
    assert inputs.shape == (4000, 40) and torch.equal(inputs, field.l3d_samples(settings, 40, 3, 0.02, 4000))
    assert abs((inputs != 0).float().mean().item() - 0.02) < 0.003
    assert seen["config"].top_k == 0.03 and seen["config"].seed == 3 and seen["config"].epochs == 7
    with pytest.raises(ValueError, match="sparse_settings: '5-2' must be '40-10' or '40-10-id'"):
        field.FieldExperiment.from_parameters({"sparse_settings": ["5-2"]})
    with pytest.raises(ValueError, match="batch_size 32 must not exceed any of .*sparse_n_samples 16"):
        field.FieldExperiment.from_parameters({"sparse_settings": ["40-10"], "sparse_n_samples": 16})
    assert field.FieldExperiment.from_parameters({"sparse_n_samples": 16}).sparse_settings() == []   # off: unchecked
    with pytest.raises(ValueError, match=r"refit_min_share must be < 1 \(or None: no refit rows\), got 1.0"):
        field.FieldExperiment.from_parameters({"refit_min_share": 1.0})
    assert field.FieldExperiment.from_parameters({"refit_min_share": None}).refit_min_share is None


def small_field(**changes) -> field.FieldExperiment:
    return field.FieldExperiment.from_parameters({"seeds": [0, 1], "n_samples": 96, "epochs": 3, "lr_decay_every": 1,
                                                  "batch_size": 16, "engine": "dense", "tms_settings": ["5-2"],
                                                  "refit_min_share": None, **changes})


def test_every_seed_and_its_perturbed_reruns_are_one_sweep_equal_to_each_alone():
    settings = small_field(perturbations=2, perturbation=1e-6)
    toys = [linear_tms(pentagon(1.0 + 0.1 * s), torch.full((5,), -0.2)) for s in settings.seeds]
    rows, runs, reruns = field.decompose_tms(settings, "5-2-id", toys, torch.device("cpu"), progress=False,
                                             perturbations=2)
    assert [r["seed"] for r in rows] == [0, 1] and list(runs) == [0, 1]
    assert [(r["perturbation"], r["seed"]) for r in reruns] == [(1, 0), (1, 1), (2, 0), (2, 1)]
    for s, toy in zip(settings.seeds, toys):
        inputs = field.l3d_samples(settings, 5, s)
        alone = l3d.decompose(toy.with_identity(), inputs, "*", settings.l3d_config(5, 96, s), progress=False)
        # float32 rounding of a stacked program against one alone: relative 1e-4 over 3 epochs
        assert runs[s].history.reconstruction_error == pytest.approx(alone.history.reconstruction_error, rel=1e-4)
        assert runs[s].config == alone.config and torch.equal(runs[s].source.inputs, inputs)
        assert torch.equal(runs[s].collector.model.hidden_layers[0].weight, torch.eye(2))   # the -id toy, unperturbed
    # a rerun's row scores its own perturbed toy: the same up to ~1e-6, with its perturbation number
    assert all(r["setting"] == "5-2-id" and abs(r["mmcs"] - rows[r["seed"]]["mmcs"]) < 0.05 for r in reruns)
    stability = field.check_stability(rows, reruns)
    assert list(stability) == ["5-2-id"] and [len(r["perturbed"]) for r in stability["5-2-id"].per_seed] == [2, 2]
    assert stability["5-2-id"].per_seed[0]["outcome"] == [rows[0]["recovered"], rows[0]["all_recovered"],
                                                          len(rows[0]["dead"])]


def test_the_reruns_perturb_the_toy_and_the_start(monkeypatch):
    settings = small_field(perturbation=1e-5)
    toy = linear_tms(pentagon(), torch.full((5,), -0.2))
    seen = {}

    def fake_sweep(models, inputs, params, configs, progress):
        seen.update(models=models, configs=configs)
        raise StopIteration

    monkeypatch.setattr(field.runner, "sweep", fake_sweep)   # where decompose_tms looks it up
    with pytest.raises(StopIteration):
        field.decompose_tms(settings, "5-2", [toy, toy], torch.device("cpu"), progress=False, perturbations=1)
    models, configs = seen["models"], seen["configs"]
    assert models[0] is toy and models[1] is toy and models[2] is not toy and models[3] is not toy
    assert [(c.seed, c.start_noise, c.start_noise_seed) for c in configs] == [(0, 0.0, 0), (1, 0.0, 0), (0, 1e-5, 1),
                                                                               (1, 1e-5, 1)]
    for moved in models[2:]:
        relative = ((moved.linear1.weight - toy.linear1.weight) / toy.linear1.weight.abs().clamp_min(1e-30)).abs()
        assert 0 < relative.max() < 1e-4                                         # a relative 1e-5 · N(0, 1)
    assert not torch.equal(models[2].linear1.weight, models[3].linear1.weight)   # each seed its own draw


@pytest.mark.filterwarnings("ignore:GradientCollector")   # the zero gradients it warns about are the point
def test_a_toy_without_gradients_is_skipped_and_the_others_decomposed():
    settings = small_field()
    dead = linear_tms(pentagon(), torch.full((5,), -10.0))        # ReLU(x Wᵀ W + b) = 0 for x in [0, 1]^5
    live = linear_tms(pentagon(), torch.full((5,), -0.2))
    x = field.l3d_samples(settings, 5, 0)
    assert dead(x).abs().max() == 0
    config = settings.l3d_config(5, 96, 0)
    assert field.without_gradients(dead, x, config) == ("every per-sample gradient of its 96 samples is zero (the sum "
                                                        "of ||g||^2 is 0)")
    assert field.without_gradients(live, x, config) is None
    skipped = []
    rows, runs, _ = field.decompose_tms(settings, "5-2", [live, dead], torch.device("cpu"), label="5-2 random",
                                        progress=False, skipped=skipped)
    assert [r["seed"] for r in rows] == [0] and list(runs) == [0]
    assert skipped == [{"setting": "5-2 random", "seed": 1, "reason": field.without_gradients(dead, field.l3d_samples(
        settings, 5, 1), config)}]
    with pytest.raises(l3d.train.ZeroGradients):       # not asked to skip: the error of l3d.fit
        field.decompose_tms(settings, "5-2", [dead], torch.device("cpu"), progress=False)


def test_check_stability_compares_recovered_counts_and_dead_counts_per_setting():
    def row(setting, seed, recovered, dead, mmcs, perturbation=None):
        extra = {"perturbation": perturbation} if perturbation else {}
        return {"setting": setting, "seed": seed, "recovered": recovered, "all_recovered": recovered == 5, "dead": dead,
                "mmcs": mmcs, "ml2r": 1.0, "reconstruction_error": 0.1, **extra}
    rows = [row("5-2", 0, 5, [], 0.999), row("5-2", 1, 5, [], 0.998), row("40-10", 0, 40, [], 0.99)]
    reruns = [row("5-2", 1, 5, [2], 0.998, 1), row("5-2", 0, 5, [], 0.999, 1),       # any order
              row("5-2", 0, 4, [], 0.95, 2), row("5-2", 1, 5, [], 0.998, 2)]
    stability = field.check_stability(rows, reruns)
    assert list(stability) == ["5-2"]                    # 40-10 had no reruns
    s = stability["5-2"]
    assert s.changed == [0, 1] and s.changed_rate == pytest.approx(2 / 4)
    assert s.per_seed[0]["perturbed"] == [[5, True, 0], [4, False, 0]] and s.per_seed[1]["perturbed"][0] == [5, True, 1]
    assert s.median_shift["mmcs"] == pytest.approx(0.9985 - (0.95 + 0.998) / 2)
    assert field.stability_table(stability)[0] == {"setting": "5-2", "seed": 0, "recovered, dead": "5 (all), 0 dead",
                                                   "perturbed reruns": "5 (all), 0 dead / 4, 0 dead", "changed": "yes"}
    saved = field.stability_metrics(small_field(perturbations=2), stability)
    assert (saved["n_changed"], saved["n_decompositions"], saved["perturbations"]) == (2, 2, 2)
    assert saved["settings"]["5-2"]["changed_seeds"] == [0, 1]


def test_summarize_gives_the_median_and_range_of_the_error():
    rows = [{"setting": "5-2", "seed": s, "mmcs": 0.99, "ml2r": 1.0, "all_recovered": True, "recovered": 5,
             "reconstruction_error": e, "max_cos": [1.0] * 5, "seconds": 60.0}
            for s, e in enumerate([0.4, 0.1, 0.2, 0.3])]
    summary = field.summarize(rows)["5-2"]
    assert summary["reconstruction_error_median"] == pytest.approx(0.25)   # an even count: the mean of the middle two
    assert (summary["reconstruction_error_min"], summary["reconstruction_error_max"]) == (0.1, 0.4)
    assert field.headline_table({"5-2": summary})[0]["error median (range)"] == "0.250 (0.100-0.400)"


def test_refit_table_counts_the_refitted_subnetworks_and_how_far_they_moved():
    rows = [{"setting": "5-2", "seed": 0},
            {"setting": "5-2 refit", "seed": 0, "refit": {"samples": [9, 4, 12], "refitted": [True, True, False],
                                                         "cos": [0.99, 0.93, 1.0]}},
            {"setting": "5-2 refit", "seed": 1, "refit": {"samples": [7, 8, 6], "refitted": [True, True, True],
                                                         "cos": [0.98, 0.999, 0.97]}},
            {"setting": "40-10 refit", "seed": 0, "refit": {"samples": [1, 2], "refitted": [False, False],
                                                           "cos": [1.0, 1.0]}}]
    assert field.refit_table(rows) == [
        {"setting": "5-2 refit", "refitted": "5 of 6", "fewest samples alone": 4,
         "smallest |cos| to trained, per seed": "0.930-0.970"},
        {"setting": "40-10 refit", "refitted": "0 of 2", "fewest samples alone": 1,
         "smallest |cos| to trained, per seed": "-"}]
