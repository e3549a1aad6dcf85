r"""Saad & Solla (1995): the symmetric plateau of a soft committee machine and its escape.

What is reproduced
    Online SGD of an erf soft committee machine (K = M, T = I, second layers fixed at
    v = v* = 1, no noise) from small random weights first converges to a *symmetric* fixed point
    of the order-parameter ODEs where every student unit has the same overlap with every
    teacher unit, and the risk sits on a plateau. The plateau is unstable only in directions
    that break the permutation symmetry; at finite N the symmetry is broken by O(1/sqrt N)
    random initial overlaps (and SGD noise), so the escape takes a time

        t_escape = a + b ln N,   b = 1 / (2 lambda),

    with lambda the largest positive eigenvalue of the ODE's Jacobian at the fixed point.

Literature claim
    Saad & Solla, Phys. Rev. E 52, 4225 (1995) / PRL 74, 4337 (1995): for eta -> 0 the plateau
    risk is (K/pi) [pi/6 - K arcsin(1/(2K))]; the plateau length is set by the repulsion
    eigenvalue of the symmetric fixed point and grows logarithmically with the size of the
    symmetry-breaking perturbation (~ ln N for random initial weights, see also Biehl, Riegler
    & Woehler 1996).

What the script does (K = M = 2 and K = M = 3, eta = 0.5)
    1. Finds the symmetric fixed point of the ODE at the working eta (ODE solve from an exactly
       symmetric initial condition, refined by scipy root-finding in the invariant symmetric
       subspace (Q_ii, Q_i!=k, R_in)), its risk (the ODE plateau height), and, by continuation
       to eta = 1e-4, checks the eta -> 0 formula above.
    2. Jacobian of the full vector field at the fixed point with jax.jacfwd, on the independent
       entries (upper triangle of Q, all of R); lambda = largest real eigenvalue; b = 1/(2 lambda).
    3. ODE ensemble: escape times of the ODE from many random initial overlaps (drawn exactly
       like a simulation's) at N = 250 ... 256000; fit t = a + b ln N.
    4. Simulations (random init, several seeds, several N); per seed also the ODE escape time
       from that seed's measured initial overlaps. t_escape = first time the risk falls below
       half the ODE plateau height. Fits of t_escape vs ln N: direct, and with the per-seed ODE
       escape time as a control variate (slope of t_sim - t_ode plus the ensemble ODE slope).
    5. Plateau height of the simulation: median risk over t in [20, t_escape/2] per seed.

Run
    python validation/saad_solla_plateau.py           # full (~5 min on 2 CPU cores)
    python validation/saad_solla_plateau.py --quick   # smaller N and fewer seeds (< 1 min)

Writes
    validation/out/saad_solla_plateau.png   risk curves (simulation mean per N, ODE per N,
                                             plateau heights) and t_escape vs ln N with fits
    validation/out/saad_solla_plateau.json  every number compared, the criteria and verdicts
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
ETA = 0.5
STUDENT_STD = 0.5
RTOL, ATOL = 1e-12, 1e-14  # tight: errors are amplified when escaping the plateau
T_WINDOW_START = (
    20.0  # plateau window starts after the initial transient (|fast eigenvalue|^-1 ~ 3)
)
ODE_T1 = 2500.0
ODE_TS = np.concatenate([[0.0], np.geomspace(0.05, 2.0, 30), np.arange(2.5, ODE_T1 + 0.25, 0.5)])


def formula_height(K: int) -> float:
    """Saad & Solla's eta -> 0 plateau risk for K = M, T = I, v = v* = 1."""
    return K / math.pi * (math.pi / 6 - K * math.asin(1 / (2 * K)))


# ----------------------------------------------------------------------------- fixed point


class Field:
    """The ODE vector field on the independent entries x = (Q[i<=k], R[i,n]) and on the
    invariant symmetric subspace p = (Q_ii, Q_ik, R_in)."""

    def __init__(self, system, K: int):
        self.K = K
        self.system = system
        self.flat = hl.FlatState(K=K, M=K)
        self.iu, self.nq = self.flat.iu, self.flat.nq
        self.risk_fn = system.module.risk

    def args(self, eta):
        K = self.K
        return {
            "T": jnp.eye(K),
            "v_teacher": jnp.ones(K),
            "v": jnp.ones(K),
            "eta": eta,
            "eta_v": eta,
            "sigma": 0.0,
            "kappa": 0.0,
        }

    def unpack(self, x):
        return self.flat.unpack(x)

    def full(self, x, eta):
        return self.flat.field(self.system, x, self.args(eta))

    def sym_state(self, p):
        q, c, r = p
        K = self.K
        Q = jnp.full((K, K), c) + (q - c) * jnp.eye(K)
        return jnp.concatenate([Q[self.iu], jnp.full(K * K, r)])

    def reduced(self, p, eta):
        d = self.full(self.sym_state(p), eta)
        return jnp.stack([d[0], d[1], d[self.nq]])  # dQ_00, dQ_01, dR_00

    def risk(self, x, eta=0.0):
        return float(self.risk_fn(self.unpack(x), self.args(eta)))


_FNS = {}


def _compiled(system, K):
    """Jitted functions of the field (eta traced: each is compiled once per K)."""
    if K not in _FNS:
        fld = Field(system, K)

        def g(p, eta):
            return fld.reduced(p, eta) / eta

        _FNS[K] = {
            "reduced": jax.jit(g),  # reduced field / eta
            "reduced_jac": jax.jit(jax.jacfwd(g)),
            "full": jax.jit(fld.full),
            "full_jac": jax.jit(jax.jacfwd(fld.full)),
            "risk": jax.jit(lambda x: fld.risk_fn(fld.unpack(x), fld.args(0.0))),
            "sym_state": jax.jit(fld.sym_state),
        }
    return _FNS[K]


def symmetric_fixed_point(system, K: int, eta: float, guess=None) -> dict:
    info = {}
    if guess is None:
        # exactly symmetric initial condition: the ODE stays in the symmetric subspace (up to
        # round-off, which the instability amplifies only after t ~ 36/lambda) and converges
        # to the plateau
        model = hl.Committee(K=K, M=K, activation="erf")
        init = hl.Overlaps.for_model(
            model, Q=0.25 * np.eye(K), R=np.full((K, K), 1e-3), T=np.eye(K)
        )
        # (same save times as every other solve here: one compilation per K)
        tr = hl.solve(
            system, init=init, hyper=hl.Hyperparams(lr=eta), ts=ODE_TS, rtol=RTOL, atol=ATOL
        )
        i = int(np.searchsorted(tr.t, 300.0))
        Q, R = tr.Q[i], tr.R[i]
        guess = [Q[0, 0], Q[0, 1], R[0, 0]]
        info["symmetric_ode_risk_t300"] = float(tr.risk[i])
        info["symmetric_ode_asymmetry_t300"] = float(
            max(np.ptp(R), np.ptp(np.diag(Q)), np.ptp(Q[np.triu_indices(K, 1)]))
        )
    fns = _compiled(system, K)
    f, jac = fns["reduced"], fns["reduced_jac"]
    e = jnp.asarray(float(eta))
    sol = root(
        lambda p: np.asarray(f(jnp.asarray(p), e)),
        np.asarray(guess, float),
        jac=lambda p: np.asarray(jac(jnp.asarray(p), e)),
        tol=1e-14,
    )
    p = np.asarray(sol.x)
    x = fns["sym_state"](jnp.asarray(p))
    resid = float(jnp.abs(fns["full"](x, jnp.asarray(float(eta)))).max())
    info.update(
        {
            "eta": eta,
            "Q_diag": float(p[0]),
            "Q_offdiag": float(p[1]),
            "R": float(p[2]),
            "height": float(fns["risk"](x)),
            "residual_max_abs_dstate_dt": resid,
        }
    )
    return info


def jacobian_analysis(system, K: int, eta: float, fp: dict) -> dict:
    fld = Field(system, K)
    x = fld.sym_state(jnp.asarray([fp["Q_diag"], fp["Q_offdiag"], fp["R"]]))
    fns = _compiled(system, K)
    J = np.asarray(fns["full_jac"](x, jnp.asarray(float(eta))))
    ev, vec = np.linalg.eig(J)
    order = np.argsort(-ev.real)
    ev, vec = ev[order], vec[:, order]
    lam = float(ev[0].real)
    # the unstable eigenvector breaks the permutation symmetry: its R-block has zero mean
    v0 = np.real(vec[:, 0])
    Rblk = v0[fld.nq :].reshape(K, K)
    jac_red = fns["reduced_jac"]  # Jacobian of (reduced field / eta)
    pfp = jnp.asarray([fp["Q_diag"], fp["Q_offdiag"], fp["R"]])
    Jsym = eta * np.asarray(jac_red(pfp, jnp.asarray(float(eta))))
    ev_sym = np.sort(np.linalg.eigvals(Jsym).real)[::-1]
    n_degenerate = int(np.sum(np.abs(ev.real - lam) < 1e-8 * max(1.0, abs(lam))))
    return {
        "coordinates": "independent entries: Q[i<=k] (upper triangle; Q stays symmetric) and all "
        "R[i,n]; J = jax.jacfwd of the generated vector_field on them",
        "eigenvalues_real_part_sorted": [float(e) for e in ev.real],
        "eigenvalues_max_abs_imag": float(np.abs(ev.imag).max()),
        "lambda_max": lam,
        "lambda_max_is_real": bool(abs(ev[0].imag) < 1e-10),
        "lambda_max_multiplicity": n_degenerate,
        "unstable_eigenvector_R_block": Rblk.tolist(),
        "unstable_eigenvector_R_block_mean_over_norm": float(abs(Rblk.mean()) / np.linalg.norm(v0)),
        "symmetric_subspace_eigenvalues": [float(e) for e in ev_sym],
        "explanation": "lambda_max is the largest real eigenvalue of J; its eigenvector has zero "
        "projection on the symmetric subspace (its R-block has zero mean) and the restriction of "
        "the flow to the symmetric subspace (Q_ii, Q_ik, R_in) has only negative eigenvalues: the "
        "plateau attracts symmetric states and is left only through symmetry breaking.",
        "predicted_slope_b": 1.0 / (2.0 * lam),
    }


# ----------------------------------------------------------------------------- escape times


def escape_time(t, risk, h) -> float:
    """First time (t > 5) the risk falls below h/2, interpolated in log risk; nan if never."""
    t, risk = np.asarray(t), np.asarray(risk)
    idx = np.nonzero((risk < h / 2) & (t > 5.0))[0]
    if len(idx) == 0:
        return float("nan")
    i = idx[0]
    x0, x1 = np.log(max(risk[i - 1], 1e-300)), np.log(max(risk[i], 1e-300))
    f = (math.log(h / 2) - x0) / (x1 - x0) if x1 != x0 else 1.0
    return float(t[i - 1] + f * (t[i] - t[i - 1]))


def ode_run(system, init, h):
    tr = hl.solve(system, init=init, hyper=hl.Hyperparams(lr=ETA), ts=ODE_TS, rtol=RTOL, atol=ATOL)
    if tr.status != "ok":
        raise RuntimeError(f"ODE {tr.status}")
    return tr, escape_time(tr.t, tr.risk, h)


def random_overlaps(model, N: int, rng) -> hl.Overlaps:
    """Overlaps of i.i.d. Gaussian weights, drawn as simulate(random_init=...) draws them."""
    W = rng.standard_normal((model.K, N)) * STUDENT_STD
    Ws = rng.standard_normal((model.M, N))
    Q, T = W @ W.T / N, Ws @ Ws.T / N
    return hl.Overlaps.for_model(model, Q=(Q + Q.T) / 2, R=W @ Ws.T / N, T=(T + T.T) / 2)


def ols(x, y) -> dict:
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(y)
    x, y = x[ok], y[ok]
    X = np.stack([np.ones_like(x), x], axis=1)
    beta, *_ = np.linalg.lstsq(X, y, rcond=None)
    resid = y - X @ beta
    n = len(y)
    s2 = float(resid @ resid) / max(n - 2, 1)
    cov = s2 * np.linalg.inv(X.T @ X)
    return {
        "a": float(beta[0]),
        "b": float(beta[1]),
        "b_se": float(math.sqrt(cov[1, 1])),
        "a_se": float(math.sqrt(cov[0, 0])),
        "n_points": n,
        "residual_std": math.sqrt(s2),
    }


class _Stop(Exception):
    pass


def run_simulation(model, N, seeds, seed, t1, h):
    """simulate() with an early stop once every seed is well past the escape (risk < h/20).

    simulate has no stopping condition; its checkpoint callback receives the partial
    Simulation, so the callback keeps it and raises to end the run."""
    box = {}

    def check(partial):
        box["sim"] = partial
        if partial.t[-1] > 10 and np.all(np.min(partial.risk, axis=1) < h / 20):
            raise _Stop

    t0 = time.perf_counter()
    try:
        sim = hl.simulate(
            model,
            hyper=hl.Hyperparams(lr=ETA),
            N=N,
            random_init=hl.RandomInit(student_std=STUDENT_STD),
            seeds=seeds,
            seed=seed,
            t1=t1,
            n_save=500,
            t_first=0.5,
            progress=False,
            checkpoint=check,
            checkpoint_every=0.0,
        )
    except _Stop:
        sim = box["sim"]
    if sim.status not in ("ok", "running"):
        raise RuntimeError(f"simulation N={N}: {sim.status}")
    return sim, time.perf_counter() - t0


# ----------------------------------------------------------------------------- per K


def study(K: int, cfg: dict, log) -> dict:
    model = hl.Committee(K=K, M=K, activation="erf", train_second_layer=False)
    system = hl.derive(model)
    res = {"K": K, "M": K, "eta": ETA}

    # 1. fixed point, height, eta -> 0
    fp = symmetric_fixed_point(system, K, ETA)
    h = fp["height"]
    cont = []
    g = [fp["Q_diag"], fp["Q_offdiag"], fp["R"]]
    for eta in (0.25, 0.1, 0.01, 1e-4):
        c = symmetric_fixed_point(system, K, eta, guess=g)
        g = [c["Q_diag"], c["Q_offdiag"], c["R"]]
        cont.append(c)
    h0 = formula_height(K)
    res["fixed_point"] = fp
    res["plateau_height_vs_eta"] = [
        {"eta": c["eta"], "height": c["height"], "residual": c["residual_max_abs_dstate_dt"]}
        for c in [fp, *cont]
    ]
    res["formula_eta0_height"] = h0
    res["formula_eta0_saddle_point"] = {
        "Q_diag": 1 / (2 * K - 1),
        "Q_offdiag": 1 / (2 * K - 1),
        "R": 1 / math.sqrt(K * (2 * K - 1)),
    }
    res["height_at_eta_1e-4_rel_dev_from_formula"] = abs(cont[-1]["height"] - h0) / h0
    res["ode_height_rel_dev_from_eta0_formula"] = (h - h0) / h0
    log(
        f"K={K}: ODE plateau height at eta={ETA}: {h:.6g} (eta->0 formula {h0:.6g}; "
        f"at eta=1e-4 the fixed point gives {cont[-1]['height']:.6g})"
    )

    # 2. Jacobian
    jac = jacobian_analysis(system, K, ETA, fp)
    res["jacobian"] = jac
    b_pred = jac["predicted_slope_b"]
    log(
        f"K={K}: lambda_max={jac['lambda_max']:.6g} (x{jac['lambda_max_multiplicity']}), "
        f"predicted b = 1/(2 lambda) = {b_pred:.4g}"
    )

    # 3. ODE ensemble from random initial overlaps
    t0 = time.perf_counter()
    ens = {"N": [], "t_escape": []}
    per_N = []
    for N in cfg["ode_Ns"]:
        ts_ = []
        for d in range(cfg["ode_draws"]):
            rng = np.random.default_rng([7919, K, N, d])
            _, te = ode_run(system, random_overlaps(model, N, rng), h)
            ts_.append(te)
        ens["N"] += [N] * len(ts_)
        ens["t_escape"] += ts_
        arr = np.asarray(ts_)
        per_N.append(
            {
                "N": N,
                "draws": len(arr),
                "mean": float(np.nanmean(arr)),
                "sem": float(np.nanstd(arr, ddof=1) / math.sqrt(np.isfinite(arr).sum())),
                "std": float(np.nanstd(arr, ddof=1)),
                "not_escaped": int(np.isnan(arr).sum()),
            }
        )
    fit_ens = ols(np.log(ens["N"]), ens["t_escape"])
    res["ode_ensemble"] = {
        "student_std": STUDENT_STD,
        "teacher_std": 1.0,
        "per_N": per_N,
        "fit": fit_ens,
        "b_rel_dev_from_prediction": (fit_ens["b"] - b_pred) / b_pred,
        "seconds": time.perf_counter() - t0,
    }
    log(
        f"K={K}: ODE ensemble slope b = {fit_ens['b']:.4g} +- {fit_ens['b_se']:.2g} "
        f"({len(ens['N'])} draws, {time.perf_counter() - t0:.0f} s)"
    )

    # 4. simulations
    sims = []
    rows = []
    for N, seeds in cfg["sim"]:
        sim, secs = run_simulation(model, N, seeds, cfg["seed"], cfg["t1"], h)
        ode_trajs, ode_esc, sim_esc, plat_sim, plat_ode = [], [], [], [], []
        for s in range(seeds):
            tr, te_o = ode_run(system, sim.initial_overlaps(s), h)
            te_s = escape_time(sim.t, sim.risk[s], h)
            ode_trajs.append(tr)
            ode_esc.append(te_o)
            sim_esc.append(te_s)
            t_end = 0.5 * te_s if np.isfinite(te_s) else sim.t[-1]
            sel = (sim.t >= T_WINDOW_START) & (sim.t <= t_end)
            if sel.sum() >= 5:
                plat_sim.append(float(np.median(sim.risk[s][sel])))
                plat_ode.append(float(np.median(np.interp(sim.t[sel], tr.t, tr.risk))))
            else:
                plat_sim.append(float("nan"))
                plat_ode.append(float("nan"))
        sim_esc, ode_esc = np.asarray(sim_esc), np.asarray(ode_esc)
        diff = sim_esc - ode_esc
        row = {
            "N": N,
            "seeds": seeds,
            "t_stop": float(sim.t[-1]),
            "simulation_seconds": secs,
            "ode_final_risk_max": float(max(tr.risk[-1] for tr in ode_trajs)),
            "ode_final_time": float(ode_trajs[0].t[-1]),
            "sim_final_risk_max": float(sim.risk[:, -1].max()),
            "t_escape_sim": sim_esc.tolist(),
            "t_escape_ode_same_init": ode_esc.tolist(),
            "sim_not_escaped": int(np.isnan(sim_esc).sum()),
            "mean_t_escape_sim": float(np.nanmean(sim_esc)),
            "mean_t_escape_ode": float(np.nanmean(ode_esc)),
            "mean_diff_sim_minus_ode": float(np.nanmean(diff)),
            "median_abs_rel_diff": float(np.nanmedian(np.abs(diff) / ode_esc)),
            "corr_sim_ode": float(
                np.corrcoef(sim_esc[np.isfinite(diff)], ode_esc[np.isfinite(diff)])[0, 1]
            )
            if np.isfinite(diff).sum() > 2
            else None,
            "plateau_window": f"t in [{T_WINDOW_START}, t_escape_sim/2] per seed",
            "plateau_sim_per_seed": plat_sim,
            "plateau_ode_per_seed": plat_ode,
            "plateau_sim": float(np.nanmedian(plat_sim)),
            "plateau_ode_same_windows": float(np.nanmedian(plat_ode)),
        }
        rows.append(row)
        sims.append((sim, ode_trajs))
        log(
            f"K={K} N={N} x{seeds}: sim {secs:.0f} s to t={sim.t[-1]:.0f}; t_esc sim "
            f"{row['mean_t_escape_sim']:.1f} ode {row['mean_t_escape_ode']:.1f}; plateau sim "
            f"{row['plateau_sim']:.5g} ode {row['plateau_ode_same_windows']:.5g} (fixed point {h:.5g})"
        )
    res["simulations"] = rows
    lnN = np.concatenate([[math.log(r["N"])] * r["seeds"] for r in rows])
    t_sim = np.concatenate([r["t_escape_sim"] for r in rows])
    t_ode = np.concatenate([r["t_escape_ode_same_init"] for r in rows])
    fit_sim = ols(lnN, t_sim)
    fit_ode_same = ols(lnN, t_ode)
    fit_diff = ols(lnN, t_sim - t_ode)
    b_cv = fit_ens["b"] + fit_diff["b"]
    b_cv_se = math.hypot(fit_ens["b_se"], fit_diff["b_se"])
    res["fits"] = {
        "model": "t_escape = a + b ln N (least squares over all seeds and N)",
        "predicted_b": b_pred,
        "simulation_direct": fit_sim,
        "ode_same_initial_overlaps": fit_ode_same,
        "sim_minus_ode": fit_diff,
        "simulation_control_variate": {
            "b": b_cv,
            "b_se": b_cv_se,
            "how": "b(ODE ensemble) + b(t_sim - t_ode same init): the per-seed ODE escape time "
            "removes most of the seed-to-seed scatter of the simulation (which comes from the "
            "random projection of the initial overlaps on the unstable direction)",
        },
    }
    largest = rows[-1]
    res["plateau_comparison"] = {
        "N": largest["N"],
        "simulation": largest["plateau_sim"],
        "ode_same_init_same_windows": largest["plateau_ode_same_windows"],
        "ode_fixed_point": h,
        "eta0_formula": h0,
        "sim_rel_dev_from_fixed_point": (largest["plateau_sim"] - h) / h,
        "sim_rel_dev_from_ode_same_windows": (
            largest["plateau_sim"] - largest["plateau_ode_same_windows"]
        )
        / largest["plateau_ode_same_windows"],
        "sim_rel_dev_from_eta0_formula": (largest["plateau_sim"] - h0) / h0,
    }
    log(
        f"K={K}: slopes: predicted {b_pred:.4g}; sim direct {fit_sim['b']:.4g} +- {fit_sim['b_se']:.2g}; "
        f"sim control-variate {b_cv:.4g} +- {b_cv_se:.2g}; ODE same init {fit_ode_same['b']:.4g} "
        f"+- {fit_ode_same['b_se']:.2g}"
    )

    # criteria
    tol = cfg["tol"]
    pc = res["plateau_comparison"]
    crit = {
        "fixed_point_residual_below_1e-12": fp["residual_max_abs_dstate_dt"] < 1e-12,
        "eta0_formula_matches_fixed_point_at_eta_1e-4_within_1e-3": res[
            "height_at_eta_1e-4_rel_dev_from_formula"
        ]
        < 1e-3,
        "unstable_direction_breaks_symmetry": jac["lambda_max"] > 0
        and jac["lambda_max_is_real"]
        and max(jac["symmetric_subspace_eigenvalues"]) < 0,
        f"sim_plateau_within_{tol['plateau_fp']:.0%}_of_ode_fixed_point": abs(
            pc["sim_rel_dev_from_fixed_point"]
        )
        < tol["plateau_fp"],
        f"sim_plateau_within_{tol['plateau_ode']:.0%}_of_ode_same_init": abs(
            pc["sim_rel_dev_from_ode_same_windows"]
        )
        < tol["plateau_ode"],
        f"ode_ensemble_slope_within_max({tol['b_ode']:.0%},3se)_of_1/(2lambda)": abs(
            fit_ens["b"] - b_pred
        )
        <= max(tol["b_ode"] * b_pred, 3 * fit_ens["b_se"]),
        f"sim_control_variate_slope_within_max({tol['b_sim']:.0%},3se)_of_1/(2lambda)": abs(
            b_cv - b_pred
        )
        <= max(tol["b_sim"] * b_pred, 3 * b_cv_se),
        "sim_direct_slope_within_3se_of_1/(2lambda)": abs(fit_sim["b"] - b_pred)
        <= 3 * fit_sim["b_se"],
        f"sim_vs_ode_escape_median_rel_diff_below_{tol['esc']:.0%}_at_largest_N": largest[
            "median_abs_rel_diff"
        ]
        < tol["esc"],
        "every_simulated_seed_escaped": all(r["sim_not_escaped"] == 0 for r in rows),
        "ode_learns_the_teacher_after_escape_risk_below_1e-8": all(
            r["ode_final_risk_max"] < 1e-8 for r in rows
        ),
    }
    crit = {k: bool(v) for k, v in crit.items()}
    if cfg["quick"]:
        # a slope from 4 seeds at 2-3 small N is noise: reported, not judged
        skipped = [k for k in crit if k.startswith("sim_") and "slope" in k]
        res["criteria_not_judged_in_quick_mode"] = {k: crit.pop(k) for k in skipped}
    res["criteria"] = crit
    res["passed"] = all(crit.values())
    res["_plot"] = {"sims": sims, "ens_per_N": per_N, "fit_ens": fit_ens, "h": h, "h0": h0}
    return res


# ----------------------------------------------------------------------------- plot


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), 2, figsize=(13, 4.6 * len(results)), squeeze=False)
    for row, res in zip(axes, results, strict=True):
        K, pdat = res["K"], res["_plot"]
        h, h0 = pdat["h"], pdat["h0"]
        ax = row[0]
        colors = plt.cm.viridis(np.linspace(0.05, 0.85, len(pdat["sims"])))
        for (sim, trajs), c in zip(pdat["sims"], colors, strict=True):
            sel = sim.t > 0
            ax.plot(
                sim.t[sel],
                sim.risk_mean[sel],
                color=c,
                lw=1.6,
                label=f"simulation N={sim.N} (mean of {sim.seeds})",
            )
            tr0 = trajs[0]
            ode_mean = np.mean([tr.risk for tr in trajs], axis=0)
            s2 = tr0.t > 0
            ax.plot(tr0.t[s2], ode_mean[s2], color=c, lw=1.2, ls="--")
        ax.plot([], [], "k--", lw=1.2, label="ODE from each seed's initial overlaps (mean)")
        ax.axhline(h, color="r", ls=":", lw=1.5, label=f"ODE fixed point, η={ETA}: {h:.4f}")
        ax.axhline(h0, color="grey", ls="-.", lw=1.2, label=f"η→0 formula: {h0:.4f}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(0.5, ODE_T1)
        ax.set_ylim(max(h * 1e-3, 1e-6), None)
        ax.set_xlabel("t = steps / N")
        ax.set_ylabel("risk")
        ax.set_title(f"Saad–Solla plateau, erf K=M={K}, η={ETA}")
        ax.legend(fontsize=7)

        ax = row[1]
        for (sim, _), c in zip(pdat["sims"], colors, strict=True):
            r = next(x for x in res["simulations"] if x["N"] == sim.N)
            jitter = np.linspace(-0.04, 0.04, sim.seeds)
            ax.plot(np.log(sim.N) + jitter, r["t_escape_sim"], "o", color=c, ms=4)
            ax.plot(np.log(sim.N) + jitter, r["t_escape_ode_same_init"], "x", color=c, ms=4)
        ax.plot([], [], "ko", ms=4, label="simulation (per seed)")
        ax.plot([], [], "kx", ms=4, label="ODE from that seed's initial overlaps")
        pn = pdat["ens_per_N"]
        ax.errorbar(
            np.log([p["N"] for p in pn]),
            [p["mean"] for p in pn],
            yerr=[p["sem"] for p in pn],
            fmt="s",
            color="tab:orange",
            ms=5,
            label="ODE ensemble mean ± s.e.",
        )
        x = np.linspace(
            math.log(min(min(p["N"] for p in pn), pdat["sims"][0][0].N)) - 0.2,
            math.log(max(p["N"] for p in pn)) + 0.2,
            50,
        )
        fe = pdat["fit_ens"]
        ax.plot(
            x,
            fe["a"] + fe["b"] * x,
            color="tab:orange",
            lw=1.2,
            label=f"fit ODE ensemble: b={fe['b']:.2f}±{fe['b_se']:.2f}",
        )
        fs = res["fits"]["simulation_direct"]
        ax.plot(
            x,
            fs["a"] + fs["b"] * x,
            color="tab:blue",
            lw=1.2,
            label=f"fit simulation: b={fs['b']:.2f}±{fs['b_se']:.2f}",
        )
        bp = res["jacobian"]["predicted_slope_b"]
        xm = float(np.mean(np.log(res["_lnN_ens"])))
        ym = fe["a"] + fe["b"] * xm
        ax.plot(x, ym + bp * (x - xm), "k--", lw=1.2, label=f"predicted slope 1/(2λ)={bp:.2f}")
        cv = res["fits"]["simulation_control_variate"]
        ax.set_title(
            f"K=M={K}: escape time (risk < plateau/2); sim b (control variate) = "
            f"{cv['b']:.2f}±{cv['b_se']:.2f}",
            fontsize=9,
        )
        ax.set_xlabel("ln N")
        ax.set_ylabel("t_escape")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------- main


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small N, few seeds (< 1 minute)")
    p.add_argument("--Ks", default="2,3", help="comma-separated K = M values (default 2,3)")
    ns = p.parse_args(argv)
    t_all = time.perf_counter()
    OUT.mkdir(parents=True, exist_ok=True)

    def log(msg):
        print(f"[{time.perf_counter() - t_all:6.1f}s] {msg}", flush=True)

    if ns.quick:
        cfgs = {
            2: {
                "sim": [(125, 4), (250, 4), (400, 4)],
                "ode_Ns": [250, 4000, 64000],
                "ode_draws": 10,
            },
            3: {"sim": [(125, 4), (250, 4)], "ode_Ns": [250, 4000, 64000], "ode_draws": 6},
        }
    else:
        cfgs = {
            2: {
                "sim": [(125, 16), (250, 16), (500, 16), (1000, 16)],
                "ode_Ns": [250, 1000, 4000, 16000, 64000, 256000],
                "ode_draws": 50,
            },
            3: {
                "sim": [(125, 16), (250, 16), (500, 16), (1000, 8)],
                "ode_Ns": [250, 1000, 4000, 16000, 64000, 256000],
                "ode_draws": 30,
            },
        }
    tol = {"plateau_fp": 0.10, "plateau_ode": 0.05, "b_ode": 0.15, "b_sim": 0.30, "esc": 0.15}
    results = []
    for K in [int(k) for k in ns.Ks.split(",")]:
        cfg = {
            **cfgs[K],
            "quick": ns.quick,
            "seed": 0,
            "t1": {2: 700.0, 3: 1000.0}.get(K, 1500.0),
            "tol": tol,
        }
        res = study(K, cfg, log)
        res["_lnN_ens"] = np.log(
            [pp["N"] for pp in res["_plot"]["ens_per_N"] for _ in range(pp["draws"])]
        )
        res["config"] = {
            "simulations_N_seeds": cfg["sim"],
            "ode_ensemble_N": cfg["ode_Ns"],
            "ode_ensemble_draws_per_N": cfg["ode_draws"],
            "simulation_t1_cap": cfg["t1"],
            "student_std": STUDENT_STD,
            "teacher_std": 1.0,
            "lr": ETA,
            "ode_rtol": RTOL,
            "ode_atol": ATOL,
        }
        results.append(res)
    plot(results, OUT / "saad_solla_plateau.png")
    passed = all(r["passed"] for r in results)
    report = {
        "claim": "Saad & Solla 1995: symmetric plateau at risk (K/pi)[pi/6 - K asin(1/(2K))] "
        "(eta->0); escape time a + b ln N with b = 1/(2 lambda_max) for random initial weights",
        "setup": "erf soft committee K=M, T=I, v=v*=1 fixed, no noise, online SGD, eta=0.5; "
        "risk = 1/2 E[(yhat - f*)^2]; t = steps/N",
        "why_eta_0.5": "moderate: the dynamics converge to zero risk after the plateau (checked: the "
        "ODE reaches risk < 1e-10), and the plateau is ~4x shorter than at eta=0.1 so simulations "
        "up to N=1000 fit the time budget; the finite-eta plateau height differs from the eta->0 "
        "formula (by +26% for K=2, +58% for K=3), so the simulation is compared with the ODE's own "
        "fixed point at eta=0.5 and the formula is checked by continuing the fixed point to eta=1e-4",
        "t_escape_definition": "first time t > 5 at which the risk falls below half the ODE "
        "plateau height (fixed point at eta=0.5), interpolated linearly in log risk",
        "tolerances": tol,
        "results": [{k: v for k, v in r.items() if not k.startswith("_")} for r in results],
        "passed": passed,
        "runtime_seconds": time.perf_counter() - t_all,
        "versions": {"hildlimits": hl.__version__, "jax": jax.__version__},
        "quick": ns.quick,
    }
    with open(OUT / "saad_solla_plateau.json", "w") as fh:
        json.dump(report, fh, indent=1)
    for r in results:
        bad = [k for k, v in r["criteria"].items() if not v]
        log(f"K={r['K']}: {'PASS' if not bad else 'FAIL: ' + ', '.join(bad)}")
    log(f"wrote {OUT / 'saad_solla_plateau.json'} and .png; {'PASSED' if passed else 'FAILED'}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
