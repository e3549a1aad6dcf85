r"""The one diffrax runner of every family: controller, guards, events, save times, outcomes.

Every solve of every family -- ``solve``, the batches of ``sweep``, the differentiated solves of
``grad`` and of schedule optimisation -- goes through :func:`build_run` (save at times) or
:func:`final_value` (differentiable value at ``t1``). A family supplies only a vector field
``vf(t, y, args)`` and a risk ``risk(y, args)`` over pytrees of arrays.

Guards, the same everywhere:

* the step-size controller (:class:`Controller`) rejects and shrinks a trial step whose error
  estimate is not finite (diffrax would otherwise turn it into a NaN step size);
* a step below :data:`MIN_STEP_FRACTION` of the time span stops the solve (a right-hand side that
  is not finite while the state is makes every step fail);
* an event stops the solve when the state or the risk is not finite or exceeds its bound
  (``args["_state_bound"]``, ``args["_risk_bound"]``) -- divergence -- and, optionally, when every
  ``|d state/dt|`` falls below ``args["_steady_tol"]``;
* a step collapse after a finite-time blow-up (:data:`BLOW_UP_GROWTH`) counts as divergence.

The compiled computations contain no host callbacks (``throw=False``: the outcome is read from
``sol.result`` afterwards), so their executables can be stored by JAX's persistent compilation
cache and their traced form exported (:mod:`hildlimits._pipeline.export`).

Outcomes are :class:`RunStatus` values: ``str`` subclasses rendering today's strings (``"ok"``,
``"diverged at t=..."``, ``"steady state at t=..."``) with a :class:`Status` ``kind`` and the time.
"""

from __future__ import annotations

import enum

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from hildlimits._errors import ConfigError, DivergedError, SolveError
from hildlimits._pipeline.validators import positive as _check_positive

SOLVERS = {"tsit5": diffrax.Tsit5, "dopri5": diffrax.Dopri5, "dopri8": diffrax.Dopri8}

MIN_STEP_FRACTION = 1e-13
"""Smallest step, relative to the time span, before a solve stops as failed."""

BLOW_UP_GROWTH = 10.0
"""A solve whose step size collapsed while the largest state entry grew by more than this factor
since ``t = 0`` and the risk by more than ``BLOW_UP_GROWTH**2`` counts as diverged: a finite-time
blow-up (e.g. a cubic student, whose ``dQ/dt`` grows faster than ``Q``) outruns the steps before
it reaches ``divergence_bound``."""


# ----------------------------------------------------------------------------- outcomes


class Status(enum.Enum):
    """How a run ended."""

    OK = "ok"
    DIVERGED = "diverged"
    STEADY = "steady state"
    MAX_STEPS = "max_steps reached"
    FAILED = "solver failed"
    INTERRUPTED = "interrupted"
    INVALID = "invalid"
    NOT_RUN = "not run"


class RunStatus(str):
    """A run's outcome: a ``str`` (today's JSON strings: ``"ok"``, ``"diverged at t=1.5"``, ...)
    that also carries its :class:`Status` ``kind`` and stopping time ``t`` (``None`` if none).

    Example:
        >>> s = RunStatus.of(Status.DIVERGED, 1.5)
        >>> s, s.kind is Status.DIVERGED, s.diverged
        ('diverged at t=1.5', True, True)
    """

    kind: Status
    t: float | None

    def __new__(cls, text: str, kind: Status, t: float | None = None):
        obj = super().__new__(cls, text)
        obj.kind, obj.t = kind, t
        return obj

    @classmethod
    def of(cls, kind: Status, t: float | None = None, detail: str = "") -> RunStatus:
        if kind is Status.OK:
            return cls("ok", kind)
        text = kind.value
        if t is not None:
            text += f" at t={t:.6g}"
        if detail:
            text += (": " if kind is Status.INVALID else " ") + detail
        return cls(text, kind, t)

    @classmethod
    def diverged_at_step(cls, step: int, t: float) -> RunStatus:
        """A simulation's divergence: ``"diverged at step s (t=...)"``."""
        return cls(f"diverged at step {step} (t={t:.6g})", Status.DIVERGED, t)

    @classmethod
    def parse(cls, text: str) -> RunStatus:
        """The status of a string written by :meth:`of` (e.g. read back from a partial file)."""
        if isinstance(text, RunStatus):
            return text
        for kind in Status:
            if (
                text == kind.value
                or text.startswith(kind.value + " ")
                or (text.startswith(kind.value + ":"))
            ):
                t = None
                for marker in (" at t=", "(t="):
                    if marker in text:
                        try:
                            t = float(text.split(marker, 1)[1].split()[0].rstrip(")"))
                        except ValueError:
                            t = None
                return cls(text, kind, t)
        return cls(text, Status.FAILED)

    @property
    def ok(self) -> bool:
        return self.kind is Status.OK

    @property
    def diverged(self) -> bool:
        return self.kind is Status.DIVERGED


# ----------------------------------------------------------------------------- options


def check_solve_options(
    *, t1, n_save, spacing, t_first, rtol, atol, solver, max_steps, divergence_bound, steady_state
):
    """Validate the solve options; raises :class:`ConfigError` naming the ``solve.*`` key."""
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
    if solver not in SOLVERS:
        raise ConfigError(f"solve.solver must be one of {sorted(SOLVERS)}, got {solver!r}")
    _check_positive("solve.max_steps", max_steps, integer=True)
    _check_positive("solve.divergence_bound", divergence_bound)
    if steady_state is not None:
        _check_positive("solve.steady_state", steady_state)


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


def bounds(y0: dict, *, divergence_bound: float, steady_state: float | None = None, extra=()):
    """The guard entries of ``args``: state bound ``divergence_bound * (1 + max|y0|, extra|)``,
    risk bound, steady-state tolerance (float64 scalars)."""
    f64 = np.float64
    arrays = [np.asarray(a) for a in jax.tree.leaves(y0)] + [np.asarray(a) for a in extra]
    scale = 1.0 + max((float(np.abs(a).max()) for a in arrays if a.size), default=0.0)
    return {
        "_state_bound": f64(divergence_bound * scale),
        "_risk_bound": f64(divergence_bound),
        "_steady_tol": f64(steady_state if steady_state is not None else 0.0),
    }


# ----------------------------------------------------------------------------- controller


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


def step_controller(t0, t1, rtol, atol, jump_ts=None):
    """The step-size controller of every solve on ``[t0, t1]``. A step below
    :data:`MIN_STEP_FRACTION` of the time span makes no progress in float64: the solve stops there
    (a non-finite right-hand side makes every step fail, which would otherwise run through
    ``max_steps`` rejected steps). ``jump_ts``: times the steps land on exactly (schedule edges)."""
    dtmin = MIN_STEP_FRACTION * jnp.maximum(jnp.abs(t1 - t0), 1.0)
    controller = Controller(rtol=rtol, atol=atol, dtmin=dtmin, force_dtmin=False)
    if jump_ts is not None:
        controller = diffrax.ClipStepSizeController(controller, jump_ts=jump_ts)
    return controller


def scheduled(vf, apply):
    """``vf`` with one parameter piecewise constant in time: ``apply(args, value)`` sets it to
    ``args["_sched_values"][k]`` on ``[args["_sched_edges"][k-1], args["_sched_edges"][k])``."""

    def vf_s(t, y, args):
        idx = jnp.searchsorted(args["_sched_edges"], t, side="right")
        return vf(t, y, apply(args, args["_sched_values"][idx]))

    return vf_s


def _max_abs(tree):
    return jnp.max(jnp.stack([jnp.max(jnp.abs(x)) for x in jax.tree.leaves(tree)]))


def _diverged_event(risk_fn, risk_event: bool):
    def diverged(t, y, args, **kwargs):
        leaves = jax.tree.leaves(y)
        finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))
        bad = (~finite) | (_max_abs(y) > args["_state_bound"])
        if risk_event:
            r = risk_fn(y, args)
            bad = bad | (~jnp.isfinite(r)) | (r > args["_risk_bound"])
        return bad

    return diverged


# ----------------------------------------------------------------------------- runs


def build_run(
    vf,
    risk_fn,
    *,
    solver: str,
    max_steps: int,
    steady: bool = False,
    schedule=None,
    risk_event: bool = True,
    risk_map: bool = False,
):
    """The (un-jitted) solve ``run(y0, args, ts, rtol, atol) -> dict`` for these static options.

    ``schedule``: ``apply(args, value)`` (see :func:`scheduled`); ``args["_sched_edges"]``
    (increasing times) and ``args["_sched_values"]`` (one more value) then make that parameter
    piecewise constant in time, and the controller steps exactly onto the edges.
    ``risk_event``: the divergence event also checks the risk (one risk evaluation per step).
    ``risk_map``: evaluate the risk at the save times with ``lax.map`` (memory of one state at a
    time) instead of ``vmap``.
    """
    field = scheduled(vf, schedule) if schedule is not None else vf
    diverged = _diverged_event(risk_fn, risk_event)

    def stationary(t, y, args, **kwargs):
        return _max_abs(field(t, y, args)) < args["_steady_tol"]

    event = diffrax.Event((diverged, stationary) if steady else diverged)

    def run(y0, args, ts, rtol, atol):
        jumps = None
        if schedule is not None and args["_sched_edges"].shape[0] > 0:  # static shape
            jumps = args["_sched_edges"]
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(field),
            SOLVERS[solver](),
            t0=ts[0],
            t1=ts[-1],
            dt0=None,
            y0=y0,
            args=args,
            saveat=diffrax.SaveAt(subs=(diffrax.SubSaveAt(ts=ts), diffrax.SubSaveAt(t1=True))),
            stepsize_controller=step_controller(ts[0], ts[-1], rtol, atol, jumps),
            event=event,
            max_steps=max_steps,
            throw=False,
        )
        ts_all = jnp.concatenate([sol.ts[0], sol.ts[1]])  # save times, then the stopping time
        ys = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), sol.ys[0], sol.ys[1])
        if risk_map:
            risks = jax.lax.map(lambda y: risk_fn(y, args), ys)
        else:
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


def compiled(cache: dict, key: tuple, make, *, batched: bool = False, export_key=None):
    """``jax.jit`` of ``make()`` (a :func:`build_run` function), cached in ``cache`` under
    ``key``; ``batched``: ``vmap`` over ``y0`` and ``args``.

    ``export_key``: what identifies the computation across processes (JSON-able: e.g. the
    derivation key and the static options; or a function returning it, called only when
    needed). Where the export cache is on (:mod:`hildlimits._pipeline.export`, the command line), the run
    is then loaded from it instead of traced, or traced, exported and stored there on its first
    call (the arguments' shapes and dtypes, platform and versions complete the key)."""
    key = ("run", *key, batched)
    if key not in cache:

        def build():
            run = make()
            return jax.vmap(run, in_axes=(0, 0, None, None, None)) if batched else run

        from hildlimits._pipeline import export as _export

        if export_key is not None and _export.enabled():
            parts = export_key() if callable(export_key) else export_key
            cache[key] = _export.ExportedRun(build, {"run": parts, "batched": batched})
        else:
            cache[key] = jax.jit(build())
    return cache[key]


def compiled_dynamics(dyn, *, solver: str, max_steps: int, steady=False, batched=False):
    """:func:`compiled` run of a family's :class:`~hildlimits._families.Dynamics` (its vector
    field, risk, schedule hook and risk options), cached in ``dyn.cache``."""
    scheduled_run = dyn.schedule is not None
    return compiled(
        dyn.cache,
        (*dyn.key, solver, max_steps, steady, scheduled_run),
        lambda: build_run(
            dyn.vector_field,
            dyn.risk,
            solver=solver,
            max_steps=max_steps,
            steady=steady,
            schedule=dyn.schedule,
            risk_event=dyn.risk_event,
            risk_map=dyn.risk_map,
        ),
        batched=batched,
    )


def blew_up(out) -> bool:
    """Whether a failed solve stopped on a finite-time blow-up (see :data:`BLOW_UP_GROWTH`)."""
    ys = out["ys"]
    leaves = [np.asarray(a, np.float64) for a in jax.tree.leaves(ys)]
    last = [a[-1] for a in leaves]
    if not all(np.isfinite(a).all() for a in last):
        return True
    first = max(float(np.abs(a[0]).max()) for a in leaves)
    grown = max(float(np.abs(a).max()) for a in last) > BLOW_UP_GROWTH * first
    r0, r1 = (float(np.asarray(out["risk"])[i]) for i in (0, -1))
    return grown and not r1 <= BLOW_UP_GROWTH**2 * abs(r0)


def status_of(out) -> RunStatus:
    """Outcome of one run output (:func:`build_run`)."""
    t_stop = float(np.asarray(out["ts"])[-1])
    if bool(out["max_steps"]):
        return RunStatus.of(Status.MAX_STEPS, t_stop)
    if bool(out["event"]):
        kind = Status.DIVERGED if bool(out["diverged"]) else Status.STEADY
        return RunStatus.of(kind, t_stop)
    if not bool(out["ok"]):
        return RunStatus.of(Status.DIVERGED if blew_up(out) else Status.FAILED, t_stop)
    return RunStatus.of(Status.OK)


def check_stop(out, t1: float, max_steps: int) -> RunStatus:
    """The outcome of a run; raises :class:`SolveError` for one that ran out of steps, or whose
    step size collapsed without a blow-up."""
    status = status_of(out)
    if status.kind is Status.MAX_STEPS:
        raise SolveError(
            f"the solver used its budget of max_steps={max_steps} steps and stopped at "
            f"t={status.t:.6g} before t1={t1:g}: increase solve.max_steps, or loosen rtol/atol"
        )
    if status.kind is Status.FAILED:
        raise SolveError(
            f"the solver failed at t={status.t:.6g}: the step size collapsed below "
            f"{MIN_STEP_FRACTION:g} of the time span (a right-hand side that is not finite, or "
            "dynamics too stiff for the solver)"
        )
    return status


def kept_rows(out, status: RunStatus) -> np.ndarray:
    """Rows of a run output to keep: the save times reached, plus the stopping state after an
    early stop; rows with a non-finite state are dropped."""
    ts = np.asarray(out["ts"])
    if status.ok:
        rows = np.arange(len(ts) - 1)
    else:
        rows = np.concatenate([np.nonzero(ts[:-1] < float(ts[-1]))[0], [len(ts) - 1]])
    finite = np.ones(len(rows), bool)
    for leaf in jax.tree.leaves(out["ys"]):
        a = np.asarray(leaf)[rows]
        finite &= np.isfinite(a.reshape(len(rows), -1)).all(axis=1)
    return rows[finite]


def run_once(run, y0, args, ts, *, rtol, atol):
    """Call a compiled run in float64 and fetch its output."""
    with jax.enable_x64(True):
        return jax.device_get(
            run(y0, args, jnp.asarray(ts), jnp.asarray(float(rtol)), jnp.asarray(float(atol)))
        )


# ----------------------------------------------------------------------------- differentiable


OBSERVABLES = ("final", "mean")


def final_value(
    vf,
    risk_fn,
    y0,
    args,
    *,
    t1: float,
    observable: str,
    solver: str,
    rtol: float,
    atol: float,
    max_steps: int,
    schedule=None,
):
    """The risk at ``t1`` (``observable="final"``) or its time average on ``[0, t1]``
    (``"mean"``, trapezoidal rule on 401 points), differentiable by reverse mode
    (``RecursiveCheckpointAdjoint``), with the same controller and guards as :func:`build_run`.

    ``args`` must hold the guard bounds (:func:`bounds`): divergence stops the solve as in
    :func:`build_run`. Returns ``(value, info)``; ``info`` holds ``ok`` / ``max_steps`` /
    ``event`` flags and ``t_stop`` (read them with :func:`check_differentiated`).
    """
    field = scheduled(vf, schedule) if schedule is not None else vf
    jumps = args["_sched_edges"] if schedule is not None and args["_sched_edges"].shape[0] else None
    ts = jnp.linspace(0.0, t1, 401) if observable == "mean" else None
    saveat = diffrax.SaveAt(ts=ts, t1=True) if ts is not None else diffrax.SaveAt(t1=True)
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(field),
        SOLVERS[solver](),
        t0=0.0,
        t1=t1,
        dt0=None,
        y0=y0,
        args=args,
        saveat=saveat,
        stepsize_controller=step_controller(0.0, t1, rtol, atol, jumps),
        event=diffrax.Event(_diverged_event(risk_fn, True)),
        max_steps=max_steps,
        throw=False,
    )
    risks = jax.vmap(lambda y: risk_fn(y, args))(sol.ys)
    if observable == "mean":
        value = jnp.trapezoid(risks[:-1], ts) / t1
    else:
        value = risks[-1]
    info = {
        "ok": sol.result == diffrax.RESULTS.successful,
        "max_steps": sol.result == diffrax.RESULTS.max_steps_reached,
        "event": sol.result == diffrax.RESULTS.event_occurred,
        "t_stop": sol.ts[-1],
        "final": risks[-1],
    }
    return value, info


def check_differentiated(value, grads, info, *, t1: float, max_steps: int) -> None:
    """Raise :class:`SolveError` naming the time for a differentiated solve that did not reach
    ``t1`` (divergence, step collapse, step budget) or gave non-finite values."""
    info = jax.device_get(info)
    t_stop = float(np.asarray(info["t_stop"]))
    if bool(info["max_steps"]):
        raise SolveError(
            f"the differentiated solve used its budget of max_steps={max_steps} steps and "
            f"stopped at t={t_stop:.6g} before t1={t1:g}: the dynamics diverge, or increase "
            "--max-steps"
        )
    if bool(info["event"]):
        raise DivergedError(
            f"the dynamics diverged at t={t_stop:.6g} (the state or the risk left its bound): "
            "no gradient at t1; lower the learning rate or t1"
        )
    if not bool(info["ok"]):
        raise SolveError(
            f"the differentiated solve failed at t={t_stop:.6g}: the step size collapsed below "
            f"{MIN_STEP_FRACTION:g} of the time span (a right-hand side that is not finite, or "
            "a finite-time blow-up)"
        )
    finite = np.isfinite(value) and all(
        np.all(np.isfinite(np.asarray(g))) for g in jax.tree.leaves(grads)
    )
    if not finite or not np.isfinite(float(np.asarray(info["final"]))):
        raise SolveError(
            f"the differentiated solve produced non-finite values by t={t_stop:.6g} (diverging "
            "dynamics)"
        )
