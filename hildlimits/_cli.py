"""Command-line interface: ``hildlimits derive|solve|simulate|validate|sweep|grad|optimize-schedule CONFIG ...``.

Exit codes: 0 success; 1 the dynamics diverged or a validation failed (the output is still
written); 2 bad input, a request too large for the machine, or a busy output folder; 130
interrupted (Ctrl-C; what had finished is written). See ``docs/guarantees.md``.
The CLI enables JAX float64 explicitly (``jax_enable_x64``) before any computation.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from hildlimits._errors import ConfigError, DivergedError, SolveError
from hildlimits._pipeline.runner import RunStatus, Status


def _versions() -> dict:
    import diffrax
    import jax

    from hildlimits._pipeline.cache import sympy_version  # (without importing SymPy)
    from hildlimits._version import __version__

    return {
        "hildlimits": __version__,
        "jax": jax.__version__,
        "diffrax": diffrax.__version__,
        "sympy": sympy_version(),
        "python": platform.python_version(),
    }


def _check_writable(path: Path, what: str) -> None:
    if path.is_dir():
        raise ConfigError(f"{what} {str(path)!r} is a directory, expected a file path")
    try:
        parent = path.resolve().parent
    except (OSError, RuntimeError) as exc:
        raise ConfigError(f"{what} {str(path)!r}: {exc}") from None
    for above in (parent, *parent.parents):
        if above.exists():
            if not above.is_dir():
                raise ConfigError(
                    f"{what} {str(path)!r}: {str(above)!r} is a file, not a directory"
                )
            break
    if not parent.exists():
        try:
            parent.mkdir(parents=True)
        except OSError as exc:
            raise ConfigError(
                f"{what}: cannot create directory {str(parent)!r}: {exc.strerror}"
            ) from None
    if not os.access(parent, os.W_OK):
        raise ConfigError(f"{what}: directory {str(parent)!r} is not writable")


def _outdir(path: str, name: str = "--out") -> Path:
    """A writable output directory (created if needed)."""
    outdir = Path(path)
    if outdir.exists() and not outdir.is_dir():
        raise ConfigError(f"{name} {str(outdir)!r} exists and is not a directory")
    _check_writable(outdir / "x", name)
    return outdir


def _load(ns):
    """Enable float64 (explicitly, the CLI's policy), load the config, look its family up once
    and check that the family supports the command and the flags given."""
    import jax

    jax.config.update("jax_enable_x64", True)
    from hildlimits._families import all_families, family_of
    from hildlimits._pipeline.config import load_config

    cfg = load_config(ns.config)
    family = family_of(cfg)
    family.check_command(ns.command)
    own = {f.dest for f in family.flags.get(ns.command, ())}
    for other in all_families():
        for flag in other.flags.get(ns.command, ()):
            if flag.dest in own:
                continue
            value = getattr(ns, flag.dest, None)
            if value is not None and value != flag.options.get("default"):
                users = [f.kind for f in all_families() if flag in f.flags.get(ns.command, ())]
                kinds = " or ".join(repr(k) for k in users)
                raise ConfigError(f"{flag.names[0]} applies to model.kind = {kinds} only")
    return cfg, family


def _meta(cfg, family) -> dict:
    return {
        "config": family.resolved(cfg),
        "config_file": cfg.source,
        "versions": _versions(),
    }


def _tolerance(ns):
    from hildlimits._pipeline.validate import Tolerance

    return Tolerance(z_tol=ns.z_tol, rel_tol=ns.rel_tol, abs_tol=ns.abs_tol)


def _options(ns, family) -> dict:
    """The command's flags as a dict (common ones and the family's own)."""
    return {k: v for k, v in vars(ns).items() if k not in ("func", "command", "config")}


def _write_json(path: Path, data: dict) -> None:
    from hildlimits._pipeline.io import write_json

    write_json(path, data)


def _locked(path: Path, *, directory: bool):
    """The output lock of a run (:func:`hildlimits._pipeline.io.output_lock`)."""
    from hildlimits._pipeline.io import output_lock

    return output_lock(path, directory=directory)


def _preflight(ns, cfg, family, options: dict | None = None) -> None:
    """Refuse a request whose estimated memory or run time does not fit, before any work
    (:mod:`hildlimits._pipeline.limits`); ``--force`` turns the refusal into a warning."""
    from hildlimits._pipeline.limits import check_command

    opts = _options(ns, family) if options is None else options
    check_command(family, cfg, ns.command, opts, force=getattr(ns, "force", False))


def _phase(label: str):
    from hildlimits._pipeline.progress import phase

    return phase(label)


def cmd_derive(ns) -> int:
    cfg, family = _load(ns)
    system = family.derive(cfg)
    if ns.source:
        text = system.source
    elif ns.latex:
        text = system.latex()
    elif ns.markdown:
        text = system.markdown()
    else:
        text = str(system)
    if ns.out:
        out = Path(ns.out)
        _check_writable(out, "--out")
        out.write_text(text)
    else:
        print(text)
    return 0


def cmd_solve(ns) -> int:
    cfg, family = _load(ns)
    out = Path(ns.out)
    _check_writable(out, "--out")
    if ns.plot:
        _check_writable(Path(ns.plot), "--plot")
    _preflight(ns, cfg, family)
    with _locked(out, directory=False):
        return _solve(ns, cfg, family, out)


def _solve(ns, cfg, family, out: Path) -> int:
    t0 = time.perf_counter()
    with _phase("deriving"):
        system = family.derive(cfg)
    t_derive = time.perf_counter() - t0
    t0 = time.perf_counter()
    with _phase("compiling and solving"):
        traj = family.solve(system, cfg)
    t_solve = time.perf_counter() - t0
    data = traj.to_dict()
    data["meta"] = (
        _meta(cfg, family)
        | {"status": traj.status}
        | family.solve_meta(cfg, system, traj, {"derive": t_derive, "solve": t_solve})
    )
    _write_json(out, data)
    if ns.plot:
        family.plot_solve(traj, ns.plot, cfg=cfg)
    print(f"{family.summary(traj)}; wrote {out}" + (f" and {ns.plot}" if ns.plot else ""))
    if traj.status.diverged:
        print(f"error: the dynamics {traj.status} (learning rate too large?)", file=sys.stderr)
        return 1
    return 0


def _int_list(text: str, name: str) -> list[int]:
    from hildlimits._pipeline.validators import int_list

    return int_list(text, name)


def cmd_simulate(ns) -> int:
    cfg, family = _load(ns)
    out = Path(ns.out)
    _check_writable(out, "--out")
    if ns.seeds < 1:
        raise ConfigError(f"--seeds must be a positive integer, got {ns.seeds}")
    if ns.N < 1:
        raise ConfigError(f"--N must be a positive integer, got {ns.N}")
    if getattr(ns, "test_samples", 0) and ns.test_samples < 0:
        raise ConfigError(f"--test-samples must be a non-negative integer, got {ns.test_samples}")
    _preflight(ns, cfg, family)
    with _locked(out, directory=False):
        return _simulate(ns, cfg, family, out)


def _simulate(ns, cfg, family, out: Path) -> int:
    def as_json(sim) -> dict:
        data = sim.to_dict()
        data["meta"] = _meta(cfg, family) | {
            "status": sim.status,
            "device": __import__("jax").default_backend(),
            "timings_s": sim.timings,
        }
        return data

    def checkpoint(partial):
        _write_json(out, as_json(partial))

    sim = family.simulate(cfg, options=_options(ns, family), checkpoint=checkpoint)
    _write_json(out, as_json(sim))
    if len(sim.t):
        print(f"{family.simulation_summary(sim)}; wrote {out}")
    if sim.diverged:
        print(f"error: the simulation {sim.status} (learning rate too large?)", file=sys.stderr)
        return 1
    if RunStatus.parse(sim.status).kind is Status.INTERRUPTED:
        print(f"{sim.status}: partial results written to {out}", file=sys.stderr)
        return 130
    return 0


def cmd_validate(ns) -> int:
    cfg, family = _load(ns)
    Ns = _int_list(ns.N, "--N")
    if ns.seeds < 2:
        raise ConfigError(
            f"--seeds must be at least 2 for validate (the agreement is measured in standard "
            f"errors over seeds, and a standard error needs at least two seeds), got {ns.seeds}"
        )
    outdir = _outdir(ns.out)
    options = _options(ns, family) | {"Ns": Ns}
    _preflight(ns, cfg, family, options)
    with _locked(outdir, directory=True):
        return _validate(ns, cfg, family, outdir, options)


def _validate(ns, cfg, family, outdir: Path, options: dict) -> int:
    import jax

    from hildlimits._pipeline.validate import SimulationStopped, ValidationInterrupted

    try:
        report, artefacts = family.validate(cfg, options=options, tolerance=_tolerance(ns))
    except SimulationStopped as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1 if exc.simulation.diverged else 130
    except ValidationInterrupted as exc:
        # Ctrl-C after some N finished: keep them (report.json marked interrupted)
        report, artefacts = exc.report, exc.artefacts
        report["meta"] = _meta(cfg, family) | {"device": jax.default_backend()}
        _write_json(outdir / "report.json", report)
        done = exc.done
        print(
            f"interrupted: the {done} value{'s' if done != 1 else ''} of --N that finished "
            f"{'are' if done != 1 else 'is'} kept in {outdir / 'report.json'}",
            file=sys.stderr,
        )
        return 130
    report["meta"] = _meta(cfg, family) | {"device": jax.default_backend()}
    _write_json(outdir / "report.json", report)
    paths = family.plot_validation(artefacts, outdir, cfg=cfg)
    for line in family.validation_lines(report):
        print(line)
    print("wrote " + ", ".join(str(p) for p in [outdir / "report.json", *paths]))
    return 0 if report["passed"] else 1


def cmd_sweep(ns) -> int:
    from hildlimits._pipeline.sweep import parse_param

    cfg, family = _load(ns)
    params = {}
    for spec in ns.param:
        name, values = parse_param(spec, family)
        if name in params:
            raise ConfigError(f"--param {name} is given twice")
        params[name] = values
    if ns.batch_size is not None and ns.batch_size < 1:
        raise ConfigError(f"--batch-size must be a positive integer, got {ns.batch_size}")
    outdir = _outdir(ns.out)
    from hildlimits._pipeline.limits import grid_points
    from hildlimits._pipeline.sweep import default_batch_size

    batch = ns.batch_size if ns.batch_size is not None else default_batch_size()
    _preflight(ns, cfg, family, {"points": grid_points(params), "batch_size": batch})
    with _locked(outdir, directory=True):
        return _sweep(ns, cfg, family, outdir, params)


def _sweep(ns, cfg, family, outdir: Path, params: dict) -> int:
    import jax

    from hildlimits._pipeline.sweep import plot_sweep, sweep

    so = family.solve_options(cfg)
    with _phase("deriving"):
        system = family.derive(cfg)
    try:
        res = sweep(
            system,
            config=cfg,
            params=params,
            **{k: v for k, v in so.items() if k != "steady_state"},
            batch_size=ns.batch_size,
            shard=not ns.no_shard,
            spread=ns.spread,
            store=outdir,
            distributed=ns.distributed,
            force=ns.force,
        )
    except KeyboardInterrupt:
        print(
            f"interrupted: finished batches are kept in {outdir}; rerun the same command to resume",
            file=sys.stderr,
        )
        return 130
    if jax.process_index() != 0:
        return 0
    data = res.to_dict()
    data["meta"] = _meta(cfg, family) | {"devices": [str(d) for d in jax.devices()]}
    _write_json(outdir / "sweep.json", data)
    plot_sweep(res, outdir / "sweep.png", log_time=so["spacing"] == "log")
    kinds = [RunStatus.parse(s).kind for s in res.status]
    n_div = sum(k is Status.DIVERGED for k in kinds)
    n_bad = sum(k not in (Status.OK, Status.DIVERGED) for k in kinds)
    print(
        f"{len(res.points)} points: {len(res.points) - n_div - n_bad} ok, {n_div} diverged"
        + (f", {n_bad} other" if n_bad else "")
        + f"; wrote {outdir / 'sweep.json'} and {outdir / 'sweep.png'}"
    )
    return 0


def cmd_grad(ns) -> int:
    cfg, family = _load(ns)
    out = Path(ns.out)
    _check_writable(out, "--out")
    if ns.max_steps < 1:
        raise ConfigError(f"--max-steps must be a positive integer, got {ns.max_steps}")
    _preflight(ns, cfg, family)
    with _locked(out, directory=False):
        return _grad(ns, cfg, family, out)


def _grad(ns, cfg, family, out: Path) -> int:
    from hildlimits._pipeline.grad import gradient

    wrt = [w.strip() for w in ns.wrt.split(",") if w.strip()]
    so = family.solve_options(cfg)
    with _phase("deriving"):
        system = family.derive(cfg)
    with _phase("compiling and differentiating the solve"):
        value, grads = _gradient(gradient, system, cfg, wrt, so, ns)
    return _grad_write(ns, cfg, family, out, wrt, value, grads)


def _gradient(gradient, system, cfg, wrt, so, ns):
    return gradient(
        system,
        config=cfg,
        wrt=wrt,
        t1=so["t1"],
        observable=ns.observable,
        rtol=so["rtol"],
        atol=so["atol"],
        solver=so["solver"],
        max_steps=min(so["max_steps"], ns.max_steps),
    )


def _grad_write(ns, cfg, family, out, wrt, value, grads) -> int:
    data = {
        "risk": value,
        "observable": "risk at t1" if ns.observable == "final" else "time-averaged risk on [0, t1]",
        "grad": {
            k: (v if isinstance(v, float) else np.asarray(v).tolist()) for k, v in grads.items()
        },
        "meta": _meta(cfg, family) | {"wrt": wrt},
    }
    _write_json(out, data)
    print(f"{data['observable']} = {value:.6e}")
    for k, v in grads.items():
        print(f"  d/d {k} = {v if isinstance(v, float) else np.asarray(v).tolist()}")
    return 0


def cmd_optimize_schedule(ns) -> int:
    cfg, family = _load(ns)
    outdir = _outdir(ns.out)
    if ns.N < 1 or ns.seeds < 1:
        raise ConfigError(f"--N and --seeds must be positive integers, got {ns.N} and {ns.seeds}")
    if family.schedule_param is None:
        family.refuse("optimize-schedule")
    family.schedule_value(cfg)
    options = _options(ns, family)
    family.check_simulation(cfg, options)  # the simulation's flags, before the optimisation
    from hildlimits._pipeline.schedule import check_pieces

    check_pieces(ns.pieces, ns.steps, force=ns.force)
    _preflight(ns, cfg, family, options)
    with _locked(outdir, directory=True):
        return _optimize_schedule(ns, cfg, family, outdir, options)


def _optimize_schedule(ns, cfg, family, outdir: Path, options: dict) -> int:
    from hildlimits._pipeline.progress import bar
    from hildlimits._pipeline.schedule import Schedule, optimize_schedule

    so = family.solve_options(cfg)
    with _phase("deriving"):
        system = family.derive(cfg)
    t0 = time.perf_counter()
    with bar(ns.steps, "optimising the schedule", unit="step") as tick:
        res = optimize_schedule(
            system,
            config=cfg,
            t1=so["t1"],
            pieces=ns.pieces,
            steps=ns.steps,
            progress=tick,
            force=ns.force,
            interruptible=True,
            batch=ns.batch,
        )
    t_opt = time.perf_counter() - t0
    if res.get("interrupted"):
        return _write_interrupted_schedule(ns, cfg, family, outdir, res, t_opt)
    sched = res["schedule"]
    const = Schedule.constant(res["best_constant_lr"])
    kw = {"n_save": so["n_save"], "spacing": "linear"}
    cfg_opt, cfg_sim, kw_opt = cfg, cfg, kw
    if ns.batch:
        # the optimised run ends when the sample budget is spent (t_final); the simulation trains
        # with the batch sizes rounded to integers (its ODE is solved with the same rounding)
        bs = res["batch_schedule"]
        rounded = Schedule(edges=bs.edges, values=np.maximum(1.0, np.round(bs.values)))
        cfg_opt = family.with_schedules(cfg, batch=bs)
        cfg_sim = family.with_schedules(cfg, batch=rounded)
        kw_opt = {**kw, "t1": res["t_final"]}
    try:
        with _phase("solving the ODE with both schedules"):
            ode_opt = family.solve(system, cfg_opt, schedule=sched, **kw_opt)
            ode_const = family.solve(system, cfg, schedule=const, **kw)
        sims = {}
        for name, s, c, k in (
            ("optimised", sched, cfg_sim, kw_opt),
            ("constant", const, cfg, kw),
        ):
            sims[name] = family.simulate(c, options=options, schedule=s, **k)
            if RunStatus.parse(sims[name].status).kind is Status.INTERRUPTED:
                raise KeyboardInterrupt
    except KeyboardInterrupt:
        res["interrupted"] = "after the optimisation, before the simulation check finished"
        return _write_interrupted_schedule(ns, cfg, family, outdir, res, t_opt)

    # the last 10% of the run, averaged over seeds and save times: the simulated final risk
    def tail(sim):
        k = max(1, len(sim.t) // 10)
        per_seed = sim.risk[:, -k:].mean(axis=1)
        return float(per_seed.mean()), float(
            per_seed.std(ddof=1) / np.sqrt(sim.seeds)
        ) if sim.seeds > 1 else 0.0

    (m_opt, se_opt), (m_const, se_const) = tail(sims["optimised"]), tail(sims["constant"])
    k = max(1, len(ode_opt.t) // 10)
    data = {
        "parameter": family.schedule_param,
        "pieces": ns.pieces,
        "edges": sched.edges.tolist(),
        "schedule": sched.values.tolist(),
        "best_constant_lr": res["best_constant_lr"],
        "risk_t1_ode": {
            "optimised": res["risk_optimised"],
            "best_constant": res["risk_best_constant"],
        },
        "risk_tail_ode": {
            "optimised": float(ode_opt.risk[-k:].mean()),
            "best_constant": float(ode_const.risk[-k:].mean()),
        },
        "risk_tail_simulation": {
            "optimised": m_opt,
            "optimised_se": se_opt,
            "best_constant": m_const,
            "best_constant_se": se_const,
            "N": ns.N,
            "seeds": ns.seeds,
        },
        "simulation_confirms": bool(m_opt + 2 * se_opt < m_const - 2 * se_const),
        **(
            {
                "batch_schedule": res["batch_schedule"].values.tolist(),
                "batch_edges": res["batch_schedule"].edges.tolist(),
                "sample_edges": res["sample_edges"],
                "sample_budget_per_dimension": res["sample_budget_per_dimension"],
                "t_final": res["t_final"],
            }
            if ns.batch
            else {}
        ),
        "history": res["history"],
        "t": ode_opt.t.tolist(),
        "risk_ode_optimised": ode_opt.risk.tolist(),
        "risk_ode_constant": ode_const.risk.tolist(),
        "risk_sim_optimised": sims["optimised"].risk_mean.tolist(),
        "risk_sim_constant": sims["constant"].risk_mean.tolist(),
        "t_sim": sims["optimised"].t.tolist(),
        "meta": _meta(cfg, family) | {"optimisation_seconds": t_opt},
    }
    _write_json(outdir / "schedule.json", data)
    _plot_schedule(data, outdir / "schedule.png", label=family.schedule_param)
    print(
        f"ODE risk(t1): optimised schedule of {family.schedule_param} "
        f"{res['risk_optimised']:.4e} vs best constant "
        f"{res['best_constant_lr']:.3g}: {res['risk_best_constant']:.4e}"
    )
    print(
        f"simulation (N={ns.N}, {ns.seeds} seeds, last 10% of the run): optimised {m_opt:.4e} ± {se_opt:.1e} "
        f"vs constant {m_const:.4e} ± {se_const:.1e} -> "
        + ("confirmed" if data["simulation_confirms"] else "NOT confirmed")
    )
    print(f"wrote {outdir / 'schedule.json'} and {outdir / 'schedule.png'}")
    return 0


def _write_interrupted_schedule(ns, cfg, family, outdir: Path, res: dict, t_opt: float) -> int:
    """Ctrl-C during ``optimize-schedule``: write the best schedule found so far (without the
    simulation check) to ``schedule.json``, marked ``interrupted``; exit 130."""
    sched = res["schedule"]
    data = {
        "parameter": family.schedule_param,
        "pieces": ns.pieces,
        "edges": sched.edges.tolist(),
        "schedule": sched.values.tolist(),
        "best_constant_lr": res["best_constant_lr"],
        "risk_t1_ode": {
            "optimised": res["risk_optimised"],
            "best_constant": res["risk_best_constant"],
        },
        "history": res["history"],
        "interrupted": str(res["interrupted"]),
        "meta": _meta(cfg, family) | {"optimisation_seconds": t_opt},
    }
    _write_json(outdir / "schedule.json", data)
    print(
        f"interrupted {res['interrupted']}: the best schedule so far "
        f"({len(res['history'])} steps) is written to {outdir / 'schedule.json'} "
        "(no simulation check)",
        file=sys.stderr,
    )
    return 130


def _plot_schedule(data, path, *, label: str = "learning rate η(t)") -> None:
    from hildlimits._pipeline.plot import _pyplot

    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    edges = np.concatenate([[0.0], data["edges"], [data["t"][-1]]])
    axes[0].stairs(data["schedule"], edges, label="optimised", lw=2)
    axes[0].axhline(data["best_constant_lr"], color="k", ls="--", label="best constant")
    axes[0].set_xlabel("t")
    axes[0].set_ylabel(label)
    axes[0].legend()
    ax = axes[1]
    ax.plot(data["t"], data["risk_ode_optimised"], "C0--", lw=2, label="ODE, optimised")
    ax.plot(data["t"], data["risk_ode_constant"], "k--", lw=2, label="ODE, best constant")
    ax.plot(data["t_sim"], data["risk_sim_optimised"], "C0", lw=1, label="simulation, optimised")
    ax.plot(
        data["t_sim"],
        data["risk_sim_constant"],
        "k",
        lw=1,
        alpha=0.7,
        label="simulation, best constant",
    )
    ax.set_yscale("log")
    ax.set_xlabel("t")
    ax.set_ylabel("risk")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


class _HelpFormatter(argparse.HelpFormatter):
    """Help texts end with ``(default: ...)`` where a flag has a default worth showing."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if (
            action.option_strings
            and "%(default)" not in text
            and "default" not in text
            and default not in (None, False, argparse.SUPPRESS)
        ):
            text += " (default: %(default)s)"
        return text


_FORCE_HELP = (
    "run even if the estimated memory or run time exceeds what is available "
    "(docs/guarantees.md); the estimate is printed as a warning"
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hildlimits", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser(
        "derive", formatter_class=_HelpFormatter, help="derive and print the ODE system of a config"
    )
    d.add_argument("config")
    fmt = d.add_mutually_exclusive_group()
    fmt.add_argument("--latex", action="store_true", help="print LaTeX")
    fmt.add_argument("--markdown", action="store_true", help="print Markdown with LaTeX")
    fmt.add_argument("--source", action="store_true", help="print the generated JAX source")
    d.add_argument("--out", help="write to this file instead of stdout")
    d.set_defaults(func=cmd_derive)
    s = sub.add_parser(
        "solve",
        formatter_class=_HelpFormatter,
        help="derive and integrate the ODEs, write JSON (and a plot)",
    )
    s.add_argument("config")
    s.add_argument("--out", required=True, help="output JSON path")
    s.add_argument("--plot", help="also write a PNG of risk and overlaps")
    s.set_defaults(func=cmd_solve)
    m = sub.add_parser(
        "simulate",
        formatter_class=_HelpFormatter,
        help="train finite networks with online SGD, write JSON",
    )
    m.add_argument("config")
    m.add_argument("--N", type=int, required=True, help="input dimension")
    m.add_argument("--seeds", type=int, default=8, help="independent runs")
    m.add_argument("--seed", type=int, default=0, help="base seed")
    m.add_argument(
        "--dtype",
        choices=["float32", "float64"],
        default=None,
        help="default: float64 on CPU, float32 on GPU",
    )
    m.add_argument("--out", required=True)
    m.set_defaults(func=cmd_simulate)
    v = sub.add_parser(
        "validate",
        formatter_class=_HelpFormatter,
        help="ODE against simulations at several N; report.json + plots",
    )
    v.add_argument("config")
    v.add_argument(
        "--N", required=True, help="comma-separated input dimensions, e.g. 500,1000,2000"
    )
    v.add_argument("--seeds", type=int, default=8, help="independent runs per N (at least 2)")
    v.add_argument("--seed", type=int, default=0, help="base seed")
    v.add_argument("--dtype", choices=["float32", "float64"], default=None)
    v.add_argument(
        "--z-tol", type=float, default=5.0, help="allowed deviation in seed standard errors"
    )
    v.add_argument("--rel-tol", type=float, default=0.02, help="plus this fraction of the ODE risk")
    v.add_argument(
        "--abs-tol", type=float, default=1e-5, help="plus this fraction of the peak ODE risk"
    )
    v.add_argument("--out", required=True, help="output directory")
    v.set_defaults(func=cmd_validate)
    w = sub.add_parser(
        "sweep",
        formatter_class=_HelpFormatter,
        help="solve on a grid of parameters; sweep.json + sweep.png",
    )
    w.add_argument("config")
    w.add_argument(
        "--param",
        action="append",
        required=True,
        help="name=a:b:n (linear), name=log:a:b:n or name=x,y,z; repeat for a grid",
    )
    w.add_argument(
        "--out", required=True, help="output directory (also holds partial results for resuming)"
    )
    w.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="points per batch (default 128 on CPU, 1024 else)",
    )
    w.add_argument("--no-shard", action="store_true", help="use one device only")
    w.add_argument(
        "--spread",
        choices=["batches", "mesh"],
        default="batches",
        help="batches: whole batches to devices in parallel (default); mesh: split each batch "
        "over all devices (jax.sharding)",
    )
    w.add_argument(
        "--distributed", action="store_true", help="call jax.distributed.initialize() (multi-host)"
    )
    w.set_defaults(func=cmd_sweep)
    gr = sub.add_parser(
        "grad",
        formatter_class=_HelpFormatter,
        help="gradient of the risk at t1 with respect to parameters",
    )
    gr.add_argument("config")
    gr.add_argument(
        "--wrt", required=True, help="comma-separated names, e.g. training.lr,model.noise,init.R"
    )
    gr.add_argument("--observable", choices=["final", "mean"], default="final")
    gr.add_argument(
        "--max-steps", type=int, default=100_000, help="step budget of the differentiated solve"
    )
    gr.add_argument("--out", required=True)
    gr.set_defaults(func=cmd_grad)
    o = sub.add_parser(
        "optimize-schedule",
        formatter_class=_HelpFormatter,
        help="optimise a piecewise-constant learning rate through the ODE",
    )
    o.add_argument("config")
    o.add_argument("--pieces", type=int, default=20, help="equal pieces of [0, t1] of the schedule")
    o.add_argument(
        "--steps", type=int, default=150, help="gradient-descent iterations (Adam on log eta)"
    )
    o.add_argument(
        "--batch",
        action="store_true",
        help="optimise the mini-batch size jointly with the learning rate under the sample "
        "budget of the configured run (docs/optimisers.md)",
    )
    o.add_argument("--N", type=int, default=1000, help="input dimension of the simulation check")
    o.add_argument("--seeds", type=int, default=8, help="seeds of the simulation check")
    o.add_argument("--seed", type=int, default=0, help="base seed of the simulation check")
    o.add_argument("--out", required=True, help="output directory")
    o.set_defaults(func=cmd_optimize_schedule)
    for parser in (s, m, v, w, gr, o):
        parser.add_argument("--force", action="store_true", help=_FORCE_HELP)
    _family_flags({"simulate": m, "validate": v, "optimize-schedule": o, "solve": s, "derive": d})
    _family_flags({"sweep": w, "grad": gr})
    return p


def _family_flags(parsers: dict) -> None:
    """Register every family's own flags on the command parsers (a flag shared by several
    families is registered once)."""
    from hildlimits._families import all_families

    for command, parser in parsers.items():
        seen = set()
        for family in all_families():
            for flag in family.flags.get(command, ()):
                if flag.dest not in seen:
                    seen.add(flag.dest)
                    parser.add_argument(*flag.names, **flag.options)


def expose_cpu_cores() -> None:
    """Expose the CPU cores as JAX host devices (``XLA_FLAGS=--xla_force_host_platform_device_count``
    = usable cores) unless ``XLA_FLAGS`` already sets a device count. Only takes effect before
    JAX initialises its backends; accelerators are unaffected. Sweeps then solve batches on all
    cores in parallel and simulations spread their seeds over them."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" in flags:
        return
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    if cores > 1:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={cores}".strip()


def enable_compilation_caches() -> None:
    """Keep compiled solves between runs, in the hildlimits cache directory
    (:func:`hildlimits.cache_dir`, safe to delete): JAX's persistent compilation cache in
    ``xla/`` (every executable, however quick to compile; unless ``jax_compilation_cache_dir`` is
    already set), and the exported (traced and lowered) solves in ``export/``
    (:mod:`hildlimits._pipeline.export`), so that a repeated command neither traces nor compiles its
    solve. The command line's choice, never made at library import;
    ``HILDLIMITS_NO_COMPILATION_CACHE=1`` turns both off."""
    if os.environ.get("HILDLIMITS_NO_COMPILATION_CACHE", "") not in ("", "0"):
        return
    import jax

    from hildlimits._pipeline import export as _export
    from hildlimits._pipeline.cache import cache_dir

    if not jax.config.jax_compilation_cache_dir:
        xla = cache_dir() / "xla"
        try:
            xla.mkdir(parents=True, exist_ok=True)
        except OSError:
            pass  # an unusable cache only costs time (JAX would warn on every read)
        else:
            jax.config.update("jax_compilation_cache_dir", str(xla))
            jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
            jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    _export.enable()


def entry() -> int:
    """The ``hildlimits`` console command: :func:`expose_cpu_cores` and
    :func:`enable_compilation_caches`, then :func:`main`. After an interruption (exit 130) the
    process ends at once (:func:`os._exit`, output flushed): XLA may still be compiling on its
    own threads, and tearing the interpreter down under them can crash (a segmentation fault
    after "interrupted")."""
    import signal

    pressed: list[float] = []

    def on_sigint(signum, frame):
        pressed.append(time.monotonic())
        raise KeyboardInterrupt

    settled: list[bool] = []

    def late_sigint(signum, frame):
        pressed.append(time.monotonic())
        if settled:
            _hard_exit(130)

    # remember every Ctrl-C: Python swallows a KeyboardInterrupt raised inside a garbage
    # collector callback (JAX has one), and the run would then go on and exit 0
    installed = signal.getsignal(signal.SIGINT) is signal.default_int_handler
    if installed:
        signal.signal(signal.SIGINT, on_sigint)
    try:
        try:
            expose_cpu_cores()
            enable_compilation_caches()
            code = main()
        finally:
            # the work is over: a later Ctrl-C is never raised where nothing would catch it;
            # it is recorded, and once the exit code is settled it ends the process with 130
            if installed:
                signal.signal(signal.SIGINT, late_sigint)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = 130
    if pressed and code != 130:
        print("interrupted (the work had finished; its output is written)", file=sys.stderr)
        code = 130
    if code == 130:
        _hard_exit(code)
    settled.append(True)
    if pressed:  # pressed after the check above
        _hard_exit(130)
    return code


def _hard_exit(code: int) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C cannot interrupt the exit
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    try:
        return ns.func(ns)
    except DivergedError as exc:  # diverging dynamics: exit 1, as a diverging solve
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (ConfigError, SolveError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into e.g. `head`: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(entry())
