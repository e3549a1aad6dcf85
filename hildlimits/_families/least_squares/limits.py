r"""Size estimates of the least-squares family (:mod:`hildlimits._pipeline.limits`).

* theory (``solve``, ``sweep``, ``grad``, ...): ``nodes + 1`` quadrature nodes, two numbers each,
  about :data:`ODE_COPIES` arrays of that size per batch element; the double-descent output adds
  ``len(alphas) x min(nodes, 2048)`` at once.
* simulation: per seed the ``N x N`` Gram matrix (float64, about :data:`GRAM_COPIES` copies with
  ``eigh`` for gradient flow), a block of samples; the seeds are batched to at most
  :data:`~hildlimits._families.least_squares.simulate.MEMORY` bytes (the batch is the estimate).
  Run time: ``n N^2`` flops for the Gram matrix per seed, then ``2 N^2`` per GD step
  (``t1 / lr`` steps) or ``~10 N^3`` for ``eigh``, at :data:`FLOPS` flop/s.
"""

from __future__ import annotations

from hildlimits._pipeline.limits import FLOAT, Need, int_value, sweep_needs

ODE_COPIES = 40
GRAM_COPIES = 3
FLOPS = 2e9


def ode_needs(cfg, *, batch: int = 1) -> list[Need]:
    n = cfg.nodes + 1
    alphas = cfg.solve.get("double_descent_samples") or [0.0] * 81
    return [
        Need(
            "solve.nodes",
            cfg.nodes,
            ODE_COPIES * n * FLOAT * batch + len(alphas) * min(n, 2049) * FLOAT * ODE_COPIES,
            f"the per-mode state on {n} quadrature nodes"
            + (f" x {batch} points per batch" if batch > 1 else ""),
        )
    ]


def simulation_needs(cfg, options: dict) -> list[Need]:
    from hildlimits._families.least_squares.simulate import MEMORY, n_samples

    N = int_value(options.get("N"), 1) or 1
    seeds = int_value(options.get("seeds"), 1) or 1
    per_seed = GRAM_COPIES * N * N * FLOAT
    batch = max(1, min(seeds, MEMORY // max(per_seed, 1)))
    n = n_samples(cfg, N)
    if cfg.gradient_flow:
        flops = n * N * N + 10.0 * N**3
    else:
        flops = n * N * N + 2.0 * N * N * cfg.solve["t1"] / cfg.lr
    return [
        Need(
            "--N",
            N,
            batch * per_seed,
            f"{batch} seeds at once x the {N} x {N} Gram matrix",
            seconds=seeds * flops / FLOPS,
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
