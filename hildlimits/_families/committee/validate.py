"""The committee's validation: simulations at several N, the ODE from each seed's initial
overlaps at the simulation's exact times, the shared criterion, and its figures."""

from __future__ import annotations

import numpy as np

from hildlimits._errors import ConfigError
from hildlimits._families.committee.derive import derive
from hildlimits._families.committee.simulate import Simulation, simulate
from hildlimits._families.committee.solve import solve, solve_discrete
from hildlimits._pipeline.runner import RunStatus, Status
from hildlimits._pipeline.validate import (
    SimulationStopped,
    Tolerance,
    ValidationInterrupted,
    check_validation_inputs,
    criterion,
    interrupted_report,
    se_text,
)

_DEFAULT_TOLERANCE = Tolerance()


def ode_for_simulation(
    system,
    sim: Simulation,
    *,
    hyper,
    solve_kwargs: dict,
    same_init: bool,
    lr_schedule=None,
    batch_schedule=None,
    discrete_method: str | None = None,
    momentum_schedule=None,
):
    """ODE risk and overlaps at the simulation's times (per-seed ODEs averaged if not
    ``same_init``), with the simulation's learning-rate and batch-size schedules. With
    ``discrete_method`` (``"log"`` or ``"exact"``; ``[solve] time = "discrete"``) the theory is
    the exact expected-SGD recursion at the simulation's own ``N`` instead of the ODE."""
    same_init = same_init and sim.exact_init
    seeds = range(1) if same_init else range(sim.seeds)
    extra = {}
    if lr_schedule is not None:
        solve_kwargs = {**solve_kwargs, "lr_schedule": lr_schedule}
    if batch_schedule is not None:
        solve_kwargs = {**solve_kwargs, "batch_schedule": batch_schedule}
    if momentum_schedule is not None:
        solve_kwargs = {**solve_kwargs, "momentum_schedule": momentum_schedule}
    trajs = []
    for s in seeds:
        if sim.spectrum is not None:
            extra = {"spectrum": sim.spectrum, "bins": sim.initial_bins(s)}
        if discrete_method is not None:
            trajs.append(
                solve_discrete(
                    system,
                    init=sim.initial_overlaps(s),
                    hyper=hyper,
                    N=sim.N,
                    method=discrete_method,
                    ts=sim.t,
                    lr_schedule=lr_schedule,
                    divergence_bound=solve_kwargs.get("divergence_bound", 1e8),
                    **extra,
                )
            )
            continue
        trajs.append(
            solve(
                system, init=sim.initial_overlaps(s), hyper=hyper, ts=sim.t, **solve_kwargs, **extra
            )
        )
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
    spectrum=None,
    bins=None,
    lr_schedule=None,
    batch_schedule=None,
    discrete_method: str | None = None,
    momentum_schedule=None,
) -> tuple[dict, list, list]:
    """The committee's :func:`hildlimits.validate` (see there); returns ``(report, sims, odes)``.

    The optimisers of ``hyper`` and the schedules (``lr_schedule``, ``batch_schedule``) apply to
    both the simulation and the ODE. Where the ODE reports ``lr_effective`` (momentum,
    AdaGrad-Norm) each row adds ``lr_effective_max_abs_deviation`` and
    ``lr_effective_max_deviation_in_se`` (informative; the criterion is on the risk).
    ``discrete_method`` (``[solve] time = "discrete"``): compare with the exact finite-``N``
    expected-SGD recursion at each simulated ``N`` (least squares) instead of the ODE."""
    if hyper is None:
        raise TypeError("validate(model, ...) with a Committee needs hyper=")
    Ns = check_validation_inputs(Ns, seeds)
    system = derive(model)
    skw = {
        k: v
        for k, v in (solve_kwargs or {}).items()
        if k not in ("t1", "n_save", "spacing", "t_first")
    }
    per_N, sims, odes = [], [], []

    def one(N):
        """Simulate and solve at one N: ``(row, simulation, ODE trajectories)``."""
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
            spectrum=spectrum,
            bins=bins,
            lr_schedule=lr_schedule,
            batch_schedule=batch_schedule,
            momentum_schedule=momentum_schedule,
        )
        if sim.status != "ok":
            if RunStatus.parse(sim.status).kind is Status.INTERRUPTED and per_N:
                raise KeyboardInterrupt  # keep the N values already finished
            raise SimulationStopped(sim)
        trajs = ode_for_simulation(
            system,
            sim,
            hyper=hyper,
            solve_kwargs=skw,
            same_init=random_init is None,
            lr_schedule=lr_schedule,
            batch_schedule=batch_schedule,
            discrete_method=discrete_method,
            momentum_schedule=momentum_schedule,
        )
        ode_risk = np.mean([tr.risk for tr in trajs], axis=0)
        d = sim.risk_mean - ode_risk
        crit = criterion(sim.risk_mean, sim.risk_sem, ode_risk, tolerance)
        row = {
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
        if "lr_effective" in sim.observables and all(
            "lr_effective" in tr.observables for tr in trajs
        ):
            obs = sim.observables["lr_effective"]
            ode_lr = np.mean([tr.observables["lr_effective"] for tr in trajs], axis=0)
            d_lr = np.abs(obs.mean(axis=0) - ode_lr)
            se_lr = obs.std(axis=0, ddof=1) / np.sqrt(seeds) if seeds > 1 else 0 * d_lr
            z_lr = d_lr[se_lr > 0] / se_lr[se_lr > 0]
            row["lr_effective_max_abs_deviation"] = float(d_lr.max())
            row["lr_effective_max_deviation_in_se"] = float(z_lr.max()) if z_lr.size else 0.0
        return row, sim, trajs

    try:
        for N in sorted(Ns):
            row, sim, trajs = one(N)
            per_N.append(row)
            sims.append(sim)
            odes.append(trajs)
    except KeyboardInterrupt as exc:
        if not per_N or isinstance(exc, ValidationInterrupted):
            raise
        report = interrupted_report(_report(per_N, tolerance), len(per_N), len(Ns))
        raise ValidationInterrupted(report, (sims, odes), len(per_N)) from None
    return _report(per_N, tolerance), sims, odes


def _report(per_N: list, tolerance) -> dict:
    """The report of the finished sizes ``per_N`` (criterion at the largest)."""
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
        f"{last['max_abs_deviation']:.3g}, {se_text(last['max_deviation_in_se'], '.1f')} standard errors)"
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
    return report


def plot_validation(sims, odes, risk_path, overlaps_path, *, log_time: bool = True) -> None:
    """``risk.png``: top, the simulation means of every N with +- one seed std bands and the ODE
    drawn on top (black dashes); bottom, the residual: the deviation of each N's seed mean from
    its ODE in seed standard errors against t (one line per N; a finite-size bias shows as a
    drift that shrinks with N). ``overlaps.png``: order parameters of the largest N (solid)
    against the ODE (dashed, on top)."""
    from hildlimits._pipeline.plot import _pyplot

    plt = _pyplot()
    fig, (ax, res) = plt.subplots(
        2, 1, figsize=(7.5, 7.2), sharex=True, gridspec_kw={"height_ratios": [3, 2]}
    )
    colors = plt.cm.viridis(np.linspace(0.05, 0.8, len(sims)))
    all_risk = []
    for sim, trajs, c in zip(sims, odes, colors, strict=True):
        sel = sim.t > 0 if log_time else slice(None)
        t = sim.t[sel]
        m, s = sim.risk_mean[sel], sim.risk_std[sel]
        ax.fill_between(t, m - s, m + s, color=c, alpha=0.3, lw=0, zorder=1)
        ax.plot(t, m - s, color=c, lw=0.6, alpha=0.8, zorder=2)
        ax.plot(t, m + s, color=c, lw=0.6, alpha=0.8, zorder=2)
        ax.plot(
            t,
            m,
            color=c,
            lw=2.6,
            alpha=0.8,
            zorder=3,
            label=f"simulation N={sim.N} ({sim.seeds} seeds)",
        )
        all_risk.append(m)
        ode_n = np.mean([tr.risk for tr in trajs], axis=0)[sel]
        se = sim.risk_sem[sel]
        z = np.where(se > 0, (m - ode_n) / np.where(se > 0, se, 1.0), 0.0)
        res.plot(t, z, color=c, lw=1.4, marker="o", ms=2.5, label=f"N={sim.N}")
    trajs = odes[-1]
    sim = sims[-1]
    sel = sim.t > 0 if log_time else slice(None)
    ode = np.mean([tr.risk for tr in trajs], axis=0)[sel]
    ax.plot(sim.t[sel], ode, "k--", lw=1.6, dashes=(4, 3), zorder=5, label="ODE (N → ∞)")
    if log_time:
        ax.set_xscale("log")
    r = np.concatenate(all_risk + [ode])
    r = r[r > 0]
    if r.size and r.max() > 100 * r.min():
        ax.set_yscale("log")
    ax.set_ylabel("risk")
    ax.set_title("ODE (dashed) vs simulations (band: ± one seed standard deviation)")
    ax.legend(fontsize=8)
    res.axhspan(-2, 2, color="0.85", zorder=0, label="±2 standard errors")
    res.axhline(0, color="k", lw=1, ls="--", zorder=1)
    res.set_xlabel("t = steps / N")
    res.set_ylabel("(simulation − ODE) / se")
    res.set_title("residual in seed standard errors")
    res.legend(fontsize=7, ncol=min(4, len(sims) + 1))
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
            # the simulation wide and light below, the ODE thin and dashed on top: both visible
            ax.plot(sim.t[sel], sim_v[sel, a, b], color=col, lw=4, alpha=0.4, zorder=2, label=label)
            ax.plot(sim.t[sel], ode_v[sel, a, b], color="k", ls="--", lw=1.1, zorder=4)
        if log_time:
            ax.set_xscale("log")
        ax.set_xlabel("t = steps / N")
        ax.set_title(f"{name}: simulation N={sim.N} (wide, seed mean) vs ODE (black dashes)")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(overlaps_path, dpi=110)
    plt.close(fig)
