"""The notebooks under test: small parameters, and reference outputs that nbval compares.

    python tools/notebooks.py prepare-tests build/nbtest     # what make test runs under nbval
    python tools/notebooks.py references tests/notebooks     # make test-references: new reference outputs

Small parameters for each notebook live in notebooks/test_parameters.json; every notebook also gets
out_dir = build/nbtest/<notebook name> and device = "cpu", so tests never touch figures/.

A cell whose first line is `# NBVAL_CHECK_OUTPUT` prints a notebook's headline numbers. `references`
runs every notebook with the small parameters and keeps those cells' outputs in tests/notebooks/
(the rest of the outputs are dropped). `prepare-tests` writes the current notebooks with the small
parameters and those reference outputs, so nbval (`--nbval-lax` compares marked cells only) fails
when a headline number changes, until the references are made again on purpose.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import papermill as pm

ROOT = Path(__file__).resolve().parents[1]
MARK = "# NBVAL_CHECK_OUTPUT"
TEST_OUT = "build/nbtest"   # relative: l3d.report.results.resolve_out_dir takes it from the repository root


def notebooks() -> list[Path]:
    return sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def parameters(name: str) -> dict:
    small = json.loads((ROOT / "notebooks" / "test_parameters.json").read_text())
    return {**small.get(name, {}), "out_dir": f"{TEST_OUT}/{name}", "device": "cpu"}


def checked(cell) -> bool:
    return cell.cell_type == "code" and cell.source.startswith(MARK)


def references(target: Path) -> None:
    """Run every notebook with its small parameters; keep the outputs of the checked cells in target/."""
    target.mkdir(parents=True, exist_ok=True)
    for notebook in notebooks():
        out = target / notebook.name
        pm.execute_notebook(notebook, out, parameters=parameters(notebook.stem), cwd=str(ROOT / "notebooks"),
                            progress_bar=False)
        nb = nbformat.read(out, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code" and not checked(cell):
                cell.outputs, cell.execution_count = [], None
        nb.metadata.pop("papermill", None)
        for cell in nb.cells:
            cell.metadata.pop("papermill", None)
            cell.metadata.pop("execution", None)
        nbformat.write(nb, out)


def prepare_tests(target: Path, reference: Path = ROOT / "tests" / "notebooks") -> None:
    """The notebooks with their small parameters and the reference outputs of their checked cells, in target/."""
    target.mkdir(parents=True, exist_ok=True)
    for notebook in notebooks():
        out = target / notebook.name
        pm.execute_notebook(notebook, out, parameters=parameters(notebook.stem), prepare_only=True)
        nb = nbformat.read(out, as_version=4)
        known = {}
        if (reference / notebook.name).exists():
            known = {c.id: c for c in nbformat.read(reference / notebook.name, as_version=4).cells if checked(c)}
        for cell in nb.cells:
            if checked(cell):
                if cell.id not in known:
                    sys.exit(f"{notebook.name}: no reference output for checked cell {cell.id} in {reference}; "
                             f"run `make test-references` and commit tests/notebooks/")
                cell.outputs, cell.execution_count = known[cell.id].outputs, known[cell.id].execution_count or 1
        nbformat.write(nb, out)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("prepare-tests", "references"):
        sys.exit(__doc__)
    (prepare_tests if sys.argv[1] == "prepare-tests" else references)(Path(sys.argv[2]))
