"""Seconds per L3D step with one CPU thread against several, from toy to transformer-block sizes.

    python benchmarks/threads.py                 # every setting, 1 thread and the machine's default
    python benchmarks/threads.py --threads 1 4   # other thread counts

The work of a step is `GradientSource.work` (samples per batch × decomposed parameters), the quantity
`l3d.runtime.threads` compares with SMALL_WORK to pick one thread for small work. A setting is timed
as `l3d.fit` runs it (gradients of a chunk, then steps on its batches), after one warm-up epoch, and
each thread count in turn within one process. Run it once on a quiet machine and once with other
processes busy on the cores to see both sides of the choice. Results: printed, and JSON to
benchmarks/results/threads_cpu.json.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import l3d  # noqa: E402
from l3d.runtime.threads import SMALL_WORK, cpu_threads  # noqa: E402


def setting(name: str):
    """(collector, inputs, batch_size, n_subnetworks, rank) of a named setting."""
    from l3d.experiments.toys import MLP, TMS, sparse_features

    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    if name.startswith("tms"):   # tms-<features>-<hidden>
        _, f, h = name.split("-")
        model = TMS(int(f), int(h)).untied()
        inputs = sparse_features(512, int(f), generator=generator)
        return l3d.GradientCollector(model, "*", divergence="mse", gradient_chunk_size=512), inputs, 32, int(f), 1
    if name.startswith("mlp"):   # mlp-<in>-<hidden>: in → hidden → in ReLU, as notebooks 02/03
        _, f, h = name.split("-")
        model = MLP([int(f), int(h), int(f)])
        inputs = sparse_features(512, int(f), generator=generator)
        return l3d.GradientCollector(model, "*", divergence="mse", gradient_chunk_size=512), inputs, 32, 10, 2
    if name == "digits-cnn":     # notebook 06's embedded setting: the middle conv block
        from l3d.experiments.cnn import DIGITS_BLOCK, DigitsCNN, digits

        images = digits()[0][:512]
        model = DigitsCNN().eval().requires_grad_(False)
        return l3d.GradientCollector(model, DIGITS_BLOCK, divergence="kl", gradient_chunk_size=512), images, 32, 40, 12
    if name == "story-gptneo":   # notebook 05's embedded setting: width 32, 2 layers, attention of layer 1
        from transformers import GPTNeoForCausalLM

        from l3d.experiments.corpus import story_corpus
        from l3d.experiments.transformer import attention_tensors, logits, story_config

        corpus = story_corpus(128, 16, seed=0)
        model = GPTNeoForCausalLM(story_config(len(corpus.tokenizer.vocab))).eval().requires_grad_(False)
        collector = l3d.GradientCollector(model, attention_tensors(model, 1), divergence="kl", sequence=True,
                                          forward=logits, gradient_chunk_size=64)
        return collector, corpus.tokens[:, :-1], 16, 200, 8
    raise ValueError(f"unknown setting {name!r}")


def seconds_per_step(name: str, threads: int, epochs: int) -> tuple[float, int]:
    collector, inputs, batch_size, n_subnetworks, rank = setting(name)
    source = l3d.GradientSource(collector, inputs, batch_size, chunk_size=min(len(inputs), 4 * batch_size))
    decomposition = l3d.Decomposition(collector.shapes, n_subnetworks, rank, 0.1, seed=0)
    with cpu_threads(threads):
        l3d.fit(decomposition, source, 1, progress=False, threads=threads)   # warm-up
        start = time.perf_counter()
        l3d.fit(decomposition, source, epochs, progress=False, threads=threads)
        return (time.perf_counter() - start) / (epochs * len(source)), source.work


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--settings", nargs="+",
                   default=["tms-5-2", "mlp-10-5", "mlp-25-10", "tms-100-20", "mlp-100-100", "digits-cnn",
                            "story-gptneo"])
    p.add_argument("--threads", nargs="+", type=int, default=[1, torch.get_num_threads()])
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--note", default="", help="what else ran on the machine, for the JSON")
    args = p.parse_args()
    rows = []
    print(f"{'setting':>14} {'work':>10} " + " ".join(f"{f'{t} thr ms':>10}" for t in args.threads) + "   (SMALL_WORK "
          f"{SMALL_WORK:,})")
    for name in args.settings:
        times = {}
        for t in args.threads:
            times[t], work = seconds_per_step(name, t, args.epochs)
        rows.append({"setting": name, "work": work, "seconds_per_step": times})
        print(f"{name:>14} {work:>10,} " + " ".join(f"{1000 * times[t]:>10.2f}" for t in args.threads), flush=True)
    out = ROOT / "benchmarks" / "results" / "threads_cpu.json"
    out.write_text(json.dumps({"machine": platform.processor() or platform.machine(), "cores": torch.get_num_threads(),
                               "note": args.note, "rows": rows}, indent=1))
    print("wrote", out)


if __name__ == "__main__":
    main()
