"""Activation registry.

An activation is a SymPy expression in ``x``; the Gaussian-expectation engine works on that
expression, so adding one means one new file here plus one line in ``_REGISTRY`` below.
"""

from __future__ import annotations

from .._errors import ConfigError
from ._base import Activation as Activation
from ._base import X as X
from ._erf import ERF
from ._linear import LINEAR

_REGISTRY: dict[str, Activation] = {a.name: a for a in (ERF, LINEAR)}


def available_activations() -> tuple[str, ...]:
    """Names accepted for ``activation`` and ``teacher_activation``."""
    return tuple(sorted(_REGISTRY))


def get_activation(name: object, *, field: str = "activation") -> Activation:
    """Look up an activation by name; ``field`` names the config entry in error messages."""
    if isinstance(name, Activation):
        return name
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ConfigError(
            f"{field} must be one of {', '.join(map(repr, available_activations()))}, got {name!r}"
        )
    return _REGISTRY[name]
