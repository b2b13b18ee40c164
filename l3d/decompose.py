"""Command line: decompose a model, on one process or data-parallel under torchrun, resumable.

    python -m l3d.decompose --out runs/tms                                     # the built-in TMS example
    torchrun --nproc_per_node=8 -m l3d.decompose --setup mypkg.l3d_setup:make --out runs/h4 \\
        --subnetworks 100 --rank 25 --epochs 100 --batch-size 16 --lr 0.003 --lr-decay-every 10 \\
        --warm-start-epochs 10 --checkpoint-every 500 --resume

`--setup module:function` names a function returning a dict with `model`, `inputs` (items along dim 0)
and `tensors` (names or globs), and optionally `divergence`, `reference`, `sequence`, `forward` (as
for GradientCollector). Every process calls it, so it must build the same model and data each time.
Rank 0 writes out/checkpoints/, out/decomposition/ (Decomposition.load reads it) and out/history.json.
Run the same command again with --resume after an interruption to continue from the last checkpoint.
Every argument is checked before --setup runs; Ctrl-C stops with exit status 130 and says where it stopped.
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

import torch

from . import distributed
from .atomic import remove_temporaries, write_file
from .checkpoint import latest_checkpoint
from .decomposition import Decomposition
from .gradients import GradientCollector
from .train import GradientSource, fit
from .validate import check_parameters


def tms(n_samples: int = 1000, seed: int = 0, toy_epochs: int = 100) -> dict:
    """The built-in example: a toy model of superposition (5 features, 2 hidden), trained briefly (toy_epochs)."""
    from .toys import TMS, sparse_features, train_toy

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = TMS()
    data = sparse_features(2000, 5, generator=generator)
    train_toy(model, data, data, epochs=toy_epochs, batch_size=32, seed=seed, progress=False)
    return {"model": model.untied(), "inputs": sparse_features(n_samples, 5, generator=generator), "tensors": ["W_in", "W_out", "b"]}


def _load_setup(spec: str):
    module, _, function = spec.partition(":")   # checked by _check_args
    return getattr(importlib.import_module(module), function)


def _check_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict:
    """The --setup-kwargs as a dict; every argument checked (parser.error naming the flag) before any work."""
    flags = {f"--{k.replace('_', '-')}": v for k, v in vars(args).items()}
    try:
        check_parameters(flags, **{
            "--subnetworks": (int, 1, None), "--rank": (int, 1, None), "--top-k": (float, 0, 1, "(]"),
            "--epochs": (int, 1, None), "--batch-size": (int, 1, None), "--lr": (float, 0, None, "(]"),
            "--lr-decay": (float, 0, 1, "(]"), "--lr-decay-every": (int, 1, None), "--warm-start-epochs": (int, 0, None),
            "--silence": (float, 0, None), "--silence-from": (int, 0, None), "--checkpoint-every": (int, 1, None),
        })
        if args.chunk_size is not None:
            check_parameters(flags, **{"--chunk-size": (int, 1, None)})
    except ValueError as e:
        parser.error(str(e))
    if args.chunk_size is not None and args.chunk_size % args.batch_size:
        parser.error(f"--chunk-size {args.chunk_size} must be a multiple of --batch-size {args.batch_size}")
    if args.setup.count(":") != 1 or not all(args.setup.split(":")):
        parser.error(f"--setup must look like 'package.module:function', got {args.setup!r}")
    try:
        kwargs = json.loads(args.setup_kwargs)
    except json.JSONDecodeError as e:
        parser.error(f"--setup-kwargs must be a JSON object, got {args.setup_kwargs!r} ({e})")
    if not isinstance(kwargs, dict):
        parser.error(f"--setup-kwargs must be a JSON object such as '{{\"n_samples\": 100}}', got {args.setup_kwargs!r}")
    out = Path(args.out)
    if out.exists() and not out.is_dir() or (out / "checkpoints").is_file():
        parser.error(f"--out {args.out!r} must be a folder (or not exist yet); a file is in the way")
    if not args.resume and latest_checkpoint(out / "checkpoints") is not None:
        parser.error(f"--out {args.out!r} already holds checkpoints: pass --resume to continue that run or choose another --out")
    return kwargs


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m l3d.decompose", description=__doc__.split("\n")[0])
    p.add_argument("--setup", default="l3d.decompose:tms", help="module:function returning model, inputs, tensors")
    p.add_argument("--setup-kwargs", default="{}", help="JSON keyword arguments for the setup function")
    p.add_argument("--out", required=True, help="folder for checkpoints, the decomposition and history.json")
    p.add_argument("--subnetworks", type=int, default=5)
    p.add_argument("--rank", type=int, default=1)
    p.add_argument("--top-k", type=float, default=0.1)
    p.add_argument("--epochs", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=32, help="global batch (items), split over processes")
    p.add_argument("--chunk-size", type=int, default=None, help="items per gradient pass (multiple of the batch)")
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--lr-decay", type=float, default=0.8)
    p.add_argument("--lr-decay-every", type=int, default=100)
    p.add_argument("--warm-start-epochs", type=int, default=0)
    p.add_argument("--silence", type=float, default=0.0, help="penalty on the coefficients BatchTopK drops (0: the paper's loss)")
    p.add_argument("--silence-from", type=int, default=0, help="epoch the silence penalty starts at")
    p.add_argument("--checkpoint-every", type=int, default=1000, help="steps between checkpoints")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    setup_kwargs = _check_args(args, p)
    out = Path(args.out)
    steps = [0]   # the last step done (the callback runs after a step's checkpoint), for the message on Ctrl-C
    interrupted = False

    shard, device = distributed.setup(args.device)
    try:
        if shard.is_main:   # what writes killed midway left behind
            remove_temporaries(out)
            remove_temporaries(out / "decomposition")
        setup = _load_setup(args.setup)(**setup_kwargs)
        model = setup["model"].to(device)
        collector = GradientCollector(
            model, setup["tensors"], **{k: setup[k] for k in ("divergence", "reference", "sequence", "forward") if k in setup}
        )
        source = GradientSource(collector, setup["inputs"].to(device), args.batch_size, args.chunk_size, seed=args.seed)
        decomposition = Decomposition(collector.shapes, args.subnetworks, args.rank, args.top_k, seed=args.seed).to(device)
        history = fit(
            decomposition, source, args.epochs, lr=args.lr, lr_decay=args.lr_decay, lr_decay_every=args.lr_decay_every,
            warm_start_epochs=args.warm_start_epochs, silence=args.silence, silence_from=args.silence_from,
            checkpoint_dir=out / "checkpoints",
            checkpoint_every=args.checkpoint_every, resume=args.resume,
            callback=lambda step, parts: steps.__setitem__(0, step),
        )
        if shard.is_main:
            decomposition.save(out / "decomposition")
            write_file(out / "history.json", lambda f: Path(f).write_text(json.dumps(history.to_dict())))
            print(f"reconstruction error {history.reconstruction_error[-1]:.4f}, dead {history.dead}; wrote {out}")
    except KeyboardInterrupt:
        interrupted = True
    finally:
        distributed.teardown()
    if interrupted:   # after the except block, so that the progress bar is closed first
        if shard.is_main:
            found = latest_checkpoint(out / "checkpoints")
            step = max(steps[0], int(found.name.split("-")[1]) if found else 0)
            print(f"interrupted at step {step}; rerun the same command with --resume", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
