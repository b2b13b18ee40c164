"""Writing files and folders atomically: into a temporary sibling first, then renamed into place."""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def write_file(target: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Let `write(path)` fill a temporary file beside `target`, then rename it over `target`."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def write_folder(target: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Let `write(folder)` fill a temporary folder beside `target`, then rename it to `target`.

    If `target` appeared meanwhile (another process finished first), its copy is kept.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        write(tmp)
        if target.exists():
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
