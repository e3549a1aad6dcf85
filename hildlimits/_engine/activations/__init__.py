"""Activation registry.

An activation is a SymPy expression in ``x``; the Gaussian-expectation engine works on that
expression, so adding one means one new file here plus one line in ``_REGISTRY`` below. Any other
string is parsed as a SymPy expression in ``x`` (see :func:`._expression.parse_activation`).
"""

from __future__ import annotations

from hildlimits._engine.activations._base import Activation as Activation
from hildlimits._engine.activations._erf import ERF
from hildlimits._engine.activations._hermite import HERMITE
from hildlimits._engine.activations._linear import LINEAR
from hildlimits._engine.activations._quadratic import QUADRATIC
from hildlimits._engine.activations._relu import RELU
from hildlimits._engine.activations._sigmoid import SIGMOID
from hildlimits._engine.activations._sign import SIGN
from hildlimits._engine.activations._tanh import TANH
from hildlimits._errors import ConfigError

_REGISTRY: dict[str, Activation] = {
    a.name: a for a in (ERF, LINEAR, RELU, TANH, SIGMOID, QUADRATIC, SIGN, *HERMITE)
}


def __getattr__(name: str):
    # SymPy (~0.7 s to import) waits until an expression is needed: the symbol X, or parsing an
    # activation that is not a registry name; checking a registry name does not import it
    if name == "X":
        from hildlimits._engine.activations._base import X

        return X
    if name == "parse_activation":
        from hildlimits._engine.activations._expression import parse_activation

        return parse_activation
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def available_activations() -> tuple[str, ...]:
    """Names accepted for ``activation`` and ``teacher_activation`` (besides expressions in x)."""
    return tuple(sorted(_REGISTRY))


def get_activation(name: object, *, field: str = "activation", student: bool = False) -> Activation:
    """Look up an activation by name, or parse an expression in ``x``.

    Args:
        name: a registry name (:func:`available_activations`) or an expression string.
        field: the config entry named in error messages.
        student: the student's activation must have a derivative (``g'`` enters the update).

    Raises:
        ConfigError: unknown name / unparsable expression, or a student activation without a
            derivative (``sign``).
    """
    if isinstance(name, Activation):
        act = name
    elif not isinstance(name, str) or not name.strip():
        raise ConfigError(
            f"{field} must be one of {', '.join(map(repr, available_activations()))} or an "
            f"expression in x, got {name!r}"
        )
    elif name in _REGISTRY:
        act = _REGISTRY[name]
    else:
        from hildlimits._engine.activations._expression import parse_activation

        act = parse_activation(name, field=field)
    if student and not act.differentiable:
        raise ConfigError(
            f"{field} = {act.name!r} cannot be a student activation: its derivative "
            f"{_derivative_text(act)} is not a function (it may be a teacher_activation)"
        )
    return act


def _derivative_text(act: Activation) -> str:
    import sympy as sp

    return sp.sstr(act.derivative(1))
