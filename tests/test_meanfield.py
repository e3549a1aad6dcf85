"""Mean-field particle ODEs: derivation, consistency with the committee ODE, quadrature accuracy,
reduction of identical particles, simulations in mean-field scaling, config and CLI.

Independent references: the committee ODE of the core derivation (K = p, readout 1/p, eta -> 0,
zero orthogonal overlaps); Saad & Solla's I2/I3 typed in below with scipy ``solve_ivp`` (DOP853);
direct Gauss--Hermite integration of the Gaussian smoothings; finite-width simulations.
"""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest
import sympy as sp
from scipy.integrate import solve_ivp
from scipy.special import erf

import hildlimits as hl
from hildlimits._cli import main
from hildlimits._engine.activations import X
from hildlimits._families.meanfield.model import drift_numpy

# ----------------------------------------------------------------------------- helpers


def _state(rng, P, T, *, r_scale=0.5):
    """A valid particle state: s_j^2 = q_j - r_j^T T^-1 r_j > 0."""
    M = T.shape[0]
    r = rng.standard_normal((P, M)) * r_scale
    rr = np.einsum("jm,mn,jn->j", r, np.linalg.inv(T), r)
    q = rr + 0.05 + rng.random(P)
    return {"r": r, "q": q, "a": rng.standard_normal(P)}


def I2(c11, c12, c22):
    return 2 / np.pi * np.arcsin(c12 / np.sqrt((1 + c11) * (1 + c22)))


def I3(c11, c12, c13, c23, c33):
    """Saad & Solla: E[g'(u) v g(w)] for g(x) = erf(x/sqrt 2)."""
    lam3 = (1 + c11) * (1 + c33) - c13**2
    return 2 / np.pi * (c23 * (1 + c11) - c12 * c13) / ((1 + c11) * np.sqrt(lam3))


def single_particle(r, q, a, T, vt, *, ratio=1.0, w_self=0.0):
    """Drift and risk of P identical erf particles (self weight ``w_self`` = 1/P or 0)."""
    M = len(vt)
    c = r @ np.linalg.solve(T, r)
    dr = np.zeros(M)
    for n in range(M):
        pop = (1 - w_self) * I3(q, r[n], c, r[n], q) + w_self * I3(q, r[n], q, r[n], q)
        tea = sum(vt[m] * I3(q, r[n], r[m], T[n, m], T[m, m]) for m in range(M))
        dr[n] = -a * (a * pop - tea)
    pop = (1 - w_self) * I3(q, q, c, c, q) + w_self * I3(q, q, q, q, q)
    tea = sum(vt[m] * I3(q, q, r[m], r[m], T[m, m]) for m in range(M))
    dq = -2 * a * (a * pop - tea)
    gg = (1 - w_self) * I2(q, c, q) + w_self * I2(q, q, q)
    gt = sum(vt[m] * I2(q, r[m], T[m, m]) for m in range(M))
    da = -ratio * (a * gg - gt)
    tt = sum(vt[m] * vt[l] * I2(T[m, m], T[m, l], T[l, l]) for m in range(M) for l in range(M))
    risk = 0.5 * (a * a * gg - 2 * a * gt + tt)
    return dr, dq, da, risk


@pytest.fixture(scope="module")
def system():
    return hl.derive_meanfield(hl.MeanField(M=1))


# ----------------------------------------------------------------------------- derivation


def test_derived_system_prints_and_compiles(system):
    text = str(system)
    for fragment in ("dr_jn/dτ", "dq_j/dτ", "da_j/dτ", "risk", "<a_k>_k", "S[g]"):
        assert fragment in text
    assert r"\frac{dr_{jn}}{d\tau}" in system.latex()
    mod = system.module
    assert callable(mod.S_g) and callable(mod.E0)
    assert "jax.scipy.special.erf" in system.source


@pytest.mark.parametrize("label", ["g", "g'", "id g'"])
def test_smoothings_against_direct_quadrature(system, label):
    """S[f](m, s2) = E_xi[f(m + sqrt(s2) xi)] vs 200-node Gauss-Hermite integration (1e-12)."""
    f, expr = system.smoothings[label]
    fn = sp.lambdify(X, f, modules=[{"erf": erf}, "numpy"])
    x, w = np.polynomial.hermite_e.hermegauss(200)
    w = w / w.sum()
    fn_s = getattr(system.module, "S_" + label.replace("'", "p").replace(" ", "_"))
    for m in (-1.3, 0.0, 0.4, 2.5):
        for s2 in (0.0, 0.3, 2.0):
            ref = np.sum(w * fn(m + np.sqrt(s2) * x))
            assert float(fn_s(jnp.float64(m), jnp.float64(s2))) == pytest.approx(ref, abs=1e-12)


# ----------------------------------------------------------------------------- consistency


@pytest.mark.parametrize("method", ["pairwise", "quadrature"])
def test_drift_equals_committee_ode_at_zero_orthogonal_overlaps(method):
    """(a) K = p = 5 erf committee, readout v = a/p, Q_jk = r_j^T T^-1 r_k (j != k), Q_jj = q_j:
    p * (O(eta) part of the committee rates at eta = 1) == the finite-width particle drift."""
    p, M = 5, 2
    rng = np.random.default_rng(3)
    T = np.array([[1.0, 0.2], [0.2, 0.8]])
    vt = np.array([1.0, -0.6])
    y = _state(rng, p, T)
    ratio = 0.7
    committee = hl.derive(hl.Committee(K=p, M=M, activation="erf", train_second_layer=True))
    Q = y["r"] @ np.linalg.solve(T, y["r"].T)
    np.fill_diagonal(Q, y["q"])

    def rates(eta):
        args = {
            "T": T,
            "v_teacher": vt,
            "eta": eta,
            "eta_v": ratio / p,
            "sigma": 0.0,
            "kappa": 0.0,
        }
        st = {"Q": jnp.asarray(Q), "R": jnp.asarray(y["r"]), "v": jnp.asarray(y["a"] / p)}
        out = committee.module.vector_field(0.0, st, args)
        return {k: np.asarray(v) for k, v in out.items()}, float(committee.module.risk(st, args))

    (f1, risk_c), (f2, _) = rates(1.0), rates(2.0)
    dQ_linear = (4 * f1["Q"] - f2["Q"]) / 2  # f(eta) = eta A + eta^2 B
    model = hl.MeanField(M=M, finite_width=True)
    init = hl.MeanFieldInit(T=T, v_teacher=vt, particles=p)
    mf = drift_numpy(
        hl.derive_meanfield(model),
        model,
        init,
        y,
        lr=1.0,
        lr_second_layer=ratio,
        method=method,
        nodes=40,
    )
    tol = 1e-12 if method == "pairwise" else 1e-9
    np.testing.assert_allclose(mf["r"], p * f1["R"], rtol=0, atol=tol)
    np.testing.assert_allclose(mf["q"], p * np.diagonal(dQ_linear), rtol=0, atol=tol)
    np.testing.assert_allclose(mf["a"], p * f1["v"], rtol=0, atol=tol)
    assert mf["risk"] == pytest.approx(risk_c, abs=tol)


@pytest.mark.parametrize("M, nodes, tol", [(1, 48, 1e-12), (2, 32, 1e-7)])
@pytest.mark.parametrize("finite_width", [False, True])
def test_quadrature_matches_pairwise_closed_form(M, nodes, tol, finite_width):
    """(c) the O(P n^M) quadrature path against the exact O(P^2) closed forms (P = 64); the error
    falls exponentially with the number of nodes (measured M = 2: 8e-3, 8e-5, 8e-7, 8e-9 at
    n = 8, 16, 24, 32)."""
    rng = np.random.default_rng(M)
    T = np.eye(M) if M == 1 else np.array([[1.0, 0.3], [0.3, 1.2]])
    vt = np.ones(M) if M == 1 else np.array([1.0, 0.7])
    y = _state(rng, 64, T, r_scale=0.4)
    model = hl.MeanField(M=M, finite_width=finite_width)
    init = hl.MeanFieldInit(T=T, v_teacher=vt, particles=64)
    system = hl.derive_meanfield(model)
    exact = drift_numpy(system, model, init, y, method="pairwise")
    errs = []
    for n in (8, nodes):
        quad = drift_numpy(system, model, init, y, method="quadrature", nodes=n)
        errs.append(max(np.abs(quad[k] - exact[k]).max() for k in ("r", "q", "a")))
        errs[-1] = max(errs[-1], abs(quad["risk"] - exact["risk"]))
    assert errs[1] < tol
    assert errs[1] < errs[0]


@pytest.mark.parametrize("finite_width", [False, True])
def test_identical_particles_reduce_to_single_particle_ode(finite_width):
    """(b) P identical particles: the drift is that of one particle interacting with itself
    (Saad-Solla I2/I3 written by hand; self weight 1/P with finite_width)."""
    P, M = 7, 2
    T = np.array([[1.0, 0.25], [0.25, 0.9]])
    vt = np.array([0.8, 0.5])
    r, q, a = np.array([0.3, -0.2]), 0.9, 0.6
    y = {"r": np.tile(r, (P, 1)), "q": np.full(P, q), "a": np.full(P, a)}
    model = hl.MeanField(M=M, finite_width=finite_width)
    init = hl.MeanFieldInit(T=T, v_teacher=vt, particles=P)
    ref = single_particle(r, q, a, T, vt, ratio=0.5, w_self=1 / P if finite_width else 0.0)
    for method in ("pairwise", "quadrature"):
        out = drift_numpy(
            hl.derive_meanfield(model),
            model,
            init,
            y,
            lr=0.2,
            lr_second_layer=0.1,
            method=method,
            nodes=32,
        )
        np.testing.assert_allclose(out["r"], np.tile(ref[0], (P, 1)), atol=1e-9)
        np.testing.assert_allclose(out["q"], ref[1], atol=1e-9)
        np.testing.assert_allclose(out["a"], ref[2], atol=1e-9)
        assert out["risk"] == pytest.approx(ref[3], abs=1e-9)


def test_identical_particles_trajectory_against_scipy(system):
    """(b) a_std = 0: every particle is the same; the solved risk follows the single-particle
    ODE integrated by scipy DOP853 (rtol 1e-11) to 1e-7 relative."""
    model = hl.MeanField(M=1)
    init = hl.MeanFieldInit(T=[[1.0]], v_teacher=[1.0], q=0.8, a_mean=0.5, a_std=0.0, particles=128)
    tr = hl.solve_meanfield(
        system, model=model, init=init, lr=0.1, t1=6.0, n_save=3, spacing="linear", rtol=1e-10
    )
    T, vt = np.eye(1), np.ones(1)

    def rhs(t, s):
        dr, dq, da, _ = single_particle(s[:1], s[1], s[2], T, vt)
        return np.concatenate([dr, [dq, da]])

    sol = solve_ivp(
        rhs, (0, 6), [0.0, 0.8, 0.5], method="DOP853", rtol=1e-11, atol=1e-13, t_eval=tr.t
    )
    risk = [single_particle(s[:1], s[1], s[2], T, vt)[3] for s in sol.y.T]
    np.testing.assert_allclose(tr.risk, risk, rtol=1e-7)
    np.testing.assert_allclose(tr.r[:, 0, 0], sol.y[0], rtol=1e-7, atol=1e-10)
    assert np.ptp(tr.a[-1]) < 1e-12 and tr.risk[-1] < 0.5 * tr.risk[0]


def test_risk_of_random_init_is_half_teacher_power(system):
    model = hl.MeanField(M=1)
    init = hl.MeanFieldInit(T=[[1.0]], v_teacher=[1.0], particles=128)
    tr = hl.solve_meanfield(
        system, model=model, init=init, lr=0.05, t1=2.0, n_save=3, spacing="linear"
    )
    assert tr.risk[0] == pytest.approx(1 / 6, abs=1e-12)  # E[erf(nu/sqrt2)^2]/2 = 1/6
    assert np.all(np.diff(tr.risk) < 0) and tr.status == "ok"


def test_linear_activation_quadrature_matches_pairwise():
    model = hl.MeanField(M=1, activation="linear")
    system = hl.derive_meanfield(model)
    y = _state(np.random.default_rng(5), 16, np.eye(1))
    init = hl.MeanFieldInit(T=[[1.0]], v_teacher=[1.0], particles=16)
    a = drift_numpy(system, model, init, y, method="pairwise")
    b = drift_numpy(system, model, init, y, method="quadrature", nodes=8)
    for k in ("r", "q", "a"):
        np.testing.assert_allclose(a[k], b[k], atol=1e-12)


def test_divergence_status(system):
    model = hl.MeanField(M=1)
    init = hl.MeanFieldInit(T=[[1.0]], v_teacher=[3.0], a_mean=1.0, particles=128)
    tr = hl.solve_meanfield(
        system, model=model, init=init, lr=0.1, t1=50.0, n_save=3, divergence_bound=1e-2
    )
    assert tr.status.startswith("diverged at t=")
    assert tr.t[-1] == pytest.approx(tr.t_stop)


def test_non_finite_drift_fails_fast_with_its_time(system, monkeypatch):
    # As for the committee solve: a drift that turns NaN while the particles stay finite (here
    # once sum_j a_j, which grows monotonically, passes its value at tau = 2 on the unpatched
    # solve) makes every step fail; the solve stops at tau ~ 2 with the step-collapse error
    # (dtmin = 1e-13 of the span) instead of running through max_steps rejected steps.
    import dataclasses

    import jax.numpy as jnp

    from hildlimits._families.meanfield import model as _meanfield

    model = hl.MeanField(M=1)
    init = hl.MeanFieldInit(T=[[1.0]], v_teacher=[1.0], a_mean=1.0, particles=16)
    kw = dict(model=model, init=init, lr=0.1, max_steps=100_000)
    ref = hl.solve_meanfield(system, t1=4.0, n_save=3, spacing="linear", **kw)
    assert ref.t[1] == 2.0 and np.all(np.diff(ref.a.sum(axis=1)) > 0)
    threshold = float(ref.a[1].sum())
    good = _meanfield.drift

    def drift(s, y, args, **options):
        out = good(s, y, args, **options)
        return {k: jnp.where(jnp.sum(y["a"]) >= threshold, jnp.nan, v) for k, v in out.items()}

    monkeypatch.setattr(_meanfield, "drift", drift)
    fresh = dataclasses.replace(system, _jax={})  # a copy: no compiled solve cached
    with pytest.raises(hl.SolveError, match=r"failed at t=(1\.9|2)\S*: the step size collapsed"):
        hl.solve_meanfield(fresh, t1=10.0, **kw)


# ----------------------------------------------------------------------------- simulation


def test_simulation_approaches_ode_small(system):
    """(d) p = 32, d = 256, eta = 0.1, 4 seeds: within 0.008 of the mean-field risk over
    tau in [0, 1] (the deviation is the O(1/p) variance term and O(eta)); at tau = 0 the
    finite-width ODE with the same 32 particles reproduces the simulation's risk (1/p term)."""
    model = hl.MeanField(M=1)
    init = hl.MeanFieldInit(T=[[1.0]], v_teacher=[1.0], particles=128)
    sim = hl.simulate_meanfield(
        model, init=init, lr=0.1, d=256, width=32, seeds=4, t1=1.0, n_save=3, spacing="linear"
    )
    assert sim.status == "ok" and sim.risk.shape == (4, 3)
    tr = hl.solve_meanfield(system, model=model, init=init, lr=0.1, ts=sim.t)
    dev = np.abs(sim.risk_mean - tr.risk)
    assert dev.max() < 8e-3
    assert np.all(np.diff(sim.risk_mean) < 0)
    fw = hl.MeanField(M=1, finite_width=True)
    init32 = hl.MeanFieldInit(T=[[1.0]], v_teacher=[1.0], particles=32)
    tr32 = hl.solve_meanfield(hl.derive_meanfield(fw), model=fw, init=init32, lr=0.1, ts=sim.t)
    assert abs(sim.risk_mean[0] - tr32.risk[0]) < 0.2 * dev[0]
    # orthogonal overlaps of the random init are O(1/sqrt d)
    assert sim.q_offdiag[:, 0].mean() < 3 / np.sqrt(256)


@pytest.mark.slow
def test_simulation_width_128_small_lr(system):
    model = hl.MeanField(M=1)
    init = hl.MeanFieldInit(T=[[1.0]], v_teacher=[1.0], particles=2048)
    sim = hl.simulate_meanfield(
        model, init=init, lr=0.05, d=1024, width=128, seeds=4, t1=1.5, n_save=4, spacing="linear"
    )
    tr = hl.solve_meanfield(system, model=model, init=init, lr=0.05, ts=sim.t)
    assert np.abs(sim.risk_mean - tr.risk).max() < 3e-3


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"particles": 0}, "init.particles"),
        ({"q": 0.0}, "init.q"),
        ({"a_std": -1.0}, "init.a_std"),
        ({"T": [[1.0, 2.0], [2.0, 1.0]]}, "positive definite"),
        ({"sampling": "sobol"}, "init.sampling"),
    ],
)
def test_init_validation(kwargs, fragment):
    base = {"T": [[1.0]], "v_teacher": [1.0]}
    if "T" in kwargs:
        base["v_teacher"] = [1.0, 1.0]
    with pytest.raises(hl.ConfigError, match=fragment):
        hl.MeanFieldInit(**(base | kwargs))


def test_width_above_d_is_an_error():
    with pytest.raises(hl.ConfigError, match="width=32 > d=16"):
        hl.simulate_meanfield(
            hl.MeanField(M=1),
            init=hl.MeanFieldInit(T=[[1.0]], v_teacher=[1.0]),
            lr=0.1,
            d=16,
            width=32,
            t1=1.0,
        )


# ----------------------------------------------------------------------------- CLI

CONFIG = """\
[model]
kind = "meanfield"
M = 1
activation = "erf"
train_second_layer = true

[training]
lr = 0.2
lr_second_layer = 0.2

[init]
T = [[1.0]]
v_teacher = [1.0]
q = 1.0
a_mean = 0.0
a_std = 1.0
particles = 128

[solve]
t1 = 1.0
n_save = 3
spacing = "linear"
"""


def _write(tmp_path, text):
    path = tmp_path / "mf.toml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    "old, new, fragment",
    [
        ("particles = 128", "particles = 0", "init.particles must be a positive integer, got 0"),
        ("q = 1.0", "q = 0.0", "init.q must be positive"),
        ("a_std = 1.0", "a_std = -0.5", "init.a_std must be non-negative"),
        ("a_std = 1.0", "a_sdt = 1.0", "did you mean 'a_std'"),
        ('kind = "meanfield"', 'kind = "meanfeild"', "model.kind must be one of"),
    ],
)
def test_cli_bad_config_exit_2(tmp_path, capsys, old, new, fragment):
    cfg = _write(tmp_path, CONFIG.replace(old, new))
    assert main(["solve", cfg, "--out", str(tmp_path / "o.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and fragment in err and "Traceback" not in err


def test_cli_width_above_d_exit_2(tmp_path, capsys):
    cfg = _write(tmp_path, CONFIG)
    out = str(tmp_path / "s.json")
    assert main(["simulate", cfg, "--N", "16", "--width", "32", "--out", out]) == 2
    assert "width=32 > d=16" in capsys.readouterr().err
    assert main(["simulate", cfg, "--N", "16", "--out", out]) == 2
    assert "--width" in capsys.readouterr().err
    # every command works for the mean field now (tests/test_families.py); a committee-only
    # sweep name is refused with the family's own names
    assert main(["sweep", cfg, "--param", "init.Q=1,2", "--out", str(tmp_path)]) == 2
    assert "meanfield" in capsys.readouterr().err


def test_cli_solve_simulate_validate(tmp_path, capsys):
    cfg = _write(tmp_path, CONFIG)
    assert main(["derive", cfg]) == 0
    assert "dq_j/dτ" in capsys.readouterr().out
    out = tmp_path / "solve.json"
    assert main(["solve", cfg, "--out", str(out), "--plot", str(tmp_path / "mf.png")]) == 0
    data = json.loads(out.read_text())
    assert data["t"] == [0.0, 0.5, 1.0] and len(data["risk"]) == 3
    assert np.shape(data["r"]) == (3, 128, 1) and np.shape(data["a"]) == (3, 128)
    assert data["meta"]["config"]["model"]["kind"] == "meanfield"
    assert (tmp_path / "mf.png").stat().st_size > 0
    sim_out = tmp_path / "sim.json"
    args = ["simulate", cfg, "--N", "64", "--width", "8", "--seeds", "2", "--out", str(sim_out)]
    assert main(args) == 0
    sim = json.loads(sim_out.read_text())
    assert sim["t"] == pytest.approx([0.0, 0.5, 1.0], abs=1e-12)
    assert len(sim["risk"]) == 3 and len(sim["risk_std"]) == 3
    vdir = tmp_path / "val"
    args = ["validate", cfg, "--N", "64,128", "--width", "8,16", "--seeds", "2", "--rel-tol", "1"]
    assert main(args + ["--out", str(vdir)]) == 0
    rep = json.loads((vdir / "report.json").read_text())
    assert [r["width"] for r in rep["per_width"]] == [8, 16]
    assert (vdir / "cloud.png").exists() and (vdir / "deviation.png").exists()
