"""Checking user settings (e.g. a notebook's papermill parameters) before any work starts."""
from __future__ import annotations

import math
from collections.abc import Sequence

Rule = tuple  # (types, low, high): low/high inclusive bounds or None; or a list of allowed values


def _describe(types: type | tuple[type, ...]) -> str:
    types = types if isinstance(types, tuple) else (types,)
    return " or ".join(t.__name__ for t in types)


def check_parameters(values: dict[str, object], **rules: Rule | Sequence[object]) -> None:
    """Raise one ValueError naming every value that breaks its rule.

    A rule is a list of allowed values, or `(types, low, high)` with inclusive bounds (None: open).
    An int is accepted where a float is asked for; a bool is never taken for a number; nan and inf never pass.

        check_parameters(globals(), seed=(int, 0, None), lr=(float, 0, None), device=["auto", "cpu", "cuda"])
    """
    problems = []
    for name, rule in rules.items():
        if name not in values:
            problems.append(f"{name!r} is missing")
            continue
        value = values[name]
        if isinstance(rule, list):
            if value not in rule:
                problems.append(f"{name!r} must be one of {rule}, got {value!r}")
            continue
        types, low, high = rule
        types = types if isinstance(types, tuple) else (types,)
        if float in types:
            types = (*types, int)
        if isinstance(value, bool) and bool not in types or not isinstance(value, types):
            problems.append(f"{name!r} must be {_describe(rule[0])}, got {value!r} ({type(value).__name__})")
            continue
        if isinstance(value, float) and not math.isfinite(value):
            problems.append(f"{name!r} must be a finite number, got {value!r}")
            continue
        if low is not None and value < low or high is not None and value > high:
            bounds = f"at least {low}" if high is None else f"at most {high}" if low is None else f"in [{low}, {high}]"
            problems.append(f"{name!r} must be {bounds}, got {value!r}")
    if problems:
        raise ValueError("bad parameters: " + "; ".join(problems))
