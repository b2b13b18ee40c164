"""Per-sample divergence gradients against an explicit per-sample autograd loop."""
import pytest
import torch
import torch.nn.functional as F
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


@pytest.mark.parametrize("kind,reference",
                         [("mse", "random"), ("mse", "mean"), ("kl", "random"), ("kl", "mean"), ("kl", "uniform")])
@pytest.mark.parametrize("sequence", [False, True])
@pytest.mark.parametrize("engine", ["dense", "auto"])
def test_per_sample_gradients_match_explicit_loop(kind, reference, sequence, engine):
    torch.manual_seed(0)
    model = Mixer().double() if sequence else mlp()
    inputs = torch.randn(7, 5, 3, dtype=torch.float64) if sequence else torch.randn(9, 3, dtype=torch.float64)
    collector = l3d.GradientCollector(model, ["*.weight", "2.bias" if not sequence else "out.bias"],
                                      divergence=kind, reference=reference, sequence=sequence, gradient_chunk_size=3,
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
    grads = l3d.DenseGradients({"w": torch.randn(6, 4, 3, dtype=torch.float64),
                                "b": torch.randn(6, 4, dtype=torch.float64)})
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


# --- the user's model keeps its mode; gradients are taken in eval mode --------------------------------------
def test_the_model_keeps_its_mode_and_gradients_are_taken_in_eval_mode():
    """A model with dropout, in train mode (one submodule set to eval by hand): the gradients are the eval-mode
    ones (deterministic, equal to an explicit eval-mode loop) and every module's mode is as the user left it."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 6), nn.Dropout(0.5), nn.Tanh(), nn.Linear(6, 4), nn.Dropout(0.5)).double()
    model.train()
    model[3].eval()
    modes = [m.training for m in model.modules()]
    inputs = torch.randn(9, 3, dtype=torch.float64)
    for engine in ("auto", "dense"):
        collector = l3d.GradientCollector(model, "*", engine=engine)
        refs = collector.references(inputs, torch.Generator().manual_seed(1))
        assert [m.training for m in model.modules()] == modes
        first, second = (collector(inputs, references=refs).dense().flat() for _ in range(2))
        assert [m.training for m in model.modules()] == modes
        assert torch.equal(first, second)
        model.eval()
        expected = explicit(model, collector.names, inputs, refs, "mse", False)
        for m, training in zip(model.modules(), modes):
            m.training = training
        torch.testing.assert_close(first, expected, rtol=1e-9, atol=1e-12)


def test_decompose_leaves_a_model_in_train_mode_in_train_mode():
    from l3d.experiments.toys import TMS, sparse_features

    torch.manual_seed(0)
    model = TMS().untied().train()
    inputs = sparse_features(16, 5, p_active=0.3, generator=torch.Generator().manual_seed(1))
    config = l3d.L3DConfig(n_subnetworks=2, epochs=1, batch_size=8)
    run = l3d.decompose(model, inputs, ["W_in", "W_out", "b"], config, progress=False)
    assert model.training and all(m.training for m in model.modules())
    run.evaluate(inputs)
    assert model.training


# --- bad model outputs and inputs are explained ---------------------------------------------------------------
class Shaped(nn.Module):
    """A Linear whose output `reshape` turns into another shape."""

    def __init__(self, reshape, out=6):
        super().__init__()
        self.lin = nn.Linear(3, out)
        self.reshape = reshape

    def forward(self, x):
        return self.reshape(self.lin(x))


CALLS = {"gradients": lambda c, x: c(x), "outputs": lambda c, x: c.outputs(x),
         "gradients with references": lambda c, x: c(x, references=torch.zeros(4, 6))}
WRONG_SHAPES = [
    # (reshape, sequence, message, calls); with references given the model first runs on one item alone
    (lambda y: y.sum(-1), False, r"outputs have shape \((4|1),\) for (4 items|1 item); L3D needs \(items, out\).*"
     r"forward=lambda m, x: m\(x\)\.view\(-1, 1\)", list(CALLS)),
    (lambda y: y.view(-1, 2, 3), False, r"outputs have shape \((4|1), 2, 3\), not \(items, out\): pass sequence=True",
     list(CALLS)),
    (lambda y: y, True, r"sequence=True needs model outputs \(items, positions, out\), got shape \((4|1), 6\).*"
     r"use sequence=False", list(CALLS)),
    # items run one at a time with references given: dropping items cannot show there
    (lambda y: y[:2], False, r"outputs of shape \(2, 6\) for 4 items: items must run along dim 0",
     ["gradients", "outputs"]),
]


@pytest.mark.parametrize("reshape, sequence, message, call",
                         [(r, s, m, c) for r, s, m, calls in WRONG_SHAPES for c in calls])
def test_model_outputs_of_the_wrong_shape_are_explained(reshape, sequence, message, call):
    collector = l3d.GradientCollector(Shaped(reshape), "*", sequence=sequence)
    with pytest.raises(ValueError, match=message):
        CALLS[call](collector, torch.randn(4, 3))


def test_bad_inputs_references_and_models_are_explained():
    collector = l3d.GradientCollector(mlp(), "*")
    for bad in (torch.tensor(1.0, dtype=torch.float64), torch.zeros(0, 3, dtype=torch.float64)):
        for call in (collector, collector.outputs, collector.work):
            with pytest.raises(ValueError, match="inputs must be a tensor with at least one item along dim 0"):
                call(bad)
    x = torch.randn(5, 3, dtype=torch.float64)
    for refs in (torch.zeros(4, 4), torch.zeros(5, 3), [[0.0] * 4] * 5):
        with pytest.raises(ValueError, match=r"references must be one output per sample, \(5, 4\)"):
            collector(x, references=refs)
    with pytest.raises(TypeError, match="sequence must be True"):
        l3d.GradientCollector(mlp(), "*", sequence="yes")
    with torch.device("meta"):
        meta = nn.Linear(3, 2)
    with pytest.raises(ValueError, match=r"model: the chosen tensors \['weight', 'bias'\] are on the meta device"):
        l3d.GradientCollector(meta, "*")


@pytest.mark.parametrize("engine", ["auto", "dense"])
def test_a_random_forward_is_refused(engine):
    noisy = Shaped(lambda y: F.dropout(y, 0.5, training=True))
    with pytest.raises(ValueError, match="forward draws random numbers.*deterministic model/forward"):
        l3d.GradientCollector(noisy, "*", engine=engine)(torch.randn(4, 3))
