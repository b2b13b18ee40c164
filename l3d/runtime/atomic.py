"""Writing files and folders atomically: into a temporary sibling first, flushed to disk, then renamed into
place, so a crash or power loss leaves either the old or the new version, never a torn one."""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def _sync(path: str | os.PathLike) -> None:
    """Flush a file, or a folder's entries (POSIX), to disk."""
    if Path(path).is_dir() and os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file(target: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Let `write(path)` fill a temporary file beside `target`, then rename it over `target`."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        _sync(tmp)
        os.replace(tmp, target)
        _sync(target.parent)
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
            for path in [*sorted(p for p in tmp.rglob("*") if p.is_file()), tmp]:
                _sync(path)
            os.replace(tmp, target)
            _sync(target.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
