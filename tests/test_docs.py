"""tools/docs.py (make docs) and the README: every number in docs/ and in the README's results table is written from
figures/*/metrics.json, regenerating changes nothing, a changed or missing number shows, links resolve, and the
README's first run and library example are what the code prints and runs."""
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from l3d.examples import SNIPPET
from l3d.report.headlines import flatten
from l3d.report.tolerances import TOLERANCES

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "docs.py"
spec = importlib.util.spec_from_file_location("docs_tool", TOOL)
docs = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = docs   # dataclasses look their module up by name
spec.loader.exec_module(docs)

DOCS = sorted((ROOT / "docs").glob("*.md"))
MARKDOWN = [ROOT / "README.md", *DOCS]


def copy_checkout(target: Path) -> Path:
    """What make docs reads and writes, copied: README.md, docs/, the notebooks, every metrics.json, the benchmark
    results; the executed notebooks and benchmark figures as empty files of the same names (the docs link them)."""
    shutil.copy(ROOT / "README.md", target / "README.md")
    shutil.copytree(ROOT / "docs", target / "docs")
    shutil.copytree(ROOT / "benchmarks" / "results", target / "benchmarks" / "results")
    (target / "notebooks").mkdir()
    for notebook in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"):
        shutil.copy(notebook, target / "notebooks" / notebook.name)
    for folder in (ROOT / "figures").iterdir():
        if not folder.is_dir():
            continue
        (target / "figures" / folder.name).mkdir(parents=True)
        for path in [folder / "metrics.json", *folder.glob("*.ipynb"), *folder.glob("*.png")]:
            if path.is_file():
                destination = target / "figures" / folder.name / path.name
                shutil.copy(path, destination) if path.name == "metrics.json" else destination.touch()
    return target


def generated_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in [root / "README.md", *(root / "docs").glob("*.md")]}


def run_tool(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TOOL), "--root", str(root), *args], capture_output=True, text=True,
                          timeout=600)


# --- the "must show" ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_make_docs_on_the_committed_figures_changes_nothing_and_twice_gives_the_same_bytes(tmp_path):
    root = copy_checkout(tmp_path)
    before = generated_files(root)
    first = run_tool(root)
    assert first.returncode == 0, first.stderr
    after = generated_files(root)
    changed = sorted(name for name in before if before[name] != after[name])
    assert not changed, f"make docs changes {changed}: run `make docs` and commit the result"
    assert "docs: up to date" in first.stdout
    assert run_tool(root, "--check").returncode == 0
    assert generated_files(root) == after


def test_a_changed_number_in_a_metrics_json_changes_the_readme_and_the_docs(tmp_path, capsys):
    root = copy_checkout(tmp_path)
    path = root / "figures" / "02_circuit_superposition" / "metrics.json"
    metrics = json.loads(path.read_text())
    metrics["median"]["paper_r"] = 0.123456                       # no seed's row has it: per seed shows "—"
    metrics.pop("range", None)
    path.write_text(json.dumps(metrics))
    before = generated_files(root)
    assert docs.main(["--root", str(root), "--check"]) == 1        # --check names what would change, writes nothing
    assert generated_files(root) == before
    assert docs.main(["--root", str(root)]) == 0
    after = generated_files(root)
    assert sorted(n for n in before if before[n] != after[n]) == ["README.md", "docs/known-gaps.md", "docs/results.md"]
    row = next(line for line in after["README.md"].decode().splitlines() if line.startswith("| [02"))
    assert row.endswith("<br>0.123 |")                             # the median, no range without the seeds' rows
    results = after["docs/results.md"].decode()
    assert "| `paper_r` (the paper's \"r²\") | `median/paper_r` | 0.123 | — | ±0.01 |" in results
    assert "`paper_r` <!-- generated: spread 02_circuit_superposition median/paper_r -->0.123<!-- end -->" in \
        after["docs/known-gaps.md"].decode()


def test_a_missing_metrics_json_or_key_gives_a_dash_and_a_message_not_a_crash(tmp_path, capsys):
    root = copy_checkout(tmp_path)
    (root / "figures" / "05_transformer" / "metrics.json").unlink()
    path = root / "figures" / "02_circuit_superposition" / "metrics.json"
    metrics = json.loads(path.read_text())
    del metrics["median"]["paper_r"]
    path.write_text(json.dumps(metrics))
    capsys.readouterr()
    assert docs.main(["--root", str(root)]) == 0
    err = capsys.readouterr().err
    assert "docs: 05_transformer: no figures/05_transformer/metrics.json (its numbers are shown as —)" in err
    assert "docs: 02_circuit_superposition: metrics.json has no headline number median/paper_r (shown as —)" in err
    readme = (root / "README.md").read_text()
    row05 = next(line for line in readme.splitlines() if line.startswith("| [05"))
    assert row05.endswith("| —<br>—<br>— |")                      # all three of 05's numbers
    row02 = next(line for line in readme.splitlines() if line.startswith("| [02"))
    assert row02.endswith("<br>— |")                               # paper_r, the second of 02's numbers
    results = (root / "docs" / "results.md").read_text()
    assert "| `paper_r` (the paper's \"r²\") | `median/paper_r` | — | — | ±0.01 |" in results
    section05 = results.split("## 05_transformer")[1].split("\n## ")[0]
    assert "| reconstruction error | `reconstruction_error` | — | ±0.005 |" in section05


def test_the_readme_states_make_figures_time_from_its_benchmark_record(tmp_path, capsys):
    """`benchmark FILE PATH` regions: README.md's make figures time and load come from
    benchmarks/results/make_figures_cpu.json; a missing key is a dash and a message."""
    root = copy_checkout(tmp_path)
    path = root / "benchmarks" / "results" / "make_figures_cpu.json"
    record = json.loads(path.read_text())
    record["wall_minutes"], record["load_average_during"] = 12.3, "9.9-9.9"
    path.write_text(json.dumps(record))
    assert docs.main(["--root", str(root)]) == 0
    readme = (root / "README.md").read_text()
    assert "<!-- generated: benchmark make_figures_cpu wall_minutes -->12.3<!-- end -->" in readme
    assert "<!-- generated: benchmark make_figures_cpu load_average_during -->9.9-9.9<!-- end -->" in readme
    del record["wall_minutes"]
    path.write_text(json.dumps(record))
    capsys.readouterr()
    assert docs.main(["--root", str(root)]) == 0
    assert "benchmarks/results/make_figures_cpu.json has no wall_minutes (shown as —)" in capsys.readouterr().err
    readme = (root / "README.md").read_text()
    assert "<!-- generated: benchmark make_figures_cpu wall_minutes -->—<!-- end -->" in readme


def test_an_unknown_generated_region_stops_the_tool_before_anything_is_written(tmp_path, capsys):
    root = copy_checkout(tmp_path)
    marker = "<!-- generated: spred 02_circuit_superposition median/paper_r -->"   # a misspelled kind
    (root / "docs" / "extra.md").write_text(f"a {marker}<!-- end -->\n")
    (root / "figures" / "02_circuit_superposition" / "metrics.json").write_text('{"median": {"paper_r": 0.5}}')
    before = generated_files(root)
    assert docs.main(["--root", str(root)]) == 2
    assert f"docs/extra.md: {marker}: unknown kind" in capsys.readouterr().err
    assert generated_files(root) == before


# --- per-seed numbers, ranges and counts, on metrics shaped as the notebooks write them ----------------------
def test_per_seed_rows_are_found_by_their_group_and_shown_only_when_their_median_is_the_stored_one():
    rows = [{"seed": s, "rank": r, "loss": loss, "n_live": live, "reconstruction_error": err}
            for s, r, loss, live, err in [(0, 3, "silence", 6, 0.16), (1, 3, "silence", 6, 0.15),
                                          (2, 3, "silence", 7, 0.17), (0, 3, "paper", 7, 0.13),
                                          (1, 3, "paper", 9, 0.12), (2, 3, "paper", 8, 0.14),
                                          (0, 1, "silence", 6, 0.20), (1, 1, "silence", 6, 0.21),
                                          (2, 1, "silence", 6, 0.22)]]
    metrics = {"median": {"3": {"reconstruction_error": 0.16, "n_live": 6.0, "all_clean_seeds": 2},
                          "1": {"reconstruction_error": 0.21}},
               "median_paper_loss": {"3": {"reconstruction_error": 0.13, "n_live": 8.0}},
               "range_paper_loss": {"3": {"reconstruction_error": [0.11, 0.15]}},
               "per_seed": rows}
    assert docs.seed_values(metrics, "median/3/reconstruction_error") == [(0, 0.16), (1, 0.15), (2, 0.17)]
    assert docs.seed_values(metrics, "median_paper_loss/3/n_live") == [(0, 7), (1, 9), (2, 8)]
    assert docs.show_spread(metrics, "median/3/reconstruction_error") == "0.160 (0.150–0.170)"   # from the rows
    assert docs.show_spread(metrics, "median_paper_loss/3/reconstruction_error") == "0.130 (0.110–0.150)"   # stored
    assert docs.show_seeds(metrics, "median/1/reconstruction_error") == "0.200 / 0.210 / 0.220"
    assert docs.show_spread(metrics, "median_paper_loss/3/n_live") == "8 (7–9)"
    assert docs.show_count(metrics, "median/3/all_clean_seeds") == "2 of 3"                   # the group's 3 seeds
    metrics["median"]["3"]["reconstruction_error"] = 0.155                                      # not the rows' median
    assert docs.seed_values(metrics, "median/3/reconstruction_error") is None
    assert docs.show_seeds(metrics, "median/3/reconstruction_error") == "—"
    assert docs.show_spread(metrics, "median/3/reconstruction_error") == "0.155"


def test_rows_of_another_list_settings_by_cxr_and_toy_and_the_field_summary():
    metrics = {
        "median": {"5x2": {"authors": {"min_impact_share": 0.78, "all_matched_seeds": 3},
                           "paper_text": {"min_impact_share": 0.49}}},
        "per_seed": [{"seed": s, "variant": "authors", "n_subnetworks": c, "rank": r, "min_impact_share": p}
                     for s, c, r, p in [(0, 5, 2, 0.72), (1, 5, 2, 0.81), (2, 5, 2, 0.78), (0, 5, 1, 0.1)]],
        # saved before the rename on purpose (as the committed figures/04): the list "other_toy", the variant "toy"
        "other_toy": [{"seed": s, "toy": "paper_text", "n_subnetworks": 5, "rank": 2, "min_impact_share": p}
                      for s, p in [(0, 0.49), (1, 0.63), (2, 0.05)]],
        "summary": {"40-10 refit": {"median": 0.9997, "min": 0.9996, "max": 0.9998, "ml2r_median": 0.995,
                                    "success": 4, "seeds": 5}},
    }
    assert docs.show_seeds(metrics, "median/5x2/authors/min_impact_share") == "0.72 / 0.81 / 0.78"
    assert docs.show_seeds(metrics, "median/5x2/paper_text/min_impact_share") == "0.49 / 0.63 / 0.05"
    assert docs.show_count(metrics, "median/5x2/authors/all_matched_seeds") == "3 of 3"
    assert docs.show_spread(metrics, "summary/40-10 refit/median") == "0.9997 (0.9996–0.9998)"
    assert docs.show_count(metrics, "summary/40-10 refit/success") == "4 of 5"
    assert docs.show_spread(metrics, "summary/40-10 refit/ml2r_median") == "0.995"   # no rows, no range stored
    assert docs.label("summary/40-10 refit/median") == "MMCS, TMS 40-10, refitted"
    assert docs.label("median/5x2/authors/min_impact_share") == "lowest impact share (5 × rank 2, the authors' toy)"
    assert docs.show_value(metrics, "median/5x2/authors/nothing") == "—"


def test_the_readme_rows_name_headline_numbers_and_published_numbers_that_exist():
    from l3d.experiments import published

    for notebook, rows in docs.README_ROWS.items():
        assert notebook in TOLERANCES, notebook
        for shown in rows:
            assert docs.first_pattern(shown.path, TOLERANCES[notebook]["paper"]) is not None, \
                f"{notebook}: {shown.path} is no paper-scale headline number in l3d/report/tolerances.py"
            for source, names in shown.published.items():
                names = (names,) if isinstance(names, str) else names
                assert any(n in e.numbers for e in published.entries(notebook) if e.source == source for n in names), \
                    f"{notebook}: {source} publishes none of {names}"


def test_a_published_number_in_another_setting_is_marked_with_the_settings_that_differ():
    shown = docs.Shown("median/reconstruction_error", "error", {"paper": "reconstruction_error"})
    five = {"n_features": 5, "n_hidden": 2, "l3d": {"n_subnetworks": 5, "rank": 1, "top_k": 0.1}}
    assert docs.published_cell("01_toy_model_of_superposition", shown, five) == "the paper: 0.19"
    eight = {**five, "n_features": 8}
    assert docs.published_cell("01_toy_model_of_superposition", shown, eight) == \
        "the paper: 0.19 (another setting: n_features)"


# --- links, the README's example and first run ----------------------------------------------------------------
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def slugs(markdown: str) -> set[str]:
    """The anchors GitHub gives a file's headings."""
    return {re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
            for line in markdown.splitlines() if line.startswith("#")}


def test_every_relative_link_in_the_readme_and_docs_points_to_an_existing_file_and_heading():
    broken = []
    for page in MARKDOWN:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
        for target in LINK.findall(text):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and file.suffix == ".md" and anchor not in slugs(file.read_text()):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)
    assert len(DOCS) >= 9                                           # the docs the README links exist


def test_the_readme_shows_the_library_example_the_tests_run():
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    assert SNIPPET in blocks


def test_the_readme_is_at_most_2000_words_outside_code_blocks():
    text = re.sub(r"```.*?```", "", (ROOT / "README.md").read_text(), flags=re.S)
    assert len(re.sub(r"<!--.*?-->", "", text, flags=re.S).split()) <= 2000


def test_hand_written_prose_types_no_number_that_a_metrics_json_holds():
    """Outside generated regions and code blocks, no number a metrics.json holds under a name (not the history,
    settings or lists), as the docs show it with three or four decimals, may be typed by hand; a threshold or
    target (after ≥, ≤, <, >) may."""
    shown = set()
    for path in (ROOT / "figures").glob("*/metrics.json"):
        metrics = json.loads(path.read_text())
        for key, value in flatten(metrics).items():
            parts = key.split("/")
            if {"history", "settings", "environment"} & set(parts) or parts[-1].isdigit():
                continue
            form = docs.digits(key)
            if isinstance(value, float) and isinstance(form, int) and form >= 3:
                shown.add(docs.fmt(value, form))
    typed = []
    for page in MARKDOWN:
        if page.relative_to(ROOT).as_posix() in docs.WHOLE_FILES:
            continue
        prose = re.sub(r"```.*?```|<!-- generated:.*?<!-- end -->", "", page.read_text(), flags=re.S)
        typed += [f"{page.relative_to(ROOT)}: {n}" for n in re.findall(r"(?<![\d.≥≤<>] )(?<![\d.])\d+\.\d{3,4}(?!\d)",
                                                                        prose) if n in shown]
    assert not typed, "numbers typed by hand that metrics.json holds (use a generated region):\n" + "\n".join(typed)


@pytest.mark.slow
def test_the_readme_first_run_is_what_make_quickstart_prints(tmp_path):
    """`make quickstart` runs the quickstart into runs/quickstart, and its output is the README's block: the same
    lines, every number within 0.02 (the last printed digit may differ on another CPU)."""
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(
        r"^quickstart: .*\n\t\$\(PY\) -m l3d\.examples\.quickstart --out runs/quickstart$", makefile, flags=re.M)
    readme = (ROOT / "README.md").read_text()
    assert "```bash\nmake quickstart\n```" in readme
    expected = readme.split("```bash\nmake quickstart\n```", 1)[1].split("```\n", 1)[1].split("```", 1)[0]
    done = subprocess.run([sys.executable, "-m", "l3d.examples.quickstart", "--out", "runs/quickstart"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    number = re.compile(r"\d+\.\d+")
    got, want = done.stdout.splitlines(), expected.splitlines()
    assert [number.sub("#", line) for line in got] == [number.sub("#", line) for line in want]
    for line_got, line_want in zip(got, want, strict=True):
        for a, b in zip(number.findall(line_got), number.findall(line_want), strict=True):
            assert abs(float(a) - float(b)) <= 0.02, (line_got, line_want)
