"""A decomposition on disk: saving and loading decomposition.safetensors and config.json (no pickle).

Each file is written atomically (l3d.runtime.atomic). Loading checks before it allocates: the config builds a
skeleton on the meta device, the safetensors header must name its tensors with their shapes, and a run.json
beside them (written by `Run.save`) must record the SHA-256 of both files. `Decomposition.save` and
`Decomposition.load` call these.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from .runtime.atomic import sha256_file, write_file


def save_decomposition(decomposition: nn.Module, path: str | os.PathLike) -> None:
    """Write `path`/decomposition.safetensors (the state dict, on the CPU) and `path`/config.json
    (`decomposition.config`), each atomically."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in decomposition.state_dict().items()}
    write_file(path / "decomposition.safetensors", lambda f: save_file(tensors, f))
    write_file(path / "config.json", lambda f: Path(f).write_text(json.dumps(decomposition.config, indent=1)))


def load_decomposition(
    cls: type[nn.Module],
    path: str | os.PathLike,
    map_location: str | torch.device = "cpu",
    shapes: dict[str, tuple[int, ...]] | None = None,
) -> nn.Module:
    """The decomposition (of class `cls`, a `Decomposition`) that `save_decomposition` wrote in `path`, in the
    dtype it was saved in; shapes: name -> shape of the model's tensors, or None (see `Decomposition.load`)."""
    path = Path(path)
    for f in ("config.json", "decomposition.safetensors"):
        if not (path / f).exists():
            raise FileNotFoundError(f"{path / f} not found: expected a folder written by Decomposition.save")
    _check_run_record(path)
    try:
        config = json.loads((path / "config.json").read_text())
        with torch.device("meta"):   # shapes only: nothing is allocated before the files are found to agree
            skeleton = cls(
                {n: tuple(s) for n, s in config["shapes"].items()},
                config["n_subnetworks"],
                {n: tuple(r) for n, r in config["rank"].items()},
                config["top_k"],
                decoder_norm=config.get("decoder_norm", "unit"),
                members=config.get("members", 1),
            )
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError, ValueError) as e:
        raise ValueError(f"{path / 'config.json'} is not a decomposition config ({type(e).__name__}: {e})") from e
    damaged = f"{path / 'decomposition.safetensors'} is damaged or not a safetensors file"
    try:   # the safetensors header: names and shapes, read without loading the tensors
        with safe_open(path / "decomposition.safetensors", framework="pt") as f:
            found = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{damaged} ({e})") from e
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    if found != expected:
        wrong = sorted(k for k in expected.keys() & found.keys() if expected[k] != found[k])
        raise ValueError(
            f"{path / 'decomposition.safetensors'} does not match {path / 'config.json'}: "
            f"missing {sorted(expected.keys() - found.keys())}, "
            f"unexpected {sorted(found.keys() - expected.keys())}, "
            f"wrong shape {[(k, found[k], expected[k]) for k in wrong]}"
        )
    if shapes is not None:
        skeleton.check_shapes(shapes)
    try:
        tensors = load_file(path / "decomposition.safetensors", device=str(map_location))
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{damaged} ({e})") from e
    decomposition = skeleton.to_empty(device=map_location)
    decomposition.to(dtype=next(iter(tensors.values())).dtype)
    decomposition.load_state_dict(tensors)
    return decomposition


def _check_run_record(path: Path) -> None:
    """A ValueError if `path`/run.json (written by Run.save) records SHA-256s that the decomposition's files in
    `path` do not have; nothing without run.json, or with one written before the hashes were recorded."""
    if not (path / "run.json").is_file():
        return
    try:
        record = json.loads((path / "run.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path / 'run.json'} is damaged ({type(e).__name__}: {e}); the run folder cannot be "
                         f"checked") from e
    hashes = record.get("sha256") if isinstance(record, dict) else None
    if hashes is None:
        return
    wrong = [f for f in ("decomposition.safetensors", "config.json")
             if not isinstance(hashes, dict) or hashes.get(f) != sha256_file(path / f)]
    if wrong:
        raise ValueError(
            f"{path} holds another decomposition than its run.json records: the SHA-256 of {' and '.join(wrong)} "
            f"differs from the one recorded. A save was cut short (a full disk, a kill), or the decomposition was "
            f"saved again without its run: save the run again (Run.save), or remove run.json to load the "
            f"decomposition on its own"
        )
