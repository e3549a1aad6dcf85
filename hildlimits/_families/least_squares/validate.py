"""``validate`` of the least-squares family: the N -> oo theory against finite-N simulations
(risk and training loss), with the finite-size fit of the deviation."""

from __future__ import annotations

import numpy as np

from hildlimits._errors import ConfigError
from hildlimits._pipeline.validate import se_text


def validate_least_squares(family, cfg, *, options: dict, tolerance):
    from hildlimits._pipeline.validate import SimulationStopped, criterion

    Ns = sorted(int(n) for n in options["Ns"])
    system = family.derive(cfg)
    rows, sims, odes = [], [], []
    for N in Ns:
        sim = family.simulate(cfg, options=options | {"N": N})
        if not sim.status.ok:
            raise SimulationStopped(sim, f"N={N}")
        ode = family.solve(system, cfg, ts=sim.t, extras=False)
        if not ode.status.ok:
            raise ConfigError(f"the theory {ode.status}: the learning rate is too large")
        crit = criterion(sim.risk_mean, sim.risk_sem, ode.risk, tolerance)
        crit_tr = criterion(sim.train_mean, sim.train_sem, ode.train_loss, tolerance)
        dev = sim.risk_mean - ode.risk
        dev_tr = sim.train_mean - ode.train_loss
        rows.append(
            {
                "N": N,
                "n": sim.n,
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
                "train_loss_stats": {
                    "max_abs_deviation": float(np.abs(dev_tr).max()),
                    "mean_abs_deviation": float(np.abs(dev_tr).mean()),
                    "max_deviation_in_se": crit_tr["max_deviation_in_se"],
                    "fraction_within_tolerance": crit_tr["fraction_within_tolerance"],
                },
                "t": sim.t.tolist(),
                "risk": sim.risk_mean.tolist(),
                "risk_sem": sim.risk_sem.tolist(),
                "risk_theory": ode.risk.tolist(),
                "train_loss": sim.train_mean.tolist(),
                "train_loss_sem": sim.train_sem.tolist(),
                "train_loss_theory": ode.train_loss.tolist(),
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
    passed = (
        last["fraction_within_tolerance"] == 1.0
        and last["train_loss_stats"]["fraction_within_tolerance"] == 1.0
    )
    tol = tolerance
    what = f"{tol.z_tol} standard errors + {tol.rel_tol:g} x theory + {tol.abs_tol:g} x max theory"
    reason = (
        f"at N={last['N']} every save time of the risk and the training loss is within {what}"
        if passed
        else f"at N={last['N']}, {100 * (1 - last['fraction_within_tolerance']):.1f}% of save "
        f"times of the risk and {100 * (1 - last['train_loss_stats']['fraction_within_tolerance']):.1f}% "
        f"of the training loss deviate by more than {what} (risk worst at t={last['worst_time']:.4g}, "
        f"{se_text(last['max_deviation_in_se'], '.1f')} standard errors)"
    )
    report = {
        "per_N": rows,
        "N_exponent": exponent,
        "N_fit": "mean_abs_deviation ~ N^exponent (least squares, log-log)",
        "tolerance": {
            "z_tol": tol.z_tol,
            "rel_tol": tol.rel_tol,
            "abs_tol": tol.abs_tol,
            "criterion": "|d| <= z_tol * se + rel_tol * theory + abs_tol * max(theory) at every "
            "save time, largest N, for the risk and the training loss",
        },
        "passed": passed,
        "reason": reason,
        "note": "the theory is the N -> oo limit (Marchenko-Pastur); the finite-N mean differs "
        "by O(1/N), the seed-to-seed spread is O(1/sqrt(N))",
    }
    return report, (sims, odes)
