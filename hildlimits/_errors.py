"""Error types raised at the public boundary."""

from __future__ import annotations


class ConfigError(ValueError):
    """Invalid user input: the message names the field and the offending value."""


class SolveError(RuntimeError):
    """The integrator could not finish (e.g. the step budget ran out); the message says what to change."""
