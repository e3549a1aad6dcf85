r"""The ``committee`` family: two-layer teacher-student networks at fixed width (Saad--Solla limit).

State: overlaps ``Q`` (K x K), ``R`` (K x M) and, when trained, the second layer ``v`` (K).
Config schema (every key is a public contract; unknown keys are errors)::

    [model]     kind = "committee" (default), K, M, activation, teacher_activation,
                train_second_layer, noise, weight_decay, quadrature_nodes, line_nodes, mixture_nodes,
                loss, label, huber_delta, joint_nodes
    [training]  lr, lr_second_layer, batch_size, momentum, optimizer ("sgd", "adagrad_norm"),
                adagrad_b0, gradient_flow, lr_schedule, batch_schedule, momentum_schedule
                -- schedules as {edges = [...], values = [...]} (docs/optimisers.md)
    [init]      Q, R, T, v, v_teacher            -- explicit initial order parameters, or
    [init.random] N, seed, student_std, teacher_std
                -- overlaps of i.i.d. Gaussian weights drawn at finite N (v, v_teacher from [init])
                Q_bins, R_bins, T_bins            -- per-bin overlaps (with [data])
    [data]      eigenvalues, weights, teacher_weights, law, bins, ... (hildlimits._pipeline.spectrum)
    [solve]     t1, n_save, spacing, t_first, rtol, atol, solver, max_steps,
                divergence_bound, steady_state,
                time ("continuous" default: the N -> infinity ODE; "discrete": the exact
                finite-N expected-SGD recursion of least squares, K = M = 1 linear, square
                loss -- docs/exact-recursion.md), N (with time = "discrete"),
                method ("log" default, or "exact"; with time = "discrete")
"""

from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from hildlimits._errors import ConfigError
from hildlimits._families.base import Dynamics, Family, Flag
from hildlimits._families.committee.model import Committee, Hyperparams, Overlaps
from hildlimits._pipeline.validate import se_text
from hildlimits._pipeline.validators import check_sections, check_table

SCHEMA = {
    "model": {
        "kind",
        "K",
        "M",
        "activation",
        "teacher_activation",
        "train_second_layer",
        "noise",
        "weight_decay",
        "quadrature_nodes",
        "line_nodes",
        "mixture_nodes",
        "loss",
        "label",
        "huber_delta",
        "joint_nodes",
    },
    "training": {
        "lr",
        "lr_second_layer",
        "batch_size",
        "momentum",
        "optimizer",
        "adagrad_b0",
        "gradient_flow",
        "lr_schedule",
        "batch_schedule",
        "momentum_schedule",
    },
    "init": {"Q", "R", "T", "v", "v_teacher", "random", "Q_bins", "R_bins", "T_bins"},
    "init.random": {"N", "seed", "student_std", "teacher_std"},
    "solve": {
        "t1",
        "n_save",
        "spacing",
        "t_first",
        "rtol",
        "atol",
        "solver",
        "max_steps",
        "divergence_bound",
        "steady_state",
        "time",
        "N",
        "method",
    },
}
DISCRETE_KEYS = ("time", "N", "method")
"""``[solve]`` keys of the discrete-time route (kept out of :class:`SolveOptions`)."""
REQUIRED = {"model": {"K", "M"}, "training": {"lr"}, "solve": {"t1"}}

HYPER_PARAMS = {
    "training.lr": "lr",
    "training.lr_second_layer": "lr_second_layer",
    "model.noise": "noise",
    "model.weight_decay": "weight_decay",
    "training.batch_size": "batch_size",
    "training.momentum": "momentum",
}
INIT_FACTORS = ("init.Q", "init.R", "init.v", "init.v_teacher")
GRAD_SCALARS = {
    "training.lr": "eta",
    "training.lr_second_layer": "eta_v",
    "model.noise": "sigma",
    "model.weight_decay": "kappa",
    "training.batch_size": "batch",
    "training.momentum": "momentum",
}
GRAD_ARRAYS = {
    "init.Q": ("y", "Q"),
    "init.R": ("y", "R"),
    "init.T": ("args", "T"),
    "init.v": (None, "v"),
    "init.v_teacher": ("args", "v_teacher"),
}


@dataclass(frozen=True)
class SolveOptions:
    """Options of :func:`hildlimits.solve` from the ``[solve]`` table."""

    t1: float
    n_save: int = 200
    spacing: str = "log"
    t_first: float | None = None
    rtol: float = 1e-10
    atol: float = 1e-12
    solver: str = "tsit5"
    max_steps: int = 1_000_000
    divergence_bound: float = 1e8
    steady_state: float | None = None

    def __post_init__(self) -> None:
        from hildlimits._pipeline.runner import check_solve_options

        check_solve_options(**asdict(self))

    def as_kwargs(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class DiscreteOptions:
    """``[solve] time = "discrete"``: the exact finite-``N`` expected-SGD recursion
    (:func:`hildlimits.expected_sgd`) at dimension ``N`` with ``method`` ``"log"`` or
    ``"exact"``."""

    N: int
    method: str = "log"


@dataclass(frozen=True, eq=False)
class Config:
    """A resolved ``kind = "committee"`` configuration."""

    model: Committee
    hyper: Hyperparams
    init: Overlaps
    solve: SolveOptions
    source: str = "<dict>"
    # RandomInit when [init.random] is given (the simulator redraws at its N)
    random_init: object = None
    # training.lr_second_layer not given: it follows training.lr in sweeps and gradients
    lr_tied: bool = False
    kind: str = "committee"
    # [data]: the input covariance's spectrum (None: x ~ N(0, I)); per-bin initial overlaps
    # (Q_b, R_b, T_b) when given in [init] (else init spread over the bins)
    data: object = None
    bins: tuple | None = None
    # [training] lr_schedule, batch_schedule (hildlimits.Schedule or None)
    lr_schedule: object = None
    batch_schedule: object = None
    momentum_schedule: object = None
    # [solve] time = "discrete": DiscreteOptions (None: the continuous-time ODE)
    discrete: object = None

    def resolved(self) -> dict:
        """The configuration with every default filled in (for ``meta`` in outputs)."""
        return {
            "model": {
                "kind": "committee",
                "K": self.model.K,
                "M": self.model.M,
                "activation": self.model.activation,
                "teacher_activation": self.model.teacher_activation,
                "train_second_layer": self.model.train_second_layer,
                "noise": self.hyper.noise,
                "weight_decay": self.hyper.weight_decay,
                "loss": self.model.loss,
                "label": self.model.label,
                **({"huber_delta": self.model.huber_delta} if self.model.loss == "huber" else {}),
            },
            "training": {
                "lr": self.hyper.lr,
                "lr_second_layer": self.hyper.lr_second_layer,
                **_training_resolved(self),
            },
            "init": {
                "Q": self.init.Q.tolist(),
                "R": self.init.R.tolist(),
                "T": self.init.T.tolist(),
                "v": self.init.v.tolist(),
                "v_teacher": self.init.v_teacher.tolist(),
            },
            "solve": {k: v for k, v in self.solve.as_kwargs().items() if v is not None}
            | (
                {"time": "discrete", "N": self.discrete.N, "method": self.discrete.method}
                if self.discrete is not None
                else {}
            ),
            **({"data": self.data.resolved()} if self.data is not None else {}),
            **(
                {
                    "init_random": {
                        "student_std": self.random_init.student_std,
                        "teacher_std": self.random_init.teacher_std,
                    }
                }
                if self.random_init is not None
                else {}
            ),
        }


def _training_resolved(cfg) -> dict:
    """The optimiser keys of ``resolved()["training"]`` (only those that differ from plain SGD,
    so that plain configs keep today's ``meta``)."""
    h, out = cfg.hyper, {}
    if cfg.model.minibatch or h.batch_size != 1:
        out["batch_size"] = h.batch_size
    if h.momentum:
        out["momentum"] = h.momentum
    if h.optimizer != "sgd":
        out["optimizer"] = h.optimizer
        out["adagrad_b0"] = h.adagrad_b0
    if h.gradient_flow:
        out["gradient_flow"] = True
        out["time_unit"] = "tau = lr * steps / N"
    for name in ("lr_schedule", "batch_schedule", "momentum_schedule"):
        sched = getattr(cfg, name)
        if sched is not None:
            out[name] = {"edges": sched.edges.tolist(), "values": sched.values.tolist()}
    return out


def _schedule(tr: dict, key: str, *, minimum: float = 0.0):
    """``[training] key = {edges = [...], values = [...]}`` as a :class:`Schedule` (or None)."""
    if key not in tr:
        return None
    from hildlimits._pipeline.schedule import Schedule

    spec = tr[key]
    if not isinstance(spec, dict) or set(spec) != {"edges", "values"}:
        raise ConfigError(
            f"training.{key} must be a table {{edges = [...], values = [...]}} with one more "
            f"value than edges, got {spec!r}"
        )
    try:
        sched = Schedule(edges=spec["edges"], values=spec["values"])
    except (ValueError, TypeError) as err:
        raise ConfigError(f"training.{key}: {err}") from None
    except ConfigError as err:
        raise ConfigError(f"training.{key}: {err}") from None
    if np.any(sched.values < minimum):
        raise ConfigError(
            f"training.{key} values must be >= {minimum:g}, got {sched.values.tolist()}"
        )
    if np.any(sched.edges <= 0):
        raise ConfigError(
            f"training.{key} edges must be positive times, got {sched.edges.tolist()}"
        )
    return sched


def _random_overlaps(model: Committee, spec: dict, v, v_teacher) -> Overlaps:
    import math

    check_table(spec, "init.random", SCHEMA)
    N = spec.get("N")
    if isinstance(N, bool) or not isinstance(N, numbers.Integral) or N < 1:
        raise ConfigError(f"init.random.N must be a positive integer, got {N!r}")
    seed = spec.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ConfigError(f"init.random.seed must be a non-negative integer, got {seed!r}")
    stds = {}
    for key in ("student_std", "teacher_std"):
        val = spec.get(key, 1.0)
        if (
            isinstance(val, bool)
            or not isinstance(val, numbers.Real)
            or not math.isfinite(val)
            or val <= 0
        ):
            raise ConfigError(f"init.random.{key} must be a positive number, got {val!r}")
        stds[key] = float(val)
    rng = np.random.default_rng(int(seed))
    W = rng.standard_normal((model.K, N)) * stds["student_std"]
    Ws = rng.standard_normal((model.M, N)) * stds["teacher_std"]
    Q, R, T = W @ W.T / N, W @ Ws.T / N, Ws @ Ws.T / N
    return Overlaps.for_model(
        model, Q=(Q + Q.T) / 2, R=R, T=(T + T.T) / 2, v=v, v_teacher=v_teacher
    )


def _per_bin_init(model: Committee, spectrum, ini: dict):
    """Per-bin initial overlaps ``(Q_b, R_b, T_b)`` from ``init.Q_bins`` etc. (all three or
    none; ``None``: the plain overlaps are spread over the bins at solve time)."""
    from hildlimits._pipeline.validators import matrix

    given = [k for k in ("Q_bins", "R_bins", "T_bins") if k in ini]
    if not given:
        return None
    if len(given) != 3:
        missing = sorted({"Q_bins", "R_bins", "T_bins"} - set(given))
        raise ConfigError(f"init.{missing[0]} is needed together with init.{given[0]}")
    B, K, M = spectrum.bins, model.K, model.M
    Qb = matrix("init.Q_bins", ini["Q_bins"], (B, K, K))
    Rb = matrix("init.R_bins", ini["R_bins"], (B, K, M))
    Tb = matrix("init.T_bins", ini["T_bins"], (B, M, M))
    for b in range(B):
        joint = np.block([[Qb[b], Rb[b]], [Rb[b].T, Tb[b]]])
        if not np.allclose(joint, joint.T, atol=1e-12 * max(1.0, np.abs(joint).max())):
            raise ConfigError(f"init.Q_bins and init.T_bins must be symmetric in bin {b}")
        if np.linalg.eigvalsh(joint).min() < -1e-10 * max(1.0, np.abs(joint).max()):
            raise ConfigError(
                f"the per-bin joint overlap matrix of bin {b} must be positive semi-definite"
            )
    for name, X, plain in (
        ("Q", Qb, ini.get("Q")),
        ("R", Rb, ini.get("R")),
        ("T", Tb, ini.get("T")),
    ):
        if plain is not None and not np.allclose(X.sum(0), np.asarray(plain, float), atol=1e-9):
            raise ConfigError(
                f"init.{name}_bins must sum over the bins to init.{name} (or leave init.{name} out)"
            )
    return (Qb, Rb, Tb)


def _discrete_options(so: dict) -> DiscreteOptions | None:
    """``solve.time``, ``solve.N``, ``solve.method`` (``None``: continuous time)."""
    time = so.get("time", "continuous")
    if time not in ("continuous", "discrete"):
        raise ConfigError(f"solve.time must be 'continuous' or 'discrete', got {time!r}")
    if time == "continuous":
        extra = [k for k in ("N", "method") if k in so]
        if extra:
            raise ConfigError(f"solve.{extra[0]} is only used with solve.time = 'discrete'")
        return None
    if "N" not in so:
        raise ConfigError("solve.time = 'discrete' needs solve.N (the input dimension)")
    N = so["N"]
    if isinstance(N, bool) or not isinstance(N, numbers.Integral) or N < 1:
        raise ConfigError(f"solve.N must be a positive integer, got {N!r}")
    method = so.get("method", "log")
    if method not in ("log", "exact"):
        raise ConfigError(f"solve.method must be 'log' or 'exact', got {method!r}")
    return DiscreteOptions(N=int(N), method=method)


def _check_discrete(model: Committee, hyper: Hyperparams, tr: dict, init: Overlaps) -> None:
    """The recursion covers least squares: the linear ``K = M = 1`` model, square loss, identity
    labels, plain first layer, SGD with batch size, momentum and a learning-rate schedule."""
    need = "solve.time = 'discrete' (the least-squares recursion) needs"
    for key, got, want in (
        ("model.K", model.K, 1),
        ("model.M", model.M, 1),
        ("model.activation", model.activation, "linear"),
        ("model.teacher_activation", model.teacher_activation, "linear"),
        ("model.loss", model.loss, "square"),
        ("model.label", model.label, "y"),
        ("model.train_second_layer", model.train_second_layer, False),
        ("model.weight_decay", hyper.weight_decay, 0.0),
        ("training.optimizer", hyper.optimizer, "sgd"),
        ("training.gradient_flow", hyper.gradient_flow, False),
    ):
        if got != want:
            raise ConfigError(f"{need} {key} = {want!r}, got {got!r}")
    if "batch_schedule" in tr:
        raise ConfigError(f"{need} a constant batch size: training.batch_schedule is not covered")
    if "momentum_schedule" in tr:
        raise ConfigError(f"{need} a constant momentum: training.momentum_schedule is not covered")
    for key, val in (("init.v", init.v), ("init.v_teacher", init.v_teacher)):
        if not np.allclose(val, 1.0, rtol=0, atol=1e-15):
            raise ConfigError(f"{need} {key} = [1.0], got {np.asarray(val).tolist()!r}")


def _solve_options(so: dict) -> SolveOptions:
    opts = {k: v for k, v in so.items() if k not in DISCRETE_KEYS}
    ints = ("n_save", "max_steps")
    for key in ints:
        if key in opts and (
            isinstance(opts[key], bool) or not isinstance(opts[key], numbers.Integral)
        ):
            raise ConfigError(f"solve.{key} must be a positive integer, got {opts[key]!r}")
    for key, val in opts.items():
        if key in ("spacing", "solver"):
            if not isinstance(val, str):
                raise ConfigError(f"solve.{key} must be a string, got {val!r}")
        elif key not in ints and (isinstance(val, bool) or not isinstance(val, numbers.Real)):
            raise ConfigError(f"solve.{key} must be a number, got {val!r}")
    return SolveOptions(**opts)


def _apply_eta(args, value):
    return {**args, "eta": value}


def _continuous_only(cfg) -> None:
    """sweep, grad and optimize-schedule differentiate or batch the ODE."""
    if cfg is not None and getattr(cfg, "discrete", None) is not None:
        raise ConfigError(
            "solve.time = 'discrete' is supported by solve and validate (sweep, grad and "
            "optimize-schedule use the continuous-time ODE): remove solve.time"
        )


def _has_schedule(cfg) -> bool:
    """The config gives a learning-rate or batch-size schedule ([training])."""
    return cfg is not None and any(
        getattr(cfg, name, None) is not None
        for name in ("lr_schedule", "batch_schedule", "momentum_schedule")
    )


class CommitteeFamily(Family):
    kind = "committee"
    title = "two-layer committee at fixed width (K student, M teacher units)"
    sweepable = {
        "training.lr": "first-layer learning rate eta",
        "training.lr_second_layer": "second-layer learning rate eta_v",
        "model.noise": "output-noise standard deviation sigma",
        "model.weight_decay": "weight decay kappa",
        "init.Q": "factor multiplying the configured init.Q",
        "init.R": "factor multiplying the configured init.R",
        "init.v": "factor multiplying the configured init.v",
        "init.v_teacher": "factor multiplying the configured init.v_teacher",
    }
    differentiable = {
        "training.lr": "eta",
        "training.lr_second_layer": "eta_v",
        "model.noise": "sigma",
        "model.weight_decay": "kappa",
        "init.Q": "initial Q (every entry independent)",
        "init.R": "initial R",
        "init.T": "teacher overlaps T",
        "init.v": "initial second layer v",
        "init.v_teacher": "teacher second layer v*",
    }
    schedule_param = "training.lr"
    batch_param = "training.batch_size"
    sections = ("model", "training", "init", "solve", "data")
    flags = {
        "simulate": (
            Flag(
                ("--test-samples",),
                {
                    "type": int,
                    "default": 0,
                    "help": "Monte Carlo test error on this many held-out samples (committee)",
                },
            ),
        ),
        "validate": (
            Flag(
                ("--test-samples",),
                {"type": int, "default": 0, "help": "as for simulate (committee)"},
            ),
        ),
    }

    # ------------------------------------------------------------------ config

    def config(self, data: dict, *, source: str = "<dict>") -> Config:
        check_sections(data, ("model", "training", "init", "solve"), SCHEMA, REQUIRED)
        m, tr, ini, so = data["model"], data["training"], data["init"], data["solve"]
        model = Committee(
            K=m["K"],
            M=m["M"],
            activation=m.get("activation", "erf"),
            teacher_activation=m.get("teacher_activation"),
            train_second_layer=m.get("train_second_layer", False),
            quadrature_nodes=m.get("quadrature_nodes"),
            line_nodes=m.get("line_nodes"),
            mixture_nodes=m.get("mixture_nodes"),
            loss=m.get("loss", "square"),
            label=m.get("label", "y"),
            huber_delta=m.get("huber_delta", 1.0),
            joint_nodes=m.get("joint_nodes"),
            covariance="spectrum" if "data" in data else "identity",
            minibatch=any(k in tr for k in ("batch_size", "batch_schedule", "gradient_flow")),
            adagrad=tr.get("optimizer") == "adagrad_norm",
        )
        hyper = Hyperparams(
            lr=tr["lr"],
            lr_second_layer=tr.get("lr_second_layer"),
            noise=m.get("noise", 0.0),
            weight_decay=m.get("weight_decay", 0.0),
            batch_size=tr.get("batch_size", 1),
            momentum=tr.get("momentum", 0.0),
            optimizer=tr.get("optimizer", "sgd"),
            adagrad_b0=tr.get("adagrad_b0", 1.0),
            gradient_flow=tr.get("gradient_flow", False),
        )
        lr_schedule = _schedule(tr, "lr_schedule")
        batch_schedule = _schedule(tr, "batch_schedule", minimum=1.0)
        momentum_schedule = _schedule(tr, "momentum_schedule")
        if momentum_schedule is not None:
            if "momentum" in tr:
                raise ConfigError(
                    "give training.momentum (constant) or training.momentum_schedule, not both"
                )
            beta = momentum_schedule.values
            if np.any(beta >= 1):
                raise ConfigError(
                    f"training.momentum_schedule values must be in [0, 1), got {beta.tolist()}"
                )
        for name, sched in (
            ("lr_schedule", lr_schedule),
            ("batch_schedule", batch_schedule),
            ("momentum_schedule", momentum_schedule),
        ):
            if hyper.gradient_flow and sched is not None:
                raise ConfigError(
                    f"training.{name} cannot be combined with training.gradient_flow (gradient "
                    f"flow has no learning rate or batch size to schedule: time is lr * t)"
                )
        spectrum, bins = None, None
        if "data" in data:
            from hildlimits._pipeline.spectrum import spectrum_from_config

            spectrum = spectrum_from_config(data["data"])
            bins = _per_bin_init(model, spectrum, ini)
            if bins is not None:
                if "random" in ini:
                    raise ConfigError("init.Q_bins cannot be given together with [init.random]")
                sums = dict(zip("QRT", (X.sum(0).tolist() for X in bins), strict=True))
                ini = {**{k: sums[k] for k in "QRT" if k not in ini}, **ini}
        elif any(k in ini for k in ("Q_bins", "R_bins", "T_bins")):
            raise ConfigError("init.Q_bins, init.R_bins, init.T_bins need a [data] section")
        if "random" in ini:
            clash = sorted({"Q", "R", "T"} & set(ini))
            if clash:
                raise ConfigError(f"init.{clash[0]} cannot be given together with [init.random]")
            init = _random_overlaps(model, ini["random"], ini.get("v"), ini.get("v_teacher"))
        else:
            for key in ("Q", "R", "T"):
                if key not in ini:
                    raise ConfigError(f"missing required key 'init.{key}' (or give [init.random])")
            init = Overlaps.for_model(
                model,
                Q=ini["Q"],
                R=ini["R"],
                T=ini["T"],
                v=ini.get("v"),
                v_teacher=ini.get("v_teacher"),
            )
        solve = _solve_options(so)
        discrete = _discrete_options(so)
        if discrete is not None:
            _check_discrete(model, hyper, tr, init)
        random_init = None
        if "random" in ini:
            from hildlimits._families.committee.simulate import RandomInit

            spec = ini["random"]
            random_init = RandomInit(
                student_std=spec.get("student_std", 1.0), teacher_std=spec.get("teacher_std", 1.0)
            )
        return Config(
            model=model,
            hyper=hyper,
            init=init,
            solve=solve,
            source=source,
            random_init=random_init,
            lr_tied="lr_second_layer" not in tr,
            data=spectrum,
            bins=bins,
            lr_schedule=lr_schedule,
            batch_schedule=batch_schedule,
            momentum_schedule=momentum_schedule,
            discrete=discrete,
        )

    def from_objects(
        self, *, model=None, system=None, init, hyper, lr_tied=False, **solve
    ) -> Config:
        """A config from Python objects (what :func:`hildlimits.sweep` etc. are given); the
        model defaults to the one ``system`` was derived from."""
        solve = {"t1": 1.0, **solve}
        if model is None and system is not None:
            st = system.structure
            model = Committee(
                K=init.K,
                M=init.M,
                activation=st["activation"],
                teacher_activation=st["teacher_activation"],
                train_second_layer=st["train_second_layer"],
                quadrature_nodes=st.get("quadrature_nodes"),
                line_nodes=st.get("line_nodes"),
                mixture_nodes=st.get("mixture_nodes"),
            )
        return Config(
            model=model,
            hyper=hyper,
            init=init,
            solve=SolveOptions(**solve),
            lr_tied=lr_tied,
        )

    def resolved(self, cfg) -> dict:
        return cfg.resolved()

    # ------------------------------------------------------------------ derivation and ODE

    def derive(self, cfg):
        from hildlimits._families.committee.derive import derive

        return derive(cfg.model)

    def solve_options(self, cfg) -> dict:
        return cfg.solve.as_kwargs()

    def solve(self, system, cfg, *, ts=None, schedule=None, **over):
        from hildlimits._families.committee.solve import solve, solve_discrete

        kw = self.solve_options(cfg) | over
        if cfg.discrete is not None:
            return solve_discrete(
                system,
                init=cfg.init,
                hyper=cfg.hyper,
                N=cfg.discrete.N,
                method=cfg.discrete.method,
                ts=ts,
                lr_schedule=schedule if schedule is not None else cfg.lr_schedule,
                spectrum=cfg.data,
                bins=cfg.bins,
                **kw,
            )
        return solve(
            system,
            init=cfg.init,
            hyper=cfg.hyper,
            ts=ts,
            lr_schedule=schedule if schedule is not None else cfg.lr_schedule,
            batch_schedule=cfg.batch_schedule,
            momentum_schedule=cfg.momentum_schedule,
            spectrum=cfg.data,
            bins=cfg.bins,
            **kw,
        )

    def dynamics(self, system, cfg=None, *, schedule: bool = False) -> Dynamics:
        from hildlimits._families.committee import optim

        _continuous_only(cfg)
        module = system.module
        return Dynamics(
            vector_field=optim.vector_field(module),
            risk=optim.risk(module),
            key=("committee", "optim-1"),
            cache=system._jax,
            schedule=_apply_eta if schedule or _has_schedule(cfg) else None,
            risk_event=getattr(module, "RISK_EVENT", True),
            risk_map=getattr(module, "RISK_MAP", False),
        )

    def initial(self, system, cfg):
        from hildlimits._families.committee.solve import problem

        _continuous_only(cfg)
        from hildlimits._families.committee.solve import with_batch_schedule

        so = cfg.solve
        y0, args = problem(
            system,
            cfg.init,
            cfg.hyper,
            divergence_bound=so.divergence_bound,
            steady_state=so.steady_state,
            spectrum=cfg.data,
            bins=cfg.bins,
        )
        if _has_schedule(cfg):
            args = with_batch_schedule(
                args,
                cfg.lr_schedule,
                cfg.batch_schedule,
                float(args["eta"]),
                cfg.momentum_schedule,
            )
        return y0, args

    # ------------------------------------------------------------------ parameters

    def with_values(self, cfg, point: dict):
        import dataclasses

        hyper, init = cfg.hyper, cfg.init
        h = {
            "lr": hyper.lr,
            "lr_second_layer": hyper.lr_second_layer,
            "noise": hyper.noise,
            "weight_decay": hyper.weight_decay,
            "batch_size": hyper.batch_size,
            "momentum": hyper.momentum,
            "optimizer": hyper.optimizer,
            "adagrad_b0": hyper.adagrad_b0,
            "gradient_flow": hyper.gradient_flow,
        }
        for name, value in point.items():
            if name in HYPER_PARAMS:
                h[HYPER_PARAMS[name]] = value
        if cfg.lr_tied and "training.lr_second_layer" not in point:
            h["lr_second_layer"] = h["lr"]
        hp = Hyperparams(**h)
        f = {name: point.get(name, 1.0) for name in INIT_FACTORS}
        Q, R, v, vt = (
            init.Q * f["init.Q"],
            init.R * f["init.R"],
            init.v * f["init.v"],
            init.v_teacher * f["init.v_teacher"],
        )
        joint = np.block([[Q, R], [R.T, init.T]])
        if np.linalg.eigvalsh(joint).min() < -1e-10 * max(1.0, np.abs(joint).max()):
            raise ConfigError("scaled joint overlap matrix is not positive semi-definite")
        ov = Overlaps(Q=Q, R=R, T=init.T, v=v, v_teacher=vt, _checked=True)
        bins = cfg.bins
        if bins is not None:
            bins = (bins[0] * f["init.Q"], bins[1] * f["init.R"], bins[2])
        return dataclasses.replace(cfg, hyper=hp, init=ov, bins=bins)

    def parameters(self, system, cfg, wrt):
        from hildlimits._families.committee.solve import problem

        trained = system.structure["train_second_layer"]
        base = problem(
            system,
            cfg.init,
            cfg.hyper,
            divergence_bound=cfg.solve.divergence_bound,
            spectrum=cfg.data,
            bins=cfg.bins,
        )
        y0, args = base
        theta = {}
        for name in wrt:
            if name in GRAD_SCALARS:
                theta[name] = np.float64(args[GRAD_SCALARS[name]])
            elif name == "init.v":
                theta[name] = np.asarray(cfg.init.v, np.float64)
            else:
                where, key = GRAD_ARRAYS[name]
                theta[name] = np.asarray((y0 if where == "y" else args)[key], np.float64)
        lr_tied = cfg.lr_tied

        def build(theta, base):
            y, a = dict(base[0]), dict(base[1])
            for name, val in theta.items():
                if name in GRAD_SCALARS:
                    a[GRAD_SCALARS[name]] = val
                    if name == "training.lr" and lr_tied:
                        a["eta_v"] = val
                elif name == "init.v":
                    (y if trained else a)["v"] = val
                else:
                    where, key = GRAD_ARRAYS[name]
                    (y if where == "y" else a)[key] = val
            return y, a

        return theta, base, build, (trained, lr_tied)

    def schedule_value(self, cfg) -> float:
        return cfg.hyper.lr

    def batch_value(self, system, cfg) -> float:
        if not system.structure.get("minibatch") or cfg.hyper.gradient_flow:
            raise ConfigError(
                "optimize-schedule --batch needs a mini-batch derivation: give "
                "training.batch_size in [training] (and no training.gradient_flow)"
            )
        return float(cfg.hyper.batch_size)

    def with_schedules(self, cfg, *, lr=None, batch=None):
        import dataclasses

        return dataclasses.replace(
            cfg,
            lr_schedule=cfg.lr_schedule if lr is None else lr,
            batch_schedule=cfg.batch_schedule if batch is None else batch,
        )

    # ------------------------------------------------------------------ simulation

    def _simulate_kwargs(self, cfg) -> dict:
        so = cfg.solve
        kw = dict(
            hyper=cfg.hyper,
            t1=so.t1,
            n_save=so.n_save,
            spacing=so.spacing,
            t_first=so.t_first,
            divergence_bound=so.divergence_bound,
            init=cfg.init,
        )
        if cfg.data is not None:
            kw["spectrum"] = cfg.data
            kw["bins"] = cfg.bins
        if cfg.random_init is not None:
            kw["random_init"] = cfg.random_init
        if cfg.batch_schedule is not None:
            kw["batch_schedule"] = cfg.batch_schedule
        if cfg.momentum_schedule is not None:
            kw["momentum_schedule"] = cfg.momentum_schedule
        return kw

    def simulate(self, cfg, *, options: dict, schedule=None, checkpoint=None, **over):
        from hildlimits._families.committee.simulate import simulate

        kw = self._simulate_kwargs(cfg) | over
        return simulate(
            cfg.model,
            N=options["N"],
            seeds=options.get("seeds", 8),
            seed=options.get("seed", 0),
            dtype=options.get("dtype"),
            test_samples=options.get("test_samples", 0) or 0,
            checkpoint=checkpoint,
            progress=options.get("progress"),
            lr_schedule=schedule if schedule is not None else cfg.lr_schedule,
            **kw,
        )

    def simulation_summary(self, sim) -> str:
        return (
            f"{sim.status}: N={sim.N}, {sim.seeds} seeds, risk(t={sim.t[-1]:.6g}) = "
            f"{sim.risk_mean[-1]:.6e} ± {sim.risk_std[-1]:.2e}"
        )

    def validate(self, cfg, *, options: dict, tolerance, outdir=None):
        from hildlimits._families.committee.validate import validate_committee as validate

        so = cfg.solve
        solve_kwargs = {
            k: getattr(so, k) for k in ("rtol", "atol", "solver", "max_steps", "divergence_bound")
        }
        Ns = options["Ns"]
        report, sims, odes = validate(
            cfg.model,
            Ns=Ns,
            seeds=options.get("seeds", 8),
            seed=options.get("seed", 0),
            tolerance=tolerance,
            solve_kwargs=solve_kwargs,
            test_samples=options.get("test_samples", 0) or 0,
            dtype=options.get("dtype"),
            lr_schedule=cfg.lr_schedule,
            discrete_method=cfg.discrete.method if cfg.discrete is not None else None,
            **self._simulate_kwargs(cfg),
        )
        if cfg.discrete is not None:
            report["theory"] = "exact finite-N expected-SGD recursion at each simulated N"
        report["curves"] = [
            {
                "N": sim.N,
                "t": sim.t.tolist(),
                "risk": sim.risk_mean.tolist(),
                "risk_std": sim.risk_std.tolist(),
                "risk_ode": np.mean([tr.risk for tr in trajs], axis=0).tolist(),
            }
            for sim, trajs in zip(sims, odes, strict=True)
        ]
        return report, (sims, odes)

    def validate_model(self, model, **options):
        """:func:`hildlimits.validate` with a :class:`~hildlimits.Committee` and objects."""
        from hildlimits._families.committee.validate import validate_committee

        return validate_committee(model, **options)

    def validation_lines(self, report) -> list[str]:
        lines = []
        for p in report["per_N"]:
            lines.append(
                f"N={p['N']:>7}: max |d| = {p['max_abs_deviation']:.3e}, mean |d| = "
                f"{p['mean_abs_deviation']:.3e}, max |d|/se = {se_text(p['max_deviation_in_se'], '.2f')}, "
                f"mean |d|/se = {se_text(p['mean_deviation_in_se'], '.2f')}"
            )
        if report["finite_size_exponent"] is not None:
            lines.append(f"finite-size fit: mean |d| ~ N^{report['finite_size_exponent']:.2f}")
        lines.append(("PASS: " if report["passed"] else "FAIL: ") + report["reason"])
        return lines

    # ------------------------------------------------------------------ output

    def solve_meta(self, cfg, system, traj, timings: dict) -> dict:
        from hildlimits._pipeline.cache import cache_key

        return {
            "derivation_key": cache_key(cfg.model.structure),
            "timings_s": {
                "derive": timings["derive"],
                "solve_including_compile": timings["solve"],
            },
        }

    def summary(self, traj) -> str:
        return (
            f"{traj.status}: risk(t={traj.t[-1]:.6g}) = {traj.risk[-1]:.6e}; {len(traj.t)} save "
            f"times, {traj.num_steps} steps"
        )

    def plot_solve(self, traj, path, *, cfg) -> None:
        from hildlimits._families.committee.plot import plot_trajectory

        plot_trajectory(
            traj,
            path,
            title=f"{Path(cfg.source).stem}: K={cfg.model.K}, M={cfg.model.M}",
            log_time=cfg.solve.spacing == "log",
        )

    def plot_validation(self, artefacts, outdir, *, cfg) -> list:
        from hildlimits._families.committee.validate import plot_validation

        sims, odes = artefacts
        paths = [Path(outdir) / "risk.png", Path(outdir) / "overlaps.png"]
        plot_validation(sims, odes, *paths, log_time=cfg.solve.spacing == "log")
        return paths


FAMILY = CommitteeFamily()
