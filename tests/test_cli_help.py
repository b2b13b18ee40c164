"""The command line's --help: every default, and what runs without --setup."""
import pytest

from l3d.cli import main


def test_help_shows_defaults_and_the_built_in_example(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["--help"])
    assert exit.value.code == 0
    text = " ".join(capsys.readouterr().out.split())   # argparse wraps lines at the terminal width
    assert "Without --setup the built-in example runs: a toy model of superposition" in text
    assert "python -m l3d --out runs/tms" in text
    for default in ("(default: l3d.cli:tms)", "L3DConfig.n_subnetworks (default: 5)", "L3DConfig.epochs (default: 1000)",
                    "L3DConfig.lr (default: 0.01)", "(default: auto)"):
        assert default in text
    assert "(default: False)" not in text   # nothing to show, nothing shown
    assert "--threads" in text and "$L3D_THREADS" in text


def test_threads_must_be_positive(capsys):
    with pytest.raises(SystemExit):
        main(["--out", "unused", "--threads", "0"])
    assert "--threads must be at least 1" in capsys.readouterr().err
