r"""Time-dependent learning rates and their optimisation through the ODE.

A :class:`Schedule` is a piecewise-constant first-layer learning rate ``eta(t)``; the ODE solver
steps onto its edges and the simulator evaluates it at ``t = step / N``. Parametric families
(exponential decay, power law) are sampled onto pieces by :meth:`Schedule.from_function`.

:func:`optimize_schedule` minimises the risk at ``t1`` over the piece values by gradient descent
(optax Adam on ``log eta``) through the differentiable ODE solve, and compares with the best
constant rate (found on a grid by a batched sweep).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from hildlimits._errors import ConfigError


@dataclass(frozen=True, eq=False)
class Schedule:
    """Piecewise-constant learning rate: ``values[k]`` on ``[edges[k-1], edges[k])``
    (``edges[-1] = -inf``, ``edges[len] = +inf``), so ``len(values) == len(edges) + 1``."""

    edges: np.ndarray
    values: np.ndarray

    def __post_init__(self) -> None:
        edges = np.asarray(self.edges, np.float64).reshape(-1)
        values = np.asarray(self.values, np.float64).reshape(-1)
        if len(values) != len(edges) + 1:
            raise ConfigError(
                f"a schedule needs one more value than edges, got {len(values)} values and {len(edges)} edges"
            )
        if not np.all(np.isfinite(edges)) or np.any(np.diff(edges) <= 0):
            raise ConfigError(f"schedule edges must be finite and increasing, got {edges.tolist()}")
        if not np.all(np.isfinite(values)) or np.any(values < 0):
            raise ConfigError(
                f"schedule values must be finite and non-negative, got {values.tolist()}"
            )
        object.__setattr__(self, "edges", edges)
        object.__setattr__(self, "values", values)

    @classmethod
    def pieces(cls, values, t1: float) -> Schedule:
        """``len(values)`` equal pieces on ``[0, t1]``."""
        values = np.asarray(values, np.float64)
        return cls(edges=np.linspace(0.0, t1, len(values) + 1)[1:-1], values=values)

    @classmethod
    def constant(cls, value: float) -> Schedule:
        return cls(edges=np.zeros(0), values=np.array([value]))

    @classmethod
    def from_function(
        cls, f: Callable[[np.ndarray], np.ndarray], t1: float, pieces: int
    ) -> Schedule:
        """Sample ``f`` at the midpoints of ``pieces`` equal pieces of ``[0, t1]`` (e.g.
        ``lambda t: eta0 * np.exp(-t / tau)`` or ``lambda t: eta0 / (1 + t / tau) ** alpha``)."""
        mid = (np.arange(pieces) + 0.5) * t1 / pieces
        return cls.pieces(np.asarray(f(mid), np.float64), t1)

    def __call__(self, t):
        return self.values[np.searchsorted(self.edges, t, side="right")]


MAX_PIECES = 1000
"""Schedule pieces accepted without ``force``: each edge stops the solver (a step ends on it), so
the cost of every differentiated solve -- and of compiling the schedule -- grows with it."""


def check_pieces(pieces, steps=1, *, max_steps: int = 100_000, force: bool = False) -> None:
    """Refuse a schedule of ``pieces`` pieces that cannot work (at least as many solver steps as
    the step budget ``max_steps``) or would take very long (more than :data:`MAX_PIECES`, unless
    ``force``); one :class:`ConfigError` naming ``--pieces``."""
    if isinstance(pieces, bool) or not isinstance(pieces, int) or pieces < 1:
        raise ConfigError(f"--pieces must be a positive integer, got {pieces!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"--steps must be a positive integer, got {steps!r}")
    if pieces >= max_steps:
        raise ConfigError(
            f"--pieces = {pieces}: every piece edge ends a solver step, so one solve needs more "
            f"than {pieces} steps, more than the step budget max_steps={max_steps} of the "
            f"differentiated solve; use at most {min(MAX_PIECES, max_steps - 1)} pieces"
        )
    if pieces > MAX_PIECES:
        message = (
            f"--pieces = {pieces}: every piece edge ends a solver step, so each of the {steps} "
            f"differentiated solves takes at least {pieces} steps (and compiling grows with it); "
            f"at most {MAX_PIECES} pieces"
        )
        if not force:
            raise ConfigError(message + " (or pass --force to try anyway)")
        print(f"warning (--force): {message}", file=sys.stderr)


def optimize_schedule(
    system,
    *,
    init=None,
    hyper=None,
    config=None,
    t1: float | None = None,
    pieces: int = 20,
    steps: int = 150,
    learning_rate: float = 0.05,
    constant_grid: np.ndarray | None = None,
    rtol: float = 1e-8,
    atol: float = 1e-10,
    max_steps: int = 100_000,
    progress: Callable[[int, float], None] | None = None,
    force: bool = False,
    interruptible: bool = False,
    batch: bool = False,
    max_batch: float = 4096.0,
) -> dict:
    """Minimise risk(t1) over a ``pieces``-piece schedule of the family's scheduled parameter
    (``Family.schedule_param``: the committee's first-layer rate ``training.lr``, the mean
    field's readout rate ``training.lr_second_layer``); returns a dict with the optimised
    :class:`Schedule`, the best constant value, both risks, and the loss history.

    ``config``: the family's config; or, for the committee, ``init`` and ``hyper``.
    ``pieces`` is checked by :func:`check_pieces` (``force``: more than :data:`MAX_PIECES`).
    ``interruptible``: Ctrl-C during the optimisation returns the best schedule so far with
    ``"interrupted"`` set (what step it stopped at) instead of raising ``KeyboardInterrupt``.

    ``batch=True`` optimises the learning rate and the mini-batch size (``Family.batch_param``)
    jointly under a *sample budget*: the budget is that of the configured run at its batch size
    (``t1 * B`` samples per input dimension). The ODE is integrated in sample time
    ``s = samples / N = int B dt`` (``dy/ds = (dy/dt) / B``), where the pieces are equal shares
    of the budget and fixed; each piece has its own ``eta_k`` and ``B_k = 1 + e^{phi_k}``
    (capped at ``max_batch``). The result adds ``"batch_schedule"`` and gives both schedules in
    time ``t = steps/N`` (the pieces of the budget end at ``t_k = sum_{j<=k} (s_1/P) / B_j``), and
    ``"sample_edges"``; the constant reference is the best constant learning rate at the
    configured batch size.
    """
    import jax
    import jax.numpy as jnp
    import optax

    from hildlimits._families import config_for
    from hildlimits._pipeline import runner as _runner
    from hildlimits._pipeline.sweep import sweep

    family, config = config_for(system, config, who="optimize_schedule", init=init, hyper=hyper)
    if family.schedule_param is None:
        family.refuse("optimize-schedule")
    family.schedule_value(config)  # refuses configs without the parameter
    t1 = family.solve_options(config)["t1"] if t1 is None else t1
    check_pieces(pieces, steps, max_steps=max_steps, force=force)
    if batch:
        b0 = family.batch_value(system, config)
        if not (isinstance(max_batch, int | float) and max_batch > 1):
            raise ConfigError(f"max_batch must be a number > 1, got {max_batch!r}")
    grid = (
        np.geomspace(0.01, 5.0, 64)
        if constant_grid is None
        else np.asarray(constant_grid, np.float64)
    )
    res = sweep(
        system,
        config=config,
        params={family.schedule_param: list(grid)},
        t1=t1,
        n_save=2,
        spacing="linear",
        rtol=rtol,
        atol=atol,
        batch_size=len(grid),
        progress=False,
    )
    final = np.where([s == "ok" for s in res.status], res.final_risk, np.inf)
    best = int(np.argmin(final))
    best_lr, best_risk = float(grid[best]), float(final[best])
    if not math.isfinite(best_risk):
        raise ConfigError("no constant learning rate on the grid converged; adjust the grid")

    # the horizon of the differentiated solve: t1, or the sample budget t1 * B in sample time
    horizon = float(t1) * (b0 if batch else 1.0)
    edges = np.linspace(0.0, horizon, pieces + 1)[1:-1]
    history = []
    with jax.enable_x64(True):
        dyn = family.dynamics(system, config, schedule=True)
        y0, args = family.initial(system, config)
        args = {k: a for k, a in args.items() if not k.startswith("_sched")}
        args = {**args, "_sched_edges": edges}
        if batch:
            args["_per_sample"] = np.float64(1.0)
        solver = family.solve_options(config)["solver"]

        def unpack(theta):
            """Learning rates and batch sizes of the pieces from the optimised variables."""
            if not batch:
                return jnp.exp(theta), None
            return jnp.exp(theta[:pieces]), jnp.minimum(1.0 + jnp.exp(theta[pieces:]), max_batch)

        @jax.jit
        def loss_and_grad(theta, y0, args):
            def f(th):
                eta, bsz = unpack(th)
                a = {**args, "_sched_values": eta}
                if batch:
                    a["_sched_batch"] = bsz
                value, info = _runner.final_value(
                    dyn.vector_field,
                    dyn.risk,
                    y0,
                    a,
                    t1=horizon,
                    observable="final",
                    solver=solver,
                    rtol=rtol,
                    atol=atol,
                    max_steps=max_steps,
                    schedule=dyn.schedule,
                )
                return jnp.where(info["ok"], value, jnp.inf)  # a stopped solve: no descent

            return jax.value_and_grad(f)(theta)

        opt = optax.adam(learning_rate)
        theta = jnp.full(pieces, math.log(best_lr))
        if batch:  # start from the configured batch size (1 + e^phi, phi >= log 1e-2)
            theta = jnp.concatenate([theta, jnp.full(pieces, math.log(max(b0 - 1.0, 1e-2)))])
        state = opt.init(theta)
        best_theta, best_loss = theta, np.inf
        interrupted = None
        try:
            for it in range(steps):
                loss, g = loss_and_grad(theta, y0, args)
                loss = float(loss)
                if not math.isfinite(loss) or not bool(jnp.all(jnp.isfinite(g))):
                    break
                history.append(loss)
                if loss < best_loss:
                    best_loss, best_theta = loss, theta
                if progress is not None:
                    progress(it, loss)
                updates, state = opt.update(g, state)
                theta = optax.apply_updates(theta, updates)
        except KeyboardInterrupt:
            if not interruptible:
                raise
            interrupted = f"during the optimisation (after {len(history)} of {steps} steps)"
            if not history:  # no step finished: the best constant rate, as a schedule
                best_loss = best_risk
    eta_best, b_best = unpack(best_theta)
    eta_best = np.asarray(eta_best, np.float64)
    extra = {}
    if batch:
        b_best = np.asarray(b_best, np.float64)
        # the pieces in time t: piece k lasts (horizon / pieces) / B_k
        t_edges = np.cumsum(horizon / pieces / b_best)[:-1]
        extra = {
            "batch_schedule": Schedule(edges=t_edges, values=b_best),
            "sample_edges": edges.tolist(),
            "t_final": float(np.sum(horizon / pieces / b_best)),
            "sample_budget_per_dimension": horizon,
        }
        edges = t_edges
    schedule = Schedule(edges=edges, values=eta_best)
    return {
        **extra,
        "schedule": schedule,
        "parameter": family.schedule_param,
        "risk_optimised": float(best_loss),
        "best_constant_lr": best_lr,
        "risk_best_constant": best_risk,
        "constant_grid": grid.tolist(),
        "constant_grid_risk": [None if not math.isfinite(x) else float(x) for x in final],
        "history": history,
        **({"interrupted": interrupted} if interrupted else {}),
    }
