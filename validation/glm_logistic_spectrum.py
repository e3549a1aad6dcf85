r"""Logistic regression on a power-law covariance: the deterministic ODE of one-pass SGD against
simulations at d = 1000, 3000, 10000 (the setting of Collins-Woodfin, Paquette, Paquette &
Seroussi 2023, "Hitting the high-dimensional notes", for binary logistic regression with
structured data).

Setting
    x ~ N(0, Sigma), Sigma diagonal with s_j ∝ j^-0.6 (j = 1..d, mean 1), one bin per eigen-
    direction (the spectrum at dimension d exactly: `[data] law = "power_law", bins = d`); a
    random teacher (its squared norm spread like the directions), labels sign(w*.x/sqrt d + 0.1
    zeta) (probit label noise), student w from 0, logistic loss, eta = 1, t = steps/d up to 10.

Checks (exit 1 if one fails)
    At every d: risk, population loss and classification error of the simulation (8 seeds; 4 at
    d = 10^4) within the validation criterion of the ODE (5 standard errors + 2% at every save
    time, `hildlimits._pipeline.validate.criterion`).

Output: validation/out/glm_logistic_spectrum.json and .png (observables against t, theory dashed
over simulation ± band, residual panel in standard errors). Run:
python validation/glm_logistic_spectrum.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)

import hildlimits as hl  # noqa: E402
from hildlimits._families.committee.derive import derive  # noqa: E402
from hildlimits._families.committee.simulate import simulate  # noqa: E402
from hildlimits._pipeline.spectrum import spectrum_from_config  # noqa: E402
from hildlimits._pipeline.validate import Tolerance, criterion  # noqa: E402

OUT = Path(__file__).parent / "out"
NAMES = ("risk", "loss", "classification_error")
EXPONENT, LR, NOISE, T1 = 0.6, 1.0, 0.1, 10.0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="d = 1000, 3000 only")
    opts = ap.parse_args()
    start = time.perf_counter()
    model = hl.Committee(
        K=1, M=1, activation="linear", loss="logistic", label="sign(y)", covariance="spectrum"
    )
    system = derive(model)
    init = hl.Overlaps.for_model(model, Q=[[0.0]], R=[[0.0]], T=[[1.0]])
    hyper = hl.Hyperparams(lr=LR, noise=NOISE)
    ds = [1000, 3000] if opts.quick else [1000, 3000, 10_000]
    rows, passed = [], True
    for d in ds:
        spectrum = spectrum_from_config({"law": "power_law", "bins": d, "exponent": EXPONENT})
        seeds = 8 if d < 10_000 else 4
        t0 = time.perf_counter()
        sim = simulate(
            model, hyper=hyper, N=d, init=init, seeds=seeds, t1=T1, n_save=40, spectrum=spectrum
        )
        t_sim = time.perf_counter() - t0
        t0 = time.perf_counter()
        traj = hl.solve(system, init=init, hyper=hyper, ts=sim.t, spectrum=spectrum)
        t_ode = time.perf_counter() - t0
        row = {
            "d": d,
            "seeds": seeds,
            "t": sim.t.tolist(),
            "seconds_sim": t_sim,
            "seconds_ode_with_compile": t_ode,
        }
        for name in NAMES:
            vals = sim.risk if name == "risk" else sim.observables[name]
            mean, sem = vals.mean(0), vals.std(0, ddof=1) / math.sqrt(seeds)
            ode = traj.risk if name == "risk" else traj.observables[name]
            crit = criterion(mean, sem, ode, Tolerance())
            ok = crit["fraction_within_tolerance"] == 1.0
            passed &= ok
            row[name] = {
                "sim": mean.tolist(),
                "sem": sem.tolist(),
                "ode": ode.tolist(),
                "max_deviation_in_se": crit["max_deviation_in_se"],
                "passed": ok,
            }
            print(
                f"d = {d:>6}: {name:>20} at t = {T1:g}: ODE {ode[-1]:.5f}, simulation "
                f"{mean[-1]:.5f} ± {sem[-1]:.5f}; max deviation {crit['max_deviation_in_se']:.2f}"
                f" se {'ok' if ok else 'FAIL'}"
            )
        print(
            f"           simulation {t_sim:.1f} s, ODE with {d} bins {t_ode:.1f} s (with compile)"
        )
        rows.append(row)
    elapsed = time.perf_counter() - start
    OUT.mkdir(exist_ok=True)
    report = {
        "setting": {
            "exponent": EXPONENT,
            "lr": LR,
            "noise": NOISE,
            "t1": T1,
            "loss": "logistic",
            "label": "sign(y)",
        },
        "per_d": rows,
        "passed": bool(passed),
        "seconds": elapsed,
    }
    (OUT / "glm_logistic_spectrum.json").write_text(json.dumps(report, indent=1))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        2, 3, figsize=(14, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1.3]}
    )
    colors = plt.cm.viridis(np.linspace(0, 0.85, len(rows)))
    for j, name in enumerate(NAMES):
        ax, res = axes[0, j], axes[1, j]
        for r, c in zip(rows, colors, strict=True):
            t = np.asarray(r["t"])
            sim, sem, ode = (np.asarray(r[name][k]) for k in ("sim", "sem", "ode"))
            ax.plot(t, sim, color=c, lw=1.3, label=f"simulation d={r['d']}")
            ax.fill_between(t, sim - 2 * sem, sim + 2 * sem, color=c, alpha=0.3, lw=0)
            ax.plot(t, ode, "--", color="k", lw=1.0, zorder=5)
            res.plot(t[1:], ((sim - ode) / np.maximum(sem, 1e-300))[1:], color=c, lw=1)
        ax.set_xscale("log")
        ax.set_title(name.replace("_", " ") + " (ODE dashed)")
        res.axhline(0, color="k", lw=0.6)
        res.set_ylabel("(sim − ODE)/se")
        res.set_xlabel("t = steps / d")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(
        f"logistic regression, power-law covariance s_j ∝ j^-{EXPONENT}, one bin per direction"
    )
    fig.tight_layout()
    fig.savefig(OUT / "glm_logistic_spectrum.png", dpi=120)
    print(
        f"wrote {OUT / 'glm_logistic_spectrum.json'} and .png in {elapsed:.0f} s; "
        f"{'PASS' if passed else 'FAIL'}"
    )
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
