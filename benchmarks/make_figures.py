"""How long `make figures` takes on this machine: every notebook at paper scale, then the comparison and make docs.

    python benchmarks/make_figures.py                 # JOBS=2; benchmarks/results/make_figures_cpu.json
    python benchmarks/make_figures.py --jobs 1 --out /tmp/one_job.json

Every notebook is made to run (their files' modification times set to now, nothing deleted), so the run is what
`make -B figures` does without installing the environment again. Recorded: the wall-clock minutes of the whole
command, each notebook's own minutes (papermill's duration, in figures/<notebook>/<notebook>.ipynb), the machine's
load average sampled every 30 s while it ran, from 30 s after the start (the 1-minute average: about JOBS when
nothing else runs), the commit and the machine. The command's output goes to the terminal as it runs.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from l3d.runtime.environment import cpu_model, git_commit  # noqa: E402


def sample_load(samples: list[float], stop: threading.Event, every: float = 30.0) -> None:
    """Append the 1-minute load average every `every` seconds until `stop` is set."""
    while not stop.wait(every):
        samples.append(os.getloadavg()[0])


def notebook_minutes() -> dict[str, float]:
    """Each executed notebook's own run time, from papermill's record: {"01": minutes, ...}."""
    minutes = {}
    for executed in sorted(ROOT.glob("figures/[0-9][0-9]_*/[0-9][0-9]_*.ipynb")):
        duration = json.loads(executed.read_text()).get("metadata", {}).get("papermill", {}).get("duration")
        if duration is not None:
            minutes[executed.name[:2]] = round(duration / 60, 2)
    return minutes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    parser.add_argument("--jobs", type=int, default=2, help="notebooks run at once (make's JOBS)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "make_figures_cpu.json"))
    parser.add_argument("--note", default="", help="what else the machine did, or anything to keep with the numbers")
    args = parser.parse_args()
    now = time.time()
    for notebook in ROOT.glob("notebooks/[0-9][0-9]_*.ipynb"):
        os.utime(notebook, (now, now))           # newer than its figures: make runs it again
    samples, stop = [], threading.Event()          # sampled from 30 s after the start on
    sampler = threading.Thread(target=sample_load, args=(samples, stop), daemon=True)
    sampler.start()
    started = time.perf_counter()
    result = subprocess.run(["make", "figures", f"JOBS={args.jobs}"], cwd=ROOT)
    wall = time.perf_counter() - started
    stop.set()
    if result.returncode:
        sys.exit(f"make figures failed (exit status {result.returncode}); nothing recorded")
    minutes = notebook_minutes()
    commit = git_commit(ROOT)
    record = {
        "command": f"make figures JOBS={args.jobs}, every notebook made to run (benchmarks/make_figures.py)",
        "commit": commit["commit"][:7] if commit else None,
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{cpu_model()}, {os.cpu_count()} cores",
        "wall_minutes": round(wall / 60, 1),
        "notebook_minutes": minutes,
        "notebook_minutes_sum": round(sum(minutes.values()), 1),
        "load_average_during": f"{min(samples):.1f}-{max(samples):.1f}" if samples else None,
        "note": args.note,
    }
    out = Path(args.out)
    partial = out.with_name(f".{out.name}.partial")
    partial.write_text(json.dumps(record, indent=1) + "\n")
    partial.replace(out)
    print(f"make figures: {record['wall_minutes']} min wall; notebooks {minutes}; load {record['load_average_during']}"
          f"; written to {out}")


if __name__ == "__main__":
    main()
