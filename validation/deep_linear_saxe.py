r"""Deep linear networks: the mode ODEs against closed forms (Saxe et al. 2014, Braun et al. 2022),
a quadrature reference for L > 2, and trained finite networks (online SGD) at growing N.

What is checked
    Gradient flow (time tau = lr * steps / N, eta^2 terms dropped):
    * L = 2, balanced small initialisation: pi(tau) = s e^{2 s tau} / (e^{2 s tau} - 1 + s/pi0)
      (Saxe, McClelland & Ganguli 2014), s = (3, 2, 1), pi0 = (1e-3, 2e-3, 1e-2);
    * L = 2, lambda-balanced (a^2 - b^2 = lambda, lambda in {-1, 0.5, 2}): the Riccati solution
      of P = (a + b)^2, pi = (P - lambda^2 / P) / 4 (Braun, Dominé, Fitzgerald & Saxe 2022);
    * L = 3, 4, balanced: tau(pi) = int dp / (L p^(2-2/L) (s - p)) by scipy quad.
    Online SGD (t = steps / N, per-step rate lr / N, eta^2 terms kept): teacher s = (2, 1, 0.5),
    noise sigma = 0.3, D = O = H = N, initial modes 0.05; L = 2 (lr = 0.5, balanced) and L = 3
    (lr = 0.3, lambda = 0.2), 8 seeds per N. The same runs are compared with the gradient-flow
    ODE (eta^2 terms dropped, tau = lr t) to show what the SGD-noise terms contribute.

Criteria (in the JSON, "criteria")
    * closed forms and quadrature: max |pi_ODE - pi_ref| < 1e-6;
    * at the largest N every save time of the risk is within 5 standard errors + 5% of the ODE;
    * the mean |risk_sim - risk_ODE| decreases with N: fitted exponent < -0.4 (the deviation is
      an O(1/N) finite-size bias plus the O(1/sqrt(N)) noise of the seed mean at fixed seeds,
      so the exponent lies between -1/2 and -1 up to sampling noise);
    * at the largest N the simulation is farther from the eta^2-dropped ODE than from the full
      ODE by a factor > 3 (the eta^2 terms matter at finite lr).

Run
    python validation/deep_linear_saxe.py          # N in {128, 256, 512}, ~1.5 min on 2 CPU cores
    python validation/deep_linear_saxe.py --quick  # N in {64, 128} (~40 s)

Writes validation/out/deep_linear_saxe.json and validation/out/deep_linear_saxe.png.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import hildlimits as hl  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"
FAM = hl.get_family("deep_linear")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def config(*, depth, s, modes, lr=1.0, gf=True, balance=0.0, noise=0.0, t1=8.0, n_save=41):
    return hl.config_from_dict(
        {
            "model": {
                "kind": "deep_linear",
                "depth": depth,
                "teacher_singular_values": list(s),
                "noise": noise,
            },
            "training": {"lr": lr, "gradient_flow": gf},
            "init": {"modes": list(modes), "balance": balance},
            "solve": {
                "t1": t1,
                "n_save": n_save,
                "spacing": "linear",
                "rtol": 1e-10,
                "atol": 1e-12,
            },
        },
        source="validation/deep_linear_saxe.py",
    )


def solve(cfg, **kw):
    return FAM.solve(FAM.derive(cfg), cfg, **kw)


def closed_forms() -> dict:
    from scipy.integrate import quad

    out = {}
    s, pi0 = np.array([3.0, 2.0, 1.0]), np.array([1e-3, 2e-3, 1e-2])
    tr = solve(config(depth=2, s=s, modes=pi0))
    t = tr.t[:, None]
    ref = s * np.exp(2 * s * t) / (np.exp(2 * s * t) - 1 + s / pi0)
    out["saxe_L2_max_error"] = float(np.abs(tr.modes - ref).max())
    for lam in (-1.0, 0.5, 2.0):
        s = np.array([3.0, 1.5, 0.5])
        pi0 = np.array([0.0 if lam > 0 else 0.01, 0.2, 1.0])
        tr = solve(config(depth=2, s=s, modes=pi0, balance=lam))
        a0, b0 = tr.layers[0, :, 1], tr.layers[0, :, 0]
        k = np.sqrt(4 * s**2 + lam**2)
        Pp, Pm, P0 = 2 * s + k, 2 * s - k, (a0 + b0) ** 2
        E = (P0 - Pp) / (P0 - Pm) * np.exp(-k * tr.t[:, None])
        P = (Pp - E * Pm) / (1 - E)
        err = np.abs(tr.modes - (P - lam**2 / P) / 4).max()
        out[f"braun_L2_lambda_{lam:g}_max_error"] = float(err)
    for L in (3, 4):
        s, pi0 = np.array([3.0, 2.0, 1.0]), np.array([0.05, 0.02, 0.1])
        tr = solve(config(depth=L, s=s, modes=pi0))
        worst = 0.0
        for i, t in enumerate(tr.t[1:], start=1):
            for a in range(3):
                p = tr.modes[i, a]
                tau, _ = quad(
                    lambda q, a=a, L=L, s=s: 1.0 / (L * q ** (2 - 2 / L) * (s[a] - q)),
                    pi0[a],
                    p,
                    epsabs=1e-13,
                    epsrel=1e-13,
                    limit=200,
                )
                worst = max(worst, abs(tau - t) * L * p ** (2 - 2 / L) * (s[a] - p))
        out[f"quadrature_L{L}_max_error"] = float(worst)
    return out


SGD = {
    2: dict(lr=0.5, balance=0.0, t1=6.0),
    3: dict(lr=0.3, balance=0.2, t1=8.0),
}


def finite_networks(Ns, seeds=8) -> tuple[dict, dict]:
    rows, keep = {}, {}
    for L, kw in SGD.items():
        cfg = config(
            depth=L, s=[2.0, 1.0, 0.5], modes=[0.05] * 3, gf=False, noise=0.3, n_save=25, **kw
        )
        per_N = []
        for N in Ns:
            t0 = time.perf_counter()
            sim = FAM.simulate(cfg, options={"N": N, "seeds": seeds, "seed": 0})
            assert sim.status == "ok", sim.status
            ode = solve(cfg, ts=sim.t)
            gf_cfg = config(
                depth=L,
                s=[2.0, 1.0, 0.5],
                modes=[0.05] * 3,
                gf=True,
                balance=kw["balance"],
                t1=kw["t1"] * kw["lr"],
            )
            gf = solve(gf_cfg, ts=sim.t * kw["lr"])  # tau = lr t
            d = sim.risk_mean - ode.risk
            se = np.where(sim.risk_sem > 0, sim.risk_sem, np.inf)
            dm = sim.modes_mean - ode.modes
            sem = np.where(sim.modes_sem > 0, sim.modes_sem, np.inf)
            row = {
                "N": N,
                "seeds": seeds,
                "max_abs_deviation": float(np.abs(d).max()),
                "mean_abs_deviation": float(np.abs(d).mean()),
                "max_deviation_in_se": float(np.max(np.abs(d) / se)),
                "max_relative_deviation": float(np.max(np.abs(d) / ode.risk)),
                "within_5se_plus_5pct": bool(
                    np.all(np.abs(d) <= 5 * sim.risk_sem + 0.05 * ode.risk)
                ),
                "modes_max_abs_deviation": float(np.abs(dm).max()),
                "modes_max_deviation_in_se": float(np.max(np.abs(dm) / sem)),
                "max_abs_deviation_from_gradient_flow_ode": float(
                    np.abs(sim.risk_mean - gf.risk).max()
                ),
                "seconds": time.perf_counter() - t0,
            }
            print(
                f"L={L} N={N:4d}: risk max|d| = {row['max_abs_deviation']:.3e} "
                f"({row['max_deviation_in_se']:.1f} se, {100 * row['max_relative_deviation']:.1f}%)"
                f", modes max|d| = {row['modes_max_abs_deviation']:.3e} "
                f"({row['modes_max_deviation_in_se']:.1f} se); vs gradient-flow ODE "
                f"{row['max_abs_deviation_from_gradient_flow_ode']:.3e} ({row['seconds']:.0f} s)",
                flush=True,
            )
            per_N.append(row)
            keep[L, N] = (sim, ode, gf)
        x = np.log([r["N"] for r in per_N])
        y = np.log([r["mean_abs_deviation"] for r in per_N])
        rows[f"L{L}"] = {
            "config": FAM.resolved(cfg),
            "per_N": per_N,
            "N_exponent": float(np.polyfit(x, y, 1)[0]),
            "t": keep[L, Ns[-1]][0].t.tolist(),
            "risk_ode": keep[L, Ns[-1]][1].risk.tolist(),
            "modes_ode": keep[L, Ns[-1]][1].modes.tolist(),
            "risk_gradient_flow_ode": keep[L, Ns[-1]][2].risk.tolist(),
            "risk_sim": keep[L, Ns[-1]][0].risk_mean.tolist(),
            "modes_sim": keep[L, Ns[-1]][0].modes_mean.tolist(),
        }
    return rows, keep


def plot(keep, rows, Ns, path):
    plt = _pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(20, 4.2))
    for k, L in enumerate(SGD):
        sim, ode, gf = keep[L, Ns[-1]]
        ax = axes[k]
        for a in range(ode.modes.shape[1]):
            c = f"C{a}"
            m, sd = sim.modes_mean[:, a], sim.modes_std[:, a]
            ax.plot(sim.t, m, color=c, lw=1.2, label=f"simulation, mode {a + 1}")
            ax.fill_between(sim.t, m - sd, m + sd, color=c, alpha=0.25, lw=0)
            ax.plot(ode.t, ode.modes[:, a], "k--", lw=1.6, label="ODE" if a == 0 else None)
            ax.plot(
                gf.t / SGD[L]["lr"],
                gf.modes[:, a],
                ":",
                color="0.4",
                lw=1.2,
                label="gradient-flow ODE (no η²)" if a == 0 else None,
            )
        ax.set_title(f"L = {L}, N = {Ns[-1]}, η = {SGD[L]['lr']}, σ = 0.3: mode strengths")
        ax.set_xlabel("t = steps/N")
        ax.set_ylabel("π_α")
        ax.legend(fontsize=7)
        ax = axes[2]
        ax.plot(sim.t, sim.risk_mean, color=f"C{k}", lw=1.2, label=f"simulation L={L}")
        ax.fill_between(
            sim.t,
            sim.risk_mean - sim.risk_std,
            sim.risk_mean + sim.risk_std,
            color=f"C{k}",
            alpha=0.25,
            lw=0,
        )
        ax.plot(ode.t, ode.risk, "k--", lw=1.4, label="ODE" if k == 0 else None)
        ax.plot(sim.t, gf.risk, ":", color=f"C{k}", lw=1.4, label=f"gradient-flow ODE L={L}")
        ax.set_yscale("log")
        ax.set_xlabel("t = steps/N")
        ax.set_ylabel("risk ½‖W_L⋯W_1 − M*‖²_F")
        ax.legend(fontsize=7)
        r = rows[f"L{L}"]["per_N"]
        axes[3].loglog(
            [x["N"] for x in r],
            [x["mean_abs_deviation"] for x in r],
            "o-",
            label=f"L={L} (slope {rows[f'L{L}']['N_exponent']:.2f})",
        )
    n = np.array(Ns, float)
    first = rows["L2"]["per_N"][0]["mean_abs_deviation"]
    axes[3].loglog(n, first * n[0] / n, "k:", label="∝ 1/N")
    axes[3].set_xlabel("N")
    axes[3].set_ylabel("mean_t |risk_sim − risk_ODE|")
    axes[3].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ns = ap.parse_args()
    Ns = [64, 128] if ns.quick else [128, 256, 512]
    t_start = time.perf_counter()
    forms = closed_forms()
    for k, v in forms.items():
        print(f"{k}: {v:.2e}")
    rows, keep = finite_networks(Ns)
    last = {L: rows[f"L{L}"]["per_N"][-1] for L in SGD}
    criteria = {
        "closed forms and quadrature to 1e-6": bool(max(forms.values()) < 1e-6),
        "largest N within 5 se + 5% of the ODE": all(
            r["within_5se_plus_5pct"] for r in last.values()
        ),
        "deviation decreases with N (exponent < -0.4)": all(
            rows[f"L{L}"]["N_exponent"] < -0.4 for L in SGD
        ),
        "eta^2 terms matter (gradient-flow ODE > 3x farther)": all(
            r["max_abs_deviation_from_gradient_flow_ode"] > 3 * r["max_abs_deviation"]
            for r in last.values()
        ),
    }
    report = {
        "closed_forms": forms,
        "online_sgd": rows,
        "criteria": criteria,
        "passed": all(criteria.values()),
        "seconds": time.perf_counter() - t_start,
        "quick": ns.quick,
    }
    OUT.mkdir(exist_ok=True)
    (OUT / "deep_linear_saxe.json").write_text(json.dumps(report, indent=1))
    plot(keep, rows, Ns, OUT / "deep_linear_saxe.png")
    for k, v in criteria.items():
        print(("PASS " if v else "FAIL ") + k)
    print(
        f"wrote {OUT / 'deep_linear_saxe.json'} and {OUT / 'deep_linear_saxe.png'} "
        f"({report['seconds']:.0f} s)"
    )
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
