"""Notebook 03's experiment: settings, toys, decompositions at every rank, scores and medians, each against the
computation the notebook made inline before it moved into l3d.experiments.high_rank."""
import dataclasses
import statistics

import pytest
import torch

import l3d
from l3d.experiments import high_rank
from l3d.experiments.ground_truth import evaluate_and_recover, mmcs, recovery_from_impact
from l3d.experiments.high_rank import HighRank
from l3d.experiments.stability import perturbed
from l3d.experiments.toys import feature_groups, group_features, high_rank_circuits, random_coefficients, train_toys

TINY = {"variant": "paper_text", "seeds": [0, 1], "seed": 1, "n_groups": 2, "group_size": 2, "n_hidden": 3,
        "n_train": 64, "toy_epochs": 2, "toy_restarts": 1, "toy_compile": False, "ranks": [1, 2], "show_rank": 2,
        "n_samples": 40, "drop_zero_inputs": True,
        "n_subnetworks": 3, "epochs": 3, "batch_size": 8, "lr_decay_every": 2, "restarts": 2, "restart_epochs": 1,
        "silence": 1.0, "silence_from": 2, "paper_loss_ranks": [2], "stability_ranks": [2], "n_probe": 6, "n_ref": 2}


def test_settings_read_the_notebook_parameters_and_check_them_before_any_work():
    s = HighRank.from_parameters(TINY)
    assert (s.n_features == 4 and s.groups == [[0, 1], [2, 3]] and s.training.compile is False
            and s.training.restarts == 1)
    assert s.l3d.silence == 1.0 and s.l3d.silence_from == 2 and s.l3d.restarts == 2
    assert s.to_dict()["training"]["compile"] is False and s.to_dict()["ranks"] == [1, 2]
    with pytest.raises(ValueError) as caught:
        HighRank.from_parameters({**TINY, "ranks": [1, 0], "show_rank": 3, "n_groups": 1})
    text = str(caught.value)
    assert "ranks must be >= 1, got 0" in text and "n_groups must be >= 2, got 1" in text
    with pytest.raises(ValueError, match=r"ranks \[1, 2\] must include show_rank 3"):
        HighRank.from_parameters({**TINY, "show_rank": 3})
    # the library's check, made by the notebook's first cell
    with pytest.raises(ValueError, match="top_k must be > 0"):
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
        before.append(high_rank_circuits(4, 3, "paper_text"))
    old_losses = train_toys(before, sets, targets, 2, 32, 1e-3, seeds=s.seeds, compile=False, progress=False)
    assert losses == old_losses
    for new, old in zip(models, before):
        for (name, p), (_, q) in zip(new.named_parameters(), old.named_parameters()):
            assert torch.equal(p, q), name


def explicit_sweep(models, rank, silence, perturbations=0, restarts=2):
    """TINY's decompositions of both seeds at `rank` and their perturbed reruns, written out member by member: the
    toy and the start of rerun p of seed s perturbed by 1e-6 from seeds 1000·s + p and p. One `l3d.sweep`, as
    decompose_ranks must build it (the same program, so the same numbers: a stack of members rounds differently in
    float32 from a member alone, and on these tiny decompositions that can flip a BatchTopK choice)."""
    members, inputs, configs = [], [], []
    for p in range(perturbations + 1):
        for seed, toy in zip([0, 1], models):
            members.append(perturbed(toy, 1e-6 if p else 0.0, 1000 * seed + p))
            inputs.append(group_features(40, 2, 2, 0.05, generator=torch.Generator().manual_seed(20_000 + seed),
                                         drop_zero=True))
            configs.append(l3d.L3DConfig(n_subnetworks=3, rank=rank, epochs=3, batch_size=8, chunk_size=40,
                                         lr_decay_every=2, restarts=restarts, restart_epochs=1, silence=silence,
                                         silence_from=2, seed=seed, engine="dense", start_noise=1e-6 if p else 0.0,
                                         start_noise_seed=p))
    return l3d.sweep(members, inputs, "*", configs, progress=False)


def test_decompose_ranks_scores_each_run_as_the_notebook_did(tmp_path):
    s = HighRank.from_parameters({**TINY, "perturbations": 0})
    models, losses = high_rank.train_high_rank_toys(s, torch.device("cpu"))
    result = high_rank.decompose_ranks(s, models, losses, torch.device("cpu"), tmp_path)
    runs, per_seed = result.runs, result.per_seed
    assert [(r["seed"], r["rank"], r["loss"]) for r in per_seed] == [
        (0, 1, "silence"), (0, 2, "silence"), (0, 2, "paper"), (1, 1, "silence"), (1, 2, "silence"), (1, 2, "paper")]
    assert result.stability == {} and set(result.seconds) == {"l3d", "scoring", "stability_scoring"}
    assert (tmp_path / "decomposition_seed1_rank2" / "run.json").exists()
    assert (tmp_path / "decomposition_seed1_rank2_paper_loss" / "run.json").exists()
    assert runs[1, 2, "paper"][0].config.silence == 0.0 and runs[1, 2, "silence"][0].config.silence == 1.0
    row = per_seed[-2]
    seed, toy = 1, models[1]
    run = explicit_sweep(models, 2, 1.0)[seed]
    evaluation, found = evaluate_and_recover(run.decomposition, run.source, feature_groups(2, 2), 4, n_samples=6,
                                             n_ref=2, seed=seed, first_layer="layers.0.weight")
    first_layer = run.decomposition.decoder_directions()["layers.0.weight"].detach()
    share = first_layer.flatten(1).pow(2).sum(1).tolist()
    extra = [k for k in found.live if k not in found.subnetwork_of.values()]
    assert row["reconstruction_error"] == evaluation["reconstruction_error"] and row["p_act"] == evaluation["p_act"]
    assert row["final_training_error"] == run.history.reconstruction_error[-1] and row["toy_loss"] == losses[1][-1]
    assert row["start_errors"] == run.start_errors and len(row["start_errors"]) == 2
    assert {k: row[k] for k in found.summary()} == found.summary()
    assert row["clean_groups"] == sum(p >= high_rank.CLEAN for p in found.impact_share)
    assert row["first_layer_share"] == share
    assert row["min_first_layer_share_matched"] == min((share[k] for k in found.subnetwork_of.values()), default=0.0)
    assert row["max_first_layer_share_extra"] == max((share[k] for k in extra), default=0.0)
    assert row["mmcs"] == mmcs(first_layer.transpose(1, 2), toy.layers[0].weight.detach().T)
    assert runs[1, 2, "silence"][1].matches == found.matches


def test_decompose_ranks_checks_each_rank_and_loss_on_perturbed_reruns(tmp_path):
    s = HighRank.from_parameters({**TINY, "perturbations": 2, "stability_ranks": [1, 2]})
    models, losses = high_rank.train_high_rank_toys(s, torch.device("cpu"))
    result = high_rank.decompose_ranks(s, models, losses, torch.device("cpu"), tmp_path)
    assert list(result.stability) == [(1, "silence"), (2, "silence"), (2, "paper")]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(      # the reruns are not saved
        f"decomposition_seed{seed}_rank{rank}{'_paper_loss' if loss == 'paper' else ''}"
        for seed in s.seeds for rank, loss in s.decompositions())
    # at rank 2 with the paper's loss: each rerun scored on its own perturbed toy for the outcome
    explicit = explicit_sweep(models, 2, 0.0, perturbations=2)
    check = result.stability[2, "paper"]
    for seed, row in zip(s.seeds, check.per_seed):
        assert row["seed"] == seed
        outcomes = []
        for p in range(3):
            run = explicit[2 * p + seed]
            _, found = evaluate_and_recover(run.decomposition, run.source, feature_groups(2, 2), 4, n_samples=6,
                                            n_ref=2, seed=seed, first_layer="layers.0.weight")
            outcomes.append([sum(q >= high_rank.CLEAN for q in found.impact_share), len(found.live),
                             found.one_per_circuit])
        assert row["outcome"] == outcomes[0] and row["perturbed"] == outcomes[1:]
        assert row["changed"] == any(o != outcomes[0] for o in outcomes[1:])
        unperturbed = next(r for r in result.per_seed if (r["seed"], r["rank"], r["loss"]) == (seed, 2, "paper"))
        assert row["outcome"] == [unperturbed[k] for k in high_rank.OUTCOME_KEYS]
    assert set(check.median_shift) == set(high_rank.STABILITY_MEDIAN_KEYS)
    metrics = high_rank.stability_metrics(s, result.stability)
    assert metrics["perturbations"] == 2 and metrics["perturbation"] == 1e-6 and metrics["restarts"] == 2
    assert metrics["n_checked"] == 6 and metrics["n_changed"] == sum(len(c.changed) for c in result.stability.values())
    reruns = [(row["outcome"], o) for c in result.stability.values() for row in c.per_seed for o in row["perturbed"]]
    assert len(reruns) == 12 and metrics["changed_rate"] == sum(a != b for a, b in reruns) / 12
    assert metrics["paper"][2] == check.to_dict() and sorted(metrics["silence"]) == [1, 2]
    table = high_rank.stability_table(result.stability)
    assert [(r["rank"], r["loss"], r["seed"]) for r in table] == [
        (1, "silence", 0), (1, "silence", 1), (2, "silence", 0), (2, "silence", 1), (2, "paper", 0), (2, "paper", 1)]
    assert table[-1] == {"rank": 2, "loss": "paper", **check.rows()[1]}


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
             **{key: float(seed * 10 + rank + i + 100 * (loss == "paper"))
                for i, key in enumerate(high_rank.MEDIAN_KEYS)}}
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
    spread = high_rank.ranges_by_rank(s, rows, "paper")
    assert list(spread) == [2] and spread[2]["reconstruction_error"] == [
        min(r["reconstruction_error"] for r in rows if (r["rank"], r["loss"]) == (2, "paper")),
        max(r["reconstruction_error"] for r in rows if (r["rank"], r["loss"]) == (2, "paper"))]
    assert set(spread[2]) == {"n_live", "min_impact_share", "reconstruction_error"}
    assert high_rank.errors_by_seed(s, rows) == [[10.0 * seed + rank for rank in s.ranks] for seed in s.seeds]


def test_paper_loss_ranks_are_checked_and_skipped_without_the_penalty():
    assert HighRank.from_parameters(TINY).decompositions() == [(1, "silence"), (2, "silence"), (2, "paper")]
    assert HighRank.from_parameters({**TINY, "silence": 0.0}).decompositions() == [(1, "paper"), (2, "paper")]
    with pytest.raises(ValueError, match=r"paper_loss_ranks \[3\] must be among ranks \[1, 2\]"):
        HighRank.from_parameters({**TINY, "paper_loss_ranks": [3]})


def test_headline_states_k_of_n_seeds_with_median_and_range_from_the_rows():
    rows = [{"seed": seed, "rank": 3, "loss": "silence", "one_per_circuit": seed != 1, "clean_groups": 2 if seed else 1,
             "impact_share": [0.9, 0.95], "n_live": 2 + seed, "min_impact_share": 0.5 + seed / 10,
             "reconstruction_error": 0.2 + seed / 100} for seed in range(3)]
    rows.append({**rows[0], "loss": "paper", "one_per_circuit": False})   # another loss: not counted
    assert high_rank.headline(rows, "silence") == [
        ("rank 3: one live subnetwork per group in 2 of 3 seeds, every group clean in 2 of 3; live 3 (2-4), "
         "lowest impact share 0.600 (0.500-0.700), error 0.210 (0.200-0.220)")]
    assert high_rank.headline(rows, "paper")[0].startswith("rank 3: one live subnetwork per group in 0 of 1 seeds")
    assert high_rank.spread([0.3, 0.1, 0.2, 0.4]) == "0.250 (0.100-0.400)"


def test_the_stability_check_runs_at_stability_ranks_and_one_start_runs_as_the_authors_code(tmp_path):
    s = HighRank.from_parameters({**TINY, "perturbations": 1, "paper_loss_ranks": [1, 2]})     # stability_ranks [2]
    assert s.single_start_decompositions() == [(1, "paper"), (2, "paper")]
    assert HighRank.from_parameters({**TINY, "single_start": False}).single_start_decompositions() == []
    assert HighRank.from_parameters({**TINY, "restarts": 1}).single_start_decompositions() == []
    models, losses = high_rank.train_high_rank_toys(s, torch.device("cpu"))
    result = high_rank.decompose_ranks(s, models, losses, torch.device("cpu"), tmp_path,
                                       single_start=s.single_start_decompositions())
    assert list(result.stability) == [(2, "silence"), (2, "paper")]         # rank 1 is not rerun
    single = result.single            # screened starts (restart_epochs 1): one start per seed, a sweep of its own
    assert list(single.stability) == [(2, "paper")] and single.single is None
    assert [(r["seed"], r["rank"], r["loss"]) for r in single.per_seed] == [
        (0, 1, "paper"), (0, 2, "paper"), (1, 1, "paper"), (1, 2, "paper")]
    run = single.runs[1, 2, "paper"][0]
    assert run.config.restarts == 1 and run.config.silence == 0.0 and run.start_errors == []
    assert all(len(r["start_errors"]) == 2 for r in result.per_seed)      # the default: the best of 2 starts
    assert len(list(tmp_path.iterdir())) == 8                               # the one-start runs are not saved
    assert run.history.reconstruction_error == explicit_sweep(models, 2, 0.0, perturbations=1, restarts=1)[1] \
        .history.reconstruction_error
    metrics = high_rank.stability_metrics(s, single.stability, restarts=1)
    assert metrics["restarts"] == 1 and metrics["restart_epochs"] is None and sorted(metrics["paper"]) == [2]
    whole = dataclasses.replace(s, l3d=s.l3d.replace(restart_epochs=None))   # (None in TINY: paper_text's 1)
    result = high_rank.decompose_ranks(whole, models, losses, torch.device("cpu"), None,
                                       single_start=whole.single_start_decompositions())
    first = result.single             # every start the whole schedule: start 0 of the same sweep
    assert list(first.stability) == [(2, "paper")]
    assert [(r["seed"], r["rank"], r["loss"]) for r in first.per_seed] == [
        (0, 1, "paper"), (0, 2, "paper"), (1, 1, "paper"), (1, 2, "paper")]
    for key, (run, _) in first.runs.items():
        best = result.runs[key][0]
        assert run.start_index == 0 and run.decomposition is best.starts[0][0] and run.start_errors == []
        assert run.history.reconstruction_error[-1] == best.start_errors[0]
    assert first.per_seed[0]["reconstruction_error"] > 0
    with pytest.raises(ValueError, match=r"stability_ranks \[3\] must be among ranks \[1, 2\]"):
        HighRank.from_parameters({**TINY, "stability_ranks": [3]})
