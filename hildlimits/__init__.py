"""hildlimits: exact high-dimensional ODEs of online SGD, derived, generated, solved and validated.

Every public name is imported on first use (PEP 562), so ``import hildlimits`` -- and the command
line, which imports the package first -- costs only what is used: a solve of a cached derivation
imports neither SymPy nor matplotlib.
"""

from __future__ import annotations

import importlib

from hildlimits._version import __version__ as __version__

_EXPORTS = {
    "available_activations": ("_engine.activations", "available_activations"),
    "cache_dir": ("_pipeline.cache", "cache_dir"),
    "config_from_dict": ("_pipeline.config", "config_from_dict"),
    "load_config": ("_pipeline.config", "load_config"),
    "Equation": ("_families.committee.derive", "Equation"),
    "ExpectationEntry": ("_families.committee.derive", "ExpectationEntry"),
    "ODESystem": ("_families.committee.derive", "ODESystem"),
    "Term": ("_families.committee.derive", "Term"),
    "derive": ("_families.committee.derive", "derive"),
    "ConfigError": ("_errors", "ConfigError"),
    "SolveError": ("_errors", "SolveError"),
    "DivergedError": ("_errors", "DivergedError"),
    "Family": ("_families", "Family"),
    "get_family": ("_families", "get_family"),
    "available_families": ("_families", "kinds"),
    "FlatState": ("_families.committee.flat", "FlatState"),
    "NoClosedForm": ("_engine.gaussian", "NoClosedForm"),
    "gaussian_expectation": ("_engine.gaussian", "gaussian_expectation"),
    "gradient": ("_pipeline.grad", "gradient"),
    "MeanField": ("_families.meanfield.model", "MeanField"),
    "MeanFieldInit": ("_families.meanfield.model", "MeanFieldInit"),
    "MeanFieldSystem": ("_families.meanfield.model", "MeanFieldSystem"),
    "MeanFieldTrajectory": ("_families.meanfield.model", "MeanFieldTrajectory"),
    "derive_meanfield": ("_families.meanfield.model", "derive_meanfield"),
    "solve_meanfield": ("_families.meanfield.model", "solve_meanfield"),
    "MeanFieldSimulation": ("_families.meanfield.simulate", "MeanFieldSimulation"),
    "simulate_meanfield": ("_families.meanfield.simulate", "simulate_meanfield"),
    "Committee": ("_families.committee.model", "Committee"),
    "Hyperparams": ("_families.committee.model", "Hyperparams"),
    "Overlaps": ("_families.committee.model", "Overlaps"),
    "RunStatus": ("_pipeline.runner", "RunStatus"),
    "Status": ("_pipeline.runner", "Status"),
    "Schedule": ("_pipeline.schedule", "Schedule"),
    "optimize_schedule": ("_pipeline.schedule", "optimize_schedule"),
    "RandomInit": ("_families.committee.simulate", "RandomInit"),
    "Simulation": ("_families.committee.simulate", "Simulation"),
    "simulate": ("_families.committee.simulate", "simulate"),
    "Trajectory": ("_families.committee.solve", "Trajectory"),
    "save_times": ("_families.committee.solve", "save_times"),
    "solve": ("_families.committee.solve", "solve"),
    "default_batch_size": ("_pipeline.sweep", "default_batch_size"),
    "meanfield_drift": ("_families.meanfield.model", "drift_numpy"),
    "SweepResult": ("_pipeline.sweep", "SweepResult"),
    "sweep": ("_pipeline.sweep", "sweep"),
    "Tolerance": ("_pipeline.validate", "Tolerance"),
    "plot_trajectory": ("_families.committee.plot", "plot_trajectory"),
    "plot_meanfield": ("_families.meanfield.plot", "plot_meanfield"),
    "validate": ("_pipeline.validate", "validate"),
    "Spectrum": ("_pipeline.spectrum", "Spectrum"),
    "spectrum_from_config": ("_pipeline.spectrum", "spectrum_from_config"),
    "spread_overlaps": ("_pipeline.spectrum", "spread_overlaps"),
    "DeepLinearSystem": ("_families.deep_linear.model", "DeepLinearSystem"),
    "DeepLinearTrajectory": ("_families.deep_linear.model", "DeepLinearTrajectory"),
    "derive_deep_linear": ("_families.deep_linear.model", "derive_deep_linear"),
    "solve_deep_linear": ("_families.deep_linear.model", "solve_deep_linear"),
    "DeepLinearSimulation": ("_families.deep_linear.simulate", "DeepLinearSimulation"),
    "simulate_deep_linear": ("_families.deep_linear.simulate", "simulate_deep_linear"),
    "LeastSquaresSystem": ("_families.least_squares.theory", "LeastSquaresSystem"),
    "derive_least_squares": ("_families.least_squares.theory", "derive_least_squares"),
    "LeastSquaresTrajectory": ("_families.least_squares.solve", "LeastSquaresTrajectory"),
    "solve_least_squares": ("_families.least_squares.solve", "solve_least_squares"),
    "LeastSquaresSimulation": ("_families.least_squares.simulate", "LeastSquaresSimulation"),
    "simulate_least_squares": ("_families.least_squares.simulate", "simulate_least_squares"),
    "expected_sgd": ("_engine.recursion", "expected_sgd"),
    "ExpectedSGD": ("_engine.recursion", "ExpectedSGD"),
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
