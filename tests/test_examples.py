"""l3d.examples: the README's library snippet runs verbatim, `tms()` is the untied trained toy, and the quickstart
prints what it wrote (checked against the saved decomposition) the same way every time."""
import re

import pytest
import torch

import l3d
from l3d.examples import SNIPPET, TMS_TENSORS, quickstart, tms
from l3d.experiments.toys import tms_feature_match


def test_the_readme_snippet_runs_verbatim_and_finds_every_feature(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)                      # run.save("runs/mine") writes here
    names: dict = {}
    exec(compile(SNIPPET, "README snippet", "exec"), names)
    model, run, held_out = names["model"], names["run"], names["held_out"]
    assert names["tensors"] == ["W_in", "W_out", "b"] and set(dict(model.named_parameters())) == set(names["tensors"])
    assert len(run.history.reconstruction_error) == 100 and run.history.dead == []
    assert run.evaluate(held_out)["reconstruction_error"] < 0.2      # measured 0.08 (seed 0)
    found = tms_feature_match(model, run.decomposition.decoder_directions())
    assert min(found["cosines"]) > 0.95                              # one subnetwork per feature; measured ≥ 0.99
    loaded = l3d.Decomposition.load(tmp_path / "runs" / "mine")
    for name, p in run.decomposition.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], p, rtol=0, atol=0)
    assert names["scores"].shape == (1000, 5) and names["best"].shape == (5, 10)
    outputs = names["outputs"]                                       # δ = -1, 0, 1 along subnetwork 0
    assert outputs.shape == (3, 1000, 5)
    torch.testing.assert_close(outputs[1], model(held_out), rtol=1e-6, atol=1e-6)
    assert not torch.allclose(outputs[0], outputs[1])


def test_tms_is_the_untied_trained_toy_with_its_own_tensor_names_and_follows_its_seed():
    a = tms(n_samples=64, n_held_out=32, n_train=256, toy_epochs=3, restarts=2, seed=5)
    b = tms(n_samples=64, n_held_out=32, n_train=256, toy_epochs=3, restarts=2, seed=5)
    c = tms(n_samples=64, n_held_out=32, n_train=256, toy_epochs=3, restarts=2, seed=6)
    assert a.tensors == TMS_TENSORS and not a.model.tied
    torch.testing.assert_close(a.model.W_out, a.model.W_in.T, rtol=0, atol=0)   # trained tied, returned untied
    for x, y in zip(a, b):
        if isinstance(x, torch.Tensor):
            assert torch.equal(x, y)
    assert torch.equal(a.model.W_in, b.model.W_in) and not torch.equal(a.model.W_in, c.model.W_in)
    assert a.inputs.shape == (64, 5) and a.held_out.shape == (32, 5) and not torch.equal(a.inputs[:32], a.held_out)
    assert (a.inputs.sum(1) == 0).any()                              # all-zero inputs kept, as notebook 01
    run = l3d.decompose(a.model, a.inputs, a.tensors, l3d.L3DConfig(epochs=1, batch_size=16), progress=False)
    assert run.decomposition.names == ["W_in", "W_out", "b"]


@pytest.mark.parametrize("kwargs, message", [
    ({"n_features": 1}, "n_features must be at least 2, got 1"),
    ({"toy_epochs": 0}, "toy_epochs must be at least 1, got 0"),
    ({"seed": -1}, "seed must be an int in 0..2**64 - 1"),
    ({"n_samples": 1.5}, "n_samples must be an int, got 1.5"),
])
def test_tms_refuses_bad_settings_naming_them(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=re.escape(message)):
        tms(**kwargs)


SMALL = ["--epochs", "4", "--samples", "96", "--toy-epochs", "3"]


def test_quickstart_prints_what_it_wrote_the_same_way_every_time(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    numbers = quickstart.main(["--out", "qs", *SMALL])
    first = capsys.readouterr().out
    for name in ("subnetworks.png", "subnetworks.pdf", "features.png", "features.pdf", "dashboard/index.html",
                 "dashboard/data.json", "decomposition/run.json", "decomposition/decomposition.safetensors"):
        assert (tmp_path / "qs" / name).is_file(), name
    assert "Figures:       qs/subnetworks.png, qs/features.png (and .pdf)" in first
    assert "Dashboard:     qs/dashboard/index.html (open it in a browser)" in first
    # the printed numbers are those of the saved decomposition, on the same toy and held-out inputs
    example = tms(n_samples=96, n_held_out=96, toy_epochs=3, seed=0)
    saved = l3d.Decomposition.load(tmp_path / "qs" / "decomposition")
    found = tms_feature_match(example.model, saved.decoder_directions())
    lines = first.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split() == ["feature", "subnetwork", "|cos|", "P_act"])
    rows = [line.split() for line in lines[header + 1:header + 6]]
    assert [(int(f), int(k), float(c)) for f, k, c, _ in rows] == [
        (i, k, round(found["cos"][i, k].item(), 2)) for i, k in sorted(found["pairs"])]
    assert [float(p) for *_, p in rows] == [row["P_act"] for row in numbers["features"]]
    assert f"Reconstruction error: {numbers['reconstruction_error']:.2f} (last epoch), " \
           f"{numbers['held_out_reconstruction_error']:.2f} (held-out inputs)" in first
    quickstart.main(["--out", "qs", *SMALL])                         # again, over the first run's files
    assert capsys.readouterr().out == first


def test_quickstart_refuses_bad_arguments_in_one_line(tmp_path, capsys):
    (tmp_path / "a_file").write_text("mine")
    for args, message in ((["--epochs", "0"], "argument --epochs: must be at least 1, got 0"),
                          (["--out", str(tmp_path / "a_file")], "is a file: name a folder"),
                          (["--seed", "-3"], "--seed must be in 0 .. 2**64 - 1, got -3")):
        with pytest.raises(SystemExit) as exit:
            quickstart.main(args)
        assert exit.value.code == 2 and message in capsys.readouterr().err.strip().splitlines()[-1]
    assert (tmp_path / "a_file").read_text() == "mine"
