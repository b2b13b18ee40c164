"""Command line: decompose a model, on one process or data-parallel under torchrun, resumable.

    python -m l3d.decompose --out runs/tms                                     # the built-in TMS example
    torchrun --nproc_per_node=8 -m l3d.decompose --setup mypkg.l3d_setup:make --out runs/h4 \\
        --subnetworks 100 --rank 25 --epochs 100 --batch-size 16 --lr 0.003 --lr-decay-every 10 \\
        --warm-start-epochs 10 --checkpoint-every 500 --resume

`--setup module:function` names a function returning a dict with `model`, `inputs` (items along dim 0)
and `tensors` (names or globs), and optionally `divergence`, `reference`, `sequence`, `forward` (as
for GradientCollector). Every process calls it, so it must build the same model and data each time.
Without --setup the built-in example runs: a toy model of superposition (5 features in 2 hidden
dimensions, trained for 100 epochs), decomposed from 1000 sparse inputs (l3d.decompose:tms).
Rank 0 writes out/checkpoints/, out/decomposition/ (Decomposition.load reads it) and out/history.json.
Run the same command again with --resume after an interruption to continue from the last checkpoint.
CPU threads: --threads, else $L3D_THREADS or $OMP_NUM_THREADS, else one thread for small models
(l3d.runtime.threads).
"""
from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path

import torch

from . import distributed
from .atomic import write_file
from .decomposition import Decomposition
from .gradients import GradientCollector
from .runtime.threads import cpu_threads
from .train import GradientSource, fit


def tms(n_samples: int = 1000, seed: int = 0) -> dict:
    """The built-in example: a toy model of superposition (5 features, 2 hidden), trained briefly."""
    from .toys import TMS, sparse_features, train_toy

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = TMS()
    data = sparse_features(2000, 5, generator=generator)
    train_toy(model, data, data, epochs=100, batch_size=32, seed=seed, progress=False)
    return {"model": model.untied(), "inputs": sparse_features(n_samples, 5, generator=generator), "tensors": ["W_in", "W_out", "b"]}


def _load_setup(spec: str):
    module, _, function = spec.partition(":")
    if not function:
        raise SystemExit(f"--setup must look like 'package.module:function', got {spec!r}")
    return getattr(importlib.import_module(module), function)


class _Help(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """--help: the module's description as written, and each option's default where it has one to show."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.required or action.default is None or isinstance(action.default, bool):
            return action.help
        return super()._get_help_string(action)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m l3d.decompose", formatter_class=_Help, description=__doc__)
    p.add_argument("--setup", default="l3d.decompose:tms",
                   help="module:function returning a dict with model, inputs, tensors; the default is the built-in TMS example")
    p.add_argument("--setup-kwargs", default="{}", help="JSON keyword arguments for the setup function")
    p.add_argument("--out", required=True, help="folder for checkpoints, the decomposition and history.json")
    p.add_argument("--subnetworks", type=int, default=5, help="number of subnetworks")
    p.add_argument("--rank", type=int, default=1, help="Tucker rank of every subnetwork's tensors")
    p.add_argument("--top-k", type=float, default=0.1, help="fraction of (sample, subnetwork) coefficients BatchTopK keeps")
    p.add_argument("--epochs", type=int, default=1000, help="epochs over the inputs")
    p.add_argument("--batch-size", type=int, default=32, help="global batch (items), split over processes")
    p.add_argument("--chunk-size", type=int, default=None,
                   help="items per gradient pass, rounded down to a multiple of the batch; default: one batch")
    p.add_argument("--lr", type=float, default=0.01, help="Adam learning rate")
    p.add_argument("--lr-decay", type=float, default=0.8, help="learning-rate factor every --lr-decay-every epochs")
    p.add_argument("--lr-decay-every", type=int, default=100, help="epochs between learning-rate decays")
    p.add_argument("--warm-start-epochs", type=int, default=0, help="first epochs keep every coefficient (top_k = 1)")
    p.add_argument("--silence", type=float, default=0.0, help="penalty on the coefficients BatchTopK drops (0: the paper's loss)")
    p.add_argument("--silence-from", type=int, default=0, help="epoch the silence penalty starts at")
    p.add_argument("--checkpoint-every", type=int, default=1000, help="steps between checkpoints")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    p.add_argument("--seed", type=int, default=0, help="seed of the initialization and the batch order")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1, ...")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads; default: $L3D_THREADS, else $OMP_NUM_THREADS, else 1 for small models "
                        "and torch's default for large ones")
    args = p.parse_args(argv)
    if args.threads is not None and args.threads < 1:
        p.error(f"--threads must be at least 1, got {args.threads}")

    shard, device = distributed.setup(args.device)
    try:
        with cpu_threads(args.threads):   # --threads, when given, covers building the model too
            setup = _load_setup(args.setup)(**json.loads(args.setup_kwargs))
        model = setup["model"].to(device)
        collector = GradientCollector(
            model, setup["tensors"], **{k: setup[k] for k in ("divergence", "reference", "sequence", "forward") if k in setup}
        )
        source = GradientSource(collector, setup["inputs"].to(device), args.batch_size, args.chunk_size, seed=args.seed)
        decomposition = Decomposition(collector.shapes, args.subnetworks, args.rank, args.top_k, seed=args.seed).to(device)
        out = Path(args.out)
        history = fit(
            decomposition, source, args.epochs, lr=args.lr, lr_decay=args.lr_decay, lr_decay_every=args.lr_decay_every,
            warm_start_epochs=args.warm_start_epochs, silence=args.silence, silence_from=args.silence_from,
            checkpoint_dir=out / "checkpoints",
            checkpoint_every=args.checkpoint_every, resume=args.resume, threads=args.threads,
        )
        if shard.is_main:
            decomposition.save(out / "decomposition")
            write_file(out / "history.json", lambda f: Path(f).write_text(json.dumps(history.to_dict())))
            print(f"reconstruction error {history.reconstruction_error[-1]:.4f}, dead {history.dead}; wrote {out}")
    finally:
        distributed.teardown()


if __name__ == "__main__":
    main()
