r"""Goldt et al. (2019): with label noise, an over-parameterised soft committee machine has an
asymptotic risk that grows with its width K and is proportional to eta sigma^2 at small eta.

What is reproduced
    Teacher: M = 2 erf units, T = I, v* = 1, output noise sigma. Student: K = 2..6 erf units,
    first layer trained by online SGD, second layer fixed at v = 1 (soft committee machine).
    After learning, the M "specialised" student units match the teacher units and the K - M
    extra units are kept at a small, noise-driven norm (Q ~ eta sigma^2); the risk settles at
    eps_inf, with eps_inf / (eta sigma^2) roughly independent of eta and sigma at small eta and
    increasing (close to linearly) with K.

Literature claim
    Goldt, Advani, Saxe, Krzakala & Zdeborova, NeurIPS 2019 ("Dynamics of stochastic gradient
    descent for two-layer neural networks in the teacher-student setup") and arXiv:1901.09085:
    when only the first layer is trained, the final generalisation error of a student with
    K = M + L units increases with L and is proportional to eta sigma^2 for small eta.

What the script does
    (i) ODE sweep over K in {2..6}, eta in {0.05, 0.1, 0.2}, sigma in {0.1, 0.2, 0.3}:
        * eps_inf = risk at the asymptotic fixed point of the ODE (specialised units + small
          extra units), found by scipy root-finding on the generated vector field (residual
          ~1e-16, so exactly converged); the Jacobian's largest eigenvalue says whether it is
          stable.
        * the ODE from a random initial condition (student weights N(0,1) at N = 1000, teacher
          orthonormal so T = I) to t = 1e5: the risk at t = 1e4 and 1e5, and the relative change
          over that last decade. For K = 2, 3 it converges to eps_inf (checked < 1e-3). For
          K >= 4 (two or more extra units) it does NOT: the fixed point is weakly unstable
          (eigenvalue ~ eta^2 sigma^2) and, from a random start, pairs of extra units become
          antiparallel (Q_ik / sqrt(Q_ii Q_kk) -> -1) with norms growing ~ t^(2/3) driven by the
          noise; their outputs cancel and the risk keeps drifting down slowly (~ t^(-1/3)). This
          is reported (ODE and plot), not hidden; eps_inf is the fixed-point value.
    (ii) Simulations (N = 1000, 4 seeds, eta = 0.2, sigma = 0.3, K = 2 and K = 4) started from
        the ODE's asymptotic state realised exactly at finite N (a random start would spend
        ~10^3 time units on the Saad-Solla plateau, beyond this script's budget, and for K = 4 would
        end in the drifting pair branch), run to t = 400; the simulated risk is time-averaged
        over t in [100, 400] per seed and compared with eps_inf and with the ODE from the same
        measured initial overlaps, with the standard error over seeds.
    (iii) The K >= 4 drift is checked by simulation too: K = 4 from a random start (N = 500,
        4 seeds, t = 2000; not run with --quick): the simulated risk follows the ODE from the
        same initial overlaps below eps_inf, and the extra units pair up antiparallel.

Run
    python validation/goldt_noise.py           # full (~4 min on 2 CPU cores)
    python validation/goldt_noise.py --quick   # K <= 4, 2 eta, 2 sigma, N = 300, no (iii) (< 1 min)

Writes
    validation/out/goldt_noise.png   eps_inf/(eta sigma^2) vs K for each (eta, sigma) with the
                                     simulation points; ODE risk curves from random init (drift
                                     for K >= 4); simulation vs ODE risk curves
    validation/out/goldt_noise.json  every number, the criteria and verdicts
Exit code 0 if every criterion listed in the JSON ("criteria") holds, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from scipy.optimize import root  # noqa: E402

import hildlimits as hl  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"
M = 2
ODE_T1 = 1e5
ODE_TOL = {"rtol": 1e-8, "atol": 1e-10}  # the asymptotic risk is needed to ~1e-5 relative


class Field:
    """The generated vector field on the independent entries x = (Q[i<=k], R[i,n])."""

    def __init__(self, system, K: int):
        self.K = K
        self.flat = hl.FlatState(K=K, M=M)
        module = system.module

        def f(x, eta, sigma):
            return self.flat.field(system, x, self.args(eta, sigma)) / eta

        self.f = jax.jit(f)
        self.jac = jax.jit(jax.jacfwd(f))
        self.risk = jax.jit(lambda x: module.risk(self.unpack(x), self.args(0.0, 0.0)))

    def args(self, eta, sigma):
        K = self.K
        return {
            "T": jnp.eye(M),
            "v_teacher": jnp.ones(M),
            "v": jnp.ones(K),
            "eta": eta,
            "eta_v": eta,
            "sigma": sigma,
            "kappa": 0.0,
        }

    def unpack(self, x):
        return self.flat.unpack(x)

    def pack(self, Q, R):
        return self.flat.pack(Q, R)


def guess_state(K: int, eta: float, sigma: float):
    """Specialised units R = I, extra units small and aligned (the structure of the fixed
    point; the root-finder does the rest)."""
    q = 0.05 * eta * sigma**2 / max(K - M, 1)
    Q = np.diag([1.0] * M + [q] * (K - M))
    Q[M:, M:] = q
    R = np.zeros((K, M))
    R[:M, :M] = np.eye(M)
    R[M:, :] = -0.1 * q
    return Q, R


def fixed_point(fld: Field, eta: float, sigma: float, x0) -> dict:
    e, s = jnp.asarray(eta), jnp.asarray(sigma)
    sol = root(
        lambda x: np.asarray(fld.f(jnp.asarray(x), e, s)),
        np.asarray(x0, float),
        jac=lambda x: np.asarray(fld.jac(jnp.asarray(x), e, s)),
        tol=1e-14,
    )
    x = jnp.asarray(sol.x)
    st = fld.unpack(x)
    Q, R = np.asarray(st["Q"]), np.asarray(st["R"])
    K = fld.K
    J = eta * np.asarray(fld.jac(x, e, s))  # d(dx/dt)/dx
    ev = np.linalg.eigvals(J)
    return {
        "x": np.asarray(x),
        "Q": Q,
        "R": R,
        "eps_inf": float(fld.risk(x)),
        "residual": float(eta * np.abs(np.asarray(fld.f(x, e, s))).max()),
        "lambda_max": float(ev.real.max()),
        # each teacher unit is matched by one student unit (in any order): min_n max_i R_in
        "specialised_R_diag": float(R.max(axis=0).min()),
        "extra_units_Q_diag": np.sort(np.diag(Q))[: K - M].tolist(),
    }


def random_init(model, N: int, seed: int) -> hl.Overlaps:
    """Student W ~ N(0, 1) at dimension N, teacher rows orthonormal * sqrt(N) (T = I)."""
    rng = np.random.default_rng([seed, model.K])
    W = rng.standard_normal((model.K, N))
    Ws = np.linalg.qr(rng.standard_normal((N, M)))[0].T * math.sqrt(N)
    Q = W @ W.T / N
    return hl.Overlaps.for_model(model, Q=(Q + Q.T) / 2, R=W @ Ws.T / N, T=np.eye(M))


def pair_structure(Q) -> dict:
    """Most negative correlation among extra-unit pairs, largest extra norm."""
    d = np.sqrt(np.diag(Q))
    C = Q / np.outer(d, d)
    K = len(d)
    best = min((C[i, k] for i in range(K) for k in range(i + 1, K)), default=0.0)
    return {"min_pair_correlation": float(best), "max_Q_diag": float(np.diag(Q).max())}


def ode_sweep(cfg, log) -> dict:
    rows = []
    curves = {}
    fps = {}
    t0 = time.perf_counter()
    for K in cfg["Ks"]:
        model = hl.Committee(K=K, M=M, activation="erf", train_second_layer=False)
        system = hl.derive(model)
        fld = Field(system, K)
        init = random_init(model, 1000, cfg["seed"])
        for eta in cfg["etas"]:
            for sigma in cfg["sigmas"]:
                hyper = hl.Hyperparams(lr=eta, noise=sigma)
                tr = hl.solve(
                    system,
                    init=init,
                    hyper=hyper,
                    t1=cfg["ode_t1"],
                    n_save=121,
                    t_first=1.0,
                    **ODE_TOL,
                )
                if tr.status != "ok":
                    raise RuntimeError(f"ODE K={K} eta={eta} sigma={sigma}: {tr.status}")
                i_dec = int(np.argmin(np.abs(tr.t - cfg["ode_t1"] / 10)))
                r_end, r_dec = float(tr.risk[-1]), float(tr.risk[i_dec])
                # seed: the ODE's own late state when it has converged, else the structure
                x0 = (
                    fld.pack(tr.Q[-1], tr.R[-1])
                    if K <= M + 1
                    else fld.pack(*guess_state(K, eta, sigma))
                )
                fp = fixed_point(fld, eta, sigma, x0)
                fps[(K, eta, sigma)] = fp
                scale = eta * sigma**2
                row = {
                    "K": K,
                    "eta": eta,
                    "sigma": sigma,
                    "eps_inf": fp["eps_inf"],
                    "eps_inf_over_eta_sigma2": fp["eps_inf"] / scale,
                    "fixed_point_residual": fp["residual"],
                    "fixed_point_lambda_max": fp["lambda_max"],
                    "fixed_point_stable": fp["lambda_max"] < 0,
                    "fixed_point_specialised_R_min": fp["specialised_R_diag"],
                    "fixed_point_extra_units_Q": fp["extra_units_Q_diag"],
                    "ode_random_init_risk_t_end": r_end,
                    "ode_random_init_risk_t_end_over_eta_sigma2": r_end / scale,
                    "ode_random_init_risk_t_end_over_10": r_dec,
                    "ode_random_init_rel_change_last_decade": abs(r_end - r_dec) / r_end,
                    "ode_random_init_converged": abs(r_end - r_dec) / r_end < 1e-3,
                    "ode_random_init_rel_dev_from_eps_inf": (r_end - fp["eps_inf"]) / fp["eps_inf"],
                    "ode_random_init_final_state": pair_structure(tr.Q[-1]),
                    "ode_steps": tr.num_steps,
                }
                rows.append(row)
                if eta == cfg["curve_eta"] and sigma == cfg["curve_sigma"]:
                    curves[K] = (tr.t, tr.risk, fp["eps_inf"])
        log(
            f"K={K}: eps_inf/(eta sigma^2) = "
            + ", ".join(f"{r['eps_inf_over_eta_sigma2']:.4f}" for r in rows if r["K"] == K)
            + f"  ({time.perf_counter() - t0:.0f} s)"
        )
    return {"rows": rows, "curves": curves, "fixed_points": fps}


def sim_check(cfg, fps, log) -> list:
    out = []
    for K in cfg["sim_Ks"]:
        eta, sigma = cfg["sim_eta"], cfg["sim_sigma"]
        model = hl.Committee(K=K, M=M, activation="erf", train_second_layer=False)
        system = hl.derive(model)
        fp = fps[(K, eta, sigma)]
        init = hl.Overlaps.for_model(model, Q=fp["Q"], R=fp["R"], T=np.eye(M))
        hyper = hl.Hyperparams(lr=eta, noise=sigma)
        t0 = time.perf_counter()
        sim = hl.simulate(
            model,
            hyper=hyper,
            N=cfg["sim_N"],
            init=init,
            seeds=cfg["sim_seeds"],
            seed=cfg["seed"],
            t1=cfg["sim_t1"],
            n_save=cfg["sim_n_save"],
            spacing="linear",
            progress=False,
        )
        secs = time.perf_counter() - t0
        if sim.status != "ok":
            raise RuntimeError(f"simulation K={K}: {sim.status}")
        sel = sim.t >= cfg["sim_t_avg"]
        per_seed = sim.risk[:, sel].mean(axis=1)
        ode_per_seed = []
        trajs = []
        for s in range(sim.seeds):
            tr = hl.solve(system, init=sim.initial_overlaps(s), hyper=hyper, ts=sim.t, **ODE_TOL)
            trajs.append(tr)
            ode_per_seed.append(float(tr.risk[sel].mean()))
        m = float(per_seed.mean())
        se = float(per_seed.std(ddof=1) / math.sqrt(len(per_seed))) if len(per_seed) > 1 else 0.0
        ode = float(np.mean(ode_per_seed))
        row = {
            "K": K,
            "eta": eta,
            "sigma": sigma,
            "N": cfg["sim_N"],
            "seeds": cfg["sim_seeds"],
            "t1": cfg["sim_t1"],
            "average_window": [cfg["sim_t_avg"], cfg["sim_t1"]],
            "init": "the ODE fixed point (eps_inf state) realised exactly at finite N",
            "sim_risk_time_avg_per_seed": per_seed.tolist(),
            "sim_risk_time_avg": m,
            "sim_risk_sem": se,
            "ode_same_init_time_avg": ode,
            "eps_inf_fixed_point": fp["eps_inf"],
            "sim_over_eta_sigma2": m / (eta * sigma**2),
            "sem_over_eta_sigma2": se / (eta * sigma**2),
            "rel_dev_sim_vs_ode": (m - ode) / ode,
            "dev_in_sem": (m - ode) / se if se > 0 else None,
            "simulation_seconds": secs,
        }
        out.append({"row": row, "sim": sim, "trajs": trajs})
        log(
            f"simulation K={K} N={cfg['sim_N']} x{cfg['sim_seeds']}: time-avg risk {m:.5g} +- {se:.2g} "
            f"vs ODE {ode:.5g} (eps_inf {fp['eps_inf']:.5g}); {secs:.0f} s"
        )
    return out


def sim_drift(cfg, fps, log) -> dict:
    """K >= 4 from a random start: the simulation follows the ODE below eps_inf (pairs)."""
    K, eta, sigma = cfg["drift_K"], cfg["sim_eta"], cfg["sim_sigma"]
    model = hl.Committee(K=K, M=M, activation="erf", train_second_layer=False)
    system = hl.derive(model)
    hyper = hl.Hyperparams(lr=eta, noise=sigma)
    t0 = time.perf_counter()
    sim = hl.simulate(
        model,
        hyper=hyper,
        N=cfg["drift_N"],
        random_init=hl.RandomInit(student_std=1.0),
        seeds=cfg["sim_seeds"],
        seed=cfg["seed"],
        t1=cfg["drift_t1"],
        n_save=150,
        t_first=1.0,
        progress=False,
    )
    secs = time.perf_counter() - t0
    if sim.status != "ok":
        raise RuntimeError(f"drift simulation: {sim.status}")
    trajs = [
        hl.solve(system, init=sim.initial_overlaps(s), hyper=hyper, ts=sim.t, **ODE_TOL)
        for s in range(sim.seeds)
    ]
    sel = sim.t >= cfg["drift_t1"] / 2
    per_seed = sim.risk[:, sel].mean(axis=1)
    ode_per_seed = np.array([tr.risk[sel].mean() for tr in trajs])
    m, se = float(per_seed.mean()), float(per_seed.std(ddof=1) / math.sqrt(len(per_seed)))
    ode = float(ode_per_seed.mean())
    eps = fps[(K, eta, sigma)]["eps_inf"]
    corr_sim = [pair_structure(sim.Q[s, -1])["min_pair_correlation"] for s in range(sim.seeds)]
    corr_ode = [pair_structure(tr.Q[-1])["min_pair_correlation"] for tr in trajs]
    row = {
        "K": K,
        "eta": eta,
        "sigma": sigma,
        "N": cfg["drift_N"],
        "seeds": cfg["sim_seeds"],
        "init": "random: student N(0,1), teacher N(0,1) (measured overlaps -> per-seed ODE)",
        "t1": cfg["drift_t1"],
        "average_window": [cfg["drift_t1"] / 2, cfg["drift_t1"]],
        "sim_risk_time_avg": m,
        "sim_risk_sem": se,
        "ode_same_init_time_avg": ode,
        "eps_inf_fixed_point": eps,
        "rel_dev_sim_vs_ode": (m - ode) / ode,
        "sim_below_eps_inf": m < eps,
        "sim_min_pair_correlation_at_t1": corr_sim,
        "ode_min_pair_correlation_at_t1": corr_ode,
        "simulation_seconds": secs,
    }
    log(
        f"drift K={K} N={cfg['drift_N']} random init: time-avg risk over t in "
        f"[{cfg['drift_t1'] / 2:g}, {cfg['drift_t1']:g}] {m:.5g} +- {se:.2g} vs ODE {ode:.5g} "
        f"(eps_inf {eps:.5g}); pair correlation sim {np.mean(corr_sim):.3f} ode "
        f"{np.mean(corr_ode):.3f}; {secs:.0f} s"
    )
    return {"row": row, "sim": sim, "trajs": trajs}


def plot(cfg, sweep, sims, drift, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(14, 10))
    axes = axes.ravel()
    ax = axes[0]
    colors = dict(
        zip(cfg["etas"], plt.cm.viridis(np.linspace(0.1, 0.8, len(cfg["etas"]))), strict=True)
    )
    styles = dict(zip(cfg["sigmas"], ["-", "--", ":", "-."], strict=False))
    markers = dict(zip(cfg["sigmas"], ["o", "s", "^", "d"], strict=False))
    rows = sweep["rows"]
    for eta in cfg["etas"]:
        for sigma in cfg["sigmas"]:
            rr = [r for r in rows if r["eta"] == eta and r["sigma"] == sigma]
            ax.plot(
                [r["K"] for r in rr],
                [r["eps_inf_over_eta_sigma2"] for r in rr],
                ls=styles[sigma],
                marker=markers[sigma],
                color=colors[eta],
                ms=4,
                label=f"η={eta}, σ={sigma}",
            )
    for s in sims:
        r = s["row"]
        ax.errorbar(
            r["K"],
            r["sim_over_eta_sigma2"],
            yerr=r["sem_over_eta_sigma2"],
            fmt="*",
            ms=13,
            color="r",
            mec="k",
            capsize=4,
            zorder=5,
        )
    ax.plot(
        [],
        [],
        "r*",
        ms=10,
        label=f"simulation N={cfg['sim_N']} (η={cfg['sim_eta']}, σ={cfg['sim_sigma']})",
    )
    ax.set_xlabel("student width K (teacher M = 2)")
    ax.set_ylabel("ε∞ / (η σ²)")
    ax.set_title("asymptotic risk (ODE fixed point) of the soft committee, first layer trained")
    ax.set_xticks(cfg["Ks"])
    ax.legend(fontsize=7, ncol=2)

    ax = axes[1]
    cc = plt.cm.plasma(np.linspace(0.0, 0.85, len(sweep["curves"])))
    scale = cfg["curve_eta"] * cfg["curve_sigma"] ** 2
    for (K, (t, risk, eps)), c in zip(sorted(sweep["curves"].items()), cc, strict=True):
        sel = t > 0
        ax.plot(t[sel], risk[sel] / scale, color=c, lw=1.5, label=f"K={K}: ODE from random init")
        ax.axhline(eps / scale, color=c, ls="--", lw=1)
    ax.plot([], [], "k--", lw=1, label="fixed point ε∞")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylim(0.1, 30)
    ax.set_xlabel("t = steps / N")
    ax.set_ylabel("risk / (η σ²)")
    ax.set_title(
        f"η={cfg['curve_eta']}, σ={cfg['curve_sigma']}: K ≥ 4 drifts below ε∞ (antiparallel extra pairs)",
        fontsize=9,
    )
    ax.legend(fontsize=7)

    ax = axes[2]
    for s, c in zip(sims, ["tab:blue", "tab:red", "tab:green"], strict=False):
        sim, r = s["sim"], s["row"]
        m, sd = sim.risk_mean, sim.risk_std
        ax.plot(
            sim.t, m, color=c, lw=1.2, label=f"simulation K={r['K']} (mean ± sd, {sim.seeds} seeds)"
        )
        ax.fill_between(sim.t, m - sd, m + sd, color=c, alpha=0.2, lw=0)
        ode = np.mean([tr.risk for tr in s["trajs"]], axis=0)
        ax.plot(sim.t, ode, color=c, ls="--", lw=1.5, label=f"ODE K={r['K']}")
        ax.axvspan(r["average_window"][0], r["average_window"][1], color="grey", alpha=0.05)
    ax.set_xlabel("t = steps / N")
    ax.set_ylabel("risk")
    ax.set_title(
        f"simulation from the ε∞ state, N={cfg['sim_N']}, η={cfg['sim_eta']}, σ={cfg['sim_sigma']}"
    )
    ax.legend(fontsize=7)

    ax = axes[3]
    if drift is None:
        ax.set_axis_off()
        ax.text(0.5, 0.5, "random-start simulation not run (--quick)", ha="center")
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return
    sim, r = drift["sim"], drift["row"]
    sel = sim.t > 0
    m, sd = sim.risk_mean[sel], sim.risk_std[sel]
    ax.plot(
        sim.t[sel],
        m,
        color="tab:red",
        lw=1.3,
        label=f"simulation N={sim.N} (mean ± sd, {sim.seeds} seeds)",
    )
    ax.fill_between(sim.t[sel], m - sd, m + sd, color="tab:red", alpha=0.2, lw=0)
    ode = np.mean([tr.risk for tr in drift["trajs"]], axis=0)[sel]
    ax.plot(sim.t[sel], ode, "k--", lw=1.5, label="ODE from each seed's initial overlaps (mean)")
    ax.axhline(r["eps_inf_fixed_point"], color="grey", ls=":", label="ε∞ (fixed point)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("t = steps / N")
    ax.set_ylabel("risk")
    ax.set_title(
        f"K={r['K']} from a random start, η={r['eta']}, σ={r['sigma']}: risk falls below ε∞ "
        f"(extra units pair up antiparallel)",
        fontsize=9,
    )
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--quick", action="store_true", help="fewer K, eta, sigma and a small N (< 1 minute)"
    )
    ns = p.parse_args(argv)
    t_all = time.perf_counter()
    OUT.mkdir(parents=True, exist_ok=True)

    def log(msg):
        print(f"[{time.perf_counter() - t_all:6.1f}s] {msg}", flush=True)

    cfg = {
        "Ks": [2, 3, 4, 5, 6],
        "etas": [0.05, 0.1, 0.2],
        "sigmas": [0.1, 0.2, 0.3],
        "ode_t1": ODE_T1,
        "curve_eta": 0.1,
        "curve_sigma": 0.3,
        "seed": 0,
        "sim_Ks": [2, 4],
        "sim_eta": 0.2,
        "sim_sigma": 0.3,
        "sim_N": 1000,
        "sim_seeds": 4,
        "sim_t1": 400.0,
        "sim_t_avg": 100.0,
        "sim_n_save": 201,
        "drift_K": 4,
        "drift_N": 500,
        "drift_t1": 2000.0,
    }
    if ns.quick:
        cfg.update(
            {
                "Ks": [2, 3, 4],
                "etas": [0.1, 0.2],
                "sigmas": [0.2, 0.3],
                "curve_eta": 0.1,
                "sim_N": 300,
                "sim_t1": 200.0,
                "sim_t_avg": 50.0,
                "sim_n_save": 101,
                "drift_N": 200,
                "drift_t1": 1000.0,
            }
        )
    sweep = ode_sweep(cfg, log)
    sims = sim_check(cfg, sweep["fixed_points"], log)
    drift = None if ns.quick else sim_drift(cfg, sweep["fixed_points"], log)
    rows = sweep["rows"]

    # ---- summaries
    def val(K, eta, sigma):
        return next(
            r["eps_inf_over_eta_sigma2"]
            for r in rows
            if r["K"] == K and r["eta"] == eta and r["sigma"] == sigma
        )

    table = {
        f"K={K}": {
            f"eta={eta}": {f"sigma={s}": val(K, eta, s) for s in cfg["sigmas"]}
            for eta in cfg["etas"]
        }
        for K in cfg["Ks"]
    }
    eta_min, eta_2 = cfg["etas"][0], cfg["etas"][1]
    small_eta = {}
    for K in cfg["Ks"]:
        a = np.array([val(K, eta_min, s) for s in cfg["sigmas"]])
        b = np.array([val(K, eta_2, s) for s in cfg["sigmas"]])
        small_eta[K] = {
            "mean_at_smallest_eta": float(a.mean()),
            "rel_spread_over_sigma_at_smallest_eta": float(np.ptp(a) / a.mean()),
            "rel_change_between_two_smallest_eta": float(abs(b.mean() - a.mean()) / a.mean()),
            "linear_extrapolation_to_eta_0": float(
                a.mean() - (b.mean() - a.mean()) * eta_min / (eta_2 - eta_min)
            ),
        }
    increments = {
        K: small_eta[K]["mean_at_smallest_eta"] - small_eta[K - 1]["mean_at_smallest_eta"]
        for K in cfg["Ks"][1:]
    }
    monotone = all(
        all(val(K + 1, eta, s) > val(K, eta, s) for K in cfg["Ks"][:-1])
        for eta in cfg["etas"]
        for s in cfg["sigmas"]
    )
    tol = {
        "sigma_spread": 0.05,
        "eta_change": 0.15,
        "sim_rel": 0.05,
        "drift_rel": 0.10,
        "sim_z": 3.0,
        "ode_fp": 1e-3,
    }
    crit = {
        "all_fixed_points_found_residual_below_1e-12": all(
            r["fixed_point_residual"] < 1e-12 for r in rows
        ),
        "all_fixed_points_specialised_R_above_0.9": all(
            r["fixed_point_specialised_R_min"] > 0.9 for r in rows
        ),
        "eps_inf_increases_with_K_at_every_eta_sigma": monotone,
        f"eps_inf/(eta sigma^2)_spread_over_sigma_below_{tol['sigma_spread']:.0%}_at_eta={eta_min}": all(
            v["rel_spread_over_sigma_at_smallest_eta"] < tol["sigma_spread"]
            for v in small_eta.values()
        ),
        f"eps_inf/(eta sigma^2)_changes_below_{tol['eta_change']:.0%}_between_eta={eta_min}_and_{eta_2}": all(
            v["rel_change_between_two_smallest_eta"] < tol["eta_change"] for v in small_eta.values()
        ),
        f"ode_from_random_init_converges_to_eps_inf_within_{tol['ode_fp']:g}_for_K<=3": all(
            r["ode_random_init_converged"]
            and abs(r["ode_random_init_rel_dev_from_eps_inf"]) < tol["ode_fp"]
            for r in rows
            if r["K"] <= M + 1
        ),
        f"simulation_within_{tol['sim_z']:g}se+{tol['sim_rel']:.0%}_of_ode": all(
            abs(s["row"]["sim_risk_time_avg"] - s["row"]["ode_same_init_time_avg"])
            <= tol["sim_z"] * s["row"]["sim_risk_sem"]
            + tol["sim_rel"] * s["row"]["ode_same_init_time_avg"]
            for s in sims
        ),
    }
    if drift is not None:  # not run in --quick
        dr = drift["row"]
        crit[
            f"random_start_K={cfg['drift_K']}_simulation_within_{tol['sim_z']:g}se+"
            f"{tol['drift_rel']:.0%}_of_ode"
        ] = (
            abs(dr["sim_risk_time_avg"] - dr["ode_same_init_time_avg"])
            <= tol["sim_z"] * dr["sim_risk_sem"] + tol["drift_rel"] * dr["ode_same_init_time_avg"]
        )
        crit[f"random_start_K={cfg['drift_K']}_simulation_below_eps_inf_with_antiparallel_pair"] = (
            dr["sim_below_eps_inf"] and max(dr["sim_min_pair_correlation_at_t1"]) < -0.9
        )
    crit = {k: bool(v) for k, v in crit.items()}
    passed = all(crit.values())
    plot(cfg, sweep, sims, drift, OUT / "goldt_noise.png")
    drift_rows = [
        {
            k: r[k]
            for k in (
                "K",
                "eta",
                "sigma",
                "eps_inf_over_eta_sigma2",
                "ode_random_init_risk_t_end_over_eta_sigma2",
                "ode_random_init_rel_change_last_decade",
                "fixed_point_lambda_max",
                "ode_random_init_final_state",
            )
        }
        for r in rows
        if r["K"] >= M + 2
    ]
    report = {
        "claim": "Goldt et al. 2019: first-layer-trained soft committee (erf, fixed v=1) with K > M "
        "and output noise sigma: asymptotic risk grows with K, ~ eta sigma^2 at small eta",
        "setup": "M=2 erf teacher, T=I, v*=1, student K erf units, v=1 fixed; online SGD; "
        "risk = 1/2 E[(yhat - f*)^2] with the noiseless teacher; t = steps/N",
        "eps_inf_definition": "risk at the ODE fixed point with M specialised units and K-M small "
        "extra units (scipy root on the generated vector field; residual < 1e-12)",
        "table_eps_inf_over_eta_sigma2": table,
        "small_eta_summary": {f"K={K}": v for K, v in small_eta.items()},
        "increment_per_extra_unit_at_smallest_eta": {f"K={K}": v for K, v in increments.items()},
        "ode_sweep": rows,
        "finding_K_ge_4": "With two or more extra units the eps_inf fixed point is weakly unstable "
        "(lambda_max > 0, ~ eta^2 sigma^2). From a random start the ODE does not settle on it: "
        "extra units pair up antiparallel (correlation -> -1), their norms grow by noise-driven "
        "diffusion and their outputs cancel, so the risk keeps decreasing slowly below eps_inf "
        "(not converged at t=1e5; relative change over the last decade listed). eps_inf/(eta "
        "sigma^2) of the table is the fixed-point value that Goldt et al.'s statement refers to.",
        "drift_K_ge_4": drift_rows,
        "simulations": [s["row"] for s in sims],
        "simulation_random_start_drift": drift["row"] if drift is not None else "not run (--quick)",
        "criteria": crit,
        "tolerances": tol,
        "passed": passed,
        "config": {k: v for k, v in cfg.items()},
        "quick": ns.quick,
        "runtime_seconds": time.perf_counter() - t_all,
        "versions": {"hildlimits": hl.__version__, "jax": jax.__version__},
    }
    with open(OUT / "goldt_noise.json", "w") as fh:
        json.dump(report, fh, indent=1)
    bad = [k for k, v in crit.items() if not v]
    log("PASS" if not bad else "FAIL: " + ", ".join(bad))
    log(f"wrote {OUT / 'goldt_noise.json'} and .png")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
