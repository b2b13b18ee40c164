"""docs/results.md, written whole: per notebook, every paper-scale headline number (l3d/report/tolerances.py) as its
metrics.json holds it, the median with its range, one number per seed and its tolerance; the published numbers
with the settings they were measured in; and how the notebook was run (its minutes, its machine).
"""
from __future__ import annotations

from collections.abc import Mapping

from docs_show import GENERATED_NOTE, fmt, label, published_digits, show_seeds, show_spread, table
from docs_sources import DASH, MISSING, Sources, headline_paths, is_number, lookup

from l3d.experiments import published
from l3d.report.headlines import tolerance_for
from l3d.report.tolerances import TOLERANCES


def results_page(sources: Sources) -> str:
    lines = [GENERATED_NOTE.format(sources="figures/*/metrics.json, l3d/report/tolerances.py and "
                                           "l3d/experiments/published.py"), "",
             "# Results in full", "",
             "Every headline number of every notebook at paper scale (the numbers `make figures` compares; "
             "l3d/report/tolerances.py), as the committed `figures/<notebook>/metrics.json` holds it: the median over "
             "seeds with its range, one number per seed, and how far another machine may move it before it counts "
             "as another result (the tolerance, with its reason in tolerances.py). The published numbers beside them "
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
        sources.notes.add(f"{notebook}: no headline numbers in l3d/report/tolerances.py")
        lines += ["", "No headline numbers are defined for this notebook (l3d/report/tolerances.py)."]
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
        if is_number(seconds):
            lines.append(f"Run time: {seconds / 60:.1f} min.")
        elif isinstance(seconds, Mapping):
            parts = [f"{k.replace('_', ' ')} {v / 60:.1f}" for k, v in seconds.items() if is_number(v)]
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
