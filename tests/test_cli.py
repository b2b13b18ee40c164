"""The command line: python -m l3d (and -m l3d.cli, for torchrun), the built-in TMS example, resuming."""
import json
import os
import subprocess
import sys

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
    import pytest
    from l3d.cli import _parser
    parse = lambda value: _parser().parse_args(["--out", "x", "--batch-references", value]).batch_references
    assert parse("true") is True and parse("No") is False
    with pytest.raises(SystemExit):
        parse("maybe")
    assert "expected true or false, got 'maybe'" in capsys.readouterr().err
