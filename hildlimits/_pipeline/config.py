"""TOML configuration: read, look the family up once by ``[model] kind``, let it validate.

The schema of each family is in its folder (``hildlimits/_families/<kind>/``); the shared
validators are in :mod:`hildlimits._pipeline.validators`. ``kind = "committee"`` is the default.
"""

from __future__ import annotations

import difflib
import tomllib
from pathlib import Path

from hildlimits._errors import ConfigError
from hildlimits._families import DEFAULT_KIND, get_family

SECTIONS = ("model", "training", "init", "solve")


def load_config(path: str | Path):
    """Read and validate a TOML configuration file (the family's config object)."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {str(path)!r}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {str(path)!r}: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    return config_from_dict(data, source=str(path))


def config_from_dict(data: dict, *, source: str = "<dict>"):
    """Validate a parsed configuration (same schema as :func:`load_config`)."""
    if not isinstance(data, dict):
        raise ConfigError(f"configuration must be a table, got {data!r}")
    for section in data:
        if section not in SECTIONS:
            close = difflib.get_close_matches(str(section), list(SECTIONS), n=1)
            hint = f" (did you mean '[{close[0]}]'?)" if close else ""
            raise ConfigError(f"unknown section '[{section}]'{hint}")
    model = data.get("model")
    kind = model.get("kind", DEFAULT_KIND) if isinstance(model, dict) else DEFAULT_KIND
    return get_family(kind).config(data, source=source)


def __getattr__(name):  # the committee's config classes, where they used to live
    if name in ("Config", "SolveOptions", "SCHEMA", "REQUIRED"):
        from hildlimits._families import committee

        return getattr(committee, name)
    raise AttributeError(name)
