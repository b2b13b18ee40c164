"""Prepare the notebooks for nbval with small parameters (papermill --prepare-only).

    python tools/notebooks.py prepare-tests build/nbtest

Small parameters for each notebook live in notebooks/test_parameters.json; every notebook also
gets out_dir = <target>/<notebook name> and device = "cpu", so tests never touch figures/.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import papermill as pm

ROOT = Path(__file__).resolve().parents[1]


def prepare_tests(target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    small = json.loads((ROOT / "notebooks" / "test_parameters.json").read_text())
    for notebook in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        name = notebook.stem
        parameters = {**small.get(name, {}), "out_dir": str((target / name).resolve()), "device": "cpu"}
        pm.execute_notebook(notebook, target / notebook.name, parameters=parameters, prepare_only=True)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "prepare-tests":
        sys.exit(__doc__)
    prepare_tests(Path(sys.argv[2]))
