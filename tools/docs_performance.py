"""docs/performance.md, written whole from benchmarks/results/*.json: one section per file, its table chosen by
the file's shape (bench.py's step times, sweep.py's epochs of S decompositions, threads.py's thread counts, or
any other object's numbers), then the figures of figures/benchmarks/.
"""
from __future__ import annotations

import json
from collections.abc import Mapping

from docs_show import GENERATED_NOTE, fmt, table
from docs_sources import DASH, MISSING, Sources, is_number

from l3d.report.headlines import flatten

MODES = {"ours": "l3d", "baseline": "the authors' approach (every per-sample gradient and reconstruction materialized)"}


def seconds(value) -> str:
    if not is_number(value):
        return DASH
    return f"{value * 1000:.2f} ms" if value < 0.1 else f"{value:.2f} s"


def size(value) -> str:
    if not is_number(value):
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
             "scripts (threads, checkpoints, the dashboard, batched sweeps). `make benchmark` runs with freed memory "
             "kept for reuse ([reproducing.md](reproducing.md)); each JSON file records the variables its run had.",
             ""]
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
            lines += ["", table(["measure", "value"], [[k, fmt(v, 4) if is_number(v) and not isinstance(v, int)
                                                        else fmt(v, "int") if is_number(v) else fmt(v)]
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
    """benchmarks/sweep.py's rows: the time per epoch of S decompositions trained as one program, its setup, and S
    decompositions of the notebooks' length against one."""
    epochs = data.get("settings", {}).get("notebook_epochs", MISSING)
    rows = [[str(r.get("toy", DASH)), str(r.get("mode", DASH)), fmt(r.get("members", MISSING), "int"),
             fmt(r.get("threads", MISSING), "int"), seconds(r.get("wall_seconds_per_epoch")),
             seconds(r.get("seconds_per_epoch")), seconds(r.get("setup_seconds")),
             fmt(r.get("decompositions_per_second", MISSING), 4), fmt(r.get("time_vs_one", MISSING), 3)]
            for r in data["rows"] if isinstance(r, Mapping)]
    return ["", "Per epoch of training: wall-clock time, and CPU time of the process (of every thread; robust to other "
            "work on the machine); the setup (collectors, starts, the stack) in CPU time. \"seeds\": S toys with "
            "samples of their own (`l3d.sweep`), \"starts\": S starts of one toy (`restarts`). Decompositions per "
            f"second and the time against S = 1 are for decompositions of {fmt(epochs, 'int')} epochs, the notebooks' "
            "(setup + epochs × wall time per epoch).", "",
            table(["toy", "mode", "S", "threads", "wall time per epoch", "CPU time per epoch", "setup",
                   "decompositions per second", "time against S = 1"], rows)]


def threads_table(data: Mapping) -> list[str]:
    rows_in = [r for r in data["rows"] if isinstance(r, Mapping) and isinstance(r.get("seconds_per_step"), Mapping)]
    threads = sorted({t for r in rows_in for t in r["seconds_per_step"]}, key=lambda t: (not t.isdigit(), t.zfill(9)))
    rows = [[str(r.get("setting", DASH)), fmt(r.get("work", MISSING), "int"),
             *(seconds(r["seconds_per_step"].get(t)) for t in threads)] for r in rows_in]
    lines = ["", table(["setting", "work (samples × parameters)", *(f"{t} thread(s)" for t in threads)], rows)]
    if isinstance(data.get("note"), str):
        lines += ["", f"Note: {data['note']}"]
    return lines
