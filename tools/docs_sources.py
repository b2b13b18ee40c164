"""The files the docs are written from, read: figures/<notebook>/metrics.json, each notebook's title, its executed
copy, and which key paths of a metrics.json are its paper-scale headline numbers (l3d/report/tolerances.py).

A key path ("median/3/n_live": keys joined by "/", as in headlines.py) names one value of a metrics.json; a value
the files do not hold is MISSING, and the docs show it as DASH. What the docs lack is said once each, in Notes.
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from l3d.report.headlines import current_keys, flatten, tolerance_for
from l3d.report.tolerances import TOLERANCES, Tolerance

DASH = "—"
MISSING = object()


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
            # a file written before a key was renamed (l3d.report.headlines.RENAMED_KEYS) read under the new names
            self._metrics[notebook] = None if found is None else current_keys(found, notebook)
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


def is_number(value) -> bool:
    """An int or a float, not a bool (JSON's true and false are no numbers here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# --- headline numbers ----------------------------------------------------------------------------
def headline_paths(notebook: str, metrics: Mapping | None, notes: Notes) -> list[tuple[str, str | None]]:
    """(pattern, key path) of every paper-scale headline number of `notebook` (l3d/report/tolerances.py), in the
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
