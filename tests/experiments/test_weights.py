"""The shipped embedded models: found by settings, SHA-256 checked on loading, the notebooks' settings covered."""
import hashlib
import importlib.util
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_model
from torch import nn

from l3d.experiments import weights
from l3d.experiments.cnn import CNNExperiment, DigitsCNN, digits, digits_model
from l3d.experiments.transformer import TransformerExperiment, story_model
from l3d.runtime.resources import settings_key

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("notebooks_tool", ROOT / "tools" / "notebooks.py")
tool = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tool)


def ship_linear(folder, key="lin-0", scale=1.0):
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    with torch.no_grad():
        model.weight.mul_(scale)
    entry = weights.ship(key, "lin", {"scale": scale}, {"final_loss": 0.5}, {"cpu": "test"},
                         lambda path: save_model(model, path), folder)
    return model, entry


def test_ship_records_the_files_sha256_and_verified_file_checks_it(tmp_path):
    model, entry = ship_linear(tmp_path)
    data = (tmp_path / "lin-0.safetensors").read_bytes()
    assert entry["sha256"] == hashlib.sha256(data).hexdigest() and entry["bytes"] == len(data)
    assert json.loads((tmp_path / "manifest.json").read_text())["lin-0"] == entry
    path, found = weights.verified_file("lin-0", tmp_path)
    assert path == tmp_path / "lin-0.safetensors" and found == entry
    assert weights.verified_file("other", tmp_path) is None
    ship_linear(tmp_path, "lin-1", 2.0)                        # a second entry joins the first
    assert sorted(weights.manifest(tmp_path)) == ["lin-0", "lin-1"]
    assert weights.retire({"lin-1"}, tmp_path) == ["lin-0.safetensors"]
    assert sorted(weights.manifest(tmp_path)) == ["lin-1"] and (tmp_path / "lin-0.safetensors").exists()


def test_a_changed_file_is_refused_naming_the_file_and_both_hashes(tmp_path):
    _, entry = ship_linear(tmp_path)
    path = tmp_path / "lin-0.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 1                                              # one bit of one weight
    path.write_bytes(bytes(data))
    now = hashlib.sha256(bytes(data)).hexdigest()
    with pytest.raises(weights.ShippedWeightsError,
                       match=f"{path}.*SHA-256 is {now}, manifest.json records {entry['sha256']}"):
        weights.verified_file("lin-0", tmp_path)
    path.unlink()
    with pytest.raises(weights.ShippedWeightsError, match=f"{path} is missing"):
        weights.verified_file("lin-0", tmp_path)


def test_embedded_model_takes_shipped_then_cache_then_trains(tmp_path, monkeypatch):
    monkeypatch.setattr(weights, "FOLDER", tmp_path / "shipped")
    settings = {"scale": 3.0}
    key = settings_key("lin", settings)
    trained = []

    def train():
        trained.append(1)
        torch.manual_seed(1)
        return nn.Linear(3, 2), {"final_loss": 0.25}

    build = lambda: nn.Linear(3, 2)                            # noqa: E731
    model, record = weights.embedded_model("lin", settings, build, train, cache=tmp_path / "cache")
    assert record["origin"] == "trained" and record["key"] == key and trained == [1]
    again, record = weights.embedded_model("lin", settings, build, train, cache=tmp_path / "cache")
    assert record["origin"] == "cache" and record["cached"] and trained == [1]
    torch.testing.assert_close(again.weight, model.weight)
    shipped_model, _ = ship_linear(tmp_path / "shipped", key, 3.0)
    loaded, record = weights.embedded_model("lin", settings, build, train, cache=tmp_path / "cache")
    assert record["origin"] == "shipped" and record["final_loss"] == 0.5 and record["settings"] == {"scale": 3.0}
    torch.testing.assert_close(loaded.weight, shipped_model.weight)
    _, record = weights.embedded_model("lin", settings, build, train, cache=tmp_path / "cache", use_shipped=False)
    assert record["origin"] == "cache"


@pytest.mark.parametrize("scale", ["paper", "test"])
def test_the_notebooks_settings_find_their_shipped_models(scale):
    """05's and 06's models at their paper and test settings are shipped (l3d/experiments/weights, SHA-256
    verified), load, and are what the manifest says: the CNN's test accuracy is the recorded one."""
    story = TransformerExperiment.from_parameters(tool.notebook_parameters("05_transformer", scale))
    model, record = story_model(**story.model_options(), progress=False)
    assert record["origin"] == "shipped" and record["scale"] == scale and record["notebook"] == "05_transformer"
    assert not any(p.requires_grad for p in model.parameters())
    cnn = CNNExperiment.from_parameters(tool.notebook_parameters("06_cnn", scale))
    model, record = digits_model(**cnn.model_options(), progress=False)
    assert record["origin"] == "shipped" and record["scale"] == scale
    images, labels, train = digits(cnn.seed)
    with torch.no_grad():
        accuracy = (model(images[~train]).argmax(1) == labels[~train]).float().mean().item()
    assert accuracy == pytest.approx(record["test_accuracy"], abs=1e-6)
    assert isinstance(model, DigitsCNN)


def test_the_shipped_files_are_small_and_every_manifest_entry_is_a_notebook_setting():
    keys = set()
    for scale in ("paper", "test"):
        story = TransformerExperiment.from_parameters(tool.notebook_parameters("05_transformer", scale))
        cnn = CNNExperiment.from_parameters(tool.notebook_parameters("06_cnn", scale))
        keys |= {story_model(**story.model_options(), progress=False)[1]["key"],
                 digits_model(**cnn.model_options(), progress=False)[1]["key"]}
    entries = weights.manifest()
    assert len(keys) == 4 and set(entries) == keys
    for key, entry in entries.items():
        assert 50_000 < entry["bytes"] < 150_000                  # 60-140 KB: no model should bloat the package
        assert weights.verified_file(key) is not None
        assert entry["trained_on"]["torch"] and entry["trained_on"]["cpu_capability"]
