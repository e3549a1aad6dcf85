"""Worked derivation: the mode ODEs of deep linear networks (online SGD and gradient flow).

Regenerates the per-mode system for depths 2 and 3 (SymPy: the per-sample loss of one mode in
its four Gaussian fields, backpropagation, Wick's rule), writes it as Markdown next to this
script, and checks it independently:

* the eta-terms (the drift) equal the population gradient -W_{>l}^T (M - M*) W_{<l}^T of
  explicit weight matrices (random layer strengths, bulk vectors g, f of random norms),
  projected onto the mode directions (exact, to rounding);
* the eta^2 terms equal Monte Carlo averages of the second-order increments
  (eta/N)^2 |delta_1|^2 |x_perp|^2 N and (eta/N)^2 h_{L-1}^2 |e_perp|^2 N of explicit networks at
  D = O = 400 (within 5 standard errors plus the O(1/N) size effect).

Run: python derivations/deep_linear.py   (exit code 1 if a check fails)
"""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hildlimits._families.deep_linear.model import derive_deep_linear  # noqa: E402

HERE = Path(__file__).parent


def _network(rng, L, D, O, w, G, Phi):
    """One mode (r = 1) as explicit matrices: W_1 = r1 (w1 v + g)^T, W_l = w_l e e^T,
    W_L = (w_L u + f) e^T (hidden width 1), with |g|^2 = G, |f|^2 = Phi."""
    v = np.zeros(D)
    v[0] = 1.0
    u = np.zeros(O)
    u[0] = 1.0
    g = np.zeros(D)
    g[1:] = rng.standard_normal(D - 1)
    g *= np.sqrt(G) / np.linalg.norm(g)
    f = np.zeros(O)
    f[1:] = rng.standard_normal(O - 1)
    f *= np.sqrt(Phi) / np.linalg.norm(f)
    Ws = [(w[0] * v + g)[None, :]]
    Ws += [np.array([[w[l]]]) for l in range(1, L - 1)]
    Ws.append((w[-1] * u + f)[:, None])
    return Ws, u, v, g, f


def _vf(system, w, G, Phi, s, *, sigma=0.0, eta2=0.0) -> dict:
    """The generated vector field of one mode at eta = 1 (``eta2``: the eta^2 terms' factor)."""
    y = {"w": np.asarray(w)[None, :], "G": np.array([G]), "Phi": np.array([Phi])}
    args = {
        "s": np.array([s]),
        "sigma": sigma,
        "eta": 1.0,
        "eta2": eta2,
        "input_dim": 1.0,
        "output_dim": 1.0,
    }
    out = system.module.vector_field(0.0, y, args)
    return {k: np.asarray(v)[0] for k, v in out.items()}


def check_drift(L: int, rng) -> float:
    system = derive_deep_linear(L)
    D = O = 7
    w = rng.uniform(0.3, 1.5, L)
    G, Phi, s = rng.uniform(0.1, 0.8), rng.uniform(0.1, 0.8), 2.0
    Ws, u, v, g, f = _network(rng, L, D, O, w, G, Phi)
    Mstar = s * np.outer(u, v)
    M = Ws[0]
    for W in Ws[1:]:
        M = W @ M
    grads = []
    for l in range(L):
        left = np.eye(O)
        for W in Ws[l + 1 :][::-1]:
            left = left @ W
        right = np.eye(D)
        for W in Ws[:l]:
            right = W @ right
        grads.append(-left.T @ (M - Mstar) @ right.T)  # -dL/dW_l
    ref_w = [grads[0][0] @ v, *[grads[l][0, 0] for l in range(1, L - 1)], u @ grads[-1][:, 0]]
    ref_G = 2 * g @ grads[0][0]
    ref_Phi = 2 * f @ grads[-1][:, 0]
    got = _vf(system, w, G, Phi, s)  # the eta-terms (the gradient-flow drift)
    return max(
        np.abs(got["w"] - np.array(ref_w)).max(),
        abs(got["G"] - ref_G),
        abs(got["Phi"] - ref_Phi),
    )


def check_noise(L: int, rng, n: int = 40_000) -> tuple[float, float]:
    """Deviation, in standard errors, of the eta^2 coefficients of dG/dt and dPhi/dt from Monte
    Carlo over samples of the explicit network (D = O = 400)."""
    system = derive_deep_linear(L)
    D = O = 400
    w = rng.uniform(0.5, 1.2, L)
    G, Phi, s, sigma = 0.3, 0.2, 1.5, 0.7
    Ws, u, v, g, f = _network(rng, L, D, O, w, G, Phi)
    mid = np.prod(w[1:-1])
    X = rng.standard_normal((n, D))
    Z = rng.standard_normal((n, O))
    h1 = X @ Ws[0][0]
    h_last = mid * h1
    Y = np.outer(X @ v, s * u) + sigma * Z
    E = Y - np.outer(h_last, Ws[-1][:, 0])
    delta1 = mid * (E @ Ws[-1][:, 0])
    xperp = (X**2).sum(1) - (X @ v) ** 2
    eperp = (E**2).sum(1) - (E @ u) ** 2
    # per unit time (N = D steps): N (eta/N)^2 E[...] = eta^2 E[...] / N with N = D
    a = delta1**2 * xperp / D
    b = h_last**2 * eperp / D
    full = _vf(system, w, G, Phi, s, sigma=sigma, eta2=1.0)
    lin = _vf(system, w, G, Phi, s, sigma=sigma, eta2=0.0)
    coef_G, coef_Phi = full["G"] - lin["G"], full["Phi"] - lin["Phi"]
    zG = abs(a.mean() - coef_G) / (a.std() / np.sqrt(n))
    zP = abs(b.mean() - coef_Phi) / (b.std() / np.sqrt(n))
    return zG, zP


def main() -> int:
    ok = True
    for L in (2, 3):
        for gf in (False, True):
            system = derive_deep_linear(L, gf)
            name = f"deep_linear_L{L}_{'gradient_flow' if gf else 'sgd'}.md"
            (HERE / name).write_text(system.markdown())
            print(f"wrote {HERE / name}")
    rng = np.random.default_rng(0)
    for L in (2, 3, 4):
        err = check_drift(L, rng)
        print(f"L = {L}: drift vs population gradient of explicit matrices: max error {err:.2e}")
        ok &= err < 1e-12
    for L in (2, 3):
        zG, zP = check_noise(L, rng)
        print(f"L = {L}: eta^2 terms vs Monte Carlo (D = O = 400): {zG:.2f} and {zP:.2f} se")
        ok &= zG < 5 and zP < 5
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
