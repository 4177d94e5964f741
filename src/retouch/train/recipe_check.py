"""Checking a training recipe before any work: every field of the type its default has, every
number finite and inside its range. A recipe is a JSON file a user writes by hand, so NaN, a
string for a count or a negative batch size must stop the run with a message, not start it."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any, TypeVar

from retouch.core.limits import Limit, check_number
from retouch.errors import RetouchError

T = TypeVar("T")


def recipe_from_json(cls: type[T], path: str | Path) -> T:
    """The dataclass recipe ``cls`` read from the JSON file ``path``: unknown fields refused, JSON
    lists turned into the tuples the fields hold."""
    raw = json.loads(Path(path).read_text())
    unknown = set(raw) - {f.name for f in fields(cls)}  # type: ignore[arg-type]
    if unknown:
        raise ValueError(f"{path}: unknown recipe fields {sorted(unknown)}")
    return cls(**{name: tuple(value) if isinstance(value, list) else value for name, value in raw.items()})


def check_recipe(config: Any, limits: Mapping[str, Limit], choices: Mapping[str, tuple[str, ...]]) -> None:
    """Refuse ``config`` (a dataclass instance) when a field's value is not of its default's type,
    a number is not finite or is outside ``limits[name]``, or a word is not among ``choices[name]``."""
    defaults = type(config)()
    for f in fields(config):
        value, default = getattr(config, f.name), getattr(defaults, f.name)
        _check_type(f.name, value, default)
        if f.name in limits:
            items = value if isinstance(value, tuple) else (value,)
            for item in items:
                check_number(f.name, item, limits[f.name])
        if f.name in choices and value not in choices[f.name]:
            raise RetouchError(f"{f.name} must be one of {', '.join(choices[f.name])}; got {value!r}")


_KINDS = {
    bool: ((bool,), "true or false"),
    int: ((int,), "a whole number"),
    float: ((int, float), "a number"),
    str: ((str,), "a string"),
}


def _check_type(name: str, value: Any, default: Any) -> None:
    if default is None:
        if value is not None and not isinstance(value, str):
            raise RetouchError(f"recipe field {name} must be a string or null, got {value!r}")
        return
    if isinstance(default, tuple):
        if not isinstance(value, tuple) or not value:
            raise RetouchError(f"recipe field {name} must be a non-empty list like {list(default)}, got {value!r}")
        for item in value:
            _check_type(name, item, default[0])
        return
    kinds, words = _KINDS[type(default)]
    if not isinstance(value, kinds) or (isinstance(value, bool) and not isinstance(default, bool)):
        raise RetouchError(f"recipe field {name} must be {words}, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise RetouchError(f"recipe field {name} must be a finite number, got {value!r}")
