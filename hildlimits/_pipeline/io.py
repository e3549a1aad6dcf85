"""The one atomic writer: every file hildlimits writes (outputs, partial sweep results, the
derivation and export caches) goes through :func:`write_atomic`, so a reader -- or a run
interrupted half-way -- sees the old file or the new one, never a part, and concurrent writers
never share a temporary name."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
from pathlib import Path

from hildlimits._errors import ConfigError


def write_atomic(path: str | Path, content: str | bytes) -> None:
    """Write ``content`` to ``path`` atomically: a uniquely named temporary file in the same
    directory, flushed to disk, then ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if isinstance(content, bytes) else "w") as fh:
            fh.write(content)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, data) -> None:
    """:func:`write_atomic` of ``json.dumps(data)``; an OS error becomes a
    :class:`~hildlimits.ConfigError` naming the path."""
    try:
        write_atomic(path, json.dumps(data))
    except OSError as exc:
        raise ConfigError(f"cannot write {str(path)!r}: {exc.strerror}") from None


_HELD: dict[str, int] = {}
"""Locks this process holds (path -> depth): taking a held lock again is a no-op, so the command
line and the library (e.g. ``sweep(store=...)``) can both take it."""


def lock_path(path: str | Path, *, directory: bool) -> Path:
    """The lock file of an output: ``DIR/.hildlimits.lock`` for a folder, ``.NAME.lock`` beside a
    file."""
    path = Path(path)
    return path / ".hildlimits.lock" if directory else path.parent / f".{path.name}.lock"


@contextlib.contextmanager
def output_lock(path: str | Path, *, directory: bool, what: str = "--out"):
    """Hold an exclusive lock on an output folder (or file) for the duration of a run, so that a
    second run into the same output is refused at once -- one :class:`~hildlimits.ConfigError`
    naming the folder and the other run's process id -- instead of the two overwriting each
    other's partial results. The lock (``fcntl.flock`` on :func:`lock_path`) is released when the
    process ends in any way, so a crashed run never leaves a stale lock; the small lock file
    itself stays. Without ``fcntl`` (Windows) no lock is taken."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    lock = lock_path(path, directory=directory)
    key = str(lock.resolve())
    if _HELD.get(key):
        _HELD[key] += 1
        try:
            yield
        finally:
            _HELD[key] -= 1
        return
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise ConfigError(
            f"{what} {str(path)!r}: cannot create the lock file: {exc.strerror}"
        ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                other = os.pread(fd, 200, 0).decode(errors="replace").strip()
            except OSError:
                other = ""
            owner = f" ({other})" if other else ""
            raise ConfigError(
                f"{what} {str(path)!r} is in use by another hildlimits run{owner}; wait for it to "
                f"finish or choose another {what}"
            ) from None
        except OSError:
            # a file system without locks (some network mounts): run unlocked
            os.close(fd)
            fd = None
            yield
            return
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
        except OSError:
            pass
        _HELD[key] = 1
        try:
            yield
        finally:
            _HELD.pop(key, None)
    finally:
        if fd is not None:
            os.close(fd)  # releases the lock
