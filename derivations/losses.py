"""Worked derivations: any loss and label map (GLMs and multi-index models, issue 16).

Regenerates three models from scratch, writes each as Markdown with LaTeX next to this script
(with the path each expectation took), and checks every drift moment and observable at a random
state against Monte Carlo (10^6 samples, within 5 standard errors):

* logistic regression: linear student and teacher, labels sign(y) of the noisy teacher output;
* phase retrieval: student yhat = lambda^2, linear teacher, labels y^2, square loss (the
  information-exponent-2 model of validation/phase_retrieval.py);
* a K = 2 erf committee classifier: logistic loss on sign labels of a K = 2 erf teacher.

Run: python derivations/losses.py   (exit code 1 if a check fails)
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from scipy.special import erf

jax.config.update("jax_enable_x64", True)

import hildlimits as hl  # noqa: E402
from hildlimits._families.committee.derive import derive  # noqa: E402

HERE = Path(__file__).parent
SAMPLES = 1_000_000


def g_erf(x):
    return erf(x / math.sqrt(2))


def dg_erf(x):
    return math.sqrt(2 / math.pi) * np.exp(-(x**2) / 2)


MODELS = {
    "glm_logistic_regression": dict(
        model=dict(K=1, M=1, activation="linear", loss="logistic", label="sign(y)"),
        g=lambda x: x,
        dg=lambda x: np.ones_like(x),
        gs=lambda x: x,
        label=np.sign,
        dloss=lambda yh, y: -y / (1 + np.exp(y * yh)),
        loss=lambda yh, y: np.logaddexp(0, -y * yh),
        Q=[[0.8]],
        R=[[0.3]],
        T=[[1.0]],
        sigma=0.3,
    ),
    "glm_phase_retrieval": dict(
        model=dict(
            K=1,
            M=1,
            activation="quadratic",
            teacher_activation="linear",
            loss="square",
            label="y**2",
        ),
        g=lambda x: x**2,
        dg=lambda x: 2 * x,
        gs=lambda x: x,
        label=lambda y: y**2,
        dloss=lambda yh, y: yh - y,
        loss=lambda yh, y: (yh - y) ** 2 / 2,
        Q=[[1.1]],
        R=[[0.2]],
        T=[[1.0]],
        sigma=0.1,
    ),
    "glm_committee_classifier": dict(
        model=dict(K=2, M=2, activation="erf", loss="logistic", label="sign(y)"),
        g=g_erf,
        dg=dg_erf,
        gs=g_erf,
        label=np.sign,
        dloss=lambda yh, y: -y / (1 + np.exp(y * yh)),
        loss=lambda yh, y: np.logaddexp(0, -y * yh),
        Q=[[0.9, 0.2], [0.2, 0.7]],
        R=[[0.4, 0.1], [0.0, 0.3]],
        T=[[1.0, 0.0], [0.0, 1.0]],
        sigma=0.2,
    ),
}


def monte_carlo(spec, rng):
    Q, R, T = (np.asarray(spec[k], float) for k in ("Q", "R", "T"))
    K, M = Q.shape[0], T.shape[0]
    C = np.block([[T, R.T], [R, Q]])
    z = rng.multivariate_normal(np.zeros(K + M), C, size=SAMPLES)
    nu, lam = z[:, :M], z[:, M:]
    v, vt = np.ones(K), np.ones(M)
    yhat = spec["g"](lam) @ v
    y = spec["gs"](nu) @ vt + spec["sigma"] * rng.standard_normal(SAMPLES)
    lab = spec["label"](y)
    d = spec["dloss"](yhat, lab)
    delta = d[:, None] * v * spec["dg"](lam)
    samples = {
        "F": delta[:, :, None] * lam[:, None, :],
        "H": delta[:, :, None] * nu[:, None, :],
        "D": delta[:, :, None] * delta[:, None, :],
        "loss": spec["loss"](yhat, lab),
        "risk": 0.5 * (yhat - spec["label"](spec["gs"](nu) @ vt)) ** 2,
    }
    if spec["model"]["label"] == "sign(y)":
        samples["classification_error"] = (yhat * lab <= 0).astype(float)
    return {k: (s.mean(0), s.std(0) / math.sqrt(SAMPLES)) for k, s in samples.items()}


def main() -> int:
    rng = np.random.default_rng(2026)
    failures = 0
    for name, spec in MODELS.items():
        model = hl.Committee(**spec["model"])
        system = derive(model)
        (HERE / f"{name}.md").write_text(system.markdown())
        print(f"== {name}: path {model.path}; {system.method}")
        K, M = model.K, model.M
        args = {
            "T": np.asarray(spec["T"], float),
            "v_teacher": np.ones(M),
            "v": np.ones(K),
            "eta": 1.0,
            "eta_v": 1.0,
            "sigma": spec["sigma"],
            "kappa": 0.0,
        }
        y = {"Q": jnp.asarray(spec["Q"], float), "R": jnp.asarray(spec["R"], float)}
        got = system.module.moments(y, args)
        for key, (mean, se) in monte_carlo(spec, rng).items():
            value = np.asarray(got[key])
            z = np.abs(value - mean) / np.maximum(se, 1e-15)
            ok = bool(np.all(z <= 5))
            failures += not ok
            print(
                f"  {key:>22}: max |ODE - MC| = {np.abs(value - mean).max():.2e} "
                f"({z.max():.2f} standard errors) {'ok' if ok else 'FAIL'}"
            )
    print("all checks passed" if not failures else f"{failures} checks FAILED")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
