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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_file(target: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Let `write(path)` fill a temporary file beside `target`, then rename it over `target`.

    The file gets the mode open() would give it (0o666 less the umask), not mkstemp's private 0o600.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())   # after writing: some writers (safetensors) make the file anew
        _sync(tmp)
        os.replace(tmp, target)
        _sync(target.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def write_folder(target: str | os.PathLike, write: Callable[[Path], None], replace: bool = False) -> Path:
    """Let `write(folder)` fill a temporary folder beside `target`, then rename it to `target`.

    If `target` appeared meanwhile (another process finished first), its copy is kept; with replace=True it is
    replaced (moved aside, then removed). The folder gets the mode mkdir would give it (0o777 less the umask).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        write(tmp)
        if target.exists() and not replace:
            shutil.rmtree(tmp)
        else:
            for path in [*sorted(p for p in tmp.rglob("*") if p.is_file()), tmp]:
                _sync(path)
            old = _move_aside(target) if target.exists() else None
            os.replace(tmp, target)
            _sync(target.parent)
            if old is not None:
                shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _move_aside(folder: Path) -> Path:
    """Rename `folder` to a hidden sibling (named like write_folder's temporaries) and return the new path."""
    aside = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    os.replace(folder, aside)   # onto the empty folder just made: atomic, and the name is ours
    return aside


def remove_folder(folder: str | os.PathLike) -> None:
    """Remove `folder` so that a crash midway leaves no part of it under its name: it is renamed to a hidden
    sibling (`.<name>.*`) first, then deleted."""
    shutil.rmtree(_move_aside(Path(folder)))


def remove_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files (`.<name>.*.tmp`) that write_file calls killed midway left in `folder`; return them."""
    folder = Path(folder)
    found = [p for p in folder.glob(".*.tmp") if p.is_file()] if folder.is_dir() else []
    for path in found:
        path.unlink(missing_ok=True)
    return found
