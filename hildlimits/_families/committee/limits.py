r"""Size estimates of the committee (:mod:`hildlimits._pipeline.limits`): what loading a config
and each command allocate, from the sizes alone.

* ``[init.random]``: two Gaussian weight matrices ``K x N`` and ``M x N`` (float64, drawn and
  scaled: two copies) and the ``K x K``, ``K x M``, ``M x M`` overlaps.
* ODE (``solve``, ``validate``, ``sweep``, ``grad``, ``optimize-schedule``): the vector field
  broadcasts each term over an index grid; the largest has
  ``K(K+1)/2 * max(K(K+1)/2, K M, M(M+1)/2)`` points (pairs of student indices are enumerated
  once) and holds about :data:`GRID_COPIES` float64 arrays of that size at once, per batch
  element of a sweep; the saved trajectory is ``n_save x (K^2 + K M + K)`` floats, kept as JSON.
* simulation (``simulate``, ``validate``, ``optimize-schedule``): per seed the weights
  ``(K + M) x N`` (float64, about :data:`WEIGHT_COPIES` copies while they are drawn, stacked and
  moved to the device) and the inputs drawn per block (:func:`block_size` steps x ``N`` float32,
  about 16 MiB) -- the seeds run in chunks that fit, so one seed must fit -- and for every seed
  the overlaps at each save time, and for ``--test-samples`` one random key per
  test sample (8 bytes). Run time: ``seeds x t1 x N`` SGD steps of ``~4 (K + M) N`` flops, plus
  ``seeds x n_save x test_samples`` test samples of ``~2 (K + M) N`` flops, at
  :data:`FLOPS` flop/s.
"""

from __future__ import annotations

from hildlimits._pipeline.limits import FLOAT, JSON_NUMBER, Need, int_value, sweep_needs

GRID_COPIES = 16
"""float64 arrays of the largest index grid alive at once in the vector field (measured
about 10 at K = M = 60; rounded up)."""
WEIGHT_COPIES = 4
"""float64 copies of the simulated weights while they are drawn and moved to the device."""
FLOPS = 2e9
"""Sustained flop/s of the simulator on one CPU core (a conservative estimate)."""
STEP_OVERHEAD_S = 2e-7
"""Seconds of per-step overhead of the simulator's loop (independent of N)."""


def _block_floats(N: int) -> int:
    B = max(1, min(256, (1 << 22) // (N + 1)))
    width = -(-(N + 1) // 128) * 128
    return B * width


def config_needs(data: dict) -> list[Need]:
    model, init = data.get("model"), data.get("init")
    if not isinstance(model, dict) or not isinstance(init, dict):
        return []
    K, M = int_value(model.get("K"), 1), int_value(model.get("M"), 1)
    D = K + M
    needs = [
        Need("model.K", K, 4 * K * K * FLOAT, "the K x K overlap matrices", forceable=False),
        Need("model.M", M, 4 * M * M * FLOAT, "the M x M teacher overlaps", forceable=False),
        Need(
            "model.K" if K >= M else "model.M",
            K if K >= M else M,
            0,
            f"checking that the {D} x {D} joint overlap matrix is positive semi-definite",
            seconds=10.0 * D**3 / FLOPS,
            forceable=False,
        ),
    ]
    spec = init.get("random")
    if isinstance(spec, dict):
        N = int_value(spec.get("N"), 1)
        key = "init.random.N" if N * FLOAT >= max(K, M) * FLOAT else "model.K"
        needs.append(
            Need(
                key,
                N if key == "init.random.N" else K,
                2 * (K + M) * N * FLOAT,
                f"the random initial weights, (K + M) x N = {K + M} x {N} float64",
                forceable=False,
            )
        )
    return needs


def _largest_grid(K: int, M: int) -> int:
    pk, pm = K * (K + 1) // 2, M * (M + 1) // 2
    return pk * max(pk, K * M, pm, K + M)


def ode_needs(cfg, *, batch: int = 1, key: str = "model.K") -> list[Need]:
    K, M = cfg.model.K, cfg.model.M
    state = K * K + K * M + K
    n_save = cfg.solve.n_save
    grid = _largest_grid(K, M)
    return [
        Need(
            key,
            K if key == "model.K" else batch,
            GRID_COPIES * grid * FLOAT * batch,
            f"the vector field's index grid of {grid} points"
            + (f" x {batch} points per batch" if batch > 1 else ""),
        ),
        Need("solve.n_save", n_save, n_save * state * (FLOAT + JSON_NUMBER), "the saved states"),
    ]


def simulation_needs(cfg, options: dict) -> list[Need]:
    K, M = cfg.model.K, cfg.model.M
    so = cfg.solve
    N = int_value(options.get("N"), 1) or 1
    seeds = int_value(options.get("seeds"), 1) or 1
    tests = int_value(options.get("test_samples"), 0) or 0
    n_save = so.n_save
    hyper = getattr(cfg, "hyper", None)
    flow = bool(getattr(hyper, "gradient_flow", False))
    batch = int(getattr(hyper, "batch_size", 1) or 1)
    batch_schedule = getattr(cfg, "batch_schedule", None)
    if batch_schedule is not None:  # the largest scheduled batch bounds the cost per step
        batch = int(max(batch_schedule.values))
    if flow:  # population gradient descent with step lr: t1 N / lr steps, no inputs drawn
        steps = so.t1 * N / max(float(hyper.lr), 1e-300)
        blocks, batch = 0, 1
    else:
        steps = so.t1 * N
        blocks = _block_floats(N) * 4
    weights = WEIGHT_COPIES * (K + M) * N * FLOAT
    record = n_save * (K * K + K * M + K + 2) * (FLOAT + JSON_NUMBER)
    per_seed = weights + blocks
    flops_step = 4.0 * (K + M) * N * batch
    sgd_s = seeds * steps * (flops_step / FLOPS + STEP_OVERHEAD_S)
    # the simulator runs the seeds in chunks that fit in memory (at least one seed at a time);
    # the saved overlaps of every seed are kept
    needs = [
        Need(
            "--N",
            N,
            per_seed,
            f"one seed's weights (K + M) x N = {K + M} x {N} and the inputs drawn per block "
            f"(seeds run in chunks that fit)",
            seconds=None if seeds > 1024 else sgd_s,
        ),
        Need(
            "--seeds",
            seeds,
            seeds * record,
            f"the saved overlaps of {seeds} seeds at {n_save} save times",
            seconds=sgd_s if seeds > 1024 else None,
        ),
    ]
    if tests:
        needs.append(
            Need(
                "--test-samples",
                tests,
                seeds * tests * 8.0,
                f"one random key per test sample and seed ({seeds} seeds)",
                seconds=seeds * n_save * tests * (2.0 * (K + M) * N / FLOPS + STEP_OVERHEAD_S),
            )
        )
    return needs


def needs(cfg, command: str, options: dict) -> list[Need]:
    out: list[Need] = []
    if command in ("solve", "grad", "validate", "optimize-schedule"):
        out += ode_needs(cfg)
    if command == "sweep":
        points = int_value(options.get("points"), 1) or 1
        batch = min(points, int_value(options.get("batch_size"), 128) or 128)
        out += ode_needs(cfg, batch=batch, key="--batch-size" if batch > 1 else "model.K")
        out.append(sweep_needs(points, cfg.solve.n_save))
    if command in ("simulate", "optimize-schedule"):
        out += simulation_needs(cfg, options)
    if command == "validate":
        Ns = options.get("Ns") or [options.get("N")]
        big = max((n for n in Ns if int_value(n) is not None), default=1)
        out += simulation_needs(cfg, options | {"N": big})
        for n in out:
            if n.key == "--N" and n.seconds is not None:
                # every N is simulated in turn: the time adds up, the memory does not
                object.__setattr__(n, "seconds", n.seconds * len(Ns))
    return [n for n in out if n is not None and (n.bytes or n.seconds)]
