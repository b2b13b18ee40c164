"""Choosing the parameter tensors to decompose, by name or glob."""
from __future__ import annotations

import difflib
import fnmatch

from torch import nn


def select_tensors(model: nn.Module, patterns: str | list[str]) -> dict[str, nn.Parameter]:
    """The model's parameters whose names match any of `patterns` (exact names or globs), in model order.

    A pattern that matches nothing is an error listing the available names and the nearest matches; so is
    the bare name of a module (ambiguous: which of its tensors?), which suggests its tensors and 'name.*', and
    a chosen tensor with no entries (a dimension of size 0).
    """
    if isinstance(patterns, str):
        patterns = [patterns]
    if not patterns:
        raise ValueError("no tensors chosen: pass parameter names or globs such as 'h.4.attn.*' as tensors")
    bad = [p for p in patterns if not isinstance(p, str)]
    if bad:
        raise TypeError(f"tensors: tensor names and globs must be strings, got {bad!r}")
    available = dict(model.named_parameters())
    chosen: dict[str, nn.Parameter] = {}
    for pattern in patterns:
        hits = [name for name in available if fnmatch.fnmatchcase(name, pattern)]
        if not hits and pattern and any(name.startswith(pattern + ".") for name in available):
            own = [name for name in available if name.startswith(pattern + ".")]
            raise ValueError(
                f"tensors: {pattern!r} names a module of {type(model).__name__}, not a parameter tensor: "
                f"choose its tensors by name ({', '.join(own[:8])}{', …' if len(own) > 8 else ''}) "
                f"or all of them with {pattern + '.*'!r}"
            )
        if not hits:
            near = difflib.get_close_matches(pattern, list(available), n=5, cutoff=0.4)
            hint = f" Did you mean: {', '.join(near)}?" if near else ""
            raise ValueError(
                f"tensors: no parameter of {type(model).__name__} matches {pattern!r}.{hint} "
                f"Available parameters: {', '.join(available)}"
            )
        for name in hits:
            chosen[name] = available[name]
    empty = {name: tuple(p.shape) for name, p in chosen.items() if p.numel() == 0}
    if empty:
        raise ValueError(f"tensors: {', '.join(f'{n!r} (shape {s})' for n, s in empty.items())} "
                         f"{'has' if len(empty) == 1 else 'have'} no entries, so nothing to decompose: choose tensors "
                         f"with at least one entry")
    return {name: chosen[name] for name in available if name in chosen}
