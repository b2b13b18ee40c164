"""Notebook 03's experiment: settings, toys, decompositions at every rank, scores and medians, each against the
computation the notebook made inline before it moved into l3d.experiments.high_rank."""
import statistics

import pytest
import torch

import l3d
from l3d.experiments import high_rank
from l3d.experiments.ground_truth import evaluate_and_recover, mmcs, recovery_from_impact
from l3d.experiments.high_rank import HighRank
from l3d.experiments.toys import feature_groups, group_features, high_rank_circuits, random_coefficients, train_toys

TINY = {"toy": "paper_text", "seeds": [0, 1], "seed": 1, "n_groups": 2, "group_size": 2, "n_hidden": 3, "n_train": 64, "toy_epochs": 2,
        "toy_restarts": 1, "toy_compile": False, "ranks": [1, 2], "show_rank": 2, "n_samples": 40, "drop_zero_inputs": True,
        "n_subnetworks": 3, "epochs": 3, "batch_size": 8, "lr_decay_every": 2, "restarts": 2, "restart_epochs": 1,
        "silence": 1.0, "silence_from": 2, "paper_loss_ranks": [2], "n_probe": 6, "n_ref": 2}


def test_settings_read_the_notebook_parameters_and_check_them_before_any_work():
    s = HighRank.from_parameters(TINY)
    assert s.n_features == 4 and s.groups == [[0, 1], [2, 3]] and s.training.compile is False and s.training.restarts == 1
    assert s.l3d.silence == 1.0 and s.l3d.silence_from == 2 and s.l3d.restarts == 2
    assert s.to_dict()["training"]["compile"] is False and s.to_dict()["ranks"] == [1, 2]
    with pytest.raises(ValueError) as caught:
        HighRank.from_parameters({**TINY, "ranks": [1, 0], "show_rank": 3, "n_groups": 1})
    text = str(caught.value)
    assert "ranks must be >= 1, got 0" in text and "n_groups must be >= 2, got 1" in text
    with pytest.raises(ValueError, match=r"ranks \[1, 2\] must include show_rank 3"):
        HighRank.from_parameters({**TINY, "show_rank": 3})
    with pytest.raises(ValueError, match="top_k must be > 0"):     # the library's check, made by the notebook's first cell
        HighRank.from_parameters({**TINY, "top_k": 0})


def test_toys_are_trained_as_the_notebook_trained_them():
    s = HighRank.from_parameters(TINY)
    models, losses = high_rank.train_high_rank_toys(s, torch.device("cpu"))
    before, sets, targets = [], [], []
    for seed in s.seeds:      # the notebook's loop before the move
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(10_000 + seed)
        A = random_coefficients(4, 4, 3.0, generator)
        sets.append(group_features(64, 2, 2, 0.05, generator=generator))
        targets.append(sets[-1] @ A.T)
        before.append(high_rank_circuits(4, 3))
    old_losses = train_toys(before, sets, targets, 2, 32, 1e-3, seeds=s.seeds, compile=False, progress=False)
    assert losses == old_losses
    for new, old in zip(models, before):
        for (name, p), (_, q) in zip(new.named_parameters(), old.named_parameters()):
            assert torch.equal(p, q), name


def test_decompose_ranks_scores_each_run_as_the_notebook_did(tmp_path):
    s = HighRank.from_parameters(TINY)
    models, losses = high_rank.train_high_rank_toys(s, torch.device("cpu"))
    runs, per_seed = high_rank.decompose_ranks(s, models, losses, torch.device("cpu"), tmp_path)
    assert [(r["seed"], r["rank"], r["loss"]) for r in per_seed] == [
        (0, 1, "silence"), (0, 2, "silence"), (0, 2, "paper"), (1, 1, "silence"), (1, 2, "silence"), (1, 2, "paper")]
    assert (tmp_path / "decomposition_seed1_rank2" / "run.json").exists()
    assert (tmp_path / "decomposition_seed1_rank2_paper_loss" / "run.json").exists()
    assert runs[1, 2, "paper"][0].config.silence == 0.0 and runs[1, 2, "silence"][0].config.silence == 1.0
    row = per_seed[-2]
    seed, toy = 1, models[1]
    inputs = group_features(40, 2, 2, 0.05, generator=torch.Generator().manual_seed(20_000 + seed), drop_zero=True)
    config = l3d.L3DConfig(n_subnetworks=3, rank=2, epochs=3, batch_size=8, chunk_size=40, lr_decay_every=2,
                           restarts=2, restart_epochs=1, silence=1.0, silence_from=2, seed=seed)
    run = l3d.decompose(toy, inputs, "*", config, progress=False)
    evaluation, found = evaluate_and_recover(run.decomposition, run.source, feature_groups(2, 2), 4, n_samples=6,
                                             n_ref=2, seed=seed, first_layer="layers.0.weight")
    first_layer = run.decomposition.decoder_directions()["layers.0.weight"].detach()
    share = first_layer.flatten(1).pow(2).sum(1).tolist()
    extra = [k for k in found.live if k not in found.subnetwork_of.values()]
    assert row["reconstruction_error"] == evaluation["reconstruction_error"] and row["p_act"] == evaluation["p_act"]
    assert row["final_training_error"] == run.history.reconstruction_error[-1] and row["toy_loss"] == losses[1][-1]
    assert {k: row[k] for k in found.summary()} == found.summary()
    assert row["clean_groups"] == sum(p >= high_rank.CLEAN for p in found.purity)
    assert row["first_layer_share"] == share
    assert row["min_first_layer_share_matched"] == min((share[k] for k in found.subnetwork_of.values()), default=0.0)
    assert row["max_first_layer_share_extra"] == max((share[k] for k in extra), default=0.0)
    assert row["mmcs"] == mmcs(first_layer.transpose(1, 2), toy.layers[0].weight.detach().T)
    assert runs[1, 2, "silence"][1].matches == found.matches


def test_first_layer_shares_of_matched_and_extra_subnetworks():
    decomposition = l3d.Decomposition({"layers.0.weight": (3, 4), "layers.0.bias": (3,)}, 4, rank=1, seed=0)
    impact = torch.tensor([[5.0, 1.0, 0.0, 0.0], [0.0, 1.0, 3.0, 0.0]])     # subnetwork 1 live but matched to no group
    found = recovery_from_impact(impact, [0.1, 0.2, 0.3, 0.0])
    shares = high_rank.first_layer_shares(decomposition, found)
    direction = decomposition.decoder_directions()["layers.0.weight"].detach()
    share = [direction[k].pow(2).sum().item() for k in range(4)]
    assert shares["first_layer_share"] == pytest.approx(share)
    assert shares["min_first_layer_share_matched"] == pytest.approx(min(share[0], share[2]))
    assert shares["max_first_layer_share_extra"] == pytest.approx(share[1])
    assert high_rank.p_act_labels(found, 4) == ["0\ng0", "1", "2\ng1", "3"]


def test_medians_by_rank_and_errors_by_seed_match_the_notebooks_aggregation():
    s = HighRank.from_parameters({**TINY, "seeds": [0, 1, 2], "seed": 0})
    rows = [{"seed": seed, "rank": rank, "loss": loss, "one_per_circuit": (seed + rank) % 2 == 0,
             **{key: float(seed * 10 + rank + i + 100 * (loss == "paper")) for i, key in enumerate(high_rank.MEDIAN_KEYS)}}
            for seed in s.seeds for rank, loss in s.decompositions()]
    for r in rows:
        r["clean_groups"] = 2 if r["seed"] else 1
    median = high_rank.medians_by_rank(s, rows, "silence")

    def median_of(key, rank, loss):
        return statistics.median(float(r[key]) for r in rows if (r["rank"], r["loss"]) == (rank, loss))

    for rank in s.ranks:
        assert median[rank] == {**{key: median_of(key, rank, "silence") for key in high_rank.MEDIAN_KEYS},
                                "one_per_group_seeds": sum(r["one_per_circuit"] for r in rows if r["rank"] == rank
                                                           and r["loss"] == "silence"),
                                "all_clean_seeds": 2}
    paper = high_rank.medians_by_rank(s, rows, "paper")
    assert list(paper) == [2] and paper[2]["reconstruction_error"] == median_of("reconstruction_error", 2, "paper")
    assert high_rank.errors_by_seed(s, rows) == [[10.0 * seed + rank for rank in s.ranks] for seed in s.seeds]


def test_paper_loss_ranks_are_checked_and_skipped_without_the_penalty():
    assert HighRank.from_parameters(TINY).decompositions() == [(1, "silence"), (2, "silence"), (2, "paper")]
    assert HighRank.from_parameters({**TINY, "silence": 0.0}).decompositions() == [(1, "paper"), (2, "paper")]
    with pytest.raises(ValueError, match=r"paper_loss_ranks \[3\] must be among ranks \[1, 2\]"):
        HighRank.from_parameters({**TINY, "paper_loss_ranks": [3]})
