"""Resampling: the removal costs and the residuals' top direction against materialized computations, a planted
circuit nobody serves recovered, a good decomposition left alone, and fit with resampling resumable bit for bit."""
import pytest
import torch

import l3d
from l3d.experiments.toys import TMS, sparse_features
from l3d.resample import costs_and_top_residual, resample_

C = 4


def planted(n=240, seed=0):
    """Batches of gradients, each sample a random multiple of one of C rank-1 circuits (weight + bias), and the
    circuits' flat directions (C, n_w)."""
    g = torch.Generator().manual_seed(seed)
    w = [torch.outer(torch.randn(3, generator=g), torch.randn(5, generator=g)) for _ in range(C)]
    b = [torch.randn(3, generator=g) for _ in range(C)]
    which = torch.arange(n) % C
    scale = torch.rand(n, generator=g) + 0.5
    grads = l3d.DenseGradients({"w": torch.stack([s * w[c] for s, c in zip(scale, which)]),
                                "b": torch.stack([s * b[c] for s, c in zip(scale, which)])})
    circuits = torch.stack([torch.cat([w[c].flatten(), b[c]]) for c in range(C)])
    return [grads[i:i + 60] for i in range(0, n, 60)], circuits


def decomposition_on(circuits, serve):
    """A decomposition whose subnetwork k is circuit serve[k] (encoder = decoder, unit norm), or keeps its random
    start where serve[k] is None."""
    dec = l3d.Decomposition({"w": (3, 5), "b": (3,)}, C, rank=1, top_k=1 / C, seed=0)
    for k, c in enumerate(serve):
        if c is not None:
            dec.set_subnetwork_(k, {"w": circuits[c, :15].view(3, 5), "b": circuits[c, 15:]})
    return dec


def flat_decoder(dec):
    d = dec.decoder_directions()
    return torch.cat([d["w"].flatten(1), d["b"]], 1)


def test_costs_and_top_direction_match_the_materialized_residuals():
    batches, circuits = planted()
    dec = decomposition_on(circuits, [0, None, 1, 2])    # circuit 3 unserved
    with torch.no_grad():
        dec.decoder[0].core.mul_(1.3)                  # encoder ≠ decoder, so the cost's terms all count
    costs, v, gain = costs_and_top_residual(dec, batches, sketch=19)   # a full sketch (n_w = 18): exact
    g = torch.cat([b.flat() for b in batches]).double()
    E, D = (torch.cat([t.full().flatten(1) for t in ts], 1).detach().double() for ts in (dec.encoder, dec.decoder))
    kept = torch.cat([(b.flat().double() @ E.T) * l3d.batch_top_k(b.flat().double() @ E.T, dec.top_k) for b in batches])
    def error(c):
        return (g - c @ D).pow(2).sum()

    for k in range(C):
        without = kept.clone()
        without[:, k] = 0
        assert costs[k].item() == pytest.approx((error(without) - error(kept)).item(), rel=1e-9)
    r = g - kept @ D
    values, vectors = torch.linalg.eigh(r.T @ r)
    assert gain == pytest.approx(values[-1].item(), rel=1e-9)
    assert abs(v @ vectors[:, -1]) == pytest.approx(1.0, abs=1e-9)
    # a small sketch finds the same direction when it stands out, as an unserved circuit's does
    _, v8, gain8 = costs_and_top_residual(dec, batches, sketch=4)
    assert abs(v8 @ vectors[:, -1]) > 0.999 and gain8 == pytest.approx(gain, rel=1e-3)
    with pytest.raises(ValueError, match="sketch must be at least 1"):
        costs_and_top_residual(dec, batches, sketch=0)


def test_the_spare_subnetwork_moves_to_the_unserved_circuit():
    batches, circuits = planted()
    dec = decomposition_on(circuits, [0, None, 1, 2])     # circuit 3 unserved, subnetwork 1 serving nothing
    done = resample_(dec, batches)
    assert done.replaced and done.subnetwork == 1 and done.gain > done.cost
    # the residuals of circuit 3's samples, less what the other subnetworks' kept coefficients take of them
    cos = torch.nn.functional.cosine_similarity(flat_decoder(dec)[done.subnetwork].double()[None],
                                                circuits.double()).abs()
    assert cos[3] > 0.95 and cos[:3].max() < cos[3] - 0.3
    for name, e in dec.encoder_directions().items():
        torch.testing.assert_close(e[done.subnetwork], dec.decoder_directions()[name][done.subnetwork])
    torch.testing.assert_close(flat_decoder(dec).norm(dim=1), torch.ones(C))


def test_a_decomposition_that_serves_every_circuit_is_left_alone():
    batches, circuits = planted()
    dec = decomposition_on(circuits, [0, 1, 2, 3])
    before = {k: v.clone() for k, v in dec.state_dict().items()}
    done = resample_(dec, batches)
    assert not done.replaced and done.gain < done.cost
    assert all(torch.equal(before[k], v) for k, v in dec.state_dict().items())


def run(checkpoint_dir=None, stop_at=None, **kw):
    torch.manual_seed(0)
    collector = l3d.GradientCollector(TMS().untied(), ["W_in", "W_out", "b"])
    inputs = sparse_features(64, 5, p_active=0.2, generator=torch.Generator().manual_seed(1))
    source = l3d.GradientSource(collector, inputs, 8, chunk_size=16, seed=2)
    dec = l3d.Decomposition(collector.shapes, 5, 1, top_k=0.2, seed=3)

    def callback(step, parts):
        if step == stop_at:
            raise KeyboardInterrupt

    history = l3d.fit(dec, source, 4, lr=0.02, lr_decay_every=1, progress=False, resample_every=2,
                      checkpoint_dir=checkpoint_dir, callback=callback, **kw)
    return dec, history


@pytest.mark.parametrize("stop_at", [12, 16, 20], ids=["mid-epoch-1", "at-the-resampling-epoch", "just-after-it"])
def test_fit_resamples_on_schedule_and_resumes_bit_identically(tmp_path, stop_at):
    dec, history = run()
    assert [r["epoch"] for r in history.resampled] == [2]
    assert set(history.resampled[0]) == {"epoch", "subnetwork", "cost", "gain", "replaced"}
    assert l3d.History.from_dict(history.to_dict()) == history
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, stop_at=stop_at, checkpoint_every=4)
    resumed, resumed_history = run(tmp_path, checkpoint_every=4, resume=True)
    assert resumed_history == history
    for (name, x), y in zip(dec.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(x, y), name


def test_a_replaced_subnetwork_starts_with_fresh_adam_moments(monkeypatch):
    forgotten = []
    real = l3d.resample._forget_

    def spy(optimizer, decomposition, k):
        real(optimizer, decomposition, k)
        forgotten.append([optimizer.state[p]["exp_avg"][k].abs().sum().item() for p in decomposition.parameters()])

    monkeypatch.setattr(l3d.resample, "_forget_", spy)
    monkeypatch.setattr(l3d.resample, "resample_",
                        lambda dec, source, top_k, seed: l3d.resample.Resampling(1, 0.0, 1.0, True))
    _, history = run()
    assert history.resampled == [{"epoch": 2, "subnetwork": 1, "cost": 0.0, "gain": 1.0, "replaced": True}]
    assert forgotten and all(s == 0 for s in forgotten[0])


def test_resample_every_refuses_bad_values_and_labels():
    collector = l3d.GradientCollector(torch.nn.Linear(3, 3, bias=False), "weight")
    inputs = sparse_features(32, 3, 0.4, generator=torch.Generator().manual_seed(0))
    dec = l3d.Decomposition(collector.shapes, 3, rank=1, seed=0)
    source = l3d.GradientSource(collector, inputs, 16)
    with pytest.raises(ValueError, match=r"resample_every must be >= 0, got -1"):
        l3d.fit(dec, source, 2, resample_every=-1, progress=False)
    labelled = l3d.GradientSource(collector, inputs, 16, active_circuits=inputs != 0)
    with pytest.raises(ValueError, match=r"resample_every needs a source without labels \(active_circuits\)"):
        l3d.fit(dec, labelled, 2, resample_every=1, progress=False)


def test_decompose_passes_resample_every_on():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    config = l3d.L3DConfig(n_subnetworks=3, epochs=3, batch_size=16, resample_every=1)
    run_ = l3d.decompose(model, torch.randn(64, 3), "*", config, progress=False)
    assert [r["epoch"] for r in run_.history.resampled] == [1, 2]


def test_resample_refuses_gradients_in_another_tensor_order_instead_of_replacing_a_subnetwork():
    # the case: the same tensors in another order; today's flat directions would be read against the wrong
    # entries and the spare subnetwork replaced
    batches, circuits = planted()
    dec = decomposition_on(circuits, [0, 1, 2, None])
    kept = {k: v.clone() for k, v in dec.state_dict().items()}
    other_order = [l3d.DenseGradients({"b": g.grads["b"], "w": g.grads["w"]}) for g in batches]
    with pytest.raises(ValueError,
                       match=r"tensor order differs: decomposition \['w', 'b'\], the gradients \['b', 'w'\]"):
        resample_(dec, other_order)
    with pytest.raises(ValueError, match=r"tensor order differs"):
        costs_and_top_residual(dec, other_order)
    assert all(torch.equal(v, kept[k]) for k, v in dec.state_dict().items())
    assert resample_(dec, batches).replaced   # in the right order: the unserved circuit is found


def test_resample_refuses_a_source_whose_collector_has_other_tensors_and_bad_seeds():
    torch.manual_seed(0)
    collector = l3d.GradientCollector(TMS().untied(), ["W_in", "W_out", "b"])
    source = l3d.GradientSource(collector, sparse_features(32, 5, generator=torch.Generator().manual_seed(0)), 8)
    batches, circuits = planted()
    with pytest.raises(ValueError, match=r"does not fit the source's collector's tensors"):
        resample_(decomposition_on(circuits, [0, 1, 2, 3]), source)
    with pytest.raises(ValueError, match=r"seed must be an int in 0\.\.2\*\*64 - 1"):
        resample_(decomposition_on(circuits, [0, 1, 2, 3]), batches, seed=2**70)
