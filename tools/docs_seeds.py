"""Per-seed numbers and ranges: the rows of a metrics.json a median over seeds summarizes, its range over seeds,
and what a count of seeds is out of.

A headline number under a "median…" key (median/paper_r, median_paper_loss/3/n_live, like_authors/median/…) is a
median over the per-seed rows the notebook stored beside it (every list of rows with a "seed" at the same level:
per_seed, other_variant), those of its group: a group key is a row's rank ("3"), variant ("authors"; "toy" in runs
saved before the rename), benchmark setting, or "CxR" (n_subnetworks x rank); "median_X_loss" takes the rows
decomposed with loss X, plain "median" the others. 07's summary/<setting>/<stat> takes the rows of that setting.
The rows' numbers are shown only when their median is the stored median (to 1e-9), so a row picked wrongly shows
"—", never a wrong number. The range is the notebook's own "range…" entry where it wrote one ([min, max]; 07:
min/max), else the rows' min and max. A count of seeds ("…_seeds", "seeds_with_…", 07's "success") is shown
"k of n", n from the notebook's n_seeds (07: seeds; stability: n_seeds or n_checked), else the number of rows in
its group.
"""
from __future__ import annotations

import re
from collections.abc import Mapping

from docs_sources import MISSING, is_number, lookup

from l3d.runtime.medians import median

SUMMARY_ROW_KEYS = {"median": "mmcs"}   # 07's summary calls the MMCS median "median"; its rows call it "mmcs"


def _rows_beside(container) -> list[dict]:
    """Every row with a "seed" of the lists at one level of metrics.json (per_seed, other_variant, …)."""
    if not isinstance(container, Mapping):
        return []
    return [row for value in container.values() if isinstance(value, list) for row in value
            if isinstance(row, Mapping) and "seed" in row]


def _groups(row: Mapping) -> set[str]:
    """The group keys a per-seed row belongs to: its rank, variant (under "toy" in runs saved before the rename),
    benchmark setting and CxR."""
    found = {str(row[k]) for k in ("rank", "variant", "toy", "setting") if k in row}
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
    if not is_number(stored) or key is None or not rows or not all(is_number(r.get(key)) for r in rows):
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
            if isinstance(stored, list) and len(stored) == 2 and all(map(is_number, stored)):
                return stored[0], stored[1]
            break
    if len(parts) == 3 and parts[0] == "summary":
        base = "" if parts[2] == "median" else parts[2][:-len("median")] if parts[2].endswith("_median") else None
        if base is not None:
            low, high = (lookup(metrics, parts[:2] + [f"{base}{end}"]) for end in ("min", "max"))
            if is_number(low) and is_number(high):
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
        if is_number(total):
            return int(total)
    if key.endswith("_owned"):
        return None
    rows, _ = seed_rows(metrics, path)
    seeds = {r["seed"] for r in rows}
    return len(seeds) if seeds and len(seeds) == len(rows) else None
