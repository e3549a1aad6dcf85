"""On-disk cache of derived systems.

Keyed by a hash of the derivation inputs (the model structure), the hildlimits version and the
SymPy version. Entries are JSON (SymPy ``srepr`` of every expression plus the generated source),
written atomically (temporary file + ``os.replace``); a corrupt or stale entry is re-derived, and
the directory is safe to delete at any time. Location: ``$HILDLIMITS_CACHE_DIR``, else
``$XDG_CACHE_HOME/hildlimits``, else ``~/.cache/hildlimits``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import sympy as sp

from ._version import __version__

FORMAT = 2
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
    here = Path(__file__).parent
    files = sorted(
        [
            here / n
            for n in ("_derive.py", "_gaussian.py", "_symbolic.py", "_codegen.py", "_runtime.py")
        ]
        + list((here / "_activations").glob("*.py"))
    )
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def cache_key(structure: dict) -> str:
    """Hash of the derivation inputs, the hildlimits and SymPy versions and the derivation code."""
    payload = {
        "structure": structure,
        "hildlimits": __version__,
        "sympy": sp.__version__,
        "format": FORMAT,
        "code": _code_fingerprint(),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _to_json(system) -> dict:
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

    return {
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


def _from_json(data: dict):
    from ._derive import Equation, ExpectationEntry, ODESystem, Term
    from ._gaussian import SYMPY_LOCALS

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

    system = ODESystem(
        structure=data["structure"],
        equations=tuple(eq(e) for e in data["equations"]),
        observables=tuple(eq(e) for e in data["observables"]),
        expectations=tuple(
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
    system._jax["source"] = data["source"]
    return system


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cached_system(structure: dict, build: Callable[[], object]):
    """The system for ``structure``: from memory, else from disk, else ``build()`` (then stored)."""
    key = cache_key(structure)
    if key in _MEMORY:
        return _MEMORY[key]
    path = cache_dir() / f"{key}.json"
    system = None
    try:
        data = json.loads(path.read_text())
        if data.get("structure") == structure:
            system = _from_json(data)
    except (OSError, ValueError, KeyError, TypeError, SyntaxError, AttributeError):
        system = None
    if system is None:
        system = build()
        try:
            _write_atomic(path, json.dumps(_to_json(system)))
        except OSError:
            pass  # an unwritable cache only costs time
    _MEMORY[key] = system
    return system
