"""The embedded models' trained weights, shipped with l3d: every machine decomposes the same model.

Training the embedded GPT-Neo (notebook 05) or digits CNN (notebook 06) again on another CPU gives another
model: its kernels sum in another order, and training amplifies the last-bit differences (issue 27: 06's
retrained CNN moved its reconstruction error 0.343 -> 0.340 at test scale). So the models the notebooks use by
default, at their paper settings and at their test settings (notebooks/test_parameters.json), live here as
safetensors, with manifest.json:

    {settings key: {"file": "<key>.safetensors", "sha256": hex of the file's bytes, "bytes": int,
                    "name": "story-gptneo" | "digits-cnn", "settings": the training settings,
                    "record": {"final_loss": ...} or {"test_accuracy": ...}, "trained_on": the environment}}

The settings key is `l3d.runtime.resources.settings_key(name, settings)`, the key the cache of trained models
uses: the same settings find the same model, shipped or cached. `verified_file` checks the SHA-256 before
anything loads the file. `make models` trains them again (one thread) and rewrites files and manifest
(tools/models.py, with `ship`). `embedded_model` is where an embedded model comes from: shipped, else this
machine's cache of trained models, else trained (and cached).
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from safetensors.torch import load_model, save_model
from torch import nn

from ...runtime.atomic import sha256_file, write_file, write_folder
from ...runtime.environment import environment
from ...runtime.resources import cache_dir, settings_key

FOLDER = Path(__file__).resolve().parent
# A model's origin, as a notebook says it.
ORIGINS = {"shipped": "shipped with l3d, SHA-256 verified", "cache": "trained earlier on this machine, from its cache",
           "trained": "trained now on this machine"}


class ShippedWeightsError(RuntimeError):
    """A shipped model's file is missing or is not the file its manifest records (a SHA-256 mismatch)."""


def manifest(folder: str | os.PathLike | None = None) -> dict:
    """The shipped models of `folder` (default: this package's folder): settings key -> entry (module docstring);
    {} when there is no manifest."""
    path = Path(folder or FOLDER) / "manifest.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def shipped(key: str, folder: str | os.PathLike | None = None) -> dict | None:
    """The manifest entry of settings key `key`, or None when no model of those settings is shipped."""
    return manifest(folder).get(key)


def verified_file(key: str, folder: str | os.PathLike | None = None) -> tuple[Path, dict] | None:
    """The shipped file of settings key `key` and its manifest entry, after checking that the file's SHA-256 is the
    recorded one; None when no model of those settings is shipped.

    Raises ShippedWeightsError naming the file and both hashes when they differ, or the file when it is missing.
    """
    folder = Path(folder or FOLDER)
    entry = shipped(key, folder)
    if entry is None:
        return None
    path = folder / entry["file"]
    if not path.is_file():
        raise ShippedWeightsError(f"the shipped model {path} is missing (manifest.json lists it for {key}): reinstall "
                                  f"l3d, or run `make models` to train it again")
    found = sha256_file(path)
    if found != entry["sha256"]:
        raise ShippedWeightsError(f"the shipped model {path} is not the recorded one: its SHA-256 is {found}, "
                                  f"manifest.json records {entry['sha256']}. "
                                  f"Restore the file (git checkout -- {path.name}) "
                                  f"or run `make models` to train and record it again")
    return path, entry


def ship(key: str, name: str, settings: dict, record: dict, trained_on: dict, write: Callable[[str], None],
         folder: str | os.PathLike | None = None) -> dict:
    """Write a model's file with `write(path)` as folder/<key>.safetensors and record it in manifest.json under
    `key` (the settings key of `name` and `settings`), both atomically; returns the entry."""
    folder = Path(folder or FOLDER)
    path = write_file(folder / f"{key}.safetensors", write)
    entry = {"file": path.name, "sha256": sha256_file(path), "bytes": path.stat().st_size, "name": name,
             "settings": settings, "record": record, "trained_on": trained_on}
    _write_manifest({**manifest(folder), key: entry}, folder)
    return entry


def retire(keep: set[str], folder: str | os.PathLike | None = None) -> list[str]:
    """Drop from manifest.json every entry whose key is not in `keep`; returns the files they named (left on disk:
    `git rm` them)."""
    folder = Path(folder or FOLDER)
    entries = manifest(folder)
    _write_manifest({k: v for k, v in entries.items() if k in keep}, folder)
    return [v["file"] for k, v in entries.items() if k not in keep]


def _write_manifest(entries: dict, folder: Path) -> None:
    text = json.dumps(dict(sorted(entries.items())), indent=1) + "\n"
    write_file(folder / "manifest.json", lambda f: Path(f).write_text(text))


def embedded_model(name: str, settings: dict, build: Callable[[], nn.Module],
                   train: Callable[[], tuple[nn.Module, dict]],
                   cache: str | os.PathLike | None = None, use_shipped: bool = True,
                   device: str | None = None) -> tuple[nn.Module, dict]:
    """The model `name` trained with `settings`, on the CPU: the shipped one when there is one for these settings
    (and `use_shipped`), else the one in the cache folder (`cache`, default `l3d.runtime.resources.cache_dir()`)
    under the settings key, else `train()`'s (model, record), written to the cache with its record and the
    environment it was trained in (`device`: what train() ran on).

    build() makes the untrained architecture the saved weights load into. The record returned says where the model
    came from: "origin" is "shipped", "cache" or "trained" ("cached": it came from the cache).
    """
    key = settings_key(name, settings)
    found = verified_file(key) if use_shipped else None
    if found is not None:
        path, entry = found
        model = build()
        load_model(model, path, device="cpu")
        return model, {"name": name, "key": key, "settings": entry["settings"], **entry["record"], "origin": "shipped",
                       "cached": False}
    folder = Path(cache or cache_dir()) / key
    if (folder / "model.safetensors").exists():
        model = build()
        load_model(model, folder / "model.safetensors", device="cpu")
        record = json.loads((folder / "training.json").read_text())
        return model, {**record, "origin": "cache", "cached": True}
    model, record = train()
    record = {"name": name, "key": key, "settings": settings, **record, "trained_on": environment(device)}

    def write(tmp: Path) -> None:
        save_model(model.cpu(), str(tmp / "model.safetensors"))
        (tmp / "training.json").write_text(json.dumps(record))

    write_folder(folder, write)
    return model.cpu(), {**record, "origin": "trained", "cached": False}
