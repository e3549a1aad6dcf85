"""Progress on a terminal: a ticking line for phases that give no other sign of life (deriving,
compiling and solving, differentiating) and a bar for iterations. Nothing is printed when
standard error is not a terminal (logs, pipes, tests)."""

from __future__ import annotations

import contextlib
import sys
import threading
import time


def _enabled(stream, enabled: bool | None) -> bool:
    if enabled is not None:
        return enabled
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


@contextlib.contextmanager
def phase(label: str, *, stream=None, enabled: bool | None = None, every: float = 0.5):
    """While the block runs, show ``label ... 12 s`` on ``stream`` (default standard error),
    updated every ``every`` seconds, and erase it afterwards; only on a terminal."""
    stream = sys.stderr if stream is None else stream
    if not _enabled(stream, enabled):
        yield
        return
    stop = threading.Event()
    t0 = time.monotonic()
    width = [0]

    def show():
        text = f"{label} ... {time.monotonic() - t0:.0f} s"
        width[0] = max(width[0], len(text))
        try:
            stream.write("\r" + text)
            stream.flush()
        except (OSError, ValueError):
            pass

    def run():
        while not stop.wait(every):
            show()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        if width[0]:
            try:
                stream.write("\r" + " " * width[0] + "\r")
                stream.flush()
            except (OSError, ValueError):
                pass


@contextlib.contextmanager
def bar(total: int, desc: str, *, unit: str = "it", stream=None, enabled: bool | None = None):
    """A progress bar of ``total`` iterations; yields ``tick(i, value)`` to call after each (the
    value, e.g. a loss, is shown beside the bar). Only on a terminal; a no-op otherwise."""
    stream = sys.stderr if stream is None else stream
    if not _enabled(stream, enabled):
        yield lambda *a, **k: None
        return
    from tqdm import tqdm

    pbar = tqdm(total=total, desc=desc, unit=unit, file=stream, leave=False)

    def tick(i, value=None):
        pbar.update(1)
        if value is not None:
            pbar.set_postfix_str(f"{value:.4e}", refresh=False)

    try:
        yield tick
    finally:
        pbar.close()
