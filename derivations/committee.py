"""Worked derivation: online-SGD ODEs of two-layer committees (Saad & Solla 1995; Goldt et al. 2019).

Regenerates the equations of each model variant from scratch (cache bypassed), writes them as
Markdown with LaTeX next to this script, and checks them:

* every erf expectation against the published closed forms I2, I3, I4, J2 at random covariances;
* the symmetric plateau of K = M erf committees (Q = 1/(2K-1), R = 1/sqrt(K(2K-1))): the O(eta)
  drift vanishes and the risk equals (K/pi)[pi/6 - K arcsin(1/(2K))];
* the linear network: every expectation is a Wick polynomial in the overlaps.

Run: python derivations/committee.py   (exit code 1 if a check fails)
"""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import numpy as np
import sympy as sp

jax.config.update("jax_enable_x64", True)

import hildlimits as hl  # noqa: E402
from hildlimits.engine import X  # noqa: E402

HERE = Path(__file__).parent
VARIANTS = [
    ("erf", "erf", False),
    ("erf", "erf", True),
    ("linear", "linear", True),
    ("erf", "linear", False),
]


def published(funcs_key: str, C: np.ndarray) -> float:
    c = C
    if funcs_key == "I2":
        return 2 / np.pi * np.arcsin(c[0, 1] / np.sqrt((1 + c[0, 0]) * (1 + c[1, 1])))
    if funcs_key == "I3":
        l3 = (1 + c[0, 0]) * (1 + c[2, 2]) - c[0, 2] ** 2
        return (
            2 / np.pi / np.sqrt(l3) * (c[1, 2] * (1 + c[0, 0]) - c[0, 1] * c[0, 2]) / (1 + c[0, 0])
        )
    if funcs_key == "J2":
        return 2 / np.pi / np.sqrt(1 + c[0, 0] + c[1, 1] + c[0, 0] * c[1, 1] - c[0, 1] ** 2)
    l4 = (1 + c[0, 0]) * (1 + c[1, 1]) - c[0, 1] ** 2
    l0 = (
        l4 * c[2, 3]
        - c[1, 2] * c[1, 3] * (1 + c[0, 0])
        - c[0, 2] * c[0, 3] * (1 + c[1, 1])
        + c[0, 1] * c[0, 2] * c[1, 3]
        + c[0, 1] * c[0, 3] * c[1, 2]
    )
    l1 = (
        l4 * (1 + c[2, 2])
        - c[1, 2] ** 2 * (1 + c[0, 0])
        - c[0, 2] ** 2 * (1 + c[1, 1])
        + 2 * c[0, 1] * c[0, 2] * c[1, 2]
    )
    l2 = (
        l4 * (1 + c[3, 3])
        - c[1, 3] ** 2 * (1 + c[0, 0])
        - c[0, 3] ** 2 * (1 + c[1, 1])
        + 2 * c[0, 1] * c[0, 3] * c[1, 3]
    )
    return 4 / np.pi**2 / np.sqrt(l4) * np.arcsin(l0 / np.sqrt(l1 * l2))


def check_erf_expectations(system) -> list[str]:
    g = sp.erf(X / sp.sqrt(2))
    dg = sp.diff(g, X)
    known = {(g, g): "I2", (dg, X, g): "I3", (dg, dg, g, g): "I4", (dg, dg): "J2"}
    rng = np.random.default_rng(0)
    lines = []
    for e in system.expectations:
        key = known.get(tuple(e.funcs))
        if key is None:
            continue
        n = len(e.funcs)
        pairs = [(a, b) for a in range(n) for b in range(a, n)]
        f = sp.lambdify(
            [hl.gaussian_expectation(list(e.funcs), X).cov[a, b] for a, b in pairs], e.expr
        )
        worst = 0.0
        for _ in range(200):
            A = rng.standard_normal((n, n + 2))
            C = A @ A.T / (n + 2) * rng.uniform(0.1, 3)
            got, ref = f(*[C[a, b] for a, b in pairs]), published(key, C)
            worst = max(worst, abs(got - ref) / abs(ref))
        ok = worst < 1e-11
        lines.append(
            f"- {e.name} = {e.display()} equals the published {key}: max relative deviation "
            f"{worst:.1e} over 200 random covariances ({'ok' if ok else 'FAILED'})"
        )
        if not ok:
            raise SystemExit(f"check failed: {e.name} vs {key}")
    return lines


def check_plateau(system) -> list[str]:
    lines = []
    mod = system.module
    for K in (2, 3, 5):
        Q = np.full((K, K), 1 / (2 * K - 1))
        R = np.full((K, K), 1 / np.sqrt(K * (2 * K - 1)))
        y = {"Q": Q, "R": R}
        base = {
            "T": np.eye(K),
            "v_teacher": np.ones(K),
            "v": np.ones(K),
            "eta_v": 0.0,
            "sigma": 0.0,
            "kappa": 0.0,
        }
        if system.structure["train_second_layer"]:
            y["v"] = np.ones(K)
        f1 = mod.vector_field(0.0, y, {**base, "eta": 1.0})
        f2 = mod.vector_field(0.0, y, {**base, "eta": 2.0})
        drift = max(float(np.abs(2 * f1[k] - f2[k] / 2).max()) for k in ("Q", "R"))
        risk = float(mod.risk(y, {**base, "eta": 1.0}))
        plateau = K / np.pi * (np.pi / 6 - K * np.arcsin(1 / (2 * K)))
        ok = drift < 1e-13 and abs(risk - plateau) < 1e-13
        lines.append(
            f"- K = M = {K}: O(eta) drift at the symmetric plateau {drift:.1e}; risk {risk:.12f} "
            f"vs (K/pi)[pi/6 - K asin(1/2K)] = {plateau:.12f} ({'ok' if ok else 'FAILED'})"
        )
        if not ok:
            raise SystemExit("plateau check failed")
    return lines


def main() -> int:
    for act, teacher, trained in VARIANTS:
        system = hl.derive(
            hl.Committee(
                K=2, M=2, activation=act, teacher_activation=teacher, train_second_layer=trained
            ),
            cache=False,
        )
        checks = []
        if act == teacher == "erf":
            checks += check_erf_expectations(system)
            checks += check_plateau(system)
        if act == teacher == "linear":
            polys = all(e.expr.is_polynomial() for e in system.expectations)
            checks.append(
                f"- every expectation is a polynomial in the overlaps (Wick): {'ok' if polys else 'FAILED'}"
            )
            if not polys:
                raise SystemExit("linear check failed")
        name = f"committee_{act}_{teacher}_{'both_layers' if trained else 'first_layer'}.md"
        text = (
            system.markdown()
            + "\n## Checks\n\n"
            + ("\n".join(checks) if checks else "- (derivation only)")
            + "\n"
        )
        (HERE / name).write_text(text)
        print(f"wrote derivations/{name}")
        for line in checks:
            print("  " + line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
