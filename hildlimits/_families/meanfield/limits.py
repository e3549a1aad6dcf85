r"""Size estimates of the mean field (:mod:`hildlimits._pipeline.limits`), from the sizes alone.

* ODE (``solve``, ``validate``, ``sweep``, ``grad``, ``optimize-schedule``): ``P`` particles of
  ``M + 2`` numbers; the drift holds about :data:`DRIFT_COPIES` float64 arrays of ``P x Z``
  (``method = "quadrature"``: ``Z = nodes^M`` Gauss--Hermite nodes of the teacher fields) or
  ``P x P`` (``method = "pairwise"``) at once, per batch element of a sweep; the saved
  trajectory (every particle at every save time) goes to JSON.
* simulation (``simulate``, ``validate``, ``optimize-schedule``): per seed the weights
  ``width x d`` (float64, about :data:`WEIGHT_COPIES` copies), the inputs drawn per block and the
  ``width x width`` overlaps at each save time (about :data:`OVERLAP_COPIES` copies); run time:
  ``seeds x t1 d / lr`` SGD steps of ``~4 width d`` flops at :data:`FLOPS` flop/s.
"""

from __future__ import annotations

import math

from hildlimits._pipeline.limits import FLOAT, JSON_NUMBER, Need, int_value, sweep_needs

DRIFT_COPIES = 24
"""float64 arrays of ``P x Z`` (or ``P x P``) alive at once in the drift (smoothings, teacher
terms and their products; an upper bound)."""
WEIGHT_COPIES = 4
OVERLAP_COPIES = 8
FLOPS = 2e9
STEP_OVERHEAD_S = 2e-7


def _nodes_total(M: int, nodes: int) -> float:
    """``nodes ** M`` as a float (inf when it overflows)."""
    try:
        return math.exp(M * math.log(nodes)) if M * math.log(nodes) < 700 else math.inf
    except (OverflowError, ValueError):
        return math.inf


def ode_needs(cfg, *, batch: int = 1) -> list[Need]:
    M, P = cfg.model.M, cfg.init.particles
    so = cfg.solve
    n_save = so["n_save"]
    out = []
    if so["method"] == "quadrature":
        Z = _nodes_total(M, so["nodes"])
        per = P * Z
        key, value = ("model.M", M) if Z > P else ("init.particles", P)
        out.append(
            Need(
                key,
                value,
                DRIFT_COPIES * per * FLOAT * batch + Z * (M + 1) * FLOAT,
                f"the drift on {P} particles x {so['nodes']}^{M} quadrature nodes"
                + (f" x {batch} points per batch" if batch > 1 else ""),
            )
        )
    else:
        out.append(
            Need(
                "init.particles",
                P,
                DRIFT_COPIES * P * P * FLOAT * batch,
                f"the pairwise drift on {P} x {P} particles",
            )
        )
    out.append(
        Need(
            "init.particles",
            P,
            P * (M + 2) * (12 * FLOAT + n_save * (FLOAT + JSON_NUMBER)),
            f"the particle states and the {n_save} saved ones",
        )
    )
    return out


def _block_floats(d: int) -> int:
    B = max(1, min(256, (1 << 22) // (d + 1)))
    return B * (-(-(d + 1) // 128) * 128)


def simulation_needs(cfg, options: dict, *, widths=None) -> list[Need]:
    M = cfg.model.M
    d = int_value(options.get("N"), 1) or 1
    seeds = int_value(options.get("seeds"), 1) or 1
    width = options.get("width")
    try:
        p = max(int(w) for w in str(width).split(",") if w.strip()) if width is not None else 1
    except ValueError:
        p = 1
    p = max(1, min(p, d))
    n_save = cfg.solve["n_save"]
    steps = cfg.solve["t1"] * d / cfg.lr
    per_seed = (
        WEIGHT_COPIES * (p + M) * d * FLOAT
        + _block_floats(d) * 4
        + OVERLAP_COPIES * p * p * FLOAT
        + n_save * p * (M + 2) * (FLOAT + JSON_NUMBER)
    )
    key = "--seeds" if seeds > 1024 else ("--width" if p * p > d * (p + M) else "--N")
    return [
        Need(
            key,
            {"--seeds": seeds, "--width": p, "--N": d}[key],
            seeds * per_seed,
            f"{seeds} seeds x (weights width x d = {p} x {d}, overlaps {p} x {p})",
            seconds=seeds * steps * (4.0 * (p + M) * d / FLOPS + STEP_OVERHEAD_S),
        )
    ]


def needs(cfg, command: str, options: dict) -> list[Need]:
    out: list[Need] = []
    if command in ("solve", "grad", "validate", "optimize-schedule"):
        out += ode_needs(cfg)
    if command == "sweep":
        points = int_value(options.get("points"), 1) or 1
        batch = min(points, int_value(options.get("batch_size"), 128) or 128)
        out += ode_needs(cfg, batch=batch)
        out.append(sweep_needs(points, cfg.solve["n_save"]))
    if command in ("simulate", "optimize-schedule", "validate"):
        Ns = options.get("Ns") or [options.get("N")]
        big = max((n for n in Ns if int_value(n) is not None), default=1)
        out += simulation_needs(cfg, options | {"N": big})
    return out
