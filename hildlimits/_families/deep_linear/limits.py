r"""Size estimates of the deep linear family (:mod:`hildlimits._pipeline.limits`), from the sizes
alone.

* ODE: ``L + 2`` numbers per mode: negligible (the saved trajectory goes to JSON).
* simulation (``simulate``, ``validate``, ``optimize-schedule``): per seed the weights
  ``sum_l H_l H_{l-1}`` (``H_0 = D``, ``H_L = O``; about :data:`WEIGHT_COPIES` float64 copies),
  the product ``W_L...W_1`` (``O x D``) at each measurement and the inputs drawn per block; run
  time: ``seeds x steps`` SGD steps of ``~6 sum_l H_l H_{l-1}`` flops at :data:`FLOPS` flop/s
  (``steps = t1 N``, or ``t1 N / lr`` under gradient flow).
"""

from __future__ import annotations

from hildlimits._pipeline.limits import FLOAT, JSON_NUMBER, Need, int_value, sweep_needs

WEIGHT_COPIES = 4
FLOPS = 2e9
STEP_OVERHEAD_S = 2e-7


def simulation_needs(cfg, options: dict) -> list[Need]:
    N = int_value(options.get("N"), 1) or 1
    seeds = int_value(options.get("seeds"), 1) or 1
    D = max(1, round(cfg.input_dim * N))
    O = max(1, round(cfg.output_dim * N))
    H = [max(1, round(h * N)) for h in cfg.hidden_dim]
    dims = [D, *H, O]
    weights = sum(a * b for a, b in zip(dims[:-1], dims[1:], strict=True))
    block = min(256, max(1, (1 << 22) // (D + O + 1))) * (D + O)
    r, n_save = cfg.rank, cfg.solve["n_save"]
    per_seed = (
        WEIGHT_COPIES * weights * FLOAT
        + 2 * O * D * FLOAT
        + 4 * block
        + n_save * r * (cfg.depth + 4) * (FLOAT + JSON_NUMBER)
    )
    steps = cfg.solve["t1"] * N / (cfg.lr if cfg.gradient_flow else 1.0)
    key, value = ("--seeds", seeds) if seeds > 1024 else ("--N", N)
    return [
        Need(
            key,
            value,
            seeds * per_seed,
            f"{seeds} seeds x (weights of layers {' x '.join(map(str, dims))})",
            seconds=seeds * steps * (6.0 * weights / FLOPS + STEP_OVERHEAD_S),
        )
    ]


def needs(cfg, command: str, options: dict) -> list[Need]:
    out: list[Need] = []
    if command == "sweep":
        points = int_value(options.get("points"), 1) or 1
        out.append(sweep_needs(points, cfg.solve["n_save"]))
    if command in ("simulate", "optimize-schedule", "validate"):
        Ns = options.get("Ns") or [options.get("N")]
        big = max((n for n in Ns if int_value(n) is not None), default=1)
        out += simulation_needs(cfg, options | {"N": big})
    return out
