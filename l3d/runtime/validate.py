"""Checking user settings (e.g. a notebook's papermill parameters) before any work starts."""
from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

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
    """`value` as a float (ints and NumPy numbers converted); a TypeError naming `name` for bools, strings and the
    rest."""
    if not is_number(value):
        raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    return float(value)


SEED_MAX = 2**64 - 1   # torch.Generator.manual_seed takes 0..2**64 - 1


def as_seed(name: str, value: object) -> int:
    """`value` as a seed: an int (NumPy integers converted) in 0..2**64 - 1, the range torch's generators take;
    a TypeError or ValueError naming `name` otherwise."""
    value = as_int(name, value)
    if not 0 <= value <= SEED_MAX:
        raise ValueError(f"{name} must be an int in 0..2**64 - 1 (what torch's random generators take), got {value}")
    return value


def renamed(name: str, value: object, renames: Mapping[str, str], stacklevel: int = 3) -> object:
    """`value`, or its current spelling when it is an old one (`renames`: old -> new), with a DeprecationWarning
    naming both. Old spellings of a setting's values (in settings, the command line, saved runs and checkpoints)
    are turned into the new ones at once, so nothing past this call sees them."""
    if isinstance(value, str) and value in renames:
        warnings.warn(f"{name}={value!r} is deprecated, renamed {renames[value]!r}: read as {renames[value]!r}",
                      DeprecationWarning, stacklevel=stacklevel)
        return renames[value]
    return value


def renamed_parameters(parameters: Mapping[str, Any], renames: Mapping[str, str],
                       stacklevel: int = 3) -> dict[str, Any]:
    """`parameters` with every parameter under an old name (`renames`: old -> new) under its new one, with a
    DeprecationWarning naming both. The old name wins over the new: a notebook's parameters cell sets only the new
    name, so an old one there was given on purpose (papermill's `-p toy paper_text`).

    Only an old name that holds a plain value (a str, number or bool, as the old parameters held: `toy` a variant's
    name, `compare_toy` a bool) is renamed: the same name holding anything else is another thing and is left alone,
    e.g. notebook 07's nested `toy` settings (a dict in its saved settings) or notebook 04's loop variable `toy`
    (a model) in the globals that `from_parameters(globals())` reads."""
    parameters = dict(parameters)
    for old, new in renames.items():
        if isinstance(parameters.get(old), (str, int, float)):   # bool is an int
            warnings.warn(f"parameter {old!r} is deprecated, renamed {new!r}: read as {new}={parameters[old]!r}",
                          DeprecationWarning, stacklevel=stacklevel)
            parameters[new] = parameters.pop(old)
    return parameters


def renamed_keywords(**renames: str) -> Callable[[Callable], Callable]:
    """A decorator: the function also takes the old name of each renamed keyword argument (`renames`: old=new),
    with a DeprecationWarning naming the new one, and receives the value under the new name. Both names at once
    are refused (TypeError)."""
    def decorate(function: Callable) -> Callable:
        where = function.__qualname__.removesuffix(".__init__")

        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            for old, new in renames.items():
                if old not in kwargs:
                    continue
                if new in kwargs:
                    raise TypeError(f"{where}() got {old}= and {new}=: {old} is the old name of {new}, give {new} only")
                warnings.warn(f"{where}({old}=...) is deprecated, renamed {new}=: read as {new}", DeprecationWarning,
                              stacklevel=2)
                kwargs[new] = kwargs.pop(old)
            return function(*args, **kwargs)
        return wrapper
    return decorate
