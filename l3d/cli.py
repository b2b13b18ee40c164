"""Command line: decompose a model with `l3d.decompose`, on one process or data-parallel under torchrun, resumable.

    python -m l3d --out runs/tms                                               # the built-in TMS example
    torchrun --nproc_per_node=8 -m l3d --setup mypkg.l3d_setup:make --out runs/h4 \\
        --n-subnetworks 100 --rank 25 --epochs 100 --batch-size 16 --lr 0.003 --lr-decay-every 10 \\
        --warm-start-epochs 10 --checkpoint-every 500 --resume

Every setting of `l3d.L3DConfig` is an option (`--n-subnetworks`, `--top-k`, ...). `--setup module:function`
names a function returning a dict with `model`, `inputs` (items along dim 0) and `tensors` (names or
globs), and optionally `divergence`, `reference` (defaults for those settings), `sequence`, `forward` (as
for GradientCollector), `held_out` (inputs for the dashboard; default: the first --dashboard-samples of `inputs`)
and `dashboard` (keyword arguments for `l3d.report.dashboard.collect`: `decode` for token ids, `output_names`,
`labels`, ...). Every process calls it, so it must build the same model and data each time.
Rank 0 writes out/checkpoints/, out/decomposition/ (the decomposition, which `Decomposition.load` reads,
and run.json with every setting, the model's fingerprint and the history) and, at the end, out/dashboard/ (open
index.html in a browser; `python -m l3d.report.dashboard out` renders it again; --no-dashboard skips it). Run the
same command again with --resume after an interruption to continue from the last checkpoint; a resume with other
settings, another model or other inputs is refused, naming each difference. Every argument is checked, --setup
is imported and --out is made and found writable, before --setup runs; while the run lasts it holds --out's lock,
so a second run on the same --out stops at once. Argument errors and refusals exit with status 2 and one line;
Ctrl-C stops with exit status 130 and says where it stopped.

Without --setup the built-in example runs: a toy model of superposition (5 features in 2 hidden
dimensions, the best of 4 initializations trained for 100 epochs), decomposed from 1000 sparse inputs
(l3d.cli:tms, which is `l3d.examples.tms`).
CPU threads: --threads, else $L3D_THREADS or $OMP_NUM_THREADS, else one thread for small models
(l3d.runtime.threads). Progress: a bar in a terminal, a plain line every 10 s in a log (l3d.runtime.progress).
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
import warnings
from pathlib import Path

import torch

from .checkpoint import ResumeRefused, latest_checkpoint
from .pipeline import L3DConfig, decompose
from .runtime import distributed
from .runtime.atomic import remove_temporaries
from .runtime.device import resolve_device
from .runtime.lock import FolderInUse, exclusive
from .runtime.threads import cpu_threads
from .runtime.validate import SEED_MAX


def tms(n_samples: int = 1000, seed: int = 0, toy_epochs: int = 100) -> dict:
    """The built-in example, `l3d.examples.tms`: a toy model of superposition (5 features, 2 hidden), the best of 4
    initializations trained for toy_epochs, with n_samples inputs and as many held out, and the dashboard's names
    of its features and outputs and its circuits (feature i: column i of W_in, row i of W_out, b_i)."""
    from .examples import tms as example
    from .report.dashboard import feature_circuits

    model, tensors, inputs, held_out = example(n_samples=n_samples, n_held_out=n_samples, toy_epochs=toy_epochs,
                                               seed=seed)
    n_features = inputs.shape[1]
    return {"model": model, "inputs": inputs, "tensors": tensors, "held_out": held_out,
            "dashboard": {"feature_names": [f"x{i}" for i in range(n_features)],
                          "output_names": [f"x̂{i}" for i in range(n_features)],
                          "circuits": feature_circuits(model, {"W_in": 1, "W_out": 0, "b": 0}),
                          "circuit_names": [f"feature {i}" for i in range(n_features)]}}


def _load_setup(spec: str, parser: argparse.ArgumentParser):
    """The function --setup names (module:function), imported before any work; a one-line parser error naming
    --setup when the module is not found, lacks the function, or it is not callable. An error raised while the
    module itself imports (its own code, or a module it imports) keeps its traceback."""
    module, _, function = spec.partition(":")   # the form is checked by _check_args
    try:
        imported = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name is None or not (module == e.name or module.startswith(e.name + ".")):
            raise   # the module was found; something it imports was not
        parser.error(f"--setup {spec!r}: no module named {e.name!r} on the Python path (sys.path; run from the "
                     f"folder that holds it, or pip install -e it); --setup takes 'package.module:function'")
    found = getattr(imported, function, None)
    if found is None:
        parser.error(f"--setup {spec!r}: module {module} has no {function!r}; it must define a function returning "
                     f"a dict with model, inputs and tensors")
    if not callable(found):
        parser.error(f"--setup {spec!r}: {module}.{function} is a {type(found).__name__}, not a function")
    return found


def _check_setup(setup: object, spec: str, parser: argparse.ArgumentParser) -> dict:
    """What the setup function returned, checked: a dict with model, inputs and tensors."""
    if not isinstance(setup, dict):
        _refuse(parser, f"--setup {spec!r} returned a {type(setup).__name__}; it must return a dict with model, "
                        f"inputs and tensors")
    missing = [k for k in ("model", "inputs", "tensors") if k not in setup]
    if missing:
        _refuse(parser, f"--setup {spec!r} returned a dict without {', '.join(missing)}; it must hold model, inputs "
                        f"and tensors (and may hold {', '.join(OPTIONAL_SETUP)})")
    return setup


OPTIONAL_SETUP = ("divergence", "reference", "sequence", "forward", "held_out", "dashboard")

# What each L3DConfig setting means, for --help (the allowed values come from the settings' own bounds).
MEANING = {
    "n_subnetworks": "number of subnetworks C",
    "rank": "Tucker rank of every mode of every tensor, capped at the mode's size (per-tensor ranks: a dict, "
            "from Python)",
    "top_k": "BatchTopK: the fraction of a batch's coefficients kept (0.1 in every paper experiment)",
    "decoder_norm": "decoder scaling: unit (the paper: Σ_t ‖d_t‖² = 1) or sum (the authors' code: Σ_t ‖d_t‖ = "
                    "1; formerly authors)",
    "divergence": "divergence between a sample's output and its reference output: mse (regression outputs), "
                  "output_times_residual (the authors' code's MSE gradient, formerly mse_authors), kl (logits)",
    "reference": "the reference output a sample is compared with: random (another sample's, the paper), "
                 "random_or_self, mean, uniform",
    "engine": "per-sample gradients: auto (projected from activations where it can, without materializing them), "
              "dense (materialized), factored (projected only)",
    "epochs": "passes over the inputs",
    "batch_size": "items per step",
    "chunk_size": "items per gradient pass, references drawn within it; a multiple of --batch-size",
    "batch_references": "draw each sample's reference within its own batch (the authors' code)",
    "gradient_chunk_size": "items per vectorized gradient computation inside a pass (memory only)",
    "lr": "Adam's learning rate",
    "lr_decay": "the learning rate is multiplied by this every --lr-decay-every epochs",
    "lr_decay_every": "epochs between two learning-rate decays",
    "warm_start_epochs": "the first this many epochs keep every coefficient (no BatchTopK)",
    "silence": "weight of the silence penalty on the coefficients BatchTopK drops (0: the paper's loss)",
    "silence_from": "the epoch from which --silence applies",
    "resample_every": "every this many epochs the subnetwork the error needs least may be re-seeded where the "
                      "residuals point (0: never, the paper)",
    "revive": "weight of the revival term, which trains the subnetworks dead in the epoch before on the residuals "
              "(0: none, the paper)",
    "init": "starting directions: random (the paper) or gradients (per-sample gradients picked k-means++ style)",
    "init_samples": "with --init gradients: the starts come from the first this many inputs",
    "restarts": "starts screened; the one with the lowest reconstruction error goes on (1: a single start)",
    "restart_epochs": "epochs each screened start trains before the best one goes on",
    "start_noise": "relative perturbation of every start's parameters, to check that a result does not hinge on "
                   "the last bits (0: none)",
    "start_noise_seed": "seed of --start-noise's perturbation",
    "seed": "every random draw of the run follows from it",
}
# what an unset setting whose default is None means; and allowed values the bounds do not tell
NONE_MEANS = {"chunk_size": "one batch", "gradient_chunk_size": "a whole pass", "init_samples": "every input"}
ALLOWED = {"rank": "an int >= 1"}


def _allowed(hint: object, metadata: typing.Mapping) -> str:
    """The values a setting takes, in words, from its type and its `bounded` metadata: "an int >= 1",
    "a number in (0, 1]", "one of unit, sum", "true or false"."""
    if hint is bool:
        return "true or false"
    if metadata.get("choices"):
        return "one of " + ", ".join(map(str, metadata["choices"]))
    kinds = [t for t in (int, float) if t in typing.get_args(hint) or hint is t]
    what = "an int" if kinds[:1] == [int] else "a number"
    low, high, open_low = metadata.get("low"), metadata.get("high"), metadata.get("open_low")
    if low is not None and high == SEED_MAX:
        return f"{what} in {low} .. 2**64 - 1"
    if low is not None and high is not None:
        return f"{what} in {'(' if open_low else '['}{low}, {high}]"
    if low is not None:
        return f"{what} {'>' if open_low else '>='} {low}"
    return what


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _check_args(args: argparse.Namespace, parser: argparse.ArgumentParser, given: dict) -> tuple[dict, object]:
    """The --setup-kwargs as a dict and the function --setup names (imported, not called); every argument checked
    (parser.error naming the flag) before any work."""
    try:
        with warnings.catch_warnings(record=True) as said:   # an old spelling (decoder_norm authors): say so
            warnings.simplefilter("always", DeprecationWarning)
            L3DConfig(**given)
        for w in said:
            print(f"warning: {w.message}", file=sys.stderr)
    except ValueError as e:   # the settings' names as the flags that set them
        fields = "|".join(f.name for f in dataclasses.fields(L3DConfig))
        parser.error(re.sub(rf"\b({fields})\b", lambda m: _flag(m.group(1)), str(e)))
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    if args.checkpoint_every < 1:
        parser.error(f"--checkpoint-every must be >= 1 (steps), got {args.checkpoint_every}")
    if args.dashboard_samples < 1:
        parser.error(f"--dashboard-samples must be >= 1 (inputs), got {args.dashboard_samples}")
    if args.setup.count(":") != 1 or not all(args.setup.split(":")):
        parser.error(f"--setup must look like 'package.module:function', got {args.setup!r}")
    try:
        kwargs = json.loads(args.setup_kwargs)
    except json.JSONDecodeError as e:
        parser.error(f"--setup-kwargs must be a JSON object, got {args.setup_kwargs!r} ({e})")
    if not isinstance(kwargs, dict):
        parser.error(f"--setup-kwargs must be a JSON object such as '{{\"n_samples\": 100}}', "
                     f"got {args.setup_kwargs!r}")
    try:
        resolve_device(args.device)
    except ValueError as e:
        parser.error(f"--device: {e}")
    if not args.out.strip():
        parser.error("--out must name a folder for the run, got an empty name (use --out . for the current folder)")
    out = Path(args.out)
    if out.exists() and not out.is_dir() or any((out / sub).exists() and not (out / sub).is_dir()
                                                 for sub in ("checkpoints", "decomposition", "dashboard")):
        parser.error(f"--out {args.out!r} must be a folder (or not exist yet); a file is in the way")
    if not args.resume and latest_checkpoint(out / "checkpoints") is not None:
        parser.error(f"--out {args.out!r} already holds checkpoints: pass --resume to continue that run "
                     "or choose another --out")
    return kwargs, _load_setup(args.setup, parser)


def _check_writable(out: Path, parser: argparse.ArgumentParser) -> None:
    """Make --out (if missing) and write and remove a file in it and in the folders the run writes into, before any
    work: a read-only --out is an error at the start, not after training."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        for folder in (out, out / "checkpoints", out / "decomposition", out / "dashboard"):
            if folder.is_dir():
                # remove_temporaries' kind
                fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-test.l3d-", suffix=".tmp")
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
    p.add_argument("--setup", default="l3d.cli:tms", metavar="MODULE:FUNCTION",
                   help="package.module:function returning a dict with model, inputs, tensors (and optionally "
                        f"{', '.join(OPTIONAL_SETUP)}); the default is the built-in TMS example")
    p.add_argument("--setup-kwargs", default="{}", metavar="JSON",
                   help="keyword arguments for the setup function, a JSON object such as '{\"n_samples\": 100}'")
    p.add_argument("--out", required=True, metavar="FOLDER",
                   help="folder for checkpoints, the decomposition and the dashboard")
    hints = typing.get_type_hints(L3DConfig)
    for f in dataclasses.fields(L3DConfig):   # every setting of the run; unset: L3DConfig's (or the setup's) default
        kind = _yes_no if hints[f.name] is bool else next(
            (t for t in (int, float, str) if t in typing.get_args(hints[f.name]) or hints[f.name] is t), str)
        shown = (str(f.default).lower() if hints[f.name] is bool else NONE_MEANS.get(f.name, "none")
                 if f.default is None else f.default)   # true / false, as typed
        allowed = ALLOWED.get(f.name) or _allowed(hints[f.name], f.metadata)
        metavar = ("{true,false}" if kind is _yes_no else "{" + ",".join(f.metadata["choices"]) + "}"
                   if f.metadata.get("choices") else {int: "INT", float: "NUMBER"}.get(kind, "TEXT"))
        meaning = MEANING.get(f.name, f"L3DConfig.{f.name}")   # the choices are in the metavar, the rest here
        p.add_argument(_flag(f.name), type=kind, default=None, metavar=metavar,
                       help=f"{meaning}{'' if metavar.startswith('{') else ': ' + allowed} (default: {shown})")
    p.add_argument("--checkpoint-every", type=int, default=1000, metavar="INT",
                   help="steps between checkpoints: an int >= 1")
    p.add_argument("--no-dashboard", action="store_true", help="write no dashboard at the end (it computes every "
                   "subnetwork's impact on --dashboard-samples inputs: minutes for a large model)")
    p.add_argument("--dashboard-samples", type=int, default=1000, metavar="INT",
                   help="held-out inputs the dashboard shows: an int >= 1; the setup's held_out, else the first of "
                        "--setup's inputs")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1, ...")
    p.add_argument("--threads", type=int, default=None, metavar="INT",
                   help="CPU threads, an int >= 1; default: $L3D_THREADS, else $OMP_NUM_THREADS, else 1 for small "
                        "models and torch's default for large ones")
    return p


def _write_dashboard(out: Path, run, setup: dict, args: argparse.Namespace, device: torch.device) -> Path | None:
    """out/dashboard (`l3d.report.dashboard`): every subnetwork's top samples, impact, output effects and history, on
    the setup's held_out inputs (else its inputs), at most --dashboard-samples of them; the setup's `dashboard` dict
    goes to `collect` as keyword arguments. Returns index.html, or None after saying why there is none."""
    options = setup.get("dashboard") or {}
    if not isinstance(options, dict):
        print(f"no dashboard: --setup's 'dashboard' must be a dict of keyword arguments for "
              f"l3d.report.dashboard.collect, got a {type(options).__name__}", file=sys.stderr)
        return None
    if run.collector.sequence and "decode" not in options:
        print("no dashboard: a sequence model's dashboard shows texts, so it needs a function from token ids to text: "
              "return 'dashboard': {'decode': tokenizer.decode} from --setup", file=sys.stderr)
        return None
    from .report.dashboard import collect, render

    held_out = setup.get("held_out", setup["inputs"])[: args.dashboard_samples].to(device)
    options = {"title": f"L3D of {args.setup} ({run.decomposition.n_subnetworks} subnetworks)", **options}
    try:
        return render(collect(out / "dashboard", run.decomposition, run.collector, held_out, history=run.history,
                              seed=run.config.seed, **options))
    except ValueError as e:   # inputs the dashboard cannot show (collect says which); the decomposition is saved
        print(f"no dashboard: {' '.join(str(e).split())}", file=sys.stderr)
        return None


def main(argv: list[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(L3DConfig) if getattr(args, f.name) is not None}
    setup_kwargs, make_setup = _check_args(args, parser, given)
    out = Path(args.out)
    steps = [0]   # the last step done, for the message on Ctrl-C
    interrupted = saved = False
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
                setup = _check_setup(make_setup(**setup_kwargs), args.setup, parser)
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
                saved = True
                print(f"reconstruction error {run.history.reconstruction_error[-1]:.4f}, dead {run.history.dead}; "
                      f"the decomposition: {out / 'decomposition'}", flush=True)
                if not args.no_dashboard:
                    with cpu_threads(args.threads):
                        index = _write_dashboard(out, run, setup, args, device)
                    if index is not None:
                        print(f"dashboard: {index} (open it in a browser)")
    except KeyboardInterrupt:
        interrupted = True
    except (FolderInUse, ResumeRefused) as e:
        _refuse(parser, str(e))
    finally:
        distributed.teardown()
    if interrupted:   # after the except block, so that the progress bar is closed first
        if shard.is_main and saved:
            print(f"interrupted while writing the dashboard; the decomposition is saved in {out / 'decomposition'}",
                  file=sys.stderr)
        elif shard.is_main:
            found = latest_checkpoint(out / "checkpoints")
            step = max(steps[0], int(found.name.split("-")[1]) if found else 0)
            print(f"interrupted at step {step}; rerun the same command with --resume", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
