import pytest
import torch
from torchvision.models import mobilenet_v3_small

import l3d
from l3d.divergences import divergence
from l3d.experiments.cnn import (
    DIGITS_BLOCK,
    PAPER_BLOCK,
    ImageNetLogits,
    cifar100,
    digits,
    digits_model,
    fraction_ranks,
    paper_model,
)
from l3d.gradients import GradientCollector
from l3d.runtime.resources import MissingResourceError


def test_digits_are_real_and_split():
    images, labels, train = digits()
    assert images.shape == (1797, 1, 8, 8) and 0 <= images.min() and images.max() <= 1
    assert set(labels.tolist()) == set(range(10))
    assert train.sum() == 1198 and torch.equal(train, digits()[2])


def test_the_digits_and_their_split_are_the_recorded_ones_on_every_machine():
    """06's data: scikit-learn's bundled digits (its version pinned in requirements.lock) and a split from torch's
    seeded CPU generator. The SHA-256 of images (float32), labels and split (seed 0) as recorded."""
    import hashlib

    def sha(t):
        return hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()

    images, labels, train = digits(0)
    assert (images.dtype, labels.dtype, train.dtype) == (torch.float32, torch.int64, torch.bool)
    assert sha(images) == "9f578524b6cec1fc800cc52dfc87ebe56264983d490aa72a4bd928ba2570ec77"
    assert sha(labels) == "a3c91c262eddcf7ba8f0e37507c30284493c9b20412ffe4af30d536401f7ba21"
    assert sha(train) == "03699256dd594fa541e8ed320a9d9f19bed5c009c26ac8747b4ef55acd4a03de"


def test_digits_model_learns_caches_and_its_block_decomposes(tmp_path):
    settings = dict(channels=(4, 8, 8), epochs=3, cache=tmp_path, progress=False)
    model, record = digits_model(**settings)
    assert not record["cached"] and record["test_accuracy"] > 0.5  # chance is 0.1
    again, record2 = digits_model(**settings)
    assert record2["cached"] and record2["test_accuracy"] == record["test_accuracy"]
    assert not any(p.requires_grad for m in (model, again) for p in m.parameters())
    images = digits()[0][:20]
    torch.testing.assert_close(again(images), model(images))
    collector = GradientCollector(model, DIGITS_BLOCK, divergence="kl")
    assert collector.shapes == {"features.1.0.weight": (8, 4, 3, 3), "features.1.0.bias": (8,)}
    decomposition = l3d.Decomposition(collector.shapes, n_subnetworks=3, rank=2, seed=0)
    source = l3d.GradientSource(collector, images, batch_size=10)
    assert torch.isfinite(torch.tensor(l3d.evaluate(decomposition, source)["reconstruction_error"]))


def test_mobilenet_block_gradients_match_autograd():
    torch.manual_seed(0)
    model = mobilenet_v3_small(weights=None, num_classes=7).requires_grad_(False)
    forward = ImageNetLogits(size=64)
    # untrained, the default BatchNorm statistics shrink every layer's output (logits ~1e-10, gradients exactly
    # 0): calibrate them on random images and scale the classifier so the logits are O(1)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None
            module.reset_running_stats()
    with torch.no_grad():
        forward(model.train(), torch.rand(16, 3, 32, 32))
        model.classifier[-1].weight.mul_(300)
    model.eval()
    collector = GradientCollector(model, PAPER_BLOCK, divergence="kl", forward=forward)
    assert all(n.startswith("features.7.") for n in collector.names)
    assert collector.shapes["features.7.block.0.0.weight"] == (120, 40, 1, 1)
    images = torch.rand(3, 3, 32, 32)
    refs = collector.references(images, torch.Generator().manual_seed(1))
    grads = collector(images, references=refs)
    params = [p.requires_grad_(True) for p in collector.params.values()]
    expected = torch.autograd.grad(divergence(forward(model, images[1:2])[0], refs[1], "kl"), params)
    assert forward(model, images).std() > 0.1                          # logits that differ between images
    assert all(g.norm() > 1e-4 * g.numel() ** 0.5 * 1e-2 for g in expected)   # and gradients that are not zero
    for name, g in zip(collector.names, expected):
        assert grads.dense().grads[name].shape == (3, *g.shape)
        # float32 through 8 blocks: elementwise within 1e-4 of the largest entry (sums in another order)
        torch.testing.assert_close(grads.dense().grads[name][1], g, rtol=1e-3, atol=1e-4 * g.abs().max().item())
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


# --- notebook 06 -----------------------------------------------------------------------------------
from l3d.experiments.cnn import (  # noqa: E402
    CNNExperiment,
    DigitsCNN,
    ModelAndImages,
    block_shapes,
    class_purity,
    shown_subnetworks,
    subnetwork_rows,
)
from l3d.experiments.model_experiment import fit_metrics  # noqa: E402
from l3d.experiments.subnetworks import affected_outputs, label_purity, owned_labels  # noqa: E402
from l3d.initialize import init_from_inputs_  # noqa: E402

NOTEBOOK_06 = dict(source="embedded", seed=0, model_epochs=60, n_images=10_000, n_test_images=2_000, n_subnetworks=None,
                   rank=None, rank_fraction=None, top_k=0.1, epochs=None, lr=None, lr_decay=0.8, lr_decay_every=None,
                   warm_start_epochs=None, init_images=None, batch_size=32, n_ref=None)


def test_cnn_settings_take_the_sources_values_and_derive_the_decomposition():
    settings = CNNExperiment.from_parameters(NOTEBOOK_06)
    c = settings.l3d
    assert ((c.n_subnetworks, c.rank, c.epochs, c.lr_decay_every, settings.n_ref, settings.init_images)
            == (40, 12, 20, 2, 10, 0))
    assert (c.divergence, c.batch_size, c.chunk_size, c.gradient_chunk_size, c.init) == ("kl", 32, 512, 256, "random")
    started = CNNExperiment.from_parameters({**NOTEBOOK_06, "init_images": 64, "batch_size": 8})
    assert (started.l3d.init, started.l3d.init_samples, started.l3d.chunk_size) == ("gradients", 64, 128)
    # rank_fraction: the paper's per-tensor ranks, from the block's shapes (those of the real model)
    paper = CNNExperiment.from_parameters({**NOTEBOOK_06, "source": "paper"})
    assert paper.rank_fraction == 0.1 and paper.l3d.rank == fraction_ranks(block_shapes("paper"), 0.1)
    assert paper.l3d.rank["features.7.block.0.0.weight"] == (12, 4, 1, 1)
    assert block_shapes("embedded") == {n: tuple(p.shape)
                                        for n, p in l3d.select_tensors(DigitsCNN(), DIGITS_BLOCK).items()}
    assert CNNExperiment.from_parameters({**NOTEBOOK_06, "rank": 3, "rank_fraction": 0.5}).l3d.rank == 3   # rank wins


def test_cnn_settings_name_every_bad_setting_before_any_work():
    with pytest.raises(ValueError, match="set rank .* or rank_fraction"):
        CNNExperiment(rank=None, rank_fraction=None, n_ref=1, init_images=0)
    with pytest.raises(ValueError) as err:
        CNNExperiment.from_parameters({**NOTEBOOK_06, "n_show": 0, "rank_fraction": 1.5})
    assert "n_show must be >= 1" in str(err.value) and "rank_fraction must be > 0 and <= 1" in str(err.value)
    with pytest.raises(ValueError, match="lr_decay must be > 0 and <= 1"):
        CNNExperiment.from_parameters({**NOTEBOOK_06, "lr_decay": 0})


def test_decompose_with_the_settings_is_the_notebooks_former_pipeline(tmp_path):
    """Notebook 06's former hand-built pipeline (collector, source with min(n_train, 16 batches) per pass, start
    from image gradients, fit, held-out evaluation) gives the numbers of l3d.decompose with CNNExperiment's settings,
    also when the training images are fewer than 16 batches."""
    model, _ = digits_model(channels=(4, 8, 8), epochs=2, cache=tmp_path, progress=False)
    images, labels, _ = digits()
    train, test = images[:100], images[100:130]
    settings = CNNExperiment.from_parameters({**NOTEBOOK_06, "n_subnetworks": 5, "rank": 2, "epochs": 2,
                                              "batch_size": 8, "init_images": 20, "n_ref": 2, "n_top": 3})
    run = l3d.decompose(model, train, DIGITS_BLOCK, settings.l3d, progress=False)
    metrics = fit_metrics(run, test)

    collector = GradientCollector(model, DIGITS_BLOCK, divergence="kl", gradient_chunk_size=256)
    decomposition = l3d.Decomposition(collector.shapes, 5, 2, 0.1, seed=0)
    source = l3d.GradientSource(collector, train, batch_size=8, chunk_size=min(96, 16 * 8), seed=0)
    init_from_inputs_(decomposition, collector, train[:20], seed=0)
    history = l3d.fit(decomposition, source, 2, lr=0.01, lr_decay=0.8, lr_decay_every=2, warm_start_epochs=2,
                      progress=False)
    test_error = l3d.evaluate(decomposition, l3d.GradientSource(collector, test, batch_size=8, seed=1,
                                                                drop_last=False))["reconstruction_error"]
    assert run.history.to_dict() == history.to_dict() == metrics["history"]
    assert metrics["test_reconstruction_error"] == test_error


def test_class_purity_shown_subnetworks_and_rows_are_what_the_notebook_computed():
    torch.manual_seed(0)
    model = DigitsCNN((4, 8, 8)).eval().requires_grad_(False)
    images, labels, _ = digits()
    images, labels = images[:40], labels[:40]
    names = [str(d) for d in range(10)]
    loaded = ModelAndImages(model, DIGITS_BLOCK, None, images, images, labels, names, names, "test")
    decomposition = l3d.Decomposition({n: tuple(p.shape) for n, p in l3d.select_tensors(model, DIGITS_BLOCK).items()},
                                      5, 1, seed=0)
    top = torch.randperm(40, generator=torch.Generator().manual_seed(1))[:20].view(5, 4)
    top[3] = torch.nonzero(labels == labels[0]).flatten()[:1].repeat(4)        # a pure one
    p_act = torch.tensor([0.2, 0.0, 0.1, 0.3, 0.2])
    pure, label, metrics = class_purity(top, labels, p_act, 10)
    expected_pure, expected_label = label_purity(top, labels)
    live = torch.nonzero(p_act > 0).flatten()
    assert torch.equal(pure, expected_pure) and torch.equal(label, expected_label)
    assert metrics == {"mean_class_purity": expected_pure[live].mean().item(),
                       "classes_owned": len(owned_labels(expected_pure[live], expected_label[live], 0.8)),
                       "n_classes": 10}
    shown = shown_subnetworks(pure, p_act, 3)
    assert (shown == live[pure[live].argsort(descending=True, stable=True)][:3].tolist() and shown[0] == 3
            and 1 not in shown)
    rows = subnetwork_rows(loaded, decomposition, top, shown, p_act, pure, label, images, n_logits=2)
    for row, k in zip(rows, shown):
        values, index = affected_outputs(model, decomposition, k, images[top[k]], n=2)
        assert row == {"subnetwork": k, "P_act": f"{p_act[k]:.3f}", "class purity": f"{pure[k]:.2f}",
                       "main class": names[label[k]],
                       "top logits": ", ".join(f"{names[i]} ({v:+.2f})"
                                               for v, i in zip(values.tolist(), index.tolist()))}


def test_the_notebook_loads_the_shipped_model_and_retrain_model_trains_one_here(tmp_path, monkeypatch):
    import importlib.util
    from pathlib import Path

    from l3d.experiments.cnn import CNNExperiment, load_model_and_images

    spec = importlib.util.spec_from_file_location("nbtool",
                                                  Path(__file__).resolve().parents[2] / "tools" / "notebooks.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    monkeypatch.setenv("L3D_CACHE", str(tmp_path))
    small = tool.notebook_parameters("06_cnn", "test")               # 5 epochs: the shipped test-scale model
    shipped = load_model_and_images(CNNExperiment.from_parameters(small))
    assert "shipped with l3d, SHA-256 verified" in shipped.note and not list(tmp_path.iterdir())
    retrained = load_model_and_images(CNNExperiment.from_parameters({**small, "retrain_model": True}))
    assert "trained now on this machine" in retrained.note
    assert [p.name.startswith("digits-cnn-") for p in tmp_path.iterdir()] == [True]
    assert torch.equal(retrained.train, shipped.train) and torch.equal(retrained.test_labels, shipped.test_labels)
