"""hildlimits: exact high-dimensional ODEs of online SGD, derived, generated, solved and validated.

Every public name is imported on first use (PEP 562), so ``import hildlimits`` -- and the command
line, which imports the package first -- costs only what is used: a solve of a cached derivation
imports neither SymPy nor matplotlib.
"""

from __future__ import annotations

import importlib

from ._version import __version__ as __version__

_EXPORTS = {
    "available_activations": ("_activations", "available_activations"),
    "cache_dir": ("_cache", "cache_dir"),
    "config_from_dict": ("_config", "config_from_dict"),
    "load_config": ("_config", "load_config"),
    "Equation": ("_derive", "Equation"),
    "ExpectationEntry": ("_derive", "ExpectationEntry"),
    "ODESystem": ("_derive", "ODESystem"),
    "Term": ("_derive", "Term"),
    "derive": ("_derive", "derive"),
    "ConfigError": ("_errors", "ConfigError"),
    "SolveError": ("_errors", "SolveError"),
    "Family": ("_families", "Family"),
    "get_family": ("_families", "get_family"),
    "available_families": ("_families", "kinds"),
    "FlatState": ("_flat", "FlatState"),
    "NoClosedForm": ("_gaussian", "NoClosedForm"),
    "gaussian_expectation": ("_gaussian", "gaussian_expectation"),
    "gradient": ("_grad", "gradient"),
    "MeanField": ("_meanfield", "MeanField"),
    "MeanFieldInit": ("_meanfield", "MeanFieldInit"),
    "MeanFieldSystem": ("_meanfield", "MeanFieldSystem"),
    "MeanFieldTrajectory": ("_meanfield", "MeanFieldTrajectory"),
    "derive_meanfield": ("_meanfield", "derive_meanfield"),
    "solve_meanfield": ("_meanfield", "solve_meanfield"),
    "MeanFieldSimulation": ("_meanfield_simulate", "MeanFieldSimulation"),
    "simulate_meanfield": ("_meanfield_simulate", "simulate_meanfield"),
    "Committee": ("_model", "Committee"),
    "Hyperparams": ("_model", "Hyperparams"),
    "Overlaps": ("_model", "Overlaps"),
    "RunStatus": ("_runner", "RunStatus"),
    "Status": ("_runner", "Status"),
    "Schedule": ("_schedule", "Schedule"),
    "optimize_schedule": ("_schedule", "optimize_schedule"),
    "RandomInit": ("_simulate", "RandomInit"),
    "Simulation": ("_simulate", "Simulation"),
    "simulate": ("_simulate", "simulate"),
    "Trajectory": ("_solve", "Trajectory"),
    "save_times": ("_solve", "save_times"),
    "solve": ("_solve", "solve"),
    "SweepResult": ("_sweep", "SweepResult"),
    "sweep": ("_sweep", "sweep"),
    "Tolerance": ("_validate", "Tolerance"),
    "validate": ("_validate", "validate"),
    "__version__": ("_version", "__version__"),
}
"""Public name -> (submodule, attribute)."""

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str):
    try:
        module, attr = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(f"{__name__}.{module}"), attr)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
