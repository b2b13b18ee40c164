"""decompose: the one pipeline (collector, source, start, fit) and its settings, L3DConfig."""
import json

import pytest
import torch

import l3d
from l3d.experiments import toys


def _toy(n: int = 64):
    x = toys.sparse_features(n, 10, generator=torch.Generator().manual_seed(0))
    return toys.circuit_superposition(variant="paper_text"), x


def test_decompose_is_collector_source_decomposition_and_fit_by_hand():
    model, x = _toy()
    config = l3d.L3DConfig(n_subnetworks=4, epochs=3, chunk_size=64, seed=3)
    run = decompose_quietly(model, x, config)
    collector = l3d.GradientCollector(model, "*", divergence="mse", gradient_chunk_size=64)
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
    ({"divergence": "l2"}, r"divergence must be one of \['mse', 'output_times_residual', 'kl'\]"),
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


# --- held-out evaluation, dtypes, run.json (issue 28) -----------------------------------------------------------------
def per_sample_gradients(model, names, x, references, kind):
    """Materialized: every sample's gradient of divergence(f(x_i), reference_i) by explicit autograd, one sample at a
    time, flattened over `names` in order: (N, n_w)."""
    params = dict(model.named_parameters())
    rows = []
    for xi, ri in zip(x, references):
        grads = torch.autograd.grad(l3d.divergence(model(xi[None]), ri[None], kind).sum(), [params[n] for n in names])
        rows.append(torch.cat([g.flatten() for g in grads]))
    return torch.stack(rows)


def materialized_loss(decomposition, g, top_k):
    """Σ_i ||g_i − Σ_k m_ik c_ik d_k||² and Σ_i ||g_i||² with c = g Eᵀ and m keeping the round(top_k · N · C) largest
    |c| of the batch, and the mask m: (error, total, m)."""
    E, D = decomposition.flat_directions("encoder"), decomposition.flat_directions("decoder")
    c = g @ E.T
    keep = round(top_k * c.numel())
    mask = torch.zeros(c.numel(), dtype=torch.bool)
    mask[c.abs().flatten().argsort(descending=True)[:keep]] = True
    mask = mask.view_as(c)
    return (g - (c * mask) @ D).pow(2).sum(), g.pow(2).sum(), mask


def test_evaluate_scores_every_held_out_input_the_last_batch_smaller():
    # KL to the uniform reference: no reference is drawn, so the only randomness is the order, a permutation of the
    # 63 inputs drawn with the seed; batches of 32 and 31 in that order, BatchTopK within each
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3))
    x = torch.randn(128, 5)
    run = l3d.decompose(model, x, "*", l3d.L3DConfig(n_subnetworks=5, top_k=0.2, epochs=2, divergence="kl",
                                                     reference="uniform"), progress=False)
    held_out = torch.randn(63, 5)
    result = run.evaluate(held_out, seed=7)
    order = torch.randperm(63, generator=torch.Generator().manual_seed(7))
    names = run.decomposition.names
    errors, totals, active = [], [], torch.zeros(5, dtype=torch.float64)
    for batch in (order[:32], order[32:]):
        g = per_sample_gradients(model, names, held_out[batch], torch.zeros(len(batch), 3), "kl")
        error, total, mask = materialized_loss(run.decomposition.requires_grad_(False), g.detach(), 0.2)
        errors.append(error), totals.append(total)
        active += mask.sum(0)
    assert result["reconstruction_error"] == pytest.approx(float(sum(errors) / sum(totals)), rel=1e-5)   # float32 sums
    assert result["p_act"] == (active / 63).tolist()   # counts over all 63 samples, exactly
    assert sum(result["p_act"]) == pytest.approx((32 + 31) / 63)   # round(0.2·32·5) + round(0.2·31·5) kept


def test_a_held_out_set_one_over_whole_batches_puts_the_last_input_in_the_batch_before():
    model, x = _toy()
    run = decompose_quietly(model, x, l3d.L3DConfig(n_subnetworks=4, epochs=1))
    source = l3d.GradientSource(run.collector, x[:33], 16, drop_last=False)
    assert [g.n_samples for g in source] == [16, 17] and len(source) == 2
    assert [g.n_samples for g in l3d.GradientSource(run.collector, x[:34], 16, drop_last=False)] == [16, 16, 2]
    assert [g.n_samples for g in l3d.GradientSource(run.collector, x[:34], 16)] == [16, 16]
    with pytest.raises(TypeError, match="drop_last must be True"):
        l3d.GradientSource(run.collector, x, 16, drop_last="no")


def test_a_float64_model_decomposes_in_float64_and_its_loss_is_the_materialized_one():
    torch.manual_seed(0)
    model = toys.circuit_superposition(variant="paper_text").double()
    x = toys.sparse_features(64, 10, generator=torch.Generator().manual_seed(0)).double()
    run = decompose_quietly(model, x, l3d.L3DConfig(n_subnetworks=4, epochs=2, reference="mean", top_k=0.25))
    assert {p.dtype for p in run.decomposition.parameters()} == {torch.float64}
    batch = x[:32]
    with torch.no_grad():
        references = model(batch).mean(0, keepdim=True).expand(32, -1)
    parts = run.decomposition.loss(run.collector(batch, references))
    g = per_sample_gradients(model, run.decomposition.names, batch, references, "mse").detach()
    error, total, _ = materialized_loss(run.decomposition, g, 0.25)
    assert parts.loss.dtype == torch.float64
    assert parts.loss.item() == pytest.approx((error / total).item(), rel=1e-12)   # float64 round-off, not float32's
    assert 0 < run.evaluate(x[32:])["reconstruction_error"] < 1


def test_a_half_precision_model_is_refused_with_the_conversion_to_make():
    model, x = _toy()
    with pytest.raises(ValueError, match=r"tensors: the decomposed tensors are torch.bfloat16; L3D decomposes float32 "
                                         r"and float64 models .* e.g. model.float\(\) and inputs.float\(\)"):
        decompose_quietly(model.to(torch.bfloat16), x.to(torch.bfloat16), l3d.L3DConfig(n_subnetworks=4, epochs=1))


def test_run_json_records_the_gradients_settings_the_model_and_the_inputs(tmp_path):
    import hashlib

    model, x = _toy()
    run = decompose_quietly(model, x, l3d.L3DConfig(n_subnetworks=3, epochs=1, divergence="output_times_residual"))
    run.save(tmp_path)
    record = json.loads((tmp_path / "run.json").read_text())
    weight = dict(model.named_parameters())["layers.0.weight"]
    digest = hashlib.sha256(weight.detach().contiguous().numpy().tobytes()).hexdigest()
    assert record["gradients"]["model"]["layers.0.weight"] == f"torch.float32{list(weight.shape)} sha256:{digest}"
    assert record["gradients"]["tensors"] == [n for n, _ in model.named_parameters()]
    assert {k: record["gradients"][k] for k in ("divergence", "reference", "engine", "sequence")} == {
        "divergence": "output_times_residual", "reference": "random", "engine": "auto", "sequence": False}
    assert record["inputs"] == f"torch.float32[64, 10] sha256:{hashlib.sha256(x.numpy().tobytes()).hexdigest()}"
    assert record["config"] == run.config.to_dict()


@pytest.mark.parametrize("earlier", [False, True], ids=["run.json-with-hashes", "run.json-from-before-hashes"])
@pytest.mark.parametrize("n_subnetworks", [3, 8])
def test_a_save_cut_short_leaves_the_old_run_or_a_folder_that_refuses_to_load(tmp_path, monkeypatch, n_subnetworks,
                                                                             earlier):
    import errno
    import os

    model, x = _toy()
    old = decompose_quietly(model, x, l3d.L3DConfig(n_subnetworks=3, epochs=1))
    new = decompose_quietly(model, x, l3d.L3DConfig(n_subnetworks=n_subnetworks, epochs=1, seed=1))
    real_replace, landed = os.replace, []
    monkeypatch.setattr(os, "replace", lambda a, b: (landed.append(b), real_replace(a, b)))
    new.save(tmp_path / "whole")
    monkeypatch.undo()
    outcomes = []
    for cut in range(1, len(landed) + 2 + earlier):   # the disk fills before the cut-th file lands; the last: never
        folder = tmp_path / f"cut{cut}"
        old.save(folder)
        if earlier:   # as an l3d before hashes wrote it
            record = json.loads((folder / "run.json").read_text())
            del record["sha256"]
            (folder / "run.json").write_text(json.dumps(record, indent=1))
        before = {p.name: p.read_bytes() for p in folder.iterdir()}
        calls = []

        def full_disk(a, b, calls=calls, cut=cut):   # this iteration's calls and cut, bound as defaults
            calls.append(b)
            if len(calls) == cut:
                raise OSError(errno.ENOSPC, "No space left on device")
            return real_replace(a, b)

        monkeypatch.setattr(os, "replace", full_disk)
        try:
            new.save(folder)
        except OSError as e:
            assert e.errno == errno.ENOSPC
        monkeypatch.undo()
        try:
            loaded = l3d.Decomposition.load(folder)
        except ValueError as e:   # refuses: never a new decomposition under the old record
            assert "another decomposition than its run.json records" in str(e) or "does not match" in str(e), e
            assert len(calls) == cut, e
            outcomes.append("refused")
            continue
        if len(calls) < cut:   # the save was complete
            assert json.loads((folder / "run.json").read_text())["config"]["seed"] == 1
            outcomes.append("new")
            continue
        # loads: the old decomposition byte for byte, with the old run.json (given hashes first if it had none)
        assert {p.name: p.read_bytes() for p in folder.iterdir() if p.name in before and p.name != "run.json"} == \
            {name: data for name, data in before.items() if name != "run.json"}
        record = json.loads((folder / "run.json").read_text())
        assert {k: v for k, v in record.items() if k != "sha256"} == \
            {k: v for k, v in json.loads(before["run.json"]).items() if k != "sha256"}
        for a, b in zip(loaded.parameters(), old.decomposition.parameters()):
            assert torch.equal(a, b)
        outcomes.append("old")
    assert outcomes[0] == "old" and outcomes[-1] == "new" and "refused" in outcomes
    assert outcomes.count("old") == 1 + earlier   # the first file (or the seal) failed: nothing had changed


def test_resume_refuses_another_setting_model_or_inputs_naming_each(tmp_path):
    import copy

    model, x = _toy()
    config = l3d.L3DConfig(n_subnetworks=3, epochs=2, batch_size=16)

    class Stop(Exception):
        pass

    def stop_at_3(step, parts):
        if step == 3:
            raise Stop

    def decompose(model=model, x=x, config=config, tensors="*", **kw):
        return l3d.decompose(model, x, tensors, config, checkpoint_dir=tmp_path, checkpoint_every=1, progress=False,
                             **kw)

    with pytest.raises(Stop):
        decompose(callback=stop_at_3)
    other_weights = copy.deepcopy(model)
    with torch.no_grad():
        other_weights.layers[0].weight[0, 0] += 1e-6
    other_rest = copy.deepcopy(model)
    with torch.no_grad():
        other_rest.layers[1].bias[0] += 1e-6
    refused = [
        (dict(config=config.replace(divergence="output_times_residual")),
         r"gradients\.divergence: checkpoint 'mse', now 'output_times_residual'; "
         r"config\.divergence: checkpoint 'mse', now 'output_times_residual'\. Resume with"),
        (dict(config=config.replace(reference="random_or_self")),
         r"config\.reference: checkpoint 'random', now 'random_or_self'"),
        (dict(config=config.replace(engine="dense")), r"config\.engine: checkpoint 'auto', now 'dense'"),
        (dict(config=config.replace(seed=1)), r"config\.seed: checkpoint 0, now 1"),
        (dict(config=config.replace(init="gradients")), r"config\.init: checkpoint 'random', now 'gradients'"),
        (dict(config=config.replace(gradient_chunk_size=16)), r"config\.gradient_chunk_size: checkpoint None, now 16"),
        (dict(model=other_weights),
         r"gradients\.model\.layers\.0\.weight: checkpoint 'torch\.float32\[\d+, \d+\] sha256:[0-9a-f]{64}', now"),
        (dict(model=other_rest, tensors="layers.0.*"),
         r"gradients\.tensors: checkpoint \[.*'layers\.1\.bias'\], now \['layers\.0\.weight', 'layers\.0\.bias'\]"),
        (dict(x=x.flip(0)), r"inputs: checkpoint 'torch\.float32\[64, 10\] sha256:[0-9a-f]{64}', now"),
    ]
    for changes, message in refused:
        with pytest.raises(l3d.checkpoint.ResumeRefused, match=message):
            decompose(resume=True, **changes)
    # a run of some tensors: the rest of the model (other parameters, buffers) is fingerprinted too
    partial = dict(tensors="layers.0.*", checkpoint_dir=tmp_path / "partial", checkpoint_every=1, progress=False)
    with pytest.raises(Stop):
        l3d.decompose(model, x, config=config, callback=stop_at_3, **partial)
    with pytest.raises(l3d.checkpoint.ResumeRefused,
                       match=r"gradients\.rest of model: checkpoint 'sha256:[0-9a-f]{64}', now"):
        l3d.decompose(other_rest, x, config=config, resume=True, **partial)
    resumed = decompose(resume=True)
    uninterrupted = decompose_quietly(model, x, config)
    assert resumed.history == uninterrupted.history
    for a, b in zip(resumed.decomposition.parameters(), uninterrupted.decomposition.parameters()):
        assert torch.equal(a, b)
    assert decompose(config=config.replace(epochs=3), resume=True).history.reconstruction_error[:2] == \
        uninterrupted.history.reconstruction_error   # more epochs: allowed


def test_l3d_config_reads_its_training_settings_from_fits_schedule():
    """L3DConfig's training settings are declared once, in Schedule: the same defaults and the same checks."""
    import dataclasses

    from l3d.train import Schedule

    ours = {f.name: f for f in dataclasses.fields(l3d.L3DConfig)}
    for f in dataclasses.fields(Schedule):
        assert (ours[f.name].default, dict(ours[f.name].metadata)) == (f.default, dict(f.metadata)), f.name
    config = l3d.L3DConfig(epochs=7, lr=0.5, silence=0.1, silence_from=3, resample_every=2)
    assert config.schedule() == Schedule(epochs=7, lr=0.5, silence=0.1, silence_from=3, resample_every=2)
    with pytest.raises(ValueError, match="lr_decay"):
        l3d.L3DConfig(lr_decay=1.5)
