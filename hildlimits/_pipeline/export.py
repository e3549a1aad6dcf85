r"""Exported solves: the traced and lowered computation of a compiled run (``jax.export``), kept in
the hildlimits cache directory so that a later process loads it instead of tracing it again.

With JAX's persistent compilation cache (switched on by the command line under
``cache_dir() / "xla"``, :func:`hildlimits._cli.enable_compilation_caches`), a repeated
``hildlimits solve`` neither traces nor compiles its solve: it deserialises the exported module
(milliseconds), and XLA finds the executable of that very module on disk. The first run exports,
stores, and runs the *stored* computation, so both runs execute the same executable and give
bitwise identical results.

Entries are ``cache_dir() / "export" / <key>.jaxexport``. The key hashes what the caller passes
(the derivation key, the static options, the generated source), the arguments' tree structure,
shapes, dtypes and weak types, the platform and device kind, float64 mode, the versions of jax,
jaxlib, diffrax, equinox and hildlimits, and the package's files that build traced computations
(:data:`TRACED_SOURCES`). A file is a magic line, the SHA-256 of the payload, and the payload
(``Exported.serialize()``); it is written atomically (temporary file + ``os.replace``). An entry
that fails its digest, does not deserialise or does not match the arguments is removed and
rebuilt, never an error; the directory is safe to delete at any time.

Why the tracing needs care: diffrax checks ``SaveAt`` times with ``equinox.error_if`` (that they
increase and lie in ``[t0, t1]``), a host callback (``pure_callback``) in the compiled
computation even with ``throw=False``. ``jax.export`` refuses host callbacks ("serialization of
host_callbacks is not yet implemented") and JAX's persistent cache does not store an executable
that contains one. The save times of every run are checked on the host before the solve
(:func:`hildlimits._pipeline.runner.resolve_save_times`), so the export traces with equinox's runtime
checks off (its ``EQX_ON_ERROR`` read as ``"off"`` and its checks traced un-jitted while
tracing, both restored after). Whatever still cannot be exported or serialised (serialisation
needs the ``flatbuffers`` package, which jax does not require) falls back to the plain
``jax.jit`` of the run, with the reason recorded. (The custom JVP of
:func:`hildlimits._engine.runtime.asin` is no obstacle: a forward solve exports without derivatives.)

On only where switched on (:func:`enable`: the command line); ``HILDLIMITS_NO_EXPORT_CACHE=1``
turns it off. What happened is appended to :data:`EVENTS` (``"export: loaded <key>"``,
``"export: stored <key>"``, ``"export: fallback to jit (<reason>)"``, ...) and printed to stderr
with ``HILDLIMITS_LOG_EXPORT=1``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import sys
import time
import warnings
from pathlib import Path

import jax

from hildlimits._version import __version__

FORMAT = 1
MAGIC = b"hildlimits-export 1\n"
SUFFIX = ".jaxexport"

EVENTS: list[str] = []
"""What the export cache did in this process, in order (for tests and ``HILDLIMITS_LOG_EXPORT``)."""

_enabled = False


def enable(on: bool = True) -> None:
    """Switch the export cache on (the command line does) or off for this process."""
    global _enabled
    _enabled = bool(on)


def enabled() -> bool:
    return _enabled and os.environ.get("HILDLIMITS_NO_EXPORT_CACHE", "") in ("", "0")


def _note(message: str) -> None:
    EVENTS.append(message)
    if os.environ.get("HILDLIMITS_LOG_EXPORT", "") not in ("", "0"):
        print(f"hildlimits: {message}", file=sys.stderr)


# ----------------------------------------------------------------------------- keys


def export_dir() -> Path:
    from hildlimits._pipeline.cache import cache_dir

    return cache_dir() / "export"


@functools.lru_cache(maxsize=1)
def _versions() -> dict:
    import diffrax
    import equinox
    import jaxlib.version

    return {
        "jax": jax.__version__,
        "jaxlib": jaxlib.version.__version__,
        "diffrax": diffrax.__version__,
        "equinox": equinox.__version__,
        "hildlimits": __version__,
        "python": sys.version.split()[0],
    }


TRACED_SOURCES = (
    "_pipeline/runner.py",
    "_engine/runtime.py",
    "_families/committee/solve.py",
    "_families/committee/flat.py",
    "_pipeline/export.py",
)
"""The package's files that build traced computations (the runner, the generated code's runtime,
the committee's solve): part of every key, so an edited tree never loads a computation traced by
different code under the same version number. A caller passes the digest of any other code its
run is built from (e.g. the generated source) in its key parts."""


@functools.lru_cache(maxsize=1)
def _code_fingerprint() -> str:
    here = Path(__file__).parent.parent  # the package
    h = hashlib.sha256()
    for name in TRACED_SOURCES:
        h.update(name.encode())
        h.update((here / name).read_bytes())
    return h.hexdigest()


def _platform() -> dict:
    device = jax.devices()[0]
    return {
        "backend": jax.default_backend(),
        "device_kind": device.device_kind,
        "platform_version": getattr(device.client, "platform_version", ""),
        "x64": bool(jax.config.jax_enable_x64),
    }


def signature(args) -> tuple[list, object]:
    """``(description, specs)`` of call arguments: tree structure, then shape, dtype and weak
    type of every leaf; ``specs`` are the ``jax.ShapeDtypeStruct`` to trace with."""
    leaves, treedef = jax.tree.flatten(args)
    avals = [jax.typeof(x) for x in leaves]
    description = [str(treedef)] + [[list(a.shape), str(a.dtype), a.weak_type] for a in avals]
    specs = jax.tree.unflatten(
        treedef, [jax.ShapeDtypeStruct(a.shape, a.dtype, weak_type=a.weak_type) for a in avals]
    )
    return description, specs


def export_key(parts, description) -> str:
    """The key of an entry: the caller's ``parts``, the argument ``description``
    (:func:`signature`), platform, versions, code."""
    payload = {
        "format": FORMAT,
        "parts": parts,
        "arguments": description,
        "platform": _platform(),
        "versions": _versions(),
        "code": _code_fingerprint(),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


# ----------------------------------------------------------------------------- entries


def _path(key: str) -> Path:
    return export_dir() / f"{key}{SUFFIX}"


def _discard(path: Path, why: str) -> None:
    _note(f"export: discarded {path.name} ({why})")
    with contextlib.suppress(OSError):
        path.unlink()


def load(key: str, specs=None):
    """The ``jax.export.Exported`` stored under ``key``, or ``None`` (absent, or corrupt:
    then removed). ``specs``: the arguments it must accept."""
    path = _path(key)
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        _note(f"export: cannot read {path.name} ({exc.strerror})")
        return None
    head = len(MAGIC) + 64 + 1
    payload = blob[head:]
    if (
        len(blob) <= head
        or not blob.startswith(MAGIC)
        or blob[len(MAGIC) : head - 1] != hashlib.sha256(payload).hexdigest().encode()
    ):
        _discard(path, "corrupt: digest mismatch")
        return None
    try:
        exported = jax.export.deserialize(bytearray(payload))
    except Exception as exc:  # noqa: BLE001 -- any failure means: rebuild
        _discard(path, f"does not deserialise: {type(exc).__name__}: {exc}")
        return None
    if specs is not None:
        leaves, treedef = jax.tree.flatten((tuple(specs), {}))  # (args, kwargs)
        want = [(tuple(s.shape), s.dtype) for s in leaves]
        have = [(tuple(a.shape), a.dtype) for a in exported.in_avals]
        if exported.in_tree != treedef or want != have:
            _discard(path, "does not match the arguments")
            return None
    return exported


def store(key: str, payload: bytes) -> bool:
    """Write a serialised export under ``key`` (atomically); ``False`` if the cache is not
    writable (that only costs time)."""
    from hildlimits._pipeline.io import write_atomic as _write_atomic

    blob = MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n" + bytes(payload)
    try:
        _write_atomic(_path(key), blob)
    except OSError as exc:
        _note(f"export: cannot write the cache ({exc.strerror})")
        return False
    return True


# ----------------------------------------------------------------------------- tracing


@contextlib.contextmanager
def _without_runtime_checks():
    """Trace with equinox's ``error_if`` checks off (see the module docstring): its
    ``EQX_ON_ERROR`` reads ``"off"``, and its checks are traced un-jitted, so that neither a
    check traced (and cached) before with callbacks is reused here, nor one traced here without
    them is reused later."""
    try:
        from equinox import _errors
    except ImportError:  # pragma: no cover - equinox reorganised: export then reports why
        yield
        return
    names = ("EQX_ON_ERROR", "branched_error_if_impl_jit", "branched_error_if_impl")
    if not all(hasattr(_errors, n) for n in names):  # pragma: no cover
        yield
        return
    saved = {n: getattr(_errors, n) for n in names[:2]}
    _errors.EQX_ON_ERROR = "off"
    _errors.branched_error_if_impl_jit = _errors.branched_error_if_impl
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(_errors, name, value)


class ExportedRun:
    """A run ``fn(*args)`` whose computation is loaded from the export cache, or traced, exported
    and stored there, on its first call with each argument signature (see the module
    docstring). ``make()`` returns the un-jitted run; ``parts`` keys it (JSON-able)."""

    def __init__(self, make, parts, *, jit=jax.jit):
        self._make, self._parts, self._jit = make, parts, jit
        self._calls: dict[str, object] = {}
        self._fallback = None

    def __call__(self, *args):
        description, specs = signature(args)
        sig = json.dumps(description)
        fn = self._calls.get(sig)
        if fn is None:
            fn = self._calls[sig] = self._resolve(description, specs)
            return _first_call(fn, args)
        return fn(*args)

    def _jitted(self):
        if self._fallback is None:
            self._fallback = self._jit(self._make())
        return self._fallback

    def _resolve(self, description, specs):
        t0 = time.perf_counter()
        key = export_key(self._parts, description)
        exported = load(key, specs)
        if exported is not None:
            _note(f"export: loaded {key[:16]} ({time.perf_counter() - t0:.3f} s)")
            return jax.jit(exported.call)
        jitted = self._jitted()
        try:
            with _without_runtime_checks():
                exported = jax.export.export(jitted)(*specs)
                payload = exported.serialize()
            exported = jax.export.deserialize(payload)  # run what the next process will load
        except Exception as exc:  # noqa: BLE001 -- anything: trace as before, say why
            reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
            _note(f"export: fallback to jit ({reason})")
            return _traced_without_checks(jitted)
        stored = store(key, payload)
        _note(
            f"export: {'stored' if stored else 'exported'} {key[:16]} "
            f"({len(payload)} bytes, {time.perf_counter() - t0:.3f} s)"
        )
        return jax.jit(exported.call)


def _first_call(fn, args):
    """``fn(*args)`` (compiling, or loading from JAX's persistent cache); an entry of that cache
    that JAX could not read (a torn write: JAX writes its entries in place) is removed, so the
    next run compiles and stores it again instead of warning and recompiling every time."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fn(*args)
    for w in caught:
        text = str(w.message)
        if text.startswith("Error reading persistent compilation cache entry for '"):
            _remove_unreadable_xla_entries(text.split("'")[1])
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
    return out


def _remove_unreadable_xla_entries(module_name: str) -> None:
    """Remove the entries of JAX's persistent cache for ``module_name`` that do not decompress
    (all of them if each does: then one did not deserialise)."""
    directory = jax.config.jax_compilation_cache_dir
    if not directory or "/" in module_name or not module_name:
        return
    entries = sorted(Path(directory).glob(f"{module_name}-*-cache"))
    try:
        from jax._src.compilation_cache import decompress_executable
    except ImportError:  # pragma: no cover
        decompress_executable = None
    bad = []
    for entry in entries:
        try:
            if decompress_executable is not None:
                decompress_executable(entry.read_bytes())
        except Exception:  # noqa: BLE001 -- unreadable: remove
            bad.append(entry)
    for entry in bad or entries:
        with contextlib.suppress(OSError):
            entry.unlink()
        _note(f"export: removed unreadable compilation cache entry {entry.name}")


def _traced_without_checks(jitted):
    """``jitted``, traced (on its first call) as the export traced it: without host callbacks,
    so that JAX's persistent cache can still keep its executable."""
    first = [True]

    def call(*args):
        if first[0]:
            first[0] = False
            with _without_runtime_checks():
                return jitted(*args)
        return jitted(*args)

    return call
