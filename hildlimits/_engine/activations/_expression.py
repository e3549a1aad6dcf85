"""Activations given by the user as a SymPy expression string in ``x``."""

from __future__ import annotations

import math

import sympy as sp
from sympy.core.function import AppliedUndef

from hildlimits._engine.activations._base import Activation, X
from hildlimits._engine.expr import CONSTANTS, FUNCTIONS, parse_expression
from hildlimits._errors import ConfigError

ALLOWED_FUNCTIONS = FUNCTIONS
_NAMES = {**FUNCTIONS, **CONSTANTS}


def parse_activation(text: str, *, field: str) -> Activation:
    """Parse ``text`` (e.g. ``"x**3 - 3*x"``, ``"log(1 + exp(x))"``) into an :class:`Activation`.

    The text is checked and built by :func:`hildlimits._engine.expr.parse_expression` (never evaluated
    as Python).

    Raises:
        ConfigError: naming ``field`` for syntax errors, anything outside the expression
            grammar, symbols other than ``x``, unknown functions, or an expression that is not
            real and finite on the real line.
    """
    expr = parse_expression(text, field=field, variables={"x": X})
    if not isinstance(expr, sp.Expr):
        raise ConfigError(f"{field}: {text!r} is not an expression in x")
    unknown = sorted({type(f).__name__ for f in expr.atoms(AppliedUndef)})
    if unknown:
        raise ConfigError(
            f"{field}: unknown function {unknown[0]!r} in {text!r} "
            f"(known: {', '.join(sorted(_NAMES))})"
        )
    extra = sorted(str(s) for s in expr.free_symbols - {X})
    if extra:
        raise ConfigError(f"{field}: {text!r} may only use the variable x, found {extra[0]!r}")
    if not expr.has(X):
        raise ConfigError(f"{field}: {text!r} does not depend on x")
    f = sp.lambdify(X, expr, "math")
    for point in (-3.0, -1.0, -0.3, 0.0, 0.3, 1.0, 3.0):
        try:
            value = complex(f(point))
        except (ValueError, ZeroDivisionError, OverflowError, TypeError):
            value = complex(math.nan)
        if value.imag != 0 or not math.isfinite(value.real):
            raise ConfigError(
                f"{field}: {text!r} is not real and finite on the real line "
                f"(at x = {point}: {value.real if value.imag == 0 else value})"
            )
    return Activation(name=text, expr=expr, description=f"g(x) = {sp.sstr(expr)} (user expression)")
