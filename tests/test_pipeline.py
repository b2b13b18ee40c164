"""decompose: the one pipeline (collector, source, start, fit) and its settings, L3DConfig."""
import json

import pytest
import torch

import l3d
from l3d.experiments import toys


def _toy(n: int = 64):
    x = toys.sparse_features(n, 10, generator=torch.Generator().manual_seed(0))
    return toys.circuit_superposition(), x


def test_decompose_is_collector_source_decomposition_and_fit_by_hand():
    model, x = _toy()
    config = l3d.L3DConfig(n_subnetworks=4, epochs=3, chunk_size=64, seed=3)
    run = decompose_quietly(model, x, config)
    collector = l3d.GradientCollector(model, "*", divergence="mse", chunk_size=64)
    source = l3d.GradientSource(collector, x, 32, chunk_size=64, seed=3)
    expected = l3d.Decomposition(collector.shapes, 4, rank=1, seed=3)
    expected_history = l3d.fit(expected, source, 3, progress=False)
    assert run.history.reconstruction_error == expected_history.reconstruction_error
    for a, b in zip(run.decomposition.parameters(), expected.parameters()):
        assert torch.equal(a, b)
    assert run.start_errors == [] and run.config is config
    assert run.evaluate() == l3d.evaluate(expected, source)   # the training source, where training left it


def test_decompose_screens_restarts_and_starts_from_gradients():
    model, x = _toy()
    run = decompose_quietly(model, x, l3d.L3DConfig(n_subnetworks=4, epochs=3, restarts=2, restart_epochs=2,
                                                    init="gradients", init_samples=32))
    assert len(run.start_errors) == 2 and len(run.history.reconstruction_error) == 3
    assert set(run.decomposition.names) == {n for n, _ in model.named_parameters()}


def test_decompose_with_the_mean_reference_fits_gradients_against_the_batch_mean_output():
    model, x = _toy()
    run = decompose_quietly(model, x, l3d.L3DConfig(n_subnetworks=4, epochs=2, chunk_size=64, reference="mean"))
    with torch.no_grad():
        out = model(x)
    # the output bias's gradient of ‖f(x_i) − mean_j f(x_j)‖² is 2 (f(x_i) − mean output)
    assert torch.allclose(run.collector(x).dense().grads["layers.1.bias"], 2 * (out - out.mean(0)), atol=1e-5)


def test_run_saves_the_decomposition_with_every_setting(tmp_path):
    model, x = _toy()
    run = decompose_quietly(model, x, l3d.L3DConfig(n_subnetworks=3, epochs=2, lr=0.02))
    run.save(tmp_path / "run")
    loaded = l3d.Decomposition.load(tmp_path / "run")
    for a, b in zip(loaded.parameters(), run.decomposition.parameters()):
        assert torch.equal(a, b)
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["config"] == run.config.to_dict() and record["config"]["lr"] == 0.02
    assert record["history"]["reconstruction_error"] == run.history.reconstruction_error
    held_out = run.evaluate(toys.sparse_features(32, 10, generator=torch.Generator().manual_seed(1)))
    assert 0 <= held_out["reconstruction_error"] and len(held_out["p_act"]) == 3


@pytest.mark.parametrize("changes, message", [
    ({"n_subnetworks": 0}, "n_subnetworks must be >= 1, got 0"),
    ({"top_k": 0}, "top_k must be > 0 and <= 1, got 0"),
    ({"top_k": "0.1"}, "top_k must be float, got '0.1'"),
    ({"lr_decay": 0.0}, "lr_decay must be > 0 and <= 1"),
    ({"rank": 0}, "rank must be an int >= 1"),
    ({"rank": 1.5}, "rank must be int or dict"),
    ({"epochs": True}, "epochs must be int, got True"),
    ({"divergence": "l2"}, r"divergence must be one of \['mse', 'mse_authors', 'kl'\]"),
    ({"init": "zeros"}, r"init must be one of \['random', 'gradients'\]"),
    ({"chunk_size": 48}, "chunk_size 48 must be a multiple of batch_size 32"),
    ({"init_samples": 8}, "init_samples 8 needs init='gradients'"),
    ({"lr": float("nan")}, "lr must be a finite number"),
])
def test_l3d_config_refuses_bad_settings_naming_them(changes, message):
    with pytest.raises(ValueError, match=message):
        l3d.L3DConfig(**changes)


def test_l3d_config_converts_numpy_numbers_and_reports_every_problem():
    np = pytest.importorskip("numpy")
    config = l3d.L3DConfig(n_subnetworks=np.int64(5), lr=np.float32(0.5))
    assert type(config.n_subnetworks) is int and type(config.lr) is float
    with pytest.raises(ValueError) as caught:
        l3d.L3DConfig(epochs=0, batch_size=0)
    assert "epochs must be >= 1" in str(caught.value) and "batch_size must be >= 1" in str(caught.value)


def test_decompose_refuses_a_batch_larger_than_the_data():
    model, x = _toy(16)
    with pytest.raises(ValueError, match="batch_size 32 must not exceed the 16 inputs"):
        l3d.decompose(model, x, "*", l3d.L3DConfig())


def decompose_quietly(model, x, config):
    return l3d.decompose(model, x, "*", config, progress=False)
