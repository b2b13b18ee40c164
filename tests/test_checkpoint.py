"""Checkpoints: no pickle, atomic (a crash while writing keeps the previous one), and refusing files that do not
match."""
import json

import pytest
import torch
from safetensors.torch import save_file

import l3d
from l3d import checkpoint as ckpt


def small_decomposition(dtype=torch.float32):
    return l3d.Decomposition({"W": (4, 3), "b": (4,)}, 3, rank={"W": (2, 2), "b": 2}, seed=0).to(dtype)


def trained_optimizer(decomposition):
    optimizer = torch.optim.Adam(decomposition.parameters(), lr=0.1)
    for _ in range(2):
        optimizer.zero_grad()
        sum(p.pow(2).sum() for p in decomposition.parameters()).backward()
        optimizer.step()
    return optimizer


def test_state_with_tensors_round_trips_through_json_and_safetensors():
    decomposition = small_decomposition()
    optimizer = trained_optimizer(decomposition)
    tensors = {}
    meta = json.loads(json.dumps(ckpt.split_tensors({"optimizer": optimizer.state_dict(), "rng": ckpt.rng_state()},
                                                    tensors)))
    state = ckpt.join_tensors(meta, tensors)
    assert state["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)  # tuples and int keys come back
    assert set(state["optimizer"]["state"]) == set(range(len(list(decomposition.parameters()))))
    # an optimizer restored from the round trip takes exactly the same next step
    twin = small_decomposition()
    twin.load_state_dict(decomposition.state_dict())
    twin_optimizer = torch.optim.Adam(twin.parameters(), lr=0.1)
    twin_optimizer.load_state_dict(state["optimizer"])
    for module, opt in [(decomposition, optimizer), (twin, twin_optimizer)]:
        opt.zero_grad()
        sum(p.pow(3).sum() for p in module.parameters()).backward()
        opt.step()
    for a, b in zip(decomposition.parameters(), twin.parameters()):
        assert torch.equal(a, b)
    with pytest.raises(TypeError, match=r"cannot store object at 'state/x'"):
        ckpt.split_tensors({"x": object()}, {})


def test_rng_state_restores_every_generator():
    import random

    import numpy as np

    state = ckpt.rng_state()
    first = (torch.rand(3), random.random(), np.random.rand())
    tensors = {}
    ckpt.set_rng_state(ckpt.join_tensors(json.loads(json.dumps(ckpt.split_tensors(state, tensors))), tensors))
    again = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(again[0], first[0]) and again[1:] == first[1:]


def test_crash_while_writing_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    decomposition = small_decomposition()
    ckpt.save_checkpoint(tmp_path, 10, decomposition, {"step": 10, "x": torch.arange(3)})
    before = {k: v.clone() for k, v in decomposition.state_dict().items()}
    with torch.no_grad():
        for p in decomposition.parameters():
            p.add_(1)

    def crash(tensors, filename, *args, **kw):  # a partial file, then the process "dies"
        with open(filename, "wb") as f:
            f.write(b"\x00" * 11)
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt, "save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint(tmp_path, 20, decomposition, {"step": 20, "x": torch.arange(3)})
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["step-00000010"]
    # a process killed outright leaves its temporary folder (and nothing else) behind: it is ignored
    (tmp_path / ".step-00000030.tmp999").mkdir()
    (tmp_path / ".step-00000030.tmp999" / "decomposition.safetensors").write_bytes(b"\x00" * 5)
    folder = ckpt.latest_checkpoint(tmp_path)
    assert folder.name == "step-00000010"
    config, tensors, state = ckpt.load_checkpoint(folder)
    assert state["step"] == 10 and torch.equal(state["x"], torch.arange(3))
    for k, v in before.items():
        assert torch.equal(tensors[k], v)
    assert config == decomposition.config


def test_only_the_newest_checkpoints_are_kept(tmp_path):
    decomposition = small_decomposition()
    for step in (1, 2, 3, 3):
        ckpt.save_checkpoint(tmp_path, step, decomposition, {"step": step}, keep=2)
    assert [p.name for p in ckpt.checkpoints(tmp_path)] == ["step-00000002", "step-00000003"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000002", "step-00000003"]


def test_load_checkpoint_refuses_other_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"is not an l3d checkpoint: decomposition\.safetensors, config\.json, "
                                                r"training\.safetensors, training\.json missing"):
        ckpt.load_checkpoint(tmp_path)
    folder = ckpt.save_checkpoint(tmp_path, 1, small_decomposition(), {"step": 1})
    (folder / "training.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ValueError, match=r"is not an l3d checkpoint \(format 'l3d-checkpoint-1' expected\)"):
        ckpt.load_checkpoint(folder)


def test_decomposition_round_trip_keeps_values_and_dtype(tmp_path):
    decomposition = small_decomposition(torch.float64)
    decomposition.save(tmp_path)
    loaded = l3d.Decomposition.load(tmp_path)
    assert loaded.config == decomposition.config
    for (k, a), b in zip(decomposition.state_dict().items(), loaded.state_dict().values()):
        assert a.dtype == b.dtype == torch.float64 and torch.equal(a, b), k
    assert not any(p.suffix == ".pt" or p.suffix == ".pkl" for p in tmp_path.iterdir())


def test_decomposition_load_refuses_files_that_do_not_match(tmp_path):
    small_decomposition().save(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["n_subnetworks"] = 4
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"decomposition\.safetensors does not match .*config\.json: missing \[\], "
                                         r"unexpected \[\], "
                                         r"wrong shape \[\('decoder\.0\.core', \(3, 2, 2\), \(4, 2, 2\)\)"):
        l3d.Decomposition.load(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"config\.json is not a decomposition config \(JSONDecodeError"):
        l3d.Decomposition.load(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"shapes": {"W": [4, 3]}}))
    with pytest.raises(ValueError, match=r"is not a decomposition config \(KeyError: 'n_subnetworks'\)"):
        l3d.Decomposition.load(tmp_path)
    small_decomposition().save(tmp_path)
    save_file({"decoder.0.core": torch.zeros(3, 2, 2)}, tmp_path / "decomposition.safetensors")
    with pytest.raises(ValueError, match=r"missing \['decoder\.0\.factors\.0'"):
        l3d.Decomposition.load(tmp_path)
