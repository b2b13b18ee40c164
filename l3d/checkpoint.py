"""Checkpoints of a training run, written atomically and without pickle (safetensors + JSON).

A checkpoint folder holds one `step-NNNNNNNN/` folder per checkpoint kept:
    decomposition.safetensors, config.json    the decomposition (readable by Decomposition.load)
    training.safetensors                       every tensor of the training state (optimizer moments, RNG states, …)
    training.json                              everything else (step, epoch, history, scheduler, settings)
Each is written into a hidden temporary folder that is flushed to disk and renamed into place when complete
(l3d.atomic), so a crash while writing leaves the earlier checkpoints as they were. training.json records the
SHA-256 of every file (its own over the rest of its content); `load_checkpoint` verifies them, and `fit` resumes
from the newest checkpoint that passes, warning about any newer one it skips. Old checkpoints are renamed out of
the way before they are deleted, and what a killed process left behind (hidden `.step-*` folders, incomplete
older folders) is removed by `remove_litter` when a run starts.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from .decomposition import DECODER_NORM_RENAMES, Decomposition
from .divergences import DIVERGENCE_RENAMES
from .runtime.atomic import remove_folder, sha256_file, write_file, write_folder
from .runtime.validate import renamed

_STEP_FOLDER = re.compile(r"^step-(\d{8})$")
_LITTER = re.compile(r"^\.step-\d{8}\.")   # temporary folders of write_folder, folders being removed
_FILES = ("decomposition.safetensors", "config.json", "training.safetensors", "training.json")
_HASHED = _FILES[:3]   # training.json carries their hashes and one of its own content


class DamagedCheckpoint(ValueError):
    """A checkpoint folder whose files are unreadable or do not match the hashes recorded in it."""


class ResumeRefused(ValueError):
    """A checkpoint that this call cannot continue: written with other settings, another model or other inputs,
    further along than the epochs asked for, or too old to tell (see `l3d.fit`)."""


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
    raise TypeError(f"cannot store {type(obj).__name__} at {key!r} in a checkpoint "
                    "(tensors, numbers, strings, lists and dicts only)")


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

    Keeps the `keep` newest checkpoints (keep >= 1) and returns the new folder; the same step written again
    replaces the folder.
    """
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise ValueError(f"keep must be an int >= 1 (the newest checkpoints kept), got {keep!r}")
    directory = Path(directory)

    def fill(folder: Path) -> None:
        decomposition.save(folder)
        tensors: dict[str, Tensor] = {}
        meta = split_tensors(state, tensors)
        write_file(folder / "training.safetensors", lambda f: save_file(tensors, f))
        record = {"format": "l3d-checkpoint-1", "step": step, "state": meta}
        hashes = {f: sha256_file(folder / f) for f in _HASHED}
        hashes["training.json"] = _sha256_json(record)
        (folder / "training.json").write_text(json.dumps({**record, "sha256": hashes}))

    final = write_folder(directory / f"step-{step:08d}", fill, replace=True)
    for old in checkpoints(directory)[:-keep]:
        remove_folder(old)
    return final


def _sha256_json(record: dict) -> str:
    """The hash of training.json's content without its hashes (JSON round trips floats exactly)."""
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def remove_litter(directory: str | os.PathLike) -> list[Path]:
    """Remove what killed processes left in a checkpoint folder, and return it: hidden `.step-*` folders
    (checkpoints being written or removed) and incomplete step folders older than the newest complete one."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    complete = checkpoints(directory)
    newest = complete[-1].name if complete else ""
    litter = [p for p in directory.iterdir() if p.is_dir() and (
        _LITTER.match(p.name) or _STEP_FOLDER.match(p.name) and p.name < newest and p not in complete)]
    for path in litter:
        shutil.rmtree(path, ignore_errors=True)
    return litter


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

    Every file is checked against the SHA-256 recorded in training.json (checkpoints written before hashes were
    recorded are read unchecked); a damaged file raises DamagedCheckpoint naming it.
    (`Decomposition.load(folder)` reads the decomposition of a checkpoint folder as a module.)
    """
    folder = Path(folder)
    missing = [f for f in _FILES if not (folder / f).exists()]
    if missing:
        raise FileNotFoundError(f"{folder} is not an l3d checkpoint: {', '.join(missing)} missing")
    try:
        meta = json.loads((folder / "training.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DamagedCheckpoint(f"{folder / 'training.json'} is not valid JSON ({e}); the checkpoint is damaged") from e
    if not isinstance(meta, dict) or meta.get("format") != "l3d-checkpoint-1":
        raise DamagedCheckpoint(f"{folder / 'training.json'} is not an l3d checkpoint "
                                "(format 'l3d-checkpoint-1' expected)")
    if "sha256" in meta:
        hashes = meta.pop("sha256")
        found = {f: sha256_file(folder / f) for f in _HASHED}
        found["training.json"] = _sha256_json(meta)
        wrong = [f for f in _FILES if not isinstance(hashes, dict) or hashes.get(f) != found[f]]
        if wrong:
            raise DamagedCheckpoint(f"{folder} is damaged: the SHA-256 of {', '.join(wrong)} differs from the one "
                                    f"recorded when the checkpoint was written")
    try:
        tensors = load_file(folder / "training.safetensors")
        decomposition = load_file(folder / "decomposition.safetensors")
        config = json.loads((folder / "config.json").read_text())
    except (SafetensorError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DamagedCheckpoint(f"{folder} is damaged: {type(e).__name__}: {e}") from e
    try:
        state = join_tensors(meta["state"], tensors)
    except KeyError as e:
        raise DamagedCheckpoint(f"{folder / 'training.safetensors'} lacks tensor {e} named in training.json") from e
    return config, decomposition, state


# --- resuming ---------------------------------------------------------------------------------------
def newest_intact(directory: str | os.PathLike) -> tuple[Path | None, dict, dict, list[tuple[Path, str]]]:
    """The newest checkpoint under `directory` that loads and passes its hashes: (its folder, its decomposition's
    tensors, its training state, [(damaged newer folder, why)]); (None, {}, {}, []) when there is none at all, and
    DamagedCheckpoint when every one is damaged."""
    candidates = checkpoints(directory)
    skipped = []
    for folder in reversed(candidates):
        try:
            _, tensors, state = load_checkpoint(folder)
            return folder, tensors, state, skipped
        except DamagedCheckpoint as e:
            skipped.append((folder, str(e)))
    if skipped:
        raise DamagedCheckpoint(f"no intact checkpoint in {directory} to resume from: "
                                + "; ".join(e for _, e in skipped))
    return None, {}, {}, []


def set_aside(damaged: list[Path]) -> None:
    """Rename damaged checkpoint folders to `<name>.damaged` (kept for inspection, out of the rotation)."""
    for folder in damaged:
        aside = folder.with_name(folder.name + ".damaged")
        while aside.exists():
            aside = aside.with_name(aside.name + "_")
        os.replace(folder, aside)


def _flat_settings(settings: Mapping, prefix: str = "") -> dict:
    """Nested settings as one level, keys joined by '.': {"a": {"b": 1}} -> {"a.b": 1}."""
    flat = {}
    for key, value in settings.items():
        if isinstance(value, Mapping) and value:
            flat.update(_flat_settings(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


_RENAMES = {"decoder_norm": DECODER_NORM_RENAMES, "divergence": DIVERGENCE_RENAMES}


def _current_spellings(settings: object) -> object:
    """`settings` (nested dicts and lists) with every old spelling of a renamed setting's value (decoder_norm
    "authors", divergence "mse_authors") in its current one, so that checkpoints written before the renames
    compare equal to the same settings spelled now."""
    if isinstance(settings, Mapping):
        return {k: renamed(k, v, _RENAMES[k], stacklevel=4) if k in _RENAMES else _current_spellings(v)
                for k, v in settings.items()}
    if isinstance(settings, list):
        return [_current_spellings(v) for v in settings]
    return settings


def _with_later_settings(config: object) -> object:
    """A checkpoint's recorded run config (an L3DConfig's dict, or a sweep's {"sweep": [...]}) with the settings
    added to L3DConfig after it was written, at the values that mean what it did then (revive 0: none)."""
    if isinstance(config, Mapping) and isinstance(config.get("sweep"), list):
        return {**config, "sweep": [_with_later_settings(c) for c in config["sweep"]]}
    if isinstance(config, Mapping) and "n_subnetworks" in config:
        return {"revive": 0.0, **config}
    return config


def check_resumable(found: Path, written: dict, settings: dict) -> None:
    """ResumeRefused naming every setting of `settings` (this call's) that differs from `written` (the checkpoint's),
    or when the checkpoint predates the record of the model and the run's settings."""
    if "gradients" not in written:
        raise ResumeRefused(
            f"cannot resume {found}: it was written by an earlier l3d, which did not record the model (a fingerprint "
            f"of its tensors), the divergence, reference and engine, nor the run's settings; resuming could go on "
            f"with other gradients without a word. Start again in an empty checkpoint_dir"
        )
    written = {"silence": 0.0, "silence_from": 0, **_current_spellings(written)}   # before silence: none
    written["config"] = _with_later_settings(written.get("config"))
    old, new = _flat_settings(written), _flat_settings(settings)
    absent = "(not recorded)"
    changed = [k for k in [*new, *(k for k in old if k not in new)] if old.get(k, absent) != new.get(k, absent)]
    if changed:
        raise ResumeRefused(
            f"cannot resume {found}: it was written with other settings "
            + "; ".join(f"{k}: checkpoint {old.get(k, absent)!r}, now {new.get(k, absent)!r}" for k in changed)
            + ". Resume with the settings, model and inputs it was written with, or choose an empty checkpoint_dir"
        )
