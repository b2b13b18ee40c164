"""The command line's --help: every option's meaning, allowed values and default, and what runs without --setup."""
import dataclasses
import re

import pytest

import l3d
from l3d.cli import ALLOWED, MEANING, _flag, _parser, main


def help_text(capsys, monkeypatch) -> str:
    monkeypatch.setenv("COLUMNS", "2000")   # no wrapping (argparse breaks lines after the hyphens of flags too)
    with pytest.raises(SystemExit) as exit:
        main(["--help"])
    assert exit.value.code == 0
    return " ".join(capsys.readouterr().out.split())


def test_help_shows_defaults_and_the_built_in_example(capsys, monkeypatch):
    text = help_text(capsys, monkeypatch)
    assert "Without --setup the built-in example runs: a toy model of superposition" in text
    assert "python -m l3d --out runs/tms" in text
    for shown in ("(default: l3d.cli:tms)", "--n-subnetworks INT number of subnetworks C: an int >= 1 (default: 5)",
                  "--epochs INT passes over the inputs: an int >= 1 (default: 1000)",
                  "--lr NUMBER Adam's learning rate: a number > 0 (default: 0.01)",
                  "--top-k NUMBER BatchTopK: the fraction of a batch's coefficients kept (0.1 in every paper "
                  "experiment): a number in (0, 1] (default: 0.1)",
                  "--decoder-norm {unit,sum} decoder scaling", "--batch-references {true,false}",
                  "--chunk-size INT items per gradient pass, references drawn within it; a multiple of --batch-size: "
                  "an int >= 1 (default: one batch)",
                  "--seed INT every random draw of the run follows from it: an int in 0 .. 2**64 - 1 (default: 0)",
                  "(default: auto)"):
        assert shown in text
    assert "(default: False)" not in text and "L3DConfig." not in text   # every setting explained, none by name only
    assert "--threads" in text and "$L3D_THREADS" in text


def test_every_setting_has_its_meaning_and_allowed_values_in_the_help():
    actions = {a.option_strings[0]: a for a in _parser()._actions if a.option_strings}
    fields = {f.name: f for f in dataclasses.fields(l3d.L3DConfig)}
    assert set(MEANING) == set(fields), "L3DConfig and the command line's MEANING must name the same settings"
    for name, f in fields.items():
        action = actions[_flag(name)]
        described, default = re.fullmatch(r"(.*) \(default: ([^)]*)\)", action.help).groups()
        assert described.startswith(MEANING[name]) and default not in ("None", ""), (name, action.help)
        choices = f.metadata.get("choices")
        if choices:                               # the metavar lists them
            assert action.metavar == "{" + ",".join(choices) + "}"
        elif action.metavar != "{true,false}":    # a number: its range follows the meaning
            allowed = described[len(MEANING[name]):]
            assert re.fullmatch(r": an? (int|number)( (>=?|in) .+)?", allowed), (name, allowed)
            if f.metadata.get("low") is not None or name in ALLOWED:
                assert re.search(r">=?|in", allowed), (name, allowed)
