r"""Integration of a derived system with diffrax (adaptive, float64) into a :class:`Trajectory`.

Accuracy: the default tolerances (``rtol=1e-10``, ``atol=1e-12`` on the state) give a relative
error on the risk of ~1e-9..1e-8 along trajectories that stay away from unstable fixed points.
Escaping an unstable plateau (e.g. the symmetric plateau of ``K = M = 2`` erf) *amplifies* every
earlier error exponentially: there even ``rtol=1e-10`` leaves ~1e-4 relative error on the risk
after the escape (the escape time itself is shifted); tighten ``rtol``/``atol`` (down to ~1e-12 in
float64) where the escape time matters.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import jax
import numpy as np

from hildlimits._families.committee.model import Hyperparams, Overlaps
from hildlimits._pipeline import runner as _runner
from hildlimits._pipeline.runner import BLOW_UP_GROWTH as BLOW_UP_GROWTH
from hildlimits._pipeline.runner import MIN_STEP_FRACTION as MIN_STEP_FRACTION
from hildlimits._pipeline.runner import SOLVERS as _SOLVERS  # noqa: F401  (kept importable)
from hildlimits._pipeline.runner import Controller as Controller
from hildlimits._pipeline.runner import RunStatus as RunStatus
from hildlimits._pipeline.runner import check_solve_options as check_solve_options
from hildlimits._pipeline.runner import resolve_save_times as resolve_save_times
from hildlimits._pipeline.runner import save_times as save_times


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
    # with a [data] spectrum: per-bin overlaps (n, B, K, K), (n, B, K, M), (B, M, M) and the bins
    Q_bins: np.ndarray | None = None
    R_bins: np.ndarray | None = None
    T_bins: np.ndarray | None = None
    spectrum: object = None
    # observables other than the risk (``loss``, ``classification_error``), (n,) each
    observables: dict = field(default_factory=dict)

    @property
    def diverged(self) -> bool:
        return RunStatus.parse(self.status).diverged

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
        if what in self.observables:
            return self.observables[what]
        names = self.system.observable_names
        if what not in names:
            raise ValueError(f"observable must be one of {names} or a callable, got {what!r}")
        fn = getattr(self.system.module, what)
        with jax.enable_x64(True):
            vals = []
            for n, (q, r, v) in enumerate(zip(self.Q, self.R, self.v, strict=True)):
                state = Overlaps(Q=q, R=r, T=self.T, v=v, v_teacher=self.v_teacher, _checked=True)
                bins = None
                if self.spectrum is not None:
                    bins = (self.Q_bins[n], self.R_bins[n], self.T_bins)
                vals.append(
                    fn(*problem(self.system, state, self.hyper, spectrum=self.spectrum, bins=bins))
                )
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
            **{name: np.asarray(val).tolist() for name, val in self.observables.items()},
            **(
                {
                    "Q_bins": self.Q_bins.tolist(),
                    "R_bins": self.R_bins.tolist(),
                    "T_bins": self.T_bins.tolist(),
                    "eigenvalues": self.spectrum.eigenvalues.tolist(),
                    "weights": self.spectrum.weights.tolist(),
                    "teacher_weights": self.spectrum.teacher_weights.tolist(),
                }
                if self.spectrum is not None
                else {}
            ),
        }


def _apply_eta(args, value):
    return {**args, "eta": value}


def scheduled_vector_field(module):
    """The generated vector field with ``eta`` piecewise constant in time:
    ``args["_sched_values"][k]`` on ``[args["_sched_edges"][k-1], args["_sched_edges"][k])``."""
    return _runner.scheduled(module.vector_field, _apply_eta)


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
    spectrum=None,
    bins=None,
    batch_schedule=None,
    momentum_schedule=None,
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
        spectrum: the input covariance's bins (:class:`~hildlimits.Spectrum`), required by a
            system derived with ``covariance="spectrum"``; ``init`` then gives the plain overlaps,
            spread over the bins by :func:`~hildlimits.spread_overlaps` unless ``bins`` (per-bin
            ``(Q_b, R_b, T_b)``) is given.
        batch_schedule: a :class:`~hildlimits.Schedule` of the mini-batch size ``B(t)`` (values
            >= 1; needs a system derived with ``minibatch=True``); ``hyper.batch_size`` is then
            ignored. Optimisers (batch, momentum, AdaGrad-Norm, gradient flow) come from
            ``hyper`` (docs/optimisers.md).
        momentum_schedule: a :class:`~hildlimits.Schedule` of the heavy-ball ``beta(t)`` (values
            in ``[0, 1)``; ``hyper.momentum`` is then ignored): the drift is SGD's at
            ``eta(t) / (1 - beta(t))`` pointwise (docs/optimisers.md).

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
            schedule=any(x is not None for x in (lr_schedule, batch_schedule, momentum_schedule)),
        )
        y0, args = problem(
            system,
            init,
            hyper,
            divergence_bound=divergence_bound,
            steady_state=steady_state,
            spectrum=spectrum,
            bins=bins,
        )
        if batch_schedule is not None and not system.structure.get("minibatch"):
            from hildlimits._errors import ConfigError

            raise ConfigError(
                "a batch schedule needs a system derived with minibatch=True "
                "(a config with training.batch_schedule derives it)"
            )
        args = with_batch_schedule(
            args, lr_schedule, batch_schedule, float(args["eta"]), momentum_schedule
        )
        out = _runner.run_once(run, y0, args, ts, rtol=rtol, atol=atol)
        return _trajectory(
            system, init, hyper, out, float(ts[-1]), max_steps, args=args, spectrum=spectrum
        )


def compiled(system, K, M, n_save, solver, max_steps, steady, *, batched=False, schedule=False):
    """Jitted solve function of the committee for these static options, cached on the system
    (the shared runner, :func:`hildlimits._pipeline.runner.build_run`). Unbatched solves carry an export
    key (derivation key, generated source, static options; the runner adds the arguments'
    shapes and dtypes), so that where the export cache is on (the command line) a later process
    loads the traced solve instead of tracing it (:mod:`hildlimits._pipeline.export`)."""
    static = ("committee", "optim-1", solver, max_steps, steady, schedule)

    def make():
        from hildlimits._families.committee import optim

        module = system.module  # (not needed when the exported solve is loaded)
        return _runner.build_run(
            optim.vector_field(module),
            optim.risk(module),
            solver=solver,
            max_steps=max_steps,
            steady=steady,
            schedule=_apply_eta if schedule else None,
            risk_event=getattr(module, "RISK_EVENT", True),
            risk_map=getattr(module, "RISK_MAP", False),
        )

    def export_key():
        import hashlib

        from hildlimits._pipeline.cache import cache_key

        return {
            "derivation": cache_key(system.structure),
            "source": hashlib.sha256(system.source.encode()).hexdigest(),
            "static": list(static),
        }

    return _runner.compiled(
        system._jax, static, make, batched=batched, export_key=None if batched else export_key
    )


def problem(
    system,
    init: Overlaps,
    hyper: Hyperparams,
    *,
    divergence_bound=1e8,
    steady_state=None,
    spectrum=None,
    bins=None,
):
    """Initial state ``y0`` and ``args`` of the generated vector field (float64 NumPy arrays).

    A system derived for a spectrum needs ``spectrum``; its state is then the per-bin overlaps
    ``bins = (Q_b, R_b, T_b)`` (default: ``init`` spread over the bins, :func:`spread_overlaps`)."""
    f64 = np.float64
    spectral = system.structure.get("covariance") == "spectrum"
    if spectral != (spectrum is not None):
        from hildlimits._errors import ConfigError

        raise ConfigError(
            "this system was derived for inputs with a spectrum: give spectrum=..."
            if spectral
            else "a spectrum needs a system derived with covariance='spectrum' (a [data] section)"
        )
    if spectral:
        from hildlimits._pipeline.spectrum import spread_overlaps

        Qb, Rb, Tb = bins if bins is not None else spread_overlaps(spectrum, init.Q, init.R, init.T)
        y0 = {"Q": np.asarray(Qb, f64), "R": np.asarray(Rb, f64)}
        args = {"T": np.asarray(Tb, f64), "v_teacher": np.asarray(init.v_teacher, f64)}
        args["s"] = np.asarray(spectrum.eigenvalues, f64)
        args["p"] = np.asarray(spectrum.weights, f64)
    else:
        y0 = {"Q": np.asarray(init.Q, f64), "R": np.asarray(init.R, f64)}
        args = {"T": np.asarray(init.T, f64), "v_teacher": np.asarray(init.v_teacher, f64)}
    if system.structure["train_second_layer"]:
        y0["v"] = np.asarray(init.v, f64)
    args.update({k: f64(x) for k, x in hyper.as_args().items()})
    _check_optimiser(system, hyper)
    args["_trace"] = f64(
        np.dot(spectrum.eigenvalues, spectrum.weights) if spectral else 1.0
    )  # |x|^2/N
    if hyper.optimizer == "adagrad_norm":
        from hildlimits._families.committee.optim import STATE

        y0[STATE] = f64(hyper.adagrad_b0**2)
    if not system.structure["train_second_layer"]:
        args["v"] = np.asarray(init.v, f64)
    scale = 1.0 + max(
        float(np.abs(a).max()) for a in (y0["Q"], y0["R"], args["T"], np.asarray(init.v))
    )
    args["_state_bound"] = f64(divergence_bound * scale)
    args["_risk_bound"] = f64(divergence_bound)
    args["_steady_tol"] = f64(steady_state if steady_state is not None else 0.0)
    return y0, args


def _check_optimiser(system, hyper: Hyperparams) -> None:
    """The optimiser needs what the derivation provides (``minibatch``, ``adagrad``)."""
    from hildlimits._errors import ConfigError

    st = system.structure
    if (hyper.batch_size != 1 or hyper.gradient_flow) and not st.get("minibatch"):
        raise ConfigError(
            f"training.batch_size = {hyper.batch_size}"
            + (" with training.gradient_flow" if hyper.gradient_flow else "")
            + " needs a system derived with minibatch=True (a config with training.batch_size "
            "or training.gradient_flow derives it)"
        )
    if hyper.optimizer == "adagrad_norm" and not st.get("adagrad"):
        raise ConfigError(
            "training.optimizer = 'adagrad_norm' needs a system derived with adagrad=True "
            "(a config with training.optimizer = 'adagrad_norm' derives it)"
        )


def with_batch_schedule(
    args: dict, lr_schedule, batch_schedule, lr: float, momentum_schedule=None
) -> dict:
    """``args`` with the piecewise-constant learning rate, batch size and momentum on the union
    of the schedules' edges (any may be ``None``; the learning rate is then ``lr``)."""
    from hildlimits._errors import ConfigError

    if batch_schedule is None and momentum_schedule is None:
        if lr_schedule is not None:
            args["_sched_edges"] = np.asarray(lr_schedule.edges, np.float64)
            args["_sched_values"] = np.asarray(lr_schedule.values, np.float64)
        return args
    if batch_schedule is not None and np.any(np.asarray(batch_schedule.values) < 1):
        raise ConfigError(
            f"batch schedule values must be >= 1, got {np.asarray(batch_schedule.values).tolist()}"
        )
    if momentum_schedule is not None:
        beta = np.asarray(momentum_schedule.values, np.float64)
        if np.any((beta < 0) | (beta >= 1)):
            raise ConfigError(f"momentum schedule values must be in [0, 1), got {beta.tolist()}")
    edges = np.zeros(0, np.float64)
    for sched in (lr_schedule, batch_schedule, momentum_schedule):
        if sched is not None:
            edges = np.union1d(edges, np.asarray(sched.edges, np.float64))

    def at(sched, default):
        if sched is None:
            return np.full(len(edges) + 1, default, np.float64)
        # the value on [edges[k-1], edges[k]): the schedule's value just after edges[k-1]
        left = np.concatenate([[-np.inf], edges])
        idx = np.searchsorted(np.asarray(sched.edges), left, side="right")
        return np.asarray(sched.values, np.float64)[idx]

    args["_sched_edges"] = edges
    args["_sched_values"] = at(lr_schedule, lr)
    if batch_schedule is not None:
        args["_sched_batch"] = at(batch_schedule, 1.0)
    if momentum_schedule is not None:
        args["_sched_momentum"] = at(momentum_schedule, 0.0)
    return args


def status_of(out) -> str:
    """Status line of one solve output (``"ok"``, ``"diverged at t=..."``, ...)."""
    return _runner.status_of(out)


def _extra_observables(system, ys: dict, args: dict) -> dict:
    """Observables other than the risk at the saved states (``loss``, ...), one state at a
    time (jitted, cached on the system)."""
    names = tuple(n for n in system.observable_names if n != "risk")
    if not names or not len(next(iter(ys.values()))):
        return {}
    key = ("observables", names)
    if key not in system._jax:
        module = system.module

        def one(y, a):
            return tuple(getattr(module, n)(y, a) for n in names)

        system._jax[key] = jax.jit(lambda ys, a: jax.lax.map(lambda y: one(y, a), ys))
    vals = system._jax[key](ys, args)
    return {n: np.asarray(v, np.float64) for n, v in zip(names, vals, strict=True)}


def _readonly(a) -> np.ndarray:
    """A float64 copy of ``a`` that cannot be written to (the arrays of a :class:`Trajectory`)."""
    a = np.array(a, dtype=np.float64)
    a.setflags(write=False)
    return a


def _trajectory(system, init, hyper, out, t1, max_steps, *, args=None, spectrum=None) -> Trajectory:
    status = _runner.check_stop(out, t1, max_steps)
    rows = _runner.kept_rows(out, status)
    ts, ys = np.asarray(out["ts"]), out["ys"]
    n = len(rows)
    v = ys["v"][rows] if "v" in ys else np.broadcast_to(init.v, (n, init.K))

    kept = {k: np.asarray(a)[rows] for k, a in ys.items()}
    from hildlimits._families.committee.optim import STATE

    b2 = kept.pop(STATE, None)
    extra = _extra_observables(system, kept, args) if args is not None else {}
    if args is not None and (hyper.momentum + (b2 is not None) > 0 or "_sched_momentum" in args):
        # the learning rate the drift sees: eta(t) / ((1 - beta(t)) b)
        eta = np.full(n, hyper.lr)
        beta = np.full(n, hyper.momentum)
        edges = np.asarray(args.get("_sched_edges", ()), np.float64)
        if edges.size:  # schedules: their values at each saved time
            k = np.searchsorted(edges, ts[rows], side="right")
            eta = np.asarray(args["_sched_values"], np.float64)[k]
            if "_sched_momentum" in args:
                beta = np.asarray(args["_sched_momentum"], np.float64)[k]
        eta = eta / (1.0 - beta)
        extra["lr_effective"] = eta / np.sqrt(b2) if b2 is not None else eta
    Q, R, T = kept["Q"], kept["R"], init.T
    binned = {}
    if system.structure.get("covariance") == "spectrum":
        s = np.asarray(args["s"])
        Qb, Rb, Tb = Q, R, np.asarray(args["T"])
        Q = np.einsum("b,nbij->nij", s, Qb)
        R = np.einsum("b,nbij->nij", s, Rb)
        T = np.einsum("b,bij->ij", s, Tb)
        binned = {
            "Q_bins": _readonly(Qb),
            "R_bins": _readonly(Rb),
            "T_bins": _readonly(Tb),
            "spectrum": spectrum,
        }
    return Trajectory(
        t=_readonly(ts[rows]),
        Q=_readonly(Q),
        R=_readonly(R),
        v=_readonly(v),
        T=_readonly(T),
        v_teacher=init.v_teacher,
        risk=_readonly(out["risk"][rows]),
        status=status,
        t_stop=float(ts[-1]),
        num_steps=int(out["num_steps"]),
        hyper=hyper,
        system=system,
        observables={k: _readonly(a) for k, a in extra.items()},
        **binned,
    )


def solve_discrete(
    system,
    *,
    init: Overlaps,
    hyper: Hyperparams,
    N: int,
    method: str = "log",
    t1: float | None = None,
    n_save: int = 200,
    spacing: str = "log",
    t_first: float | None = None,
    divergence_bound: float = 1e8,
    ts=None,
    lr_schedule=None,
    spectrum=None,
    bins=None,
    **ignored,
) -> Trajectory:
    r"""``[solve] time = "discrete"``: the exact finite-``N`` expected dynamics of SGD
    (:func:`hildlimits.expected_sgd`) of the linear ``K = M = 1`` committee with square loss, as a
    :class:`Trajectory` with the keys of :func:`solve` (``Q``, ``R``, ``T`` the field
    covariances; with a spectrum the per-bin overlaps ``Q_bins``, ``R_bins``, ``T_bins``).
    ``num_steps`` counts the recursion's blocks (``method="log"``) or SGD steps (``"exact"``);
    the ODE's options (``rtol``, ``atol``, ``solver``, ``max_steps``, ``steady_state``) are
    ignored. The learning rate, noise, batch size and momentum come from ``hyper``."""
    from hildlimits._engine.recursion import expected_sgd

    if system.structure.get("covariance") == "spectrum" and spectrum is None:
        from hildlimits._errors import ConfigError

        raise ConfigError("this system was derived for inputs with a spectrum: give spectrum=...")
    r = expected_sgd(
        spectrum,
        N=N,
        lr=hyper.lr,
        t1=t1,
        ts=ts,
        n_save=n_save,
        spacing=spacing,
        t_first=t_first,
        noise=hyper.noise,
        batch_size=hyper.batch_size,
        momentum=hyper.momentum,
        init=init,
        bins=bins,
        method=method,
        divergence_bound=divergence_bound,
        lr_schedule=lr_schedule,
    )
    n = len(r.t)

    binned = {}
    if spectrum is not None:
        binned = {
            "Q_bins": _readonly(r.Q_bins[:, :, None, None]),
            "R_bins": _readonly(r.R_bins[:, :, None, None]),
            "T_bins": _readonly(r.T_bins[:, None, None]),
            "spectrum": spectrum,
        }
    extra = {}
    if hyper.momentum:
        eta = np.full(n, hyper.lr)
        if lr_schedule is not None:  # its value at each saved time, as the ODE reports it
            eta = np.asarray(lr_schedule.values, np.float64)[
                np.searchsorted(lr_schedule.edges, np.asarray(r.t), side="right")
            ]
        extra["lr_effective"] = _readonly(eta / (1.0 - hyper.momentum))
    return Trajectory(
        t=r.t,
        Q=_readonly(r.Q.reshape(n, 1, 1)),
        R=_readonly(r.R.reshape(n, 1, 1)),
        v=_readonly(np.broadcast_to(init.v, (n, 1))),
        T=_readonly(np.full((1, 1), r.T)),
        v_teacher=init.v_teacher,
        risk=r.risk,
        status=r.status,
        t_stop=r.t_stop,
        num_steps=r.num_blocks,
        hyper=hyper,
        system=system,
        observables=extra,
        **binned,
    )
