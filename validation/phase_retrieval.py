r"""Phase retrieval from a small initial overlap: the escape time grows like ln N (information
exponent 2), with our ODE and our simulation side by side.

Setting
    Student yhat = lambda^2 (activation "quadratic"), linear teacher, labels y^2 (label = "y**2",
    phase retrieval: the sign of the teacher's field is lost), square loss, no noise; K = M = 1,
    T = 1, second layer fixed. This takes the joint path (the label is not the identity).
    Start: Q = 1, R = m0 = 1/sqrt(N) (the size of a random initial overlap), realised exactly by the
    simulator. Escape time t_esc: first time the normalised overlap |m| = |R|/sqrt(Q T) reaches 1/2.

Theory
    The label is even in nu, so the information exponent is 2: at small m, dR/dt = rate * R with
    Q at its fixed point Q* of the R = 0 dynamics, hence t_esc = a + ln(1/m0)/rate
    = a' + ln(N)/(2 rate). `rate` is read off the derived vector field (its derivative in R at
    (Q*, 0), by automatic differentiation) -- the slope is a prediction, not a fit.

Checks (exit 1 if one fails)
    (i)  ODE escape times over m0 = 10^-1 .. 10^-4: slope against ln(1/m0) within 2% of 1/rate;
    (ii) simulations at N = 500 .. 8000 (16 seeds each): the mean escape time within 3 standard
         errors (plus 2% of t_esc) of the ODE's from the same start, and the slope of t_esc
         against ln N (weighted least squares) within 3 of its standard errors of 1/(2 rate)
         (the escape time of one run fluctuates by O(1): the overlap's SGD noise is as large as
         m0 = 1/sqrt(N); with 16 seeds the slope is known to about +-0.4).

Output: validation/out/phase_retrieval.json and .png. Run: python validation/phase_retrieval.py
[--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

import hildlimits as hl  # noqa: E402
from hildlimits._families.committee.derive import derive  # noqa: E402
from hildlimits._families.committee.simulate import simulate  # noqa: E402
from hildlimits._families.committee.solve import problem  # noqa: E402

OUT = Path(__file__).parent / "out"
LR = 0.05
MODEL = dict(
    K=1, M=1, activation="quadratic", teacher_activation="linear", loss="square", label="y**2"
)


def escape_time(t, m, level=0.5):
    above = np.nonzero(np.abs(m) >= level)[0]
    if not len(above):
        return math.nan
    j = above[0]
    if j == 0:
        return float(t[0])
    a, b = abs(m[j - 1]), abs(m[j])
    return float(t[j - 1] + (level - a) / (b - a) * (t[j] - t[j - 1]))


def overlap(Q, R, T=1.0):
    return np.asarray(R)[..., 0, 0] / np.sqrt(np.asarray(Q)[..., 0, 0] * T)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="N up to 2000, 4 seeds")
    opts = ap.parse_args()
    t_start = time.perf_counter()
    model = hl.Committee(**MODEL)
    system = derive(model)
    hyper = hl.Hyperparams(lr=LR)
    # the R = 0 fixed point of Q, then the growth rate of R there
    init0 = hl.Overlaps.for_model(model, Q=[[1.0]], R=[[0.0]], T=[[1.0]])
    flat = hl.solve(system, init=init0, hyper=hyper, t1=200.0, n_save=20)
    q_star = float(flat.Q[-1, 0, 0])
    _, args = problem(system, init0, hyper)

    def dR(r):
        y = {"Q": jnp.array([[q_star]]), "R": jnp.array([[r]])}
        return system.module.vector_field(0.0, y, args)["R"][0, 0]

    rate = float(jax.grad(dR)(0.0))
    print(
        f"Q* = {q_star:.6f}, growth rate of R at (Q*, 0): {rate:.6f}; predicted slopes: "
        f"1/rate = {1 / rate:.4f} against ln(1/m0), {1 / (2 * rate):.4f} against ln N"
    )

    def ode_escape(m0, t1):
        init = hl.Overlaps.for_model(model, Q=[[1.0]], R=[[m0]], T=[[1.0]])
        ts = np.linspace(0, t1, 4001)
        tr = hl.solve(system, init=init, hyper=hyper, ts=ts)
        return escape_time(tr.t, overlap(tr.Q, tr.R)), tr

    m0s = 10.0 ** -np.arange(1, 4.01, 0.5)
    t_ode = []
    for m0 in m0s:
        t_ode.append(ode_escape(m0, 20 + 3 * math.log(1 / m0) / rate)[0])
    slope_ode = float(np.polyfit(np.log(1 / m0s[2:]), np.array(t_ode)[2:], 1)[0])
    ok_ode = abs(slope_ode * rate - 1) < 0.02
    print(
        f"(i) ODE: slope of t_esc against ln(1/m0) = {slope_ode:.4f} (1/rate = {1 / rate:.4f}) "
        f"{'ok' if ok_ode else 'FAIL'}"
    )

    Ns = [500, 1000, 2000] if opts.quick else [500, 1000, 2000, 4000, 8000]
    seeds = 6 if opts.quick else 16
    rows = []
    ok_sim = True
    for N in Ns:
        m0 = 1 / math.sqrt(N)
        t_pred, tr = ode_escape(m0, 20 + 3 * math.log(1 / m0) / rate)
        init = hl.Overlaps.for_model(model, Q=[[1.0]], R=[[m0]], T=[[1.0]])
        t1 = 3.0 * t_pred
        sim = simulate(
            model, hyper=hyper, N=N, init=init, seeds=seeds, t1=t1, n_save=400, spacing="linear"
        )
        m = overlap(sim.Q, sim.R)  # (seeds, times)
        esc = np.array([escape_time(sim.t, m[s]) for s in range(seeds)])
        mean, se = float(np.nanmean(esc)), float(np.nanstd(esc, ddof=1) / math.sqrt(seeds))
        good = bool(np.all(np.isfinite(esc))) and abs(mean - t_pred) <= 3 * se + 0.02 * t_pred
        ok_sim &= good
        rows.append(
            {
                "N": N,
                "m0": m0,
                "t_ode": t_pred,
                "t_sim_mean": mean,
                "t_sim_se": se,
                "t_sim": esc.tolist(),
                "sim_t": sim.t.tolist(),
                "sim_m": m.mean(0).tolist(),
                "ode_t": tr.t.tolist(),
                "ode_m": overlap(tr.Q, tr.R).tolist(),
            }
        )
        print(
            f"  N = {N:>5}: ODE t_esc {t_pred:.3f}, simulation {mean:.3f} ± {se:.3f} "
            f"({abs(mean - t_pred) / max(se, 1e-12):.1f} se) {'ok' if good else 'FAIL'}"
        )
    lnN = np.log([r["N"] for r in rows])
    # weighted least squares (weights 1/se^2) and the slope's standard error: one escape time
    # fluctuates by O(1) (the SGD noise of the overlap is as large as m0), so with 16 seeds the
    # slope over a factor 16 in N is known to about +-0.4; the criterion is statistical
    ys = np.array([r["t_sim_mean"] for r in rows])
    ws = 1.0 / np.maximum(np.array([r["t_sim_se"] for r in rows]), 1e-12) ** 2
    xm = np.sum(ws * lnN) / np.sum(ws)
    sxx = np.sum(ws * (lnN - xm) ** 2)
    slope_sim = float(np.sum(ws * (lnN - xm) * ys) / sxx)
    slope_se = float(1.0 / np.sqrt(sxx))
    # the ODE's own slope over the same starts m0 = 1/sqrt(N) (pre-asymptotic corrections included)
    slope_ode_N = float(np.polyfit(lnN, [r["t_ode"] for r in rows], 1)[0])
    z_slope = abs(slope_sim - 1 / (2 * rate)) / slope_se
    ok_slope = z_slope < 3.0
    print(
        f"(ii) simulation: slope of t_esc against ln N = {slope_sim:.4f} ± {slope_se:.4f} "
        f"(theory 1/(2 rate) = {1 / (2 * rate):.4f}, ODE over the same N {slope_ode_N:.4f}; "
        f"{z_slope:.1f} se) {'ok' if ok_slope else 'FAIL'}"
    )
    elapsed = time.perf_counter() - t_start

    OUT.mkdir(exist_ok=True)
    report = {
        "model": MODEL,
        "lr": LR,
        "q_star": q_star,
        "rate": rate,
        "predicted_slope_ln_inv_m0": 1 / rate,
        "ode_slope_ln_inv_m0": slope_ode,
        "predicted_slope_ln_N": 1 / (2 * rate),
        "simulated_slope_ln_N": slope_sim,
        "simulated_slope_ln_N_se": slope_se,
        "simulated_slope_deviation_in_se": z_slope,
        "ode_slope_ln_N_same_starts": slope_ode_N,
        "ode": {"m0": m0s.tolist(), "t_esc": t_ode},
        "per_N": rows,
        "passed": bool(ok_ode and ok_sim and ok_slope),
        "seconds": elapsed,
    }
    (OUT / "phase_retrieval.json").write_text(json.dumps(report, indent=1))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 4.2))
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(rows)))
    for r, c in zip(rows, colors, strict=True):
        ax0.plot(r["sim_t"], np.abs(r["sim_m"]), color=c, lw=1.2, label=f"simulation N={r['N']}")
        ax0.plot(r["ode_t"], np.abs(r["ode_m"]), "--", color="k", lw=1.0, zorder=5)
    ax0.set_yscale("log")
    ax0.set_xlabel("t = steps / N")
    ax0.set_ylabel("|m| = |R| / sqrt(Q T)   (ODE dashed)")
    ax0.set_title("phase retrieval: overlap from m0 = 1/sqrt(N)")
    ax0.legend(fontsize=7)
    ax1.errorbar(
        lnN,
        [r["t_sim_mean"] for r in rows],
        yerr=[r["t_sim_se"] for r in rows],
        fmt="o",
        label="simulation (mean ± se)",
    )
    ax1.plot(lnN, [r["t_ode"] for r in rows], "k--", label="ODE from the same start")
    ax1.plot(
        lnN,
        rows[0]["t_ode"] + (lnN - lnN[0]) / (2 * rate),
        ":",
        color="C3",
        label=f"theory slope 1/(2 rate) = {1 / (2 * rate):.3f}",
    )
    ax1.set_xlabel("ln N")
    ax1.set_ylabel("escape time (|m| = 1/2)")
    ax1.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(OUT / "phase_retrieval.png", dpi=120)
    print(
        f"wrote {OUT / 'phase_retrieval.json'} and .png in {elapsed:.0f} s; "
        f"{'PASS' if report['passed'] else 'FAIL'}"
    )
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
