"""Interventions W0 + δ Σ_k d_k and the JVP of the outputs along them."""
import pytest
import torch
from torch import nn

import l3d


def setup():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 4)).double()
    dec = l3d.Decomposition({n: tuple(p.shape) for n, p in model.named_parameters()}, 4, rank=2, seed=0).double()
    return model, dec, torch.randn(8, 3, dtype=torch.float64)


def moved(model, direction, delta, x):
    """The model's outputs with its weights moved by hand: a deep copy with W + δ d."""
    import copy
    other = copy.deepcopy(model)
    with torch.no_grad():
        for n, p in other.named_parameters():
            if n in direction:
                p += delta * direction[n]
    return other(x)


def test_zero_delta_leaves_outputs_unchanged():
    model, dec, x = setup()
    out = l3d.intervene(model, dec, 1, [0.0], x)
    torch.testing.assert_close(out[0], model(x).detach(), rtol=0, atol=0)


def test_intervention_matches_moving_weights_by_hand():
    model, dec, x = setup()
    d = dec.decoder_directions()
    deltas = [-0.7, 0.3, 1.5]
    out = l3d.intervene(model, dec, 2, deltas, x)
    for j, delta in enumerate(deltas):
        expected = moved(model, {n: d[n][2] for n in d}, delta, x)
        torch.testing.assert_close(out[j], expected.detach())


def test_intervention_on_a_subset_of_tensors_and_several_subnetworks():
    model, dec, x = setup()
    d = dec.decoder_directions()
    out = l3d.intervene(model, dec, [0, 3], [0.8], x, tensors=["2.*"])
    expected = moved(model, {n: d[n][0] + d[n][3] for n in ("2.weight", "2.bias")}, 0.8, x)
    torch.testing.assert_close(out[0], expected.detach())
    # the first layer did not move: its contribution alone changes nothing
    only_first = l3d.intervene(model, dec, [0, 3], [0.8], x, tensors="0.weight")
    assert not torch.allclose(only_first[0], out[0])


def test_bad_interventions_are_explained():
    model, dec, x = setup()
    with pytest.raises(ValueError, match="does not exist"):
        l3d.intervene(model, dec, 4, [1.0], x)
    other = l3d.Decomposition({"0.weight": (5, 3)}, 2)
    with pytest.raises(ValueError, match="not part of the decomposition"):
        l3d.intervene(model, other, 0, [1.0], x, tensors="2.bias")


def test_output_derivative_matches_finite_differences():
    model, dec, x = setup()
    derivative = l3d.output_derivative(model, dec, [1, 2], x, tensors=["0.weight", "2.weight"])
    eps = 1e-6
    plus, minus = l3d.intervene(model, dec, [1, 2], [eps, -eps], x, tensors=["0.weight", "2.weight"])
    torch.testing.assert_close(derivative, (plus - minus) / (2 * eps), rtol=1e-6, atol=1e-9)
    values, indices = l3d.top_affected_outputs(derivative, n=2)
    assert indices.shape == (8, 2)
    torch.testing.assert_close(values, derivative.abs().gather(-1, indices))
    assert (values[:, 0] >= values[:, 1]).all()
    assert (values[:, 1:2] >= derivative.abs().sort(-1).values[:, :-2]).all()


def test_intervention_sweep_is_mean_absolute_change():
    model, dec, x = setup()
    deltas = torch.tensor([-1.0, 0.0, 0.5])
    sweep = l3d.intervention_sweep(model, dec, deltas, x, subnetworks=[0, [1, 2]])
    assert sweep.shape == (2, 3, 4)
    assert sweep[:, 1].abs().max() == 0
    expected = (l3d.intervene(model, dec, [1, 2], deltas, x) - model(x)).abs().mean(1)
    torch.testing.assert_close(sweep[1], expected.detach())


def test_interventions_run_a_model_in_train_mode_as_in_eval_mode_and_leave_its_mode():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.Dropout(0.5), nn.Tanh(), nn.Linear(5, 4)).double()
    dec = l3d.Decomposition({n: tuple(p.shape) for n, p in model.named_parameters()}, 4, rank=2, seed=0).double()
    x = torch.randn(8, 3, dtype=torch.float64)
    model.train()
    out = l3d.intervene(model, dec, 1, [0.0, 0.5], x)
    slope = l3d.output_derivative(model, dec, 1, x)
    assert model.training and model[1].training
    model.eval()
    torch.testing.assert_close(out, l3d.intervene(model, dec, 1, [0.0, 0.5], x), rtol=0, atol=0)   # no dropout
    torch.testing.assert_close(slope, l3d.output_derivative(model, dec, 1, x), rtol=0, atol=0)
