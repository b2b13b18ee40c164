"""The notebooks under test: small parameters, and reference outputs that nbval compares.

    python tools/notebooks.py prepare-tests build/nbtest     # what make test runs under nbval
    python tools/notebooks.py references tests/notebooks     # make test-references: new reference outputs
    python tools/notebooks.py references tests/notebooks 02 07   # only those notebooks (make test-references NB="02 07")
    python tools/notebooks.py embed-figures figures/01_*/01_*.ipynb   # make figures: the figures into the notebook

Small parameters for each notebook live in notebooks/test_parameters.json; every notebook also gets
out_dir = build/nbtest/<notebook name> and device = "cpu", so tests never touch figures/.

A cell whose first line is `# NBVAL_CHECK_OUTPUT` prints a notebook's headline numbers. `references`
runs every notebook with the small parameters and keeps those cells' outputs in tests/notebooks/
(the rest of the outputs are dropped). `prepare-tests` writes the current notebooks with the small
parameters and those reference outputs, so nbval (`--nbval-lax` compares marked cells only) fails
when a headline number changes, until the references are made again on purpose.

`embed-figures` puts into an executed notebook the figures its cells saved (`save_figure` writes them beside
it as PNG; with MPLBACKEND=Agg plt.show() embeds nothing): each PNG becomes a display output of the cell that
was running when it was written (papermill's cell start and end times), and progress-bar widgets, whose text
outside Jupyter is a frozen "0%", are dropped. The committed executed notebooks then show their figures
wherever the repository is browsed.
"""
from __future__ import annotations

import base64
import json
import sys
from datetime import datetime
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


def references(target: Path, only: list[str] | None = None) -> None:
    """Run every notebook (or those whose names start with one of `only`) with its small parameters; keep the
    outputs of the checked cells in target/."""
    chosen = [nb for nb in notebooks() if not only or any(nb.stem.startswith(o) for o in only)]
    if only and not chosen:
        sys.exit(f"no notebook starts with any of {only}: the notebooks are {[nb.stem for nb in notebooks()]}")
    target.mkdir(parents=True, exist_ok=True)
    for notebook in chosen:
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


def embed_figures(executed: Path) -> int:
    """Attach to each code cell of `executed` the PNGs in its folder written while the cell ran; drop progress
    widgets. Returns the number of figures attached."""
    def seconds(stamp: str) -> float:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()

    pngs = sorted((p.stat().st_mtime, p) for p in executed.parent.glob("*.png"))
    nb = nbformat.read(executed, as_version=4)
    attached = set()
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        cell.outputs = [o for o in cell.outputs if "application/vnd.jupyter.widget-view+json" not in o.get("data", {})]
        run = cell.metadata.get("papermill", {})
        if not run.get("start_time") or not run.get("end_time"):
            continue
        start, end = seconds(run["start_time"]), seconds(run["end_time"])
        for written, png in pngs:
            if png not in attached and start <= written <= end + 0.05:
                attached.add(png)
                cell.outputs.append(nbformat.v4.new_output(
                    "display_data", data={"image/png": base64.b64encode(png.read_bytes()).decode(),
                                          "text/plain": f"<figure {png.name}>"}))
    nbformat.write(nb, executed)
    return len(attached)


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] not in ("prepare-tests", "references", "embed-figures"):
        sys.exit(__doc__)
    if sys.argv[1] == "embed-figures":
        for name in sys.argv[2:]:
            print(f"{name}: {embed_figures(Path(name))} figures embedded")
    elif sys.argv[1] == "references":
        references(Path(sys.argv[2]), sys.argv[3:])
    else:
        prepare_tests(Path(sys.argv[2]))
