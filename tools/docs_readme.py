"""The README's results table and notebook 07's field table, the two block regions (`<!-- generated: results -->`
and `<!-- generated: field -->`): one row per notebook (07: per benchmark setting), our headline numbers with the
published numbers beside them (l3d.experiments.published). README_ROWS picks which headline numbers the README's
table shows for each notebook (a notebook without an entry shows its first two), each with the published numbers
that go beside it; those are set beside ours only where the run's settings (metrics.json's "settings") are those
the numbers were measured in, otherwise the cell says which settings differ.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from docs_show import benchmark, fmt, label, published_digits, show_count, show_spread, show_value, table
from docs_sources import DASH, MISSING, Sources, headline_paths, lookup

from l3d.experiments import published


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
        Shown("revived/dead_fraction", "dead subnetworks, with our revival term"),
        Shown("revived/reconstruction_error", "reconstruction error, with our revival term"),
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
                sources.notes.add(f"{notebook}: no headline numbers to show in the README (l3d/report/tolerances.py)")
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
    numbers = published.benchmark_numbers()
    rows = []
    for setting in summary:
        base, *rest = setting.split()
        theirs = [numbers.get(base, {}).get(source) if rest in ([], ["refit"]) else None for source in ("APD", "SPD")]
        path = f"summary/{setting}"
        rows.append([benchmark(setting), *(f"{fmt(n['mmcs'], 3)} / {fmt(n['ml2r'], 3)}" if n else "–" for n in theirs),
                     show_spread(metrics, f"{path}/median"), show_count(metrics, f"{path}/success"),
                     show_spread(metrics, f"{path}/ml2r_median"),
                     show_value(metrics, f"{path}/reconstruction_error_median")])
    return table(FIELD_HEADER, rows)
