"""CLI commands for ``[model] kind = "meanfield"`` (dispatched from :mod:`._cli` by kind).

``derive``: the particle system; ``solve``: ``t`` (tau), ``risk``, ``r``, ``q``, ``a`` at the save
times; ``simulate --N d --width p``: finite networks in mean-field scaling (``t`` in tau, ``risk``,
``risk_std``); ``validate --N d1,d2 --width p1,p2``: both, deviation per width.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from ._errors import ConfigError


def _solve(cfg, **over):
    from ._meanfield import derive_meanfield, solve_meanfield

    kw = cfg.solve_kwargs() | over
    system = derive_meanfield(cfg.model)
    return solve_meanfield(
        system,
        model=cfg.model,
        init=cfg.init,
        lr=cfg.lr,
        lr_second_layer=cfg.lr_second_layer,
        **kw,
    )


def derive_system(ns, cfg):
    """The derived particle system (formatted by the committee ``derive`` command)."""
    from ._meanfield import derive_meanfield

    return derive_meanfield(cfg.model)


def cmd_solve(ns, cfg, *, write_json, meta) -> int:
    from ._plot import plot_meanfield

    out = Path(ns.out)
    t0 = time.perf_counter()
    traj = _solve(cfg)
    data = traj.to_dict()
    data["meta"] = meta(cfg) | {
        "status": traj.status,
        "timings_s": {"total": time.perf_counter() - t0, **traj.timings},
        "particles": cfg.init.particles,
    }
    write_json(out, data)
    if ns.plot:
        plot_meanfield(traj, ns.plot, title=f"{Path(cfg.source).stem}: mean field, M={cfg.model.M}")
    print(
        f"{traj.status}: risk(tau={traj.t[-1]:.6g}) = {traj.risk[-1]:.6e}; {cfg.init.particles} "
        f"particles, {len(traj.t)} save times, {traj.num_steps} steps; wrote {out}"
        + (f" and {ns.plot}" if ns.plot else "")
    )
    if traj.diverged:
        print(f"error: the dynamics {traj.status}", file=sys.stderr)
        return 1
    return 0


def _sim(cfg, *, d, width, seeds, seed, dtype):
    from ._meanfield_simulate import simulate_meanfield

    so = cfg.solve
    return simulate_meanfield(
        cfg.model,
        init=cfg.init,
        lr=cfg.lr,
        lr_second_layer=cfg.lr_second_layer,
        noise=cfg.noise,
        d=d,
        width=width,
        seeds=seeds,
        seed=seed,
        t1=so["t1"],
        n_save=so["n_save"],
        spacing=so["spacing"],
        t_first=so["t_first"],
        dtype=dtype,
        divergence_bound=so["divergence_bound"],
    )


def cmd_simulate(ns, cfg, *, write_json, meta) -> int:
    if ns.width is None:
        raise ConfigError("simulate with model.kind = 'meanfield' needs --width (hidden units p)")
    width = _one_int(ns.width, "--width")
    out = Path(ns.out)
    sim = _sim(cfg, d=ns.N, width=width, seeds=ns.seeds, seed=ns.seed, dtype=ns.dtype)
    data = sim.to_dict()
    data["meta"] = meta(cfg) | {"status": sim.status, "timings_s": sim.timings}
    write_json(out, data)
    if len(sim.t):
        print(
            f"{sim.status}: d={sim.d}, width={sim.width}, {sim.seeds} seeds, "
            f"risk(tau={sim.t[-1]:.6g}) = {sim.risk_mean[-1]:.6e} ± {sim.risk_std[-1]:.2e}; "
            f"wrote {out}"
        )
    if sim.diverged:
        print(f"error: the simulation {sim.status} (learning rate too large?)", file=sys.stderr)
        return 1
    return 0


def _one_int(text, name) -> int:
    try:
        v = int(str(text))
    except ValueError:
        raise ConfigError(f"{name} must be a positive integer, got {text!r}") from None
    if v < 1:
        raise ConfigError(f"{name} must be a positive integer, got {text!r}")
    return v


def cmd_validate(ns, cfg, *, write_json, meta, int_list, outdir, tolerance) -> int:
    from ._plot import _pyplot, plot_meanfield

    if ns.width is None:
        raise ConfigError("validate with model.kind = 'meanfield' needs --width (e.g. 32,128)")
    Ns = int_list(ns.N, "--N")
    widths = int_list(ns.width, "--width")
    if len(Ns) == 1:
        Ns = Ns * len(widths)
    if len(widths) == 1:
        widths = widths * len(Ns)
    if len(Ns) != len(widths):
        raise ConfigError(
            f"--N and --width must list as many values (or one), got {len(Ns)} and {len(widths)}"
        )
    for d, p in zip(Ns, widths, strict=True):
        if p > d:
            raise ConfigError(f"width must not exceed d: got --width {p} with --N {d}")
    out = outdir(ns.out)
    tol = tolerance
    sims, rows = [], []
    ode = None
    for d, p in sorted(zip(Ns, widths, strict=True), key=lambda x: x[1]):
        sim = _sim(cfg, d=d, width=p, seeds=ns.seeds, seed=ns.seed, dtype=ns.dtype)
        if sim.status != "ok":
            print(f"error: the simulation at width={p}, d={d} {sim.status}", file=sys.stderr)
            return 1
        if ode is None or len(ode.t) != len(sim.t) or not np.allclose(ode.t, sim.t):
            ode = _solve(cfg, ts=sim.t)
            if ode.status != "ok":
                print(f"error: the ODE {ode.status}", file=sys.stderr)
                return 1
        dev = sim.risk_mean - ode.risk
        se = sim.risk_sem
        allowed = tol.z_tol * se + tol.rel_tol * np.abs(ode.risk) + tol.abs_tol * ode.risk.max()
        rows.append(
            {
                "width": p,
                "d": d,
                "seeds": ns.seeds,
                "max_abs_deviation": float(np.abs(dev).max()),
                "mean_abs_deviation": float(np.abs(dev).mean()),
                "max_relative_deviation": float(np.max(np.abs(dev) / np.abs(ode.risk))),
                "fraction_within_tolerance": float(np.mean(np.abs(dev) <= allowed)),
                "t": sim.t.tolist(),
                "risk": sim.risk_mean.tolist(),
                "risk_std": sim.risk_std.tolist(),
                "risk_ode": ode.risk.tolist(),
                "simulation_seconds": sim.timings["compile_and_run"],
            }
        )
        sims.append(sim)
    exponent = None
    if len({r["width"] for r in rows}) >= 2:
        x = np.log([r["width"] for r in rows])
        y = np.log([max(r["mean_abs_deviation"], 1e-300) for r in rows])
        exponent = float(np.polyfit(x, y, 1)[0])
    last = rows[-1]
    passed = last["fraction_within_tolerance"] == 1.0
    report = {
        "per_width": rows,
        "width_exponent": exponent,
        "width_fit": "mean_abs_deviation ~ width^exponent (least squares, log-log)",
        "tolerance": {
            "z_tol": tol.z_tol,
            "rel_tol": tol.rel_tol,
            "abs_tol": tol.abs_tol,
            "criterion": "|d| <= z_tol * se + rel_tol * risk_ode + abs_tol * max(risk_ode) at "
            "every save time, largest width",
        },
        "passed": passed,
        "note": "the ODE is the eta -> 0, p -> oo limit: finite eta adds an O(eta) deviation "
        "that does not vanish with the width",
        "meta": meta(cfg),
    }
    write_json(out / "report.json", report)
    ode_plot = _solve(cfg, ts=sims[-1].t)
    plot_meanfield(ode_plot, out / "cloud.png", sims=sims, title="mean-field ODE vs simulations")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.loglog([r["width"] for r in rows], [r["max_abs_deviation"] for r in rows], "o-")
    ax.set_xlabel("width p")
    ax.set_ylabel("max_τ |risk_sim − risk_ODE|")
    fig.tight_layout()
    fig.savefig(out / "deviation.png", dpi=100)
    plt.close(fig)
    for r in rows:
        print(
            f"width={r['width']:>6} d={r['d']:>7}: max |d| = {r['max_abs_deviation']:.3e}, "
            f"mean |d| = {r['mean_abs_deviation']:.3e}"
        )
    if exponent is not None:
        print(f"width fit: mean |d| ~ p^{exponent:.2f}")
    print(("PASS" if passed else "FAIL") + f" at width={last['width']} (tolerance {tol})")
    print(f"wrote {out / 'report.json'}, {out / 'cloud.png'}, {out / 'deviation.png'}")
    return 0 if passed else 1
