"""Stacks and sweeps: M decompositions trained as one program equal M separate runs.

A stack's loss is each member's loss (BatchTopK, Gram matrix and error of its own); `fit` of a stack equals `fit`
of each member alone on its own source (to float32 rounding); `sweep` equals `decompose` per decomposition, and
its restarts keep the start with the lowest training error. Tolerances: errors rel 1e-4 and parameters 1e-3
(float32 sums in another order, grown by a few epochs of Adam).
"""
import json

import numpy as np
import pytest
import torch

import l3d
from l3d.experiments.toys import TMS, sparse_features

TENSORS = ["W_in", "W_out", "b"]


def collector(engine="dense", seed=0):
    torch.manual_seed(seed)
    return l3d.GradientCollector(TMS().untied(), TENSORS, engine=engine)


def inputs(seed, n=128):
    return sparse_features(n, 5, p_active=0.3, generator=torch.Generator().manual_seed(seed))


def source(col, x, seed, **kw):
    return l3d.GradientSource(col, x, 32, chunk_size=x.shape[0], seed=seed, **kw)


def starts(shapes, seeds, C=3):
    return [l3d.Decomposition(shapes, C, rank=1, seed=s) for s in seeds]


def test_a_stacks_loss_is_every_members_loss():
    col = collector()
    x = inputs(1)
    grads = col(x, generator=torch.Generator().manual_seed(2))
    others = col(inputs(3), generator=torch.Generator().manual_seed(4))
    members = starts(col.shapes, range(4))
    stack = l3d.Decomposition.stack(members)
    factored = collector("auto")(x, col.references(x, torch.Generator().manual_seed(2)))
    stacked = l3d.gradients.StackedGradients.stack([grads, others])
    for batch, of in ((grads, lambda m: grads), (factored, lambda m: grads),
                      ([grads, others], lambda m: [grads, others][m // 2]),
                      (stacked, lambda m: [grads, others][m // 2])):
        parts = stack.loss(batch, dropped_energy=True)
        for m, member in enumerate(members):
            alone = member.loss(of(m), dropped_energy=True)
            torch.testing.assert_close(parts.error[m], alone.error, rtol=1e-5, atol=1e-3)
            torch.testing.assert_close(parts.dropped_energy[m], alone.dropped_energy, rtol=1e-5, atol=1e-3)
            torch.testing.assert_close(parts.total[m], alone.total)
            assert torch.equal(parts.mask[:, 3 * m:3 * m + 3], alone.mask)
        totals = parts.total
        torch.testing.assert_close(parts.loss, (parts.error / totals).sum())
    as_tuple, as_stack = stack.loss((grads, others), dropped_energy=True), stack.loss(stacked, dropped_energy=True)
    for name in ("loss", "error", "total", "mask", "dropped_energy"):     # one tensor or a tuple: the same numbers
        assert torch.equal(getattr(as_tuple, name), getattr(as_stack, name)), name


@pytest.mark.parametrize("batches", ["two", "shared", "factored"])
def test_a_stacks_gradient_is_every_members_gradient(batches):
    """The stack's loss differentiated gives each member the gradient of its own loss alone (BatchTopK, the dropped
    energy in the objective): dense gradients through the written-out backward of l3d.dense_loss, from two batches
    (two members each) or one shared by all; factored gradients (nn.Linear weights, engine "auto") through autograd."""
    if batches == "factored":
        torch.manual_seed(0)
        model = TMS(tied=False, layout="linear")
        col, dense = l3d.GradientCollector(model, "*", engine="auto"), l3d.GradientCollector(model, "*")
        x = inputs(1)
        references = col.references(x, torch.Generator().manual_seed(2))
        given, own = col(x, references), [dense(x, references)] * 4
        assert isinstance(given, l3d.gradients.FactoredGradients)
    else:
        col = collector()
        own = [col(inputs(s), generator=torch.Generator().manual_seed(s + 1)) for s in (1, 3)]
        own = [own[0]] * 4 if batches == "shared" else [own[m // 2] for m in range(4)]
        given = own[0] if batches == "shared" else [own[0], own[2]]
    members = starts(col.shapes, range(4))
    stack = l3d.Decomposition.stack(members)
    parts = stack.loss(given, top_k=0.3, dropped_energy=True)
    (parts.loss + 0.1 * parts.dropped_energy.sum() + 0.01 * parts.error.sum()).backward()
    for m, member in enumerate(members):
        alone = member.loss(own[m], top_k=0.3, dropped_energy=True)
        (alone.loss + 0.1 * alone.dropped_energy + 0.01 * alone.error).backward()
        for (name, a), b in zip(stack.named_parameters(), member.parameters()):
            torch.testing.assert_close(a.grad[3 * m:3 * m + 3], b.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_stack_unstack_and_save_load_round_trip(tmp_path):
    members = starts(collector().shapes, [5, 6])
    stack = l3d.Decomposition.stack(members)
    assert stack.members == 2 and stack.n_subnetworks == 6 and stack.per_member == 3
    for a, b in zip(stack.unstack(), members):
        for (k, v), w in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(v, w), k
    stack.save(tmp_path / "s")
    again = l3d.Decomposition.load(tmp_path / "s")
    assert again.members == 2 and torch.equal(again.member(1).decoder[0].core, members[1].decoder[0].core)


@pytest.mark.parametrize("resample_every", [0, 2])
def test_fit_of_a_stack_equals_each_member_trained_alone(resample_every):
    """Two sources (two data sets, seeds 0 and 5), two starts each: warm start, lr decay, silence, resampling."""
    col = collector()
    x, y = inputs(1), inputs(7)
    kw = dict(epochs=6, lr=0.01, lr_decay=0.8, lr_decay_every=2, warm_start_epochs=1, progress=False, silence=0.1,
              silence_from=2, resample_every=resample_every)
    alone = []
    for i, (data, seed) in enumerate([(x, 0), (x, 0), (y, 5), (y, 5)]):
        d = starts(col.shapes, [10 + i])[0]
        alone.append((d, l3d.fit(d, source(col, data, seed), **kw)))
    stack = l3d.Decomposition.stack(starts(col.shapes, range(10, 14)))
    histories = l3d.fit(stack, [source(col, x, 0), source(col, y, 5)], **kw)
    assert len(histories) == 4
    for (d, h), hm, dm in zip(alone, histories, stack.unstack()):
        np.testing.assert_allclose(hm.reconstruction_error, h.reconstruction_error, rtol=1e-4)
        np.testing.assert_allclose(hm.p_act, h.p_act, atol=1e-6)
        np.testing.assert_allclose(hm.dropped_energy, h.dropped_energy, rtol=1e-4)
        assert [r["replaced"] for r in hm.resampled] == [r["replaced"] for r in h.resampled]
        for a, b in zip(dm.parameters(), d.parameters()):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    evaluated = l3d.evaluate(stack, [source(col, x, 9), source(col, y, 9)])
    for m, (d, _) in enumerate(alone):
        own = l3d.evaluate(d, source(col, (x, y)[m // 2], 9))
        assert evaluated[m]["reconstruction_error"] == pytest.approx(own["reconstruction_error"], rel=1e-5)


def test_a_stack_resumes_bit_identically(tmp_path):
    col = collector()
    x = inputs(1)
    kw = dict(lr=0.01, lr_decay_every=1, progress=False, resample_every=2)
    whole = l3d.Decomposition.stack(starts(col.shapes, [1, 2]))
    expected = l3d.fit(whole, source(col, x, 0), 4, **kw)
    first = l3d.Decomposition.stack(starts(col.shapes, [1, 2]))
    l3d.fit(first, source(col, x, 0), 2, checkpoint_dir=tmp_path, **kw)
    resumed = l3d.Decomposition.stack(starts(col.shapes, [1, 2]))
    histories = l3d.fit(resumed, source(col, x, 0), 4, checkpoint_dir=tmp_path, resume=True, **kw)
    assert [h.reconstruction_error for h in histories] == [h.reconstruction_error for h in expected]
    for a, b in zip(resumed.parameters(), whole.parameters()):
        assert torch.equal(a, b)


def test_sweep_equals_decompose_for_each_seed_and_model():
    models = [TMS().untied() for _ in range(2)]
    data = [inputs(1), inputs(2)]
    config = l3d.L3DConfig(n_subnetworks=3, epochs=3, batch_size=32, chunk_size=128, lr_decay_every=1, engine="dense")
    configs = [config.replace(seed=4), config.replace(seed=8)]
    runs = l3d.sweep(models, data, TENSORS, configs, progress=False)
    for run, model, x, c in zip(runs, models, data, configs):
        alone = l3d.decompose(model, x, TENSORS, c, progress=False)
        assert run.config == c and run.collector.model is model
        np.testing.assert_allclose(run.history.reconstruction_error, alone.history.reconstruction_error, rtol=1e-4)
        # Adam divides by sqrt(v): rounding in entries whose gradient is near 0 moves them by up to lr per step
        for a, b in zip(run.decomposition.parameters(), alone.decomposition.parameters()):
            torch.testing.assert_close(a, b, rtol=1e-3, atol=5e-4)
        assert run.evaluate()["reconstruction_error"] == pytest.approx(alone.evaluate()["reconstruction_error"],
                                                                       rel=1e-4)


@pytest.mark.parametrize("restart_epochs", [None, 1])
def test_restarts_keep_the_start_with_the_lowest_training_error(restart_epochs):
    model, x = TMS().untied(), inputs(1)
    config = l3d.L3DConfig(n_subnetworks=3, epochs=3, batch_size=32, chunk_size=128, lr_decay_every=1, engine="dense",
                           restarts=3, restart_epochs=restart_epochs, seed=2)
    run = l3d.decompose(model, x, TENSORS, config, progress=False)
    assert len(run.start_errors) == 3 and len(set(run.start_errors)) == 3
    if restart_epochs is None:   # every start trained the whole schedule: the kept one is the lowest at the end
        assert run.history.reconstruction_error[-1] == min(run.start_errors)
        seed = 2000 + min(range(3), key=run.start_errors.__getitem__)
        alone = l3d.decompose(model, x, TENSORS, config.replace(restarts=1, seed=2), progress=False)
        start = l3d.Decomposition(alone.collector.shapes, 3, seed=seed)
        expected = l3d.fit(start, l3d.GradientSource(alone.collector, x, 32, chunk_size=128, seed=2), 3,
                           lr_decay_every=1, progress=False)
        np.testing.assert_allclose(run.history.reconstruction_error, expected.reconstruction_error, rtol=1e-4)


def test_a_sweep_keeps_every_start_and_one_start_is_that_start_trained_alone(tmp_path):
    """keep_starts: each start's decomposition and history; `one_start(r)` is start r as a one-start run from seed
    1000·seed + r trains it (seed 0: the same start seed as restarts = 1)."""
    model, x = TMS().untied(), inputs(1)
    config = l3d.L3DConfig(n_subnetworks=3, epochs=3, batch_size=32, chunk_size=128, lr_decay_every=1, engine="dense",
                           restarts=3, restart_epochs=None, seed=0)
    run = l3d.sweep([model], [x], TENSORS, [config], progress=False, keep_starts=True)[0]
    assert len(run.starts) == 3
    assert [h.reconstruction_error[-1] for _, h in run.starts] == run.start_errors
    best = min(range(3), key=run.start_errors.__getitem__)
    assert run.starts[best][1] is run.history and run.starts[best][0] is run.decomposition
    first = run.one_start(0)
    assert first.start_index == 0 and first.start_errors == [] and first.starts == [] and first.config is config
    alone = l3d.decompose(model, x, TENSORS, config.replace(restarts=1), progress=False)
    np.testing.assert_allclose(first.history.reconstruction_error, alone.history.reconstruction_error, rtol=1e-4)
    for a, b in zip(first.decomposition.parameters(), alone.decomposition.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=5e-4)
    assert json.loads((first.save(tmp_path / "first") / "run.json").read_text())["start_index"] == 0
    assert l3d.sweep([model], [x], TENSORS, [config], progress=False)[0].starts == []   # not kept unless asked
    assert len(l3d.decompose(model, x, TENSORS, config, progress=False, keep_starts=True).starts) == 3
    with pytest.raises(ValueError, match="this run kept no starts"):
        alone.one_start(0)
    with pytest.raises(ValueError, match="r must be a start of this run, 0 to 2, got 3"):
        run.one_start(3)
    with pytest.raises(ValueError, match="keep_starts needs every start trained the whole schedule"):
        l3d.sweep([model], [x], TENSORS, [config.replace(restart_epochs=1)], progress=False, keep_starts=True)


def test_start_noise_moves_the_start_by_its_relative_size_only():
    model, x = TMS().untied(), inputs(1)
    config = l3d.L3DConfig(n_subnetworks=3, epochs=1, batch_size=32, chunk_size=128, engine="dense", lr=1e-12)
    plain = l3d.decompose(model, x, TENSORS, config, progress=False).decomposition
    noisy = l3d.decompose(model, x, TENSORS, config.replace(start_noise=1e-6), progress=False).decomposition
    other = l3d.decompose(model, x, TENSORS, config.replace(start_noise=1e-6, start_noise_seed=1),
                          progress=False).decomposition
    for a, b, c in zip(plain.encoder.parameters(), noisy.encoder.parameters(), other.encoder.parameters()):
        relative = ((b - a) / a.abs().clamp_min(1e-12)).abs().max()
        assert 0 < relative < 1e-5 and not torch.equal(b, c)


def test_bad_stacks_and_sweeps_are_refused_naming_what_differs():
    col = collector()
    with pytest.raises(ValueError, match="differs from decompositions\\[0\\]"):
        l3d.Decomposition.stack([l3d.Decomposition(col.shapes, 3), l3d.Decomposition(col.shapes, 4)])
    with pytest.raises(ValueError, match="members must be an int >= 1 that divides"):
        l3d.Decomposition(col.shapes, 5, members=2)
    stack = l3d.Decomposition.stack(starts(col.shapes, [1, 2, 3]))
    with pytest.raises(ValueError, match="cannot share 2 sources evenly"):
        l3d.fit(stack, [source(col, inputs(1), 0), source(col, inputs(2), 0)], 1, progress=False)
    config = l3d.L3DConfig(n_subnetworks=3, epochs=1, batch_size=32, engine="dense")
    with pytest.raises(ValueError, match=r"configs\[1\] differs from configs\[0\] in \['lr'\]"):
        l3d.sweep([TMS().untied()] * 2, [inputs(1)] * 2, TENSORS, [config, config.replace(lr=0.1)], progress=False)
    with pytest.raises(ValueError, match="as many inputs each"):
        l3d.sweep([TMS().untied()] * 2, [inputs(1), inputs(2, n=64)], TENSORS, [config, config.replace(seed=1)],
                  progress=False)


def test_a_stack_trains_with_labels_as_each_member_alone():
    """The labelled diagnostic of three toys as one stack (`fit_circuit_aligned` with one collector, inputs, labels and
    seed per member; the labelled sources' gradients in one joint pass): each member's history and parameters those
    of it trained alone (float32 sums in another order: rtol 1e-4); the stack's loss with a given mask keeps exactly
    that mask. Sources with and without labels do not mix."""
    from l3d.experiments.ground_truth import fit_circuit_aligned
    cols = [collector(seed=s) for s in range(3)]
    data = [inputs(s + 1) for s in range(3)]
    labels = [x > 0 for x in data]
    kw = dict(epochs=4, lr=0.01, lr_decay=0.8, lr_decay_every=2, batch_size=32, silence=1.0)
    alone = []
    for i, (col, x, active) in enumerate(zip(cols, data, labels)):
        d = l3d.Decomposition(col.shapes, 5, rank=1, seed=20 + i)
        alone.append((d, fit_circuit_aligned(d, col, x, active, seed=i, **kw)))
    stack = l3d.Decomposition.stack([l3d.Decomposition(cols[0].shapes, 5, rank=1, seed=20 + i) for i in range(3)])
    histories = fit_circuit_aligned(stack, cols, data, labels, seed=[0, 1, 2], **kw)
    for (d, h), hm, dm in zip(alone, histories, stack.unstack()):
        np.testing.assert_allclose(hm.reconstruction_error, h.reconstruction_error, rtol=1e-4)
        np.testing.assert_allclose(hm.dropped_energy, h.dropped_energy, rtol=1e-4)
        np.testing.assert_allclose(hm.p_act, h.p_act, atol=1e-6)
        for a, b in zip(dm.parameters(), d.parameters()):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    grads = [col(x[:32], generator=torch.Generator().manual_seed(0)) for col, x in zip(cols, data)]
    mask = torch.rand(32, 15, generator=torch.Generator().manual_seed(1)) < 0.3
    parts = stack.loss(grads, mask=mask, dropped_energy=True)
    assert torch.equal(parts.mask, mask)
    for m, member in enumerate(stack.unstack()):
        own = member.loss(grads[m], mask=mask[:, 5 * m:5 * m + 5], dropped_energy=True)
        torch.testing.assert_close(parts.error[m], own.error, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(parts.dropped_energy[m], own.dropped_energy, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"mask must be \(n_samples, n_subnetworks\) = \(32, 15, member-major"):
        stack.loss(grads, mask=mask[:, :5])
    labelled = l3d.GradientSource(cols[0], data[0], 32, chunk_size=128, active_circuits=labels[0])
    with pytest.raises(ValueError, match="must all have labels"):
        l3d.fit(stack, [labelled, source(cols[1], data[1], 0), source(cols[2], data[2], 0)], 1, progress=False)
    with pytest.raises(ValueError, match=r"one of each of \['collector', 'inputs', 'active_circuits', 'seed'\]"):
        fit_circuit_aligned(stack, cols, data, labels[:2], seed=[0, 1, 2], **kw)
