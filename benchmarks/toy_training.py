"""Seconds per epoch of toy training (TMS 5 → 2, 10,000 samples, batch 32, AdamW), one thread.

    python benchmarks/toy_training.py [epochs]

Compares training models one at a time with training them stacked (`l3d.experiments.toys.train_toys`, vmapped
over models), eagerly and with torch.compile. Paper scale is 1000 epochs per model.
"""
from __future__ import annotations

import sys
import time

import torch

from l3d.experiments.toys import TMS, sparse_features, train_toys


def seconds_per_epoch(n_models: int, epochs: int, compile: bool) -> float:
    data = [sparse_features(10_000, 5, generator=torch.Generator().manual_seed(s)) for s in range(n_models)]
    models = [TMS(5, 2) for _ in range(n_models)]
    if compile:   # compile once outside the timing (a one-off cost of some seconds, reported separately)
        train_toys([TMS(5, 2) for _ in range(n_models)], data, data, epochs=1, compile=True, progress=False)
    start = time.perf_counter()
    train_toys(models, data, data, epochs=epochs, compile=compile, progress=False)
    return (time.perf_counter() - start) / epochs


def main() -> None:
    epochs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    torch.set_num_threads(1)
    print(f"{'models':>6} {'compile':>8} {'s/epoch':>8} {'s/epoch/model':>14} {'1000 epochs, all models':>24}")
    for n_models, compile in [(1, False), (3, False), (1, True), (3, True), (12, True)]:
        t = seconds_per_epoch(n_models, epochs, compile)
        print(f"{n_models:>6} {str(compile):>8} {t:>8.3f} {t / n_models:>14.3f} {1000 * t:>23.0f}s")


if __name__ == "__main__":
    main()
