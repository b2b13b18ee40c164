"""Time and size of the subnetwork dashboard at notebook 05's default scale (issue 19: under 2 minutes on
2 CPU cores, under 20 MB, for 200 subnetworks).

    OMP_NUM_THREADS=1 python benchmarks/dashboard.py                 # writes benchmarks/results/dashboard.json
    python benchmarks/dashboard.py --model-steps 3000 --epochs 8     # the notebook's own model and fit

The setting is notebook 05's embedded default: the width-32 2-layer story GPT-Neo, its layer-1 attention
block, 200 subnetworks of rank 8, 2000 held-out texts of 16 tokens (32,000 samples), impacts with 4
references, 20 top samples and 5 outputs per subnetwork. The model is trained for --model-steps (cached)
and the decomposition fitted for --epochs on 1000 texts: both only change what the page says, not its
cost. Timed apart: the impacts (the notebook computes them anyway and hands them to `collect`), `collect`,
and `render`; with chromium installed also loading the page and drawing a subnetwork page in it.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import torch

import l3d
from l3d.experiments.corpus import story_corpus
from l3d.experiments.transformer import SETTINGS, attention_tensors, logits, story_model
from l3d.report.dashboard import collect, render

ROOT = Path(__file__).resolve().parents[1]


def folder_size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.iterdir() if f.is_file())


def chromium_seconds(index: Path, screenshot: Path) -> float | None:
    """Wall time of headless Chromium opening the page at a subnetwork and writing a screenshot."""
    chromium = shutil.which("chromium")
    if chromium is None:
        return None
    with tempfile.TemporaryDirectory() as profile:
        start = time.perf_counter()
        subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        f"--user-data-dir={profile}", "--hide-scrollbars", "--window-size=1280,1000",
                        f"--screenshot={screenshot}", index.as_uri() + "#s/0"],
                       check=True, capture_output=True, timeout=120)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-steps", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "l3d-dashboard-benchmark")
    args = parser.parse_args()
    s = SETTINGS["embedded"]
    torch.manual_seed(0)
    model, _ = story_model(steps=args.model_steps, progress=False)
    train, test = story_corpus(s["n_texts"], 16, seed=1), story_corpus(s["n_test_texts"], 16, seed=2)
    config = l3d.L3DConfig(n_subnetworks=s["n_subnetworks"], rank=s["rank"], divergence="kl", epochs=args.epochs,
                           batch_size=16, chunk_size=64, gradient_chunk_size=64, lr=s["lr"],
                           lr_decay_every=s["lr_decay_every"], warm_start_epochs=min(args.epochs - 1, 1),
                           init="gradients", init_samples=s["init_texts"])
    run = l3d.decompose(model, train.inputs, attention_tensors(model, s["layer"]), config, sequence=True,
                        forward=logits, progress=False)
    decomposition, history, collector = run.decomposition, run.history, run.collector
    timings = {}
    start = time.perf_counter()
    impact = l3d.impact(decomposition, collector, test.inputs, n_ref=s["n_ref"], seed=0)
    timings["impact_seconds"] = time.perf_counter() - start
    start = time.perf_counter()
    folder = collect(args.out / "dashboard", decomposition, collector, test.inputs, history=history, impact=impact,
                     n_top=20, n_outputs=5, tokens=test.tokens, decode=test.tokenizer.decode, labels=test.tags,
                     label_names=test.patterns, title="benchmark: 200 subnetworks on the story GPT-Neo")
    timings["collect_seconds"] = time.perf_counter() - start
    start = time.perf_counter()
    index = render(folder)
    timings["render_seconds"] = time.perf_counter() - start
    timings["chromium_open_and_screenshot_seconds"] = chromium_seconds(index, args.out / "subnetwork_0.png")
    result = {
        "setting": {"n_subnetworks": s["n_subnetworks"], "rank": s["rank"], "test_texts": s["n_test_texts"],
                    "length": 16, "n_ref": s["n_ref"], "n_top": 20, "model_steps": args.model_steps,
                    "epochs": args.epochs},
        **timings,
        "data_bytes": (folder / "data.json").stat().st_size,
        "html_bytes": index.stat().st_size,
        "folder_bytes": folder_size(folder),
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "cpu_count": os.cpu_count(),
        # other jobs on the machine slow every number
        "load_average_1_5_15_min": [round(v, 2) for v in os.getloadavg()],
        "machine": platform.machine(),
    }
    print(json.dumps(result, indent=1))
    out = ROOT / "benchmarks" / "results" / "dashboard.json"
    out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
