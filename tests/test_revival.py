"""The revival term: its value and gradient against a materialized computation, and a dead subnetwork brought back.

R = Σ_i ||r_i − r̂_i||² − ||r_i||², r_i = g_i − Σ_k c̃_ik d_k held fixed, r̂_i = Σ_k a_ik d_k over the dead
subnetworks, a their coefficients kept by BatchTopK among them alone (l3d.decomposition). Float64 throughout:
tolerances rel 1e-9 (the same sums in another order).
"""
import json

import pytest
import torch

import l3d
from l3d.checkpoint import _sha256_json
from l3d.experiments.toys import TMS, sparse_features
from l3d.tucker import Tucker

TENSORS = ["W_in", "W_out", "b"]


def gradients(engine="dense", n=48):
    torch.manual_seed(0)
    model = TMS(tied=False, layout="linear").double() if engine == "auto" else TMS().untied().double()
    col = l3d.GradientCollector(model, "*" if engine == "auto" else TENSORS, engine=engine)
    x = sparse_features(n, 5, p_active=0.3, generator=torch.Generator().manual_seed(1)).double()
    references = col.references(x, torch.Generator().manual_seed(2))
    return col, col(x, references), l3d.GradientCollector(model, col.names, engine="dense")(x, references)


def materialized(decomposition, flat, mask, dead, top_k):
    """R from the gradients themselves (N, n_w), with the residuals detached."""
    E, D = decomposition.flat_directions("encoder"), decomposition.flat_directions("decoder")
    c = flat @ E.T
    r = (flat - (c * mask) @ D).detach()
    candidates = c * dead
    a = candidates * l3d.batch_top_k(candidates, min(top_k, int(dead.sum()) / c.shape[1]))
    return ((r - a @ D).pow(2).sum(1) - r.pow(2).sum(1)).sum()


@pytest.mark.parametrize("engine", ["dense", "auto"])
def test_the_revival_term_and_its_gradient_equal_a_materialized_computation(engine):
    """Dense gradients, and factored ones (nn.Linear weights, engine "auto"), against the materialized R; its
    gradient reaches the dead subnetworks only."""
    col, grads, dense = gradients(engine)
    if engine == "auto":
        assert isinstance(grads, l3d.gradients.FactoredGradients)
    decomposition = l3d.Decomposition(col.shapes, 6, rank=1, top_k=0.2, seed=4).double()
    twin = l3d.Decomposition(col.shapes, 6, rank=1, top_k=0.2, seed=4).double()
    mask = decomposition.loss(grads).mask
    dead = torch.tensor([False, True, False, False, True, True])
    value = decomposition.revival(grads, mask, dead)
    expected = materialized(twin, dense.flat(), mask, dead, 0.2)
    torch.testing.assert_close(value, expected, rtol=1e-9, atol=1e-12)
    value.backward()
    expected.backward()
    for (name, p), q in zip(decomposition.named_parameters(), twin.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-9, atol=1e-12, msg=name)
        assert not p.grad[~dead].any(), f"{name}: a live subnetwork got the revival's gradient"
        if "encoder" in name:
            assert p.grad[dead].any(), name


def test_inner_with_detach_other_sends_the_gradient_to_self_only():
    """The factor contraction (a tensor too large to build in full) as well as the full one."""
    for shape, ranks in (((300, 300), (2, 3)), ((4, 5), (2, 2))):
        t = Tucker(3, shape, ranks, torch.Generator().manual_seed(0)).double()
        weights = torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        assert t.full_is_cheaper(3) == (shape == (4, 5))
        (weights * t.inner(t, detach_other=True)).sum().backward()
        got = [p.grad.clone() for p in t.parameters()]
        t.zero_grad()
        full = t.full().flatten(1)
        torch.testing.assert_close(t.inner(t, detach_other=True), full @ full.T, rtol=1e-12, atol=1e-12)
        (weights * (full @ full.detach().T)).sum().backward()
        for a, p in zip(got, t.parameters()):
            torch.testing.assert_close(a, p.grad, rtol=1e-10, atol=1e-12)
        t.zero_grad()


def dead_start(revive, checkpoint_dir=None, stop_at=None, **kw):
    """TMS whose fifth feature is never on; subnetwork 3 starts on W_in's fifth column, a direction every
    per-sample gradient is orthogonal to, so the paper's loss never selects it."""
    torch.manual_seed(0)
    x = sparse_features(256, 5, 0.3, generator=torch.Generator().manual_seed(1))
    x[:, 4] = 0
    col = l3d.GradientCollector(TMS().untied(), TENSORS, engine="dense")
    source = l3d.GradientSource(col, x, 32, chunk_size=256, seed=0)
    decomposition = l3d.Decomposition(col.shapes, 4, rank=1, seed=3)
    direction = {n: torch.zeros(s) for n, s in col.shapes.items()}
    direction["W_in"][:, 4] = torch.tensor([1.0, 0.5])
    decomposition.set_subnetwork_(3, direction)

    def callback(step, parts):
        if step == stop_at:
            raise KeyboardInterrupt

    history = l3d.fit(decomposition, source, 12, lr=0.01, progress=False, revive=revive,
                      checkpoint_dir=checkpoint_dir, callback=callback, **kw)
    return decomposition, history


def test_revive_brings_a_dead_subnetwork_back_and_resumes_bit_identically(tmp_path):
    _, paper = dead_start(0.0)
    assert all(p_act[3] == 0 for p_act in paper.p_act)          # dead throughout
    revived, history = dead_start(1.0)
    assert history.p_act[0][3] == 0 and history.p_act[-1][3] > 0.02
    assert history.reconstruction_error[-1] < paper.reconstruction_error[-1] - 0.02
    with pytest.raises(KeyboardInterrupt):
        dead_start(1.0, tmp_path, stop_at=45, checkpoint_every=10)
    resumed, again = dead_start(1.0, tmp_path, checkpoint_every=10, resume=True)
    assert again == history
    for (name, a), b in zip(resumed.state_dict().items(), revived.state_dict().values()):
        assert torch.equal(a, b), name


def test_revive_is_refused_for_stacks_labels_and_bad_masks():
    with pytest.raises(ValueError, match=r"revive 1.0 trains one decomposition: it needs restarts = 1, got 2"):
        l3d.L3DConfig(revive=1.0, restarts=2)
    with pytest.raises(ValueError, match=r"revive must be"):
        l3d.L3DConfig(revive=-1.0)
    col, grads, _ = gradients()
    x = sparse_features(64, 5, 0.3, generator=torch.Generator().manual_seed(1)).double()
    stack = l3d.Decomposition.stack([l3d.Decomposition(col.shapes, 3, seed=s).double() for s in (1, 2)])
    with pytest.raises(ValueError, match=r"revive=1.0 trains one decomposition .* a stack of 2 members"):
        l3d.fit(stack, l3d.GradientSource(col, x, 32), 1, progress=False, revive=1.0)
    labelled = l3d.GradientSource(col, x, 32, active_circuits=x > 0)
    with pytest.raises(ValueError, match=r"revive=1.0 needs a source without labels"):
        l3d.fit(l3d.Decomposition(col.shapes, 5).double(), labelled, 1, progress=False, revive=1.0)
    one = l3d.Decomposition(col.shapes, 6).double()
    with pytest.raises(ValueError, match=r"dead must be a bool tensor of shape \(n_subnetworks,\) = \(6,\)"):
        one.revival(grads, one.loss(grads).mask, torch.zeros(5, dtype=torch.bool))


def test_a_checkpoint_written_before_the_revival_term_resumes(tmp_path):
    """A run's checkpoint whose recorded config has no `revive` (written by an l3d without it) resumes as revive 0."""
    torch.manual_seed(0)
    model, x = TMS().untied(), sparse_features(64, 5, 0.3, generator=torch.Generator().manual_seed(1))
    config = l3d.L3DConfig(n_subnetworks=3, batch_size=16, engine="dense", epochs=3)
    whole = l3d.decompose(model, x, TENSORS, config, progress=False)
    l3d.decompose(model, x, TENSORS, config.replace(epochs=2), checkpoint_dir=tmp_path, checkpoint_every=1,
                  progress=False)
    newest = l3d.checkpoint.checkpoints(tmp_path)[-1]
    record = json.loads((newest / "training.json").read_text())
    del record["state"]["settings"]["config"]["revive"]
    hashes = record.pop("sha256")
    hashes["training.json"] = _sha256_json(record)
    (newest / "training.json").write_text(json.dumps({**record, "sha256": hashes}))
    resumed = l3d.decompose(model, x, TENSORS, config, checkpoint_dir=tmp_path, resume=True, progress=False)
    assert resumed.history.reconstruction_error == whole.history.reconstruction_error
    with pytest.raises(l3d.checkpoint.ResumeRefused, match=r"config.revive: checkpoint 0.0, now 0.5"):
        l3d.decompose(model, x, TENSORS, config.replace(epochs=4, revive=0.5), checkpoint_dir=tmp_path, resume=True,
                      progress=False)
