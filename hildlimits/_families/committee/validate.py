"""The committee's validation: simulations at several N, the ODE from each seed's initial
overlaps at the simulation's exact times, the shared criterion, and its figures."""

from __future__ import annotations

import numpy as np

from hildlimits._errors import ConfigError
from hildlimits._families.committee.derive import derive
from hildlimits._families.committee.simulate import Simulation, simulate
from hildlimits._families.committee.solve import solve
from hildlimits._pipeline.validate import SimulationStopped, Tolerance, criterion

_DEFAULT_TOLERANCE = Tolerance()


def ode_for_simulation(system, sim: Simulation, *, hyper, solve_kwargs: dict, same_init: bool):
    """ODE risk and overlaps at the simulation's times (per-seed ODEs averaged if not ``same_init``)."""
    seeds = range(1) if same_init else range(sim.seeds)
    trajs = [
        solve(system, init=sim.initial_overlaps(s), hyper=hyper, ts=sim.t, **solve_kwargs)
        for s in seeds
    ]
    for tr in trajs:
        if tr.status != "ok":
            raise ConfigError(f"the ODE {tr.status}: the learning rate is too large for this model")
    return trajs


def validate_committee(
    model,
    *,
    hyper=None,
    Ns,
    seeds: int = 8,
    seed: int = 0,
    init=None,
    random_init=None,
    t1: float | None = None,
    n_save: int = 100,
    spacing: str = "log",
    t_first: float | None = None,
    solve_kwargs: dict | None = None,
    tolerance: Tolerance = _DEFAULT_TOLERANCE,
    test_samples: int = 0,
    dtype: str | None = None,
    progress: bool | None = None,
    divergence_bound: float = 1e8,
) -> tuple[dict, list, list]:
    """The committee's :func:`hildlimits.validate` (see there); returns ``(report, sims, odes)``."""
    if hyper is None:
        raise TypeError("validate(model, ...) with a Committee needs hyper=")
    Ns = [int(n) for n in Ns]
    if not Ns:
        raise ConfigError("--N must list at least one value")
    for n in Ns:
        if n < 1:
            raise ConfigError(f"N must be a positive integer, got {n}")
    system = derive(model)
    skw = {
        k: v
        for k, v in (solve_kwargs or {}).items()
        if k not in ("t1", "n_save", "spacing", "t_first")
    }
    per_N, sims, odes = [], [], []
    for N in sorted(Ns):
        sim = simulate(
            model,
            hyper=hyper,
            N=N,
            init=init,
            random_init=random_init,
            seeds=seeds,
            seed=seed,
            t1=t1,
            n_save=n_save,
            spacing=spacing,
            t_first=t_first,
            test_samples=test_samples,
            dtype=dtype,
            progress=progress,
            divergence_bound=divergence_bound,
        )
        if sim.status != "ok":
            raise SimulationStopped(sim)
        trajs = ode_for_simulation(
            system, sim, hyper=hyper, solve_kwargs=skw, same_init=random_init is None
        )
        ode_risk = np.mean([tr.risk for tr in trajs], axis=0)
        d = sim.risk_mean - ode_risk
        crit = criterion(sim.risk_mean, sim.risk_sem, ode_risk, tolerance)
        per_N.append(
            {
                "N": N,
                "seeds": seeds,
                "max_abs_deviation": float(np.abs(d).max()),
                "mean_abs_deviation": float(np.abs(d).mean()),
                "max_deviation_in_se": crit["max_deviation_in_se"],
                "mean_deviation_in_se": crit["mean_deviation_in_se"],
                "max_relative_deviation": float(
                    np.max(np.abs(d) / np.maximum(np.abs(ode_risk), 1e-300))
                ),
                "fraction_within_tolerance": crit["fraction_within_tolerance"],
                "worst_time": float(sim.t[crit["worst"]]),
                "simulation_seconds": sim.timings.get("compile_and_run"),
            }
        )
        sims.append(sim)
        odes.append(trajs)
    exponent = None
    if len(per_N) >= 2:
        x = np.log([p["N"] for p in per_N])
        y = np.log([max(p["mean_abs_deviation"], 1e-300) for p in per_N])
        exponent = float(np.polyfit(x, y, 1)[0])
    last = per_N[-1]
    passed = last["fraction_within_tolerance"] == 1.0
    reason = (
        f"at N={last['N']} every save time is within {tolerance.z_tol} standard errors + "
        f"{tolerance.rel_tol:g} x risk + {tolerance.abs_tol:g} x max risk of the ODE"
        if passed
        else f"at N={last['N']}, {100 * (1 - last['fraction_within_tolerance']):.1f}% of save times deviate from the "
        f"ODE by more than {tolerance.z_tol} standard errors + {tolerance.rel_tol:g} x risk + "
        f"{tolerance.abs_tol:g} x max risk (worst at t={last['worst_time']:.4g}; max deviation "
        f"{last['max_abs_deviation']:.3g}, {last['max_deviation_in_se']:.1f} standard errors)"
    )
    report = {
        "per_N": per_N,
        "finite_size_exponent": exponent,
        "finite_size_fit": "mean_abs_deviation ~ N^exponent (least squares in log-log over N)",
        "tolerance": {
            "z_tol": tolerance.z_tol,
            "rel_tol": tolerance.rel_tol,
            "abs_tol": tolerance.abs_tol,
            "criterion": "|d| <= z_tol * se + rel_tol * risk_ode + abs_tol * max(risk_ode) at every save time, largest N",
        },
        "passed": passed,
        "reason": reason,
    }
    return report, sims, odes


def plot_validation(sims, odes, risk_path, overlaps_path, *, log_time: bool = True) -> None:
    """``risk.png``: ODE (dashed) over simulation means +- one seed std; ``overlaps.png``:
    order parameters of the largest N against the ODE."""
    from hildlimits._pipeline.plot import _pyplot

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.8))
    colors = plt.cm.viridis(np.linspace(0.1, 0.85, len(sims)))
    all_risk = []
    for sim, c in zip(sims, colors, strict=True):
        sel = sim.t > 0 if log_time else slice(None)
        m, s = sim.risk_mean[sel], sim.risk_std[sel]
        ax.plot(sim.t[sel], m, color=c, lw=1.5, label=f"simulation N={sim.N} ({sim.seeds} seeds)")
        ax.fill_between(sim.t[sel], m - s, m + s, color=c, alpha=0.25, lw=0)
        all_risk.append(m)
    trajs = odes[-1]
    sim = sims[-1]
    sel = sim.t > 0 if log_time else slice(None)
    ode = np.mean([tr.risk for tr in trajs], axis=0)[sel]
    ax.plot(sim.t[sel], ode, "k--", lw=2, label="ODE (N → ∞)")
    if log_time:
        ax.set_xscale("log")
    r = np.concatenate(all_risk + [ode])
    r = r[r > 0]
    if r.size and r.max() > 100 * r.min():
        ax.set_yscale("log")
    ax.set_xlabel("t = steps / N")
    ax.set_ylabel("risk")
    ax.set_title("ODE vs simulation (band: ± one seed standard deviation)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(risk_path, dpi=110)
    plt.close(fig)

    K, M = sim.R.shape[2:]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    Qm, Rm = sim.Q.mean(axis=0), sim.R.mean(axis=0)
    Qo = np.mean([tr.Q for tr in trajs], axis=0)
    Ro = np.mean([tr.R for tr in trajs], axis=0)
    cyc = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    panels = (
        (axes[0], "R", Rm, Ro, [(i, j) for i in range(K) for j in range(M)], K * M <= 12),
        (axes[1], "Q", Qm, Qo, [(i, k) for i in range(K) for k in range(i, K)], K <= 4),
    )
    for ax, name, sim_v, ode_v, entries, labelled in panels:
        for n, (a, b) in enumerate(entries):
            col = cyc[n % len(cyc)]
            label = f"{name}{a + 1}{b + 1}" if labelled else None
            ax.plot(sim.t[sel], sim_v[sel, a, b], color=col, lw=1.2, label=label)
            ax.plot(sim.t[sel], ode_v[sel, a, b], color=col, ls="--", lw=1.5)
        if log_time:
            ax.set_xscale("log")
        ax.set_xlabel("t = steps / N")
        ax.set_title(f"{name}: simulation N={sim.N} (solid, seed mean) vs ODE (dashed)")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(overlaps_path, dpi=110)
    plt.close(fig)
