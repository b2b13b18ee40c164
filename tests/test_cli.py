"""The command line: python -m l3d (and -m l3d.cli, for torchrun), the built-in TMS example, resuming."""
import json
import os
import re
import subprocess
import sys

import pytest
import torch

import l3d
from l3d.cli import main


def test_command_line_decomposes_and_resumes_with_silence(tmp_path):
    args = ["--out", str(tmp_path), "--setup-kwargs", '{"n_samples": 64}', "--epochs", "2", "--batch-size", "16",
            "--silence", "1", "--silence-from", "1", "--checkpoint-every", "3", "--device", "cpu"]
    main(args)
    record = json.loads((tmp_path / "decomposition" / "run.json").read_text())
    history = record["history"]
    assert len(history["reconstruction_error"]) == len(history["dropped_energy"]) == 2
    assert record["config"]["silence"] == 1 and record["config"]["batch_size"] == 16 and record["config"]["epochs"] == 2
    decomposition = l3d.Decomposition.load(tmp_path / "decomposition")
    assert decomposition.n_subnetworks == 5
    main(args[:-2] + ["--epochs", "3", "--resume", "--device", "cpu"])
    assert len(json.loads((tmp_path / "decomposition" / "run.json").read_text())["history"]["dropped_energy"]) == 3


def test_python_dash_m_runs_the_command_line():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for module in ("l3d", "l3d.cli"):
        done = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, env=env)
        assert done.returncode == 0, done.stderr
        assert "--setup" in done.stdout and "python -m l3d" in done.stdout


def test_yes_no_settings_read_true_and_false(capsys):
    from l3d.cli import _parser

    def parse(value):
        return _parser().parse_args(["--out", "x", "--batch-references", value]).batch_references

    assert parse("true") is True and parse("No") is False
    with pytest.raises(SystemExit):
        parse("maybe")
    assert "expected true or false, got 'maybe'" in capsys.readouterr().err


# --- issue 28 -------------------------------------------------------------------------------------------------------
SMALL = ["--setup-kwargs", '{"n_samples": 64, "toy_epochs": 2}', "--epochs", "1", "--batch-size", "16",
         "--n-subnetworks", "3", "--device", "cpu"]


def last_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


def test_resume_with_other_settings_or_another_model_is_refused_naming_them(tmp_path, monkeypatch, capsys):
    args = ["--out", str(tmp_path), *SMALL, "--checkpoint-every", "2"]
    main(args)
    before = (tmp_path / "decomposition" / "run.json").read_bytes()
    for extra, named in [(["--seed", "1"], "config.seed: checkpoint 0, now 1"),
                         (["--reference", "random_or_self"],
                          "gradients.reference: checkpoint 'random', now 'random_or_self'"),
                         (["--engine", "dense"], "config.engine: checkpoint 'auto', now 'dense'"),
                         (["--init", "gradients"], "config.init: checkpoint 'random', now 'gradients'")]:
        with pytest.raises(SystemExit) as exit:
            main(args + extra + ["--resume"])
        assert exit.value.code == 2
        line = last_error_line(capsys)
        assert line.startswith("python -m l3d: error: cannot resume ") and named in line, line
    with pytest.raises(SystemExit) as exit:   # another model: the toy trained longer
        main(["--out", str(tmp_path), "--setup-kwargs", '{"n_samples": 64, "toy_epochs": 3}', *SMALL[2:], "--resume"])
    assert (exit.value.code == 2
            and "gradients.model.W_in: checkpoint 'torch.float32[2, 5] sha256:" in last_error_line(capsys))
    assert (tmp_path / "decomposition" / "run.json").read_bytes() == before   # nothing was trained or written
    main(args + ["--resume"])   # the same settings: resumes


def test_a_users_hidden_tmp_files_are_kept_and_only_l3ds_temporaries_removed(tmp_path):
    mine = [tmp_path / ".notes.tmp", tmp_path / ".draft-v2.tmp", tmp_path / "decomposition" / ".config.json.tmp",
            tmp_path / "decomposition" / ".my.l3d-notes.tmp"]
    ours = [tmp_path / "decomposition" / ".decomposition.safetensors.l3d-ab12cd_3.tmp",   # write_file's folder
            tmp_path / "decomposition" / ".run.json.x7y8z9ab.tmp"]                       # an earlier l3d's file
    for path in mine + ours[1:]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("kept")
    ours[0].mkdir()
    (ours[0] / ".tmpA1b2C3").write_bytes(b"\0" * 10)   # safetensors' own temporary, inside write_file's folder
    main(["--out", str(tmp_path), *SMALL])
    assert all(p.read_text() == "kept" for p in mine)
    assert not any(p.exists() for p in ours)


def test_out_must_name_a_folder_and_be_writable_before_any_work(tmp_path, monkeypatch, capsys):
    import os

    import l3d.cli

    monkeypatch.setattr(l3d.cli, "tms", lambda **kw: pytest.fail("the setup ran before --out was checked"))
    with pytest.raises(SystemExit) as exit:
        main(["--out", "", *SMALL])
    assert exit.value.code == 2 and "--out must name a folder for the run, got an empty name" in last_error_line(capsys)
    read_only = ["/sys/kernel"] if os.path.isdir("/sys/kernel") else []   # not writable, also by root (sysfs)
    if os.geteuid() != 0:   # permissions bind everyone but root
        (tmp_path / "ro").mkdir(mode=0o555)
        read_only.append(str(tmp_path / "ro"))
    if not read_only:
        pytest.skip("no read-only folder to try on this machine")
    for out in read_only:
        with pytest.raises(SystemExit) as exit:
            main(["--out", out, *SMALL])
        assert exit.value.code == 2
        assert re.fullmatch(rf"python -m l3d: error: --out '{re.escape(out)}' is not a folder this process can write "
                            r"in \(.*\): choose another --out, or make it writable", last_error_line(capsys))


def test_a_float64_model_goes_through_the_command_line(tmp_path, monkeypatch):
    import l3d.cli

    real = l3d.cli.tms
    monkeypatch.setattr(l3d.cli, "tms", lambda **kw: {**(s := real(**kw)), "model": s["model"].double(),
                                                       "inputs": s["inputs"].double()})
    main(["--out", str(tmp_path), *SMALL])
    loaded = l3d.Decomposition.load(tmp_path / "decomposition")
    assert {p.dtype for p in loaded.parameters()} == {torch.float64}


@pytest.mark.parametrize("args, message", [
    (["--device", "bogus"], "--device: device 'bogus' is not a torch device: use 'auto', 'cpu', 'cuda' or 'cuda:N'"),
    (["--ep", "1"], "unrecognized arguments: --ep 1"),
    (["--seed", str(2**70)], f"--seed must be >= 0 and <= {2**64 - 1}, got {2**70}"),
])
def test_bad_device_abbreviations_and_huge_seeds_exit_2_with_one_line(args, message, tmp_path, monkeypatch, capsys):
    import l3d.cli

    monkeypatch.setattr(l3d.cli, "tms", lambda **kw: pytest.fail("the setup ran before the arguments were checked"))
    with pytest.raises(SystemExit) as exit:
        main(["--out", str(tmp_path / "out"), *args])
    assert exit.value.code == 2 and message in last_error_line(capsys)
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_device_cuda_without_a_gpu_exits_2_with_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "l3d", "--out", str(tmp_path / "out"), "--device", "cuda"],
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == ("python -m l3d: error: --device: device 'cuda' asked for, but no "
                                                    "CUDA GPU is available; use 'cpu' or 'auto'")


# --- issue 32: a bad --setup in one line, a dashboard at the end ------------------------------------------------
@pytest.mark.parametrize("setup, message", [
    ("mypkg:make", "--setup 'mypkg:make': no module named 'mypkg' on the Python path"),
    ("l3d.nowhere:make", "--setup 'l3d.nowhere:make': no module named 'l3d.nowhere' on the Python path"),
    ("l3d.cli:nope", "--setup 'l3d.cli:nope': module l3d.cli has no 'nope'"),
    ("l3d.cli:MEANING", "--setup 'l3d.cli:MEANING': l3d.cli.MEANING is a dict, not a function"),
])
def test_a_setup_that_cannot_be_imported_is_one_line_naming_setup_before_any_work(setup, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit:
        main(["--out", str(tmp_path / "out"), "--setup", setup])
    assert exit.value.code == 2
    line = last_error_line(capsys)
    assert line.startswith("python -m l3d: error: ") and message in line, line
    assert not (tmp_path / "out").exists()


def test_a_setup_module_whose_own_import_fails_keeps_its_traceback(tmp_path, monkeypatch):
    (tmp_path / "brokensetup.py").write_text("import a_module_nobody_has\n\ndef make():\n    return {}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match="a_module_nobody_has"):   # the user's bug, not a bad --setup
        main(["--out", str(tmp_path / "out"), "--setup", "brokensetup:make"])


def test_a_setup_returning_no_model_is_refused_naming_setup(tmp_path, monkeypatch, capsys):
    import l3d.cli

    for returned, named in (([1, 2], "returned a list; it must return a dict with model, inputs and tensors"),
                            ({"model": None}, "returned a dict without inputs, tensors")):
        monkeypatch.setattr(l3d.cli, "tms", lambda returned=returned, **kw: returned)
        with pytest.raises(SystemExit) as exit:
            main(["--out", str(tmp_path / "out"), *SMALL])
        assert exit.value.code == 2 and named in last_error_line(capsys)


def test_the_command_line_ends_with_a_dashboard_the_dashboard_command_renders_again(tmp_path, capsys):
    from l3d.report import dashboard

    main(["--out", str(tmp_path), *SMALL, "--dashboard-samples", "40"])
    out = capsys.readouterr().out
    index = tmp_path / "dashboard" / "index.html"
    assert f"dashboard: {index} (open it in a browser)" in out
    data = dashboard.load(tmp_path)
    assert data["n_subnetworks"] == 3 and data["n_items"] == 40 and data["kind"] == "vectors"
    assert data["feature_names"] == [f"x{i}" for i in range(5)] and data["circuit_names"][0] == "feature 0"
    run = json.loads((tmp_path / "decomposition" / "run.json").read_text())
    assert data["history"]["reconstruction_error"] == pytest.approx(run["history"]["reconstruction_error"], abs=1e-4)
    before = index.read_bytes()
    index.unlink()
    assert dashboard.main([str(tmp_path)]) == index and index.read_bytes() == before   # the same page again


def test_no_dashboard_and_a_sequence_model_without_decode_write_none(tmp_path, monkeypatch, capsys):
    import l3d.cli

    main(["--out", str(tmp_path / "plain"), *SMALL, "--no-dashboard"])
    assert not (tmp_path / "plain" / "dashboard").exists() and "dashboard: " not in capsys.readouterr().out

    def tokens(**kw):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Embedding(7, 4), torch.nn.Linear(4, 7))
        return {"model": model, "inputs": torch.randint(0, 7, (16, 5)), "tensors": ["1.weight"], "sequence": True,
                "divergence": "kl"}

    monkeypatch.setattr(l3d.cli, "tms", tokens)
    main(["--out", str(tmp_path / "texts"), "--epochs", "1", "--batch-size", "8", "--n-subnetworks", "2",
          "--device", "cpu"])
    captured = capsys.readouterr()
    assert (tmp_path / "texts" / "decomposition" / "run.json").exists()
    assert not (tmp_path / "texts" / "dashboard").exists()
    assert "no dashboard: a sequence model's dashboard shows texts, so it needs a function from token ids to text: " \
           "return 'dashboard': {'decode': tokenizer.decode} from --setup" in captured.err
