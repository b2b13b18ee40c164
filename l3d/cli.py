"""Command line: decompose a model with `l3d.decompose`, on one process or data-parallel under torchrun, resumable.

    python -m l3d --out runs/tms                                               # the built-in TMS example
    torchrun --nproc_per_node=8 -m l3d --setup mypkg.l3d_setup:make --out runs/h4 \\
        --n-subnetworks 100 --rank 25 --epochs 100 --batch-size 16 --lr 0.003 --lr-decay-every 10 \\
        --warm-start-epochs 10 --checkpoint-every 500 --resume

Every setting of `l3d.L3DConfig` is an option (`--n-subnetworks`, `--top-k`, ...). `--setup module:function`
names a function returning a dict with `model`, `inputs` (items along dim 0) and `tensors` (names or
globs), and optionally `divergence`, `reference` (defaults for those settings), `sequence`, `forward` (as
for GradientCollector). Every process calls it, so it must build the same model and data each time.
Rank 0 writes out/checkpoints/ and out/decomposition/ (the decomposition, which `Decomposition.load` reads,
and run.json with every setting, the model's fingerprint and the history). Run the same command again with
--resume after an interruption to continue from the last checkpoint; a resume with other settings, another
model or other inputs is refused, naming each difference. Every argument is checked, and --out is made and
found writable, before --setup runs; while the run lasts it holds --out's lock, so a second run on the same
--out stops at once. Argument errors and refusals exit with status 2 and one line; Ctrl-C stops with exit
status 130 and says where it stopped.

Without --setup the built-in example runs: a toy model of superposition (5 features in 2 hidden
dimensions, trained for 100 epochs), decomposed from 1000 sparse inputs (l3d.cli:tms).
CPU threads: --threads, else $L3D_THREADS or $OMP_NUM_THREADS, else one thread for small models
(l3d.runtime.threads).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import json
import os
import re
import sys
import tempfile
import typing
from pathlib import Path

import torch

from .checkpoint import ResumeRefused, latest_checkpoint
from .pipeline import L3DConfig, decompose
from .runtime import distributed
from .runtime.atomic import remove_temporaries
from .runtime.device import resolve_device
from .runtime.lock import FolderInUse, exclusive
from .runtime.threads import cpu_threads


def tms(n_samples: int = 1000, seed: int = 0, toy_epochs: int = 100) -> dict:
    """The built-in example: a toy model of superposition (5 features, 2 hidden), trained briefly (toy_epochs)."""
    from .experiments.toys import TMS, sparse_features, train_toy

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = TMS()
    data = sparse_features(2000, 5, generator=generator)
    train_toy(model, data, data, epochs=toy_epochs, batch_size=32, seed=seed, progress=False)
    return {"model": model.untied(), "inputs": sparse_features(n_samples, 5, generator=generator), "tensors": ["W_in", "W_out", "b"]}


def _load_setup(spec: str):
    module, _, function = spec.partition(":")   # checked by _check_args
    return getattr(importlib.import_module(module), function)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _check_args(args: argparse.Namespace, parser: argparse.ArgumentParser, given: dict) -> dict:
    """The --setup-kwargs as a dict; every argument checked (parser.error naming the flag) before any work."""
    try:
        L3DConfig(**given)
    except ValueError as e:   # the settings' names as the flags that set them
        fields = "|".join(f.name for f in dataclasses.fields(L3DConfig))
        parser.error(re.sub(rf"\b({fields})\b", lambda m: _flag(m.group(1)), str(e)))
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    if args.checkpoint_every < 1:
        parser.error(f"--checkpoint-every must be >= 1 (steps), got {args.checkpoint_every}")
    if args.setup.count(":") != 1 or not all(args.setup.split(":")):
        parser.error(f"--setup must look like 'package.module:function', got {args.setup!r}")
    try:
        kwargs = json.loads(args.setup_kwargs)
    except json.JSONDecodeError as e:
        parser.error(f"--setup-kwargs must be a JSON object, got {args.setup_kwargs!r} ({e})")
    if not isinstance(kwargs, dict):
        parser.error(f"--setup-kwargs must be a JSON object such as '{{\"n_samples\": 100}}', got {args.setup_kwargs!r}")
    try:
        resolve_device(args.device)
    except ValueError as e:
        parser.error(f"--device: {e}")
    if not args.out.strip():
        parser.error("--out must name a folder for the run, got an empty name (use --out . for the current folder)")
    out = Path(args.out)
    if out.exists() and not out.is_dir() or any((out / sub).exists() and not (out / sub).is_dir()
                                                 for sub in ("checkpoints", "decomposition")):
        parser.error(f"--out {args.out!r} must be a folder (or not exist yet); a file is in the way")
    if not args.resume and latest_checkpoint(out / "checkpoints") is not None:
        parser.error(f"--out {args.out!r} already holds checkpoints: pass --resume to continue that run or choose another --out")
    return kwargs


def _check_writable(out: Path, parser: argparse.ArgumentParser) -> None:
    """Make --out (if missing) and write and remove a file in it and in the folders the run writes into, before any
    work: a read-only --out is an error at the start, not after training."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        for folder in (out, out / "checkpoints", out / "decomposition"):
            if folder.is_dir():
                fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-test.l3d-", suffix=".tmp")  # remove_temporaries' kind
                os.close(fd)
                os.unlink(probe)
    except OSError as e:
        parser.error(f"--out {str(out)!r} is not a folder this process can write in ({e.strerror or e}): choose "
                     f"another --out, or make it writable")


def _refuse(parser: argparse.ArgumentParser, message: str) -> None:
    """Exit with status 2 and one line, as argparse does for a bad argument (without the usage)."""
    parser.exit(2, f"{parser.prog}: error: {message}\n")


class _Help(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """--help: the module's description as written, and each option's default where it has one to show."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.required or action.default is None or isinstance(action.default, bool):
            return action.help
        return super()._get_help_string(action)


def _yes_no(text: str) -> bool:
    """A yes/no option's value: true/false (also yes/no, 1/0)."""
    if text.lower() in ("true", "yes", "1"):
        return True
    if text.lower() in ("false", "no", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m l3d", formatter_class=_Help, description=__doc__, allow_abbrev=False)
    p.add_argument("--setup", default="l3d.cli:tms",
                   help="module:function returning a dict with model, inputs, tensors; the default is the built-in TMS example")
    p.add_argument("--setup-kwargs", default="{}", help="JSON keyword arguments for the setup function")
    p.add_argument("--out", required=True, help="folder for checkpoints and the decomposition")
    hints = typing.get_type_hints(L3DConfig)
    for f in dataclasses.fields(L3DConfig):   # every setting of the run; unset: L3DConfig's (or the setup's) default
        kind = _yes_no if hints[f.name] is bool else next(
            (t for t in (int, float, str) if t in typing.get_args(hints[f.name]) or hints[f.name] is t), str)
        shown = str(f.default).lower() if hints[f.name] is bool else f.default     # true / false, as typed
        p.add_argument(_flag(f.name), type=kind, default=None, help=f"L3DConfig.{f.name} (default: {shown})")
    p.add_argument("--checkpoint-every", type=int, default=1000, help="steps between checkpoints")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1, ...")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads; default: $L3D_THREADS, else $OMP_NUM_THREADS, else 1 for small models "
                        "and torch's default for large ones")
    return p


def main(argv: list[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(L3DConfig) if getattr(args, f.name) is not None}
    setup_kwargs = _check_args(args, parser, given)
    out = Path(args.out)
    steps = [0]   # the last step done, for the message on Ctrl-C
    interrupted = False
    shard, device = distributed.setup(args.device)
    if shard.is_main:
        _check_writable(out, parser)
    try:
        with contextlib.ExitStack() as held:
            if shard.is_main:
                held.enter_context(exclusive(out, "--out"))
                remove_temporaries(out)   # what l3d's writes killed midway left behind, nothing else
                remove_temporaries(out / "decomposition")
            with cpu_threads(args.threads):
                setup = _load_setup(args.setup)(**setup_kwargs)
                defaults = {k: setup[k] for k in ("divergence", "reference") if k in setup}
                config = L3DConfig(**{**defaults, **given})
                run = decompose(
                    setup["model"].to(device), setup["inputs"].to(device), setup["tensors"], config,
                    **{k: setup[k] for k in ("sequence", "forward") if k in setup},
                    checkpoint_dir=out / "checkpoints", checkpoint_every=args.checkpoint_every, resume=args.resume,
                    callback=lambda step, parts: steps.__setitem__(0, step),
                )
            if shard.is_main:
                run.save(out / "decomposition")
                print(f"reconstruction error {run.history.reconstruction_error[-1]:.4f}, dead {run.history.dead}; wrote {out}")
    except KeyboardInterrupt:
        interrupted = True
    except (FolderInUse, ResumeRefused) as e:
        _refuse(parser, str(e))
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
