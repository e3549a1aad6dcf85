"""The model-size bottleneck of least squares on power-law data as label noise
(validation/scaling_law.py, docs/scaling-laws.md).

A student with the first d of v features, trained online on data whose teacher has power in all
v directions, sees the teacher's part outside its d directions as independent Gaussian label
noise of variance ``tail = sum_{j>d} lambda_j theta*_j^2``, and its risk to the full teacher is
the risk to the truncated one plus ``tail/2``. The reference here is independent of the library:
the ``N -> infinity`` second-moment equations of the *full* v-direction problem in physical units
(coordinates ``j > d`` of the student frozen at 0, the tail as explicit teacher coordinates, no
label noise), a linear ODE in the sample count solved exactly by a matrix exponential. It is
compared with ``hl.solve`` on the d-feature configuration that the validation script builds
(``mapping``: mean-1 spectrum, ``lr = gamma tr_d``, ``T``, ``noise = sqrt(tail)``, time
``t = n/d``); the same solve without the noise must miss it (the check can fail). The example
config ``examples/power_law_scaling.toml`` must carry the mapping's numbers."""

from __future__ import annotations

import importlib.util
import math
import tomllib
from pathlib import Path

import numpy as np
import pytest
from scipy.linalg import expm
from scipy.special import zeta

import hildlimits as hl
from hildlimits._pipeline.spectrum import spectrum_from_config

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location(
        "scaling_law_script", ROOT / "validation" / "scaling_law.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


S = _script()


def full_problem_risk(n, *, d, v, a, source, gamma, noise0=0.0):
    """Risk ``(1/2) sum_{j<=v} lambda_j E_j`` of the full problem after ``n`` samples (array),
    with ``dE_j/dn = -2 gamma lambda_j E_j + gamma^2 lambda_j (sum_{k<=v} lambda_k E_k +
    noise0^2)`` for the student's ``j <= d`` and ``E_j = theta*_j^2`` fixed for ``j > d``."""
    j = np.arange(1, v + 1, dtype=np.float64)
    lam, E0 = j**-a, j**-source
    head = slice(0, d)
    tail_power = float(lam[d:] @ E0[d:])
    A = -2 * gamma * np.diag(lam[head]) + gamma**2 * np.outer(lam[head], lam[head])
    b = gamma**2 * lam[head] * (tail_power + noise0**2)
    # augmented linear system y = (E_head, 1): dy/dn = [[A, b], [0, 0]] y
    G = np.zeros((d + 1, d + 1))
    G[:d, :d], G[:d, d] = A, b
    y0 = np.append(E0[head], 1.0)
    out = []
    for x in np.atleast_1d(n):
        E = (expm(G * x) @ y0)[:d]
        out.append(0.5 * (lam[head] @ E + tail_power))
    return np.asarray(out), tail_power


@pytest.fixture(scope="module")
def linear():
    model = hl.Committee(K=1, M=1, activation="linear", covariance="spectrum")
    return model, hl.derive(model)


def library_risk(linear, m, n, *, noise):
    model, system = linear
    init = hl.Overlaps.for_model(model, Q=[[0.0]], R=[[0.0]], T=[[m["T"]]])
    traj = hl.solve(
        system,
        init=init,
        hyper=hl.Hyperparams(lr=m["lr"], noise=noise),
        ts=np.asarray(n, np.float64) / m["d"],
        spectrum=spectrum_from_config(m["data"]),
        rtol=1e-12,
        atol=1e-16,
    )
    assert traj.status == "ok"
    return traj.risk + m["tail"] / 2


@pytest.mark.parametrize("noise0", [0.0, 0.3])
def test_tail_is_label_noise(linear, noise0):
    # a large step (gamma tr_d ~ 1.5) and a heavy tail (30% of the teacher's power) so that the
    # noise term matters; the script's own mapping with v finite
    d, v, a, source, gamma = 12, 400, 1.25, 0.5, 0.5
    m = S.mapping(d, a=a, source=source, gamma=gamma, v=v, noise0=noise0)
    assert m["data"] == {"law": "power_law", "exponent": a, "source": source, "bins": d}
    n = np.array([0.0, 1.0, 7.0, 40.0, 300.0, 3000.0])
    ref, tail = full_problem_risk(n, d=d, v=v, a=a, source=source, gamma=gamma, noise0=noise0)
    assert m["tail"] == pytest.approx(tail, rel=1e-12)
    got = library_risk(linear, m, n, noise=m["noise"])
    np.testing.assert_allclose(got, ref, rtol=1e-8)
    # initial risk: half the teacher's whole power, tail included
    j = np.arange(1, v + 1.0)
    assert ref[0] == pytest.approx(0.5 * np.sum(j ** -(a + source)), rel=1e-12)
    # without the tail's noise the late risk is visibly wrong: the check can fail
    miss = library_risk(linear, m, n, noise=noise0)
    assert np.max(np.abs(miss - ref) / ref) > 1e-3


def test_mapping_matches_the_v_infinite_limit():
    # v = None is the limit v -> infinity (Hurwitz zeta); the mean eigenvalue is 1 and the
    # teacher's field variance is the head of the power sum
    v = 10**7
    m, m_v = S.mapping(500), S.mapping(500, v=v)
    assert m["tail"] == pytest.approx(m_v["tail"] + zeta(S.EXPONENT + S.SOURCE, v + 1), rel=1e-10)
    spec = spectrum_from_config(m["data"])
    assert spec.mean == pytest.approx(1.0, rel=1e-12)
    j = np.arange(1, 501.0)
    field = m["T"] * float(spec.eigenvalues @ spec.teacher_weights)
    assert field == pytest.approx(np.sum(j ** -(S.EXPONENT + S.SOURCE)), rel=1e-12)
    assert m["lr"] == pytest.approx(S.GAMMA * np.sum(j**-S.EXPONENT), rel=1e-12)
    assert S.PUBLISHED == pytest.approx(1 / 3)


def test_example_config_carries_the_mapping():
    cfg = tomllib.loads((ROOT / "examples" / "power_law_scaling.toml").read_text())
    d = cfg["data"]["dimension"]
    m = S.mapping(d)
    assert cfg["data"] == m["data"]
    assert cfg["training"]["lr"] == pytest.approx(m["lr"], rel=1e-6)
    assert cfg["model"]["noise"] == pytest.approx(m["noise"], rel=1e-6)
    assert cfg["init"]["T"][0][0] == pytest.approx(m["T"], rel=1e-6)
    assert math.isfinite(cfg["solve"]["t1"]) and cfg["solve"]["t1"] > 0
    hl.load_config(ROOT / "examples" / "power_law_scaling.toml")  # valid for the CLI
