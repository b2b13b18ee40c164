"""Progress bars: a redrawn bar in a terminal, plain lines in a log, tqdm's widget inside Jupyter.

`tqdm(...)` takes tqdm's arguments and picks, when it is called:

* in a terminal (sys.stderr is a TTY): tqdm's bar, redrawn in place;
* inside a Jupyter kernel with ipywidgets: tqdm's notebook widget;
* anywhere else (a log file, a pipe, CI, papermill's --log-output): `LineProgress`, one plain line per update at
  most every 10 seconds ($TQDM_MININTERVAL when set) and one when it ends, each ending in a newline. A redrawn
  bar there writes every redraw after a carriage return, so a log gets one line tens of kilobytes long.

$L3D_PROGRESS chooses instead: "text" (or "lines") plain lines, also inside a kernel (`make notebook` sets it,
so that papermill's --log-output shows a running cell's progress in the terminal: a widget's updates never reach
it); "bar" tqdm's redrawn bar. `disable=True` prints nothing in every case.
"""
from __future__ import annotations

import os
import sys

from tqdm import std

LINE_INTERVAL = 10.0   # seconds between two plain progress lines (unless $TQDM_MININTERVAL says otherwise)
CHOICES = ("text", "lines", "bar", "")
BAR_FORMAT = "{desc}: {percentage:3.0f}% {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"


def _interval() -> float:
    """Seconds between two plain lines: $TQDM_MININTERVAL when it is a number >= 0, else LINE_INTERVAL."""
    try:
        seconds = float(os.environ.get("TQDM_MININTERVAL", LINE_INTERVAL))
    except ValueError:
        return LINE_INTERVAL
    return seconds if seconds >= 0 else LINE_INTERVAL


class LineProgress(std.tqdm):
    """tqdm writing one plain line per update (no carriage return, no cursor moves), at most every `mininterval`
    seconds (default LINE_INTERVAL or $TQDM_MININTERVAL), and a last one with the totals when it closes:

        L3D:  40% 40/100 [00:06<00:09,  6.15it/s, dead=0, error=0.094]
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("mininterval", _interval())
        if kwargs.get("total") is not None or hasattr(kwargs.get("iterable", args[0] if args else None), "__len__"):
            kwargs.setdefault("bar_format", BAR_FORMAT)   # no bar: its blocks are noise in a log
        self._last_line = None
        super().__init__(*args, **kwargs)

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        """Write the bar's state (or `msg`) as one line; an empty message (tqdm clearing a bar) writes nothing."""
        line = self.__str__() if msg is None else msg
        if not line.strip() or line == self._last_line:
            return False
        self._last_line = line
        self.fp.write(line.rstrip() + "\n")
        self.fp.flush()
        return True

    def clear(self, nolock: bool = False) -> None:
        """Nothing to clear: lines stay."""

    def close(self) -> None:
        """The last line, with the overall rate, unless leave=False; then tqdm's own bookkeeping."""
        if not self.disable and self.leave is not False and hasattr(self, "last_print_t"):
            with self._lock:
                self._ema_dt = lambda: None   # the overall rate, as tqdm's own close shows it
                self.display()
        self.leave = False   # tqdm's close then only "clears" the bar, which writes nothing here
        super().close()


def _in_jupyter() -> bool:
    """Inside a Jupyter kernel (IPython's kernel app), as tqdm.autonotebook decides."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    try:
        shell = ipython.get_ipython()
    except AttributeError:
        return False
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def _choice() -> str:
    value = os.environ.get("L3D_PROGRESS", "").strip().lower()
    if value not in CHOICES:
        raise ValueError(f"$L3D_PROGRESS must be 'text' (plain lines), 'bar' (a redrawn bar) or unset (chosen by "
                         f"where the output goes), got {os.environ['L3D_PROGRESS']!r}")
    return "text" if value == "lines" else value


def tqdm(*args, **kwargs) -> std.tqdm:
    """A progress bar as tqdm.tqdm(*args, **kwargs) makes one, of the kind that suits where the output goes (the
    module docstring)."""
    choice = _choice()
    if choice == "bar":
        return std.tqdm(*args, **kwargs)
    if choice == "text":
        return LineProgress(*args, **kwargs)
    if _in_jupyter():
        from tqdm.auto import tqdm as auto

        return auto(*args, **kwargs)
    stream = kwargs.get("file") or sys.stderr
    try:
        terminal = bool(stream.isatty())
    except (AttributeError, ValueError):   # no isatty, or a closed stream
        terminal = False
    return std.tqdm(*args, **kwargs) if terminal else LineProgress(*args, **kwargs)


__all__ = ["LINE_INTERVAL", "LineProgress", "tqdm"]
