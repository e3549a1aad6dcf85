"""On-disk cache of derived systems.

Keyed by a hash of the derivation inputs (the model structure), the hildlimits version and the
SymPy version. Entries are JSON (SymPy ``srepr`` of every expression plus the generated source,
and a SHA-256 digest of both), written atomically (temporary file + ``os.replace``); a corrupt or
stale entry is re-derived, and the directory is safe to delete at any time. Location:
``$HILDLIMITS_CACHE_DIR``, else ``$XDG_CACHE_HOME/hildlimits``, else ``~/.cache/hildlimits``.

Reading an entry does not import SymPy: the system's expressions are parsed on first use of
``equations`` / ``observables`` / ``expectations`` (``str()``, ``latex()``, ...), while a solve
needs only the structure, the names and the generated source. The same directory holds the
exported solves (``export/``, :mod:`hildlimits._pipeline.export`) and, for the command line, JAX's
persistent compilation cache (``xla/``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

from hildlimits._pipeline.io import write_atomic as _write_atomic
from hildlimits._version import __version__

FORMAT = 3
_MEMORY: dict[str, object] = {}


def cache_dir() -> Path:
    """Directory of the derivation cache."""
    if "HILDLIMITS_CACHE_DIR" in os.environ:
        return Path(os.environ["HILDLIMITS_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "hildlimits"


@functools.lru_cache(maxsize=1)
def _code_fingerprint() -> str:
    """Hash of the modules that derive and generate code (so an edited source tree never reads
    entries written by different derivation code under the same version number)."""
    here = Path(__file__).parent.parent  # the package
    # the engine and every family's derivation code (an edit anywhere there re-derives: safe)
    files = sorted([*(here / "_engine").rglob("*.py"), *(here / "_families").rglob("*.py")])
    h = hashlib.sha256()
    for f in files:
        h.update(f.relative_to(here).as_posix().encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


@functools.lru_cache(maxsize=1)
def sympy_version() -> str:
    """SymPy's version, without importing SymPy (~0.7 s) when it is not imported yet."""
    import sys

    if "sympy" in sys.modules:
        return sys.modules["sympy"].__version__
    from importlib.metadata import version

    return version("sympy")


def cache_key(structure: dict) -> str:
    """Hash of the derivation inputs, the hildlimits and SymPy versions and the derivation code."""
    payload = {
        "structure": structure,
        "hildlimits": __version__,
        "sympy": sympy_version(),
        "format": FORMAT,
        "code": _code_fingerprint(),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def content_digest(data: dict) -> str:
    """SHA-256 of a cache entry's content (everything but the digest itself)."""
    return _digest(data)


def _digest(data: dict) -> str:
    """SHA-256 of an entry's content (everything but the digest itself)."""
    body = {k: v for k, v in data.items() if k != "digest"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _to_json(system) -> dict:
    import sympy as sp

    def term(t):
        return {
            "coeff": sp.srepr(t.coeff),
            "dummies": [[sp.srepr(d), kd] for d, kd in t.dummies],
            "expectation": t.expectation,
            "labels": [sp.srepr(x) for x in t.labels],
            "kinds": list(t.kinds),
            "func_labels": list(t.func_labels),
            "pairs": [[sp.srepr(a), sp.srepr(b)] for a, b in t.symmetric_pairs],
            "coincident": [[list(p), name] for p, name in t.coincident],
        }

    def eq(e):
        return {
            "name": e.name,
            "free": [[sp.srepr(s), kd] for s, kd in e.free],
            "terms": [term(t) for t in e.terms],
            "symmetric": e.symmetric,
        }

    data = {
        "format": FORMAT,
        "structure": system.structure,
        "equations": [eq(e) for e in system.equations],
        "observables": [eq(e) for e in system.observables],
        "expectations": [
            {
                "name": x.name,
                "funcs": [sp.srepr(f) for f in x.funcs],
                "labels": list(x.labels),
                "expr": sp.srepr(x.expr),
                "method": x.method,
            }
            for x in system.expectations
        ],
        "source": system.source,
    }
    data["digest"] = _digest(data)
    return data


def _parse_json(data: dict):
    """``(equations, observables, expectations)`` of an entry (SymPy expressions)."""
    import sympy as sp

    from hildlimits._engine.gaussian import SYMPY_LOCALS
    from hildlimits._families.committee.derive import Equation, ExpectationEntry, Term

    def ex(s):
        return sp.sympify(s, locals=SYMPY_LOCALS)

    def term(t):
        return Term(
            coeff=ex(t["coeff"]),
            dummies=tuple((ex(d), kd) for d, kd in t["dummies"]),
            expectation=t["expectation"],
            labels=tuple(ex(x) for x in t["labels"]),
            kinds=tuple(t["kinds"]),
            func_labels=tuple(t["func_labels"]),
            symmetric_pairs=tuple((ex(a), ex(b)) for a, b in t["pairs"]),
            coincident=tuple((tuple(p), name) for p, name in t["coincident"]),
        )

    def eq(e):
        return Equation(
            name=e["name"],
            free=tuple((ex(s), kd) for s, kd in e["free"]),
            terms=tuple(term(t) for t in e["terms"]),
            symmetric=e["symmetric"],
        )

    return (
        tuple(eq(e) for e in data["equations"]),
        tuple(eq(e) for e in data["observables"]),
        tuple(
            ExpectationEntry(
                name=x["name"],
                funcs=tuple(ex(f) for f in x["funcs"]),
                labels=tuple(x["labels"]),
                expr=ex(x["expr"]),
                method=x["method"],
            )
            for x in data["expectations"]
        ),
    )


def _from_json(data: dict, rebuild: Callable[[], object] | None = None):
    """The system of a checked entry; its SymPy parts are parsed on first use (if that fails,
    they are taken from ``rebuild()``, the derivation)."""
    from hildlimits._families.committee.derive import ODESystem

    def load():
        try:
            return _parse_json(data)
        except (ValueError, KeyError, TypeError, SyntaxError, AttributeError):
            if rebuild is None:
                raise
            fresh = rebuild()
            return fresh.equations, fresh.observables, fresh.expectations

    for key in ("equations", "observables"):
        if not all(isinstance(e, dict) and isinstance(e.get("name"), str) for e in data[key]):
            raise ValueError(f"malformed {key}")
    if not isinstance(data["source"], str):
        raise ValueError("malformed source")
    return ODESystem._cached(
        structure=data["structure"],
        load=load,
        state_variables=tuple(e["name"] for e in data["equations"]),
        observable_names=tuple(e["name"] for e in data["observables"]),
        source=data["source"],
    )


def cached_system(
    structure: dict,
    build: Callable[[], object],
    *,
    to_json: Callable[[object], dict] | None = None,
    from_json: Callable[..., object] | None = None,
):
    """The system for ``structure``: from memory, else from disk, else ``build()`` (then stored).

    ``to_json`` / ``from_json(data, rebuild=...)``: the family's codec (default: the
    committee's :class:`~hildlimits.ODESystem`). ``to_json`` returns a dict with at least
    ``format``, ``structure`` and ``digest`` (:func:`content_digest`)."""
    to_json = _to_json if to_json is None else to_json
    from_json = _from_json if from_json is None else from_json
    key = cache_key(structure)
    if key in _MEMORY:
        return _MEMORY[key]
    path = cache_dir() / f"{key}.json"
    system = None
    try:
        data = json.loads(path.read_text())
        if (
            data.get("format") == FORMAT
            and data.get("structure") == structure
            and data.get("digest") == _digest(data)
        ):
            system = from_json(data, rebuild=build)
    except (OSError, ValueError, KeyError, TypeError, SyntaxError, AttributeError):
        system = None
    if system is None:
        system = build()
        try:
            _write_atomic(path, json.dumps(to_json(system)))
        except OSError:
            pass  # an unwritable cache only costs time
    _MEMORY[key] = system
    return system
