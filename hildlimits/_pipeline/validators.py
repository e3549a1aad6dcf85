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


def _shape_of(name: str, value: object) -> tuple[int, ...]:
    """The shape of nested lists/tuples of real numbers; refuses strings, booleans, tables,
    ``None`` and ragged nesting with one :class:`ConfigError` naming ``name`` (iterative, so
    deep nesting cannot exhaust the stack)."""

    def bad(what: str) -> ConfigError:
        shown = repr(value)
        if len(shown) > 200:
            shown = shown[:200] + "..."
        return ConfigError(f"{name} must be an array of numbers, but {what}: {shown}")

    shape: tuple[int, ...] | None = None
    stack: list[tuple[object, tuple[int, ...]]] = [(value, ())]
    while stack:
        item, where = stack.pop()
        if isinstance(item, list | tuple):
            for i in range(len(item) - 1, -1, -1):
                stack.append((item[i], (*where, len(item))))
            if len(item) == 0:
                leaf_shape = (*where, 0)
                if shape is None:
                    shape = leaf_shape
                elif shape != leaf_shape:
                    raise bad("its rows have different lengths (a ragged array)")
            continue
        if isinstance(item, bool | np.bool_):
            raise bad(f"it holds the boolean {str(item).lower()}")
        if isinstance(item, str | bytes):
            raise bad(f"it holds the string {item!r} (write numbers without quotes)")
        if not isinstance(item, numbers.Real):
            raise bad(f"it holds {item!r} of type {type(item).__name__}")
        if shape is None:
            shape = where
        elif shape != where:
            raise bad("its rows have different lengths (a ragged array)")
    return shape if shape is not None else ()


def numeric_array(name: str, value: object, *, ndim: int | None = None) -> np.ndarray:
    """``value`` (nested lists of real numbers, or a numeric array) as a float64 array; strings,
    booleans, tables and ragged rows are refused naming ``name`` (never coerced: ``"0.5"`` or
    ``true`` in a matrix is an error, not a number)."""
    if isinstance(value, np.ndarray) or (
        hasattr(value, "shape") and hasattr(value, "dtype") and not isinstance(value, list)
    ):
        arr = np.asarray(value)
        if arr.dtype.kind == "O":
            _shape_of(name, arr.tolist())
        elif arr.dtype.kind == "b":
            raise ConfigError(f"{name} must be an array of numbers, got booleans: {value!r}")
        elif arr.dtype.kind not in "iuf":
            raise ConfigError(f"{name} must be an array of numbers, got dtype {arr.dtype}")
        arr = np.array(arr, dtype=np.float64)
    elif isinstance(value, list | tuple):
        _shape_of(name, value)
        arr = np.array(value, dtype=np.float64)
    elif isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_):
        arr = np.array(value, dtype=np.float64)
    else:
        shown = repr(value)
        raise ConfigError(
            f"{name} must be an array of numbers, got {shown[:200]}"
            + ("..." if len(shown) > 200 else "")
        )
    if ndim is not None and arr.ndim != ndim:
        raise ConfigError(f"{name} must be a {ndim}-dimensional array, got shape {arr.shape}")
    return arr


def matrix(name: str, value: object, shape: tuple[int, ...]) -> np.ndarray:
    """``value`` as a read-only finite float64 array of ``shape`` (:func:`numeric_array`)."""
    arr = numeric_array(name, value)
    if arr.shape != shape:
        raise ConfigError(f"{name} must have shape {shape}, got shape {arr.shape}: {value!r}")
    if not np.all(np.isfinite(arr)):
        raise ConfigError(f"{name} must be finite, got {value!r}")
    arr.setflags(write=False)
    return arr


def square_matrix(name: str, value: object) -> np.ndarray:
    """``value`` as a read-only finite float64 square matrix (any size)."""
    arr = numeric_array(name, value)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1] or arr.shape[0] == 0:
        raise ConfigError(f"{name} must be a non-empty square matrix, got shape {arr.shape}")
    return matrix(name, arr, arr.shape)


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
