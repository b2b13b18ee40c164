"""Memory and step time of whole-model L3D (every attention and MLP tensor of every layer at once, notebook 08).

    python benchmarks/whole_model.py                   # CPU: the embedded model and TinyStories-8M (random weights)
    python benchmarks/whole_model.py --device cuda     # the same on a GPU
    python benchmarks/whole_model.py --setting embedded

Settings:
  embedded     notebook 08's: the shipped story GPT-Neo (2 layers, width 32: 18 tensors, 24,960 weights), 200
               subnetworks of Tucker rank 8, 16 texts x 16 tokens per step; the dense engine (notebook 08's) and the
               factored one.
  tinystories  TinyStories-8M's configuration with random weights (benchmarks/bench.py), the attention and MLP tensors
               of all 8 layers (64 tensors, 6.3 million weights), the paper's 100 subnetworks of rank 25, factored
               engine; 16 x 16 tokens per step as the paper, and 4 x 16. (Dense gradients of 256 tokens alone would
               hold 256 x 6.3 million floats, 6.4 GB.)

A step as `l3d.fit` takes it: per-token gradients of a fresh batch (KL against random other positions), the loss, its
backward, Adam, decoder normalization. Each configuration runs in its own process, so that its peak memory is its
own: on CPU the growth of the process's peak resident set size (ru_maxrss) over the moment before the first step
(activations and everything a step allocates, not the model's weights); on CUDA torch.cuda.max_memory_allocated.
Step times: the median over the timed steps, wall clock and the CPU time of the process (all its threads).
From the step time follows what a whole run costs: steps per epoch x epochs (notebook 08: 1,000 texts of 16 per step,
8 epochs; the paper's TinyStories run: 10,000 texts, 100 epochs).
Results: printed, and JSON to benchmarks/results/<device>_whole_model.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402
from bench import cpu_name, peak_bytes, sync, tinystories_8m  # noqa: E402

import l3d  # noqa: E402
from l3d.report.results import write_metrics  # noqa: E402

# a whole run at each setting: (texts, epochs), for the cost of a run from the step time
RUNS = {"embedded": {"notebook 08": (1_000, 8)}, "tinystories": {"the paper's run": (10_000, 100)}}


def model_and_tensors(setting: str) -> tuple[torch.nn.Module, list[str], int]:
    """The model, its whole-model tensors and its vocabulary size."""
    from l3d.experiments.transformer import story_model
    from l3d.experiments.whole_model import whole_model_tensors

    if setting == "embedded":
        model, _ = story_model(progress=False)
    else:
        model = tinystories_8m().requires_grad_(False)
    return model, whole_model_tensors(model), model.config.vocab_size


def measure(cfg: dict) -> dict:
    """Steps of one configuration in this process: seconds (wall and CPU) per step and the peak memory."""
    device = l3d.resolve_device(cfg["device"])
    torch.manual_seed(0)
    model, tensors, vocab = model_and_tensors(cfg["setting"])
    model = model.to(device)
    texts, tokens = cfg["texts"], cfg["tokens"]
    collector = l3d.GradientCollector(model, tensors, divergence="kl", sequence=True, forward=lambda m, x: m(x).logits,
                                      gradient_chunk_size=texts, engine=cfg["engine"])
    dec = l3d.Decomposition(collector.shapes, cfg["subnetworks"], rank=cfg["rank"], top_k=0.1, seed=0).to(device)
    optimizer = torch.optim.Adam(dec.parameters(), lr=1e-3, fused=True)
    generator = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, vocab, (texts, tokens), generator=generator).to(device)
               for _ in range(cfg["warmup"] + cfg["steps"])]

    def step(x):
        grads = collector(x, generator=generator)
        loss = dec.loss(grads).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        dec.normalize_decoder_()

    step(batches[0][:2, :4])        # libraries warmed up on a tiny batch, so the peak-RSS growth is the steps' own
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    before = peak_bytes(device)
    times, cpu_times = [], []
    for i, x in enumerate(batches):
        sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        step(x)
        sync(device)
        if i >= cfg["warmup"]:
            times.append(time.perf_counter() - t0)
            cpu_times.append(time.process_time() - c0)
    seconds, cpu_seconds = statistics.median(times), statistics.median(cpu_times)
    runs = {}
    for name, (n_texts, epochs) in RUNS[cfg["setting"]].items():
        steps = n_texts // 16 * epochs     # the runs take 16 texts per step
        scale = 16 * 16 / (texts * tokens)  # this configuration's step time scaled to 16 x 16 tokens, linearly
        runs[name] = {"texts": n_texts, "epochs": epochs, "steps": steps,
                      "hours_wall": steps * seconds * scale / 3600, "hours_cpu": steps * cpu_seconds * scale / 3600}
    return {
        **cfg,
        "n_tensors": len(collector.shapes),
        "n_weights": sum(torch.Size(s).numel() for s in collector.shapes.values()),
        "seconds_per_step": seconds, "cpu_seconds_per_step": cpu_seconds, "step_times": times,
        "token_gradients_per_s": texts * tokens / seconds,
        "peak_bytes": peak_bytes(device) - (0 if device.type == "cuda" else before),
        "memory_measure": "torch.cuda.max_memory_allocated" if device.type == "cuda"
        else "growth of peak RSS (ru_maxrss) during the steps",
        "runs": runs,
    }


def configurations(setting: str, device: str, steps: int | None) -> list[dict]:
    cpu = device == "cpu"
    out = []
    if setting in ("embedded", "all"):
        for engine in ("dense", "factored"):
            out.append({"setting": "embedded", "device": device, "engine": engine, "texts": 16, "tokens": 16,
                        "subnetworks": 200, "rank": 8, "warmup": 2, "steps": steps or (10 if cpu else 20)})
    if setting in ("tinystories", "all"):
        for texts in (4, 16):
            out.append({"setting": "tinystories", "device": device, "engine": "factored", "texts": texts, "tokens": 16,
                        "subnetworks": 100, "rank": 25, "warmup": 1, "steps": steps or (1 if cpu else 5)})
    return out


def run_child(cfg: dict) -> dict:
    import subprocess

    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, __file__, "--one", json.dumps(cfg)], capture_output=True, text=True, env=env)
    if proc.returncode:
        return {**cfg, "error": (proc.stderr or proc.stdout).strip().splitlines()[-1:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def describe(r: dict) -> str:
    what = (f"{r['setting']:<11} {r['engine']:<8} {r['texts']:>2}x{r['tokens']:<2} C={r['subnetworks']:<3} "
            f"rank {r['rank']:<2}")
    if "error" in r:
        return f"{what} failed: {r['error']}"
    runs = "; ".join(f"{name}: {v['steps']:,} steps, {v['hours_wall']:.2f} h ({v['hours_cpu']:.2f} h CPU)"
                     for name, v in r["runs"].items())
    return (f"{what} {r['n_weights']:>9,} weights  {r['seconds_per_step']:7.3f} s/step "
            f"({r['cpu_seconds_per_step']:.3f} s CPU)  peak {r['peak_bytes'] / 2**20:8.1f} MiB  {runs}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    parser.add_argument("--setting", default="all", choices=["all", "embedded", "tinystories"])
    parser.add_argument("--steps", type=int, default=None, help="timed steps per configuration")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
        print(json.dumps(measure(json.loads(args.one))))
        return
    device = l3d.resolve_device(args.device).type
    results = []
    for cfg in configurations(args.setting, device, args.steps):
        results.append(run_child(cfg))
        print(describe(results[-1]), flush=True)
    meta = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "device": torch.cuda.get_device_name() if device == "cuda" else cpu_name(),
            "cpu_count": os.cpu_count(), "threads": os.environ.get("OMP_NUM_THREADS"),
            "load_average": os.getloadavg(), "torch": torch.__version__, "command": " ".join(sys.argv)}
    name = f"{device}_whole_model.json" if args.setting == "all" else f"{device}_whole_model_{args.setting}.json"
    write_metrics(Path(args.out), {"meta": meta, "results": results}, name)
    print(f"wrote {Path(args.out) / name}")


if __name__ == "__main__":
    main()
