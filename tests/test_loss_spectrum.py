"""Any loss, any labels, any input covariance (issue 16): the joint numerical backend against
closed forms and Monte Carlo, spectra against the isotropic equations and against the exact
finite-N second-moment recursion of least squares, and the ODE against the simulator."""

from __future__ import annotations

import json
import math

import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import erf

import hildlimits as hl
from hildlimits._errors import ConfigError
from hildlimits._families.committee.derive import derive
from hildlimits._families.committee.joint import derive_joint
from hildlimits._families.committee.loss import path_of
from hildlimits._families.committee.simulate import simulate
from hildlimits._pipeline.config import config_from_dict
from hildlimits._pipeline.spectrum import spectrum_from_config, spread_overlaps
from hildlimits._pipeline.validate import Tolerance, criterion

Q2 = np.array([[1.0, 0.3], [0.3, 0.8]])
R2 = np.array([[0.5], [0.2]])
T1 = np.array([[1.0]])
V2 = np.array([0.7, 1.1])
ARGS = {
    "T": T1,
    "v_teacher": np.array([1.0]),
    "v": V2,
    "eta": 1.0,
    "eta_v": 1.0,
    "sigma": 0.4,
    "kappa": 0.0,
}


def joint_system(loss, label, *, act="erf", nodes=None, K=2, M=1, spectral=False):
    """A system forced onto the joint rule (a structure no other test derives)."""
    m = hl.Committee(K=K, M=M, activation=act, loss=loss, label=label, joint_nodes=nodes)
    st = dict(m.structure, forced="joint", covariance="spectrum" if spectral else "identity")
    return derive_joint(act, act, False, loss, label, 1.0, nodes, spectral, json.dumps(st))


def moments(system, Q=Q2, R=R2, args=ARGS):
    out = system.module.moments({"Q": jnp.asarray(Q), "R": jnp.asarray(R)}, args)
    return {k: np.asarray(v) for k, v in out.items()}


# ----------------------------------------------------------------------------- paths


def test_square_loss_keeps_todays_structure_and_path():
    m = hl.Committee(K=2, M=2, activation="erf")
    assert set(m.structure) == {
        "family",
        "activation",
        "teacher_activation",
        "train_second_layer",
        "quadrature_nodes",
        "line_nodes",
        "mixture_nodes",
    }
    assert m.path == "closed"
    assert path_of("(yhat - y)**2/2", "y") == "closed"
    assert path_of("correlation", "y") == "closed"
    assert path_of("logistic", "y") == "joint"
    assert path_of("square", "sign(y)") == "joint"
    assert path_of("huber", "y") == "joint"


def test_polynomial_loss_expression_gives_the_square_loss_equations():
    """The square loss written as an expression takes the closed-form path and its vector field
    equals today's to rounding (1e-13: the same closed forms, summed in another order)."""
    init = hl.Overlaps.for_model(hl.Committee(K=2, M=1), Q=Q2, R=R2, T=T1, v=V2)
    hyper = hl.Hyperparams(lr=0.7, noise=0.4, weight_decay=0.1)
    base = derive(hl.Committee(K=2, M=1, activation="tanh"))
    expr = derive(hl.Committee(K=2, M=1, activation="tanh", loss="(y - yhat)**2/2"))
    assert expr.observable_names == ("risk", "loss")
    y0, args = hl._families.committee.solve.problem(base, init, hyper)
    a = base.module.vector_field(0.0, y0, args)
    b = expr.module.vector_field(0.0, y0, args)
    for key in a:
        np.testing.assert_allclose(np.asarray(b[key]), np.asarray(a[key]), rtol=0, atol=1e-13)
    # the population loss of the square loss is the risk plus sigma^2/2
    loss = float(expr.module.loss(y0, args))
    assert abs(loss - float(base.module.risk(y0, args)) - 0.4**2 / 2) < 1e-13


@pytest.mark.parametrize("path", ["closed", "joint"])
def test_single_bin_spectrum_reproduces_the_isotropic_vector_field(path):
    """Sigma = I as one bin: the per-bin equations equal today's to 1e-12 (the only difference
    is the 1e-13 ridge of the regression on singular field covariances)."""
    kw = {} if path == "closed" else {"loss": "logistic", "label": "sign(y)"}
    iso = derive(hl.Committee(K=2, M=1, activation="erf", **kw))
    spec = derive(hl.Committee(K=2, M=1, activation="erf", covariance="spectrum", **kw))
    spectrum = spectrum_from_config({"eigenvalues": [1.0]})
    init = hl.Overlaps.for_model(hl.Committee(K=2, M=1), Q=Q2, R=R2, T=T1, v=V2)
    hyper = hl.Hyperparams(lr=0.7, noise=0.4, weight_decay=0.1)
    solve_mod = hl._families.committee.solve
    y0, args = solve_mod.problem(iso, init, hyper)
    yb, argsb = solve_mod.problem(spec, init, hyper, spectrum=spectrum)
    a = iso.module.vector_field(0.0, y0, args)
    b = spec.module.vector_field(0.0, yb, argsb)
    for key in a:
        np.testing.assert_allclose(np.asarray(b[key])[0], np.asarray(a[key]), rtol=0, atol=1e-12)
    assert abs(float(spec.module.risk(yb, argsb)) - float(iso.module.risk(y0, args))) < 1e-14


# ----------------------------------------------------------------------------- joint rule


@pytest.mark.parametrize(("act", "nodes", "tol"), [("erf", 32, 1e-9), ("relu", 32, 1e-8)])
def test_joint_rule_against_closed_forms(act, nodes, tol):
    """The square loss through the joint rule against the closed-form moments (the spectral
    template path computes F, H, D in closed form). erf: spectral convergence (measured 4e-11 at
    32 nodes); ReLU: the kinks lambda_i = 0, nu = 0 are followed by panels along one coordinate
    and polar panels in the other two (measured 2e-9 at 32 nodes, 1e-13 at 64; against a
    40-node Price line integral in the closed forms)."""
    closed = derive(hl.Committee(K=2, M=1, activation=act, covariance="spectrum", line_nodes=40))
    ref = closed.module.moments({"Q": jnp.asarray(Q2), "R": jnp.asarray(R2)}, ARGS)
    got = moments(joint_system("(yhat - y)**2/2", "y", act=act, nodes=nodes))
    for key in ("F", "H", "D"):
        np.testing.assert_allclose(got[key], np.asarray(ref[key]), rtol=0, atol=tol)


def test_joint_rule_against_monte_carlo():
    """Logistic loss on noisy sign labels, K = 2 erf students, one erf teacher: every moment
    within 5 Monte Carlo standard errors of 10^6 samples (the rule's own error, measured against
    4x10^6 samples, is below 3e-4)."""
    got = moments(joint_system("logistic", "sign(y)"))
    rng = np.random.default_rng(1)
    C = np.block([[T1, R2.T], [R2, Q2]])
    n = 1_000_000
    z = rng.multivariate_normal(np.zeros(3), C, size=n)
    nu, lam = z[:, :1], z[:, 1:]

    def g(x):
        return erf(x / math.sqrt(2))

    yhat = g(lam) @ V2
    lab = np.sign(g(nu[:, 0]) + ARGS["sigma"] * rng.standard_normal(n))
    dl = -lab / (1 + np.exp(lab * yhat))
    delta = dl[:, None] * V2 * math.sqrt(2 / math.pi) * np.exp(-(lam**2) / 2)
    samples = {
        "F": delta[:, :, None] * lam[:, None, :],
        "H": delta[:, :, None] * nu[:, None, :],
        "D": delta[:, :, None] * delta[:, None, :],
        "loss": np.logaddexp(0, -lab * yhat),
        "classification_error": (yhat * lab <= 0).astype(float),
    }
    for key, s in samples.items():
        mean, se = s.mean(0), s.std(0) / math.sqrt(n)
        assert np.all(np.abs(got[key] - mean) <= 5 * se + 1e-12), key


def test_classification_error_closed_form():
    """One linear student and teacher, sign labels without noise: P(sign yhat != label) =
    arccos(rho)/pi (the kink of sign(lambda) and of the label are both followed by panels)."""
    system = joint_system("logistic", "sign(y)", act="linear", K=1, M=1)
    Q, R = np.array([[0.7]]), np.array([[0.4]])
    args = {**ARGS, "v": np.array([1.0]), "sigma": 0.0}
    got = moments(system, Q, R, args)
    rho = 0.4 / math.sqrt(0.7)
    assert abs(got["classification_error"] - math.acos(rho) / math.pi) < 1e-8
    # the population logistic loss: by the symmetry (nu, lambda) -> (-nu, -lambda) it is
    # 2 E[softplus(-lambda) 1{nu > 0}]; adaptive quad over nu > 0 of Gauss-Hermite in lambda | nu
    from scipy.integrate import quad

    x, w = np.polynomial.hermite_e.hermegauss(80)
    w = w / w.sum()

    def inner(nu):
        lam = 0.4 * nu + math.sqrt(0.7 - 0.16) * x
        return np.exp(-nu * nu / 2) / math.sqrt(2 * math.pi) * (w @ np.logaddexp(0, -lam))

    ref = 2 * quad(inner, 0, np.inf, epsabs=1e-13, epsrel=1e-13)[0]
    assert abs(got["loss"] - ref) < 1e-9


# ----------------------------------------------------------------------------- spectra


def test_spectrum_config_laws_and_spread():
    sp = spectrum_from_config({"law": "power_law", "bins": 100, "exponent": 1.5, "source": 1.0})
    assert sp.bins == 100 and abs(sp.mean - 1.0) < 1e-12
    assert abs(sp.teacher_weights.sum() - 1) < 1e-12 and sp.teacher_weights[0] > sp.weights[0]
    mp = spectrum_from_config({"law": "marchenko_pastur", "bins": 50, "ratio": 0.5})
    # bin means of the law: mean 1 (after normalisation) and variance gamma = 0.5 (the law's)
    assert abs(mp.mean - 1) < 1e-12
    assert abs(mp.weights @ (mp.eigenvalues - 1) ** 2 - 0.5) < 0.02  # binning loses variance
    lo, hi = (1 - math.sqrt(0.5)) ** 2, (1 + math.sqrt(0.5)) ** 2
    assert lo < mp.eigenvalues.min() and mp.eigenvalues.max() < hi
    tp = spectrum_from_config({"law": "two_point", "bins": 2, "condition": 10, "fraction": 0.2})
    assert np.allclose(tp.eigenvalues / tp.eigenvalues[1], [10, 1]) and abs(tp.mean - 1) < 1e-12
    # spreading: sums over bins are the plain overlaps, every bin positive semi-definite
    sp2 = spectrum_from_config(
        {
            "eigenvalues": [3.0, 1.0, 0.2],
            "weights": [0.2, 0.3, 0.5],
            "teacher_weights": [0.6, 0.4, 0.0],
        }
    )
    Qb, Rb, Tb = spread_overlaps(sp2, Q2, R2, T1)
    np.testing.assert_allclose(Qb.sum(0), Q2, atol=1e-14)
    np.testing.assert_allclose(Rb.sum(0), R2, atol=1e-14)
    np.testing.assert_allclose(Tb.sum(0), T1, atol=1e-14)
    for b in range(3):
        J = np.block([[Qb[b], Rb[b]], [Rb[b].T, Tb[b]]])
        assert np.linalg.eigvalsh(J).min() > -1e-12


def exact_least_squares_risk(spectrum, N: int, steps: int, *, eta: float, sigma: float, E0):
    """Exact expected risk of one-pass SGD for least squares, x ~ N(0, Sigma), at dimension N.

    With e = w - w*, one step e <- e - (eta/N) x x^T e + (eta/sqrt N) sigma zeta x. For Gaussian x,
    E[x x^T P x x^T] = 2 Sigma P Sigma + tr(Sigma P) Sigma, so the diagonal of P = E[e e^T] closes
    by itself; per bin, E_b = sum_{j in b} P_jj / N obeys
      E_b' = E_b (1 - 2 eta s_b/N + 2 eta^2 s_b^2/N^2) + (eta^2/N) s_b p_b (sum_c s_c E_c + sigma^2)
    exactly, with p_b = n_b/N; the risk is sum_b s_b E_b / 2."""
    s = spectrum.eigenvalues
    p = spectrum.counts(N) / N
    E = np.asarray(E0, float).copy()
    risks = [0.5 * s @ E]
    a = eta / N
    for _ in range(steps):
        forcing = s @ E + sigma**2
        E = E * (1 - 2 * a * s + 2 * a * a * s * s) + (eta**2 / N) * s * p * forcing
        risks.append(0.5 * s @ E)
    return np.asarray(risks)


def test_least_squares_spectrum_against_the_exact_finite_N_recursion():
    """The N -> infinity ODE against the exact expected risk of SGD at N = 1000, 2000, 4000 on
    a two-point spectrum: the difference shrinks like 1/N (the O(eta^2 s^2/N^2) per-step term)."""
    spectrum = spectrum_from_config({"eigenvalues": [3.0, 0.5], "weights": [0.2, 0.8]})
    model = hl.Committee(K=1, M=1, activation="linear", covariance="spectrum")
    system = derive(model)
    init = hl.Overlaps.for_model(model, Q=[[0.0]], R=[[0.0]], T=[[1.0]])
    hyper = hl.Hyperparams(lr=1.0, noise=0.3)
    t1 = 4.0
    diffs = []
    for N in (1000, 2000, 4000):
        steps = int(t1 * N)
        exact = exact_least_squares_risk(
            spectrum, N, steps, eta=1.0, sigma=0.3, E0=spectrum.weights * 1.0
        )
        ts = np.arange(0, steps + 1, N // 4) / N
        traj = hl.solve(
            system, init=init, hyper=hyper, ts=ts, spectrum=spectrum, rtol=1e-12, atol=1e-14
        )
        diffs.append(np.abs(traj.risk - exact[:: N // 4]).max())
    ratios = [diffs[0] / diffs[1], diffs[1] / diffs[2]]
    assert diffs[0] < 5e-3
    for r in ratios:
        assert 1.8 < r < 2.2, (diffs, ratios)


# ----------------------------------------------------------------------------- simulation


def _agree(sim, traj, name="risk"):
    mean = sim.risk_mean if name == "risk" else sim.observables[name].mean(0)
    sem = (
        sim.risk_sem
        if name == "risk"
        else sim.observables[name].std(0, ddof=1) / math.sqrt(sim.seeds)
    )
    ode = traj.risk if name == "risk" else traj.observables[name]
    crit = criterion(mean, sem, ode, Tolerance())
    return crit["fraction_within_tolerance"], crit["max_deviation_in_se"]


@pytest.mark.parametrize(
    ("case", "spectrum"),
    [
        ("logistic", None),
        ("logistic", {"law": "two_point", "bins": 2, "condition": 10.0, "fraction": 0.2}),
        ("committee", None),
    ],
    ids=["logistic-isotropic", "logistic-two-point", "erf-K2-logistic-sign"],
)
def test_ode_against_simulation(case, spectrum):
    """Logistic regression (linear student and teacher, sign labels with noise) and a K = 2 erf
    committee with logistic loss on sign labels: the ODE against 8 seeds of SGD at N = 1000,
    risk, population loss and classification error within the validation criterion."""
    if case == "logistic":
        K, act, lr, t1 = 1, "linear", 0.5, 4.0
        init = dict(Q=[[0.0]], R=[[0.0]], T=[[1.0]])
    else:
        K, act, lr, t1 = 2, "erf", 1.0, 4.0
        init = dict(Q=[[0.5, 0.0], [0.0, 0.5]], R=[[0.1], [0.0]], T=[[1.0]])
    spec = spectrum_from_config(spectrum) if spectrum else None
    model = hl.Committee(
        K=K,
        M=1,
        activation=act,
        loss="logistic",
        label="sign(y)",
        covariance="spectrum" if spec else "identity",
    )
    ov = hl.Overlaps.for_model(model, **init)
    hyper = hl.Hyperparams(lr=lr, noise=0.2)
    sim = simulate(
        model,
        hyper=hyper,
        N=1000,
        init=ov,
        seeds=8,
        t1=t1,
        n_save=8,
        spacing="linear",
        spectrum=spec,
    )
    traj = hl.solve(derive(model), init=ov, hyper=hyper, ts=sim.t, spectrum=spec)
    for name in ("risk", "loss", "classification_error"):
        frac, worst = _agree(sim, traj, name)
        assert frac == 1.0, (name, worst)


# ----------------------------------------------------------------------------- bad input

BASE = {
    "model": {"K": 1, "M": 1, "activation": "linear"},
    "training": {"lr": 0.5},
    "init": {"Q": [[0.0]], "R": [[0.0]], "T": [[1.0]]},
    "solve": {"t1": 1.0},
}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model": {"loss": "logisitc"}}, "model.loss must be one of 'square', 'logistic'"),
        ({"model": {"loss": "(yhat - z)**2"}}, "may only use the variables yhat, y, found 'z'"),
        ({"model": {"loss": "y**2"}}, "does not depend on yhat"),
        ({"model": {"loss": "sign(yhat - y)"}}, "not a function (it has a Dirac delta)"),
        (
            {"model": {"label": "sign(x)"}},
            "model.label: expression 'sign(x)' may only use the variable y, found 'x'",
        ),
        ({"model": {"label": 3}}, "model.label must be an expression in y, got 3"),
        (
            {"model": {"huber_delta": 0.5}},
            "model.huber_delta is only used with model.loss = 'huber'",
        ),
        (
            {"model": {"loss": "huber", "huber_delta": -1}},
            "model.huber_delta must be a positive number, got -1",
        ),
        ({"data": {"eigenvalues": [1.0, -0.5]}}, "data.eigenvalues must be positive, got -0.5"),
        ({"data": {"eigenvalues": [1.0, 0.0]}}, "data.eigenvalues must be positive, got 0.0"),
        (
            {"data": {"eigenvalues": [1.0, 2.0], "weights": [0.5, 0.6]}},
            "data.weights must sum to 1",
        ),
        (
            {"data": {"eigenvalues": [1.0, 2.0], "weights": [1.0]}},
            "data.weights has 1 entries but data.eigenvalues has 2",
        ),
        (
            {"data": {"eigenvalues": [1.0], "teacher_weights": [0.5, 0.5]}},
            "data.teacher_weights has 2 entries",
        ),
        ({"data": {"law": "power_law", "bins": 0}}, "data.bins must be a positive integer, got 0"),
        (
            {"data": {"law": "power_law", "bins": 10, "exponent": -1}},
            "data.exponent must be non-negative",
        ),
        ({"data": {"law": "cauchy", "bins": 10}}, "data.law must be one of"),
        ({"data": {"law": "power_law", "bins": 10, "ratio": 0.5}}, "data.ratio is not a parameter"),
        ({"data": {"eigenvalues": [1.0], "colour": 1}}, "unknown key 'data.colour'"),
        (
            {"init": {"Q_bins": [[[0.0]]]}, "data": {"eigenvalues": [1.0]}},
            "init.R_bins is needed together",
        ),
    ],
)
def test_bad_input_names_key_and_value(change, message):
    data = {k: dict(v) for k, v in BASE.items()}
    for section, values in change.items():
        data.setdefault(section, {}).update(values)
    with pytest.raises(ConfigError) as info:
        config_from_dict(data)
    assert message in str(info.value)


def test_cli_bad_spectrum_exits_2(tmp_path, capsys):
    from hildlimits._cli import main

    cfg = tmp_path / "bad.toml"
    cfg.write_text(
        '[model]\nK = 1\nM = 1\nactivation = "linear"\nloss = "logistic"\nlabel = "sign(y)"\n'
        "[training]\nlr = 0.5\n[data]\neigenvalues = [1.0, 2.0]\nweights = [0.3, 0.3]\n"
        "[init]\nQ = [[0.0]]\nR = [[0.0]]\nT = [[1.0]]\n[solve]\nt1 = 1.0\n"
    )
    assert main(["solve", str(cfg), "--out", str(tmp_path / "o.json")]) == 2
    err = capsys.readouterr().err
    assert "data.weights must sum to 1" in err and "Traceback" not in err


def test_meanfield_refuses_a_data_section():
    data = {
        "model": {"kind": "meanfield", "activation": "erf"},
        "data": {"eigenvalues": [1.0]},
    }
    with pytest.raises(
        ConfigError, match=r"section '\[data\]' is not used by model.kind = 'meanfield'"
    ):
        config_from_dict(data)
