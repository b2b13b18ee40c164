import pytest
import torch
from torchvision.models import mobilenet_v3_small

import l3d
from l3d.experiments.cnn import (
    DIGITS_BLOCK, PAPER_BLOCK, ImageNetLogits, block_collector, cifar100, digits, digits_model, paper_model, fraction_ranks,
)
from l3d.divergences import divergence
from l3d.runtime.resources import MissingResourceError


def test_digits_are_real_and_split():
    images, labels, train = digits()
    assert images.shape == (1797, 1, 8, 8) and 0 <= images.min() and images.max() <= 1
    assert set(labels.tolist()) == set(range(10))
    assert train.sum() == 1198 and torch.equal(train, digits()[2])


def test_digits_model_learns_caches_and_its_block_decomposes(tmp_path):
    settings = dict(channels=(4, 8, 8), epochs=3, cache=tmp_path, progress=False)
    model, record = digits_model(**settings)
    assert not record["cached"] and record["test_accuracy"] > 0.5  # chance is 0.1
    again, record2 = digits_model(**settings)
    assert record2["cached"] and record2["test_accuracy"] == record["test_accuracy"]
    images = digits()[0][:20]
    torch.testing.assert_close(again(images), model(images))
    collector = block_collector(model, DIGITS_BLOCK)
    assert collector.shapes == {"features.1.0.weight": (8, 4, 3, 3), "features.1.0.bias": (8,)}
    decomposition = l3d.Decomposition(collector.shapes, n_subnetworks=3, rank=2, seed=0)
    source = l3d.GradientSource(collector, images, batch_size=10)
    assert torch.isfinite(torch.tensor(l3d.evaluate(decomposition, source)["reconstruction_error"]))


def test_mobilenet_block_gradients_match_autograd():
    torch.manual_seed(0)
    model = mobilenet_v3_small(weights=None, num_classes=7).eval()
    forward = ImageNetLogits(size=64)
    collector = block_collector(model, PAPER_BLOCK, forward=forward)
    assert all(n.startswith("features.7.") for n in collector.names)
    assert collector.shapes["features.7.block.0.0.weight"] == (120, 40, 1, 1)
    images = torch.rand(3, 3, 32, 32)
    refs = collector.references(images, torch.Generator().manual_seed(1))
    grads = collector(images, references=refs)
    params = [p.requires_grad_(True) for p in collector.params.values()]
    expected = torch.autograd.grad(divergence(forward(model, images[1:2])[0], refs[1], "kl"), params)
    for name, g in zip(collector.names, expected):
        assert grads.dense().grads[name].shape == (3, *g.shape)
        torch.testing.assert_close(grads.dense().grads[name][1], g, rtol=1e-3, atol=1e-6)
    ranks = fraction_ranks(collector.shapes)
    assert ranks["features.7.block.0.0.weight"] == (12, 4, 1, 1)
    assert l3d.Decomposition(collector.shapes, 4, ranks).ranks == ranks


@pytest.fixture
def offline_empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("L3D_CACHE", str(tmp_path / "l3d"))


def test_paper_model_offline_says_what_to_download(offline_empty_cache, tmp_path):
    with pytest.raises(MissingResourceError) as err:
        paper_model()
    message = str(err.value)
    assert "mobilenet_v3_small" in message and "https://download.pytorch.org" in message
    assert str(tmp_path / "torch" / "hub" / "checkpoints") in message


def test_cifar100_offline_says_what_to_download(offline_empty_cache, tmp_path):
    with pytest.raises(MissingResourceError) as err:
        cifar100(100)
    assert "cifar-100-python.tar.gz" in str(err.value) and str(tmp_path / "l3d" / "cifar-100") in str(err.value)
