"""One process at a time in a run folder: an exclusive, non-blocking lock on the folder itself.

`fcntl.flock` on the folder's own file descriptor (Linux and macOS lock folders as they lock files), so no lock
file is left behind, also by a process killed outright: the kernel releases the lock when the process ends. Two
runs started on one folder at once (two `--resume`, two `fit(..., checkpoint_dir=...)`) would otherwise delete
each other's temporary files; the second is refused with `FolderInUse` instead.
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:   # Windows: no flock; runs are not protected from each other there
    fcntl = None


class FolderInUse(RuntimeError):
    """Another process holds the lock on a run folder."""


@contextmanager
def exclusive(folder: str | os.PathLike, what: str = "folder") -> Iterator[Path]:
    """Hold an exclusive lock on `folder` (created if missing) for the `with` block; FolderInUse at once if another
    process holds it. `what` names the folder in the error (e.g. "--out", "checkpoint_dir")."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if fcntl is None:
        yield folder
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FolderInUse(
                f"another process is using {what} {str(folder)!r} (it holds the folder's lock): wait for it to "
                f"finish, or stop it, or choose another {what}"
            ) from None
        except OSError as e:   # a file system without locks (some network ones): go on, unprotected, and say so
            warnings.warn(f"cannot lock {what} {str(folder)!r} ({e.strerror or e}): two runs on it at once would "
                          f"not be stopped", stacklevel=3)
        yield folder
    finally:
        os.close(fd)   # releases the lock
