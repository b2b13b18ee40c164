"""tools/notebooks.py: figures into executed notebooks, the table make figures ends with, the notebooks under test."""
import importlib.util
import json
import os
import shutil
import subprocess
from pathlib import Path

import nbformat
import pytest

TOOL = Path(__file__).resolve().parents[1] / "tools" / "notebooks.py"
spec = importlib.util.spec_from_file_location("notebooks_tool", TOOL)
tool = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tool)


def test_each_saved_figure_goes_under_the_cell_that_was_running_and_progress_widgets_go(tmp_path):
    nb = nbformat.v4.new_notebook()
    widget = nbformat.v4.new_output("display_data", data={"application/vnd.jupyter.widget-view+json": {"model_id": "x"},
                                                          "text/plain": "L3D:   0%"})
    for start, end in (("2026-11-30T04:00:00+00:00", "2026-11-30T04:00:10+00:00"),
                       ("2026-11-30T04:00:10+00:00", "2026-11-30T04:00:20+00:00")):
        cell = nbformat.v4.new_code_cell("plot()", outputs=[widget])
        cell.metadata["papermill"] = {"start_time": start, "end_time": end}
        nb.cells.append(cell)
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    for name, second in (("a.png", 5), ("b.png", 15), ("c.png", 16)):
        (tmp_path / name).write_bytes(b"\x89PNG" + name.encode())
        t = 1_796_011_200 + second   # 2026-11-30T04:00:00Z + second
        os.utime(tmp_path / name, (t, t))
    assert tool.embed_figures(path) == 3
    cells = nbformat.read(path, as_version=4).cells
    assert ([[o["data"]["text/plain"] for o in c.outputs] for c in cells]
            == [["<figure a.png>"], ["<figure b.png>", "<figure c.png>"]])


# --- make figures' last step: the headline numbers now against the committed ones ----------------------------
from l3d.report.tolerances import Tolerance, exact  # noqa: E402


def git(root, *args):
    subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True,
                   env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                        "GIT_COMMITTER_EMAIL": "t@t"})


def write(root, name, metrics):
    (root / "figures" / name).mkdir(parents=True, exist_ok=True)
    (root / "figures" / name / "metrics.json").write_text(json.dumps(metrics))


@pytest.fixture
def two_notebooks(monkeypatch):
    from l3d.report import headlines
    monkeypatch.setattr(headlines, "TOLERANCES", {
        "01_a": {"test": {}, "paper": {"median/error": Tolerance(abs=0.01, reason="noise"), "seeds": exact("count")}},
        "02_b": {"test": {}, "paper": {"error": Tolerance(abs=0.01, reason="noise")}},
    })


def test_compare_says_per_number_whether_the_committed_one_reproduced(tmp_path, two_notebooks):
    git(tmp_path, "init", "-q")
    write(tmp_path, "01_a", {"median": {"error": 0.30}, "seeds": 3, "settings": {"lr": 0.01}})
    write(tmp_path, "02_b", {"error": 0.5})
    git(tmp_path, "add", "figures")
    git(tmp_path, "commit", "-q", "-m", "figures")
    rows, notes = tool.compare(tmp_path)
    assert notes == [] and all(r["within"] for r in rows) and len(rows) == 3
    assert tool.comparison_report(rows, notes).endswith(
        "Reproduced: all 3 headline numbers are within their tolerance of the committed ones.")
    write(tmp_path, "01_a", {"median": {"error": 0.305}, "seeds": 2})          # a rerun: one number moved too far
    write(tmp_path, "02_b", {"error": 0.52})
    rows, notes = tool.compare(tmp_path)
    assert [(r["notebook"], r["number"], r["reference"], r["now"], r["within"]) for r in rows] == [
        ("01_a", "median/error", 0.30, 0.305, True), ("01_a", "seeds", 3, 2, False),
        ("02_b", "error", 0.5, 0.52, False)]
    report = tool.comparison_report(rows, notes)
    assert ("| 01_a | seeds | 3 | 2 | exact | NO |" in report
            and "| 01_a | median/error | 0.3 | 0.305 | ±0.01 | yes |" in report)
    assert report.endswith("NOT reproduced: 2 of 3 headline numbers are outside their tolerance: "
                           "01_a seeds, 02_b error")


def test_compare_pairs_a_committed_number_with_the_new_name_of_its_key(tmp_path, two_notebooks, monkeypatch):
    from l3d.report import headlines
    monkeypatch.setattr(headlines, "RENAMED_KEYS", {"02_b": {"old_error": "error"}})
    git(tmp_path, "init", "-q")
    write(tmp_path, "02_b", {"old_error": 0.5})                            # committed before the key was renamed
    git(tmp_path, "add", "figures")
    git(tmp_path, "commit", "-q", "-m", "figures")
    write(tmp_path, "02_b", {"error": 0.505})
    rows, _ = tool.compare(tmp_path)
    assert [(r["notebook"], r["number"], r["reference"], r["now"], r["within"]) for r in rows] == [
        ("02_b", "error", 0.5, 0.505, True)]


def test_compare_says_why_when_there_is_nothing_to_compare(tmp_path, two_notebooks):
    rows, notes = tool.compare(tmp_path)                                      # no figures at all
    assert rows == [] and notes == ["01_a: no figures/01_a/metrics.json yet", "02_b: no figures/02_b/metrics.json yet"]
    assert tool.comparison_report(rows, notes).endswith(
        "Nothing to compare: no notebook has both a new and a committed metrics.json.")
    write(tmp_path, "01_a", {"median": {"error": 0.3}, "seeds": 3})
    rows, notes = tool.compare(tmp_path)                                      # not a git checkout
    assert rows == [] and "is not a git checkout with a commit" in notes[0]
    git(tmp_path, "init", "-q")
    write(tmp_path, "02_b", {"error": 0.5})
    git(tmp_path, "add", "figures/02_b")
    git(tmp_path, "commit", "-q", "-m", "only 02")
    rows, notes = tool.compare(tmp_path)
    assert notes == ["01_a: figures/01_a/metrics.json is not committed, "
                     "so there are no committed numbers to compare with"]
    assert [r["number"] for r in rows] == ["error"]


def test_prepare_tests_points_every_notebook_at_its_reference_headline_numbers(tmp_path):
    tool.prepare_tests(tmp_path)
    for notebook in tool.notebooks():
        nb = nbformat.read(tmp_path / notebook.name, as_version=4)
        injected = next(c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", []))
        reference = tool.ROOT / "tests" / "notebooks" / f"{notebook.stem}.json"
        assert f"headline_reference = {json.dumps(str(reference))}" in injected.source
        assert any("check_headlines(" in c.source and "if headline_reference:" in c.source for c in nb.cells)
        assert "# NBVAL_CHECK_OUTPUT" not in nbformat.writes(nb)


def test_notebook_parameters_are_the_parameters_cell_with_the_small_ones_over_it():
    paper = tool.notebook_parameters("06_cnn")
    test = tool.notebook_parameters("06_cnn", "test")
    small = json.loads((tool.ROOT / "notebooks" / "test_parameters.json").read_text())["06_cnn"]
    assert paper["model_epochs"] == 60 and paper["retrain_model"] is False and paper["headline_reference"] is None
    assert test == {**paper, **small, "out_dir": "build/nbtest/06_cnn", "device": "cpu"}
    with pytest.raises(ValueError, match="scale must be 'paper' or 'test'"):
        tool.notebook_parameters("06_cnn", "big")


# --- make notebook (issue 32): parameter names checked first, the previous run kept until the new one succeeds ---
def tiny_notebook(folder: Path, name: str = "09_tiny") -> Path:
    """A notebook with a parameters cell (n_subnetworks, seeds, out_dir) and a cell that checks n_subnetworks > 0 and
    writes metrics.json and a printed line into out_dir, as the real notebooks do."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell("n_subnetworks = 5\nseeds = [0, 1]\nout_dir = 'figures/09_tiny'")
    params.metadata["tags"] = ["parameters"]
    work = nbformat.v4.new_code_cell(
        "assert n_subnetworks > 0, f'n_subnetworks must be positive, got {n_subnetworks}'\n"
        "import json, pathlib\n"
        "from l3d.report.results import resolve_out_dir\n"
        "out = resolve_out_dir(out_dir)\n"
        "out.mkdir(parents=True, exist_ok=True)\n"
        "(out / 'metrics.json').write_text(json.dumps({'n_subnetworks': n_subnetworks, 'seeds': seeds, "
        "'settings': {'out_dir': out_dir}}))\n"
        "print('wrote', out_dir)")
    nb.cells = [params, work]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.ipynb"
    nbformat.write(nb, path)
    return path


def test_a_misspelled_parameter_is_refused_before_any_work_naming_the_nearest(tmp_path, capsys):
    notebook = tiny_notebook(tmp_path / "notebooks")
    with pytest.raises(tool.ParameterError, match=r"09_tiny has no parameter 'n_subnetwork' \(did you mean "
                                                  r"'n_subnetworks'\?\); nothing was run"):
        tool.check_parameters(notebook, ["seeds", "n_subnetwork"])
    with pytest.raises(tool.ParameterError, match=r"no parameters 'sed' \(did you mean 'seeds'\?\), 'zzz';"):
        tool.check_parameters(notebook, ["sed", "zzz"])
    tool.check_parameters(notebook, ["seeds", "out_dir"])   # known names pass

    def never(*args, **kwargs):
        pytest.fail("papermill ran despite the misspelled parameter")

    with pytest.raises(SystemExit) as exit:
        tool.run_notebook("09", ["-p", "n_subnetwork", "10"], runs=tmp_path / "runs", folder=tmp_path / "notebooks",
                          execute=never)
    assert exit.value.code == 2 and not (tmp_path / "runs").exists()
    line, = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: 09_tiny has no parameter 'n_subnetwork' (did you mean 'n_subnetworks'?)")


def test_parameters_are_read_as_papermill_reads_them():
    assert tool.parse_parameters(["-p", "a", "10", "-p", "b", "0.5", "-p", "c", "True", "-p", "d", "None",
                                  "-p", "e", "[0, 1]", "-r", "f", "10", "-y", "g: [1, 2]", "-p", "a", "11"]) == {
        "a": 11, "b": 0.5, "c": True, "d": None, "e": "[0, 1]", "f": "10", "g": [1, 2]}
    for bad in (["-p", "a"], ["--seed", "1"], ["-y", "[1, 2]"]):
        with pytest.raises(tool.ParameterError, match="PARAMS takes -p NAME VALUE|must give a mapping"):
            tool.parse_parameters(bad)


def fake_papermill(fail: bool = False):
    """papermill.execute_notebook's stand-in: writes what a notebook writes into its out_dir (taken from the
    repository root when relative, as resolve_out_dir does), then fails when asked."""
    calls = []

    def execute(notebook, output, parameters, cwd, **options):
        calls.append({"parameters": parameters, "progress": os.environ.get("L3D_PROGRESS")})
        out = Path(parameters["out_dir"])
        out = out if out.is_absolute() else tool.ROOT / out
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_code_cell("print(out_dir)", outputs=[
            nbformat.v4.new_output("stream", name="stdout", text=f"dashboard: {out}/dashboard/index.html\n")])]
        nb.metadata["papermill"] = {"parameters": parameters}
        nbformat.write(nb, output)
        (out / "metrics.json").write_text(json.dumps({"run": "new", "settings": {"out_dir": parameters["out_dir"]}}))
        if fail:
            raise RuntimeError("a cell failed")

    return execute, calls


def test_a_new_run_replaces_the_previous_one_only_when_it_succeeds(tmp_path, capsys):
    tiny_notebook(tmp_path / "notebooks")
    runs = tmp_path / "runs"
    (runs / "09_tiny").mkdir(parents=True)
    (runs / "09_tiny" / "metrics.json").write_text('{"run": "old"}')
    (runs / "09_tiny" / "stale.png").write_bytes(b"old figure")
    before = {p.name: p.read_bytes() for p in (runs / "09_tiny").iterdir()}

    failing, _ = fake_papermill(fail=True)
    with pytest.raises(SystemExit) as exit:
        tool.run_notebook("09", ["-p", "seeds", "[0]"], runs=runs, folder=tmp_path / "notebooks", execute=failing)
    assert exit.value.code == 1
    assert {p.name: p.read_bytes() for p in (runs / "09_tiny").iterdir()} == before        # the old run, untouched
    partial = runs / ".09_tiny.partial"
    assert (partial / "09_tiny.ipynb").is_file() and json.loads((partial / "metrics.json").read_text())["run"] == "new"
    line, = capsys.readouterr().err.strip().splitlines()
    assert line == (f"09_tiny failed (RuntimeError: a cell failed): the previous run is kept in {runs / '09_tiny'}/; "
                    f"the failed run, its executed notebook up to the error, is in {partial}/")

    working, calls = fake_papermill()
    progress = os.environ.get("L3D_PROGRESS")
    final = tool.run_notebook("09", ["-p", "seeds", "[0]", "-p", "n_subnetworks", "3"], runs=runs,
                              folder=tmp_path / "notebooks", execute=working)
    assert final == runs / "09_tiny" and not partial.exists() and not (runs / ".09_tiny.previous").exists()
    assert sorted(p.name for p in final.iterdir()) == ["09_tiny.ipynb", "metrics.json"]   # the old figure went with it
    assert calls[0]["parameters"] == {"seeds": "[0]", "n_subnetworks": 3, "out_dir": str(partial.resolve())}
    assert calls[0]["progress"] == "text" and os.environ.get("L3D_PROGRESS") == progress   # set for the run only
    # what the notebook recorded and printed names the folder the run now lies in
    assert json.loads((final / "metrics.json").read_text())["settings"]["out_dir"] == str(final.resolve())
    text = (final / "09_tiny.ipynb").read_text()
    assert str(partial.resolve()) not in text and f"dashboard: {final.resolve()}/dashboard/index.html" in text
    assert capsys.readouterr().out.strip() == f"outputs: {final}/ (figures, metrics.json, the executed notebook " \
                                              f"09_tiny.ipynb)"


@pytest.mark.slow
def test_make_notebooks_run_executes_a_real_notebook_with_its_parameters(tmp_path, capsys):
    tiny_notebook(tmp_path / "notebooks")
    runs = tmp_path / "runs"
    final = tool.run_notebook("09_tiny", ["-p", "n_subnetworks", "7"], runs=runs, folder=tmp_path / "notebooks")
    metrics = json.loads((final / "metrics.json").read_text())
    assert metrics == {"n_subnetworks": 7, "seeds": [0, 1], "settings": {"out_dir": str(final.resolve())}}
    executed = nbformat.read(final / "09_tiny.ipynb", as_version=4)
    assert executed.cells[-1].outputs[0]["text"] == f"wrote {final.resolve()}\n"
    with pytest.raises(SystemExit) as exit:   # a cell fails: the run above stays, the error is named
        tool.run_notebook("09_tiny", ["-p", "n_subnetworks", "-1"], runs=runs, folder=tmp_path / "notebooks")
    assert exit.value.code == 1
    assert json.loads((final / "metrics.json").read_text())["n_subnetworks"] == 7
    assert ("09_tiny failed in cell [3] (AssertionError: n_subnetworks must be positive, got -1)"
            in capsys.readouterr().err)


def test_the_small_parameters_of_make_test_are_parameters_of_their_notebooks(monkeypatch, tmp_path):
    for notebook in tool.notebooks():
        tool.parameters(notebook.stem)                    # every name in test_parameters.json is known
    (tmp_path / "notebooks").mkdir()
    shutil.copy(tool.ROOT / "notebooks" / "06_cnn.ipynb", tmp_path / "notebooks")
    (tmp_path / "notebooks" / "test_parameters.json").write_text('{"06_cnn": {"n_subnetwork": 6}}')
    monkeypatch.setattr(tool, "ROOT", tmp_path)
    with pytest.raises(tool.ParameterError, match=r"06_cnn has no parameter 'n_subnetwork' \(did you mean "
                                                  r"'n_subnetworks'\?\) in notebooks/test_parameters.json"):
        tool.parameters("06_cnn")
