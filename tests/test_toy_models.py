import pytest
import torch

import l3d
from l3d import toys


def test_group_features_switch_groups_together():
    g = torch.Generator().manual_seed(0)
    x = toys.group_features(2000, n_groups=5, group_size=3, p_active=0.1, generator=g)
    assert x.shape == (2000, 15)
    on = (x > 0).view(2000, 5, 3)
    assert (on.all(2) == on.any(2)).all()          # a group is wholly on or wholly off
    assert on.any(2).any(1).all()                  # no all-zero sample
    assert 0.2 < on.any(2).float().mean() < 0.3     # p / (1 − (1 − p)^5) ≈ 0.24: empty samples are redrawn
    assert x.max() <= 1 and x.min() >= 0
    assert toys.feature_groups(2, 3) == [[0, 1, 2], [3, 4, 5]]


def test_group_features_can_keep_all_zero_samples():
    g = torch.Generator().manual_seed(0)
    x = toys.group_features(4000, n_groups=5, group_size=3, p_active=0.05, generator=g, drop_zero=False)
    on = (x > 0).view(4000, 5, 3)
    assert (on.all(2) == on.any(2)).all()                                     # groups still switch together
    assert abs((~on.any(2).any(1)).float().mean().item() - 0.95 ** 5) < 0.03   # all-zero samples stay
    assert abs(on.any(2).float().mean().item() - 0.05) < 0.01                  # each group on with p_active


def test_models_have_the_papers_shapes():
    tmcs = toys.circuit_superposition()
    assert [tuple(p.shape) for p in tmcs.parameters()] == [(5, 10), (5,), (10, 5), (10,)]
    square = toys.square_mlp()
    assert len(square.layers) == 5 and all(layer.weight.shape == (5, 5) for layer in square.layers)
    assert toys.high_rank_circuits()(torch.zeros(3, 25)).shape == (3, 25)
    with pytest.raises(ValueError, match="activation"):
        toys.MLP([2, 2], "tanh")


def test_train_toy_fits_square_targets():
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    x = toys.sparse_features(512, 5, p_active=0.2, low=-1, high=1, generator=g)
    model = toys.square_mlp()
    losses = toys.train_toy(model, x, x ** 2, epochs=30, batch_size=64, lr=1e-2, progress=False)
    assert losses[-1] < 0.5 * losses[0]


def test_decompose_toy_is_a_plain_fit_and_screens_restarts():
    g = torch.Generator().manual_seed(0)
    x = toys.sparse_features(64, 10, generator=g)
    model = toys.circuit_superposition()
    decomposition, history, collector, _ = toys.decompose_toy(model, x, n_subnetworks=4, epochs=3, seed=3, progress=False)
    source = l3d.GradientSource(collector, x, 32, chunk_size=64, seed=3)
    expected = l3d.Decomposition(collector.shapes, 4, rank=1, seed=3)
    expected_history = l3d.fit(expected, source, 3, progress=False)
    assert history.reconstruction_error == expected_history.reconstruction_error
    for a, b in zip(decomposition.parameters(), expected.parameters()):
        assert torch.equal(a, b)
    kept, kept_history, _, _ = toys.decompose_toy(model, x, n_subnetworks=4, epochs=3, restarts=2, restart_epochs=2,
                                                  seed=0, progress=False)
    assert len(kept_history.reconstruction_error) == 3 and set(kept.names) == {n for n, _ in model.named_parameters()}
    with pytest.raises(ValueError, match="restarts"):
        toys.decompose_toy(model, x, n_subnetworks=4, restarts=0)


def test_decompose_toy_mean_reference_fits_gradients_against_the_batch_mean_output():
    x = toys.sparse_features(64, 10, generator=torch.Generator().manual_seed(0))
    model = toys.circuit_superposition()
    decomposition, history, collector, source = toys.decompose_toy(model, x, n_subnetworks=4, epochs=2,
                                                                   reference="mean", seed=0, progress=False)
    with torch.no_grad():
        out = model(x)
    # the output bias's gradient of ‖f(x_i) − mean_j f(x_j)‖² is 2 (f(x_i) − mean output)
    assert torch.allclose(collector(x).dense().grads["layers.1.bias"], 2 * (out - out.mean(0)), atol=1e-5)
    assert len(history.reconstruction_error) == 2
