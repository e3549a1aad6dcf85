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

MAX_CONFIG_BYTES = 16 * 2**20
"""The largest configuration file read (a TOML config is a few hundred bytes)."""
SECTIONS = ("model", "training", "init", "solve", "data")


def load_config(path: str | Path):
    """Read and validate a TOML configuration file (the family's config object)."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"config file {str(path)!r} is a directory")
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(
                f"config file {str(path)!r} is {size / 2**20:.1f} MiB; a configuration is at "
                f"most {MAX_CONFIG_BYTES // 2**20} MiB of TOML"
            )
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {str(path)!r}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {str(path)!r}: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte {raw[exc.start]:#04x} at offset {exc.start}); "
            "TOML files must be UTF-8: save the file as UTF-8"
        ) from None
    return config_from_text(text, source=str(path))


def config_from_text(text: str, *, source: str = "<text>"):
    """Parse TOML ``text`` and validate it (:func:`config_from_dict`)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: invalid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{source}: invalid TOML: arrays or tables nested too deeply") from None
    return config_from_dict(data, source=source)


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
    family = get_family(kind)
    if family.sections is not None:
        for section in data:
            if section not in family.sections:
                raise ConfigError(
                    f"section '[{section}]' is not used by model.kind = {family.kind!r} "
                    f"(its sections: {', '.join('[' + s + ']' for s in family.sections)})"
                )
    from hildlimits._pipeline.limits import check_config_size

    check_config_size(family, data)  # what loading would allocate (e.g. [init.random] N)
    try:
        return family.config(data, source=source)
    except RecursionError:
        raise ConfigError(f"{source}: values nested too deeply") from None


def __getattr__(name):  # the committee's config classes, where they used to live
    if name in ("Config", "SolveOptions", "SCHEMA", "REQUIRED"):
        from hildlimits._families import committee

        return getattr(committee, name)
    raise AttributeError(name)
