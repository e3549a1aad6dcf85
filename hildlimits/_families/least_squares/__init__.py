r"""The ``least_squares`` family: finite data, full-batch GD or gradient flow on the square loss
(Advani & Saxe 2017; Liao & Couillet 2018), in the ``N -> oo`` limit at ``n = alpha N``.

Linear student ``yhat = w.x/sqrt(N)``, linear teacher ``y = w*.x/sqrt(N) + sigma zeta``,
``x ~ N(0, I_N)``, ``n = alpha N`` samples drawn once. Theory: each eigenmode of the empirical
covariance relaxes independently; risk and training loss are integrals against the
Marchenko--Pastur law (:mod:`.theory`, ``docs/least-squares.md``). Config schema (strict)::

    [model]     kind = "least_squares", noise (sigma, 0), weight_decay (lambda, 0)
    [data]      samples (alpha = n/N > 0, required)
    [training]  full_batch (default true) | gradient_flow, lr (GD step; required for GD,
                refused for gradient flow)
    [init]      Q, R, T (scalars or [[x]]; default 0, 0, 1): |w(0)|^2/N, w(0).w*/N, |w*|^2/N
    [solve]     t1, n_save, spacing, t_first, rtol, atol, solver, max_steps, divergence_bound,
                nodes (quadrature nodes), double_descent_samples (alpha grid)

Time: ``t = lr * steps`` for full-batch GD; for gradient flow the time of ``dw/dt = -N grad L``
(the same axis as ``lr * steps`` when ``lr -> 0``).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hildlimits._errors import ConfigError
from hildlimits._families.base import Family
from hildlimits._pipeline.validate import se_text
from hildlimits._pipeline.validators import boolean, check_table, finite_tree, real

SCHEMA = {
    "model": {"kind", "noise", "weight_decay"},
    "data": {"samples"},
    "training": {"lr", "full_batch", "gradient_flow"},
    "init": {"Q", "R", "T"},
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
        "nodes",
        "double_descent_samples",
    },
}
REQUIRED = {"data": {"samples"}, "solve": {"t1"}}
SOLVE_DEFAULTS = {
    "n_save": 200,
    "spacing": "log",
    "t_first": None,
    "rtol": 1e-10,
    "atol": 1e-12,
    "solver": "tsit5",
    "max_steps": 100_000,
    "divergence_bound": 1e8,
    "steady_state": None,
    "nodes": None,
    "double_descent_samples": None,
}
_RUNNER_KEYS = (
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
)
MAX_NODES = 1 << 16


@dataclass(frozen=True, eq=False)
class LeastSquaresConfig:
    """A resolved ``kind = "least_squares"`` configuration (see the module docstring)."""

    samples: float
    noise: float
    weight_decay: float
    lr: float | None
    gradient_flow: bool
    T: float
    Q: float
    R: float
    solve: dict
    source: str = "<dict>"
    kind: str = "least_squares"

    @property
    def full_batch(self) -> bool:
        return not self.gradient_flow

    @property
    def nodes(self) -> int:
        from hildlimits._families.least_squares.theory import default_nodes

        n = self.solve.get("nodes")
        return default_nodes(self.solve["t1"], self.lr) if n is None else int(n)

    def resolved(self) -> dict:
        return {
            "model": {
                "kind": "least_squares",
                "noise": self.noise,
                "weight_decay": self.weight_decay,
            },
            "data": {"samples": self.samples},
            "training": {
                "full_batch": self.full_batch,
                "gradient_flow": self.gradient_flow,
                **({"lr": self.lr} if self.lr is not None else {}),
            },
            "init": {"Q": self.Q, "R": self.R, "T": self.T},
            "solve": {k: v for k, v in self.solve.items() if v is not None} | {"nodes": self.nodes},
        }


def _scalar(name: str, value) -> float:
    """A number, or a 1x1 matrix ``[[x]]`` as the committee writes its overlaps."""
    if isinstance(value, list):
        if len(value) == 1 and isinstance(value[0], list) and len(value[0]) == 1:
            value = value[0][0]
        elif len(value) == 1 and not isinstance(value[0], list):
            value = value[0]
        else:
            raise ConfigError(f"{name} must be a number (or [[x]]), got {value!r}")
    return real(name, value)


def _check_init(Q: float, R: float, T: float) -> None:
    if T <= 0:
        raise ConfigError(f"init.T must be positive (|w*|^2/N), got {T!r}")
    if Q < 0:
        raise ConfigError(f"init.Q must be non-negative (|w(0)|^2/N), got {Q!r}")
    if R * R > Q * T * (1 + 1e-12) + 1e-300:
        raise ConfigError(
            f"init.R must satisfy R^2 <= Q T (Cauchy-Schwarz), got R = {R!r} with Q = {Q!r}, "
            f"T = {T!r}"
        )


def _samples(value) -> float:
    a = real("data.samples", value)
    if a <= 0:
        raise ConfigError(f"data.samples must be positive (alpha = n/N), got {value!r}")
    return a


def _lr(value) -> float:
    lr = real("training.lr", value)
    if lr <= 0:
        raise ConfigError(f"training.lr must be positive (t = lr * steps), got {value!r}")
    return lr


def _nonneg(name, value) -> float:
    return real(name, value, nonnegative=True)


class LeastSquaresFamily(Family):
    kind = "least_squares"
    title = "finite-data least squares: full-batch GD / gradient flow (Marchenko-Pastur)"
    sections = ("model", "data", "training", "init", "solve")
    sweepable = {
        "data.samples": "alpha = n/N (the double-descent axis)",
        "model.noise": "label noise sigma",
        "model.weight_decay": "ridge lambda",
        "training.lr": "GD step (full_batch only)",
        "init.Q": "|w(0)|^2/N (a value)",
        "init.R": "w(0).w*/N (a value)",
        "init.T": "|w*|^2/N (a value)",
    }
    differentiable = {
        "data.samples": "alpha = n/N (nodes and weights of the MP law move with it)",
        "model.noise": "label noise sigma",
        "model.weight_decay": "ridge lambda",
        "training.lr": "GD step (full_batch only)",
        "init.Q": "|w(0)|^2/N",
        "init.R": "w(0).w*/N",
        "init.T": "|w*|^2/N",
    }
    schedule_param = "training.lr"
    flags = {}

    # ------------------------------------------------------------------ config

    def config(self, data: dict, *, source: str = "<dict>") -> LeastSquaresConfig:
        from hildlimits._pipeline.runner import check_solve_options

        for section in ("model", "data", "solve"):
            if section not in data:
                raise ConfigError(f"missing section '[{section}]'")
        tables = {}
        for section in SCHEMA:
            table = data.get(section, {})
            check_table(table, section, SCHEMA, REQUIRED)
            for key, value in table.items():
                finite_tree(f"{section}.{key}", value)
            tables[section] = table
        m, da, tr, ini, so = (tables[k] for k in ("model", "data", "training", "init", "solve"))
        noise = _nonneg("model.noise", m.get("noise", 0.0))
        wd = _nonneg("model.weight_decay", m.get("weight_decay", 0.0))
        alpha = _samples(da["samples"])
        gf = boolean("training.gradient_flow", tr.get("gradient_flow", False))
        if "full_batch" in tr:
            fb = boolean("training.full_batch", tr["full_batch"])
        else:
            fb = not gf
        if gf and fb:
            raise ConfigError(
                "training.gradient_flow = true excludes training.full_batch = true (gradient "
                "flow is the lr -> 0 limit of full-batch GD): set one of them"
            )
        if not gf and not fb:
            raise ConfigError(
                "training.full_batch = false needs training.gradient_flow = true (online SGD "
                "is model.kind = 'committee')"
            )
        if gf:
            if "lr" in tr:
                raise ConfigError(
                    f"training.lr = {tr['lr']!r} has no meaning with training.gradient_flow = "
                    "true (time is in units of lr * steps, lr -> 0); remove it or set "
                    "training.full_batch = true"
                )
            lr = None
        else:
            if "lr" not in tr:
                raise ConfigError("missing required key 'training.lr' (full-batch GD step)")
            lr = _lr(tr["lr"])
        T = _scalar("init.T", ini.get("T", 1.0))
        Q = _scalar("init.Q", ini.get("Q", 0.0))
        R = _scalar("init.R", ini.get("R", 0.0))
        _check_init(Q, R, T)
        opts = dict(SOLVE_DEFAULTS) | dict(so)
        for key in ("n_save", "max_steps"):
            v = opts[key]
            if isinstance(v, bool) or not isinstance(v, numbers.Integral):
                raise ConfigError(f"solve.{key} must be a positive integer, got {v!r}")
        n = opts["nodes"]
        if n is not None and (
            isinstance(n, bool) or not isinstance(n, numbers.Integral) or not 8 <= n <= MAX_NODES
        ):
            raise ConfigError(f"solve.nodes must be an integer in [8, {MAX_NODES}], got {n!r}")
        grid = opts["double_descent_samples"]
        if grid is not None:
            if not isinstance(grid, list) or not grid or len(grid) > 10_000:
                raise ConfigError(
                    f"solve.double_descent_samples must be a non-empty list of alpha > 0, "
                    f"got {grid!r}"
                )
            for a in grid:
                if isinstance(a, bool) or not isinstance(a, numbers.Real) or not a > 0:
                    raise ConfigError(
                        f"solve.double_descent_samples must hold positive numbers, got {a!r}"
                    )
        check_solve_options(**{k: opts[k] for k in _RUNNER_KEYS})
        cfg = LeastSquaresConfig(
            samples=alpha,
            noise=noise,
            weight_decay=wd,
            lr=lr,
            gradient_flow=gf,
            T=T,
            Q=Q,
            R=R,
            solve=opts,
            source=source,
        )
        if lr is not None and lr > opts["t1"]:
            raise ConfigError(
                f"solve.t1 = {opts['t1']!r} is shorter than one GD step (training.lr = {lr!r}; "
                "t = lr * steps)"
            )
        return cfg

    def from_objects(
        self,
        *,
        samples,
        lr=None,
        gradient_flow=False,
        noise=0.0,
        weight_decay=0.0,
        Q=0.0,
        R=0.0,
        T=1.0,
        **solve,
    ) -> LeastSquaresConfig:
        """A config from Python values (``solve`` options as in the ``[solve]`` table; ``t1``
        required)."""
        data = {
            "model": {"kind": "least_squares", "noise": noise, "weight_decay": weight_decay},
            "data": {"samples": samples},
            "training": {"gradient_flow": bool(gradient_flow)} | ({} if lr is None else {"lr": lr}),
            "init": {"Q": Q, "R": R, "T": T},
            "solve": {k: v for k, v in solve.items() if v is not None},
        }
        return self.config(data, source="<objects>")

    def resolved(self, cfg) -> dict:
        return cfg.resolved()

    # ------------------------------------------------------------------ derivation and ODE

    def derive(self, cfg=None):
        from hildlimits._families.least_squares.theory import derive_least_squares

        return derive_least_squares()

    def solve_options(self, cfg) -> dict:
        return {k: cfg.solve[k] for k in _RUNNER_KEYS}

    def solve(self, system, cfg, *, ts=None, schedule=None, **over):
        from hildlimits._families.least_squares.solve import solve_least_squares

        return solve_least_squares(system, cfg, ts=ts, schedule=schedule, **over)

    def dynamics(self, system, cfg, *, schedule: bool = False):
        import jax.numpy as jnp

        from hildlimits._families import Dynamics
        from hildlimits._families.least_squares import theory as th

        mod = system.module

        def vf(t, y, args):  # GD or gradient flow: args["gd"] (one compiled solve for both)
            dM, dphi = th.rates(args, None, jnp)
            return {"M": dM, "phi": dphi}

        def risk_fn(y, args):
            return th.observables(mod, y, args, jnp)["risk"]

        def apply(args, value):
            return {**args, "eta": value}

        return Dynamics(
            vector_field=vf,
            risk=risk_fn,
            key=("least_squares",),
            cache=system._jax,
            schedule=apply if schedule else None,
        )

    def initial(self, system, cfg, *, t_end: float | None = None):
        from hildlimits._families.least_squares import theory as th
        from hildlimits._families.least_squares.solve import args_of
        from hildlimits._pipeline.runner import bounds

        args = args_of(cfg)
        n = len(args["s"])
        y0 = {"M": np.zeros(n), "phi": np.zeros(n)}
        t_end = cfg.solve["t1"] if t_end is None else t_end
        dM, dphi = th.rates(args, not cfg.gradient_flow, np)
        # the state grows linearly in t: the bound must not mistake that for divergence
        grow = 2.0 * t_end * max(float(np.abs(dM).max()), float(np.abs(dphi).max()), 1.0)
        args |= bounds(y0, divergence_bound=cfg.solve["divergence_bound"], extra=[np.array([grow])])
        return y0, args

    # ------------------------------------------------------------------ parameters

    _FIELDS = {
        "data.samples": "samples",
        "model.noise": "noise",
        "model.weight_decay": "weight_decay",
        "training.lr": "lr",
        "init.Q": "Q",
        "init.R": "R",
        "init.T": "T",
    }

    def with_values(self, cfg, point: dict):
        changes = {self._FIELDS[k]: v for k, v in point.items()}
        if "lr" in changes and cfg.gradient_flow:
            raise ConfigError(
                "training.lr cannot be set with training.gradient_flow = true (no learning rate)"
            )
        new = dataclasses.replace(cfg, **changes)
        _samples(new.samples)
        _nonneg("model.noise", new.noise)
        _nonneg("model.weight_decay", new.weight_decay)
        if new.lr is not None:
            _lr(new.lr)
        _check_init(new.Q, new.R, new.T)
        if cfg.solve.get("nodes") is None:  # the points share the node count (static shape)
            new = dataclasses.replace(new, solve=cfg.solve | {"nodes": cfg.nodes})
        return new

    def parameters(self, system, cfg, wrt):
        import jax.numpy as jnp

        from hildlimits._families.least_squares import theory as th

        if "training.lr" in wrt and cfg.gradient_flow:
            raise ConfigError(
                "--wrt training.lr: training.gradient_flow = true has no learning rate"
            )
        y0, args = self.initial(system, cfg)
        keys = {
            "data.samples": "alpha",
            "model.noise": "sigma",
            "model.weight_decay": "lam",
            "training.lr": "eta",
            "init.Q": "Q",
            "init.R": "R",
            "init.T": "T",
        }
        theta = {name: np.float64(args[keys[name]]) for name in wrt}
        nodes, t1 = cfg.nodes, float(cfg.solve["t1"])

        def build(theta, base):
            y, a = dict(base[0]), dict(base[1])
            for name, value in theta.items():
                a[keys[name]] = value
            if "data.samples" in theta:
                a["s"], a["w"] = th.mp_nodes(theta["data.samples"], nodes, xp=jnp, t1=t1)
            return y, a

        return theta, (y0, args), build, ("least_squares", "data.samples" in wrt, nodes)

    def schedule_value(self, cfg) -> float:
        if cfg.gradient_flow:
            raise ConfigError(
                "optimize-schedule needs training.full_batch = true: with "
                "training.gradient_flow = true time is in units of lr * steps, so there is no "
                "learning rate to schedule"
            )
        return cfg.lr

    # ------------------------------------------------------------------ simulation

    def simulate(self, cfg, *, options: dict, schedule=None, checkpoint=None, **over):
        from hildlimits._families.least_squares.simulate import simulate_least_squares

        return simulate_least_squares(
            cfg,
            N=options["N"],
            seeds=options.get("seeds", 8),
            seed=options.get("seed", 0),
            dtype=options.get("dtype"),
            schedule=schedule,
            **over,
        )

    def check_simulation(self, cfg, options: dict) -> None:
        from hildlimits._families.least_squares.simulate import check_size

        check_size(cfg, options["N"], options.get("seeds", 8))

    def simulation_summary(self, sim) -> str:
        return (
            f"{sim.status}: N={sim.N}, n={sim.n}, {sim.seeds} seeds, risk(t={sim.t[-1]:.6g}) = "
            f"{sim.risk_mean[-1]:.6e} ± {sim.risk_std[-1]:.2e}, train_loss = "
            f"{sim.train_mean[-1]:.6e}"
        )

    def validate(self, cfg, *, options: dict, tolerance, outdir=None):
        from hildlimits._families.least_squares.validate import validate_least_squares

        return validate_least_squares(self, cfg, options=options, tolerance=tolerance)

    def validation_lines(self, report) -> list[str]:
        lines = [
            f"N={r['N']:>6} n={r['n']:>7}: max |d| = {r['max_abs_deviation']:.3e}, "
            f"mean |d| = {r['mean_abs_deviation']:.3e}, max |d|/se = "
            f"{se_text(r['max_deviation_in_se'], '.2f')}; train: max |d|/se = "
            f"{se_text(r['train_loss_stats']['max_deviation_in_se'], '.2f')}"
            for r in report["per_N"]
        ]
        if report["N_exponent"] is not None:
            lines.append(f"finite-size fit: mean |d| ~ N^{report['N_exponent']:.2f}")
        lines.append(("PASS: " if report["passed"] else "FAIL: ") + report["reason"])
        return lines

    # ------------------------------------------------------------------ output

    def solve_meta(self, cfg, system, traj, timings: dict) -> dict:
        return {
            "timings_s": {"total": timings["derive"] + timings["solve"], **traj.timings},
            "quadrature_nodes": traj.nodes,
        }

    def summary(self, traj) -> str:
        line = (
            f"{traj.status}: risk(t={traj.t[-1]:.6g}) = {traj.risk[-1]:.6e}, train_loss = "
            f"{traj.train_loss[-1]:.6e}"
        )
        es = traj.early_stopping
        if es is not None and not es["at_end"]:
            line += f"; early stopping at t={es['t']:.6g} (risk {es['risk']:.6e})"
        if traj.converged is not None:
            r = traj.converged["risk"]
            line += f"; risk(t->oo) = {r:.6e}" if math.isfinite(r) else "; risk(t->oo) = inf"
        return line

    def plot_solve(self, traj, path, *, cfg) -> None:
        from hildlimits._families.least_squares.plot import plot_solve

        plot_solve(traj, path, title=f"{Path(cfg.source).stem}: least squares, α={cfg.samples:g}")

    def plot_validation(self, artefacts, outdir, *, cfg) -> list:
        from hildlimits._families.least_squares.plot import plot_validation

        return plot_validation(artefacts, Path(outdir), cfg=cfg)


FAMILY = LeastSquaresFamily()
