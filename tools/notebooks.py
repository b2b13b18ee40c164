"""The notebooks under test and their models: small parameters, reference headline numbers, shipped models.

    python tools/notebooks.py prepare-tests build/nbtest     # what make test runs under nbval
    python tools/notebooks.py references tests/notebooks     # make test-references: new reference headline numbers
    python tools/notebooks.py references tests/notebooks 02 07  # only those notebooks (make test-references NB="02 07")
    python tools/notebooks.py embed-figures figures/01_*/01_*.ipynb   # make figures: the figures into the notebook
    python tools/notebooks.py compare                        # make figures' last step: reproduced or not, per number
    python tools/notebooks.py models                         # make models: train and ship 05's and 06's models
    python tools/notebooks.py run 01 -p n_features 8         # make notebook NB=01 PARAMS="-p n_features 8"
    python tools/notebooks.py parameters 05                  # a notebook's parameters with their defaults
    python tools/notebooks.py check-parameters NOTEBOOK NAME...   # make figures: every NAME is a parameter of it

Small parameters for each notebook live in notebooks/test_parameters.json; every notebook also gets
out_dir = build/nbtest/<notebook name> and device = "cpu", so tests never touch figures/.

Each notebook's headline cell prints its headline numbers and, when its parameter `headline_reference` names
a file, checks them against it (`l3d.report.headlines.check_headlines`: every number within its own
tolerance, written with its reason in l3d/report/tolerances.py). `references` runs every notebook with the
small parameters and writes its headline numbers (key path -> number, from the metrics.json it wrote) to
tests/notebooks/<notebook>.json. `prepare-tests` writes the current notebooks with the small parameters and
headline_reference set to that file, so nbval (which runs every cell) fails when a headline number moves
beyond its tolerance, until the references are made again on purpose.

`compare` prints, for every notebook with a figures/<notebook>/metrics.json, its headline numbers now against
the committed ones (git show HEAD:figures/<notebook>/metrics.json) within the paper-scale tolerances, and
whether every one is within.

`models` trains the embedded models of notebooks 05 and 06 at their paper and test settings (the parameters
cell, and with test_parameters.json over it) and ships them in l3d/experiments/weights (safetensors and
manifest.json with their SHA-256).

`run` is `make notebook`: one notebook with papermill parameters (-p NAME VALUE, read as papermill reads them;
also -r NAME VALUE for a raw string, -y YAML, -f FILE.yaml) into runs/<notebook>/. Every parameter name is checked
against the notebook's parameters cell first: a misspelled one stops it before any work, in one line naming the
nearest known name (exit status 2). The notebook runs into runs/.<notebook>.partial/ and replaces runs/<notebook>/
only when it succeeds; a failed run leaves the previous one where it was and says where the failed one is (exit
status 1; 130 on Ctrl-C). What the cells print shows as they run, progress as a plain line every 10 s
(L3D_PROGRESS=text, TQDM_MININTERVAL=10). `check-parameters` makes the same check for `make figures`, and
`prepare-tests` and `references` check the names in notebooks/test_parameters.json.

`embed-figures` puts into an executed notebook the figures its cells saved (`save_figure` writes them beside
it as PNG; with MPLBACKEND=Agg plt.show() embeds nothing): each PNG becomes a display output of the cell that
was running when it was written (papermill's cell start and end times), and progress-bar widgets, whose text
outside Jupyter is a frozen "0%", are dropped. The committed executed notebooks then show their figures
wherever the repository is browsed.
"""
from __future__ import annotations

import base64
import difflib
import json
import os
import shutil
import sys
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path

import nbformat
import papermill as pm

from l3d.runtime.atomic import write_file

ROOT = Path(__file__).resolve().parents[1]
TEST_OUT = "build/nbtest"   # relative: l3d.report.results.resolve_out_dir takes it from the repository root


RUN_ENV = {"L3D_PROGRESS": "text", "TQDM_MININTERVAL": "10", "MPLBACKEND": "Agg"}   # make notebook's kernel


def notebooks(folder: Path = ROOT / "notebooks") -> list[Path]:
    return sorted(folder.glob("[0-9][0-9]_*.ipynb"))


class ParameterError(ValueError):
    """A parameter a notebook does not have, or a notebook that does not exist: one line saying what would be right."""


def find_notebook(name: str, folder: Path = ROOT / "notebooks") -> Path:
    """The notebook whose file name starts with `name` ("01", "01_toy", or the full name, with or without .ipynb)."""
    stem = name.removesuffix(".ipynb")
    found = [nb for nb in notebooks(folder) if nb.stem.startswith(Path(stem).name)] if stem else []
    if len(found) != 1:
        names = ", ".join(nb.stem for nb in notebooks(folder))
        raise ParameterError(f"{'no' if not found else 'more than one'} notebook starts with {name!r}: name one of "
                             f"{names}")
    return found[0]


def parameter_names(notebook: Path) -> list[str]:
    """The names the notebook's parameters cell (tagged "parameters") sets, as papermill reads them."""
    return list(pm.inspect_notebook(notebook))


def check_parameters(notebook: Path, given: Iterable[str], where: str = "") -> None:
    """A ParameterError naming every name in `given` that the notebook has no parameter for, each with the nearest
    known name (difflib), and how to list them; `where` says where the names came from."""
    known = parameter_names(notebook)
    unknown = [name for name in given if name not in known]
    if not unknown:
        return
    def nearest(name: str) -> str:
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        return f"{name!r} (did you mean {close[0]!r}?)" if close else repr(name)
    listed = ", ".join(nearest(n) for n in unknown)
    raise ParameterError(f"{notebook.stem} has no parameter{'s' * (len(unknown) > 1)} {listed}{where}; nothing was "
                         f"run. Its parameters: python tools/notebooks.py parameters {notebook.stem[:2]}")


def parameters(name: str) -> dict:
    """A notebook's small parameters for make test (notebooks/test_parameters.json), with out_dir and device; a
    ParameterError for a name in test_parameters.json the notebook has no parameter for."""
    small = json.loads((ROOT / "notebooks" / "test_parameters.json").read_text()).get(name, {})
    check_parameters(ROOT / "notebooks" / f"{name}.ipynb", small, " in notebooks/test_parameters.json")
    return {**small, "out_dir": f"{TEST_OUT}/{name}", "device": "cpu"}


def _value(text: str):
    """A -p value as papermill reads it: True, False, None, an int, a float, else the text."""
    if text in ("True", "False", "None"):
        return {"True": True, "False": False, "None": None}[text]
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_parameters(args: list[str]) -> dict:
    """papermill's parameter options as a dict, later ones over earlier ones: -p NAME VALUE (True/False/None, numbers
    read as such), -r NAME VALUE (the text as it is), -y YAML and -f FILE.yaml (a mapping)."""
    import yaml

    values, i = {}, 0
    while i < len(args):
        flag = args[i]
        width = {"-p": 3, "--parameters": 3, "-r": 3, "--parameters_raw": 3, "-y": 2, "--parameters_yaml": 2,
                 "-f": 2, "--parameters_file": 2}.get(flag)
        if width is None or i + width > len(args):
            raise ParameterError(f"PARAMS takes -p NAME VALUE (also -r NAME VALUE, -y YAML, -f FILE.yaml), got "
                                 f"{' '.join(args[i:]) or flag!r}")
        if width == 3:
            values[args[i + 1]] = _value(args[i + 2]) if flag in ("-p", "--parameters") else args[i + 2]
        else:
            text = Path(args[i + 1]).read_text() if flag in ("-f", "--parameters_file") else args[i + 1]
            mapping = yaml.safe_load(text)
            if not isinstance(mapping, dict):
                raise ParameterError(f"{flag} must give a mapping of parameter names to values, got {args[i + 1]!r}")
            values.update(mapping)
        i += width
    return values


def _shown(path: Path) -> str:
    """`path` relative to the repository root when inside it."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def _move_records(folder: Path, old: str, new: str) -> None:
    """In the executed notebook and the JSON files at the top of `folder`, the text `old` (where the run wrote) as
    `new` (where it now lies): the recorded out_dir and the paths its cells printed."""
    for path in [*folder.glob("*.ipynb"), *folder.glob("*.json")]:
        text = path.read_text(encoding="utf-8")
        if old in text:
            moved = text.replace(old, new)
            write_file(path, lambda f, t=moved: Path(f).write_text(t, encoding="utf-8"))


def run_notebook(name: str, args: list[str], runs: Path = ROOT / "runs", folder: Path = ROOT / "notebooks",
                 execute: Callable = pm.execute_notebook) -> Path:
    """make notebook: the notebook `name` with the papermill parameters in `args` into runs/<notebook>/ (module
    docstring). Returns that folder; SystemExit 2 for a bad name or parameter, 1 when the notebook fails, 130 on
    Ctrl-C, each after one line on stderr."""
    try:
        notebook = find_notebook(name, folder)
        given = parse_parameters(args)
        check_parameters(notebook, given)
        if "out_dir" in given:
            raise ParameterError("make notebook writes into runs/<notebook>/ and sets out_dir itself; run papermill "
                                 "directly to write elsewhere")
    except (ParameterError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    final, partial = runs / notebook.stem, runs / f".{notebook.stem}.partial"
    if partial.exists():   # an earlier failed run's, which its message pointed to; this run replaces it
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    inside = partial.resolve().is_relative_to(ROOT)
    out_dir = str(partial.resolve().relative_to(ROOT)) if inside else str(partial.resolve())
    executed = partial / notebook.name
    saved = {k: os.environ.get(k) for k in RUN_ENV}
    os.environ.update(RUN_ENV)   # the kernel inherits them: plain progress lines, figures to files only
    try:
        execute(notebook, executed, parameters={**given, "out_dir": out_dir}, cwd=str(folder), progress_bar=False,
                stdout_file=sys.stdout, stderr_file=sys.stderr)   # what each cell prints, as it prints it
    except BaseException as e:
        if isinstance(e, KeyboardInterrupt):
            what = "interrupted"
        elif hasattr(e, "ename"):   # papermill's PapermillExecutionError: the cell's own error
            what = f"failed in cell [{e.exec_count}] ({e.ename}: {' '.join(str(e.evalue).split())[:300]})"
        else:
            what = f"failed ({type(e).__name__}: {' '.join(str(e).split())[:300]})"
        kept = f"the previous run is kept in {_shown(final)}/" if final.exists() else "there was no previous run"
        print(f"{notebook.stem} {what}: {kept}; the failed run, its executed notebook up to the error, is in "
              f"{_shown(partial)}/", file=sys.stderr)
        raise SystemExit(130 if isinstance(e, KeyboardInterrupt) else 1) from None
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    if executed.exists():
        embed_figures(executed)
    _move_records(partial, str(partial.resolve()), str(final.resolve()))
    if inside:
        _move_records(partial, out_dir, str(final.resolve().relative_to(ROOT)))
    previous = runs / f".{notebook.stem}.previous"
    if previous.exists():
        shutil.rmtree(previous)
    if final.exists():
        final.rename(previous)
    partial.rename(final)
    if previous.exists():
        shutil.rmtree(previous)   # the run this one replaces
    print(f"outputs: {_shown(final)}/ (figures, metrics.json, the executed notebook {notebook.name})")
    return final


def notebook_parameters(name: str, scale: str = "paper") -> dict:
    """A notebook's parameters as its parameters cell sets them ("paper": the values `make figures` runs with), or
    with the small parameters of notebooks/test_parameters.json over them ("test": what `make test` runs)."""
    if scale not in ("paper", "test"):
        raise ValueError(f"scale must be 'paper' or 'test', got {scale!r}")
    nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    values: dict = {}
    exec(cell.source, {}, values)
    return {**values, **(parameters(name) if scale == "test" else {})}


def models(folder: Path | None = None) -> list[dict]:
    """Train the embedded models of notebooks 05 and 06 at their paper and test settings anew (never from a cache or
    the shipped files) and ship them: safetensors and manifest.json in l3d/experiments/weights (or `folder`).
    Manifest entries of other settings are dropped. Returns the new entries."""
    import tempfile

    from safetensors.torch import save_model

    from l3d.experiments import weights
    from l3d.experiments.cnn import CNNExperiment, digits_model
    from l3d.experiments.transformer import TransformerExperiment, story_model

    made = {}
    with tempfile.TemporaryDirectory() as cache:
        for name, settings_class, train in (("05_transformer", TransformerExperiment, story_model),
                                            ("06_cnn", CNNExperiment, digits_model)):
            for scale in ("paper", "test"):
                settings = settings_class.from_parameters(notebook_parameters(name, scale))
                model, record = train(**settings.model_options(), cache=cache, shipped=False, progress=False)
                kept = {k: record[k] for k in ("final_loss", "test_accuracy") if k in record}
                entry = weights.ship(record["key"], record["name"], record["settings"],
                                     {**kept, "notebook": name, "scale": scale}, record["trained_on"],
                                     lambda path, model=model: save_model(model, path), folder)
                made[record["key"]] = entry
                print(f"{name} ({scale} scale): {entry['file']}, {entry['bytes']:,} bytes, {kept}")
    stale = weights.retire(set(made), folder)
    if stale:
        print("no longer in manifest.json (delete them with git rm):", ", ".join(stale))
    return list(made.values())


def references(target: Path, only: list[str] | None = None) -> None:
    """Run every notebook (or those whose names start with one of `only`) with its small parameters; write its
    headline numbers at test scale (`l3d.report.headlines`) from the metrics.json it wrote to
    target/<notebook>.json, key path -> number."""
    from l3d.report.headlines import headline_numbers, tolerances
    from l3d.runtime.atomic import write_file

    chosen = [nb for nb in notebooks() if not only or any(nb.stem.startswith(o) for o in only)]
    if only and not chosen:
        sys.exit(f"no notebook starts with any of {only}: the notebooks are {[nb.stem for nb in notebooks()]}")
    for notebook in chosen:
        small = parameters(notebook.stem)
        executed = ROOT / small["out_dir"] / notebook.name
        executed.parent.mkdir(parents=True, exist_ok=True)
        pm.execute_notebook(notebook, executed, parameters=small, cwd=str(ROOT / "notebooks"), progress_bar=False)
        metrics = json.loads((executed.parent / "metrics.json").read_text())
        numbers = headline_numbers(metrics, tolerances(notebook.stem, "test"))
        text = json.dumps(numbers, indent=1) + "\n"
        write_file(target / f"{notebook.stem}.json", lambda f, text=text: Path(f).write_text(text))
        print(f"{notebook.stem}: {len(numbers)} headline numbers -> {target / (notebook.stem + '.json')}")


def prepare_tests(target: Path, reference: Path = ROOT / "tests" / "notebooks") -> None:
    """The notebooks with their small parameters and `headline_reference` set to their reference headline numbers
    (reference/<notebook>.json), in target/: each headline cell then checks its numbers within tolerance."""
    target.mkdir(parents=True, exist_ok=True)
    for notebook in notebooks():
        known = reference / f"{notebook.stem}.json"
        if not known.is_file():
            sys.exit(f"{notebook.name}: no reference headline numbers at {known}; run `make test-references` "
                     f"and commit tests/notebooks/")
        pm.execute_notebook(notebook, target / notebook.name, prepare_only=True,
                            parameters={**parameters(notebook.stem), "headline_reference": str(known.resolve())})


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


def committed_metrics(root: Path, name: str) -> dict | str:
    """figures/<name>/metrics.json as committed (`git show HEAD:...` in `root`), or why there is none."""
    import subprocess

    try:
        shown = subprocess.run(["git", "-C", str(root), "show", f"HEAD:figures/{name}/metrics.json"],
                               capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as err:
        return f"git is not available ({err}), so there are no committed numbers to compare with"
    if shown.returncode != 0:
        inside = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True)
        if inside.returncode != 0:
            return f"{root} is not a git checkout with a commit, so there are no committed numbers to compare with"
        return f"figures/{name}/metrics.json is not committed, so there are no committed numbers to compare with"
    try:
        return json.loads(shown.stdout)
    except json.JSONDecodeError as err:
        return f"the committed figures/{name}/metrics.json is not JSON ({err})"


def compare(root: Path = ROOT) -> tuple[list[dict], list[str]]:
    """make figures' last step: every notebook's headline numbers in figures/<notebook>/metrics.json now against
    the committed ones, within the paper-scale tolerances of l3d.report.headlines, both read under the current
    key names (`current_keys`: a committed file may use keys renamed since). Returns the rows (each with
    "notebook" added) and a note per notebook that could not be compared."""
    from l3d.report.headlines import TOLERANCES, comparison_rows, current_keys

    rows, notes = [], []
    for name in sorted(TOLERANCES):
        path = root / "figures" / name / "metrics.json"
        if not path.is_file():
            notes.append(f"{name}: no figures/{name}/metrics.json yet")
            continue
        committed = committed_metrics(root, name)
        if isinstance(committed, str):
            notes.append(f"{name}: {committed}")
            continue
        committed, now = current_keys(committed, name), current_keys(json.loads(path.read_text()), name)
        rows += [{"notebook": name, **r} for r in comparison_rows(committed, now, TOLERANCES[name]["paper"])]
    return rows, notes


def comparison_report(rows: list[dict], notes: list[str]) -> str:
    """The table `make figures` ends with, then one line saying whether every headline number reproduced."""
    def show(value) -> str:
        return "-" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)

    lines = ["Headline numbers: committed (git HEAD) and now, within the paper-scale tolerances of "
             "l3d/report/tolerances.py", "",
             "| notebook | number | committed | now | tolerance | within |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['notebook']} | {r['number']} | {show(r['reference'])} | {show(r['now'])} | {r['tolerance']} | "
              f"{'yes' if r['within'] else 'NO'} |" for r in rows]
    lines += ["", *notes]
    bad = [f"{r['notebook']} {r['number']}" for r in rows if not r["within"]]
    if not rows:
        lines.append("Nothing to compare: no notebook has both a new and a committed metrics.json.")
    elif bad:
        lines.append(f"NOT reproduced: {len(bad)} of {len(rows)} headline numbers are outside their tolerance: "
                     + ", ".join(bad))
    else:
        lines.append(f"Reproduced: all {len(rows)} headline numbers are within their tolerance of the committed ones.")
    return "\n".join(lines)


def show_parameters(name: str) -> str:
    """A notebook's parameters as its parameters cell sets them: name = default  # its comment."""
    notebook = find_notebook(name)
    rows = pm.inspect_notebook(notebook).values()
    width = max(len(r["name"]) for r in rows)
    return "\n".join([f"{notebook.stem}: parameters (make notebook NB={notebook.stem[:2]} PARAMS=\"-p NAME VALUE\")",
                      *(f"  {r['name']:<{width}} = {r['default']}" + (f"   # {r['help']}" if r["help"] else "")
                        for r in rows)])


if __name__ == "__main__":
    commands = ("prepare-tests", "references", "embed-figures", "run", "parameters", "check-parameters", "models",
                "compare")
    if len(sys.argv) < 2 or sys.argv[1] not in commands or sys.argv[1] in commands[:6] and len(sys.argv) < 3:
        sys.exit(__doc__)
    try:
        if sys.argv[1] == "run":
            run_notebook(sys.argv[2], sys.argv[3:])
            sys.exit(0)
        if sys.argv[1] == "parameters":
            print(show_parameters(sys.argv[2]))
            sys.exit(0)
        if sys.argv[1] == "check-parameters":
            check_parameters(Path(sys.argv[2]), sys.argv[3:])
            sys.exit(0)
        if sys.argv[1] in ("prepare-tests", "references"):
            for nb in notebooks():
                parameters(nb.stem)   # every name in test_parameters.json is a parameter, before any work
    except ParameterError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    if sys.argv[1] == "embed-figures":
        for name in sys.argv[2:]:
            print(f"{name}: {embed_figures(Path(name))} figures embedded")
    elif sys.argv[1] == "references":
        references(Path(sys.argv[2]), sys.argv[3:])
    elif sys.argv[1] == "models":
        models()
    elif sys.argv[1] == "compare":
        print(comparison_report(*compare()))
    else:
        prepare_tests(Path(sys.argv[2]))
