"""Per-sample divergence gradients against an explicit per-sample autograd loop."""
import pytest
import torch
from torch import nn

import l3d
from l3d.divergences import divergence


class Mixer(nn.Module):
    """(B, T, 3) -> (B, T, 4): every position depends on all earlier ones (a causal cumulative mean)."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(3, 5)
        self.out = nn.Linear(5, 4)

    def forward(self, x):
        h = torch.tanh(self.inp(x))
        h = h.cumsum(1) / torch.arange(1, x.shape[1] + 1, dtype=x.dtype).view(1, -1, 1)
        return self.out(h)


def mlp():
    return nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 4)).double()


def explicit(model, names, inputs, references, kind, sequence):
    """g_i by one autograd call per sample (per position for sequences)."""
    params = dict(model.named_parameters())
    rows = []
    for b in range(inputs.shape[0]):
        out = model(inputs[b:b + 1])[0]
        positions = range(out.shape[0]) if sequence else [None]
        for t in positions:
            y = out if t is None else out[t]
            ref = references[b if t is None else b * out.shape[0] + t]
            g = torch.autograd.grad(divergence(y, ref, kind), [params[n] for n in names], retain_graph=True)
            rows.append(torch.cat([x.flatten() for x in g]))
    return torch.stack(rows)


@pytest.mark.parametrize("kind,reference", [("mse", "random"), ("mse", "mean"), ("kl", "random"), ("kl", "mean"), ("kl", "uniform")])
@pytest.mark.parametrize("sequence", [False, True])
@pytest.mark.parametrize("engine", ["dense", "auto"])
def test_per_sample_gradients_match_explicit_loop(kind, reference, sequence, engine):
    torch.manual_seed(0)
    model = Mixer().double() if sequence else mlp()
    inputs = torch.randn(7, 5, 3, dtype=torch.float64) if sequence else torch.randn(9, 3, dtype=torch.float64)
    collector = l3d.GradientCollector(model, ["*.weight", "2.bias" if not sequence else "out.bias"],
                                      divergence=kind, reference=reference, sequence=sequence, chunk_size=3,
                                      engine=engine)
    refs = collector.references(inputs, torch.Generator().manual_seed(1))
    grads = collector(inputs, generator=torch.Generator().manual_seed(1))   # draws the same references
    expected = explicit(model, collector.names, inputs, refs, kind, sequence)
    n = inputs.shape[0] * (inputs.shape[1] if sequence else 1)
    assert grads.n_samples == n
    torch.testing.assert_close(grads.dense().flat(), expected, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(grads.sq_norms(), expected.pow(2).sum(1))


def test_project_and_sq_norms_of_dense_gradients():
    torch.manual_seed(0)
    dec = l3d.Decomposition({"w": (4, 3), "b": (4,)}, 5, rank=2).double()
    grads = l3d.DenseGradients({"w": torch.randn(6, 4, 3, dtype=torch.float64), "b": torch.randn(6, 4, dtype=torch.float64)})
    D = torch.cat([d.flatten(1) for d in dec.decoder_directions().values()], 1)
    torch.testing.assert_close(grads.project(dec.decoder), grads.flat() @ D.T)
    torch.testing.assert_close(grads[2:4].flat(), grads.flat()[2:4])


def test_bad_settings_are_explained():
    with pytest.raises(ValueError, match="unknown divergence"):
        l3d.GradientCollector(mlp(), "*", divergence="l1")
    with pytest.raises(ValueError, match="unknown reference"):
        l3d.GradientCollector(mlp(), "*", reference="zero")
    with pytest.raises(ValueError, match="needs divergence='kl'"):
        l3d.GradientCollector(mlp(), "*", divergence="mse", reference="uniform")
