"""Where trained models are cached, and the clear error when a hub resource is missing offline."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path


class MissingResourceError(RuntimeError):
    """A model or data set is neither cached nor downloadable (offline); the message says how to get it."""


def missing_resources(what: str, items: list[str]) -> MissingResourceError:
    """One error naming every missing resource of `what` at once, numbered; each item says where the resource
    belongs and how to get it."""
    listed = "\n".join(f"  {i}. {item}" for i, item in enumerate(items, 1))
    return MissingResourceError(
        f"{what} needs {len(items)} thing{'s' * (len(items) > 1)} this machine lacks and cannot download (offline):\n"
        f"{listed}\nOr use source='embedded', which needs nothing from the network."
    )


def offline() -> bool:
    """True when downloads are switched off: HF_HUB_OFFLINE, HF_DATASETS_OFFLINE or L3D_OFFLINE set to 1/true."""
    names = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "L3D_OFFLINE")
    return any(os.environ.get(n, "").strip().lower() in ("1", "true", "yes", "on") for n in names)


def cache_dir() -> Path:
    """The project's cache of trained models: $L3D_CACHE, else ~/.cache/l3d."""
    return Path(os.environ.get("L3D_CACHE") or Path.home() / ".cache" / "l3d")


def settings_key(name: str, settings: dict) -> str:
    """A folder name for `settings`: the name plus a short hash of the settings as sorted JSON."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    return f"{name}-{digest}"
