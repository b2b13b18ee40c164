"""Choosing the parameter tensors to decompose, by name or glob."""
from __future__ import annotations

import difflib
import fnmatch

from torch import nn


def select_tensors(model: nn.Module, patterns: str | list[str]) -> dict[str, nn.Parameter]:
    """The model's parameters whose names match any of `patterns` (exact names or globs), in model order.

    A pattern that matches nothing is an error listing the available names and the nearest matches.
    """
    if isinstance(patterns, str):
        patterns = [patterns]
    if not patterns:
        raise ValueError("no tensors chosen: pass parameter names or globs such as 'h.4.attn.*'")
    available = dict(model.named_parameters())
    chosen: dict[str, nn.Parameter] = {}
    for pattern in patterns:
        hits = [name for name in available if fnmatch.fnmatchcase(name, pattern)]
        if not hits:
            near = difflib.get_close_matches(pattern, list(available), n=5, cutoff=0.4)
            hint = f" Did you mean: {', '.join(near)}?" if near else ""
            raise ValueError(
                f"no parameter of {type(model).__name__} matches {pattern!r}.{hint} "
                f"Available parameters: {', '.join(available)}"
            )
        for name in hits:
            chosen[name] = available[name]
    return {name: chosen[name] for name in available if name in chosen}
