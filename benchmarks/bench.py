"""Speed and memory of an L3D training step: ours against the authors' approach, on the paper's settings.

    python benchmarks/bench.py --device cuda                  # every setting, full size
    python benchmarks/bench.py --device cpu --setting tms     # one setting

Settings (spec §4, issue 6):
  transformer  GPT-Neo with TinyStories-8M's configuration (random weights), attention block of layer 4
               (q, k, v, out projections and out bias), Tucker rank 25, 100 subnetworks, k = 0.1,
               16 texts × 16 tokens per step, KL against random other positions.
  tms          toy model of superposition (5 features, 2 hidden), 5 subnetworks of rank 1, batch 32,
               1000 samples; a step as `l3d.fit` takes it (gradients once per epoch, amortized).
  scale        every attention and MLP tensor of all 8 layers at once, same ranks; memory against
               tokens per step and against the number of subnetworks.

A step is: per-sample gradients of a fresh batch (transformer, scale), the loss, its backward, Adam and
decoder normalization. "ours" is `l3d` as shipped (factored engine, loss from projections and the
decoder Gram, fused Adam). "baseline" reproduces the authors' approach: every per-sample gradient
materialized (vmap of grad, one backward per position through the whole model), the reconstruction
ĝ = (m ⊙ c) D materialized, plain Adam.

Each configuration runs in its own process so that peak memory is its own: on CUDA
torch.cuda.max_memory_allocated; on CPU the growth of the process's peak resident set size
(ru_maxrss) over the moment before the first step, which counts the model's activations and
everything the step allocates (not the model's weights).
Results: printed, and written as JSON to benchmarks/results/<device>.json; the scale plot goes to
figures/benchmarks/ (PNG and PDF).

The scaffolding here is shared with benchmarks/whole_model.py: the options (`arguments`), one process per
configuration (`run_all`, `run_child`, `child`), the timed steps (`time_steps`, `peak_bytes`, `memory_measure`) and
the results file (`run_meta`, `write_results`).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import l3d  # noqa: E402
from l3d.report.results import write_metrics  # noqa: E402

RANK, N_SUB, TOP_K = 25, 100, 0.1


# --- models and tensors ---------------------------------------------------------------------------
def tinystories_8m() -> torch.nn.Module:
    """GPT-Neo with TinyStories-8M's configuration (its public config.json), random weights."""
    from transformers import GPTNeoConfig, GPTNeoForCausalLM

    config = GPTNeoConfig(
        vocab_size=50257, hidden_size=256, num_layers=8, num_heads=16, max_position_embeddings=2048,
        attention_types=[[["global", "local"], 4]], window_size=256, intermediate_size=None,
        activation_function="gelu_new", layer_norm_epsilon=1e-5, attn_implementation="eager",
    )
    torch.manual_seed(0)
    return GPTNeoForCausalLM(config).eval()


def attention_block(layer: int = 4) -> list[str]:
    a = f"transformer.h.{layer}.attn.attention"
    return [f"{a}.q_proj.weight", f"{a}.k_proj.weight", f"{a}.v_proj.weight", f"{a}.out_proj.weight",
            f"{a}.out_proj.bias"]


def all_blocks(layers: int) -> list[str]:
    mlp = [f"transformer.h.{i}.mlp.{m}.{p}"
           for i in range(layers) for m in ("c_fc", "c_proj") for p in ("weight", "bias")]
    return [n for i in range(layers) for n in attention_block(i)] + mlp


# --- the authors' approach --------------------------------------------------------------------------
def materialized_loss(dec: l3d.Decomposition, grads: l3d.DenseGradients) -> torch.Tensor:
    """Reconstruction error with every per-sample reconstruction built: Σ ||g − (m ⊙ c) D||² / Σ ||g||²."""
    g = grads.flat()
    E = torch.cat([t.full().flatten(1) for t in dec.encoder], 1)
    D = torch.cat([t.full().flatten(1) for t in dec.decoder], 1)
    c = g @ E.T
    g_hat = (c * l3d.batch_top_k(c, dec.top_k)) @ D
    return (g - g_hat).pow(2).sum() / g.pow(2).sum()


def baseline_normalize(dec: l3d.Decomposition) -> None:
    with torch.no_grad():
        D = torch.cat([t.full().flatten(1) for t in dec.decoder], 1)
        norms = D.norm(dim=1)
        for t in dec.decoder:
            t.core.div_(norms.view(-1, *([1] * len(t.shape))))


# --- one configuration, measured in this process ----------------------------------------------------
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024   # Linux: KiB


def memory_measure(device: torch.device) -> str:
    """What `peak_bytes` counts on `device`, as the results record it."""
    return ("torch.cuda.max_memory_allocated" if device.type == "cuda"
            else "growth of peak RSS (ru_maxrss) during the steps")


def time_steps(step: Callable[[torch.Tensor], None], batches: list[torch.Tensor], warmup: int, device: torch.device,
               cpu_clock: Callable[[], float] = time.thread_time) -> tuple[list[float], list[float], int]:
    """step(x) for every batch x: the wall and CPU (`cpu_clock`) seconds of each after the first `warmup`, and
    `peak_bytes` before the first. Libraries are warmed up on a tiny slice of the first batch (2 × 4 tokens) before
    that, so that on CPU the growth of the peak RSS is the steps' own; on CUDA the peak is reset there."""
    step(batches[0][:2, :4])
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    before = peak_bytes(device)
    times, cpu_times = [], []
    for i, x in enumerate(batches):
        sync(device)
        t0, c0 = time.perf_counter(), cpu_clock()
        step(x)
        sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
            cpu_times.append(cpu_clock() - c0)
    return times, cpu_times, before


def measure(cfg: dict) -> dict:
    device = l3d.resolve_device(cfg["device"])
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = cfg.get("tf32", False)
    torch.manual_seed(0)
    baseline = cfg["mode"] == "baseline"
    if cfg["setting"] == "tms":
        return measure_tms(cfg, device, baseline)
    model = tinystories_8m().to(device)
    tensors = attention_block(4) if cfg["setting"] == "transformer" else all_blocks(cfg.get("layers", 8))
    texts, tokens = cfg["texts"], cfg["tokens"]
    collector = l3d.GradientCollector(
        model, tensors, divergence="kl", sequence=True, forward=lambda m, x: m(x).logits,
        gradient_chunk_size=texts, engine="dense" if baseline else "auto",
    )
    collector.cut_head = not baseline
    dec = l3d.Decomposition(collector.shapes, cfg["subnetworks"], rank=RANK, top_k=TOP_K, seed=0).to(device)
    optimizer = torch.optim.Adam(dec.parameters(), lr=1e-3, fused=not baseline)
    generator = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, 50257, (texts, tokens), generator=generator).to(device)
               for _ in range(cfg["warmup"] + cfg["steps"])]

    def step(x):
        grads = collector(x, generator=generator)
        loss = materialized_loss(dec, grads) if baseline else dec.loss(grads).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        baseline_normalize(dec) if baseline else dec.normalize_decoder_()

    times, cpu_times, before = time_steps(step, batches, cfg["warmup"], device)   # CPU time of this thread
    seconds = statistics.median(times)
    return {
        **cfg,
        "n_w": sum(torch.Size(s).numel() for s in collector.shapes.values()),
        "seconds_per_step": seconds,
        "cpu_seconds_per_step": statistics.median(cpu_times),
        "step_times": times,
        "token_gradients_per_s": texts * tokens / seconds,
        "peak_bytes": peak_bytes(device) - (0 if device.type == "cuda" else before),
        "model_and_weights_bytes": before if device.type == "cuda" else None,
        "memory_measure": memory_measure(device),
    }


def measure_tms(cfg: dict, device: torch.device, baseline: bool) -> dict:
    """Steps as `l3d.fit` takes them: gradients of all 1000 samples once per epoch, then 31 steps of 32."""
    from l3d.experiments.toys import TMS, sparse_features

    model = TMS().untied().to(device)
    inputs = sparse_features(1000, 5, generator=torch.Generator().manual_seed(0)).to(device)
    collector = l3d.GradientCollector(model, ["W_in", "W_out", "b"], divergence="mse", gradient_chunk_size=1000)
    source = l3d.GradientSource(collector, inputs, batch_size=32, chunk_size=992)
    dec = l3d.Decomposition(collector.shapes, 5, rank=1, top_k=TOP_K, seed=0).to(device)
    epochs = cfg["steps"]
    if baseline:
        optimizer = torch.optim.Adam(dec.parameters(), lr=0.01)

        def run(n):
            for _ in range(n):
                for grads in source:
                    loss = materialized_loss(dec, grads)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    baseline_normalize(dec)
    else:
        def run(n):
            l3d.fit(dec, source, epochs=n, progress=False)

    run(cfg["warmup"])
    sync(device)
    before = peak_bytes(device)
    walls, cpus = [], []
    for _ in range(cfg["repeats"]):
        t0, c0 = time.perf_counter(), time.thread_time()
        run(epochs)
        sync(device)
        walls.append((time.perf_counter() - t0) / (epochs * len(source)))
        cpus.append((time.thread_time() - c0) / (epochs * len(source)))
    return {
        **cfg,
        "seconds_per_step": statistics.median(walls),
        "cpu_seconds_per_step": statistics.median(cpus),
        "best_seconds_per_step": min(walls),
        "best_cpu_seconds_per_step": min(cpus),
        "step_times": walls,
        "cpu_step_times": cpus,
        "token_gradients_per_s": 32 / statistics.median(walls),
        "peak_bytes": peak_bytes(device) - before if device.type == "cpu" else torch.cuda.max_memory_allocated(device),
        "memory_measure": memory_measure(device),
    }


# --- the driver -------------------------------------------------------------------------------------------
def configurations(args, device: str) -> list[dict]:
    cpu = device == "cpu"
    steps = args.steps or (3 if cpu else 20)
    base = {"device": device, "warmup": 1 if cpu else 3, "steps": steps, "tf32": args.tf32}
    out = []
    if args.setting in ("tms", "all"):
        for mode in args.modes:
            out.append({**base, "setting": "tms", "mode": mode, "steps": args.steps or 10, "warmup": 2, "repeats": 9})
    if args.setting in ("transformer", "all"):
        for mode in args.modes:
            out.append({**base, "setting": "transformer", "mode": mode, "texts": 16, "tokens": 16, "subnetworks": N_SUB,
                        "steps": 1 if cpu and mode == "baseline" else steps})
    if args.setting in ("scale", "all"):
        # CPU: 2 of the 8 layers and fewer tokens (the shared 2-core machine); CUDA: the full model
        layers = 2 if cpu else 8
        grid = [(4, 16), (16, 16), (32, 32)] if cpu else [(4, 16), (16, 16), (32, 32), (64, 64)]
        for texts, tokens in grid:
            out.append({**base, "setting": "scale", "mode": "ours", "texts": texts, "tokens": tokens,
                        "subnetworks": N_SUB, "layers": layers, "steps": 1 if cpu else 5})
        for c in (25, 50, 200):
            out.append({**base, "setting": "scale", "mode": "ours", "texts": 16, "tokens": 16,
                        "subnetworks": c, "layers": layers, "steps": 1 if cpu else 5})
        if "baseline" in args.modes:
            out.append({**base, "setting": "scale", "mode": "baseline", "texts": 4, "tokens": 16,
                        "subnetworks": N_SUB, "layers": layers, "steps": 1})
    return out


def describe(r: dict) -> str:
    what = f"{r['setting']:<11} {r['mode']:<8}"
    if r["setting"] != "tms":
        what += f" {r['texts']:>2}x{r['tokens']:<2} C={r['subnetworks']:<3}"
        if r["setting"] == "scale":
            what += f" layers={r['layers']}"
    if "error" in r:
        return f"{what}  FAILED: {r['error']}"
    extra = f"  (thread CPU {r['cpu_seconds_per_step'] * 1e3:.3f} ms)" if r["device"] == "cpu" else ""
    if "best_seconds_per_step" in r:
        extra += (f"  best of {r['repeats']}: {r['best_seconds_per_step'] * 1e3:.3f} ms "
                  f"(CPU {r['best_cpu_seconds_per_step'] * 1e3:.3f})")
    return (f"{what}  {r['seconds_per_step'] * 1e3:10.3f} ms/step{extra}  {r['token_gradients_per_s']:10.0f} "
            f"token-gradients/s  peak {r['peak_bytes'] / 2**20:9.1f} MiB")


def plot_scale(results: list[dict], out_dir: Path, device: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from l3d.report.results import save_figure

    ok = [r for r in results if r["setting"] == "scale" and r["mode"] == "ours" and "error" not in r]
    base = [r for r in results if r["setting"] == "scale" and r["mode"] == "baseline" and "error" not in r]
    if not ok:
        return
    ylabel = "peak memory (GiB)" if device == "cuda" else "peak RSS growth (GiB)"
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    by_tokens = sorted((r for r in ok if r["subnetworks"] == N_SUB), key=lambda r: r["texts"] * r["tokens"])
    axes[0].plot([r["texts"] * r["tokens"] for r in by_tokens], [r["peak_bytes"] / 2**30 for r in by_tokens], "o-",
                 label="l3d")
    if base:
        axes[0].plot([r["texts"] * r["tokens"] for r in base], [r["peak_bytes"] / 2**30 for r in base], "x",
                     color="C3", markersize=9, label="authors' approach")
    axes[0].legend()
    axes[0].set(xscale="log", xlabel="tokens per step (texts × tokens)", ylabel=ylabel, title=f"C = {N_SUB}")
    by_c = sorted((r for r in ok if r["texts"] * r["tokens"] == 256), key=lambda r: r["subnetworks"])
    axes[1].plot([r["subnetworks"] for r in by_c], [r["peak_bytes"] / 2**30 for r in by_c], "o-")
    axes[1].set(xlabel="subnetworks C", ylabel=ylabel, title="16 × 16 tokens")
    layers = ok[0]["layers"]
    fig.suptitle(f"L3D on all attention and MLP tensors of {layers} GPT-Neo layers ({device})")
    fig.tight_layout()
    save_figure(fig, out_dir, f"scale_memory_{device}")
    plt.close(fig)


# --- the scaffolding: options, one process per configuration, the results file --------------------------
def arguments(doc: str, settings: list[str], device: str = "auto",
              steps_help: str = "timed steps per configuration") -> argparse.ArgumentParser:
    """The options of a benchmark script (`doc`: its docstring): --device (`device` by default), --setting ("all" or
    one of `settings`), --steps, --out (default benchmarks/results/) and the hidden --one that `run_child` passes."""
    named = [f"{d} (default)" if d == device else d for d in ("cpu", "cuda", "auto")]
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--device", default=device, help=f"{named[0]}, {named[1]} or {named[2]}")
    parser.add_argument("--setting", default="all", choices=["all", *settings])
    parser.add_argument("--steps", type=int, default=None, help=steps_help)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--one", help=argparse.SUPPRESS)
    return parser


def child(one: str, measure: Callable[[dict], dict]) -> None:
    """In the process `run_child` started: measure the configuration `one` (JSON) on OMP_NUM_THREADS threads and
    print its result as the last line of JSON."""
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    print(json.dumps(measure(json.loads(one))))


def run_child(cfg: dict, script: str | Path = __file__) -> dict:
    """`cfg` measured by `script --one` in a process of its own, so that its peak memory is its own; a failure is
    the configuration with "error": the last line the process wrote."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, str(script), "--one", json.dumps(cfg)], capture_output=True, text=True,
                          env=env)
    if proc.returncode:
        return {**cfg, "error": (proc.stderr or proc.stdout).strip().splitlines()[-1:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_all(configs: list[dict], describe: Callable[[dict], str], script: str | Path = __file__) -> list[dict]:
    """Every configuration measured in turn (`run_child`), each result printed (`describe`) as it comes."""
    results = []
    for cfg in configs:
        results.append(run_child(cfg, script))
        print(describe(results[-1]), flush=True)
    return results


def cpu_name() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def run_meta(device: str, load_average: bool = False) -> dict:
    """What a results file records of the run: the date, the device's name, its cores, OMP_NUM_THREADS, the load
    average when asked, torch's version and the command."""
    meta = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "device": torch.cuda.get_device_name() if device == "cuda" else cpu_name(),
            "cpu_count": os.cpu_count(), "threads": os.environ.get("OMP_NUM_THREADS")}
    if load_average:
        meta["load_average"] = os.getloadavg()
    return {**meta, "torch": torch.__version__, "command": " ".join(sys.argv)}


def write_results(out: Path, name: str, results: list[dict], meta: dict) -> None:
    """out/name: {"meta": meta, "results": results}."""
    write_metrics(out, {"meta": meta, "results": results}, name)
    print(f"wrote {out / name}")


def main() -> None:
    parser = arguments(__doc__, ["transformer", "tms", "scale"], steps_help="timed steps (epochs for tms)")
    parser.add_argument("--modes", nargs="+", default=["ours", "baseline"], choices=["ours", "baseline"])
    parser.add_argument("--tf32", action="store_true", help="allow TF32 matmuls on CUDA")
    parser.add_argument("--replot", action="store_true", help="only redraw the scale plot from the saved JSON")
    args = parser.parse_args()
    if args.one:
        return child(args.one, measure)
    device = l3d.resolve_device(args.device).type
    if args.replot:
        saved = [json.loads(p.read_text())["results"] for p in Path(args.out).glob(f"{device}*.json")]
        plot_scale([r for rs in saved for r in rs], ROOT / "figures" / "benchmarks", device)
        return
    results = run_all(configurations(args, device), describe)
    name = device if args.setting == "all" else f"{device}_{args.setting}"
    write_results(Path(args.out), f"{name}.json", results, run_meta(device))
    plot_scale(results, ROOT / "figures" / "benchmarks", device)


if __name__ == "__main__":
    main()
