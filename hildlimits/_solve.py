r"""Integration of a derived system with diffrax (adaptive, float64) into a :class:`Trajectory`.

Accuracy: the default tolerances (``rtol=1e-10``, ``atol=1e-12`` on the state) give a relative
error on the risk of ~1e-9..1e-8 along trajectories that stay away from unstable fixed points.
Escaping an unstable plateau (e.g. the symmetric plateau of ``K = M = 2`` erf) *amplifies* every
earlier error exponentially: there even ``rtol=1e-10`` leaves ~1e-4 relative error on the risk
after the escape (the escape time itself is shifted); tighten ``rtol``/``atol`` (down to ~1e-12 in
float64) where the escape time matters.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from ._errors import ConfigError, SolveError
from ._model import Hyperparams, Overlaps

_SOLVERS = {"tsit5": diffrax.Tsit5, "dopri5": diffrax.Dopri5, "dopri8": diffrax.Dopri8}


class Controller(diffrax.PIDController):
    """:class:`diffrax.PIDController` that treats a non-finite error estimate as an infinite one.

    diffrax turns a NaN error estimate (a trial step that left the region where the vector field
    is finite) into a NaN step size, after which every step is rejected until ``max_steps`` runs
    out; an infinite error instead rejects the step and shrinks it by ``factormin``. (Seen on the
    first step of a cubic student at a large learning rate: diffrax's first trial step, 0.01,
    overshoots a blow-up at t = 4.5e-4.)"""

    def adapt_step_size(self, t0, t1, y0, y1_candidate, args, y_error, error_order, state):
        y_error = jax.tree.map(lambda e: jnp.where(jnp.isfinite(e), e, jnp.inf), y_error)
        # (an infinite candidate would make the error scale infinite too: inf / inf = NaN)
        y1_candidate = jax.tree.map(lambda a, b: jnp.where(jnp.isfinite(b), b, a), y0, y1_candidate)
        return super().adapt_step_size(t0, t1, y0, y1_candidate, args, y_error, error_order, state)


@dataclass(frozen=True, eq=False)
class Trajectory:
    """Solution of the order-parameter ODEs at the save times (immutable; arrays are read-only).

    Attributes:
        t: save times, shape ``(n,)`` (only times the solver reached).
        Q: ``(n, K, K)``; R: ``(n, K, M)``; v: ``(n, K)`` (constant if the layer is fixed).
        T: ``(M, M)`` teacher overlaps; v_teacher: ``(M,)``.
        risk: ``(n,)`` generalisation error ``(1/2) E[(yhat - f*)^2]``.
        status: ``"ok"``, ``"diverged at t=..."`` or ``"steady state at t=..."``.
        t_stop: time at which integration stopped (``t1`` unless an event fired).
        num_steps: accepted solver steps.
    """

    t: np.ndarray
    Q: np.ndarray
    R: np.ndarray
    v: np.ndarray
    T: np.ndarray
    v_teacher: np.ndarray
    risk: np.ndarray
    status: str
    t_stop: float
    num_steps: int
    hyper: Hyperparams
    system: object = field(repr=False)

    @property
    def diverged(self) -> bool:
        return self.status.startswith("diverged")

    def observable(self, what) -> np.ndarray:
        """An observable along the trajectory.

        Args:
            what: the name of a derived observable (``system.observable_names``), or a callable
                ``f(Q, R, v, T, v_teacher) -> array`` applied at every save time.
        """
        if callable(what):
            return np.stack([np.asarray(what(*s)) for s in self._states()])
        if what == "risk":
            return self.risk
        names = self.system.observable_names
        if what not in names:
            raise ValueError(f"observable must be one of {names} or a callable, got {what!r}")
        fn = getattr(self.system.module, what)
        with jax.enable_x64(True):
            vals = []
            for q, r, v in zip(self.Q, self.R, self.v, strict=True):
                state = Overlaps(Q=q, R=r, T=self.T, v=v, v_teacher=self.v_teacher, _checked=True)
                vals.append(fn(*problem(self.system, state, self.hyper)))
            return np.asarray(vals)

    def _states(self):
        for q, r, v in zip(self.Q, self.R, self.v, strict=True):
            yield q, r, v, self.T, self.v_teacher

    def to_dict(self) -> dict:
        """JSON-ready dict (keys ``t``, ``risk``, ``Q``, ``R``, ``v``, ``T``, ``status``, ...)."""
        return {
            "t": self.t.tolist(),
            "risk": self.risk.tolist(),
            "Q": self.Q.tolist(),
            "R": self.R.tolist(),
            "v": self.v.tolist(),
            "T": self.T.tolist(),
            "v_teacher": self.v_teacher.tolist(),
            "status": self.status,
            "t_stop": self.t_stop,
            "num_steps": self.num_steps,
        }


def resolve_save_times(*, ts, t1, n_save, spacing, t_first, who: str, **options) -> np.ndarray:
    """Validate the save times (explicit ``ts``, or ``t1``/``n_save``/``spacing``/``t_first``) and
    the solver ``options`` (see :func:`check_solve_options`); return the save times."""
    if ts is not None:
        ts = np.asarray(ts, dtype=np.float64)
        if (
            ts.ndim != 1
            or len(ts) < 2
            or not np.all(np.isfinite(ts))
            or ts[0] < 0
            or np.any(np.diff(ts) <= 0)
        ):
            raise ConfigError(f"ts must be at least two increasing finite times >= 0, got {ts!r}")
        t1, n_save, t_first = float(ts[-1]), len(ts), None
    elif t1 is None:
        raise ConfigError(f"{who} needs t1 (or explicit save times ts)")
    check_solve_options(t1=t1, n_save=n_save, spacing=spacing, t_first=t_first, **options)
    return ts if ts is not None else save_times(float(t1), int(n_save), spacing, t_first)


def save_times(t1: float, n_save: int, spacing: str, t_first: float | None = None) -> np.ndarray:
    """``n_save`` save times from 0 to ``t1``: linear, or 0 followed by log-spaced times from
    ``t_first`` (default ``t1 * 1e-4``, at most 0.1) to ``t1``."""
    if spacing == "linear":
        return np.linspace(0.0, t1, n_save)
    if n_save == 2:
        return np.array([0.0, t1])
    if t_first is None:
        t_first = min(0.1, t1 * 1e-4)
    return np.concatenate([[0.0], np.geomspace(t_first, t1, n_save - 1)])


def _check_positive(name, value, *, integer=False):
    ok = isinstance(value, numbers.Integral) if integer else isinstance(value, numbers.Real)
    if isinstance(value, bool) or not ok or not math.isfinite(value) or value <= 0:
        kind = "a positive integer" if integer else "a positive finite number"
        raise ConfigError(f"{name} must be {kind}, got {value!r}")


def check_solve_options(
    *, t1, n_save, spacing, t_first, rtol, atol, solver, max_steps, divergence_bound, steady_state
):
    """Validate :func:`solve`'s options; raises :class:`ConfigError` naming the ``solve.*`` key."""
    _check_positive("solve.t1", t1)
    _check_positive("solve.n_save", n_save, integer=True)
    if n_save < 2:
        raise ConfigError(f"solve.n_save must be at least 2, got {n_save!r}")
    if spacing not in ("log", "linear"):
        raise ConfigError(f"solve.spacing must be 'log' or 'linear', got {spacing!r}")
    if t_first is not None:
        _check_positive("solve.t_first", t_first)
        if t_first >= t1:
            raise ConfigError(f"solve.t_first must be smaller than solve.t1={t1}, got {t_first!r}")
    for name, tol in (("solve.rtol", rtol), ("solve.atol", atol)):
        _check_positive(name, tol)
    if solver not in _SOLVERS:
        raise ConfigError(f"solve.solver must be one of {sorted(_SOLVERS)}, got {solver!r}")
    _check_positive("solve.max_steps", max_steps, integer=True)
    _check_positive("solve.divergence_bound", divergence_bound)
    if steady_state is not None:
        _check_positive("solve.steady_state", steady_state)


def scheduled_vector_field(module):
    """The generated vector field with ``eta`` piecewise constant in time:
    ``args["_sched_values"][k]`` on ``[args["_sched_edges"][k-1], args["_sched_edges"][k])``."""

    def vf(t, y, args):
        idx = jnp.searchsorted(args["_sched_edges"], t, side="right")
        return module.vector_field(t, y, {**args, "eta": args["_sched_values"][idx]})

    return vf


def _build(
    system,
    K: int,
    M: int,
    n_save: int,
    solver: str,
    max_steps: int,
    steady: bool,
    schedule: bool = False,
):
    """The (un-jitted) solve ``run(y0, args, ts, rtol, atol) -> dict`` for these static options.

    With ``schedule``, ``args["_sched_edges"]`` (increasing times) and ``args["_sched_values"]``
    (one more value) make the first-layer learning rate piecewise constant in time, and the
    step-size controller steps exactly onto the edges.
    """
    module = system.module
    risk_fn = module.risk
    vf = scheduled_vector_field(module) if schedule else module.vector_field

    def diverged(t, y, args, **kwargs):
        leaves = jax.tree.leaves(y)
        finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))
        big = jnp.max(jnp.stack([jnp.max(jnp.abs(x)) for x in leaves])) > args["_state_bound"]
        r = risk_fn(y, args)
        return (~finite) | big | (~jnp.isfinite(r)) | (r > args["_risk_bound"])

    def stationary(t, y, args, **kwargs):
        dy = vf(t, y, args)
        size = jnp.max(jnp.stack([jnp.max(jnp.abs(x)) for x in jax.tree.leaves(dy)]))
        return size < args["_steady_tol"]

    event = diffrax.Event((diverged, stationary) if steady else diverged)

    def run(y0, args, ts, rtol, atol):
        controller = step_controller(ts, rtol, atol)
        if (
            schedule and args["_sched_edges"].shape[0] > 0
        ):  # static: a constant schedule has no jumps
            controller = diffrax.ClipStepSizeController(controller, jump_ts=args["_sched_edges"])
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(vf),
            _SOLVERS[solver](),
            t0=ts[0],
            t1=ts[-1],
            dt0=None,
            y0=y0,
            args=args,
            saveat=diffrax.SaveAt(subs=(diffrax.SubSaveAt(ts=ts), diffrax.SubSaveAt(t1=True))),
            stepsize_controller=controller,
            event=event,
            max_steps=max_steps,
            throw=False,
        )
        ts_all = jnp.concatenate([sol.ts[0], sol.ts[1]])  # save times, then the stopping time
        ys = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), sol.ys[0], sol.ys[1])
        risks = jax.vmap(lambda y: risk_fn(y, args))(ys)
        mask = sol.event_mask if steady else (sol.event_mask, jnp.asarray(False))
        return {
            "ts": ts_all,
            "ys": ys,
            "risk": risks,
            "event": sol.result == diffrax.RESULTS.event_occurred,
            "ok": sol.result == diffrax.RESULTS.successful,
            "max_steps": sol.result == diffrax.RESULTS.max_steps_reached,
            "diverged": mask[0],
            "steady": mask[1],
            "num_steps": sol.stats["num_steps"],
        }

    return run


def solve(
    system,
    *,
    init: Overlaps,
    hyper: Hyperparams,
    t1: float | None = None,
    n_save: int = 200,
    spacing: str = "log",
    t_first: float | None = None,
    rtol: float = 1e-10,
    atol: float = 1e-12,
    solver: str = "tsit5",
    max_steps: int = 1_000_000,
    divergence_bound: float = 1e8,
    steady_state: float | None = None,
    ts=None,
    lr_schedule=None,
) -> Trajectory:
    r"""Integrate the order-parameter ODEs of ``system`` from ``init`` to ``t1`` in float64.

    Args:
        system: an :class:`~hildlimits.ODESystem` from :func:`~hildlimits.derive`.
        init: initial :class:`~hildlimits.Overlaps` (its ``K``, ``M`` set the sizes).
        hyper: :class:`~hildlimits.Hyperparams` (learning rates, noise, weight decay).
        t1: final time (``t = steps / N``).
        n_save: number of save times, ``t = 0`` included.
        spacing: ``"log"`` (0, then geometric from ``t_first``) or ``"linear"``.
        t_first: first non-zero save time for log spacing (default ``min(0.1, t1 * 1e-4)``).
        rtol, atol: step-size controller tolerances on the state (see the module docstring).
        solver: ``"tsit5"`` (default), ``"dopri5"`` or ``"dopri8"``.
        max_steps: step budget; running out raises :class:`SolveError`.
        divergence_bound: stop with status ``"diverged at t=..."`` when a state entry exceeds
            ``divergence_bound * (1 + max|init|)`` in magnitude, the risk exceeds
            ``divergence_bound``, or anything becomes non-finite; also when the step size
            collapses during a finite-time blow-up (state and risk grown by the factors of
            :data:`BLOW_UP_GROWTH`) before those bounds are reached.
        steady_state: if given, stop with status ``"steady state at t=..."`` once every entry of
            ``d(state)/dt`` is below this value in magnitude.
        ts: explicit save times (increasing, from 0 or later); overrides ``t1``, ``n_save``,
            ``spacing`` and ``t_first`` (used to match a simulation's times).
        lr_schedule: a :class:`~hildlimits.Schedule`: the first-layer learning rate becomes
            piecewise constant in time (``hyper.lr`` is then ignored); the solver steps onto its
            edges exactly.

    Returns:
        :class:`Trajectory` (rows after an early stop are dropped; the stopping state is the
        last row).

    Raises:
        ConfigError: invalid options. SolveError: the step budget ran out, or the step size
        collapsed without a blow-up (a right-hand side that is not finite, or stiff dynamics).

    Example:
        >>> import hildlimits as hl
        >>> model = hl.Committee(K=2, M=2, activation="erf")
        >>> init = hl.Overlaps.for_model(model, Q=[[1, 0], [0, 1]], R=[[0.1, 0], [0, 0.1]],
        ...                             T=[[1, 0], [0, 1]])
        >>> traj = hl.solve(hl.derive(model), init=init, hyper=hl.Hyperparams(lr=0.5), t1=10.0)
        >>> traj.risk.shape
        (200,)
    """
    if not isinstance(init, Overlaps):
        raise TypeError(f"init must be hildlimits.Overlaps, got {type(init).__name__}")
    if not isinstance(hyper, Hyperparams):
        raise TypeError(f"hyper must be hildlimits.Hyperparams, got {type(hyper).__name__}")
    ts = resolve_save_times(
        ts=ts,
        t1=t1,
        n_save=n_save,
        spacing=spacing,
        t_first=t_first,
        rtol=rtol,
        atol=atol,
        solver=solver,
        max_steps=max_steps,
        divergence_bound=divergence_bound,
        steady_state=steady_state,
        who="solve",
    )
    with jax.enable_x64(True):
        run = compiled(
            system,
            init.K,
            init.M,
            len(ts),
            solver,
            max_steps,
            steady_state is not None,
            schedule=lr_schedule is not None,
        )
        y0, args = problem(
            system, init, hyper, divergence_bound=divergence_bound, steady_state=steady_state
        )
        if lr_schedule is not None:
            args["_sched_edges"] = np.asarray(lr_schedule.edges, np.float64)
            args["_sched_values"] = np.asarray(lr_schedule.values, np.float64)
        out = jax.device_get(
            run(y0, args, jnp.asarray(ts), jnp.asarray(float(rtol)), jnp.asarray(float(atol)))
        )
    return _trajectory(system, init, hyper, out, float(ts[-1]), max_steps)


MIN_STEP_FRACTION = 1e-13
"""Smallest step, relative to the time span, before a solve stops as failed."""


def step_controller(ts, rtol, atol) -> Controller:
    """The step-size controller of the committee and mean-field solves over the save times
    ``ts``. A step below :data:`MIN_STEP_FRACTION` of the time span makes no progress in
    float64: the solve stops there (a non-finite right-hand side makes every step fail, which
    would otherwise run through ``max_steps`` rejected steps)."""
    dtmin = MIN_STEP_FRACTION * jnp.maximum(jnp.abs(ts[-1] - ts[0]), 1.0)
    return Controller(rtol=rtol, atol=atol, dtmin=dtmin, force_dtmin=False)


def compiled(system, K, M, n_save, solver, max_steps, steady, *, batched=False, schedule=False):
    """Jitted solve function for these static options, cached on the system."""
    key = ("solve", K, M, n_save, solver, max_steps, steady, batched, schedule)
    if key not in system._jax:
        run = _build(system, K, M, n_save, solver, max_steps, steady, schedule)
        system._jax[key] = jax.jit(
            jax.vmap(run, in_axes=(0, 0, None, None, None)) if batched else run
        )
    return system._jax[key]


def problem(system, init: Overlaps, hyper: Hyperparams, *, divergence_bound=1e8, steady_state=None):
    """Initial state ``y0`` and ``args`` of the generated vector field (float64 NumPy arrays)."""
    f64 = np.float64
    y0 = {"Q": np.asarray(init.Q, f64), "R": np.asarray(init.R, f64)}
    if system.structure["train_second_layer"]:
        y0["v"] = np.asarray(init.v, f64)
    args = {"T": np.asarray(init.T, f64), "v_teacher": np.asarray(init.v_teacher, f64)}
    args.update({k: f64(x) for k, x in hyper.as_args().items()})
    if not system.structure["train_second_layer"]:
        args["v"] = np.asarray(init.v, f64)
    scale = 1.0 + max(float(np.abs(a).max()) for a in (init.Q, init.R, init.T, init.v))
    args["_state_bound"] = f64(divergence_bound * scale)
    args["_risk_bound"] = f64(divergence_bound)
    args["_steady_tol"] = f64(steady_state if steady_state is not None else 0.0)
    return y0, args


BLOW_UP_GROWTH = 10.0
"""A solve whose step size collapsed while the largest state entry grew by more than this factor
since ``t = 0`` and the risk by more than ``BLOW_UP_GROWTH**2`` counts as diverged: a finite-time
blow-up (e.g. a cubic student, whose ``dQ/dt`` grows faster than ``Q``) outruns the steps before
it reaches ``divergence_bound``."""


def blew_up(out) -> bool:
    """Whether a failed solve stopped on a finite-time blow-up (see :data:`BLOW_UP_GROWTH`)."""
    ys = out["ys"]
    last = [np.asarray(ys[k][-1], np.float64) for k in ys]
    if not all(np.isfinite(a).all() for a in last):
        return True
    first = max(float(np.abs(np.asarray(ys[k][0])).max()) for k in ys)
    grown = max(float(np.abs(a).max()) for a in last) > BLOW_UP_GROWTH * first
    r0, r1 = (float(np.asarray(out["risk"])[i]) for i in (0, -1))
    return grown and not r1 <= BLOW_UP_GROWTH**2 * abs(r0)


def check_stop(out, t1: float, max_steps: int) -> bool:
    """Raise :class:`SolveError` for a solve that ran out of steps, or whose step size collapsed
    without a blow-up; return whether it stopped on a blow-up (:func:`blew_up`)."""
    t_stop = float(np.asarray(out["ts"])[-1])
    if bool(out["max_steps"]):
        raise SolveError(
            f"the solver used its budget of max_steps={max_steps} steps and stopped at "
            f"t={t_stop:.6g} before t1={t1:g}: increase solve.max_steps, or loosen rtol/atol"
        )
    if bool(out["ok"]) or bool(out["event"]):
        return False
    if blew_up(out):
        return True
    raise SolveError(
        f"the solver failed at t={t_stop:.6g}: the step size collapsed below "
        f"{MIN_STEP_FRACTION:g} of the time span (a right-hand side that is not finite, or "
        "dynamics too stiff for the solver)"
    )


def status_of(out) -> str:
    """Status line of one solve output (``"ok"``, ``"diverged at t=..."``, ...)."""
    t_stop = float(np.asarray(out["ts"])[-1])
    if bool(out["max_steps"]):
        return f"max_steps reached at t={t_stop:.6g}"
    if bool(out["event"]):
        return (
            f"diverged at t={t_stop:.6g}"
            if bool(out["diverged"])
            else f"steady state at t={t_stop:.6g}"
        )
    if not bool(out["ok"]):
        return f"diverged at t={t_stop:.6g}" if blew_up(out) else f"solver failed at t={t_stop:.6g}"
    return "ok"


def _trajectory(system, init, hyper, out, t1, max_steps) -> Trajectory:
    ts = np.asarray(out["ts"])
    t_stop = float(ts[-1])
    check_stop(out, t1, max_steps)
    status = status_of(out)
    keep = ts[:-1] < t_stop if status != "ok" else np.ones(len(ts) - 1, bool)
    rows = (
        np.concatenate([np.nonzero(keep)[0], [len(ts) - 1]])
        if status != "ok"
        else np.nonzero(keep)[0]
    )
    ys = out["ys"]
    finite = np.isfinite(ys["Q"][rows]).all(axis=(1, 2)) & np.isfinite(ys["R"][rows]).all(
        axis=(1, 2)
    )
    rows = rows[finite]
    n = len(rows)
    v = ys["v"][rows] if "v" in ys else np.broadcast_to(init.v, (n, init.K))

    def ro(a):
        a = np.array(a, dtype=np.float64)
        a.setflags(write=False)
        return a

    return Trajectory(
        t=ro(ts[rows]),
        Q=ro(ys["Q"][rows]),
        R=ro(ys["R"][rows]),
        v=ro(v),
        T=init.T,
        v_teacher=init.v_teacher,
        risk=ro(out["risk"][rows]),
        status=status,
        t_stop=t_stop,
        num_steps=int(out["num_steps"]),
        hyper=hyper,
        system=system,
    )
