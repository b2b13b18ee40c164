"""Settings as data: dataclasses that check themselves and record themselves whole.

A settings class lists every setting of one part of a run (the toy, the data, the decomposition, the
fit) as a dataclass field with a type and, where it has one, a range or a list of choices:

    @dataclass(frozen=True)
    class Fit(Settings):
        epochs: int = bounded(1000, low=1)
        lr: float = bounded(0.01, low=0, open_low=True)

`Fit(epochs=0)` raises one ValueError naming every bad field and what would be right. Notebooks build
their settings from their papermill parameters (`from_parameters(globals())`), so the notebook's check
and the library's check are the same check, made before any work starts, and `to_dict()` is what
`metrics.json` records. A list parameter given on the command line (`-p seeds "[0, 1]"`) arrives as a
string; it is read as a Python literal.
"""
from __future__ import annotations

import ast
import dataclasses
import math
import numbers
import types
import typing
from collections.abc import Mapping
from typing import Any

from .validate import renamed


def bounded(default: Any, low: float | None = None, high: float | None = None, choices: tuple | None = None,
            open_low: bool = False, unprefixed: bool = False, renamed: Mapping[str, str] | None = None) -> Any:
    """A dataclass field with a default and a range [low, high] (open at low when open_low) or a list of choices.
    unprefixed: in a nested settings class, the parameter keeps its bare name (see `from_parameters`).
    renamed: old spelling -> choice, values still accepted with a DeprecationWarning and stored as the choice."""
    return dataclasses.field(default=default, metadata={"low": low, "high": high, "choices": choices,
                                                        "open_low": open_low, "unprefixed": unprefixed,
                                                        "renamed": renamed})


def same_as(settings: type, name: str) -> Any:
    """A dataclass field with the default and the checks of field `name` of the settings class `settings`: one
    setting declared in one place, read by two classes (`L3DConfig`'s training settings are `fit`'s `Schedule`)."""
    field = {f.name: f for f in dataclasses.fields(settings)}[name]
    return dataclasses.field(default=field.default, metadata=field.metadata)


class Settings:
    """Base of the settings dataclasses: checks every field on construction (see the module docstring)."""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        problems = []
        for f in dataclasses.fields(self):
            value, problem = _check(f.name, getattr(self, f.name), hints[f.name], f.metadata)
            if problem:
                problems.append(problem)
            else:
                object.__setattr__(self, f.name, value)
        try:
            problems += self.check()
        except (TypeError, AttributeError):   # a cross-field rule met a field of the wrong type, reported above
            if not problems:
                raise
        if problems:
            raise ValueError(f"bad {type(self).__name__} settings: " + "; ".join(problems))

    def check(self) -> list[str]:
        """Problems that involve several fields (override); each a sentence naming the fields."""
        return []

    def to_dict(self) -> dict:
        """Every setting, nested settings as dicts: what metrics.json records."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, Any], **fixed: Any):
        """The settings named by this class's fields, read from `parameters` (a notebook's globals()).

        A field whose type is itself a Settings class is built from the same parameters, its fields read
        under the prefix named in its metadata ("prefix": toy_epochs for the toy's epochs), except fields
        marked unprefixed, which read their bare name.
        `fixed` gives values that are not parameters. Fields absent from both keep their defaults.
        """
        problems: list[str] = []
        values = _gather(cls, parameters, "", fixed, problems)
        try:
            settings = cls(**values)
        except ValueError as e:
            problems.append(str(e))
        if problems:   # every bad setting, of the nested classes too, in one error
            raise ValueError("; ".join(problems))
        return settings


def _gather(cls: type, parameters: Mapping[str, Any], prefix: str, fixed: Mapping[str, Any],
            problems: list[str]) -> dict:
    """The values of cls's fields found in `fixed` or `parameters`; nested settings built (a nested class that
    refuses its values is reported in `problems` and replaced by its defaults, so the rest is still checked)."""
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if isinstance(hint, type) and issubclass(hint, Settings):
            if f.name in fixed:
                values[f.name] = fixed[f.name]
                continue
            try:
                values[f.name] = hint(**_gather(hint, parameters, f.metadata.get("prefix", ""), {}, problems))
            except ValueError as e:
                problems.append(str(e))
                values[f.name] = hint()
        elif f.name in fixed:
            values[f.name] = fixed[f.name]
        else:
            name = f.name if f.metadata.get("unprefixed") else prefix + f.name
            if name in parameters:
                values[f.name] = parameters[name]
    return values


def _plain(value: Any) -> Any:
    if isinstance(value, Settings):
        return value.to_dict()
    if isinstance(value, tuple):
        return list(value)
    return value


def _describe(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(hint))
    if typing.get_origin(hint) in (list, tuple):
        return f"a list of {_describe(typing.get_args(hint)[0])}"
    if hint is type(None):
        return "None"
    return getattr(hint, "__name__", str(hint))


def _convert(value: Any, hint: Any) -> tuple[bool, Any]:
    """(fits, value converted to the plain Python type) for one type hint."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            fits, converted = _convert(value, option)
            if fits:
                return True, converted
        return False, value
    if hint is typing.Any:
        return True, value
    if hint is type(None):
        return value is None, value
    if origin in (list, tuple):
        if isinstance(value, str):
            try:
                value = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                return False, value
        if not isinstance(value, (list, tuple)):
            return False, value
        item = typing.get_args(hint)[0]
        converted = [_convert(v, item) for v in value]
        return all(ok for ok, _ in converted), [v for _, v in converted]
    if origin is dict or hint is dict:
        return isinstance(value, dict), value
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
        return ok, int(value) if ok else value
    if hint is float:
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
        return ok, (value if isinstance(value, int) else float(value)) if ok else value
    if hint is str:
        return isinstance(value, str), value
    return isinstance(value, hint), value


def _check(name: str, value: Any, hint: Any, metadata: Mapping) -> tuple[Any, str | None]:
    fits, value = _convert(value, hint)
    if not fits:
        return value, f"{name} must be {_describe(hint)}, got {value!r} ({type(value).__name__})"
    if metadata.get("renamed"):   # Settings.__init__ -> __post_init__ -> _check -> renamed: warn at the caller
        value = renamed(name, value, metadata["renamed"], stacklevel=5)
    choices = metadata.get("choices")
    if choices is not None and value not in choices:
        return value, f"{name} must be one of {list(choices)}, got {value!r}"
    numbers_in = value if isinstance(value, list) else [value]
    for v in numbers_in:
        if not isinstance(v, numbers.Real) or isinstance(v, bool):
            continue
        if not math.isfinite(v):
            return value, f"{name} must be a finite number, got {v!r}"
        low, high, open_low = metadata.get("low"), metadata.get("high"), metadata.get("open_low")
        if low is not None and (v < low or open_low and v == low) or high is not None and v > high:
            lower = f"> {low}" if open_low else f">= {low}"
            bounds = (lower if high is None else f"<= {high}" if low is None else f"{lower} and <= {high}")
            return value, f"{name} must be {bounds}, got {v!r}"
    return value, None
