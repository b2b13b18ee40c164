"""The toy notebooks' shared settings: the toy variant and the conventions it brings, and both variants end to end."""
import warnings

import pytest
import torch

from l3d.experiments import high_rank, published, square, tmcs
from l3d.experiments.ground_truth import decoder_paths, paper_r
from l3d.experiments.high_rank import HighRank
from l3d.experiments.square import Square
from l3d.experiments.tmcs import TMCSExperiment
from l3d.experiments.tms import TMSExperiment
from l3d.experiments.toy_experiment import VariantExperiment, with_one_start
from l3d.experiments.toys import AUTHORS_CONVENTIONS
from l3d.runtime.validate import renamed_parameters

CPU = torch.device("cpu")
TINY_TRAINING = {"seeds": [0], "seed": 0, "n_train": 64, "toy_epochs": 2, "toy_compile": False, "n_samples": 64,
                 "epochs": 2, "batch_size": 16, "lr_decay_every": 1, "n_probe": 4, "n_ref": 2}


@pytest.mark.parametrize("cls, warm", [(TMCSExperiment, 2), (HighRank, 1), (Square, 11)])
def test_authors_toy_takes_the_authors_conventions(cls, warm):
    s = cls.from_parameters({})
    assert s.variant == "authors"
    assert (s.training.weight_decay, s.training.batch_size, s.training.restarts) == (1e-3, 128, 1)
    assert (s.l3d.divergence, s.l3d.reference, s.l3d.engine) == ("output_times_residual", "random_or_self", "dense")
    assert s.l3d.decoder_norm == "sum" and cls.from_parameters({"variant": "paper_text"}).l3d.decoder_norm == "unit"
    assert s.l3d.warm_start_epochs == warm == AUTHORS_CONVENTIONS.warm_start_epochs[cls.TOY]
    assert s.drop_zero_inputs is True and s.reference_pool == "batch"
    config = s.l3d_config(seed=0)        # references from the batch, all samples in one gradient pass
    assert config.batch_references and config.chunk_size == s.n_samples // s.l3d.batch_size * s.l3d.batch_size
    recorded = s.to_dict()
    assert recorded["l3d"]["divergence"] == "output_times_residual" and recorded["training"]["batch_size"] == 128
    assert "divergence" in recorded["conventional"] and "toy_batch_size" in recorded["conventional"]


def test_paper_text_toy_takes_the_earlier_defaults():
    s = TMCSExperiment.from_parameters({"variant": "paper_text"})
    assert (s.training.weight_decay, s.training.batch_size, s.training.restarts) == (0.01, 32, 4)
    assert (s.l3d.divergence, s.l3d.reference, s.l3d.engine, s.l3d.warm_start_epochs) == ("mse", "random", "dense", 10)
    assert s.drop_zero_inputs is False and s.l3d_config(seed=0).chunk_size == 992   # all samples in one pass
    assert not s.l3d_config(seed=0).batch_references
    h = HighRank.from_parameters({"variant": "paper_text"})
    assert ((h.n_groups, h.l3d.restarts, h.training.restarts, h.drop_zero_inputs, h.l3d.warm_start_epochs)
            == (5, 6, 1, True, 0))
    assert HighRank.from_parameters({}).n_groups == 6 and HighRank.from_parameters({}).l3d.restarts == 4
    assert HighRank.from_parameters({}).l3d.restart_epochs is None and h.l3d.restart_epochs == 30
    q = Square.from_parameters({"variant": "paper_text"})
    assert (q.width, q.bias_rank, q.drop_zero_inputs, q.l3d.warm_start_epochs) == (5, None, False, 10)
    a = Square.from_parameters({})
    assert (a.width, a.bias_rank) == (10, 1)
    assert a.ranks({"w": (3, 4), "b": (3,)}, 2) == {"w": 2, "b": 1} and q.ranks({"w": (3, 4), "b": (3,)}, 2) == 2


def test_a_parameter_given_overrides_the_convention_and_none_takes_it():
    s = TMCSExperiment.from_parameters({"divergence": "mse", "toy_batch_size": 64, "reference": None})
    assert s.l3d.divergence == "mse" and s.training.batch_size == 64 and s.l3d.reference == "random_or_self"
    assert "divergence" not in s.conventional and "toy_batch_size" not in s.conventional
    assert "reference" in s.conventional


def test_for_variant_gives_the_other_variant_with_the_same_own_choices():
    s = Square.from_parameters({"variant": "authors", "epochs": 7, "toy_batch_size": 64})
    other = s.for_variant("paper_text")
    assert other.variant == "paper_text" and other.l3d.epochs == 7 and other.training.batch_size == 64
    assert other.width == 5 and other.l3d.divergence == "mse" and other.other_variant == "authors"
    assert other.for_variant("authors") == s


def test_bad_variant_names_the_choices():
    for cls in (TMCSExperiment, HighRank, Square):
        with pytest.raises(ValueError, match=r"variant must be one of \['authors', 'paper_text'\], got 'author'"):
            cls.from_parameters({"variant": "author"})


def test_the_old_names_toy_and_compare_toy_are_read_with_a_deprecation_warning():
    with pytest.warns(DeprecationWarning, match=r"parameter 'toy' is deprecated, renamed 'variant'"):
        s = TMCSExperiment.from_parameters({"toy": "paper_text"})
    assert s == TMCSExperiment.from_parameters({"variant": "paper_text"})
    with pytest.warns(DeprecationWarning, match=r"parameter 'compare_toy' is deprecated, renamed 'compare_variant'"):
        q = Square.from_parameters({"compare_toy": False, "variant": "authors"})
    assert q.compare_variant is False and q.variant == "authors"
    with pytest.warns(DeprecationWarning):   # papermill's -p toy ... beside the notebook's own `variant`
        assert HighRank.from_parameters({"variant": "authors", "toy": "paper_text"}).variant == "paper_text"
    with pytest.warns(DeprecationWarning):   # a run saved before the rename still compares with the published numbers
        assert published._flat({"toy": "authors", "l3d": {"rank": 1}}) == {"variant": "authors", "l3d.rank": 1}


def test_only_an_old_name_holding_a_plain_value_is_renamed():
    with warnings.catch_warnings():
        warnings.simplefilter("error")       # no DeprecationWarning: notebook 07's nested toy settings, not a variant
        assert published._flat({"toy": {"steps": 3}}) == {"toy.steps": 3}
        model = torch.nn.Linear(2, 2)        # notebook 04's loop variable `toy` in the globals it reads
        assert renamed_parameters({"toy": model}, VariantExperiment.RENAMED) == {"toy": model}
        assert HighRank.from_parameters({"toy": model}).variant == "authors"
    with pytest.warns(DeprecationWarning, match=r"parameter 'toy' is deprecated, renamed 'variant'"):
        assert renamed_parameters({"toy": "paper_text"}, VariantExperiment.RENAMED) == {"variant": "paper_text"}
    assert published.RENAMED == VariantExperiment.RENAMED   # the published table's copy, kept out of its imports


def test_notebook_01_has_no_variant_and_keeps_its_training():
    s = TMSExperiment.from_parameters({})
    assert not hasattr(s, "variant") and s.training.weight_decay == 0.01 and s.training.batch_size == 32
    assert s.reference_pool == "samples" and s.l3d.divergence == "mse"


@pytest.mark.parametrize("variant", ["authors", "paper_text"])
def test_tmcs_runs_end_to_end_for_both_variants(variant):
    s = TMCSExperiment.from_parameters({**TINY_TRAINING, "variant": variant, "n_features": 4, "n_hidden": 2,
                                        "n_subnetworks": 4, "p_active": 0.3, "aligned_epochs": 1})
    models, losses, coefficients = tmcs.train_tmcs(s, CPU)
    hidden_bias = models[0].layers[0].bias is not None
    assert hidden_bias == (variant == "paper_text")   # the authors' hidden layer is linear without bias
    run = tmcs.decompose_tmcs(s, models[:1], CPU, stability=False, progress=False)[0][0]
    assert run.config.divergence == ("output_times_residual" if variant == "authors" else "mse")
    row = tmcs.score_tmcs(s, run, coefficients[0], losses[0][-1]).metrics
    assert row["paper_r"] == paper_r(decoder_paths(run.decomposition), coefficients[0])
    assert row["paper_r2"] == pytest.approx(row["paper_r"] ** 2) and -1 <= row["r2"] <= 1
    assert "aligned_then_paper_r2" in row
    median = tmcs.summarize([row])
    assert median["paper_r"] == row["paper_r"] and median["r2"] == row["r2"]


def test_high_rank_runs_end_to_end_on_the_authors_toy(tmp_path):
    s = HighRank.from_parameters({**TINY_TRAINING, "n_groups": 2, "group_size": 2, "n_hidden": 3, "ranks": [1],
                                  "show_rank": 1, "paper_loss_ranks": [1], "n_subnetworks": 3, "silence": 1.0,
                                  "silence_from": 1, "p_active": 0.3, "stability_ranks": [1], "perturbations": 1})
    models, losses = high_rank.train_high_rank_toys(s, CPU)
    assert models[0].layers[0].bias is None
    result = high_rank.decompose_ranks(s, models, losses, CPU, tmp_path)
    runs, rows = result.runs, result.per_seed
    assert list(result.stability) == [(1, "silence"), (1, "paper")]
    assert sorted(runs) == [(0, 1, "paper"), (0, 1, "silence")]
    for loss in high_rank.LOSSES:
        median = high_rank.medians_by_rank(s, rows, loss)[1]
        assert 0 <= median["clean_groups"] <= 2 and median["n_live"] >= 0


def test_square_runs_both_toys_at_the_main_setting(tmp_path):
    s = Square.from_parameters({**TINY_TRAINING, "n_features": 3, "depth": 2, "width": None, "n_subnetworks": 3,
                                "rank": 2, "sweep_subnetworks": [2], "p_active": 0.3, "toy_restarts": 1})
    models, losses, mse = square.train_square_toys(s, CPU)
    assert models[0].layers[0].weight.shape == (10, 3)           # the authors' width
    runs, rows, _ = square.decompose_grid(s, models, losses, mse, CPU, tmp_path)
    assert runs[0, 3, 2][0].config.rank["layers.0.bias"] == 1 and runs[0, 3, 2][0].config.rank["layers.0.weight"] == 2
    other = square.other_variant(s, CPU, tmp_path)
    assert [(r["variant"], r["n_subnetworks"], r["rank"]) for r in other] == [("paper_text", 3, 2)]
    assert (tmp_path / "other_variant_seed0_C3_rank2" / "run.json").exists()
    median = square.medians_by_setting(s, rows, other)
    assert set(median["3x2"]) == {"authors", "paper_text"}
    assert median["3x2"]["paper_text"]["reconstruction_error"] == other[0]["reconstruction_error"]
    assert "2x1" in median and "reconstruction_error" in median["2x1"]


@pytest.mark.parametrize("cls", [TMCSExperiment, HighRank, Square])
def test_both_variants_set_the_same_parameters(cls):
    """A parameter left None must resolve for either variant, so both conventions name the same parameters."""
    assert set(cls.conventions("authors")) == set(cls.conventions("paper_text"))
    none = {name: None for name in cls.conventions("authors")}
    for variant in ("authors", "paper_text"):
        assert cls.from_parameters({**none, "variant": variant}).conventional == sorted(none)


class _Started:
    """A run that kept its starts: one_start(r) names the start."""

    def __init__(self, name):
        self.name = name

    def one_start(self, r):
        return f"{self.name} start {r}"


@pytest.mark.parametrize("restarts, restart_epochs, single_start, calls, single", [
    (4, None, True, [{"keep_starts": True}], (["seed0 start 0"], [["rerun0 start 0"]])),       # from the same sweep
    (4, 30, True, [{"keep_starts": False}, {"restarts": 1}], "apart"),                          # screened: apart
    (4, None, False, [{"keep_starts": False}], "runs"),                                         # not asked: the runs
    (1, None, True, [{"keep_starts": False}], "runs"),                                          # one start already
])
def test_with_one_start_takes_the_first_start_where_every_start_trains_the_whole_schedule(
        restarts, restart_epochs, single_start, calls, single):
    config = TMCSExperiment.from_parameters({"restarts": restarts, "restart_epochs": restart_epochs}).l3d
    made = []

    def decompose_all(**changes):
        made.append(changes)
        return ([_Started("seed0")], [[_Started("rerun0")]]) if "restarts" not in changes else ("apart", "apart")

    runs, one = with_one_start(config, single_start, decompose_all)
    assert made == calls and runs[0][0].name == "seed0"
    if single == "runs":
        assert one is runs
    elif single == "apart":
        assert one == ("apart", "apart")
    else:
        assert one == single
