"""tools/notebooks.py: figures into executed notebooks, the table make figures ends with, the notebooks under test."""
import importlib.util
import json
import os
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
    assert [[o["data"]["text/plain"] for o in c.outputs] for c in cells] == [["<figure a.png>"], ["<figure b.png>", "<figure c.png>"]]


# --- make figures' last step: the headline numbers now against the committed ones ----------------------------
from l3d.report.headlines import Tolerance, exact  # noqa: E402


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
        ("01_a", "median/error", 0.30, 0.305, True), ("01_a", "seeds", 3, 2, False), ("02_b", "error", 0.5, 0.52, False)]
    report = tool.comparison_report(rows, notes)
    assert "| 01_a | seeds | 3 | 2 | exact | NO |" in report and "| 01_a | median/error | 0.3 | 0.305 | ±0.01 | yes |" in report
    assert report.endswith("NOT reproduced: 2 of 3 headline numbers are outside their tolerance: 01_a seeds, 02_b error")


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
    assert notes == ["01_a: figures/01_a/metrics.json is not committed, so there are no committed numbers to compare with"]
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
