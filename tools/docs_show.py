"""How the docs show a number: its decimals, "median (min–max)" over seeds, one number per seed, "k of n" for a
count, the name a table gives it, and the markdown table itself; a number the files do not hold shows as "—".
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

from docs_seeds import SUMMARY_ROW_KEYS, count_of, is_count, seed_rows, seed_values, value_range
from docs_sources import DASH, MISSING, is_number, lookup

# the first line of a file the tool writes whole (docs/results.md, docs/performance.md)
GENERATED_NOTE = ("<!-- Written by tools/docs.py (make docs) from {sources}; edit the tool, not this file. -->")

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
    "min_impact_share": "lowest impact share",
    "all_matched_seeds": "seeds with every input matched",
    "one_per_circuit_seeds": "seeds with one subnetwork per input",
    "n_live": "live subnetworks",
    "clean_groups": "groups with a clean subnetwork",
    "one_per_group_seeds": "seeds with one live subnetwork per group",
    "all_clean_seeds": "seeds with every group clean",
    "n_dead": "dead subnetworks",
    "dead_fraction": "dead subnetworks",
    "mean_pattern_purity": "mean pattern purity",
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
    if "purity" in key or "impact_share" in key:
        return 2
    if "mmcs" in key or "cos" in key:
        return 4
    return 3


def published_digits(number) -> int | str:
    """Published numbers keep the digits they were published with."""
    values = number if isinstance(number, list) else [number]
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return "int"
    return max([2] + [len(repr(float(v)).split(".")[1]) for v in values if is_number(v)])


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
    if not is_number(value):
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
