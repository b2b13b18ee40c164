"""Each notebook's headline numbers, and how far another run may move each before it counts as another result.

A headline number is a leaf of a notebook's metrics.json named by its key path, the keys joined by "/"
("median/paper_r", "summary/5-2 refit/ml2r_median"). A notebook's headline numbers at a scale are the leaves
that a pattern of its TOLERANCES[notebook][scale] matches ("*" stands for one key, never for a "/"); the first
matching pattern gives the number's `Tolerance`, and every tolerance says why it is that wide.

Two scales, compared with different references:
- "test": `make test` runs the notebooks with notebooks/test_parameters.json, and each notebook's headline
  cell calls `check_headlines` against tests/notebooks/<notebook>.json (written by `make test-references`);
- "paper": `make figures` runs them as they are, and its last step (tools/notebooks.py compare) prints
  `comparison_rows` of each new figures/<notebook>/metrics.json against the committed one.

The tolerances live in `l3d.report.tolerances` (TOLERANCES), not in the reference files: making the references
again never loosens one. They are chosen from measured variation (the same notebook under ATEN_CPU_CAPABILITY=avx2
and with OMP_NUM_THREADS=2; another CPU, issue 27) and kept tight enough that a deliberate change of a headline
number fails `make test`. A discrete outcome (a count of matched features or live subnetworks) is compared exactly,
and only where those runs showed it stable; otherwise it is recorded (`Tolerance.compare` False) but not compared.
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path

from .tolerances import TOLERANCES, Tolerance, exact, recorded  # noqa: F401  (exact, recorded: re-exported)

SCALES = ("test", "paper")


# --- renamed keys --------------------------------------------------------------------------------
# Keys of metrics.json renamed since figures/ was last committed, per notebook, old -> new (issue 29: one name per
# concept; the toys' share of a circuit's impact on its matched subnetwork was "purity", 05's and 08's share of a
# subnetwork's top tokens from its most common pattern "mean_purity" / "best_purity"; 04's rows of the other toy
# variant "other_toy"). A metrics.json written before is read under the new names (`current_keys`): `make figures`'
# comparison (tools/notebooks.py compare) pairs the committed numbers with the new ones, and the docs (tools/docs.py)
# read the committed files.
IMPACT_SHARE_RENAMES = {"purity": "impact_share", "min_purity": "min_impact_share", "mean_purity": "mean_impact_share",
                        "aligned_purity": "aligned_impact_share", "aligned_min_purity": "aligned_min_impact_share",
                        "aligned_then_paper_purity": "aligned_then_paper_impact_share",
                        "aligned_then_paper_min_purity": "aligned_then_paper_min_impact_share"}
PATTERN_PURITY_RENAMES = {"mean_purity": "mean_pattern_purity", "best_purity": "best_pattern_purity"}
RENAMED_KEYS: dict[str, dict[str, str]] = {
    "02_circuit_superposition": IMPACT_SHARE_RENAMES,
    "03_high_rank_circuits": IMPACT_SHARE_RENAMES,
    "04_complex_loss_landscape": {**IMPACT_SHARE_RENAMES, "other_toy": "other_variant"},
    "05_transformer": PATTERN_PURITY_RENAMES,
    "08_whole_model": PATTERN_PURITY_RENAMES,
}


def current_keys(metrics, notebook: str):
    """A notebook's metrics (nested dicts and lists) with every key that RENAMED_KEYS[notebook] renames under its
    new name, in the same order; everything else as it is."""
    renames = RENAMED_KEYS.get(notebook, {})
    if isinstance(metrics, Mapping):
        return {renames.get(key, key): current_keys(value, notebook) for key, value in metrics.items()}
    if isinstance(metrics, list):
        return [current_keys(value, notebook) for value in metrics]
    return metrics


# --- key paths -----------------------------------------------------------------------------------
def flatten(metrics: Mapping, prefix: str = "") -> dict[str, float | bool | None]:
    """Every number of a (nested) metrics dict by key path: {"median/paper_r": 0.9, ...}. Lists' items are keyed
    by their index; strings are left out; None (a NaN in metrics.json) stays."""
    found: dict = {}
    items = metrics.items() if isinstance(metrics, Mapping) else enumerate(metrics)
    for key, value in items:
        path = f"{prefix}{key}"
        if isinstance(value, (Mapping, list, tuple)):
            found.update(flatten(value, path + "/"))
        elif value is None or isinstance(value, (bool, int, float)):
            found[path] = value
        elif hasattr(value, "item"):   # a tensor or NumPy scalar
            found[path] = value.item()
    return found


def _regex(pattern: str) -> re.Pattern:
    return re.compile("/".join("[^/]*".join(map(re.escape, part.split("*"))) for part in pattern.split("/")) + r"\Z")


def tolerance_for(path: str, tolerances: Mapping[str, Tolerance]) -> Tolerance | None:
    """The tolerance of the first pattern matching key path `path`; None when none does (not a headline number)."""
    return next((t for p, t in tolerances.items() if _regex(p).match(path)), None)


def headline_numbers(metrics: Mapping, tolerances: Mapping[str, Tolerance]) -> dict[str, float | bool | None]:
    """The numbers of `metrics` (nested, or flat by key path) that a pattern of `tolerances` matches, by key path."""
    return {p: v for p, v in flatten(metrics).items() if tolerance_for(p, tolerances) is not None}


def tolerances(notebook: str, scale: str) -> dict[str, Tolerance]:
    """TOLERANCES[notebook][scale], with a clear error for an unknown notebook or scale."""
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {list(SCALES)}, got {scale!r}")
    if notebook not in TOLERANCES:
        raise ValueError(f"no headline numbers for notebook {notebook!r}; known: {sorted(TOLERANCES)}")
    return TOLERANCES[notebook][scale]


# --- comparing -----------------------------------------------------------------------------------
def _show(value) -> str:
    return "missing" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


def comparison_rows(reference: Mapping, now: Mapping, tolerances: Mapping[str, Tolerance]) -> list[dict]:
    """One row per headline number of `reference` or `now` (nested metrics or flat by key path), in key-path order:
    {"number", "reference", "now", "tolerance", "within", "reason"}. "within" is False when the number is missing
    on one side or differs by more than its tolerance; True for a number recorded but not compared."""
    ref, new = headline_numbers(reference, tolerances), headline_numbers(now, tolerances)
    rows = []
    for path in sorted(ref.keys() | new.keys()):
        tolerance = tolerance_for(path, tolerances)
        within = path in ref and path in new and tolerance.allows(ref[path], new[path])
        rows.append({"number": path, "reference": ref.get(path), "now": new.get(path), "tolerance": str(tolerance),
                     "within": within or not tolerance.compare, "reason": tolerance.reason,
                     "missing": "reference" if path not in ref else "now" if path not in new else None})
    return rows


def check_reference(metrics: Mapping, reference: Mapping, tolerances: Mapping[str, Tolerance], where: str = "") -> int:
    """Raise AssertionError listing every headline number of `metrics` that is not within its tolerance of
    `reference` (key path, reference, now, tolerance), or that one of them lacks; returns how many were compared.
    `where` names the reference in the message."""
    rows = comparison_rows(reference, metrics, tolerances)
    bad = [r for r in rows if not r["within"]]
    if bad:
        lines = []
        for r in bad:
            if r["missing"] == "reference":
                lines.append(f"  {r['number']}: no reference (now {_show(r['now'])}); run `make test-references`")
            elif r["missing"] == "now":
                lines.append(f"  {r['number']}: reference {_show(r['reference'])}, now missing")
            else:
                lines.append(f"  {r['number']}: reference {_show(r['reference'])}, now {_show(r['now'])}, "
                             f"tolerance {r['tolerance']} ({r['reason']})")
        raise AssertionError(f"{len(bad)} of {len(rows)} headline numbers differ from the reference"
                             f"{' ' + where if where else ''}:\n" + "\n".join(lines))
    return sum(1 for r in rows if tolerance_for(r["number"], tolerances).compare)


def check_headlines(notebook: str, metrics: Mapping, reference_file: str | os.PathLike, scale: str = "test") -> int:
    """A notebook's headline cell under `make test`: `check_reference` of `metrics` against the JSON file of key
    path -> number that `make test-references` wrote, with TOLERANCES[notebook][scale]; prints how many numbers
    were compared and returns that."""
    reference_file = Path(reference_file)
    if not reference_file.is_file():
        raise FileNotFoundError(f"no reference headline numbers at {reference_file}: run `make test-references` "
                                f"(NB={notebook[:2]}) and commit tests/notebooks/")
    compared = check_reference(metrics, json.loads(reference_file.read_text()), tolerances(notebook, scale),
                               f"({reference_file.name})")
    print(f"headline numbers: {compared} within tolerance of {reference_file.name}")
    return compared
