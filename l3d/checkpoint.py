"""Checkpoints of a training run, written atomically and without pickle (safetensors + JSON).

A checkpoint folder holds one `step-NNNNNNNN/` folder per checkpoint kept:
    decomposition.safetensors, config.json    the decomposition (readable by Decomposition.load)
    training.safetensors                       every tensor of the training state (optimizer moments, RNG states, …)
    training.json                              everything else (step, epoch, history, scheduler, settings)
Each is written into a hidden temporary folder that is renamed into place when complete, so a crash while
writing leaves the earlier checkpoints as they were; the newest complete folder is the one resumed from.
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from .decomposition import Decomposition

_STEP_FOLDER = re.compile(r"^step-(\d{8})$")
_FILES = ("decomposition.safetensors", "config.json", "training.safetensors", "training.json")


# --- state with tensors <-> (JSON, tensors) ---------------------------------------------------------
def split_tensors(obj, tensors: dict[str, Tensor], key: str = "state"):
    """A JSON-able copy of `obj` with each tensor moved into `tensors` (under a path-like key).

    Dicts with non-string keys and tuples are tagged so that `join_tensors` gives back the same types.
    """
    if isinstance(obj, Tensor):
        tensors[key] = obj.detach().cpu().contiguous().clone()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {k: split_tensors(v, tensors, f"{key}/{k}") for k, v in obj.items()}
        return {"__items__": [[k, split_tensors(v, tensors, f"{key}/{k}")] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [split_tensors(v, tensors, f"{key}/{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [split_tensors(v, tensors, f"{key}/{i}") for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} at {key!r} in a checkpoint (tensors, numbers, strings, lists and dicts only)")


def join_tensors(obj, tensors: dict[str, Tensor]):
    """Inverse of `split_tensors`."""
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__items__" in obj:
            return {k: join_tensors(v, tensors) for k, v in obj["__items__"]}
        if "__tuple__" in obj:
            return tuple(join_tensors(v, tensors) for v in obj["__tuple__"])
        return {k: join_tensors(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [join_tensors(v, tensors) for v in obj]
    return obj


# --- random number generators -----------------------------------------------------------------------
def rng_state() -> dict:
    """The global RNG states: torch (CPU and every initialized GPU), Python's random, NumPy's."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "python": random.getstate(),
        "numpy": [kind, keys.tolist(), pos, has_gauss, gauss],
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))


# --- folders ----------------------------------------------------------------------------------------
def save_checkpoint(
    directory: str | os.PathLike, step: int, decomposition: Decomposition, state: dict, keep: int = 2
) -> Path:
    """Write checkpoint `step` (the decomposition and a training `state` of tensors and JSON values).

    Keeps the `keep` newest checkpoints and returns the new folder.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"step-{step:08d}"
    tmp = directory / f".step-{step:08d}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        decomposition.save(tmp)
        tensors: dict[str, Tensor] = {}
        meta = split_tensors(state, tensors)
        save_file(tensors, tmp / "training.safetensors")
        (tmp / "training.json").write_text(json.dumps({"format": "l3d-checkpoint-1", "step": step, "state": meta}))
        if final.exists():  # the same step written again (e.g. the final save): replace it
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in checkpoints(directory)[:-max(keep, 1)]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def checkpoints(directory: str | os.PathLike) -> list[Path]:
    """The complete checkpoint folders under `directory`, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if p.is_dir() and _STEP_FOLDER.match(p.name)]
    return sorted((p for p in found if all((p / f).exists() for f in _FILES)), key=lambda p: p.name)


def latest_checkpoint(directory: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint folder under `directory`, or None."""
    found = checkpoints(directory)
    return found[-1] if found else None


def load_checkpoint(folder: str | os.PathLike) -> tuple[dict, dict[str, Tensor], dict]:
    """The decomposition's config and tensors and the training state written by `save_checkpoint` into `folder`.

    (`Decomposition.load(folder)` reads the decomposition of a checkpoint folder as a module.)
    """
    folder = Path(folder)
    missing = [f for f in _FILES if not (folder / f).exists()]
    if missing:
        raise FileNotFoundError(f"{folder} is not an l3d checkpoint: {', '.join(missing)} missing")
    try:
        meta = json.loads((folder / "training.json").read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{folder / 'training.json'} is not valid JSON ({e}); the checkpoint is damaged") from e
    if not isinstance(meta, dict) or meta.get("format") != "l3d-checkpoint-1":
        raise ValueError(f"{folder / 'training.json'} is not an l3d checkpoint (format 'l3d-checkpoint-1' expected)")
    tensors = load_file(folder / "training.safetensors")
    try:
        state = join_tensors(meta["state"], tensors)
    except KeyError as e:
        raise ValueError(f"{folder / 'training.safetensors'} lacks tensor {e} named in training.json") from e
    config = json.loads((folder / "config.json").read_text())
    return config, load_file(folder / "decomposition.safetensors"), state
