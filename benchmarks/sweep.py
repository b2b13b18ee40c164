"""Batched decompositions: how many toy decompositions per second S members trained as one program give.

    python benchmarks/sweep.py                      # S = 1, 4, 16, 64 on TMS 5-2, TMCS and x², 1 and 2 threads
    python benchmarks/sweep.py --toys tms --members 1 16 --threads 1

Each toy as its notebook decomposes it at paper scale (1000 samples, batch 32, every tensor, its subnetworks and
rank; dense gradients): S decompositions, each with a toy and samples of its own (`l3d.sweep`, as the notebooks'
seeds). "starts" mode: the S members share one toy and one source (`restarts`, the stability reruns of one seed),
so one gradient pass serves them all. Each configuration is timed twice after a warm-up, for `short` and for
`short + epochs` epochs, in CPU seconds of the process (robust to other work on the machine): the difference over
`epochs` is the time per epoch of the training itself, the rest the setup (collectors, starts, stacking); every S
is timed once per repeat, in turn, and each number is the median over the repeats. Reported
per (toy, mode, S, threads): wall-clock and CPU seconds per epoch (CPU: of every thread, and robust to other work
on the machine), setup seconds, and from them (`summarize`) decompositions per second at the notebooks' 1000 epochs
and the time of S against S = 1, both in wall-clock time.
Results: printed, and written to benchmarks/results/sweep_cpu.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import l3d  # noqa: E402
from l3d.experiments.toys import TMS, circuit_superposition, sparse_features, square_mlp, weight_bias_ranks  # noqa: E402
from l3d.runtime.environment import cpu_model, environment  # noqa: E402


def toy(name: str, seed: int) -> tuple[torch.nn.Module, list[str], torch.Tensor, l3d.L3DConfig]:
    """One member's model, tensors, 1000 samples and settings (the notebooks' paper-scale L3D settings)."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(20_000 + seed)
    base = l3d.L3DConfig(batch_size=32, chunk_size=992, engine="dense", seed=seed)
    if name == "tms":
        model, tensors = TMS(5, 2).untied(), ["W_in", "W_out", "b"]
        return model, tensors, sparse_features(1000, 5, 0.05, generator=generator), base.replace(n_subnetworks=5)
    if name == "tmcs":
        model = circuit_superposition(10, 5, "authors")
        return (model, ["*"], sparse_features(1000, 10, 0.05, generator=generator, drop_zero=True),
                base.replace(n_subnetworks=10))
    model = square_mlp(5, 10, 4, "authors")
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    x = sparse_features(1000, 5, 0.05, low=-1.0, high=1.0, generator=generator, drop_zero=True)
    return model, ["*"], x, base.replace(n_subnetworks=5, rank=weight_bias_ranks(shapes, 2, 1))


def time_sweep(name: str, members: int, mode: str, epochs: int) -> tuple[float, float]:
    """CPU and wall-clock seconds of `members` decompositions of `name` trained `epochs` epochs as one program (after
    a warm-up)."""
    jobs = [toy(name, 0 if mode == "starts" else s) for s in range(members)]
    model, tensors, x, config = jobs[0]
    if mode == "starts":
        configs = ([config.replace(restarts=members, restart_epochs=None, epochs=epochs)] if members > 1
                   else [config.replace(epochs=epochs)])
        models, inputs = [model], [x]
    else:
        configs = [c.replace(epochs=epochs) for *_, c in jobs]
        models, inputs = [m for m, *_ in jobs], [j[2] for j in jobs]
    l3d.sweep(models, inputs, tensors, [c.replace(epochs=1) for c in configs], progress=False)   # warm-up
    started, wall = time.process_time(), time.perf_counter()   # CPU seconds of this process: robust to others' work
    l3d.sweep(models, inputs, tensors, configs, progress=False)
    return time.process_time() - started, time.perf_counter() - wall


def time_members(name: str, members: int, mode: str, short: int, epochs: int) -> tuple[float, float, float]:
    """CPU seconds per epoch, setup CPU seconds and wall-clock seconds per epoch of `members` decompositions, from
    runs of `short` and `short + epochs` epochs."""
    (brief, brief_wall), (long, long_wall) = (time_sweep(name, members, mode, e) for e in (short, short + epochs))
    per_epoch = (long - brief) / epochs
    return per_epoch, max(brief - short * per_epoch, 0.0), (long_wall - brief_wall) / epochs


def summarize(rows: list[dict], notebook_epochs: int) -> list[dict]:
    """Each row with what follows from its measurements: a whole decomposition of `notebook_epochs` epochs takes
    setup + notebook_epochs × the wall-clock time per epoch (what a user waits; the setup's CPU time stands for its
    wall time, at most a second); decompositions per second; the time of S against S = 1 of the same toy, mode and
    thread count (per epoch and whole)."""
    out, single = [], {}
    for row in rows:
        whole = row["setup_seconds"] + notebook_epochs * row["wall_seconds_per_epoch"]
        key = (row["toy"], row["mode"], row["threads"])
        if row["members"] == 1:
            single[key] = (row["wall_seconds_per_epoch"], whole)
        one = single.get(key)
        out.append({**row, "decomposition_seconds": whole, "decompositions_per_second": row["members"] / whole,
                    "epoch_time_vs_one": row["wall_seconds_per_epoch"] / one[0] if one else None,
                    "time_vs_one": whole / one[1] if one else None})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    parser.add_argument("--toys", nargs="+", default=["tms", "tmcs", "square"], choices=["tms", "tmcs", "square"])
    parser.add_argument("--members", nargs="+", type=int, default=[1, 4, 16, 64])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--modes", nargs="+", default=["seeds", "starts"], choices=["seeds", "starts"])
    parser.add_argument("--short", type=int, default=2,
                        help="epochs of the shorter run (its time less its epochs: setup)")
    parser.add_argument("--epochs", type=int, default=10, help="epochs the longer run adds (per-epoch time from them)")
    parser.add_argument("--notebook-epochs", type=int, default=1000,
                        help="epochs of a whole decomposition (the notebooks')")
    parser.add_argument("--repeats", type=int, default=3, help="timings per configuration; the median is reported")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "sweep_cpu.json"))
    parser.add_argument("--summarize", metavar="FILE",
                        help="measure nothing: write FILE's derived numbers anew from its measurements (summarize)")
    args = parser.parse_args()
    if args.summarize:
        record = json.loads(Path(args.summarize).read_text())
        record["rows"] = summarize(record["rows"], record["settings"]["notebook_epochs"])
        Path(args.summarize).write_text(json.dumps(record, indent=1))
        print(f"summarized {args.summarize}")
        return
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        os.environ["L3D_THREADS"] = str(threads)    # what l3d.fit and the toys' training take (l3d.runtime.threads)
        for name in args.toys:
            for mode in args.modes:
                # every S once per repeat, in turn, so that a slower spell of a shared machine falls on all of them
                runs = {members: [] for members in args.members}
                for _ in range(args.repeats):
                    for members in args.members:
                        runs[members].append(time_members(name, members, mode, args.short, args.epochs))
                for members, timings in runs.items():
                    seconds, setup, wall = (statistics.median(t[i] for t in timings) for i in range(3))
                    rows.append({"toy": name, "mode": mode, "members": members, "threads": threads,
                                 "seconds_per_epoch": seconds, "setup_seconds": setup, "wall_seconds_per_epoch": wall,
                                 "wall_seconds_per_epoch_runs": [t[2] for t in timings]})
                    row = summarize(rows, args.notebook_epochs)[-1]
                    print(f"{name:6s} {mode:6s} S={members:3d} threads={threads}: {wall * 1000:7.1f} ms/epoch wall "
                          f"({seconds * 1000:7.1f} CPU), setup {setup:5.2f} s, {row['decompositions_per_second']:.4f} "
                          f"decompositions/s, {row['time_vs_one']:.2f}x the time of one", flush=True)
    record = {"rows": summarize(rows, args.notebook_epochs), "settings": vars(args),
              "environment": environment("cpu", ROOT), "machine": cpu_model()}
    Path(args.out).write_text(json.dumps(record, indent=1))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
