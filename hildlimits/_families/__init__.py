"""The registry of model families: ``[model] kind`` -> :class:`~hildlimits._families.base.Family`.

Adding a family is one module (or folder) defining a ``FAMILY`` instance plus one line in
:data:`REGISTRY` (``docs/adding-a-family.md``). Families are imported on first use, so looking one
up costs only its own imports.
"""

from __future__ import annotations

import difflib
import importlib

from hildlimits._errors import ConfigError
from hildlimits._families.base import COMMANDS as COMMANDS
from hildlimits._families.base import Dynamics as Dynamics
from hildlimits._families.base import Family as Family
from hildlimits._families.base import Flag as Flag

REGISTRY = {
    "committee": "hildlimits._families.committee",
    "meanfield": "hildlimits._families.meanfield",
    "deep_linear": "hildlimits._families.deep_linear",
    "least_squares": "hildlimits._families.least_squares",
}
"""kind -> module defining ``FAMILY`` (imported lazily)."""

DEFAULT_KIND = "committee"


def kinds() -> tuple[str, ...]:
    return tuple(REGISTRY)


def get_family(kind: object) -> Family:
    """The family registered under ``kind``; a clear error naming ``model.kind`` otherwise."""
    if not isinstance(kind, str) or kind not in REGISTRY:
        known = ", ".join(repr(k) for k in REGISTRY)
        hint = ""
        if isinstance(kind, str):
            close = difflib.get_close_matches(kind, list(REGISTRY), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"model.kind must be one of {known}, got {kind!r}{hint}")
    return importlib.import_module(REGISTRY[kind]).FAMILY


def family_of(obj) -> Family:
    """The family of a config, model, system or result (anything with a ``structure`` dict or a
    ``kind``)."""
    kind = getattr(obj, "kind", None)
    if kind is None:
        structure = getattr(obj, "structure", None)
        if isinstance(structure, dict):
            kind = structure.get("family")
    if kind is None:
        raise TypeError(f"cannot tell the model family of {type(obj).__name__}")
    return get_family(kind)


def config_for(system, config=None, *, who: str, init=None, hyper=None, **objects):
    """``(family, config)`` of a derived ``system``: the given ``config``, or one built by the
    family from Python objects (the committee's ``init`` and ``hyper``)."""
    family = family_of(system)
    if config is None:
        if init is None or hyper is None:
            raise TypeError(f"{who} needs config=, or init= and hyper=")
        config = family.from_objects(system=system, init=init, hyper=hyper, **objects)
    return family, config


def all_families() -> list[Family]:
    return [get_family(k) for k in REGISTRY]
