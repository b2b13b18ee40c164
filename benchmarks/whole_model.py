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
Results: printed, and JSON to benchmarks/results/<device>_whole_model.json. The options, the process per
configuration, the timed steps and the results file are benchmarks/bench.py's.
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402
from bench import (  # noqa: E402
    arguments,
    child,
    memory_measure,
    peak_bytes,
    run_all,
    run_meta,
    time_steps,
    tinystories_8m,
    write_results,
)

import l3d  # noqa: E402

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

    times, cpu_times, before = time_steps(step, batches, cfg["warmup"], device, time.process_time)   # all threads
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
        "memory_measure": memory_measure(device),
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
    args = arguments(__doc__, ["embedded", "tinystories"], device="cpu").parse_args()
    if args.one:
        return child(args.one, measure)
    device = l3d.resolve_device(args.device).type
    results = run_all(configurations(args.setting, device, args.steps), describe, __file__)
    name = f"{device}_whole_model.json" if args.setting == "all" else f"{device}_whole_model_{args.setting}.json"
    write_results(Path(args.out), name, results, run_meta(device, load_average=True))


if __name__ == "__main__":
    main()
