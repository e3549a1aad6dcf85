r"""Validation harness: the ODE against finite-width simulations, with finite-size scaling.

For each N the simulation is run (``seeds`` runs) and the ODE is solved at the simulation's exact
save times ``steps/N``, from the same initial overlaps (for i.i.d. random initialisation: one ODE
per seed from that seed's measured overlaps, averaged). With ``d(t)`` the deviation of the seed
mean of the risk from the ODE and ``se(t)`` the standard error of that mean, the report gives per
N the max and mean of ``|d|`` and of ``|d|/se``, and the exponent ``b`` of a least-squares fit
``mean|d| ~ N^b`` across N.

Agreement criterion (stated in the report): at the largest N, at every save time,
``|d| <= z_tol * se + rel_tol * risk_ode + abs_tol * max(risk_ode)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hildlimits._errors import ConfigError


@dataclass(frozen=True)
class Tolerance:
    """Agreement criterion of :func:`validate` (see the module docstring)."""

    z_tol: float = 5.0
    rel_tol: float = 0.02
    abs_tol: float = 1e-5

    def __post_init__(self) -> None:
        for name in ("z_tol", "rel_tol", "abs_tol"):
            val = getattr(self, name)
            if (
                not isinstance(val, (int, float))
                or isinstance(val, bool)
                or not math.isfinite(val)
                or val < 0
            ):
                raise ConfigError(f"{name} must be a non-negative number, got {val!r}")


SE_FLOOR = 1e-9
"""Standard errors below this fraction of the largest |ODE value| count as zero (no spread)."""


def se_text(z, spec: str = ".2f") -> str:
    """A deviation in standard errors for printing; ``None`` (deterministic runs, no spread over
    seeds) reads ``"n/a (no spread over seeds)"``."""
    return "n/a (no spread over seeds)" if z is None else format(z, spec)


def criterion(mean, sem, ode, tolerance: Tolerance) -> dict:
    """The agreement criterion of every family's ``validate`` (module docstring): deviations
    of the seed mean ``mean`` (standard error ``sem``) from the ODE's ``ode`` at each time.
    ``max_deviation_in_se`` and ``mean_deviation_in_se`` are ``None`` (JSON ``null``) when the
    seeds have no spread (:data:`SE_FLOOR`): then only ``rel_tol`` and ``abs_tol`` judge."""
    d = np.asarray(mean) - np.asarray(ode)
    se = np.asarray(sem)
    # a spread over seeds below 1e-9 of the curve's scale is rounding (deterministic runs, e.g.
    # gradient flow compared seed by seed): no deviation in standard errors is defined there
    ok = se > SE_FLOOR * max(float(np.abs(ode).max(initial=0.0)), 1e-300)
    z = np.abs(d[ok]) / se[ok] if ok.any() else None
    allowed = (
        tolerance.z_tol * se
        + tolerance.rel_tol * np.abs(ode)
        + tolerance.abs_tol * np.abs(ode).max()
    )
    return {
        "max_deviation_in_se": float(z.max()) if z is not None else None,
        "mean_deviation_in_se": float(z.mean()) if z is not None else None,
        "fraction_within_tolerance": float(np.mean(np.abs(d) <= allowed)),
        "worst": int(np.argmax(np.abs(d) - allowed)),
    }


class SimulationStopped(RuntimeError):
    """A simulation inside :func:`validate` diverged or was interrupted."""

    def __init__(self, sim, where: str | None = None):
        self.simulation = sim
        where = where if where is not None else f"N={sim.N}"
        super().__init__(f"the simulation at {where} {sim.status}")


def validate(model, *, Ns, tolerance: Tolerance = Tolerance(), width=None, **options):
    """Run the ODE and simulations for each N in ``Ns``; returns ``(report, simulations, odes)``.

    ``model`` is a config of any family (:func:`hildlimits.load_config`): its own options are
    used, and ``options`` may set ``seeds`` (8), ``seed`` (0), ``dtype``, ``test_samples``
    (committee), ``progress``; ``width``: the mean-field family's hidden units (one per ``N``
    or one for all). Or ``model`` is a :class:`~hildlimits.Committee`, with ``options``
    ``hyper``, ``init`` or ``random_init``, ``t1``, ``n_save``, ``spacing``, ``t_first``,
    ``solve_kwargs``, ``seeds``, ``seed``, ``test_samples``, ``dtype``, ``progress``,
    ``divergence_bound``.

    ``report`` is JSON-ready (``passed``, ``reason``, per-N or per-width deviations, the
    finite-size fit, the ``tolerance``); ``odes[i]`` belongs to ``simulations[i]``.
    """
    from hildlimits._families import family_of

    if getattr(model, "kind", None) is not None:  # a config: its family validates
        opts = {"Ns": list(Ns), "seeds": 8, "seed": 0, "width": width} | options
        if width is not None and not isinstance(width, str):
            opts["width"] = ",".join(str(int(w)) for w in np.atleast_1d(width))
        report, (sims, odes) = family_of(model).validate(model, options=opts, tolerance=tolerance)
        return report, sims, odes
    return family_of(model).validate_model(model, Ns=Ns, tolerance=tolerance, **options)


class ValidationInterrupted(KeyboardInterrupt):
    """Ctrl-C inside :func:`validate` after at least one N (or width) finished: ``report`` is the
    report of the finished ones (``"interrupted"`` set, ``passed`` false), ``artefacts`` what
    the family's ``validate`` returns with it, ``done`` how many finished. The command line
    writes ``report.json`` and exits 130; code that does not catch it sees a KeyboardInterrupt."""

    def __init__(self, report: dict, artefacts, done: int):
        super().__init__(f"interrupted after {done} finished")
        self.report = report
        self.artefacts = artefacts
        self.done = done


def check_validation_inputs(Ns, seeds, *, name: str = "--N") -> list[int]:
    """The checks every family's ``validate`` makes on its sizes: at least one N, each a positive
    integer, no N twice (a finite-size fit over repeated N means nothing; one N is fine and has
    no fit), and at least two seeds (the criterion is in seed standard errors)."""
    values = []
    for n in Ns:
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
            raise ConfigError(f"{name} values must be positive integers, got {n!r}")
        values.append(int(n))
    if not values:
        raise ConfigError(f"{name} must list at least one value")
    if len(set(values)) != len(values):
        dup = sorted({n for n in values if values.count(n) > 1})
        raise ConfigError(
            f"{name} lists {', '.join(map(str, dup))} more than once: the finite-size fit needs "
            "distinct values (one value is fine: it simply has no fit)"
        )
    if isinstance(seeds, bool) or not isinstance(seeds, int | np.integer) or seeds < 2:
        raise ConfigError(
            f"seeds must be at least 2 for a validation (the agreement is measured in standard "
            f"errors over seeds, and a standard error needs at least two seeds), got {seeds!r}"
        )
    return values


def interrupted_report(report: dict, done: int, total: int) -> dict:
    """Mark a report built from the first ``done`` of ``total`` sizes as interrupted."""
    return report | {
        "passed": False,
        "interrupted": f"after {done} of {total} sizes finished (Ctrl-C)",
        "reason": f"interrupted after {done} of {total} sizes; the finished ones are reported "
        + "(the criterion was not applied at the largest size): "
        + str(report.get("reason", "")),
    }
