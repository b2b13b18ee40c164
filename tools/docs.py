"""Every number in docs/ and in README.md's results table, written from figures/*/metrics.json and
benchmarks/results/*.json, never typed by hand: `make docs`, also the last step of `make figures`.

    python tools/docs.py              # write what changed: the generated regions of README.md and docs/*.md,
                                      # docs/results.md and docs/performance.md whole
    python tools/docs.py --check      # write nothing; name each file `make docs` would change (exit status 1 if any)
    python tools/docs.py --root DIR   # another checkout (the tests regenerate a copy)

Where the numbers come from, each in one place:
- which numbers of a notebook are its headline numbers, and how far each may move on another machine:
  l3d/report/headlines.py (TOLERANCES[notebook]["paper"], patterns of key paths into its metrics.json);
- the paper's, the authors' code's and the peers' numbers: l3d/experiments/published.py, set beside ours only
  where the run's settings (metrics.json's "settings") are those the numbers were measured in; otherwise the
  table says which settings differ;
- ours: figures/<notebook>/metrics.json, as the notebook wrote it.
This tool only decides how they are shown. README_ROWS picks which headline numbers the README's one table
shows for each notebook (a notebook without an entry shows its first two), each with the published numbers
that go beside it.

Generated regions: in README.md and docs/*.md, whatever lies between `<!-- generated: KIND ARGS -->` and
`<!-- end -->` is written by this tool (edit the tool, or the prose around the markers, never the inside).
Block kinds, on lines of their own:
    results                     the README's table: one row per notebook, published numbers against ours
    field                       notebook 07: per benchmark setting, APD and SPD against L3D
Inline kinds, inside a sentence (NB: a notebook's name; PATH: a key path into its metrics.json, keys joined by
"/", as in headlines.py):
    value NB PATH               the number                                  0.904
    spread NB PATH              the median and its range over seeds         0.904 (0.850–0.949)
    seeds NB PATH               one number per seed, in seed order          0.949 / 0.904 / 0.850
    count NB PATH               a count with what it counts out of          3 of 3
    published NB SOURCE NAME    a number of l3d.experiments.published       0.92
A number the files do not hold is written "—" and named on stderr; that never stops the tool (exit status 0).
An unknown kind or wrong arguments stop it before anything is written (exit status 2).

Per-seed numbers and ranges. A headline number under a "median…" key (median/paper_r, median_paper_loss/3/n_live,
like_authors/median/…) is a median over the per-seed rows the notebook stored beside it (every list of rows with a
"seed" at the same level: per_seed, other_toy), those of its group: a group key is a row's rank ("3"), toy
("authors"), benchmark setting, or "CxR" (n_subnetworks x rank); "median_X_loss" takes the rows decomposed with
loss X, plain "median" the others. 07's summary/<setting>/<stat> takes the rows of that setting. The rows'
numbers are shown only when their median is the stored median (to 1e-9), so a row picked wrongly shows "—", never
a wrong number. The range is the notebook's own "range…" entry where it wrote one ([min, max]; 07: min/max),
else the rows' min and max. A count of seeds ("…_seeds", "seeds_with_…", 07's "success") is shown "k of n", n
from the notebook's n_seeds (07: seeds; stability: n_seeds or n_checked), else the number of rows in its group.

Deterministic: the same files give the same bytes (no dates, no absolute paths, metrics.json's key order kept).
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from l3d.experiments import published
from l3d.report.headlines import TOLERANCES, Tolerance, flatten, tolerance_for
from l3d.runtime.medians import median

ROOT = Path(__file__).resolve().parents[1]
DASH = "—"
MISSING = object()
WHOLE_FILES = ("docs/results.md", "docs/performance.md")   # written whole; every other .md only in its regions
REGION = re.compile(r"<!-- generated: (?P<spec>[^>]*?) -->(?P<body>.*?)<!-- end -->", re.S)
GENERATED_NOTE = ("<!-- Written by tools/docs.py (make docs) from {sources}; edit the tool, not this file. -->")


@dataclass(frozen=True)
class Shown:
    """One headline number in the README's table: its key path, how the table names it, the published numbers
    beside it ({source: name in published.PUBLISHED, or several names to take the first the entry has}), and
    settings to add to the run's before comparing (07's benchmark setting, which its runs hold per row)."""

    path: str
    label: str
    published: Mapping[str, str | tuple[str, ...]] = field(default_factory=dict)
    setting: Mapping[str, object] = field(default_factory=dict)


README_ROWS: dict[str, list[Shown]] = {
    "01_toy_model_of_superposition": [
        Shown("median/reconstruction_error", "reconstruction error",
              {"paper": "reconstruction_error", "authors_code": "reconstruction_errors"}),
        Shown("seeds_with_all_features_recovered", "seeds with every feature recovered",
              {"authors_code": "seeds_with_all_features_recovered"}),
    ],
    "02_circuit_superposition": [
        Shown("median/reconstruction_error", "reconstruction error",
              {"paper": "reconstruction_error", "authors_code": "reconstruction_error"}),
        Shown("median/paper_r", "`paper_r` (the paper's \"r²\")", {"paper": "paper_r", "authors_code": "paper_r"}),
    ],
    "03_high_rank_circuits": [
        Shown("median_paper_loss/3/n_live", "live subnetworks (rank 3, the paper's loss)",
              {"paper": ("figure_s6_n_live", "n_live")}),
        Shown("median_paper_loss/3/all_clean_seeds", "seeds with a clean subnetwork for every group",
              {"authors_code": "every_group_clean"}),
        Shown("median/3/one_per_group_seeds", "with our silence penalty: one live subnetwork per group"),
    ],
    "04_complex_loss_landscape": [
        Shown("median/5x2/authors/reconstruction_error", "reconstruction error (5 × rank 2)",
              {"paper": "reconstruction_error_5x2", "authors_code": "reconstruction_error_5x2"}),
        Shown("median/5x2/authors/one_per_circuit_seeds", "seeds with one subnetwork per input",
              {"paper": "one_subnetwork_per_input", "authors_code": "one_subnetwork_per_input"}),
    ],
    "05_transformer": [
        Shown("reconstruction_error", "reconstruction error", {"paper": "reconstruction_error"}),
        Shown("patterns_owned", "corpus patterns with a subnetwork of their own"),
        Shown("causal/median_ratio", "causal selectivity: median KL ratio, own tokens / others"),
    ],
    "06_cnn": [
        Shown("reconstruction_error", "reconstruction error", {"paper": "reconstruction_error"}),
        Shown("dead_fraction", "dead subnetworks", {"paper": "dead_fraction"}),
        Shown("classes_owned", "digits with a subnetwork of their own"),
        Shown("resampled/dead_fraction", "dead subnetworks, with our resampling"),
        Shown("causal/median_ratio", "causal selectivity: median KL ratio, own images / others"),
    ],
    "08_whole_model": [
        Shown("whole/test_error", "held-out reconstruction error, whole model"),
        Shown("per_layer/test_error", "held-out reconstruction error, one decomposition per layer"),
        Shown("causal/whole/median_ratio", "causal selectivity: median KL ratio, own tokens / others"),
        Shown("causal/whole/random_median_ratio", "the same for random directions of the same ranks"),
    ],
    "07_field_benchmarks": [
        Shown("summary/40-10 refit/median", "MMCS, TMS 40-10 (refitted)", {"APD": "mmcs", "SPD": "mmcs"},
              {"benchmark": "40-10"}),
        Shown("summary/40-10 refit/ml2r_median", "ML2R, TMS 40-10 (refitted)", {"APD": "ml2r", "SPD": "ml2r"},
              {"benchmark": "40-10"}),
        Shown("summary/40-10/median", "MMCS, TMS 40-10 (as trained)", {"APD": "mmcs", "SPD": "mmcs"},
              {"benchmark": "40-10"}),
    ],
}

# How a key is named in the tables (the last key of a path; 07's summary statistics by their own names).
LABELS = {
    "reconstruction_error": "reconstruction error",
    "test_reconstruction_error": "reconstruction error, held out",
    "mmcs": "MMCS",
    "intervention_selectivity": "intervention selectivity",
    "median_min_feature_cosine": "worst feature's |cos|",
    "seeds_with_all_features_recovered": "seeds with every feature recovered",
    "n_seeds": "seeds",
    "paper_r": "`paper_r` (the paper's \"r²\")",
    "r2": "r² of the subnetworks' paths against A",
    "min_purity": "lowest purity",
    "all_matched_seeds": "seeds with every input matched",
    "one_per_circuit_seeds": "seeds with one subnetwork per input",
    "n_live": "live subnetworks",
    "clean_groups": "groups with a clean subnetwork",
    "one_per_group_seeds": "seeds with one live subnetwork per group",
    "all_clean_seeds": "seeds with every group clean",
    "n_dead": "dead subnetworks",
    "dead_fraction": "dead subnetworks",
    "mean_purity": "mean pattern purity",
    "patterns_owned": "corpus patterns with a subnetwork of their own",
    "mean_class_purity": "class purity of top images",
    "classes_owned": "digits with a subnetwork of their own",
    "n_changed": "stability check: outcome changed",
    "changed_rate": "stability check: reruns that changed the outcome",
    "circuit_aligned_error": "one best direction per input, error left",
    "aligned_reconstruction_error": "trained with the labels: error",
    "aligned_then_paper_reconstruction_error": "then the paper's loss: error",
}
SUMMARY_LABELS = {"median": "MMCS", "ml2r_median": "ML2R", "success": "seeds with every feature recovered",
                  "reconstruction_error_median": "reconstruction error",
                  "fewest_recovered": "fewest features recovered"}
SUMMARY_ROW_KEYS = {"median": "mmcs"}   # 07's summary calls the MMCS median "median"; its rows call it "mmcs"


# --- reading -------------------------------------------------------------------------------------
class Notes:
    """What the docs lack, each said once, printed to stderr at the end."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, line: str) -> None:
        if line not in self.lines:
            self.lines.append(line)


class Sources:
    """The files the docs are written from, read once each."""

    def __init__(self, root: Path, notes: Notes) -> None:
        self.root, self.notes = root, notes
        self._metrics: dict[str, dict | None] = {}

    def notebooks(self) -> list[str]:
        """Every notebook with headline numbers, a metrics.json or a notebook file, in order."""
        names = set(TOLERANCES)
        names |= {p.parent.name for p in (self.root / "figures").glob("[0-9][0-9]_*/metrics.json")}
        names |= {p.stem for p in (self.root / "notebooks").glob("[0-9][0-9]_*.ipynb")}
        return sorted(names)

    def metrics(self, notebook: str) -> dict | None:
        if notebook not in self._metrics:
            path = self.root / "figures" / notebook / "metrics.json"
            found = None
            if not path.is_file():
                self.notes.add(f"{notebook}: no figures/{notebook}/metrics.json (its numbers are shown as {DASH})")
            else:
                try:
                    found = json.loads(path.read_text())
                except (OSError, ValueError) as err:
                    self.notes.add(f"{notebook}: figures/{notebook}/metrics.json could not be read ({err}); its "
                                   f"numbers are shown as {DASH}")
                if found is not None and not isinstance(found, dict):
                    self.notes.add(f"{notebook}: figures/{notebook}/metrics.json is not a JSON object")
                    found = None
            self._metrics[notebook] = found
        return self._metrics[notebook]

    def title(self, notebook: str) -> str:
        """The notebook's title: its first markdown heading without the number ("Toy model of superposition")."""
        path = self.root / "notebooks" / f"{notebook}.ipynb"
        try:
            cells = json.loads(path.read_text())["cells"]
            text = next("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
            heading = text.strip().splitlines()[0].lstrip("#").strip()
        except (OSError, ValueError, KeyError, StopIteration, IndexError):
            return notebook
        return re.sub(r"^\d\d\s*[·.:-]\s*", "", heading) or notebook

    def executed(self, notebook: str) -> str | None:
        """The executed notebook's path, relative to the root, where there is one."""
        path = f"figures/{notebook}/{notebook}.ipynb"
        return path if (self.root / path).is_file() else None


def lookup(tree, path: str | Sequence[str]):
    """The value at key path `path` ("a/b/0") of nested dicts and lists, or MISSING."""
    for key in path.split("/") if isinstance(path, str) else path:
        if isinstance(tree, Mapping) and key in tree:
            tree = tree[key]
        elif isinstance(tree, list) and key.isdigit() and int(key) < len(tree):
            tree = tree[int(key)]
        else:
            return MISSING
    return tree


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _rows_beside(container) -> list[dict]:
    """Every row with a "seed" of the lists at one level of metrics.json (per_seed, other_toy, …)."""
    if not isinstance(container, Mapping):
        return []
    return [row for value in container.values() if isinstance(value, list) for row in value
            if isinstance(row, Mapping) and "seed" in row]


def _groups(row: Mapping) -> set[str]:
    """The group keys a per-seed row belongs to: its rank, toy, benchmark setting and CxR."""
    found = {str(row[k]) for k in ("rank", "toy", "setting") if k in row}
    if "n_subnetworks" in row and "rank" in row:
        found.add(f"{row['n_subnetworks']}x{row['rank']}")
    return found


def seed_rows(metrics: Mapping, path: str) -> tuple[list[Mapping], str | None]:
    """The per-seed rows a headline number at `path` summarizes, and the key its number has in them (None for a
    count); ([], None) when there are none."""
    parts = path.split("/")
    for i, part in enumerate(parts[:-1]):
        if part.startswith("median"):
            container = lookup(metrics, parts[:i]) if i else metrics
            rows = _rows_beside(container)
            loss = re.fullmatch(r"median_(\w+)_loss", part)
            if loss:
                rows = [r for r in rows if r.get("loss") == loss.group(1)]
            elif any("loss" in r for r in rows):
                claimed = {m.group(1) for k in container for m in [re.fullmatch(r"median_(\w+)_loss", str(k))] if m}
                rows = [r for r in rows if r.get("loss") not in claimed]
            rows = [r for r in rows if all(g in _groups(r) for g in parts[i + 1:-1])]
            return rows, None if is_count(parts[-1]) else parts[-1]
    if len(parts) == 3 and parts[0] == "summary":
        rows = [r for r in _rows_beside(metrics) if r.get("setting") == parts[1]]
        stat = parts[2]
        key = SUMMARY_ROW_KEYS.get(stat, stat[:-len("_median")] if stat.endswith("_median") else None)
        return rows, key
    if len(parts) == 1:
        return _rows_beside(metrics), None
    return [], None


def seed_values(metrics: Mapping, path: str) -> list[tuple[int, float]] | None:
    """(seed, number) of every seed whose row the median at `path` summarizes, in seed order; None unless the rows'
    median is the stored one."""
    stored = lookup(metrics, path)
    rows, key = seed_rows(metrics, path)
    if not _number(stored) or key is None or not rows or not all(_number(r.get(key)) for r in rows):
        return None
    values = sorted((r["seed"], r[key]) for r in rows)
    if len({s for s, _ in values}) != len(values):
        return None
    if abs(median(v for _, v in values) - stored) > 1e-9 * max(1.0, abs(stored)):
        return None
    return values


def value_range(metrics: Mapping, path: str) -> tuple[float, float] | None:
    """[min, max] over seeds of the number at `path`: the notebook's own range entry, else its rows'."""
    parts = path.split("/")
    for i, part in enumerate(parts[:-1]):
        if part.startswith("median"):
            stored = lookup(metrics, parts[:i] + ["range" + part[len("median"):]] + parts[i + 1:])
            if isinstance(stored, list) and len(stored) == 2 and all(map(_number, stored)):
                return stored[0], stored[1]
            break
    if len(parts) == 3 and parts[0] == "summary":
        base = "" if parts[2] == "median" else parts[2][:-len("median")] if parts[2].endswith("_median") else None
        if base is not None:
            low, high = (lookup(metrics, parts[:2] + [f"{base}{end}"]) for end in ("min", "max"))
            if _number(low) and _number(high):
                return low, high
    values = seed_values(metrics, path)
    return (min(v for _, v in values), max(v for _, v in values)) if values else None


def is_count(key: str) -> bool:
    """Whether a key counts seeds or items out of a known number ("3 of 3")."""
    return (key.endswith("_seeds") and key != "n_seeds" or key.startswith("seeds_with") or key.endswith("_owned")
            or key in ("success", "n_changed"))


def count_of(metrics: Mapping, path: str) -> int | None:
    """What the count at `path` is out of: the notebook's own total beside it, else the rows of its group."""
    parts = path.split("/")
    parent = lookup(metrics, parts[:-1]) if len(parts) > 1 else metrics
    key = parts[-1]
    names = [f"n_{key[:-len('_owned')]}"] if key.endswith("_owned") else ["n_seeds", "seeds", "n_checked"]
    for name in names:
        total = lookup(parent, [name]) if isinstance(parent, Mapping) else MISSING
        if _number(total):
            return int(total)
    if key.endswith("_owned"):
        return None
    rows, _ = seed_rows(metrics, path)
    seeds = {r["seed"] for r in rows}
    return len(seeds) if seeds and len(seeds) == len(rows) else None


# --- showing -------------------------------------------------------------------------------------
def digits(path: str) -> int | str:
    """Decimals a number at `path` is shown with ("%" for a fraction shown in per cent, "int" for a count)."""
    parts = path.split("/")
    key = parts[-1]
    if parts[0] == "summary" and len(parts) == 3:
        key = SUMMARY_ROW_KEYS.get(key, key[:-len("_median")] if key.endswith("_median") else key)
    if is_count(key) or key in ("n_seeds", "fewest_recovered"):
        return "int"
    if key.endswith("fraction") or key.endswith("_rate"):
        return "%"
    if key in ("n_live", "n_dead", "clean_groups"):
        return "g"
    if "selectivity" in key:
        return 1
    if "purity" in key:
        return 2
    if "mmcs" in key or "cos" in key:
        return 4
    return 3


def fmt(value, form: int | str = 3) -> str:
    """One number as the docs show it; "—" for a missing one."""
    if value is MISSING or value is None or (isinstance(value, float) and math.isnan(value)):
        return DASH
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return " / ".join(fmt(v, form) for v in value)
    if isinstance(value, int) and form != "%" or form == "int" and float(value).is_integer():
        return f"{value:.0f}"
    if form == "int":
        return f"{value:g}"
    if form == "%":
        return f"{100 * value:.1f} %".replace(".0 %", " %")
    if form == "g":
        return f"{value:g}"
    return f"{value:.{form}f}"


def show_value(metrics: Mapping | None, path: str) -> str:
    return fmt(lookup(metrics, path) if metrics is not None else MISSING, digits(path))


def show_spread(metrics: Mapping | None, path: str) -> str:
    """"median (min–max)" of a number over seeds; "k of n" for a count; the number alone without a range."""
    if metrics is None or lookup(metrics, path) is MISSING:
        return DASH
    if is_count(path.split("/")[-1]):
        return show_count(metrics, path)
    shown, form = show_value(metrics, path), digits(path)
    span = value_range(metrics, path)
    if span is None or span[0] == span[1]:
        return shown
    return f"{shown} ({fmt(span[0], form)}–{fmt(span[1], form)})"


def show_seeds(metrics: Mapping | None, path: str) -> str:
    """One number per seed ("0.949 / 0.904 / 0.850"); "" for a number that is no median over seeds (a count, one
    run's number), "—" where the number or its rows are missing."""
    if metrics is None or lookup(metrics, path) is MISSING:
        return DASH
    values = seed_values(metrics, path)
    if values:
        return " / ".join(fmt(v, digits(path)) for _, v in values)
    rows, key = seed_rows(metrics, path)
    return DASH if key is not None and rows else ""


def show_count(metrics: Mapping | None, path: str) -> str:
    value = lookup(metrics, path) if metrics is not None else MISSING
    if not _number(value):
        return fmt(value)
    total = count_of(metrics, path)
    return f"{fmt(value, 'int')} of {total}" if total is not None else fmt(value, "int")


def label(path: str) -> str:
    """How a table names the number at `path`: its key's name, then what the keys before it say."""
    parts = path.split("/")
    if parts[0] == "summary" and len(parts) == 3:
        return f"{SUMMARY_LABELS.get(parts[2], parts[2])}, {benchmark(parts[1])}"
    context = []
    for part in parts[:-1]:
        if part == "like_authors":
            context.append("like for like with the authors' code")
        elif part == "single_start":
            context.append("one start")
        elif part.startswith("median_") and part.endswith("_loss"):
            loss = part[len("median_"):-len("_loss")]
            context.append("the paper's loss" if loss == "paper" else f"the {loss} loss")
        elif part in ("median", "stability", "summary", "chance_mmcs"):
            continue
        elif part.isdigit():
            context.append(f"rank {part}")
        elif re.fullmatch(r"\d+x\d+", part):
            context.append("{} × rank {}".format(*part.split("x")))
        elif part in ("authors", "paper_text"):
            context.append({"authors": "the authors' toy", "paper_text": "the paper-text toy"}[part])
        else:
            context.append(part)
    name = "every number" if parts[-1] == "*" else LABELS.get(parts[-1], parts[-1].replace("_", " "))
    if parts[0] == "chance_mmcs":
        name = f"MMCS of random directions, {benchmark(parts[-1])}"
    return f"{name} ({', '.join(context)})" if context else name


def benchmark(setting: str) -> str:
    """07's setting names as prose: "40-10-id refit" -> "TMS 40-10-id, refitted"."""
    words = setting.split()
    base = words[0]
    name = "the residual MLP" if base == "resid-mlp" else f"TMS {base}"
    extra = [{"refit": "refitted", "random": "untrained (a control)"}.get(w, w) for w in words[1:]]
    return ", ".join([name, *extra])


def cell(text: str) -> str:
    """Text safe inside a markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# --- headline numbers ----------------------------------------------------------------------------
def headline_paths(notebook: str, metrics: Mapping | None, notes: Notes) -> list[tuple[str, str | None]]:
    """(pattern, key path) of every paper-scale headline number of `notebook` (l3d/report/headlines.py), in the
    patterns' order and then metrics.json's; (pattern, None) for a pattern nothing in metrics.json matches."""
    patterns = TOLERANCES.get(notebook, {}).get("paper", {})
    depths = {p.count("/") for p in patterns}   # a "*" stands for one key, so a match has its pattern's depth
    flat = [p for p in flatten(metrics) if p.count("/") in depths] if metrics is not None else []
    found: list[tuple[str, str | None]] = []
    for pattern in patterns:
        paths = [p for p in flat if first_pattern(p, patterns) == pattern]
        if not paths and metrics is not None:
            notes.add(f"{notebook}: metrics.json has no headline number {pattern} (shown as {DASH})")
        found += [(pattern, p) for p in paths] or [(pattern, None)]
    return found


def first_pattern(path: str, patterns: Mapping[str, Tolerance]) -> str | None:
    """The first pattern of `patterns` that matches `path` (the one whose tolerance applies)."""
    return next((p for p, t in patterns.items() if tolerance_for(path, {p: t}) is not None), None)


# --- published numbers ---------------------------------------------------------------------------
def published_cell(notebook: str, shown: Shown, settings: Mapping | None) -> str:
    """The published numbers beside one of our headline numbers: "the paper 0.19; the authors' code 0.11 / 0.28 /
    0.15", each marked with the settings that differ where the run's are not the ones they were measured in."""
    try:
        entries = published.entries(notebook)
    except ValueError:
        return DASH if shown.published else "–"
    run = {**(settings or {}), **shown.setting}
    parts = []
    for source, names in shown.published.items():
        names = (names,) if isinstance(names, str) else tuple(names)
        candidates = [e for e in entries if e.source == source and any(n in e.numbers for n in names)]
        if not candidates:
            parts.append(f"{published.SOURCES.get(source, source)}: {DASH}")
            continue
        entry = min(candidates, key=lambda e: len(published.differences(e, run)))
        number = next(entry.numbers[n] for n in names if n in entry.numbers)
        text = f"{published.SOURCES.get(source, source)}: {fmt(number, published_digits(number))}"
        gaps = published.differences(entry, run)
        if gaps:
            text += f" (another setting: {', '.join(sorted({g.split(':')[0].split('.')[-1] for g in gaps}))})"
        parts.append(text)
    return "; ".join(parts) or "–"


def published_digits(number) -> int | str:
    """Published numbers keep the digits they were published with."""
    values = number if isinstance(number, list) else [number]
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return "int"
    return max([2] + [len(repr(float(v)).split(".")[1]) for v in values if _number(v)])


# --- the README's table --------------------------------------------------------------------------
def results_table(sources: Sources) -> str:
    rows = []
    for notebook in sources.notebooks():
        metrics = sources.metrics(notebook)
        shown = README_ROWS.get(notebook)
        if shown is None:
            paths = [p for _, p in headline_paths(notebook, metrics, sources.notes) if p is not None][:2]
            shown = [Shown(p, label(p)) for p in paths]
            if not shown:
                sources.notes.add(f"{notebook}: no headline numbers to show in the README (l3d/report/headlines.py)")
        settings = metrics.get("settings") if isinstance(metrics, Mapping) else None
        for s in shown:
            if metrics is not None and lookup(metrics, s.path) is MISSING:
                sources.notes.add(f"{notebook}: metrics.json has no {s.path} (the README shows {DASH})")
        number, title = notebook[:2], sources.title(notebook)
        executed = sources.executed(notebook)
        name = f"[{number} · {title}]({executed})" if executed else f"{number} · {title}"
        rows.append([name, "<br>".join(s.label for s in shown) or DASH,
                     "<br>".join(published_cell(notebook, s, settings) for s in shown) or "–",
                     "<br>".join(show_spread(metrics, s.path) for s in shown) or DASH])
    return table(["notebook (executed)", "measure", "published", "ours: median (range) over seeds"], rows)


# --- notebook 07's table -------------------------------------------------------------------------
FIELD_HEADER = ["setting", "APD (MMCS / ML2R)", "SPD (MMCS / ML2R)", "L3D MMCS: median (range)",
                "seeds with every feature recovered", "L3D ML2R: median (range)", "reconstruction error"]


def field_table(sources: Sources) -> str:
    notebook = "07_field_benchmarks"
    metrics = sources.metrics(notebook)
    summary = lookup(metrics, "summary") if metrics is not None else MISSING
    if not isinstance(summary, Mapping):
        if metrics is not None:
            sources.notes.add(f"{notebook}: metrics.json has no summary (the field table is empty)")
        return table(FIELD_HEADER, [[DASH] * len(FIELD_HEADER)])
    peers = published.peers()
    rows = []
    for setting in summary:
        base, *rest = setting.split()
        theirs = [peers.get(base, {}).get(source) if rest in ([], ["refit"]) else None for source in ("APD", "SPD")]
        path = f"summary/{setting}"
        rows.append([benchmark(setting), *(f"{fmt(n['mmcs'], 3)} / {fmt(n['ml2r'], 3)}" if n else "–" for n in theirs),
                     show_spread(metrics, f"{path}/median"), show_count(metrics, f"{path}/success"),
                     show_spread(metrics, f"{path}/ml2r_median"),
                     show_value(metrics, f"{path}/reconstruction_error_median")])
    return table(FIELD_HEADER, rows)


# --- docs/results.md -----------------------------------------------------------------------------
def results_page(sources: Sources) -> str:
    lines = [GENERATED_NOTE.format(sources="figures/*/metrics.json, l3d/report/headlines.py and "
                                           "l3d/experiments/published.py"), "",
             "# Results in full", "",
             "Every headline number of every notebook at paper scale (the numbers `make figures` compares; "
             "l3d/report/headlines.py), as the committed `figures/<notebook>/metrics.json` holds it: the median over "
             "seeds with its range, one number per seed, and how far another machine may move it before it counts "
             "as another result (the tolerance, with its reason in headlines.py). The published numbers beside them "
             "come from `l3d/experiments/published.py`. A number the files do not hold shows as " + DASH + ".", ""]
    lines += [f"- [{n[:2]} · {sources.title(n)}](#{n})" for n in sources.notebooks()]
    for notebook in sources.notebooks():
        lines += ["", *notebook_section(sources, notebook)]
    return "\n".join(lines) + "\n"


def notebook_section(sources: Sources, notebook: str) -> list[str]:
    metrics = sources.metrics(notebook)
    lines = [f"## {notebook}", "", f"**{sources.title(notebook)}**"]
    executed = sources.executed(notebook)
    links = ([f"[the executed notebook](../{executed})"] if executed else []) + (
        [f"[metrics.json](../figures/{notebook}/metrics.json)"] if metrics is not None else [])
    lines += ["", ("Read: " + ", ".join(links) + ".") if links else f"Not run yet: no figures/{notebook}/."]
    settings = metrics.get("settings") if isinstance(metrics, Mapping) else None
    seeds = lookup(settings, "seeds") if isinstance(settings, Mapping) else MISSING
    if isinstance(seeds, list) and seeds:
        lines += ["", f"Seeds: {', '.join(map(str, seeds))} (the per-seed numbers below are in this order)."]
    lines += published_lines(notebook, settings)
    rows, tolerances = [], TOLERANCES.get(notebook, {}).get("paper", {})
    for pattern, path in headline_paths(notebook, metrics, sources.notes):
        if path is None:
            rows.append([label(pattern), f"`{pattern}`", DASH, DASH, str(tolerances[pattern])])
            continue
        rows.append([label(path), f"`{path}`", show_spread(metrics, path), show_seeds(metrics, path),
                     str(tolerance_for(path, tolerances))])
    if not tolerances:
        sources.notes.add(f"{notebook}: no headline numbers in l3d/report/headlines.py")
        lines += ["", "No headline numbers are defined for this notebook (l3d/report/headlines.py)."]
    else:
        if all(r[3] in (DASH, "") for r in rows):
            rows = [r[:3] + r[4:] for r in rows]
            header = ["number", "key in metrics.json", "ours", "tolerance"]
        else:
            header = ["number", "key in metrics.json", "ours: median (range)", "per seed", "tolerance"]
        lines += ["", table(header, rows)]
    lines += environment_lines(metrics)
    return lines


def published_lines(notebook: str, settings: Mapping | None) -> list[str]:
    try:
        entries = published.entries(notebook)
    except ValueError:
        return []
    lines = ["", "Published (`l3d.experiments.published`):", ""]
    for entry in entries:
        numbers = ", ".join(f"{k} {fmt(v, published_digits(v))}" for k, v in entry.numbers.items())
        gaps = published.differences(entry, settings or {})
        source = published.SOURCES.get(entry.source, entry.source)
        where = entry.where if entry.where.startswith(source) else f"{source}, {entry.where}"
        if notebook == "07_field_benchmarks":
            compared = f"beside L3D on {entry.setting.get('benchmark', '?')}"
        else:
            compared = "in this run's setting" if not gaps else "another setting: " + "; ".join(gaps)
        lines.append(f"- {where}: {numbers} ({compared})")
    return lines


def environment_lines(metrics: Mapping | None) -> list[str]:
    """What the notebook recorded about its run: its seconds and, where recorded, its machine."""
    if not isinstance(metrics, Mapping):
        return []
    lines = []
    for key in ("runtime_seconds", "seconds"):
        seconds = metrics.get(key)
        if _number(seconds):
            lines.append(f"Run time: {seconds / 60:.1f} min.")
        elif isinstance(seconds, Mapping):
            parts = [f"{k.replace('_', ' ')} {v / 60:.1f}" for k, v in seconds.items() if _number(v)]
            if parts:
                lines.append(f"Run time, minutes: {', '.join(parts)}.")
    env = metrics.get("environment")
    if isinstance(env, Mapping):
        git = env.get("git") if isinstance(env.get("git"), Mapping) else {}
        made = [str(env.get("cpu", "?")), f"{env.get('cpu_capability', '?')} kernels", f"{env.get('threads', '?')} "
                f"thread(s)", f"torch {env.get('torch', '?')}", f"device {env.get('device', '?')}"]
        if git.get("commit"):
            made.append(f"commit {str(git['commit'])[:7]}" + (" with changes" if git.get("modified") else ""))
        lines.append(f"Made on: {', '.join(made)}.")
    return ["", " ".join(lines)] if lines else []


# --- docs/performance.md -------------------------------------------------------------------------
MODES = {"ours": "l3d", "baseline": "the authors' approach (every per-sample gradient and reconstruction materialized)"}


def seconds(value) -> str:
    if not _number(value):
        return DASH
    return f"{value * 1000:.2f} ms" if value < 0.1 else f"{value:.2f} s"


def size(value) -> str:
    if not _number(value):
        return DASH
    return f"{value / 2**30:.2f} GiB" if value >= 2**29 else f"{value / 2**20:.1f} MiB"


def performance_page(sources: Sources) -> str:
    folder = sources.root / "benchmarks" / "results"
    lines = [GENERATED_NOTE.format(sources="benchmarks/results/*.json"), "",
             "# Performance", "",
             "A step of L3D: the per-sample divergence gradients of a batch, the reconstruction loss, its backward, "
             "Adam, the decoder normalization. l3d never materializes the per-sample gradients of Linear, Conv, "
             "Embedding and LayerNorm tensors (it keeps their inputs and output-gradients and projects them onto the "
             "Tucker factors) and never builds a reconstruction (the loss comes from projections and the decoder "
             "Gram matrix). `make benchmark` (`benchmarks/bench.py`) measures it against the authors' approach on "
             "the paper's settings and writes the JSON files this page is made from; `benchmarks/` holds the other "
             "scripts (threads, checkpoints, the dashboard, batched sweeps).", ""]
    files = sorted(folder.glob("*.json")) if folder.is_dir() else []
    if not files:
        sources.notes.add("benchmarks/results/ holds no JSON file (docs/performance.md lists none)")
        lines.append(f"No results yet ({DASH}): run `make benchmark`.")
    for path in files:
        name = f"benchmarks/results/{path.name}"
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            sources.notes.add(f"{name} could not be read ({err})")
            continue
        lines += ["", f"## {path.stem}", "", f"From [{name}](../{name})."]
        if isinstance(data, Mapping) and isinstance(data.get("results"), list):
            lines += step_table(data)
        elif isinstance(data, Mapping) and isinstance(data.get("rows"), list) and any(
                isinstance(r, Mapping) and "members" in r for r in data["rows"]):
            lines += sweep_table(data)
        elif isinstance(data, Mapping) and isinstance(data.get("rows"), list):
            lines += threads_table(data)
        elif isinstance(data, Mapping):
            lines += ["", table(["measure", "value"], [[k, fmt(v, 4) if _number(v) and not isinstance(v, int)
                                                        else fmt(v, "int") if _number(v) else fmt(v)]
                                                       for k, v in flatten(data).items()])]
            note = data.get("note")
            if isinstance(note, str):
                lines += ["", f"Note: {note}"]
        else:
            sources.notes.add(f"{name}: not a JSON object (docs/performance.md only links it)")
    figure = sources.root / "figures" / "benchmarks"
    for png in sorted(figure.glob("*.png")) if figure.is_dir() else []:
        lines += ["", f"![{png.stem}](../figures/benchmarks/{png.name})"]
    return "\n".join(lines) + "\n"


def step_table(data: Mapping) -> list[str]:
    meta = data.get("meta") if isinstance(data.get("meta"), Mapping) else {}
    said = [f"{k} {meta[k]}" for k in ("device", "threads", "torch", "date") if k in meta]
    lines = ["", f"Measured with `{meta['command']}`" if "command" in meta else "Measured"]
    lines[-1] += (f" ({'; '.join(said)})." if said else ".")
    lines[-1] += " Seconds per step: the median over repeats where there are several; memory: " + str(
        next((r.get("memory_measure") for r in data["results"] if isinstance(r, Mapping) and r.get("memory_measure")),
             "peak memory")) + "."
    rows = []
    for r in data["results"]:
        if not isinstance(r, Mapping):
            continue
        batch = f"{r['texts']} × {r['tokens']} tokens" if "texts" in r and "tokens" in r else "–"
        rows.append([str(r.get("setting", DASH)), MODES.get(r.get("mode"), str(r.get("mode", DASH))), batch,
                     fmt(r.get("subnetworks", MISSING), "int"), seconds(r.get("seconds_per_step")),
                     seconds(r.get("cpu_seconds_per_step")), size(r.get("peak_bytes"))])
    return lines + ["", table(["setting", "code", "batch", "subnetworks", "wall time per step", "CPU time per step",
                               "memory"], rows)]


def sweep_table(data: Mapping) -> list[str]:
    """benchmarks/sweep.py's rows: CPU time per epoch of S decompositions trained as one program."""
    rows = [[str(r.get("toy", DASH)), str(r.get("mode", DASH)), fmt(r.get("members", MISSING), "int"),
             fmt(r.get("threads", MISSING), "int"), seconds(r.get("seconds_per_epoch")),
             fmt(r.get("decomposition_epochs_per_second", MISSING), 3), fmt(r.get("time_vs_one", MISSING), 3)]
            for r in data["rows"] if isinstance(r, Mapping)]
    return ["", "CPU time of the process per epoch (robust to other work on the machine); \"seeds\": S toys with "
            "samples of their own (`l3d.sweep`), \"starts\": S starts of one toy (`restarts`).", "",
            table(["toy", "mode", "S", "threads", "CPU time per epoch", "decomposition-epochs per second",
                   "time against S = 1"], rows)]


def threads_table(data: Mapping) -> list[str]:
    rows_in = [r for r in data["rows"] if isinstance(r, Mapping) and isinstance(r.get("seconds_per_step"), Mapping)]
    threads = sorted({t for r in rows_in for t in r["seconds_per_step"]}, key=lambda t: (not t.isdigit(), t.zfill(9)))
    rows = [[str(r.get("setting", DASH)), fmt(r.get("work", MISSING), "int"),
             *(seconds(r["seconds_per_step"].get(t)) for t in threads)] for r in rows_in]
    lines = ["", table(["setting", "work (samples × parameters)", *(f"{t} thread(s)" for t in threads)], rows)]
    if isinstance(data.get("note"), str):
        lines += ["", f"Note: {data['note']}"]
    return lines


# --- regions -------------------------------------------------------------------------------------
class SpecError(ValueError):
    """A generated region the tool does not know, or with the wrong arguments."""


def inline(sources: Sources, kind: str, args: list[str]) -> str:
    if kind == "published":
        if len(args) != 3:
            raise SpecError("published takes NB SOURCE NAME")
        notebook, source, name = args
        try:
            number = published.numbers(notebook, source).get(name, MISSING)
        except ValueError as err:
            raise SpecError(str(err)) from None
        if number is MISSING:
            raise SpecError(f"{source} has no number {name!r} for {notebook}")
        return fmt(number, published_digits(number))
    if len(args) != 2:
        raise SpecError(f"{kind} takes NB PATH")
    notebook, path = args
    metrics = sources.metrics(notebook)
    show = {"value": show_value, "spread": show_spread, "seeds": show_seeds, "count": show_count}[kind]
    text = show(metrics, path)
    if metrics is not None and text == DASH:
        sources.notes.add(f"{notebook}: metrics.json has no {kind} for {path} (shown as {DASH})")
    return text


BLOCKS: dict[str, Callable[[Sources], str]] = {"results": results_table, "field": field_table}
INLINE = ("value", "spread", "seeds", "count", "published")


def fill(text: str, sources: Sources, where: str) -> str:
    """`text` with every generated region written anew."""
    def replace(match: re.Match) -> str:
        kind, *args = match["spec"].split()
        if kind in BLOCKS and not args:
            body = f"\n\n{BLOCKS[kind](sources)}\n\n"   # blank lines: a table stays a block of its own
        elif kind in INLINE:
            try:
                body = inline(sources, kind, args)
            except SpecError as err:
                raise SpecError(f"{where}: <!-- generated: {match['spec']} -->: {err}") from None
        else:
            raise SpecError(f"{where}: <!-- generated: {match['spec']} -->: unknown kind or arguments; known: "
                            f"{', '.join(BLOCKS)} (no arguments), {', '.join(INLINE)}")
        return f"<!-- generated: {match['spec']} -->{body}<!-- end -->"

    return REGION.sub(replace, text)


def generate(root: Path = ROOT) -> tuple[dict[str, str], list[str]]:
    """{path relative to root: its new text} for every file the docs consist of, and the notes on what is missing."""
    notes = Notes()
    sources = Sources(root, notes)
    out = {"docs/results.md": results_page(sources), "docs/performance.md": performance_page(sources)}
    edited = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    for path in edited:
        relative = path.relative_to(root).as_posix()
        if relative in WHOLE_FILES or not path.is_file():
            continue
        out[relative] = fill(path.read_text(), sources, relative)
    return out, notes.lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout to write (default: this one)")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if make docs would change a file")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    if not (root / "README.md").is_file():
        print(f"error: --root {args.root}: no README.md there (it must be a checkout of l3d)", file=sys.stderr)
        return 2
    try:
        files, notes = generate(root)
    except SpecError as err:
        print(f"error: {err}; nothing was written", file=sys.stderr)
        return 2
    for line in notes:
        print(f"docs: {line}", file=sys.stderr)
    changed = [name for name, text in files.items()
               if not (root / name).is_file() or (root / name).read_text() != text]
    if args.check:
        for name in changed:
            print(f"{name} differs from what make docs writes", file=sys.stderr)
        return 1 if changed else 0
    from l3d.runtime.atomic import write_file

    for name in changed:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        write_file(root / name, lambda p, text=files[name]: Path(p).write_text(text))
        print(f"wrote {name}")
    if not changed:
        print("docs: up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
