"""Checking user settings (e.g. a notebook's papermill parameters) before any work starts."""
from __future__ import annotations

import warnings
from collections.abc import Mapping

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
