"""The published numbers: one place, each with its setting; compared only with runs made in that setting."""
import importlib.util
from pathlib import Path

import pytest

from l3d.experiments import field, published, tmcs, tms
from l3d.experiments.cnn import CNNExperiment
from l3d.experiments.high_rank import HighRank
from l3d.experiments.square import Square
from l3d.experiments.tmcs import TMCSExperiment
from l3d.experiments.tms import TMSExperiment
from l3d.experiments.transformer import TransformerExperiment

TOOL = Path(__file__).resolve().parents[2] / "tools" / "notebooks.py"
spec = importlib.util.spec_from_file_location("notebooks_tool", TOOL)
tool = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tool)

SETTINGS = {"01_toy_model_of_superposition": TMSExperiment, "02_circuit_superposition": TMCSExperiment,
            "03_high_rank_circuits": HighRank, "04_complex_loss_landscape": Square,
            "05_transformer": TransformerExperiment, "06_cnn": CNNExperiment}


def notebook_settings(notebook: str, scale: str = "paper", **changes):
    """The notebook's settings as its parameters cell (and test_parameters.json at test scale) makes them."""
    return SETTINGS[notebook].from_parameters({**tool.notebook_parameters(notebook, scale), **changes})


@pytest.mark.parametrize("notebook", sorted(SETTINGS))
def test_every_setting_a_number_belongs_to_is_a_setting_the_notebook_has(notebook):
    flat = published._flat(notebook_settings(notebook))
    for entry in published.entries(notebook):
        # no typo: it could match
        assert set(entry.setting) <= set(flat), (entry.source, set(entry.setting) - set(flat))


@pytest.mark.parametrize("scale", ["paper", "test"])
def test_the_toys_compare_with_paper_and_authors_code_the_real_models_only_at_the_papers_source(scale):
    for notebook in ("01_toy_model_of_superposition", "02_circuit_superposition", "03_high_rank_circuits",
                     "04_complex_loss_landscape"):
        assert sorted(published.comparable(notebook, notebook_settings(notebook, scale))) == ["authors_code", "paper"]
        assert published.caveat(notebook, notebook_settings(notebook, scale)) is None
    for notebook in ("05_transformer", "06_cnn"):
        assert published.comparable(notebook, notebook_settings(notebook, scale)) is None   # the embedded model
        assert published.caveat(notebook, notebook_settings(notebook, scale)).startswith(
            "Not compared with the paper: this run's setting differs from theirs (the paper: source: 'embedded' here, "
            "'paper' published")
    assert published.comparable("05_transformer", notebook_settings("05_transformer", source="paper")) == {
        "paper": {"reconstruction_error": 0.40}}
    assert published.comparable("06_cnn", notebook_settings("06_cnn", source="paper")) == {
        "paper": {"reconstruction_error": 0.23, "dead_fraction": 0.40}}


def test_tms_at_eight_features_is_not_compared_with_the_five_feature_numbers():
    eight = notebook_settings("01_toy_model_of_superposition", n_features=8)
    assert published.comparable("01_toy_model_of_superposition", eight) is None
    assert published.caveat("01_toy_model_of_superposition", eight) == (
        "Not compared with the paper or the authors' code: this run's setting differs from theirs (the paper: "
        "n_features: 8 here, 5 published; the authors' code: n_features: 8 here, 5 published).")
    metrics = {"median": {"reconstruction_error": 0.1, "intervention_selectivity": 50.0},
               "seeds_with_all_features_recovered": 3, "per_seed": [{"feature_cosines": [0.99, 0.98]}] * 3}
    assert list(tms.comparison(metrics, eight)[0]) == ["", "this run (median)"]
    assert list(tms.comparison(metrics, notebook_settings("01_toy_model_of_superposition"))[0]) == [
        "", "paper", "authors' code", "this run (median)"]
    assert tms.comparison(metrics) == tms.comparison(metrics, notebook_settings("01_toy_model_of_superposition"))


def test_high_rank_compares_with_the_figure_or_the_text_whichever_its_toy_is():
    authors = notebook_settings("03_high_rank_circuits")
    text = notebook_settings("03_high_rank_circuits", variant="paper_text")
    assert published.comparable("03_high_rank_circuits", authors)["paper"] == {"figure_s6_n_live": 7,
                                                                               "one_live_subnetwork_per_group": True}
    assert published.comparable("03_high_rank_circuits", text) == {"paper": {"n_live": 5,
                                                                             "one_live_subnetwork_per_group": True}}
    assert published.caveat("03_high_rank_circuits", text) == (
        "Not compared with the authors' code: this run's setting differs from theirs (the authors' code: variant: "
        "'paper_text' here, 'authors' published, n_groups: 5 here, 6 published).")


def test_the_old_names_are_the_numbers_of_the_one_place():
    assert tms.PAPER == {"reconstruction_error": 0.19}
    assert tms.AUTHORS == {"reconstruction_errors": [0.11, 0.28, 0.15], "seeds_with_all_features_recovered": "1 of 3",
                           "min_feature_cosine": 0.36}
    assert tmcs.PAPER == {"reconstruction_error": 0.064, "paper_r": 0.92}
    assert tmcs.AUTHORS_CODE == {"paper_r": [0.92, 0.76, 0.90], "reconstruction_error": [0.078, 0.108, 0.045]}
    assert field.PUBLISHED == {
        "5-2": {"APD": {"mmcs": 0.998, "ml2r": 0.893}, "SPD": {"mmcs": 1.000, "ml2r": 0.993}},
        "40-10": {"APD": {"mmcs": 0.996, "ml2r": 0.935}, "SPD": {"mmcs": 1.000, "ml2r": 1.010}},
        "5-2-id": {"SPD": {"mmcs": 1.000, "ml2r": 0.992}},
        "40-10-id": {"SPD": {"mmcs": 1.000, "ml2r": 1.031}},
    }
    assert published.comparable("07_field_benchmarks", {"benchmark": "5-2-id"}) == {"SPD": {"mmcs": 1.0, "ml2r": 0.992}}


def test_unknown_notebooks_sources_and_settings_are_refused_naming_them():
    with pytest.raises(ValueError, match=r"notebook must be one of \['01_toy_model_of_superposition'"):
        published.entries("01")
    with pytest.raises(ValueError, match=r"source must be one of \['paper'\] for 05_transformer, got 'SPD'"):
        published.numbers("05_transformer", "SPD")
    with pytest.raises(TypeError, match="settings must be a notebook's settings object or a dict, got list"):
        published.comparable("05_transformer", [1])
