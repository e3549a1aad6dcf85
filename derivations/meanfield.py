"""Worked derivation: the mean-field particle ODEs of wide two-layer networks.

Regenerates the particle system for erf and linear students (SymPy, engine closed forms and
Gaussian smoothings), writes it as Markdown next to this script, and checks it:

* the finite-width drift of p = 6 particles (M = 2) equals the committee ODE of the core
  derivation at K = 6, readout 1/p, eta -> 0 and zero orthogonal overlaps (pairwise and
  quadrature paths);
* the quadrature path converges to the exact pairwise closed forms as the number of
  Gauss-Hermite nodes grows (M = 2, P = 200).

Run: python derivations/meanfield.py   (exit code 1 if a check fails)
"""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import hildlimits as hl  # noqa: E402

HERE = Path(__file__).parent


def state(rng, P, T, scale=0.5):
    r = rng.standard_normal((P, T.shape[0])) * scale
    q = np.einsum("jm,mn,jn->j", r, np.linalg.inv(T), r) + 0.05 + rng.random(P)
    return {"r": r, "q": q, "a": rng.standard_normal(P)}


def main() -> int:
    ok = True
    for act in ("erf", "linear"):
        system = hl.derive_meanfield(hl.MeanField(M=1, activation=act))
        path = HERE / f"meanfield_{act}_{act}.md"
        path.write_text(system.markdown())
        print(f"wrote {path}")
    p, M = 6, 2
    T = np.array([[1.0, 0.2], [0.2, 0.8]])
    vt = np.array([1.0, -0.6])
    y = state(np.random.default_rng(0), p, T)
    Q = y["r"] @ np.linalg.solve(T, y["r"].T)
    np.fill_diagonal(Q, y["q"])
    com = hl.derive(hl.Committee(K=p, M=M, activation="erf", train_second_layer=True))

    def rates(eta):
        args = dict(T=T, v_teacher=vt, eta=eta, eta_v=1.0 / p, sigma=0.0, kappa=0.0)
        st = {"Q": jnp.asarray(Q), "R": jnp.asarray(y["r"]), "v": jnp.asarray(y["a"] / p)}
        return {k: np.asarray(v) for k, v in com.module.vector_field(0.0, st, args).items()}

    f1, f2 = rates(1.0), rates(2.0)
    ref = {"r": p * f1["R"], "q": p * np.diagonal(4 * f1["Q"] - f2["Q"]) / 2, "a": p * f1["v"]}
    model = hl.MeanField(M=M, finite_width=True)
    system = hl.derive_meanfield(model)
    init = hl.MeanFieldInit(T=T, v_teacher=vt, particles=p)
    for method in ("pairwise", "quadrature"):
        out = hl.meanfield_drift(system, model, init, y, method=method, nodes=40)
        err = max(np.abs(out[k] - ref[k]).max() for k in ref)
        print(f"committee ODE (K = {p}) vs particle drift, {method}: max error {err:.2e}")
        ok &= err < 1e-9
    y = state(np.random.default_rng(1), 200, T, 0.4)
    model = hl.MeanField(M=M)
    init = hl.MeanFieldInit(T=T, v_teacher=vt, particles=200)
    exact = hl.meanfield_drift(system, model, init, y, method="pairwise")
    errs = []
    for n in (8, 16, 24, 32):
        quad = hl.meanfield_drift(system, model, init, y, method="quadrature", nodes=n)
        errs.append(max(np.abs(quad[k] - exact[k]).max() for k in ("r", "q", "a")))
        print(f"quadrature with n = {n:2d} nodes per dimension (M = 2): max error {errs[-1]:.2e}")
    ok &= bool(np.all(np.diff(np.log(errs)) < -2)) and errs[-1] < 1e-7
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
