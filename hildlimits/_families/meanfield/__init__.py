r"""The ``meanfield`` family: wide two-layer networks in mean-field scaling (particle ODEs).

State: particles ``r_j`` (P x M), ``q_j``, ``a_j`` (P); time ``tau = lr * steps / d``; the ODE is
the ``d -> oo``, then ``p -> oo``, ``eta -> 0`` limit (see ``docs/meanfield.md``). Config schema
(strict, unknown keys are errors)::

    [model]     kind = "meanfield", M, activation, teacher_activation, train_second_layer, noise,
                finite_width
    [training]  lr, lr_second_layer, batch_size, gradient_flow
    [init]      T, v_teacher, q, a_mean, a_std, particles, sampling, seed
    [solve]     t1, n_save, spacing, t_first, rtol, atol, solver, max_steps, divergence_bound,
                steady_state, method ("quadrature" | "pairwise"), nodes
"""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hildlimits._errors import ConfigError
from hildlimits._families.base import Family, Flag
from hildlimits._pipeline.validate import se_text
from hildlimits._pipeline.validators import check_sections, int_list

SCHEMA = {
    "model": {
        "kind",
        "M",
        "activation",
        "teacher_activation",
        "train_second_layer",
        "noise",
        "finite_width",
    },
    "training": {"lr", "lr_second_layer", "batch_size", "gradient_flow"},
    "init": {"T", "v_teacher", "q", "a_mean", "a_std", "particles", "sampling", "seed"},
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
        "method",
        "nodes",
    },
}
REQUIRED = {"model": {"M"}, "training": {"lr"}, "init": {"T"}, "solve": {"t1"}}
SOLVE_DEFAULTS = {
    "n_save": 200,
    "spacing": "log",
    "t_first": None,
    "rtol": 1e-8,
    "atol": 1e-10,
    "solver": "tsit5",
    "max_steps": 100_000,
    "divergence_bound": 1e8,
    "steady_state": None,
    "method": "quadrature",
    "nodes": None,
}
_RUNNER_KEYS = tuple(k for k in SOLVE_DEFAULTS if k not in ("method", "nodes")) + ("t1",)
_INIT_SCALARS = ("init.a_mean", "init.a_std", "init.q")
GRADIENT_FLOW_BATCH = 32
"""Samples per step with which ``simulate`` approximates gradient descent on the population loss
under ``[training] gradient_flow = true`` when no ``batch_size`` is given (the particles' SGD
noise is ``O(lr / batch_size)`` per unit ``tau``)."""


@dataclass(frozen=True, eq=False)
class MeanFieldConfig:
    """A resolved ``kind = "meanfield"`` configuration."""

    model: object
    init: object
    lr: float
    lr_second_layer: float
    noise: float
    solve: dict
    source: str = "<dict>"
    kind: str = "meanfield"
    # training.lr_second_layer not given: it follows training.lr in sweeps and gradients
    lr_tied: bool = False
    # samples per simulated step (None: 1, or GRADIENT_FLOW_BATCH under gradient_flow)
    batch_size: int | None = None
    gradient_flow: bool = False

    @property
    def simulation_batch(self) -> int:
        """Samples per step of the simulator."""
        if self.batch_size is not None:
            return self.batch_size
        return GRADIENT_FLOW_BATCH if self.gradient_flow else 1

    def solve_kwargs(self) -> dict:
        return dict(self.solve)

    def resolved(self) -> dict:
        ini = self.init
        return {
            "model": {
                "kind": "meanfield",
                "M": self.model.M,
                "activation": self.model.activation,
                "teacher_activation": self.model.teacher_activation,
                "train_second_layer": self.model.train_second_layer,
                "finite_width": self.model.finite_width,
                "noise": self.noise,
            },
            "training": {
                "lr": self.lr,
                "lr_second_layer": self.lr_second_layer,
                "batch_size": self.simulation_batch,
                "gradient_flow": self.gradient_flow,
            },
            "init": {
                "T": ini.T.tolist(),
                "v_teacher": ini.v_teacher.tolist(),
                "q": ini.q,
                "a_mean": ini.a_mean,
                "a_std": ini.a_std,
                "particles": ini.particles,
                "sampling": ini.sampling,
                "seed": ini.seed,
            },
            "solve": {k: v for k, v in self.solve.items() if v is not None},
        }


def _rates(lr, lr2):
    from hildlimits._pipeline.validators import real as _real

    lr = _real("training.lr", lr)
    if lr <= 0:
        raise ConfigError(f"training.lr must be positive (tau = lr * steps / d), got {lr!r}")
    lr2 = _real("training.lr_second_layer", lr if lr2 is None else lr2, nonnegative=True)
    return lr, lr2


def _training_options(tr: dict) -> tuple[int | None, bool]:
    """``training.batch_size`` (a positive integer or absent) and ``training.gradient_flow``."""
    batch = tr.get("batch_size")
    if batch is not None and (
        isinstance(batch, bool) or not isinstance(batch, numbers.Integral) or batch < 1
    ):
        raise ConfigError(f"training.batch_size must be a positive integer, got {batch!r}")
    flow = tr.get("gradient_flow", False)
    if not isinstance(flow, bool):
        raise ConfigError(f"training.gradient_flow must be true or false, got {flow!r}")
    return (None if batch is None else int(batch)), flow


def _one_int(text, name) -> int:
    vals = int_list(str(text), name)
    if len(vals) != 1:
        raise ConfigError(f"{name} must be one positive integer here, got {text!r}")
    return vals[0]


def _standard_normals(init) -> np.ndarray:
    """The particles' readout weights standardised: ``a = a_mean + a_std * z``."""
    z = dataclasses.replace(init, a_mean=0.0, a_std=1.0).second_layer()
    return np.asarray(z, np.float64)


class MeanFieldFamily(Family):
    sections = ("model", "training", "init", "solve")
    kind = "meanfield"
    title = "mean-field limit of wide two-layer networks (particles r_j, q_j, a_j)"
    sweepable = {
        "training.lr": "first-layer learning rate eta (the ODE sees only eta_a / eta)",
        "training.lr_second_layer": "readout learning rate eta_a",
        "model.noise": "output noise sigma (absent from the eta -> 0 ODE)",
        "init.a_mean": "mean of the initial readout weights (a value)",
        "init.a_std": "standard deviation of the initial readout weights (a value)",
        "init.q": "initial |w_j|^2 / d (a value)",
    }
    differentiable = {
        "training.lr": "eta (through eta_a / eta)",
        "training.lr_second_layer": "eta_a (through eta_a / eta)",
        "model.noise": "sigma (the eta -> 0 ODE does not depend on it: gradient 0)",
        "init.a_mean": "mean of the initial readout weights",
        "init.a_std": "standard deviation of the initial readout weights",
        "init.q": "initial |w_j|^2 / d",
        "init.T": "teacher overlaps T",
        "init.v_teacher": "teacher second layer v*",
    }
    schedule_param = "training.lr_second_layer"
    _width = Flag(
        ("--width",),
        {"help": "hidden units p of the simulated networks (meanfield; validate: a list)"},
    )
    flags = {
        "simulate": (_width,),
        "validate": (_width,),
        "optimize-schedule": (_width,),
    }

    # ------------------------------------------------------------------ config

    def config(self, data: dict, *, source: str = "<dict>") -> MeanFieldConfig:
        from hildlimits._families.meanfield.model import MeanField, MeanFieldInit, default_nodes
        from hildlimits._pipeline.runner import check_solve_options
        from hildlimits._pipeline.validators import real as _real

        check_sections(data, ("model", "training", "init", "solve"), SCHEMA, REQUIRED)
        m, tr, ini, so = data["model"], data["training"], data["init"], data["solve"]
        model = MeanField(
            M=m["M"],
            activation=m.get("activation", "erf"),
            teacher_activation=m.get("teacher_activation"),
            train_second_layer=m.get("train_second_layer", True),
            finite_width=m.get("finite_width", False),
        )
        M = model.M
        init = MeanFieldInit(
            T=ini["T"],
            v_teacher=ini.get("v_teacher", [1.0] * M),
            q=ini.get("q", 1.0),
            a_mean=ini.get("a_mean", 0.0),
            a_std=ini.get("a_std", 1.0),
            particles=ini.get("particles", 2048),
            sampling=ini.get("sampling", "quantile"),
            seed=ini.get("seed", 0),
        )
        if init.M != M:
            raise ConfigError(f"init.T must be {M}x{M} (model.M = {M}), got {init.T.tolist()!r}")
        lr, lr2 = _rates(tr["lr"], tr.get("lr_second_layer"))
        batch, flow = _training_options(tr)
        noise = _real("model.noise", m.get("noise", 0.0), nonnegative=True)
        opts = dict(SOLVE_DEFAULTS)
        opts.update(so)
        for key in ("n_save", "max_steps"):
            v = opts[key]
            if isinstance(v, bool) or not isinstance(v, numbers.Integral):
                raise ConfigError(f"solve.{key} must be a positive integer, got {v!r}")
        if opts["method"] not in ("quadrature", "pairwise"):
            raise ConfigError(
                f"solve.method must be 'quadrature' or 'pairwise', got {opts['method']!r}"
            )
        if opts["nodes"] is None:
            opts["nodes"] = default_nodes(M)
        n = opts["nodes"]
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 2:
            raise ConfigError(f"solve.nodes must be an integer >= 2, got {n!r}")
        check_solve_options(**{k: opts[k] for k in _RUNNER_KEYS})
        return MeanFieldConfig(
            model=model,
            init=init,
            lr=lr,
            lr_second_layer=lr2,
            noise=noise,
            solve=opts,
            source=source,
            lr_tied="lr_second_layer" not in tr,
            batch_size=batch,
            gradient_flow=flow,
        )

    def from_objects(
        self, *, model, init, lr, lr_second_layer=None, noise=0.0, **solve
    ) -> MeanFieldConfig:
        """A config from Python objects (:class:`~hildlimits.MeanField`,
        :class:`~hildlimits.MeanFieldInit`, rates; ``solve`` options as in the ``[solve]``
        table)."""
        from hildlimits._families.meanfield.model import default_nodes

        lr, lr2 = _rates(lr, lr_second_layer)
        opts = dict(SOLVE_DEFAULTS) | {"t1": 1.0} | solve
        if opts["nodes"] is None:
            opts["nodes"] = default_nodes(model.M)
        return MeanFieldConfig(
            model=model,
            init=init,
            lr=lr,
            lr_second_layer=lr2,
            noise=float(noise),
            solve=opts,
            lr_tied=lr_second_layer is None,
        )

    def resolved(self, cfg) -> dict:
        return cfg.resolved()

    # ------------------------------------------------------------------ derivation and ODE

    def derive(self, cfg):
        from hildlimits._families.meanfield.model import derive_meanfield

        return derive_meanfield(cfg.model)

    def solve_options(self, cfg) -> dict:
        return {k: cfg.solve[k] for k in _RUNNER_KEYS}

    def solve(self, system, cfg, *, ts=None, schedule=None, **over):
        from hildlimits._families.meanfield.model import solve_meanfield

        kw = cfg.solve_kwargs() | over
        if ts is not None:
            kw["ts"] = ts
        return solve_meanfield(
            system,
            model=cfg.model,
            init=cfg.init,
            lr=cfg.lr,
            lr_second_layer=cfg.lr_second_layer,
            lr_second_layer_schedule=schedule,
            **kw,
        )

    def dynamics(self, system, cfg, *, schedule: bool = False):
        from hildlimits._families.meanfield.model import meanfield_dynamics

        return meanfield_dynamics(system, cfg.model, method=cfg.solve["method"], schedule=schedule)

    def _args(self, system, cfg):
        from hildlimits._families.meanfield.model import _make_args

        ratio = cfg.lr_second_layer / cfg.lr if cfg.model.train_second_layer else 0.0
        return _make_args(system, cfg.init, ratio, cfg.solve["method"], cfg.solve["nodes"], cfg.lr)

    def initial(self, system, cfg):
        from hildlimits._pipeline.runner import bounds

        y0 = cfg.init.state()
        args = self._args(system, cfg)
        args |= bounds(
            y0,
            divergence_bound=cfg.solve["divergence_bound"],
            steady_state=cfg.solve["steady_state"],
        )
        args["sigma"] = np.float64(cfg.noise)  # not in the eta -> 0 drift (kept for grad)
        return y0, args

    # ------------------------------------------------------------------ parameters

    def with_values(self, cfg, point: dict):
        lr = point.get("training.lr", cfg.lr)
        lr2 = point.get("training.lr_second_layer", None)
        if lr2 is None:
            lr2 = lr if cfg.lr_tied else cfg.lr_second_layer
        lr, lr2 = _rates(lr, lr2)
        init = cfg.init
        changes = {k.split(".", 1)[1]: point[k] for k in _INIT_SCALARS if k in point}
        if changes:
            init = dataclasses.replace(init, **changes)  # validated again
        noise = point.get("model.noise", cfg.noise)
        if noise < 0:
            raise ConfigError(f"model.noise must be non-negative, got {noise!r}")
        return dataclasses.replace(cfg, lr=lr, lr_second_layer=lr2, noise=float(noise), init=init)

    def parameters(self, system, cfg, wrt):
        y0, args = self.initial(system, cfg)
        z = _standard_normals(cfg.init)
        trained = cfg.model.train_second_layer
        tied = cfg.lr_tied
        scalars = {
            "training.lr": cfg.lr,
            "training.lr_second_layer": cfg.lr_second_layer,
            "model.noise": cfg.noise,
            "init.a_mean": cfg.init.a_mean,
            "init.a_std": cfg.init.a_std,
            "init.q": cfg.init.q,
        }
        theta = {}
        for name in wrt:
            if name in scalars:
                theta[name] = np.float64(scalars[name])
            elif name == "init.T":
                theta[name] = np.asarray(cfg.init.T, np.float64)
            else:
                theta[name] = np.asarray(cfg.init.v_teacher, np.float64)
        base = (y0, args, z, {k: np.float64(v) for k, v in scalars.items()})
        lr2_follows = tied and "training.lr_second_layer" not in wrt

        def build(theta, base):
            y, a, z, sc = dict(base[0]), dict(base[1]), base[2], base[3]
            val = {**sc, **theta}
            lr = val["training.lr"]
            lr2 = lr if lr2_follows else val["training.lr_second_layer"]
            a["ratio"] = lr2 / lr if trained else 0.0 * lr
            a["eta"] = lr
            a["sigma"] = val["model.noise"]
            y["a"] = val["init.a_mean"] + val["init.a_std"] * z
            y["q"] = val["init.q"] + 0.0 * y["q"]
            if "init.T" in theta:
                a["T"] = theta["init.T"]
            if "init.v_teacher" in theta:
                a["v_teacher"] = theta["init.v_teacher"]
            return y, a

        return theta, base, build, (trained, lr2_follows)

    def schedule_value(self, cfg) -> float:
        if not cfg.model.train_second_layer:
            raise ConfigError(
                "optimize-schedule with model.kind = 'meanfield' schedules the readout learning "
                "rate eta_a(tau): it needs model.train_second_layer = true"
            )
        return cfg.lr_second_layer

    # ------------------------------------------------------------------ simulation

    def _sim_kwargs(self, cfg) -> dict:
        so = cfg.solve
        return dict(
            init=cfg.init,
            lr=cfg.lr,
            lr_second_layer=cfg.lr_second_layer,
            noise=cfg.noise,
            t1=so["t1"],
            n_save=so["n_save"],
            spacing=so["spacing"],
            t_first=so["t_first"],
            divergence_bound=so["divergence_bound"],
            batch_size=cfg.simulation_batch,
        )

    def _width(self, options, command):
        if options.get("width") is None:
            raise ConfigError(
                f"{command} with model.kind = 'meanfield' needs --width (hidden units p)"
            )
        return _one_int(options["width"], "--width")

    def simulate(self, cfg, *, options: dict, schedule=None, checkpoint=None, **over):
        from hildlimits._families.meanfield.simulate import simulate_meanfield

        width = over.pop("width", None) or self._width(options, "simulate")
        kw = self._sim_kwargs(cfg) | over
        return simulate_meanfield(
            cfg.model,
            d=options["N"],
            width=width,
            seeds=options.get("seeds", 8),
            seed=options.get("seed", 0),
            dtype=options.get("dtype"),
            lr_second_layer_schedule=schedule,
            checkpoint=checkpoint,
            **kw,
        )

    def check_simulation(self, cfg, options: dict) -> None:
        self._width(options, "simulate")

    def simulation_summary(self, sim) -> str:
        return (
            f"{sim.status}: d={sim.d}, width={sim.width}, {sim.seeds} seeds, "
            f"risk(tau={sim.t[-1]:.6g}) = {sim.risk_mean[-1]:.6e} ± {sim.risk_std[-1]:.2e}"
        )

    def validate(self, cfg, *, options: dict, tolerance, outdir=None):
        from hildlimits._pipeline.validate import (
            ValidationInterrupted,
            check_validation_inputs,
            interrupted_report,
        )

        if options.get("width") is None:
            raise ConfigError("validate with model.kind = 'meanfield' needs --width (e.g. 32,128)")
        Ns = [int(n) for n in options["Ns"]]
        widths = int_list(str(options["width"]), "--width")
        if len(Ns) == 1:
            Ns = Ns * len(widths)
        if len(widths) == 1:
            widths = widths * len(Ns)
        if len(Ns) != len(widths):
            raise ConfigError(
                f"--N and --width must list as many values (or one), got {len(Ns)} and "
                f"{len(widths)}"
            )
        for d, p in zip(Ns, widths, strict=True):
            if p > d:
                raise ConfigError(f"width must not exceed d: got --width {p} with --N {d}")
        # distinct widths (the width fit), at least two seeds (standard errors)
        check_validation_inputs(widths, options.get("seeds", 8), name="--width")
        system = self.derive(cfg)
        sims, rows, odes = [], [], []
        try:
            self._validate_each(cfg, system, options, tolerance, Ns, widths, sims, rows, odes)
        except KeyboardInterrupt as exc:
            if not rows or isinstance(exc, ValidationInterrupted):
                raise
            report = self._report(rows, tolerance)
            report = interrupted_report(report, len(rows), len(widths))
            raise ValidationInterrupted(report, (sims, odes), len(rows)) from None
        return self._report(rows, tolerance), (sims, odes)

    def _validate_each(self, cfg, system, options, tolerance, Ns, widths, sims, rows, odes):
        """Simulate and solve each (d, width) in turn, by increasing width."""
        from hildlimits._pipeline.validate import SimulationStopped, criterion

        ode = None
        for d, p in sorted(zip(Ns, widths, strict=True), key=lambda x: x[1]):
            sim = self.simulate(cfg, options=options | {"N": d}, width=p)
            if not sim.status == "ok":
                raise SimulationStopped(sim, f"width={p}, d={d}")
            if ode is None or len(ode.t) != len(sim.t) or not np.allclose(ode.t, sim.t):
                ode = self.solve(system, cfg, ts=sim.t)
                if ode.status != "ok":
                    raise ConfigError(f"the ODE {ode.status}: the learning rate is too large")
            crit = criterion(sim.risk_mean, sim.risk_sem, ode.risk, tolerance)
            dev = sim.risk_mean - ode.risk
            rows.append(
                {
                    "width": p,
                    "d": d,
                    "seeds": sim.seeds,
                    "max_abs_deviation": float(np.abs(dev).max()),
                    "mean_abs_deviation": float(np.abs(dev).mean()),
                    "max_relative_deviation": float(np.max(np.abs(dev) / np.abs(ode.risk))),
                    "max_deviation_in_se": crit["max_deviation_in_se"],
                    "mean_deviation_in_se": crit["mean_deviation_in_se"],
                    "fraction_within_tolerance": crit["fraction_within_tolerance"],
                    "worst_time": float(sim.t[crit["worst"]]),
                    "t": sim.t.tolist(),
                    "risk": sim.risk_mean.tolist(),
                    "risk_std": sim.risk_std.tolist(),
                    "risk_ode": ode.risk.tolist(),
                    "simulation_seconds": sim.timings["compile_and_run"],
                }
            )
            sims.append(sim)
            odes.append(ode)

    def _report(self, rows: list, tolerance) -> dict:
        """The report of the finished widths ``rows`` (criterion at the largest)."""
        exponent = None
        if len({r["width"] for r in rows}) >= 2:
            x = np.log([r["width"] for r in rows])
            y = np.log([max(r["mean_abs_deviation"], 1e-300) for r in rows])
            exponent = float(np.polyfit(x, y, 1)[0])
        last = rows[-1]
        passed = last["fraction_within_tolerance"] == 1.0
        tol = tolerance
        what = f"{tol.z_tol} standard errors + {tol.rel_tol:g} x risk + {tol.abs_tol:g} x max risk"
        reason = (
            f"at width={last['width']} every save time is within {what} of the ODE"
            if passed
            else f"at width={last['width']}, "
            f"{100 * (1 - last['fraction_within_tolerance']):.1f}% of save times deviate from "
            f"the ODE by more than {what} (worst at tau={last['worst_time']:.4g}; max deviation "
            f"{last['max_abs_deviation']:.3g}, {se_text(last['max_deviation_in_se'], '.1f')} standard "
            "errors)"
        )
        report = {
            "per_width": rows,
            "width_exponent": exponent,
            "width_fit": "mean_abs_deviation ~ width^exponent (least squares, log-log)",
            "tolerance": {
                "z_tol": tol.z_tol,
                "rel_tol": tol.rel_tol,
                "abs_tol": tol.abs_tol,
                "criterion": "|d| <= z_tol * se + rel_tol * risk_ode + abs_tol * max(risk_ode) "
                "at every save time, largest width",
            },
            "passed": passed,
            "reason": reason,
            "note": "the ODE is the eta -> 0, p -> oo limit: finite eta adds an O(eta) deviation "
            "that does not vanish with the width",
        }
        return report

    def validation_lines(self, report) -> list[str]:
        lines = [
            f"width={r['width']:>6} d={r['d']:>7}: max |d| = {r['max_abs_deviation']:.3e}, "
            f"mean |d| = {r['mean_abs_deviation']:.3e}, max |d|/se = "
            f"{se_text(r['max_deviation_in_se'], '.2f')}"
            for r in report["per_width"]
        ]
        if report["width_exponent"] is not None:
            lines.append(f"width fit: mean |d| ~ p^{report['width_exponent']:.2f}")
        lines.append(("PASS: " if report["passed"] else "FAIL: ") + report["reason"])
        return lines

    # ------------------------------------------------------------------ output

    def solve_meta(self, cfg, system, traj, timings: dict) -> dict:
        return {
            "timings_s": {"total": timings["derive"] + timings["solve"], **traj.timings},
            "particles": cfg.init.particles,
        }

    def summary(self, traj) -> str:
        return (
            f"{traj.status}: risk(tau={traj.t[-1]:.6g}) = {traj.risk[-1]:.6e}; "
            f"{traj.r.shape[1]} particles, {len(traj.t)} save times, {traj.num_steps} steps"
        )

    def plot_solve(self, traj, path, *, cfg) -> None:
        from hildlimits._families.meanfield.plot import plot_meanfield

        plot_meanfield(traj, path, title=f"{Path(cfg.source).stem}: mean field, M={cfg.model.M}")

    def plot_validation(self, artefacts, outdir, *, cfg) -> list:
        from hildlimits._families.meanfield.plot import plot_meanfield
        from hildlimits._pipeline.plot import _pyplot

        sims, odes = artefacts
        rows = [
            {"width": s.width, "max_abs_deviation": float(np.abs(s.risk_mean - o.risk).max())}
            for s, o in zip(sims, odes, strict=True)
        ]
        outdir = Path(outdir)
        plot_meanfield(
            odes[-1], outdir / "cloud.png", sims=sims, title="mean-field ODE vs simulations"
        )
        plt = _pyplot()
        fig, ax = plt.subplots(figsize=(5, 4))
        ax.loglog([r["width"] for r in rows], [r["max_abs_deviation"] for r in rows], "o-")
        ax.set_xlabel("width p")
        ax.set_ylabel("max_τ |risk_sim − risk_ODE|")
        fig.tight_layout()
        fig.savefig(outdir / "deviation.png", dpi=100)
        plt.close(fig)
        return [outdir / "cloud.png", outdir / "deviation.png"]


FAMILY = MeanFieldFamily()
