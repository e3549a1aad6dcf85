r"""The ``deep_linear`` family: deep linear networks learning a linear teacher (Saxe, McClelland &
Ganguli 2014; Braun, Dominé, Fitzgerald & Saxe 2022), online SGD or gradient flow.

State per mode ``alpha`` of the teacher's singular basis: layer strengths ``w_{l alpha}``
(``l = 1..L``) and the bulk norms ``G_alpha``, ``Phi_alpha`` created by SGD noise (see
:mod:`hildlimits._families.deep_linear.model` and ``docs/deep-linear.md``). Time ``t = steps/N``
(``tau = lr * steps / N`` under gradient flow). Config schema (strict, unknown keys are
errors)::

    [model]     kind = "deep_linear", depth, teacher_singular_values, input_dim, output_dim,
                hidden_dim, noise
    [training]  lr, gradient_flow
    [init]      modes, scale, balance
    [solve]     t1, n_save, spacing, t_first, rtol, atol, solver, max_steps, divergence_bound,
                steady_state

``input_dim``, ``output_dim``, ``hidden_dim`` are ratios to ``N`` (``D = input_dim N``, ...;
``hidden_dim`` one ratio or one per hidden layer); ``[init] modes`` the initial mode strengths
``pi_alpha(0)`` (times ``scale``), ``balance`` the ``lambda`` of a lambda-balanced start
``w_{l+1}^2 - w_l^2 = lambda``.
"""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hildlimits._errors import ConfigError
from hildlimits._families.base import Family
from hildlimits._pipeline.validate import se_text
from hildlimits._pipeline.validators import (
    boolean,
    check_sections,
    integer_at_least,
    real,
)

SCHEMA = {
    "model": {
        "kind",
        "depth",
        "teacher_singular_values",
        "input_dim",
        "output_dim",
        "hidden_dim",
        "noise",
    },
    "training": {"lr", "gradient_flow"},
    "init": {"modes", "scale", "balance"},
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
    },
}
REQUIRED = {
    "model": {"depth", "teacher_singular_values"},
    "training": {"lr"},
    "init": set(),
    "solve": {"t1"},
}
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
}
_RUNNER_KEYS = (*SOLVE_DEFAULTS, "t1")


def _real_list(name: str, value, *, nonnegative: bool = True, length: int | None = None):
    if not isinstance(value, (list, tuple, np.ndarray)) or len(value) == 0:
        raise ConfigError(f"{name} must be a non-empty list of numbers, got {value!r}")
    out = []
    for x in value:
        if isinstance(x, bool) or not isinstance(x, numbers.Real):
            raise ConfigError(f"{name} must be a list of real numbers, got {value!r}")
        out.append(real(name, x))
    arr = np.asarray(out, np.float64)
    if nonnegative and np.any(arr < 0):
        raise ConfigError(f"{name} must be non-negative, got {list(value)!r}")
    if length is not None and len(arr) != length:
        raise ConfigError(
            f"{name} must have {length} entries (one per teacher singular value), "
            f"got {len(arr)}: {list(value)!r}"
        )
    arr.setflags(write=False)
    return arr


def _ratio(name: str, value) -> float:
    v = real(name, value)
    if v <= 0:
        raise ConfigError(f"{name} must be positive (a ratio to N), got {value!r}")
    return v


@dataclass(frozen=True, eq=False)
class DeepLinearConfig:
    """A resolved ``kind = "deep_linear"`` configuration."""

    depth: int
    teacher: np.ndarray  # singular values s_alpha
    input_dim: float
    output_dim: float
    hidden_dim: tuple  # L - 1 ratios
    noise: float
    lr: float
    gradient_flow: bool
    modes: np.ndarray  # initial strengths (before scale)
    scale: float
    balance: float
    solve: dict
    source: str = "<dict>"
    kind: str = "deep_linear"

    @property
    def rank(self) -> int:
        return len(self.teacher)

    @property
    def initial_modes(self) -> np.ndarray:
        return self.scale * self.modes

    def resolved(self) -> dict:
        return {
            "model": {
                "kind": "deep_linear",
                "depth": self.depth,
                "teacher_singular_values": self.teacher.tolist(),
                "input_dim": self.input_dim,
                "output_dim": self.output_dim,
                "hidden_dim": list(self.hidden_dim),
                "noise": self.noise,
            },
            "training": {"lr": self.lr, "gradient_flow": self.gradient_flow},
            "init": {"modes": self.modes.tolist(), "scale": self.scale, "balance": self.balance},
            "solve": {k: v for k, v in self.solve.items() if v is not None},
        }


def _hidden(value, depth: int) -> tuple:
    if isinstance(value, (list, tuple)):
        if len(value) != depth - 1:
            raise ConfigError(
                f"model.hidden_dim must be one ratio or a list of depth - 1 = {depth - 1} "
                f"ratios, got {value!r}"
            )
        return tuple(_ratio("model.hidden_dim", v) for v in value)
    return (_ratio("model.hidden_dim", value),) * (depth - 1)


def _lr(value) -> float:
    lr = real("training.lr", value)
    if lr <= 0:
        raise ConfigError(f"training.lr must be positive, got {value!r}")
    return lr


def _scale(value) -> float:
    return real("init.scale", value, nonnegative=True)


class DeepLinearFamily(Family):
    kind = "deep_linear"
    title = "deep linear networks (mode strengths in the teacher's singular basis)"
    sweepable = {
        "training.lr": "learning rate eta (online SGD; absent from the gradient-flow ODE in tau)",
        "model.noise": "output noise sigma (enters through the eta^2 terms)",
        "model.input_dim": "D / N (enters through the eta^2 terms)",
        "model.output_dim": "O / N (enters through the eta^2 terms)",
        "init.scale": "factor multiplying the initial mode strengths init.modes (a value)",
        "init.balance": "lambda of the lambda-balanced start, w_{l+1}^2 - w_l^2 = lambda",
    }
    differentiable = {
        **sweepable,
        "init.modes": "initial mode strengths (before init.scale)",
        "model.teacher_singular_values": "the teacher's singular values s_alpha",
    }
    schedule_param = "training.lr"
    flags: dict = {}
    sections = ("model", "training", "init", "solve")

    # ------------------------------------------------------------------ config

    def config(self, data: dict, *, source: str = "<dict>") -> DeepLinearConfig:
        from hildlimits._pipeline.runner import check_solve_options

        data = {"init": {}, **data}
        check_sections(data, ("model", "training", "init", "solve"), SCHEMA, REQUIRED)
        m, tr, ini, so = data["model"], data["training"], data["init"], data["solve"]
        depth = integer_at_least("model.depth", m["depth"], 2)
        teacher = _real_list("model.teacher_singular_values", m["teacher_singular_values"])
        r = len(teacher)
        if "modes" in ini:
            modes = _real_list("init.modes", ini["modes"], length=r)
        elif "scale" in ini:
            modes = np.ones(r)
        else:
            raise ConfigError(
                "missing initial mode strengths: give init.modes (one per teacher singular "
                "value) or init.scale (the same strength for every mode)"
            )
        opts = dict(SOLVE_DEFAULTS)
        opts.update(so)
        check_solve_options(**{k: opts[k] for k in _RUNNER_KEYS})
        return DeepLinearConfig(
            depth=depth,
            teacher=teacher,
            input_dim=_ratio("model.input_dim", m.get("input_dim", 1.0)),
            output_dim=_ratio("model.output_dim", m.get("output_dim", 1.0)),
            hidden_dim=_hidden(m.get("hidden_dim", 1.0), depth),
            noise=real("model.noise", m.get("noise", 0.0), nonnegative=True),
            lr=_lr(tr["lr"]),
            gradient_flow=boolean("training.gradient_flow", tr.get("gradient_flow", False)),
            modes=modes,
            scale=_scale(ini.get("scale", 1.0)),
            balance=real("init.balance", ini.get("balance", 0.0)),
            solve=opts,
            source=source,
        )

    def from_objects(
        self, *, system=None, model=None, init, hyper, lr_tied=False, **solve
    ) -> DeepLinearConfig:
        """A config from Python tables: ``model`` (the ``[model]`` table; ``depth`` defaults to
        the system's), ``init`` (``[init]``), ``hyper`` (``[training]``); ``solve`` options as in
        ``[solve]`` (``t1`` default 1); ``lr_tied`` (one learning rate) is accepted and
        ignored."""
        model = dict(model or {})
        if system is not None:
            model.setdefault("depth", system.depth)
        data = {
            "model": model,
            "training": dict(hyper),
            "init": dict(init),
            "solve": {"t1": 1.0, **solve},
        }
        return self.config(data)

    def resolved(self, cfg) -> dict:
        return cfg.resolved()

    # ------------------------------------------------------------------ derivation and ODE

    def derive(self, cfg):
        from hildlimits._families.deep_linear.model import derive_deep_linear

        return derive_deep_linear(cfg.depth, cfg.gradient_flow)

    def solve_options(self, cfg) -> dict:
        return {k: cfg.solve[k] for k in _RUNNER_KEYS}

    def dynamics(self, system, cfg, *, schedule: bool = False):
        from hildlimits._families.deep_linear.model import dynamics

        return dynamics(system, schedule=schedule)

    def _args(self, cfg) -> dict:
        from hildlimits._families.deep_linear.model import make_args

        return make_args(
            s=cfg.teacher,
            sigma=cfg.noise,
            eta=cfg.lr,
            input_dim=cfg.input_dim,
            output_dim=cfg.output_dim,
            gradient_flow=cfg.gradient_flow,
        )

    def initial(self, system, cfg):
        from hildlimits._families.deep_linear.model import initial_state
        from hildlimits._pipeline.runner import bounds

        y0 = initial_state(cfg.initial_modes, cfg.balance, cfg.depth)
        args = self._args(cfg)
        args |= bounds(
            y0,
            divergence_bound=cfg.solve["divergence_bound"],
            steady_state=cfg.solve["steady_state"],
            extra=(cfg.teacher,),
        )
        return y0, args

    def solve(self, system, cfg, *, ts=None, schedule=None, **over):
        from hildlimits._families.deep_linear.model import solve_deep_linear
        from hildlimits._pipeline import runner as _runner

        so = dict(cfg.solve) | over
        ts = _runner.resolve_save_times(
            ts=ts, who="solve", **{k: so[k] for k in _RUNNER_KEYS if k in so}
        )
        if over.keys() & {"divergence_bound", "steady_state"}:
            cfg = dataclasses.replace(cfg, solve=so)
        y0, args = self.initial(system, cfg)
        return solve_deep_linear(
            system,
            y0=y0,
            args=args,
            ts=ts,
            rtol=so["rtol"],
            atol=so["atol"],
            solver=so["solver"],
            max_steps=so["max_steps"],
            steady=so["steady_state"] is not None,
            schedule=schedule,
        )

    # ------------------------------------------------------------------ parameters

    def with_values(self, cfg, point: dict):
        ch: dict = {}
        if "training.lr" in point:
            ch["lr"] = _lr(point["training.lr"])
        if "model.noise" in point:
            ch["noise"] = real("model.noise", point["model.noise"], nonnegative=True)
        if "model.input_dim" in point:
            ch["input_dim"] = _ratio("model.input_dim", point["model.input_dim"])
        if "model.output_dim" in point:
            ch["output_dim"] = _ratio("model.output_dim", point["model.output_dim"])
        if "init.scale" in point:
            ch["scale"] = _scale(point["init.scale"])
        if "init.balance" in point:
            ch["balance"] = real("init.balance", point["init.balance"])
        return dataclasses.replace(cfg, **ch)

    def _scalars(self, cfg) -> dict:
        return {
            "training.lr": cfg.lr,
            "model.noise": cfg.noise,
            "model.input_dim": cfg.input_dim,
            "model.output_dim": cfg.output_dim,
            "init.scale": cfg.scale,
            "init.balance": cfg.balance,
        }

    def parameters(self, system, cfg, wrt):
        import jax.numpy as jnp

        from hildlimits._families.deep_linear.model import layer_strengths

        y0, args = self.initial(system, cfg)
        scalars = {k: np.float64(v) for k, v in self._scalars(cfg).items()}
        arrays = {
            "init.modes": np.asarray(cfg.modes, np.float64),
            "model.teacher_singular_values": np.asarray(cfg.teacher, np.float64),
        }
        theta = {}
        for name in wrt:
            theta[name] = scalars[name] if name in scalars else arrays[name]
        base = (y0, args, scalars, arrays)
        depth, gf = cfg.depth, cfg.gradient_flow

        def build(theta, base):
            y, a, sc, ar = dict(base[0]), dict(base[1]), base[2], base[3]
            val = {**sc, **ar, **theta}
            pi0 = val["init.scale"] * val["init.modes"]
            y["w"] = layer_strengths(pi0, val["init.balance"], depth)
            a["s"] = val["model.teacher_singular_values"]
            a["sigma"] = val["model.noise"]
            lr = val["training.lr"]
            a["eta"] = 1.0 + 0.0 * lr if gf else lr
            a["eta2"] = 0.0 * lr if gf else lr**2
            a["input_dim"] = val["model.input_dim"]
            a["output_dim"] = val["model.output_dim"]
            y["G"] = jnp.zeros_like(y["G"])
            y["Phi"] = jnp.zeros_like(y["Phi"])
            return y, a

        return theta, base, build, ("deep_linear", depth, gf)

    def schedule_value(self, cfg) -> float:
        if cfg.gradient_flow:
            raise ConfigError(
                "optimize-schedule with model.kind = 'deep_linear' schedules the SGD learning "
                "rate: it needs training.gradient_flow = false (under gradient flow the ODE in "
                "tau = lr * t does not depend on lr)"
            )
        return cfg.lr

    # ------------------------------------------------------------------ simulation

    def _sim_kwargs(self, cfg) -> dict:
        so = cfg.solve
        return dict(
            t1=so["t1"],
            n_save=so["n_save"],
            spacing=so["spacing"],
            t_first=so["t_first"],
            divergence_bound=so["divergence_bound"],
        )

    def simulate(self, cfg, *, options: dict, schedule=None, checkpoint=None, **over):
        from hildlimits._families.deep_linear.simulate import simulate_deep_linear

        kw = self._sim_kwargs(cfg) | over
        return simulate_deep_linear(
            cfg,
            N=options["N"],
            seeds=options.get("seeds", 8),
            seed=options.get("seed", 0),
            dtype=options.get("dtype"),
            schedule=schedule,
            **kw,
        )

    def check_simulation(self, cfg, options: dict) -> None:
        from hildlimits._families.deep_linear.simulate import sizes

        sizes(cfg, options["N"])

    def simulation_summary(self, sim) -> str:
        return (
            f"{sim.status}: N={sim.N}, {sim.seeds} seeds, risk(t={sim.t[-1]:.6g}) = "
            f"{sim.risk_mean[-1]:.6e} ± {sim.risk_std[-1]:.2e}"
        )

    def validate(self, cfg, *, options: dict, tolerance, outdir=None):
        from hildlimits._families.deep_linear.simulate import sizes
        from hildlimits._pipeline.validate import SimulationStopped, criterion

        Ns = sorted(int(n) for n in options["Ns"])
        for N in Ns:
            sizes(cfg, N)
        system = self.derive(cfg)
        rows, sims, odes = [], [], []
        ode = None
        for N in Ns:
            sim = self.simulate(cfg, options=options | {"N": N})
            if not sim.status == "ok":
                raise SimulationStopped(sim)
            if ode is None or len(ode.t) != len(sim.t) or not np.allclose(ode.t, sim.t):
                ode = self.solve(system, cfg, ts=sim.t)
                if not ode.status.ok:
                    raise ConfigError(f"the ODE {ode.status}: the learning rate is too large")
            crit = criterion(sim.risk_mean, sim.risk_sem, ode.risk, tolerance)
            dev = sim.risk_mean - ode.risk
            mdev = sim.modes_mean - ode.modes
            msem = sim.modes_sem
            ok = msem > 0
            mz = float((np.abs(mdev[ok]) / msem[ok]).max()) if ok.any() else 0.0
            rows.append(
                {
                    "N": N,
                    "seeds": sim.seeds,
                    "max_abs_deviation": float(np.abs(dev).max()),
                    "mean_abs_deviation": float(np.abs(dev).mean()),
                    "max_relative_deviation": float(
                        np.max(np.abs(dev) / np.maximum(np.abs(ode.risk), 1e-300))
                    ),
                    "max_deviation_in_se": crit["max_deviation_in_se"],
                    "mean_deviation_in_se": crit["mean_deviation_in_se"],
                    "fraction_within_tolerance": crit["fraction_within_tolerance"],
                    "worst_time": float(sim.t[crit["worst"]]),
                    "modes_max_abs_deviation": float(np.abs(mdev).max()),
                    "modes_max_deviation_in_se": mz,
                    "t": sim.t.tolist(),
                    "risk": sim.risk_mean.tolist(),
                    "risk_std": sim.risk_std.tolist(),
                    "risk_ode": ode.risk.tolist(),
                    "modes": sim.modes_mean.tolist(),
                    "modes_std": sim.modes_std.tolist(),
                    "modes_ode": ode.modes.tolist(),
                    "simulation_seconds": sim.timings["compile_and_run"],
                }
            )
            sims.append(sim)
            odes.append(ode)
        exponent = None
        if len(rows) >= 2:
            x = np.log([r["N"] for r in rows])
            y = np.log([max(r["mean_abs_deviation"], 1e-300) for r in rows])
            exponent = float(np.polyfit(x, y, 1)[0])
        last = rows[-1]
        passed = last["fraction_within_tolerance"] == 1.0
        tol = tolerance
        what = f"{tol.z_tol} standard errors + {tol.rel_tol:g} x risk + {tol.abs_tol:g} x max risk"
        reason = (
            f"at N={last['N']} every save time is within {what} of the ODE"
            if passed
            else f"at N={last['N']}, "
            f"{100 * (1 - last['fraction_within_tolerance']):.1f}% of save times deviate from "
            f"the ODE by more than {what} (worst at t={last['worst_time']:.4g}; max deviation "
            f"{last['max_abs_deviation']:.3g}, {se_text(last['max_deviation_in_se'], '.1f')} standard errors)"
        )
        report = {
            "per_N": rows,
            "N_exponent": exponent,
            "N_fit": "mean_abs_deviation ~ N^exponent (least squares, log-log)",
            "tolerance": {
                "z_tol": tol.z_tol,
                "rel_tol": tol.rel_tol,
                "abs_tol": tol.abs_tol,
                "criterion": "|d| <= z_tol * se + rel_tol * risk_ode + abs_tol * max(risk_ode) "
                "at every save time, largest N",
            },
            "passed": passed,
            "reason": reason,
            "note": (
                "gradient flow: the ODE drops the eta^2 terms, so online SGD at finite lr "
                "deviates by O(lr) at every N"
                if cfg.gradient_flow
                else "online SGD: the ODE is the N -> oo limit at fixed lr (eta^2 terms kept)"
            ),
        }
        return report, (sims, odes)

    def validation_lines(self, report) -> list[str]:
        lines = [
            f"N={r['N']:>7}: max |d| = {r['max_abs_deviation']:.3e}, mean |d| = "
            f"{r['mean_abs_deviation']:.3e}, max |d|/se = {se_text(r['max_deviation_in_se'], '.2f')}; "
            f"modes: max |d| = {r['modes_max_abs_deviation']:.3e}, max |d|/se = "
            f"{se_text(r['modes_max_deviation_in_se'], '.2f')}"
            for r in report["per_N"]
        ]
        if report["N_exponent"] is not None:
            lines.append(f"N fit: mean |d| ~ N^{report['N_exponent']:.2f}")
        lines.append(("PASS: " if report["passed"] else "FAIL: ") + report["reason"])
        return lines

    # ------------------------------------------------------------------ output

    def solve_meta(self, cfg, system, traj, timings: dict) -> dict:
        from hildlimits._pipeline.cache import cache_key

        return {
            "derivation_key": cache_key(system.structure),
            "timings_s": {"derive": timings["derive"], "solve": timings["solve"]},
            "time_unit": "tau = lr * steps / N" if cfg.gradient_flow else "t = steps / N",
        }

    def summary(self, traj) -> str:
        modes = ", ".join(f"{m:.4g}" for m in traj.modes[-1])
        return (
            f"{traj.status}: risk(t={traj.t[-1]:.6g}) = {traj.risk[-1]:.6e}; modes [{modes}]; "
            f"{len(traj.t)} save times, {traj.num_steps} steps"
        )

    def plot_solve(self, traj, path, *, cfg) -> None:
        from hildlimits._families.deep_linear.plot import plot_deep_linear

        plot_deep_linear(traj, path, title=f"{Path(cfg.source).stem}: deep linear, L={cfg.depth}")

    def plot_validation(self, artefacts, outdir, *, cfg) -> list:
        from hildlimits._families.deep_linear.plot import plot_deep_linear

        sims, odes = artefacts
        outdir = Path(outdir)
        path = outdir / "modes.png"
        plot_deep_linear(
            odes[-1], path, sims=sims, title=f"deep linear, L={cfg.depth}: ODE vs simulations"
        )
        return [path]


FAMILY = DeepLinearFamily()
