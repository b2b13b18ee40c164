"""Writing files and folders atomically: into a temporary sibling first, flushed to disk, then renamed into
place, so a crash or power loss leaves either the old or the new version, never a torn one.

A file is written inside a hidden temporary folder of its own beside the target, `.<name>.l3d-XXXXXXXX.tmp/`,
so that whatever the writer makes there (safetensors writes `.tmpXXXXXX` files of its own before renaming) stays
inside it. What a killed process leaves is therefore one such folder, which `remove_temporaries` recognizes by
its name and removes; nothing else (a user's own `.notes.tmp`) matches.
"""
from __future__ import annotations

import hashlib
import os
import re
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


_TEMPORARY = re.compile(r"^\..+\.l3d-[a-z0-9_]{8}\.tmp$")   # write_file's folders: .<name>.l3d-XXXXXXXX.tmp
# what write_file left before it wrote into a folder of its own: .<name>.XXXXXXXX.tmp, for l3d's own file names
_EARLIER = re.compile(r"^\.(decomposition\.safetensors|config\.json|run\.json)\.[a-z0-9_]{8}\.tmp$")


def write_file(target: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Let `write(path)` fill a file of `target`'s name inside a temporary folder beside `target`
    (`.<name>.l3d-XXXXXXXX.tmp/`), then rename the file over `target` and remove the folder.

    The file gets the mode open() would give it (0o666 less the umask), not a private 0o600.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.l3d-", suffix=".tmp"))
    tmp = folder / target.name
    try:
        write(str(tmp))
        os.chmod(tmp, 0o666 & ~_umask())   # after writing: some writers (safetensors) make the file anew
        _sync(tmp)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    try:
        os.rmdir(folder)
    except OSError:   # a writer left something of its own beside the file
        shutil.rmtree(folder, ignore_errors=True)
    _sync(target.parent)
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


def is_temporary(name: str) -> bool:
    """Whether a file or folder name is one of write_file's temporaries (also as written by earlier l3d versions)."""
    return bool(_TEMPORARY.match(name) or _EARLIER.match(name))


def remove_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete what write_file calls killed midway left in `folder` (their `.<name>.l3d-XXXXXXXX.tmp` folders, and
    the `.<name>.XXXXXXXX.tmp` files earlier versions left for decomposition.safetensors, config.json and run.json);
    return them. Nothing else is touched. Call it only while no other process writes into `folder`."""
    folder = Path(folder)
    found = [p for p in folder.iterdir() if is_temporary(p.name)] if folder.is_dir() else []
    for path in found:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return found


def sha256_file(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes, as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
