r"""Pre-flight size checks: estimate what a request needs before allocating it, refuse what cannot
fit.

Every command estimates the peak memory (and, where it is cheap to know, the run time) of what it
is asked to do *before* allocating anything, from the sizes in the config and on the command line
alone, and refuses a request that cannot fit with one line naming the key, the estimate and the
limit (a :class:`~hildlimits.ConfigError`, exit 2)::

    error: --seeds = 1000000: needs about 1.2 TiB of memory (the inputs drawn per block, ...),
    more than the 18.3 GiB available; reduce --seeds (or pass --force to try anyway)

The estimates are deliberately simple upper bounds (array sizes times the copies the code makes,
see each family's ``limits.py``); the limits:

* memory: :data:`MEMORY_FRACTION` of the memory available now (``MemAvailable`` of
  ``/proc/meminfo``, bounded by a cgroup limit), or ``HILDLIMITS_MEMORY_LIMIT`` (bytes, or with a
  suffix ``K``/``M``/``G``/``T``, e.g. ``8G``);
* time: ``HILDLIMITS_TIME_LIMIT`` seconds (default :data:`DEFAULT_TIME_LIMIT`, one day) of
  estimated run time.

``--force`` (and ``force=True``) turns the refusal into a warning where the command has the flag.

A family provides its estimates in ``hildlimits/_families/<kind>/limits.py`` (looked up by
convention, so a family without one is simply not checked):

* ``config_needs(data) -> list[Need]``: what *loading* the config allocates (the committee's
  ``[init.random]`` draws weights of size ``(K + M) x N``);
* ``needs(cfg, command, options) -> list[Need]``: what the command allocates (``options``: the
  command-line flags, e.g. ``N``, ``seeds``, ``test_samples``, ``width``, ``points``,
  ``batch_size``, ``pieces``).
"""

from __future__ import annotations

import importlib
import math
import os
import re
import sys
from dataclasses import dataclass

from hildlimits._errors import ConfigError

MEMORY_FRACTION = 0.8
"""The share of the available memory a request may plan to use."""
DEFAULT_TIME_LIMIT = 86_400.0
"""Estimated run time (seconds) above which a request is refused without ``--force``."""
FLOAT = 8
"""Bytes of a float64."""
JSON_NUMBER = 48
"""Bytes a number costs on its way to a JSON file (a Python float in a list, and its text)."""


@dataclass(frozen=True)
class Need:
    """One estimated cost of a request.

    Attributes:
        key: the config key or flag that drives it (``"init.random.N"``, ``"--seeds"``).
        value: that key's value (as given).
        bytes: estimated peak memory in bytes (``0``: no memory estimate).
        what: what the memory is for, in a few words.
        seconds: estimated run time, or ``None`` where it is not cheap to know.
        forceable: ``--force`` may override the refusal (``False``: the request cannot work at
            all, e.g. more schedule pieces than solver steps).
        reason: for a need that is refused whatever the memory (``bytes`` ignored), the reason.
    """

    key: str
    value: object
    bytes: float = 0
    what: str = ""
    seconds: float | None = None
    forceable: bool = True
    reason: str | None = None


def _parse_bytes(text: str) -> float:
    m = re.fullmatch(r"\s*([0-9.eE+]+)\s*([KMGT]?)i?B?\s*", text, flags=re.IGNORECASE)
    if not m:
        raise ConfigError(
            f"HILDLIMITS_MEMORY_LIMIT must be a number of bytes (e.g. 8G), got {text!r}"
        )
    scale = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}[m.group(2).upper()]
    try:
        return float(m.group(1)) * scale
    except ValueError:
        raise ConfigError(
            f"HILDLIMITS_MEMORY_LIMIT must be a number of bytes (e.g. 8G), got {text!r}"
        ) from None


def available_memory() -> float:
    """Bytes of memory available to this process now: ``HILDLIMITS_MEMORY_LIMIT`` if set, else
    ``MemAvailable`` (Linux), bounded by the cgroup's limit; the physical memory elsewhere."""
    env = os.environ.get("HILDLIMITS_MEMORY_LIMIT", "").strip()
    if env:
        return _parse_bytes(env)
    avail = None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    avail = float(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    if avail is None:
        try:
            avail = float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
        except (AttributeError, ValueError, OSError):
            avail = float(8 * 2**30)
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = open(path).read().strip()
        except OSError:
            continue
        if text.isdigit():
            limit = float(text)
            try:
                used_path = path.replace("memory.max", "memory.current").replace(
                    "memory.limit_in_bytes", "memory.usage_in_bytes"
                )
                used = float(open(used_path).read().strip())
            except (OSError, ValueError):
                used = 0.0
            if limit < 2**60:
                avail = min(avail, max(0.0, limit - used))
    return avail


def memory_budget() -> float:
    """Bytes a request may plan to use: :data:`MEMORY_FRACTION` of :func:`available_memory`
    (all of ``HILDLIMITS_MEMORY_LIMIT`` when that is set)."""
    if os.environ.get("HILDLIMITS_MEMORY_LIMIT", "").strip():
        return available_memory()
    return MEMORY_FRACTION * available_memory()


def time_limit() -> float:
    env = os.environ.get("HILDLIMITS_TIME_LIMIT", "").strip()
    if not env:
        return DEFAULT_TIME_LIMIT
    try:
        value = float(env)
    except ValueError:
        raise ConfigError(
            f"HILDLIMITS_TIME_LIMIT must be a number of seconds, got {env!r}"
        ) from None
    if not value > 0:
        raise ConfigError(f"HILDLIMITS_TIME_LIMIT must be positive, got {env!r}")
    return value


def human_bytes(n: float) -> str:
    """``1.5 GiB`` etc."""
    if not math.isfinite(n):
        return "an unbounded amount"
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            value = n / scale
            return f"{value:.3g} {unit}" if value < 1e4 else f"{value:.3g} {unit}"
    return f"{n:.0f} B"


def human_seconds(s: float) -> str:
    if not math.isfinite(s):
        return "forever"
    if s >= 86400 * 365:
        return f"{s / (86400 * 365):.2g} years"
    if s >= 86400:
        return f"{s / 86400:.3g} days"
    if s >= 3600:
        return f"{s / 3600:.3g} hours"
    if s >= 60:
        return f"{s / 60:.3g} min"
    return f"{s:.3g} s"


def _name(key: str, value) -> str:
    """``key = value``, or ``key (description)`` when the value is a description."""
    text = str(value)
    text = text if len(text) <= 60 else text[:60] + "..."
    return f"{key} ({text})" if isinstance(value, str) else f"{key} = {text}"


def check(
    needs, *, force: bool = False, budget: float | None = None, seconds: float | None = None
) -> None:
    """Refuse ``needs`` (a list of :class:`Need`) that do not fit: the memory estimates summed
    against :func:`memory_budget`, each time estimate against :func:`time_limit`. One
    :class:`ConfigError` naming the key that costs most; with ``force``, a warning instead
    (except for needs that are not ``forceable``). ``seconds``: a time limit other than
    :func:`time_limit`."""
    needs = [n for n in needs if n is not None]
    if not needs:
        return
    for n in needs:
        if n.reason is not None:
            raise ConfigError(f"{_name(n.key, n.value)}: {n.reason}")
    total = sum(float(n.bytes) for n in needs)
    limit = memory_budget() if budget is None else budget
    problems = []
    if total > limit:
        worst = max(needs, key=lambda n: float(n.bytes))
        problems.append(
            (
                worst,
                f"{_name(worst.key, worst.value)}: needs about {human_bytes(total)} of memory"
                + (f" ({worst.what})" if worst.what else "")
                + f", more than the {human_bytes(limit)} available; reduce {worst.key}",
            )
        )
    tl = time_limit() if seconds is None else seconds
    timed = [n for n in needs if n.seconds is not None and n.seconds > tl]
    if timed:
        worst = max(timed, key=lambda n: n.seconds)
        problems.append(
            (
                worst,
                f"{_name(worst.key, worst.value)}: would run for about "
                f"{human_seconds(worst.seconds)}"
                + (f" ({worst.what})" if worst.what else "")
                + f", more than the limit of {human_seconds(tl)}"
                + (" (HILDLIMITS_TIME_LIMIT); " if seconds is None else "; ")
                + f"reduce {worst.key}",
            )
        )
    if not problems:
        return
    worst, message = problems[0]
    forceable = all(n.forceable for n in needs)
    if force and forceable:
        print(f"warning (--force): {message}", file=sys.stderr)
        return
    raise ConfigError(message + (" (or pass --force to try anyway)" if forceable else ""))


def _family_limits(family):
    """The family's ``limits`` module (``hildlimits/_families/<kind>/limits.py``), or None."""
    package = type(family).__module__
    if not package.startswith("hildlimits._families."):
        return None
    try:
        return importlib.import_module(package + ".limits")
    except ModuleNotFoundError as exc:
        if exc.name == package + ".limits":
            return None
        raise


def config_needs(family, data: dict) -> list[Need]:
    hook = getattr(family, "config_needs", None)
    if hook is None:
        mod = _family_limits(family)
        hook = getattr(mod, "config_needs", None) if mod is not None else None
    if hook is None or not isinstance(data, dict):
        return []
    try:
        return list(hook(data))
    except (TypeError, ValueError, AttributeError, KeyError, OverflowError):
        return []  # malformed values: the family's validation names them


def command_needs(family, cfg, command: str, options: dict) -> list[Need]:
    hook = getattr(family, "needs", None)
    if hook is None:
        mod = _family_limits(family)
        hook = getattr(mod, "needs", None) if mod is not None else None
    return list(hook(cfg, command, options)) if hook is not None else []


LOAD_TIME_LIMIT = 60.0
"""Seconds that loading (validating) one config may be estimated to take."""


def check_config_size(family, data: dict) -> None:
    """Refuse a config whose loading alone would not fit in memory or take more than
    :data:`LOAD_TIME_LIMIT` (no ``--force``: a config is loaded by the library too)."""
    check(config_needs(family, data), seconds=min(LOAD_TIME_LIMIT, time_limit()))


def check_command(family, cfg, command: str, options: dict, *, force: bool = False) -> None:
    """Refuse a command whose estimated memory or time does not fit (see the module)."""
    check(command_needs(family, cfg, command, options), force=force)


def int_value(value, default=None):
    """``value`` if it is a plain positive-or-zero integer, else ``default`` (the family's own
    validation reports bad values; the estimates only read good ones)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return default
    return value


def grid_points(params: dict) -> int:
    """The number of points of a sweep grid ``{name: values}`` (without building it)."""
    return math.prod(len(v) for v in params.values()) if params else 0


def sweep_needs(points: int, n_save: int, *, key: str = "--param") -> Need:
    """What a sweep of ``points`` keeps whatever the family: per point, its risk curve (float64,
    then Python floats and JSON text), its status and point dict."""
    per_point = n_save * (FLOAT + JSON_NUMBER) + 600
    return Need(
        key,
        f"a grid of {points} points" if points != 1 else "a grid of 1 point",
        points * per_point,
        f"the risk curves of {points} points x {n_save} save times and their JSON",
    )
