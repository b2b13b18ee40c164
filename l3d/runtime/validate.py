"""Checking user settings (e.g. a notebook's papermill parameters) before any work starts."""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

Rule = tuple  # (types, low, high[, interval]): bounds or None, inclusive unless interval says; or allowed values
_INTERVALS = ("[]", "(]", "[)", "()")


def is_int(value: object) -> bool:
    """An int or a NumPy integer, not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def is_number(value: object) -> bool:
    """An int or float, or a NumPy one, not a bool."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def as_int(name: str, value: object) -> int:
    """`value` as an int (NumPy integers converted); a TypeError naming `name` for bools, floats and the rest."""
    if not is_int(value):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    return int(value)


def as_float(name: str, value: object) -> float:
    """`value` as a float (ints and NumPy numbers converted); a TypeError naming `name` for bools, strings and the rest."""
    if not is_number(value):
        raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    return float(value)


def _describe(types: type | tuple[type, ...]) -> str:
    types = types if isinstance(types, tuple) else (types,)
    return " or ".join(t.__name__ for t in types)


def check_parameters(values: dict[str, object], **rules: Rule | Sequence[object]) -> None:
    """Raise one ValueError naming every value that breaks its rule.

    A rule is a list of allowed values, or `(types, low, high)` with inclusive bounds (None: open), or
    `(types, low, high, interval)` with interval "[]", "(]", "[)" or "()" saying which bounds are excluded.
    `types` may be a one-element list, `[int]`: the value must then be a non-empty list of such values, each
    within the bounds (papermill's `-p` passes lists as text: use `-y`).
    An int is accepted where a float is asked for; a bool is never taken for a number; nan and inf never pass.

        check_parameters(globals(), seed=(int, 0, None), lr=(float, 0, None, "(]"), seeds=([int], 0, None),
                         device=["auto", "cpu", "cuda"])
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
        types, low, high, interval = rule if len(rule) == 4 else (*rule, "[]")
        if interval not in _INTERVALS:
            raise ValueError(f"the rule for {name!r} names interval {interval!r}: use one of {_INTERVALS}")
        if isinstance(types, list):
            if not isinstance(value, list) or not value:
                hint = " (papermill -p passes text: give lists with -y, e.g. -y 'seeds: [0, 1]')" if isinstance(value, str) else ""
                problems.append(f"{name!r} must be a non-empty list of {_describe(types[0])}, got {value!r} "
                                f"({type(value).__name__}){hint}")
                continue
            problems += [p for i, v in enumerate(value) for p in _check_value(f"{name}[{i}]", v, types[0], low, high, interval)]
            continue
        problems += _check_value(name, value, types, low, high, interval)
    if problems:
        raise ValueError("bad parameters: " + "; ".join(problems))


def _check_value(name: str, value: object, types: type | tuple[type, ...], low, high, interval: str) -> list[str]:
    """What is wrong with one value (nothing: [])."""
    described = _describe(types)
    types = types if isinstance(types, tuple) else (types,)
    if float in types:
        types = (*types, int)
    if isinstance(value, bool) and bool not in types or not isinstance(value, types):
        return [f"{name!r} must be {described}, got {value!r} ({type(value).__name__})"]
    if isinstance(value, float) and not math.isfinite(value):
        return [f"{name!r} must be a finite number, got {value!r}"]
    low_open, high_open = interval[0] == "(", interval[1] == ")"
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        if high is None:
            bounds = f"{'above' if low_open else 'at least'} {low}"
        elif low is None:
            bounds = f"{'below' if high_open else 'at most'} {high}"
        else:
            bounds = f"in {interval[0]}{low}, {high}{interval[1]}"
        return [f"{name!r} must be {bounds}, got {value!r}"]
    return []
