"""The one set of validators: every config key, option and flag of every family is checked by
these functions, so bad input is reported alike everywhere -- one :class:`~hildlimits.ConfigError`
naming the key (or flag) and the value."""

from __future__ import annotations

import difflib
import math
import numbers

import numpy as np

from hildlimits._errors import ConfigError


def positive_int(name: str, value: object) -> int:
    """``value`` as an ``int`` >= 1 (``bool`` is refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def integer_at_least(name: str, value: object, minimum: int = 1) -> int:
    """``value`` as an ``int`` >= ``minimum`` (``bool`` is refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def real(name: str, value: object, *, nonnegative: bool = False) -> float:
    """``value`` as a finite ``float`` (optionally >= 0; ``bool`` is refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be finite, got {value!r}")
    if nonnegative and value < 0:
        raise ConfigError(f"{name} must be non-negative, got {value!r}")
    return value


def positive(name: str, value: object, *, integer: bool = False) -> None:
    """``value`` is a positive finite number (or a positive integer)."""
    ok = isinstance(value, numbers.Integral) if integer else isinstance(value, numbers.Real)
    if isinstance(value, bool) or not ok or not math.isfinite(value) or value <= 0:
        kind = "a positive integer" if integer else "a positive finite number"
        raise ConfigError(f"{name} must be {kind}, got {value!r}")


def boolean(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false, got {value!r}")
    return value


def matrix(name: str, value: object, shape: tuple[int, ...]) -> np.ndarray:
    """``value`` as a read-only finite float64 array of ``shape``."""
    try:
        arr = np.array(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(
            f"{name} must be a numeric array of shape {shape}, got {value!r}"
        ) from None
    if arr.shape != shape:
        raise ConfigError(f"{name} must have shape {shape}, got shape {arr.shape}: {value!r}")
    if not np.all(np.isfinite(arr)):
        raise ConfigError(f"{name} must be finite, got {value!r}")
    arr.setflags(write=False)
    return arr


def check_table(table: object, section: str, schema: dict, required: dict | None = None) -> None:
    """``table`` is a TOML table with keys from ``schema[section]`` and the keys
    ``required[section]``; a clear error naming ``section.key`` otherwise."""
    if not isinstance(table, dict):
        raise ConfigError(f"[{section}] must be a table, got {table!r}")
    allowed = schema[section]
    for key in table:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), sorted(allowed), n=1)
            hint = (
                f" (did you mean '{close[0]}'?)"
                if close
                else f"; allowed: {', '.join(sorted(allowed))}"
            )
            raise ConfigError(f"unknown key '{section}.{key}'{hint}")
    for key in sorted((required or {}).get(section, ())):
        if key not in table:
            raise ConfigError(f"missing required key '{section}.{key}'")


def finite_tree(name: str, value) -> None:
    """Every float in ``value`` (nested lists) is finite."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{name} must be finite, got {value!r}")
    if isinstance(value, list):
        for x in value:
            finite_tree(name, x)


def check_sections(data: dict, sections, schema: dict, required: dict) -> None:
    """Every section is present and valid (:func:`check_table`) with finite values."""
    for section in sections:
        if section not in data:
            raise ConfigError(f"missing section '[{section}]'")
        check_table(data[section], section, schema, required)
        for key, value in data[section].items():
            finite_tree(f"{section}.{key}", value)


def int_list(text: str, name: str) -> list[int]:
    """A comma-separated list of positive integers (a command-line option such as ``--N``)."""
    try:
        vals = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(
            f"{name} must be a comma-separated list of positive integers, got {text!r}"
        ) from None
    if not vals or any(v < 1 for v in vals):
        raise ConfigError(
            f"{name} must be a comma-separated list of positive integers, got {text!r}"
        )
    return vals
