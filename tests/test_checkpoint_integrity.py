"""Issue 16, items 8-10: litter of killed runs is removed, damaged checkpoints are detected by their hashes and
skipped for the newest intact one, and a resume on other inputs or with fewer epochs is refused."""
import json
import os
from pathlib import Path

import pytest
import torch

import l3d
import l3d.runtime.atomic
from l3d import checkpoint as ckpt
from l3d.experiments.toys import TMS, sparse_features

N, BATCH = 32, 8   # 4 steps per epoch


class Stop(Exception):
    pass


def run(checkpoint_dir=None, stop_at=None, epochs=3, inputs_seed=1, **kw):
    torch.manual_seed(0)
    collector = l3d.GradientCollector(TMS().untied(), ["W_in", "W_out", "b"])
    inputs = sparse_features(N, 5, p_active=0.3, generator=torch.Generator().manual_seed(inputs_seed))
    source = l3d.GradientSource(collector, inputs, BATCH, seed=2)
    decomposition = l3d.Decomposition(collector.shapes, 4, 1, top_k=0.25, seed=3)

    def callback(step, parts):
        if step == stop_at:
            raise Stop

    history = l3d.fit(decomposition, source, epochs, lr=0.02, lr_decay_every=1, progress=False,
                      checkpoint_dir=checkpoint_dir, callback=callback, **kw)
    return decomposition, history


def assert_identical(a, b):
    (da, ha), (db, hb) = a, b
    for (name, x), y in zip(da.state_dict().items(), db.state_dict().values()):
        assert torch.equal(x, y), name
    assert ha == hb


def interrupted(tmp_path, stop_at=6, every=2):
    with pytest.raises(Stop):
        run(tmp_path, stop_at=stop_at, checkpoint_every=every)
    return [p.name for p in ckpt.checkpoints(tmp_path)]


# --- 8. litter ---------------------------------------------------------------------------------------------------
def test_8_what_killed_runs_left_is_removed_on_the_next_start(tmp_path):
    assert interrupted(tmp_path) == ["step-00000004", "step-00000006"]
    (tmp_path / ".step-00000008.tmp4242").mkdir()                      # a checkpoint being written (old naming)
    (tmp_path / ".step-00000008.tmp4242" / "config.json").write_text("{")
    (tmp_path / ".step-00000002.k3j9x").mkdir()                         # an old checkpoint being removed
    (tmp_path / "step-00000001").mkdir()                                # half removed by an older version
    (tmp_path / "step-00000001" / "training.json").write_text("{}")
    (tmp_path / "notes.txt").write_text("mine")                        # not ours: kept
    assert_identical(run(tmp_path, resume=True, checkpoint_every=2), run())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "step-00000010", "step-00000012"]


def test_8_a_crash_while_removing_an_old_checkpoint_leaves_no_half_folder_under_its_name(tmp_path, monkeypatch):
    decomposition = l3d.Decomposition({"W": (4, 3)}, 3, seed=0)
    for step in (1, 2):
        ckpt.save_checkpoint(tmp_path, step, decomposition, {"step": step}, keep=2)

    def killed(path, *args, **kw):   # dies after deleting one file
        next(p for p in Path(path).iterdir()).unlink()
        raise KeyboardInterrupt

    monkeypatch.setattr(l3d.runtime.atomic.shutil, "rmtree", killed)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint(tmp_path, 3, decomposition, {"step": 3}, keep=2)
    monkeypatch.undo()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names[1:] == ["step-00000002", "step-00000003"] and names[0].startswith(".step-00000001.")
    assert [p.name for p in ckpt.remove_litter(tmp_path)] == [names[0]]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000002", "step-00000003"]


# --- 9. hashes and falling back to an intact checkpoint -------------------------------------------------------------
def flip_last_byte(path):
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage",
                         ["decomposition.safetensors", "training.safetensors", "config.json", "training.json"])
def test_9_a_damaged_newest_checkpoint_is_skipped_with_a_warning(tmp_path, damage):
    interrupted(tmp_path)
    newest = tmp_path / "step-00000006"
    if damage == "config.json":
        (newest / damage).write_text('{"shapes": ')
    elif damage == "training.json":   # a flipped digit still parses
        meta = json.loads((newest / damage).read_text())
        meta["state"]["step"] = 7
        (newest / damage).write_text(json.dumps(meta))
    else:   # a flipped bit in the tensor data still loads
        flip_last_byte(newest / damage)
    with pytest.raises(ckpt.DamagedCheckpoint, match=rf"step-00000006.*(SHA-256 of {damage} differs|not valid JSON)"):
        ckpt.load_checkpoint(newest)
    with pytest.warns(UserWarning,
                      match=r"skipped damaged checkpoint\(s\) step-00000006 .*; resuming from step-00000004"):
        resumed = run(tmp_path, resume=True, checkpoint_every=2)
    assert_identical(resumed, run())
    assert (tmp_path / "step-00000006.damaged" / damage).exists()   # kept aside for inspection


def test_9_no_intact_checkpoint_is_an_error_naming_each(tmp_path):
    interrupted(tmp_path)
    for name in ("step-00000004", "step-00000006"):
        flip_last_byte(tmp_path / name / "decomposition.safetensors")
    with pytest.raises(ckpt.DamagedCheckpoint,
                       match=r"no intact checkpoint in .*step-00000006 is damaged.*step-00000004 is damaged"):
        run(tmp_path, resume=True, checkpoint_every=2)


def test_9_every_checkpoint_file_is_flushed_before_the_folder_is_renamed(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync",
                        lambda fd: (events.append(("fsync", Path(os.readlink(f"/proc/self/fd/{fd}")).name)),
                                    real_fsync(fd)))
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(("replace", Path(b).name)), real_replace(a, b)))
    ckpt.save_checkpoint(tmp_path, 5, l3d.Decomposition({"W": (4, 3)}, 3, seed=0), {"step": 5, "x": torch.ones(2)})
    renamed = events.index(("replace", "step-00000005"))
    assert {name for kind, name in events[:renamed] if kind == "fsync"} >= {
        "decomposition.safetensors", "config.json", "training.safetensors", "training.json"}
    assert ("fsync", tmp_path.name) in events[renamed:]


# --- 10. other inputs, fewer epochs ---------------------------------------------------------------------------------
def test_10_resuming_on_other_inputs_of_the_same_size_is_refused(tmp_path):
    interrupted(tmp_path)
    with pytest.raises(l3d.checkpoint.ResumeRefused,
                       match=r"other settings inputs: checkpoint 'torch.float32\[32, 5\] sha256:[0-9a-f]{64}', "
                             r"now 'torch.float32\[32, 5\] sha256:[0-9a-f]{64}'\. Resume with"):
        run(tmp_path, resume=True, checkpoint_every=2, inputs_seed=9)
    assert_identical(run(tmp_path, resume=True, checkpoint_every=2), run())


def test_10_resuming_with_fewer_epochs_than_done_is_refused(tmp_path):
    run(tmp_path, checkpoint_every=2, epochs=3)
    with pytest.raises(ValueError, match=r"it has done 3 epochs, more than epochs=2; ask for epochs >= 3"):
        run(tmp_path, resume=True, checkpoint_every=2, epochs=2)
    assert len(run(tmp_path, resume=True, checkpoint_every=2, epochs=3)[1].reconstruction_error) == 3


def test_10_the_fingerprint_tells_inputs_apart_by_values_shape_and_dtype():
    x = torch.arange(12.0).view(3, 4)
    fingerprints = {l3d.fingerprints.fingerprint(t)
                    for t in (x, x.view(4, 3), x.double(), x + 1e-6, x.T.contiguous().T)}
    assert len(fingerprints) == 4 and l3d.fingerprints.fingerprint(x) == l3d.fingerprints.fingerprint(x.clone())
