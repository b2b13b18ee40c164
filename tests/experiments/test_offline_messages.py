"""Offline, source='paper' names every missing resource in one error, each with where it goes and how to get it."""
import pytest

from l3d.experiments import cnn, transformer
from l3d.runtime.resources import MissingResourceError


@pytest.fixture
def offline_empty_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("L3D_CACHE", str(tmp_path / "l3d"))
    for name in ("HF_HUB_CACHE", "HF_DATASETS_CACHE"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def no_datasets_package(monkeypatch):
    real = transformer.importlib.util.find_spec
    monkeypatch.setattr(transformer.importlib.util, "find_spec",
                        lambda name, *a: None if name == "datasets" else real(name, *a))


def test_transformer_names_model_package_and_data_at_once(offline_empty_caches, monkeypatch):
    no_datasets_package(monkeypatch)
    with pytest.raises(MissingResourceError) as err:
        transformer.paper_model()
    message = str(err.value)
    assert "needs 3 things" in message
    hub, data = offline_empty_caches / "hf" / "hub", offline_empty_caches / "hf" / "datasets"
    assert (f"1. the model {transformer.PAPER_MODEL!r}" in message
            and f"hf download {transformer.PAPER_MODEL}" in message)
    assert str(hub) in message and "huggingface-cli" not in message
    assert "2. the Python package `datasets` (the `paper` extra): `pip install -e '.[paper]'`" in message
    assert f"3. the data set {transformer.PAPER_DATA!r}" in message and str(data) in message
    assert "source='embedded'" in message


def test_transformer_names_only_what_is_missing(offline_empty_caches, monkeypatch):
    no_datasets_package(monkeypatch)
    hub = offline_empty_caches / "hf" / "hub"
    (hub / "datasets--roneneldan--TinyStories").mkdir(parents=True)     # the data is in the hub cache
    with pytest.raises(MissingResourceError) as err:
        transformer.paper_model()
    message = str(err.value)
    assert "needs 2 things" in message and "the model" in message and "`datasets`" in message
    assert "the data set" not in message
    with pytest.raises(MissingResourceError) as err:                    # past the model: the package still
        transformer.paper_texts(tokenizer=None, n_texts=10)
    assert "needs 1 thing " in str(err.value) and "`datasets`" in str(err.value)


def test_cnn_names_weights_and_cifar100_at_once(offline_empty_caches):
    with pytest.raises(MissingResourceError) as err:
        cnn.paper_model()
    message = str(err.value)
    assert "needs 2 things" in message
    assert "1. torchvision's MobileNet-v3-small ImageNet weights" in message
    assert (str(offline_empty_caches / "torch" / "hub" / "checkpoints") in message
            and "https://download.pytorch.org" in message)
    assert f"2. CIFAR-100, expected under {offline_empty_caches / 'l3d' / 'cifar-100'}" in message
    assert cnn.CIFAR100_URL in message


def test_cnn_with_cifar100_in_place_names_the_weights_alone(offline_empty_caches):
    (offline_empty_caches / "l3d" / "cifar-100" / "cifar-100-python" / "train").mkdir(parents=True)
    with pytest.raises(MissingResourceError) as err:
        cnn.paper_model()
    assert "needs 1 thing " in str(err.value) and "MobileNet" in str(err.value) and "CIFAR" not in str(err.value)
