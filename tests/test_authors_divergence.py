"""The authors' per-sample loss ("output_times_residual") and their reference draw ("random_or_self"), on both
engines."""
import pytest
import torch
from torch import nn

import l3d
import l3d.source as source_module
from l3d.divergences import divergence, random_any
from l3d.experiments.toys import sparse_features


def test_output_times_residual_is_their_per_sample_loss():
    torch.manual_seed(0)
    y, r = torch.randn(6, 5, dtype=torch.float64), torch.randn(6, 5, dtype=torch.float64)
    torch.testing.assert_close(divergence(y, r, "output_times_residual"), (y * (y - r)).mean(-1))
    assert divergence(y, y, "output_times_residual").abs().max() < 1e-12


def hand_gradients(model: nn.Module, x: torch.Tensor, refs: torch.Tensor) -> dict[str, torch.Tensor]:
    """Jᵀ(2f − f_ref)/n_out per sample, the Jacobian row by row with autograd."""
    params = dict(model.named_parameters())
    out = {n: torch.zeros(x.shape[0], *p.shape, dtype=p.dtype) for n, p in params.items()}
    for i in range(x.shape[0]):
        f = model(x[i:i + 1])[0]
        weight = (2 * f.detach() - refs[i]) / f.shape[0]
        for o in range(f.shape[0]):
            rows = torch.autograd.grad(f[o], list(params.values()), retain_graph=True, allow_unused=True)
            for (n, _), g in zip(params.items(), rows):
                if g is not None:
                    out[n][i] += weight[o] * g
    return out


@pytest.mark.parametrize("engine", ["dense", "factored"])
def test_both_engines_give_the_authors_gradient(engine):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 5)).double()
    x = torch.randn(7, 4, dtype=torch.float64)
    refs = torch.randn(7, 5, dtype=torch.float64)
    collector = l3d.GradientCollector(model, "*", divergence="output_times_residual", engine=engine)
    grads = collector(x, references=refs).dense().grads
    expected = hand_gradients(model, x, refs)
    for name in collector.names:
        torch.testing.assert_close(grads[name], expected[name])
    # the text's divergence differs: Jᵀ 2(f − f_ref), also at f_ref = f, where the authors' is Jᵀ f / n_out ≠ 0
    text = l3d.GradientCollector(model, "*", divergence="mse", engine=engine)
    outputs = collector.outputs(x)
    assert text(x, references=outputs).dense().flat().abs().max() < 1e-12
    same = collector(x, references=outputs).dense().grads
    for name, g in hand_gradients(model, x, outputs).items():
        torch.testing.assert_close(same[name], g)
        assert g.abs().max() > 1e-3


def test_random_or_self_draws_any_sample_with_replacement():
    n, draws = 8, 4000
    idx = torch.stack([random_any(n, torch.Generator().manual_seed(s)) for s in range(draws // n)])
    assert ((idx >= 0) & (idx < n)).all()
    own = (idx == torch.arange(n)).float().mean().item()
    assert abs(own - 1 / n) < 0.03                                   # itself with probability 1/N
    out = torch.randn(n, 3)
    refs = l3d.reference_outputs(out, "output_times_residual", "random_or_self", torch.Generator().manual_seed(0))
    assert (refs[:, None, :] == out[None]).all(-1).any(1).all()      # every reference is some sample's output
    # the project's "random" never takes the sample itself
    others = l3d.reference_outputs(out, "mse", "random", torch.Generator().manual_seed(0))
    assert not (others == out).all(-1).any()


@pytest.mark.parametrize("pool", [{"chunk_size": 8}, {"chunk_size": 32, "batch_references": True}],
                         ids=["one batch per pass", "batch_references"])
def test_references_within_the_batch(monkeypatch, pool):
    """The authors' reference pool: every reference is the output of a sample of the same batch, whether the
    gradients come one batch per pass (chunk_size = batch_size) or a chunk of batches at a time (batch_references)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 3))
    inputs = sparse_features(64, 3, p_active=0.5, generator=torch.Generator().manual_seed(0))
    config = l3d.L3DConfig(n_subnetworks=2, epochs=1, batch_size=8, divergence="output_times_residual",
                           reference="random_or_self", engine="dense", **pool)
    run = l3d.decompose(model, inputs, "*", config, progress=False)
    collector, source = run.collector, run.source
    assert collector.engine == "dense" and collector.divergence == "output_times_residual"
    draws, seen = [], []
    draw, references = source_module.GradientSource._draw, source_module.GradientSource._references

    def recording_draw(self, groups, device):
        index = draw(self, groups, device)
        draws.append((groups, index))
        return index

    def recording_references(self, items, sizes):
        refs = references(self, items, sizes)
        seen.append((collector.outputs(items), refs))
        return refs

    monkeypatch.setattr(source_module.GradientSource, "_draw", recording_draw)
    monkeypatch.setattr(source_module.GradientSource, "_references", recording_references)
    assert sum(1 for _ in source) == 8
    assert [size for groups, _ in draws for size in groups] == [8] * 8      # drawn batch by batch
    for _, index in draws:                                                  # each among its own batch's samples
        assert torch.equal(index // 8, torch.arange(len(index)) // 8)
    for (outputs, refs), (_, index) in zip(seen, draws):
        assert torch.equal(refs, outputs[index])                            # the drawn samples' outputs
    with pytest.raises(ValueError, match=r"engine must be one of \['auto', 'dense', 'factored'\]"):
        l3d.L3DConfig(engine="fast")
