"""Error types raised at the public boundary."""

from __future__ import annotations


class ConfigError(ValueError):
    """Invalid user input: the message names the field and the offending value."""


class SolveError(RuntimeError):
    """The integrator could not finish (e.g. the step budget ran out); the message says what to change."""


class DivergedError(SolveError):
    """The dynamics diverged where no partial result can be returned (e.g. a differentiated
    solve); the message names the time. The command line exits 1, as for a diverging solve."""
