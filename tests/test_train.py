"""fit: reproducible, resumable bit for bit, stops on non-finite values with the step and tensor named."""
import pytest
import torch
from torch import nn

import l3d
from l3d.experiments.toys import TMS, sparse_features

N, BATCH, CHUNK, EPOCHS = 64, 8, 16, 3  # 8 steps per epoch, 2 batches per chunk


class Stop(Exception):
    pass


def run(checkpoint_dir=None, stop_at=None, **kw):
    torch.manual_seed(0)
    collector = l3d.GradientCollector(TMS().untied(), ["W_in", "W_out", "b"])
    inputs = sparse_features(N, 5, p_active=0.2, generator=torch.Generator().manual_seed(1))
    source = l3d.GradientSource(collector, inputs, BATCH, chunk_size=CHUNK, seed=2)
    decomposition = l3d.Decomposition(collector.shapes, 5, 1, top_k=0.2, seed=3)

    def callback(step, parts):
        if step == stop_at:
            raise Stop

    history = l3d.fit(decomposition, source, EPOCHS, lr=0.02, lr_decay_every=1, warm_start_epochs=1, progress=False,
                      checkpoint_dir=checkpoint_dir, callback=callback, **kw)
    return decomposition, history


def assert_identical(a, b):
    (da, ha), (db, hb) = a, b
    for (name, x), y in zip(da.state_dict().items(), db.state_dict().values()):
        assert torch.equal(x, y), name
    assert ha == hb


def test_same_seed_same_data_same_decomposition():
    first = run()
    assert_identical(first, run())
    assert len(first[1].reconstruction_error) == EPOCHS and first[1].lr == pytest.approx([0.02, 0.016, 0.0128])
    assert first[1].reconstruction_error[-1] < first[1].reconstruction_error[1]


@pytest.mark.parametrize(
    "every, stop_at",
    [(3, 5), (3, 8), (4, 10), (5, 24)],
    ids=["mid-chunk", "after-a-chunk", "at-epoch-end", "last-step"],
)
def test_resumed_run_is_bit_identical(tmp_path, every, stop_at):
    uninterrupted = run()
    with pytest.raises(Stop):
        run(tmp_path, stop_at=stop_at, checkpoint_every=every)
    saved = l3d.checkpoint.latest_checkpoint(tmp_path)
    assert saved.name == f"step-{(stop_at // every) * every:08d}"
    with pytest.raises(FileExistsError, match=r"already holds a checkpoint \(step-\d+\); pass resume=True"):
        run(tmp_path, checkpoint_every=every)
    resumed = run(tmp_path, checkpoint_every=every, resume=True)
    assert_identical(uninterrupted, resumed)
    # the final checkpoint holds the final decomposition
    assert l3d.checkpoint.latest_checkpoint(tmp_path).name == f"step-{EPOCHS * N // BATCH:08d}"
    assert_identical((l3d.Decomposition.load(l3d.checkpoint.latest_checkpoint(tmp_path)), None), (resumed[0], None))


def test_silence_quiets_the_coefficients_batch_top_k_drops():
    paper_decomposition, paper = run()
    decomposition, quiet = run(silence=1.0)
    assert paper.dropped_energy == [] and len(quiet.dropped_energy) == EPOCHS
    assert l3d.History.from_dict(quiet.to_dict()) == quiet
    torch.manual_seed(0)
    collector = l3d.GradientCollector(TMS().untied(), ["W_in", "W_out", "b"])
    inputs = sparse_features(N, 5, p_active=0.2, generator=torch.Generator().manual_seed(1))
    grads = collector(inputs, generator=torch.Generator().manual_seed(5))
    paper_dropped = paper_decomposition.loss(grads, dropped_energy=True).dropped_energy
    assert decomposition.loss(grads, dropped_energy=True).dropped_energy < 0.75 * paper_dropped
    # before silence_from the loss is the paper's
    late, late_history = run(silence=1.0, silence_from=EPOCHS)
    assert_identical((late, None), (paper_decomposition, None))
    assert (late_history.reconstruction_error == paper.reconstruction_error
            and late_history.dropped_energy[0] == 0.0)  # warm start: k = 1


def test_resume_refuses_other_settings(tmp_path):
    with pytest.raises(Stop):
        run(tmp_path, stop_at=4, checkpoint_every=2)
    with pytest.raises(ValueError, match=r"it was written with other settings lr: checkpoint 0\.02, now 0\.05"):
        torch.manual_seed(0)
        collector = l3d.GradientCollector(TMS().untied(), ["W_in", "W_out", "b"])
        source = l3d.GradientSource(collector, torch.rand(N, 5), BATCH, chunk_size=CHUNK)
        l3d.fit(l3d.Decomposition(collector.shapes, 5, 1, top_k=0.2), source, EPOCHS, lr=0.05, lr_decay_every=1,
                warm_start_epochs=1, progress=False, checkpoint_dir=tmp_path, resume=True)


def test_history_reads_the_dropped_energy_also_under_its_old_key():
    history = l3d.History([0.5, 0.4], [0.01, 0.01], [[0.1, 0.0]] * 2, [0.3, 0.2])
    written = history.to_dict()
    assert written["dropped_energy"] == [0.3, 0.2] and "silent" not in written
    assert l3d.History.from_dict(written) == history
    old = {k: v for k, v in written.items() if k != "dropped_energy"} | {"silent": [0.3, 0.2]}   # before the rename
    assert l3d.History.from_dict(old) == history
    assert "dropped_energy" not in l3d.History([0.5], [0.01], [[0.1]]).to_dict()     # fit without silence


def test_checkpoint_from_before_silence_resumes_as_the_papers_loss(tmp_path):
    import json
    with pytest.raises(Stop):
        run(tmp_path, stop_at=4, checkpoint_every=2)
    meta_path = l3d.checkpoint.latest_checkpoint(tmp_path) / "training.json"
    meta = json.loads(meta_path.read_text())
    del meta["sha256"]   # as written before checksums
    del meta["state"]["settings"]["silence"], meta["state"]["settings"]["silence_from"]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"other settings silence: checkpoint 0\.0, now 1\.0"):
        run(tmp_path, resume=True, silence=1.0)
    assert_identical(run(tmp_path, resume=True), run())


class SqrtModel(nn.Module):
    """y = sqrt(|x ⊙ w|) + v: finite outputs, but an infinite derivative in w where x ⊙ w = 0."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(3))
        self.v = nn.Parameter(torch.zeros(3))

    def forward(self, x):
        return (x * self.w).abs().sqrt() + self.v


def test_non_finite_sample_gradients_stop_with_step_and_tensor():
    collector = l3d.GradientCollector(SqrtModel(), ["w", "v"])
    inputs = torch.rand(16, 3) + 0.5
    inputs[12, 1] = 0.0  # in the second batch
    source = l3d.GradientSource(collector, inputs, 8, shuffle=False)
    with pytest.raises(FloatingPointError,
                       match=r"step 2 \(epoch 0\): the per-sample gradients of tensor\(s\) 'w' are not finite"):
        l3d.fit(l3d.Decomposition(collector.shapes, 2, 1, seed=0), source, 1, progress=False)


def test_diverging_decomposition_stops_with_step_and_tensor():
    torch.manual_seed(0)  # float32 throughout: steps of 1e30 overflow the reconstruction within a few steps
    collector = l3d.GradientCollector(TMS().untied().float(), ["W_in", "W_out", "b"])
    source = l3d.GradientSource(collector, torch.rand(32, 5, dtype=torch.float32), 8)
    decomposition = l3d.Decomposition(collector.shapes, 3, 1, seed=0).float()
    with pytest.raises(FloatingPointError, match=r"step \d+ \(epoch \d+\): the .* not finite.*(encoder|decoder) "
                                                 r"of tensor '(W_in|W_out|b)'.*lower learning rate than lr=1e\+30"):
        l3d.fit(decomposition, source, 5, lr=1e30, progress=False)


def test_evaluate_matches_the_loss_over_one_pass():
    decomposition, _ = run()
    collector = l3d.GradientCollector(TMS().untied(), ["W_in", "W_out", "b"])
    inputs = torch.rand(32, 5)
    result = l3d.evaluate(decomposition, l3d.GradientSource(collector, inputs, 32, seed=5))
    grads = collector(inputs[torch.randperm(32, generator=torch.Generator().manual_seed(5))],
                      generator=_after_randperm(5, 32))
    parts = decomposition.loss(grads)
    assert result["reconstruction_error"] == pytest.approx(parts.loss.item(), rel=1e-6)
    assert result["p_act"] == pytest.approx((parts.mask.double().mean(0)).tolist())


def _after_randperm(seed, n):
    generator = torch.Generator().manual_seed(seed)
    torch.randperm(n, generator=generator)
    return generator


def test_batches_whose_gradients_are_all_zero_train_and_score_as_zero_error():
    # all-zero inputs: TMS's ReLU is off (b < 0), so every per-sample gradient of those batches is exactly 0
    torch.manual_seed(0)
    toy = TMS().untied()
    with torch.no_grad():
        toy.b.fill_(-0.5)
    collector = l3d.GradientCollector(toy, ["W_in", "W_out", "b"])
    inputs = torch.cat([torch.zeros(16, 5),
                        sparse_features(16, 5, p_active=0.3, generator=torch.Generator().manual_seed(0))])
    source = l3d.GradientSource(collector, inputs, 8, chunk_size=16, shuffle=False)
    assert all(float(g.sq_norms().sum()) == 0 for g in list(source)[:2])
    decomposition = l3d.Decomposition(collector.shapes, 5, 1, top_k=0.2, seed=0)
    history = l3d.fit(decomposition, source, 2, lr=0.01, progress=False)
    assert all(torch.isfinite(p).all() for p in decomposition.parameters())
    assert 0 < history.reconstruction_error[-1] < 1
    zero_batch = next(iter(l3d.GradientSource(collector, inputs[:16], 8, shuffle=False)))
    parts = decomposition.loss(zero_batch)
    assert parts.loss.item() == 0 and parts.error.item() == 0


def test_a_source_with_labels_trains_only_the_allowed_subnetworks():
    # fit on GradientSource(active_circuits=...): each sample's coefficients are those its mask allows (sample or
    # reference)
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 3, bias=False)
    collector = l3d.GradientCollector(model, "weight", divergence="mse")
    inputs = sparse_features(64, 3, 0.4, generator=torch.Generator().manual_seed(0))   # no all-zero input
    active_circuits = inputs != 0
    source = l3d.GradientSource(collector, inputs, 16, chunk_size=64, seed=0, active_circuits=active_circuits)
    dec = l3d.Decomposition(collector.shapes, n_subnetworks=3, rank=1, top_k=0.3, seed=0)
    seen = []
    l3d.fit(dec, source, 2, progress=False, callback=lambda step, parts: seen.append(parts.mask.clone()))
    assert len(seen) == 8
    # the masks handed out are exactly active_circuits[i] | active_circuits[reference of i] for the batches of
    # each epoch
    replay = l3d.GradientSource(collector, inputs, 16, chunk_size=64, seed=0, active_circuits=active_circuits)
    expected = []
    for _ in range(2):
        for _ in replay:
            expected.append(replay.mask.clone())
    assert all(torch.equal(a.bool(), b) for a, b in zip(seen, expected))
    assert all(m.bool().any(1).all() for m in seen)     # every sample here has a circuit on: its own, at least
    with pytest.raises(ValueError, match=r"active_circuits must be \(n_inputs, n_subnetworks\)"):
        l3d.GradientSource(collector, inputs, 16, active_circuits=active_circuits[:10])
    mean = l3d.GradientCollector(model, "weight", divergence="mse", reference="mean")
    with pytest.raises(ValueError, match=r"reference one of \['random', 'random_or_self'\] and a single process"):
        l3d.GradientSource(mean, inputs, 16, active_circuits=active_circuits)
    with pytest.warns(DeprecationWarning, match=r"GradientSource\(active=...\) is deprecated, renamed "
                                                 r"active_circuits="):
        old = l3d.GradientSource(collector, inputs, 16, chunk_size=64, seed=0, active=active_circuits)
    assert torch.equal(old.active_circuits, active_circuits)
    with pytest.warns(DeprecationWarning, match="GradientSource.active is deprecated, renamed active_circuits"):
        assert old.active is old.active_circuits
    with pytest.raises(TypeError, match="active is the old name of active_circuits"):
        l3d.GradientSource(collector, inputs, 16, active=active_circuits, active_circuits=active_circuits)


def source_batches(chunk, batch_references=False, reference="random_or_self", engine="dense", active_circuits=None,
                   epochs=2):
    """Every batch a GradientSource hands out over `epochs` epochs: (flat gradients, mask or None)."""
    torch.manual_seed(0)
    collector = l3d.GradientCollector(TMS().untied(), ["W_in", "W_out", "b"], reference=reference, engine=engine)
    inputs = sparse_features(N, 5, p_active=0.2, generator=torch.Generator().manual_seed(1))
    source = l3d.GradientSource(collector, inputs, BATCH, chunk_size=chunk, seed=2, active_circuits=active_circuits,
                                batch_references=batch_references)
    return [(grads.flat(), source.mask) for _ in range(epochs) for grads in source]


@pytest.mark.parametrize("reference", ["random", "random_or_self", "mean"])
@pytest.mark.parametrize("engine", ["dense", "auto"])
def test_batch_references_in_one_pass_equal_one_pass_per_batch(reference, engine):
    # references drawn within each batch of a 4-batch chunk: the same samples, references and gradients as
    # computing one batch per pass (the authors' way), from the same generator
    per_batch = source_batches(BATCH, reference=reference, engine=engine)
    pooled = source_batches(4 * BATCH, batch_references=True, reference=reference, engine=engine)
    assert len(per_batch) == len(pooled) == 2 * N // BATCH
    for (a, _), (b, _) in zip(per_batch, pooled):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    # and they are not what references drawn over the whole chunk give
    over_chunk = source_batches(4 * BATCH, reference=reference, engine=engine)
    assert any(not torch.allclose(a, b) for (a, _), (b, _) in zip(per_batch, over_chunk))


class TinySequence(nn.Module):
    """Token ids (B, T) -> logits (B, T, 7)."""

    def __init__(self):
        super().__init__()
        self.emb, self.out = nn.Embedding(7, 4), nn.Linear(4, 7)

    def forward(self, x):
        return self.out(self.emb(x))


@pytest.mark.parametrize("reference", ["random", "random_or_self"])
@pytest.mark.parametrize("sequence, divergence", [(False, "mse"), (True, "mse"), (True, "kl")],
                         ids=["items", "sequences", "sequences-kl"])
def test_references_are_drawn_group_by_group_as_reference_outputs_draws_them(reference, sequence, divergence):
    # a chunk of 4 batches with batch_references: each batch's references are `reference_outputs` of that batch's
    # outputs (every position of a sequence a sample), drawn one batch after another from the source's generator
    torch.manual_seed(0)
    if sequence:
        model, inputs = TinySequence(), torch.randint(0, 7, (N, 3))
    else:
        model, inputs = TMS().untied(), sparse_features(N, 5, p_active=0.2)
    collector = l3d.GradientCollector(model, "*", reference=reference, sequence=sequence, divergence=divergence)
    source = l3d.GradientSource(collector, inputs, BATCH, chunk_size=4 * BATCH, seed=2, batch_references=True)
    items, sizes = inputs[:4 * BATCH], [BATCH] * 4
    generator = torch.Generator().set_state(source.generator.get_state())
    outputs = collector.outputs(items).view(4, -1, collector.outputs(items[:1]).shape[-1])   # (batches, samples, out)
    expected = torch.cat([l3d.divergences.reference_outputs(o, divergence, reference, generator) for o in outputs])
    assert torch.equal(source._references(items, sizes), expected)
    assert torch.equal(source.generator.get_state(), generator.get_state())


def test_batch_references_with_labels_hand_out_the_same_masks():
    inputs = sparse_features(N, 5, p_active=0.2, generator=torch.Generator().manual_seed(1))
    active_circuits = inputs != 0
    per_batch = source_batches(BATCH, active_circuits=active_circuits)
    pooled = source_batches(4 * BATCH, batch_references=True, active_circuits=active_circuits)
    for (a, mask_a), (b, mask_b) in zip(per_batch, pooled):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
        assert torch.equal(mask_a, mask_b)


def test_batch_references_resume_mid_chunk():
    torch.manual_seed(0)
    collector = l3d.GradientCollector(TMS().untied(), ["W_in", "W_out", "b"], reference="random_or_self")
    inputs = sparse_features(N, 5, p_active=0.2, generator=torch.Generator().manual_seed(1))

    def source():
        return l3d.GradientSource(collector, inputs, BATCH, chunk_size=4 * BATCH, seed=2, batch_references=True)

    uninterrupted = source()
    whole = [g.flat() for _ in range(2) for g in uninterrupted]
    first = source()
    taken = []
    for g in first:
        taken.append(g.flat())
        if len(taken) == 3:     # inside the first chunk of 4 batches
            break
    resumed = source()
    resumed.load_state_dict(first.state_dict())
    rest = [g.flat() for _ in range(2) for g in resumed]
    for a, b in zip(whole, taken + rest, strict=True):
        assert torch.equal(a, b)


def test_decompose_with_batch_references_trains_as_one_batch_per_pass():
    torch.manual_seed(0)
    model = TMS().untied()
    inputs = sparse_features(N, 5, p_active=0.2, generator=torch.Generator().manual_seed(1))
    base = dict(n_subnetworks=5, epochs=3, batch_size=BATCH, reference="random_or_self", engine="dense", seed=4)
    runs = [l3d.decompose(model, inputs, ["W_in", "W_out", "b"], l3d.L3DConfig(**base, **extra), progress=False)
            for extra in ({"chunk_size": BATCH}, {"chunk_size": N, "batch_references": True})]
    for x, y in zip(runs[0].decomposition.state_dict().values(), runs[1].decomposition.state_dict().values()):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)
    assert runs[0].history.reconstruction_error == pytest.approx(runs[1].history.reconstruction_error, rel=1e-5)


def test_batch_references_must_be_a_bool_and_random_needs_two_per_batch():
    collector = l3d.GradientCollector(TMS().untied(), ["W_in"], reference="random")
    inputs = sparse_features(N, 5, p_active=0.2, generator=torch.Generator().manual_seed(1))
    with pytest.raises(TypeError, match=r"batch_references must be True .* or False .*, got 'yes'"):
        l3d.GradientSource(collector, inputs, BATCH, batch_references="yes")
    with pytest.raises(ValueError, match=r"another sample of the same batch: use batch_size >= 2"):
        l3d.GradientSource(collector, inputs, 1, chunk_size=8, batch_references=True)


# --- issue 28: all-zero gradients, checkpoints from before the model's fingerprint, the folder's lock -----------------
class WithUnused(nn.Module):
    """y = W x; `unused` takes no part in the output."""

    def __init__(self):
        super().__init__()
        self.W = nn.Parameter(torch.randn(3, 5))
        self.unused = nn.Parameter(torch.randn(4))

    def forward(self, x):
        return x @ self.W.T


@pytest.mark.parametrize("case", ["identical-samples", "tensor-outside-the-output"])
def test_an_epoch_of_all_zero_gradients_is_refused_not_scored_as_zero_error(case):
    torch.manual_seed(0)
    if case == "identical-samples":   # a random reference is another sample's output: here always its own
        model, tensors, inputs = (TMS().untied(), ["W_in", "W_out", "b"],
                                  sparse_features(1, 5, p_active=0.5).repeat(32, 1))
    else:
        model, tensors, inputs = WithUnused(), ["unused"], torch.randn(32, 5)
    collector = l3d.GradientCollector(model, tensors)
    source = l3d.GradientSource(collector, inputs, 8)
    decomposition = l3d.Decomposition(collector.shapes, 3, seed=0)
    message = r"every per-sample gradient of its 32 samples is zero .* nothing to decompose"
    with pytest.raises(ValueError, match="epoch 0: " + message):
        l3d.fit(decomposition, source, 2, progress=False)
    with pytest.raises(ValueError, match="evaluate: " + message):
        l3d.evaluate(decomposition, source)
    with pytest.raises(ValueError, match="epoch 0: " + message):
        l3d.decompose(model, inputs, tensors, l3d.L3DConfig(n_subnetworks=3, epochs=1, batch_size=8), progress=False)


def test_a_checkpoint_from_before_the_models_fingerprint_is_refused(tmp_path):
    import json
    with pytest.raises(Stop):
        run(tmp_path, stop_at=4, checkpoint_every=2)
    meta_path = l3d.checkpoint.latest_checkpoint(tmp_path) / "training.json"
    meta = json.loads(meta_path.read_text())
    del meta["sha256"]   # as written before checksums, fingerprints and the run's settings
    for key in ("gradients", "config"):
        del meta["state"]["settings"][key]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(l3d.checkpoint.ResumeRefused, match=r"it was written by an earlier l3d, which did not record "
                                                           r"the model .* Start again in an empty checkpoint_dir"):
        run(tmp_path, resume=True)


def test_fit_holds_its_checkpoint_folder_against_a_second_process(tmp_path):
    from l3d.runtime.lock import FolderInUse, exclusive

    with exclusive(tmp_path, "--out"):   # as another process would (flock: one lock per open folder)
        with pytest.raises(FolderInUse, match=r"another process is using checkpoint_dir '.*' \(it holds the folder's "
                                              r"lock\): wait for it to finish, or stop it, "
                                              r"or choose another checkpoint_dir"):
            run(tmp_path, checkpoint_every=4)
    assert list(tmp_path.iterdir()) == []
    assert_identical(run(tmp_path, checkpoint_every=4), run())   # free again once it is released
