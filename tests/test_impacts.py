"""Impact I(x_i, v_k) = mean_j |<e_k, g_i(ref_j)>| and the top samples per subnetwork."""
import pytest
import torch
from torch import nn

import l3d
from l3d.divergences import divergence


def test_impact_matches_explicit_average_over_references():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    collector = l3d.GradientCollector(model, "*", divergence="kl")
    dec = l3d.Decomposition(collector.shapes, 5, rank=1, seed=0).double()
    x = torch.randn(6, 3, dtype=torch.float64)
    n_ref = 3
    result = l3d.impact(dec, collector, x, n_ref=n_ref, seed=7)
    # by hand: the same references (same generator), gradients one sample at a time
    generator = torch.Generator().manual_seed(7)
    out = model(x).detach()
    E = torch.cat([e.flatten(1) for e in dec.encoder_directions().values()], 1).detach()
    expected = torch.zeros(6, 5, dtype=torch.float64)
    for _ in range(n_ref):
        refs = l3d.reference_outputs(out, "kl", "random", generator)
        for i in range(6):
            model.zero_grad()
            divergence(model(x[i]), refs[i], "kl").backward()
            g = torch.cat([p.grad.flatten() for p in model.parameters()])
            expected[i] += (E @ g).abs() / n_ref
    torch.testing.assert_close(result, expected)


def test_top_samples_are_the_largest_impacts_in_order():
    impact = torch.tensor([[0.1, 5.0], [0.9, 1.0], [0.5, 3.0]])
    torch.testing.assert_close(l3d.top_samples(impact, n=2), torch.tensor([[1, 2], [0, 2]]))
    assert l3d.top_samples(impact, n=10).shape == (2, 3)
    with pytest.raises(ValueError, match="n_ref"):
        l3d.impact(None, None, torch.zeros(2, 1), n_ref=0)
