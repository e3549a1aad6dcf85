r"""Mean-field limit: finite networks of growing width approach the particle ODE, and the
finite-learning-rate deviation shrinks with eta.

What is checked
    Teacher: M = 1 erf unit, T = 1, v* = 1, no noise. Student: width-p erf network with readout
    (1/p) sum_j a_j g(w_j.x/sqrt d), both layers trained by online SGD in mean-field scaling
    (eta_a = eta), w_j ~ N(0, I_d), a_j = quantiles of N(0, 1) (the same law the ODE's particles
    represent). The mean-field ODE (4096 particles, Gauss-Hermite quadrature with 64 nodes) is
    solved to tau = 1.5. Simulations:
    * width scan: p in {32, 128, 256, 512} with d = 8p, each at eta = 0.1 and eta = 0.2 (same
      seeds); the finite-eta deviation is O(eta) and does not vanish with p, so the width effect is
      measured on the Richardson extrapolation 2 risk(0.1) - risk(0.2) (eta -> 0), and at tau = 0
      (no learning-rate effect yet), where the deviation is the 1/p variance term
      (1/(2p)) E[a^2] E[g(lambda)^2];
    * learning-rate scan: p = 128 with eta in {0.4, 0.2, 0.1, 0.05} (same seeds).

Criteria (in the JSON, "criteria")
    * the max over save times of |risk_sim - risk_ode| of the eta -> 0 extrapolation, and the
      deviation at tau = 0, decrease with p;
    * at p = 128 the deviation decreases as eta decreases, and |risk_sim(eta) - extrapolation| is
      proportional to eta (log-log slope within 0.7..1.3).

Run
    python validation/meanfield_width.py          # ~10 min on 2 CPU cores
    python validation/meanfield_width.py --quick  # p in {32, 128}, 3 learning rates (~1 min)

Writes validation/out/meanfield_width.json and validation/out/meanfield_width.png.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import hildlimits as hl  # noqa: E402
from hildlimits import plot_meanfield  # noqa: E402


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


OUT = Path(__file__).resolve().parent / "out"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ns = ap.parse_args()
    widths = [32, 128] if ns.quick else [32, 128, 256, 512]
    seeds = {32: 8, 128: 4, 256: 2, 512: 1}
    etas = [0.2, 0.1, 0.05] if ns.quick else [0.4, 0.2, 0.1, 0.05]
    t1, n_save = 1.5, 7
    model = hl.MeanField(M=1, activation="erf", train_second_layer=True)
    init = hl.MeanFieldInit(
        T=[[1.0]], v_teacher=[1.0], q=1.0, a_mean=0.0, a_std=1.0, particles=4096
    )
    system = hl.derive_meanfield(model)
    t0 = time.perf_counter()
    ode = hl.solve_meanfield(
        system, model=model, init=init, lr=0.1, t1=t1, n_save=n_save, spacing="linear"
    )
    t_ode = time.perf_counter() - t0
    report = {
        "ode": {
            "t": ode.t.tolist(),
            "risk": ode.risk.tolist(),
            "seconds": t_ode,
            "particles": 4096,
            "nodes": ode.nodes,
        }
    }
    sims = {}

    def run(p, eta):
        sim = hl.simulate_meanfield(
            model,
            init=init,
            lr=eta,
            d=8 * p,
            width=p,
            seeds=seeds[p],
            t1=t1,
            n_save=n_save,
            spacing="linear",
            dtype="float32",
        )
        assert sim.status == "ok", sim.status
        assert np.allclose(sim.t, ode.t, atol=eta / (8 * p)), (sim.t, ode.t)
        sims[p, eta] = sim
        dev = sim.risk_mean - ode.risk
        print(
            f"p={p:4d} d={8 * p:5d} eta={eta:<5g} seeds={seeds[p]} max|d|={np.abs(dev).max():.2e} "
            f"d(t1)={dev[-1]:+.2e} se={sim.risk_sem.max():.1e} "
            f"({sim.timings['compile_and_run']:.0f}s)",
            flush=True,
        )
        return sim

    def row(p, eta, risk, sem=None):
        dev = risk - ode.risk
        out = {
            "width": p,
            "d": 8 * p,
            "lr": eta,
            "seeds": seeds[p],
            "max_abs_deviation": float(np.abs(dev).max()),
            "mean_abs_deviation": float(np.abs(dev).mean()),
            "deviation_at_t0": float(dev[0]),
            "deviation_at_t1": float(dev[-1]),
            "max_relative_deviation": float(np.max(np.abs(dev) / ode.risk)),
            "risk": np.asarray(risk).tolist(),
        }
        if sem is not None:
            out["max_standard_error"] = float(np.max(sem))
        return out

    width_rows = []
    for p in widths:
        s1, s2 = run(p, 0.1), run(p, 0.2)
        extrap = 2 * s1.risk_mean - s2.risk_mean
        width_rows.append(
            {
                "eta_0.1": row(p, 0.1, s1.risk_mean, s1.risk_sem)
                | {
                    "risk_std": s1.risk_std.tolist(),
                    "orthogonal_overlap_rms_at_t1": float(s1.q_offdiag[:, -1].mean()),
                    "seconds": s1.timings["compile_and_run"],
                },
                "eta_0.2": row(p, 0.2, s2.risk_mean, s2.risk_sem),
                "eta_to_0": row(p, 0.0, extrap, np.sqrt(4 * s1.risk_sem**2 + s2.risk_sem**2)),
                # predicted deviation at tau = 0: (1/(2p)) mean(a^2) E[g(lambda)^2], q = 1
                "variance_term_1_over_2p": float(
                    np.mean(init.second_layer(p) ** 2) / (2 * p) * (2 / np.pi) * np.arcsin(0.5)
                ),
            }
        )
    eta_rows = []
    for eta in etas:
        sim = sims.get((128, eta)) or run(128, eta)
        eta_rows.append(row(128, eta, sim.risk_mean, sim.risk_sem))
    eta_rows.sort(key=lambda r: r["lr"])
    ext128 = np.asarray(width_rows[widths.index(128)]["eta_to_0"]["risk"])
    for r in eta_rows:
        r["max_abs_deviation_from_eta_to_0"] = float(np.max(np.abs(np.asarray(r["risk"]) - ext128)))
    dev_ext = [w["eta_to_0"]["max_abs_deviation"] for w in width_rows]
    dev_t0 = [abs(w["eta_0.1"]["deviation_at_t0"]) for w in width_rows]
    devs_eta = [r["max_abs_deviation"] for r in eta_rows]
    x = np.array([r["lr"] for r in eta_rows])
    y_eta = np.array([r["max_abs_deviation_from_eta_to_0"] for r in eta_rows])
    eta_slope = float(np.polyfit(np.log(x), np.log(y_eta), 1)[0])
    width_exp = float(np.polyfit(np.log(widths), np.log(dev_ext), 1)[0])
    report.update(
        {
            "width_scan": width_rows,
            "width_exponent_eta_to_0": width_exp,
            "width_exponent_t0": float(np.polyfit(np.log(widths), np.log(dev_t0), 1)[0]),
            "lr_scan_p128": eta_rows,
            "lr_exponent": eta_slope,
        }
    )
    criteria = {
        "eta->0 deviation decreases with width": bool(np.all(np.diff(dev_ext) < 0)),
        "tau=0 deviation decreases with width": bool(np.all(np.diff(dev_t0) < 0)),
        "deviation decreases with eta (p=128)": bool(np.all(np.diff(devs_eta) > 0)),
        "finite-eta deviation proportional to eta (slope 0.7..1.3)": bool(0.7 <= eta_slope <= 1.3),
    }
    report["criteria"] = criteria
    print(f"width exponent (eta->0): {width_exp:.2f}; eta exponent: {eta_slope:.2f}")
    OUT.mkdir(exist_ok=True)
    (OUT / "meanfield_width.json").write_text(json.dumps(report, indent=1))
    plot_meanfield(
        ode,
        OUT / "meanfield_cloud.png",
        sims=[sims[p, 0.1] for p in widths],
        title="mean-field ODE vs width-p networks (η = 0.1, d = 8p)",
    )
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    raw = [w["eta_0.1"]["max_abs_deviation"] for w in width_rows]
    axes[0].loglog(widths, raw, "o-", label="max_τ |risk_sim − risk_ODE|, η = 0.1")
    axes[0].loglog(widths, dev_ext, "s-", label="same, η → 0 (Richardson)")
    axes[0].loglog(widths, dev_t0, "^-", label="|risk_sim − risk_ODE| at τ = 0")
    axes[0].loglog(widths, [dev_t0[0] * widths[0] / p for p in widths], "k:", label="∝ 1/p")
    axes[0].set_xlabel("width p (d = 8p)")
    axes[0].legend(fontsize=7)
    axes[1].loglog(x, devs_eta, "o-", label="max_τ |risk_sim − risk_ODE| (p = 128)")
    axes[1].loglog(x, y_eta, "s--", label="max_τ |risk_sim(η) − η→0 extrapolation|")
    axes[1].loglog(x, y_eta[-1] * x / x[-1], "k:", label="∝ η")
    axes[1].set_xlabel("learning rate η")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(OUT / "meanfield_width.png", dpi=100)
    plt.close(fig)
    for k, v in criteria.items():
        print(("PASS " if v else "FAIL ") + k)
    return 0 if all(criteria.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
