"""The published numbers L3D is compared with, in one place, each with the setting it was measured in.

Three kinds of source:

* "paper": the L3D paper's own numbers (§4, its figures and supplement; the spec's §4 table);
* "authors_code": the authors' published code run by us at their scripts' settings, seeds 0-2 (issue 15; the
  spec's §4), under their conventions: their toys, their per-sample gradient Jᵀ(2f − f_ref), references drawn from
  the same batch, L3D samples without all-zero inputs. The paper's toy errors are under the same conventions;
* "APD", "SPD": APD's and SPD's published numbers on the field's shared toys (notebook 07; each entry names the lines
  of their papers).

A number compares with a run only when the run was made in the number's setting: the same toy and sizes, the same
number and rank of subnetworks (the training schedule may differ; each notebook says how its own differs).
`comparable(notebook, settings)` gives a notebook the numbers it may set beside its own, and `caveat` the sentence
to print when some are left out:

    from l3d.experiments import published
    numbers = published.comparable("01_toy_model_of_superposition", settings)   # None at 8 features
    print(published.caveat("01_toy_model_of_superposition", settings) or "")

`settings` is a notebook's settings object (`to_dict()`) or a dict; nested settings are read by dotted path
("l3d.n_subnetworks"). A run saved before a setting was renamed (`RENAMED`: "toy" is now "variant") is read under
the new name, with a DeprecationWarning.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..runtime.validate import renamed_parameters


@dataclass(frozen=True)
class Published:
    """Numbers of one source in one setting. numbers: name -> value (per-seed values as a list, in seed order);
    setting: dotted settings path -> the value a run must have for the numbers to compare; where: where they are
    printed; note: the conventions they hold under."""

    source: str
    numbers: dict
    setting: dict
    where: str
    note: str = ""
    label: str = field(default="", compare=False)   # how a table names the source; default: SOURCES[source]


# Settings renamed since runs were saved: old name -> new (`VariantExperiment.RENAMED`, copied to keep this table's
# imports light; a test keeps the two equal).
RENAMED = {"toy": "variant"}

SOURCES = {"paper": "the paper", "authors_code": "the authors' code", "APD": "APD", "SPD": "SPD"}

_TMS = {"n_features": 5, "n_hidden": 2, "l3d.n_subnetworks": 5, "l3d.rank": 1, "l3d.top_k": 0.1}
_TMCS = {"variant": "authors", "n_features": 10, "n_hidden": 5, "coefficient_max": 3.0, "l3d.n_subnetworks": 10,
         "l3d.rank": 1, "l3d.top_k": 0.1}
_HIGH_RANK = {"group_size": 5, "n_hidden": 10, "coefficient_max": 3.0, "l3d.n_subnetworks": 10, "l3d.top_k": 0.1}
_SQUARE = {"variant": "authors", "n_features": 5, "width": 10, "depth": 4, "l3d.n_subnetworks": 5, "l3d.rank": 2,
           "l3d.top_k": 0.1}
_CONVENTIONS = ("their toy, their gradient Jᵀ(2f − f_ref), references from the same batch, L3D samples without "
                "all-zero inputs")

PUBLISHED: dict[str, list[Published]] = {
    "01_toy_model_of_superposition": [
        Published("paper", {"reconstruction_error": 0.19}, _TMS, "paper §4.1",
                  "under the authors' gradient Jᵀ(2f − f_ref); the text's Jᵀ(f − f_ref) gives a 2-3x higher error"),
        Published("authors_code", {"reconstruction_errors": [0.11, 0.28, 0.15],
                                   "seeds_with_all_features_recovered": "1 of 3", "min_feature_cosine": 0.36},
                  _TMS, "the authors' code at the paper's settings, seeds 0-2 (spec §4)",
                  "one feature without a subnetwork of its own in 2 seeds of 3 (best |cos| 0.36 and 0.65); "
                  + _CONVENTIONS),
    ],
    "02_circuit_superposition": [
        Published("paper", {"reconstruction_error": 0.064, "paper_r": 0.92}, _TMCS, "paper §4.2",
                  "the paper prints paper_r as \"r² = 0.92\": a Pearson r (l3d.experiments.ground_truth.paper_r)"),
        Published("authors_code", {"paper_r": [0.92, 0.76, 0.90], "reconstruction_error": [0.078, 0.108, 0.045]},
                  _TMCS, "the authors' code at their settings, seeds 0-2 (issue 15)", _CONVENTIONS),
    ],
    "03_high_rank_circuits": [
        Published("paper", {"n_live": 5, "one_live_subnetwork_per_group": True},
                  {**_HIGH_RANK, "variant": "paper_text", "n_groups": 5}, "paper §4.3 (text)",
                  "with the paper's loss (silence 0); the text's 5 groups of 5"),
        Published("paper", {"figure_s6_n_live": 7, "one_live_subnetwork_per_group": True},
                  {**_HIGH_RANK, "variant": "authors", "n_groups": 6}, "paper Fig. S6",
                  "with the paper's loss (silence 0); the figures' 6 groups of 5"),
        Published("authors_code", {"every_group_clean": True, "extra_live": [1, 3]},
                  {**_HIGH_RANK, "variant": "authors", "n_groups": 6}, "the authors' code at their settings (spec §4)",
                  "with the paper's loss: every group its clean subnetwork, and 1 to 3 more live; " + _CONVENTIONS),
    ],
    "04_complex_loss_landscape": [
        Published("paper", {"reconstruction_error_5x2": 0.32, "one_subnetwork_per_input": True}, _SQUARE,
                  "paper §4.4", "5 subnetworks of rank 2; error falls with more subnetworks (Fig. S11)"),
        Published("authors_code", {"reconstruction_error_5x2": [0.31, 0.34], "one_subnetwork_per_input": True},
                  _SQUARE, "the authors' code at their settings, seeds 0-1 (spec §4)",
                  "first-layer input purity >= 0.98; " + _CONVENTIONS),
    ],
    "05_transformer": [
        Published("paper", {"reconstruction_error": 0.40},
                  {"source": "paper", "layer": 4, "l3d.n_subnetworks": 100, "l3d.rank": 25, "l3d.top_k": 0.1},
                  "paper, TinyStories experiment",
                  "TinyStories-8M, the attention block of layer h.4, 10,000 texts of 16 tokens"),
    ],
    "06_cnn": [
        Published("paper", {"reconstruction_error": 0.23, "dead_fraction": 0.40},
                  {"source": "paper", "l3d.n_subnetworks": 100, "rank_fraction": 0.1, "l3d.top_k": 0.1},
                  "paper, CNN experiment",
                  "MobileNet-v3-small (ImageNet weights), block features.7, 10,000 CIFAR-100 images"),
    ],
    "07_field_benchmarks": [
        Published("APD", {"mmcs": 0.998, "ml2r": 0.893}, {"benchmark": "5-2"},
                  "papers/Attribution_based_Parameter_Decomposition/apd_paper.md:156-159"),
        Published("SPD", {"mmcs": 1.000, "ml2r": 0.993}, {"benchmark": "5-2"},
                  "papers/Stochastic_Parameter_Decomposition/spd_paper.md:169-174"),
        Published("APD", {"mmcs": 0.996, "ml2r": 0.935}, {"benchmark": "40-10"},
                  "papers/Attribution_based_Parameter_Decomposition/apd_paper.md:156-159"),
        Published("SPD", {"mmcs": 1.000, "ml2r": 1.010}, {"benchmark": "40-10"},
                  "papers/Stochastic_Parameter_Decomposition/spd_paper.md:169-174"),
        Published("SPD", {"mmcs": 1.000, "ml2r": 0.992}, {"benchmark": "5-2-id"},
                  "papers/Stochastic_Parameter_Decomposition/spd_paper.md:169-174"),
        Published("SPD", {"mmcs": 1.000, "ml2r": 1.031}, {"benchmark": "40-10-id"},
                  "papers/Stochastic_Parameter_Decomposition/spd_paper.md:169-174"),
    ],
}


def _flat(settings: Any, prefix: str = "") -> dict[str, Any]:
    """A settings object (its to_dict()) or a mapping as {dotted path: value}."""
    if hasattr(settings, "to_dict"):
        settings = settings.to_dict()
    if not isinstance(settings, Mapping):
        raise TypeError(f"settings must be a notebook's settings object or a dict, got {type(settings).__name__}")
    if not prefix:
        settings = renamed_parameters(settings, RENAMED)
    flat = {}
    for key, value in settings.items():
        if isinstance(value, Mapping):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def entries(notebook: str) -> list[Published]:
    """Every published entry for `notebook` (e.g. "02_circuit_superposition"); a ValueError naming the notebooks
    that have some for any other name."""
    if notebook not in PUBLISHED:
        raise ValueError(f"notebook must be one of {sorted(PUBLISHED)}, got {notebook!r}")
    return PUBLISHED[notebook]


def numbers(notebook: str, source: str) -> dict:
    """The numbers of `source`'s first entry for `notebook`, whatever the setting (what the notebook's own
    settings are compared with decides `comparable`)."""
    for entry in entries(notebook):
        if entry.source == source:
            return dict(entry.numbers)
    raise ValueError(f"source must be one of {sorted({e.source for e in entries(notebook)})} for {notebook}, got "
                     f"{source!r}")


def differences(entry: Published, settings: Any) -> list[str]:
    """Where the run's settings leave the entry's setting: "n_features: 8 here, 5 published", one per setting (a
    setting the run does not have counts as a difference)."""
    flat = _flat(settings)
    return [f"{key}: {flat[key]!r} here, {value!r} published" if key in flat else f"{key}: not set here, {value!r} "
            f"published" for key, value in entry.setting.items() if flat.get(key, _MISSING) != value]


_MISSING = object()


def comparable(notebook: str, settings: Any) -> dict[str, dict] | None:
    """{source: numbers} of every entry for `notebook` whose setting the run's `settings` match (the first per
    source); None when none does."""
    found: dict[str, dict] = {}
    for entry in entries(notebook):
        if entry.source not in found and not differences(entry, settings):
            found[entry.source] = dict(entry.numbers)
    return found or None


def caveat(notebook: str, settings: Any) -> str | None:
    """One sentence for a notebook to print when published numbers are left out of its comparison because its run
    was made in another setting: which sources, and how the setting differs; None when every source compares."""
    compared = comparable(notebook, settings) or {}
    sources: dict[str, list[str]] = {}   # source -> the differences from its nearest setting
    for entry in entries(notebook):
        gaps = differences(entry, settings)
        if entry.source not in compared and (entry.source not in sources or len(gaps) < len(sources[entry.source])):
            sources[entry.source] = gaps
    if not sources:
        return None
    gaps = "; ".join(f"{SOURCES.get(s, s)}: {', '.join(d)}" for s, d in sources.items())
    return (f"Not compared with {' or '.join(SOURCES.get(s, s) for s in sources)}: this run's setting differs from "
            f"theirs ({gaps}).")


def benchmark_numbers() -> dict[str, dict[str, dict]]:
    """APD's and SPD's numbers on the field's toys (notebook 07): {benchmark setting: {"APD"/"SPD": {"mmcs",
    "ml2r"}}}."""
    table: dict[str, dict[str, dict]] = {}
    for entry in entries("07_field_benchmarks"):
        table.setdefault(entry.setting["benchmark"], {})[entry.source] = dict(entry.numbers)
    return table
