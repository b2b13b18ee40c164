"""The dashboard's saved data: its file names, the keys of data.json, rounding, and reading it back.

`collect` writes `data.json` (and `images.safetensors` for image models) into a dashboard folder; `render` reads
them back with `load` and writes `index.html` beside them.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

from torch import Tensor

DATA = "data.json"
IMAGES = "images.safetensors"
INDEX = "index.html"
FORMAT = 1
KEYS = ("format", "title", "kind", "n_subnetworks", "n_items", "length", "n_samples", "n_top", "top_k", "divergence",
        "p_act_from", "tensors", "ranks", "deltas", "history", "output_names", "label_names", "feature_names",
        "circuit_names", "vocabulary", "subnetworks", "items")   # every key collect writes, in its order


def round_value(value: float, digits: int = 4) -> float | None:
    """A float with `digits` significant digits (smaller JSON); NaN and inf become None."""
    value = float(value)
    return float(f"{value:.{digits}g}") if math.isfinite(value) else None


def round_values(values: Tensor | Sequence, digits: int = 4) -> list:
    """Nested lists of floats rounded by `round_value`."""
    values = values.tolist() if isinstance(values, Tensor) else values
    return [round_values(v, digits) if isinstance(v, list) else round_value(v, digits) for v in values]


def data_folder(folder: Path) -> Path:
    """`folder` if it holds data.json, else `folder`/dashboard if that does."""
    if (folder / DATA).exists():
        return folder
    if (folder / "dashboard" / DATA).exists():
        return folder / "dashboard"
    if (folder / "decomposition" / "run.json").exists() or (folder / "run.json").exists():
        raise FileNotFoundError(
            f"{folder} holds a decomposition but no dashboard data ({DATA}): "
            f"`python -m l3d` writes {folder / 'dashboard'} "
            f"at the end unless run with --no-dashboard; from Python: render(collect(folder / 'dashboard', "
            f"run.decomposition, run.collector, held_out_inputs, history=run.history))")
    raise FileNotFoundError(f"no {DATA} in {folder} or {folder / 'dashboard'}: run l3d.report.dashboard.collect first")


def load(folder: str | os.PathLike) -> dict:
    """The data `collect` saved in `folder` (or in `folder`/dashboard); a ValueError naming the file when it is not
    JSON, not of this format or lacks any of collect's keys (a damaged file)."""
    folder = data_folder(Path(folder))
    path = folder / DATA
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is damaged: not valid JSON ({type(e).__name__}: {e}); run collect again") from e
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else f"a JSON {type(data).__name__}"
        raise ValueError(f"{path} has format {found}, this l3d reads format {FORMAT}")
    missing = [k for k in KEYS if k not in data]
    if missing:
        raise ValueError(f"{path} is damaged: it lacks {', '.join(missing)}; run collect again")
    for row in data["subnetworks"] if isinstance(data["subnetworks"], list) else []:
        if isinstance(row, dict) and "purity" in row:   # data.json from before issue 29 calls label_purity "purity"
            row["label_purity"] = row.pop("purity")
    return data
