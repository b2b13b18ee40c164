"""Writing a notebook's results: figures as PNG and PDF, headline numbers as JSON."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import matplotlib.pyplot as plt

from ..runtime.atomic import write_file
from ..runtime.environment import environment


def checkout() -> Path | None:
    """The folder holding the l3d checkout (pyproject.toml beside the package folder); None when l3d is installed
    elsewhere (pip install without -e)."""
    import l3d

    root = Path(l3d.__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").is_file() else None


def repository_root() -> Path:
    """The folder holding the l3d checkout (`checkout`); the working directory when l3d is installed elsewhere."""
    return checkout() or Path.cwd()


def resolve_out_dir(out_dir: str | os.PathLike) -> Path:
    """A notebook's `out_dir` as an absolute path: a relative one is taken from the repository root
    (`repository_root`), so "figures/01_toy_model_of_superposition" lands in the same place whether the notebook
    runs from notebooks/, from the repository root or from anywhere else."""
    out_dir = Path(out_dir).expanduser()
    return out_dir if out_dir.is_absolute() else repository_root() / out_dir


def shown_path(path: str | os.PathLike) -> str:
    """`path` as a notebook prints it: relative to the repository root when inside it ("figures/01_…/dashboard/
    index.html", the same on every machine), else as it is."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(repository_root().resolve()))
    except ValueError:
        return str(path)


def save_figure(fig: plt.Figure, out_dir: str | os.PathLike, name: str) -> Path:
    """Write `fig` to out_dir/name.png and out_dir/name.pdf; returns the PNG's path.

    The PDF carries no creation date, so a rerun that draws the same figure writes the same bytes.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    png = out_dir / f"{name}.png"
    fig.savefig(png, dpi=150, bbox_inches="tight")
    fig.savefig(out_dir / f"{name}.pdf", bbox_inches="tight", metadata={"CreationDate": None})
    return png


def _plain(value):
    """JSON-ready copy: tensors and arrays become lists, NaN and inf become None."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_metrics(out_dir: str | os.PathLike, metrics: dict, name: str = "metrics.json") -> Path:
    """Write `metrics` as JSON to out_dir/name, atomically (write, then rename), with an "environment" block: the
    machine and software that made them (`l3d.runtime.environment.environment`: versions, CPU model and torch's
    capability on it, threads, the device of metrics["settings"]["device"], the git commit of the checkout, if l3d
    runs from one). A block `metrics` brings along is kept as it is."""
    settings = metrics.get("settings")
    device = settings.get("device") if isinstance(settings, dict) else None
    metrics = {**metrics, "environment": metrics.get("environment") or environment(device, checkout())}
    text = json.dumps(_plain(metrics), indent=1)
    return write_file(Path(out_dir) / name, lambda f: Path(f).write_text(text))
