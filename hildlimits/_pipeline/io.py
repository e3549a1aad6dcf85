"""The one atomic writer: every file hildlimits writes (outputs, partial sweep results, the
derivation and export caches) goes through :func:`write_atomic`, so a reader -- or a run
interrupted half-way -- sees the old file or the new one, never a part, and concurrent writers
never share a temporary name."""

from __future__ import annotations

import json
import os
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
