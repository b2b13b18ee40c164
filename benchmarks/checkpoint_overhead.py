"""Milliseconds per checkpoint (save_checkpoint with the state fit writes) at the TMS and transformer sizes."""
import sys
import tempfile
import time

import torch

from l3d.checkpoint import rng_state, save_checkpoint
from l3d.decomposition import Decomposition
from l3d.runtime.medians import median

SIZES = {
    "TMS (C=5, rank 1, W_in/W_out/b)": ({"W_in": (2, 5), "W_out": (5, 2), "b": (5,)}, 5, 1),
    "transformer block (C=100, rank 25, q/k/v/out 256x256 + bias)": (
        {"q": (256, 256), "k": (256, 256), "v": (256, 256), "out": (256, 256), "out_bias": (256,)}, 100, 25),
}


def state_for(decomposition: Decomposition) -> dict:
    optimizer = torch.optim.Adam(decomposition.parameters(), lr=0.01)
    sum(p.pow(2).sum() for p in decomposition.parameters()).backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 10, 0.8)
    generator = torch.Generator().manual_seed(0)
    return {
        "settings": {"decomposition": decomposition.config}, "step": 1, "epoch": 0,
        "history": {"reconstruction_error": [0.5] * 100, "lr": [0.01] * 100,
                    "p_act": [[0.1] * decomposition.n_subnetworks] * 100},
        "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        "source": {"generator": generator.get_state(), "position": None}, "rng": rng_state(),
        "stats": {"sums": torch.zeros(2 + decomposition.n_subnetworks, dtype=torch.float64), "samples": 0},
    }


def main(repeats: int = 5) -> None:
    torch.set_num_threads(1)
    for name, (shapes, c, rank) in SIZES.items():
        decomposition = Decomposition(shapes, c, rank, seed=0)
        state = state_for(decomposition)
        n = sum(p.numel() for p in decomposition.parameters())
        with tempfile.TemporaryDirectory() as d:
            times = []
            for step in range(repeats):
                t = time.perf_counter()
                folder = save_checkpoint(d, step, decomposition, state)
                times.append(time.perf_counter() - t)
            size = sum(f.stat().st_size for f in folder.iterdir())
        print(f"{name}: {n:,} parameters, {size / 2**20:.2f} MiB on disk, "
              f"{1000 * min(times):.1f} ms per checkpoint (median {1000 * median(times):.1f} ms)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
