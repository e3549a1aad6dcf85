"""Any activation: closed forms (ReLU, sign, polynomials, trigonometric/exponential), the
numerical paths (Price line integral, Gauss-Hermite quadrature), ODE against simulation, and
bad input."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import sympy as sp
from helpers import monte_carlo, random_covariance
from reference import I4_erf
from scipy import integrate, stats
from scipy.special import erf
from scipy.stats import multivariate_normal

import hildlimits as hl
from hildlimits import gaussian_expectation
from hildlimits._engine.activations import X, get_activation
from hildlimits._engine.codegen import expectation_function
from hildlimits._engine.gaussian import (
    DEFAULT_LINE_NODES,
    ELL,
    MU,
    Expectation,
    GaussHermite,
    KinkPlan,
    covariance_symbols,
    kink_parts,
    kink_plan,
    smoothed_kink,
    upper,
)
from hildlimits._engine.runtime import half_range_rule, radial_rule
from hildlimits._errors import ConfigError

relu, H, sign = sp.Max(0, X), sp.Heaviside(X), sp.sign(X)
g_erf = sp.erf(X / sp.sqrt(2))
he = {k: sp.expand(sp.hermite_prob(k, X)) for k in range(1, 7)}


def value(funcs, C, **kw):
    return float(expectation_function(gaussian_expectation(funcs, X, **kw))(C))


n_relu = lambda z: np.maximum(z, 0)  # noqa: E731
n_H = lambda z: (z > 0).astype(float)  # noqa: E731
n_erf = lambda z: erf(z / np.sqrt(2))  # noqa: E731
n_lin = lambda z: z  # noqa: E731


def n_he(k):
    c = np.zeros(k + 1)
    c[k] = 1
    return lambda z: np.polynomial.hermite_e.hermeval(z, c)


CLOSED = [
    ("relu relu (arc-cosine)", [relu, relu], [n_relu, n_relu]),
    ("step relu", [H, relu], [n_H, n_relu]),
    ("step z relu (three-point)", [H, X, relu], [n_H, n_lin, n_relu]),
    ("step step (orthant)", [H, H], [n_H, n_H]),
    ("relu erf", [relu, g_erf], [n_relu, n_erf]),
    ("sign erf", [sign, g_erf], [np.sign, n_erf]),
    ("|z| z^2", [sp.Abs(X), X**2], [np.abs, lambda z: z**2]),
    ("He3 He3", [he[3], he[3]], [n_he(3), n_he(3)]),
    ("He4 erf", [he[4], g_erf], [n_he(4), n_erf]),
    ("He2 He2 He1 He1", [he[2], he[2], he[1], he[1]], [n_he(2), n_he(2), n_he(1), n_he(1)]),
    ("sin sin", [sp.sin(X), sp.sin(X)], [np.sin, np.sin]),
    ("cos z sin", [sp.cos(X), X, sp.sin(X)], [np.cos, n_lin, np.sin]),
    ("exp(z/2) z^2", [sp.exp(X / 2), X**2], [lambda z: np.exp(z / 2), lambda z: z**2]),
]


@pytest.mark.parametrize("name,funcs,nums", CLOSED, ids=[c[0] for c in CLOSED])
def test_closed_forms_against_monte_carlo(name, funcs, nums):
    # 4e5 samples: within 5 standard errors (false alarm < 1e-6 per comparison), fixed seeds.
    e = gaussian_expectation(funcs, X)
    assert e.method.startswith("closed form") and not e.numerical
    f = expectation_function(e)
    rng = np.random.default_rng(2)
    for _ in range(3):
        C = random_covariance(rng, len(funcs), scale=rng.uniform(0.3, 2))
        mean, se = monte_carlo(nums, C, n_samples=400_000, rng=rng)
        assert abs(float(f(C)) - mean) < 5 * se + 1e-12, (float(f(C)), mean, se)


def test_relu_pair_equals_arc_cosine_kernel():
    # Cho & Saul's first-order arc-cosine kernel, typed independently: exact to rounding.
    rng = np.random.default_rng(3)
    for _ in range(20):
        C = random_covariance(rng, 2, scale=rng.uniform(0.2, 3))
        s1, s2 = np.sqrt(C[0, 0]), np.sqrt(C[1, 1])
        th = np.arccos(np.clip(C[0, 1] / (s1 * s2), -1, 1))
        ref = s1 * s2 / (2 * np.pi) * (np.sin(th) + (np.pi - th) * np.cos(th))
        assert value([relu, relu], C) == pytest.approx(ref, rel=1e-12, abs=1e-15)


def _sign4_reference(C):
    # sum over orthants of the sign pattern times its probability (Genz's algorithm in scipy);
    # the patterns eps and -eps have the same probability and sign product.
    total = 0.0
    for eps in itertools.product([1, -1], repeat=3):
        D = np.diag((1,) + eps)
        mvn = multivariate_normal(np.zeros(4), D @ C @ D, abseps=1e-8, releps=1e-8)
        total += 2 * np.prod(eps) * mvn.cdf(np.zeros(4))
    return total


def test_price_line_integral_against_orthant_probabilities():
    # E[sign z_0 ... sign z_3] has no closed form. Default 12 nodes per pair (cubic map towards
    # s = 1): measured ~1e-15 for well-conditioned covariances and <= 7e-7 with correlations up to
    # 1 - 1e-7; tolerance 1e-5 (the ReLU accuracy target), reference accurate to ~1e-7.
    e = gaussian_expectation([sign] * 4, X, line_nodes=DEFAULT_LINE_NODES)
    assert "Price line integral" in e.method and e.numerical
    f = expectation_function(e)
    rng = np.random.default_rng(4)
    for trial in range(4):
        d = rng.standard_normal((4, 5))
        if trial >= 2:
            d[1] = 0.999 * d[0] + 0.01 * d[1]
        C = d @ d.T / 5
        assert abs(float(f(C)) - _sign4_reference(C)) < 1e-5


def test_price_line_integral_converges_on_nearly_singular_covariances():
    # Nearly aligned units (correlations 1 - 1e-3 ... 1 - 1e-7, one or two aligned pairs) are the
    # hard case: the default rule against a 200-node rule (converged to ~1e-12). Measured max
    # error 6.6e-7 at the default 12 nodes; tolerance 2e-6.
    fine = expectation_function(gaussian_expectation([sign] * 4, X, line_nodes=200))
    default = expectation_function(
        gaussian_expectation([sign] * 4, X, line_nodes=DEFAULT_LINE_NODES)
    )
    rng = np.random.default_rng(4)
    worst = 0.0
    for trial in range(24):
        d = rng.standard_normal((4, 5))
        c = [0.999, 0.9999, 0.99995, 0.999999, 0.9999999][trial % 5]
        d[1] = c * d[0] + (1 - c) * d[1]
        if trial % 3 == 0:
            d[3] = c * d[2] + (1 - c) * d[3]
        C = d @ d.T / 5
        worst = max(worst, abs(float(default(C)) - float(fine(C))))
    assert worst < 2e-6


def test_price_line_integral_against_gauss_hermite_for_erf():
    # Four erf factors: the Price line integral and tensor Gauss-Hermite (30^4 nodes, smooth
    # integrand) are independent numerical methods; they agree to 1e-8.
    funcs = [sp.erf(X)] * 4
    rng = np.random.default_rng(5)
    for _ in range(3):
        C = random_covariance(rng, 4, scale=rng.uniform(0.3, 1.5))
        price = value(funcs, C, line_nodes=32)
        gh = value(funcs, C, quadrature_nodes=30)  # no line_nodes: the rules fail -> quadrature
        assert abs(price - gh) < 1e-8


def test_gauss_hermite_against_closed_form():
    # Force the quadrature path on the erf four-point term and compare with Saad & Solla's I4.
    # Default 20^4 nodes: measured 1.1e-6 worst case with variances up to 2 (the target 1e-7 is
    # met for unit-order variances only); tolerance 2e-6.
    dg = sp.diff(g_erf, X)
    cov = covariance_symbols(4)
    call = GaussHermite(sp.Tuple(dg, dg, g_erf, g_erf), sp.Integer(20), *upper(cov))
    e = Expectation(call, cov, ("Gauss-Hermite quadrature",))
    f = expectation_function(e)
    rng = np.random.default_rng(6)
    for _ in range(3):
        C = random_covariance(rng, 4, scale=rng.uniform(0.3, 1.5))
        assert abs(float(f(C)) - I4_erf(C)) < 2e-6


def test_gauss_hermite_accuracy_for_smooth_activations():
    # Default nodes against 1.6x as many: sigmoid four-point and tanh two-point terms meet 1e-7.
    # tanh's derivative sech^2 has poles at +-i pi/2, so the four-point tanh term converges
    # slowly: measured 4.6e-5 at the default 20^4 nodes (documented; raise quadrature_nodes).
    C = np.array(
        [[1.5, 0.3, 0.2, 0.1], [0.3, 1.2, 0.2, 0.1], [0.2, 0.2, 1.0, 0.4], [0.1, 0.1, 0.4, 1.3]]
    )
    sig = 1 / (1 + sp.exp(-X))
    dsig = sp.diff(sig, X)
    a = value([dsig, dsig, sig, sig], C, quadrature_nodes=20)
    b = value([dsig, dsig, sig, sig], C, quadrature_nodes=32)
    assert abs(a - b) < 1e-7
    t = sp.tanh(X)
    a = value([t, t], C[:2, :2], quadrature_nodes=48)
    b = value([t, t], C[:2, :2], quadrature_nodes=80)
    assert abs(a - b) < 1e-7
    dt = sp.diff(t, X)
    a = value([dt, dt, t, t], C, quadrature_nodes=20)
    b = value([dt, dt, t, t], C, quadrature_nodes=40)
    assert abs(a - b) < 1e-4


# ------------------------------------------------------------------------ kinks in quadratures
def _orthant(m, S):
    """P(x > 0) for x ~ N(m, S) (scipy: exact for one field, Genz's algorithm beyond)."""
    if len(m) == 0:
        return 1.0
    if len(m) == 1:
        return float(stats.norm.cdf(m[0] / np.sqrt(S[0, 0])))
    return float(multivariate_normal(np.zeros(len(m)), S, abseps=1e-12, releps=1e-12).cdf(m))


def _kinked_reference(C, n_kink, relu_last, smooth, nodes):
    r"""E[H(x_0) ... H(x_{k-2}) f(x_{k-1}) g_1(y_1) ...] with f = H, or relu if ``relu_last``, by
    conditioning on the smooth fields y (tensor Gauss-Hermite, the integrand being smooth in y)
    and, given y, the exact kinked part: an orthant probability, plus for relu Stein's lemma
    E[(x_c - m_c) 1_A] = sum_j S_cj p_j(0) P(A \ {j} | x_j = 0)."""
    k, sm = n_kink, list(range(n_kink, C.shape[0]))
    Css = C[np.ix_(sm, sm)]
    A = C[np.ix_(range(k), sm)] @ np.linalg.inv(Css)
    S = C[:k, :k] - A @ C[np.ix_(sm, range(k))]
    t, w = np.polynomial.hermite_e.hermegauss(nodes)
    w = w / w.sum()
    U = np.stack([g.ravel() for g in np.meshgrid(*([t] * len(sm)), indexing="ij")], -1)
    W = np.prod(np.meshgrid(*([w] * len(sm)), indexing="ij"), axis=0).ravel()
    Lc = np.linalg.cholesky(Css)
    total = 0.0
    for u, wt in zip(U, W, strict=True):
        y = Lc @ u
        m = A @ y
        inner = _orthant(m, S)
        if relu_last:
            c = k - 1
            inner *= m[c]
            for j in range(k):
                rest = [i for i in range(k) if i != j]
                mc = m[rest] - S[rest, j] / S[j, j] * m[j]
                Sc = S[np.ix_(rest, rest)] - np.outer(S[rest, j], S[j, rest]) / S[j, j]
                dens = stats.norm.pdf(m[j] / np.sqrt(S[j, j])) / np.sqrt(S[j, j])
                inner += S[c, j] * dens * _orthant(mc, Sc)
        total += wt * np.prod([g(v) for g, v in zip(smooth, y, strict=True)]) * inner
    return total


KINKED = [  # (name, funcs, kinked slots first, relu last among them, smooth numpy functions)
    ("H tanh", [H, sp.tanh(X)], 1, False, [np.tanh]),
    ("H relu tanh", [H, relu, sp.tanh(X)], 2, True, [np.tanh]),
    ("H H tanh tanh", [H, H, sp.tanh(X), sp.tanh(X)], 2, False, [np.tanh, np.tanh]),
    # its reference takes ~30 s (scipy trivariate orthant probabilities)
    pytest.param(
        ("H H relu tanh", [H, H, relu, sp.tanh(X)], 3, True, [np.tanh]), marks=pytest.mark.slow
    ),
]


@pytest.mark.parametrize(
    "case", KINKED, ids=["H tanh", "H relu tanh", "H H tanh tanh", "H H relu tanh"]
)
def test_kinked_quadrature_against_conditional_reference(case):
    # Kinks (H, relu) next to a factor without closed form (tanh): the node rule follows the kink
    # lines (half-range rule / polar wedges) and a third kink is integrated in closed form.
    # Reference: condition on the smooth fields (40-80 Gauss-Hermite nodes) and integrate the
    # kinks exactly (scipy). Nodes per dimension: the defaults 48 and 32 for 2 and 3 fields, 32
    # (not 20) for 4, where the tanh factors themselves limit the default (variance 1.7: 2.7e-7
    # at 20 nodes, 1.1e-9 at 32; the poles of tanh, not the kinks). Measured <= 3e-8 (the
    # reference's own error; plain Gauss-Hermite: 7e-4 ... 3e-3); tolerance 1e-7.
    name, funcs, n_kink, relu_last, smooth = case
    r = len(funcs)
    rng = np.random.default_rng(7)
    d = rng.standard_normal((r, 6))
    C = d @ d.T / 6
    e = gaussian_expectation(funcs, X, quadrature_nodes={2: 48, 3: 32, 4: 32}[r])
    assert "kinks:" in e.method and "not split" not in e.method
    ref = _kinked_reference(C, n_kink, relu_last, smooth, nodes=80 if len(smooth) == 1 else 40)
    assert abs(float(expectation_function(e)(C)) - ref) < 1e-7


def test_half_range_kink_converges_on_nearly_aligned_fields():
    # relu(z_0) sech^2(z_1) with correlation up to 1 - 1e-8: the half-range rule splits u_0 = 0
    # exactly, whatever the alignment. Reference: scipy quad over z_0 > 0 of the conditional
    # Gauss-Hermite mean of sech^2 (150 nodes). Measured <= 6e-11 at 48 nodes; tolerance 1e-8.
    funcs = [relu, sp.diff(sp.tanh(X), X)]
    f = expectation_function(gaussian_expectation(funcs, X, quadrature_nodes=48))
    t, w = np.polynomial.hermite_e.hermegauss(150)
    w = w / w.sum()
    rng = np.random.default_rng(3)
    for c in (0.9, 0.99, 0.999, 0.9999):
        d = rng.standard_normal((2, 6))
        d[1] = c * d[0] + (1 - c) * d[1]
        C = d @ d.T / 6 * 1.5
        b, sc = C[0, 1] / C[0, 0], np.sqrt(C[1, 1] - C[0, 1] ** 2 / C[0, 0])

        def integrand(z, C=C, b=b, sc=sc):
            p = np.exp(-(z**2) / (2 * C[0, 0])) / np.sqrt(2 * np.pi * C[0, 0])
            return z * p * np.sum(w / np.cosh(np.minimum(np.abs(b * z + sc * t), 300)) ** 2)

        ref = integrate.quad(integrand, 0, np.inf, epsabs=1e-15, epsrel=1e-13, limit=200)[0]
        assert abs(float(f(C)) - ref) < 1e-8


@pytest.mark.parametrize("f", [relu, H, sign, sp.Abs(X), X**2 * H - X])
def test_smoothed_kink_against_numerical_integration(f):
    # E[f(mu + ell u)] in closed form against scipy quad split at the kink; ell -> 0 gives f(mu).
    sm = smoothed_kink(f, X)
    g = sp.lambdify((MU, ELL), sm, "numpy")
    fn = sp.lambdify(X, f, [{"Heaviside": lambda x, *a: np.heaviside(x, 0.5)}, "numpy"])
    for mu, ell in [(0.3, 1.0), (-1.2, 0.4), (0.0, 2.0), (2.0, 0.05)]:

        def weighted(y, mu=mu, ell=ell):
            return fn(y) * stats.norm.pdf(y, mu, ell)

        ref = sum(
            integrate.quad(weighted, lo, hi, epsabs=1e-14, epsrel=1e-12)[0]
            for lo, hi in ((-np.inf, 0), (0, np.inf))
        )
        assert g(mu, ell) == pytest.approx(ref, rel=1e-10, abs=1e-13)
    assert g(0.7, 1e-150) == pytest.approx(float(fn(0.7)), rel=1e-12)


def test_half_range_and_radial_rules_integrate_moments_exactly():
    # Gauss rules from the moments: exact for polynomials of degree < 2n (closed-form moments
    # E[u^k; u > 0] = 2^((k-1)/2) Gamma((k+1)/2) / sqrt(2 pi), E[r^k] = 2^(k/2) Gamma(k/2 + 1)).
    from math import gamma, pi, sqrt

    for n in (6, 12, 26):
        y, w = half_range_rule(n)
        r, v = radial_rule(n)
        assert np.all(y > 0) and np.all(r > 0)
        for k in range(2 * n):
            half = 2 ** ((k - 1) / 2) * gamma((k + 1) / 2) / sqrt(2 * pi)
            assert np.sum(w * y**k) == pytest.approx(half, rel=1e-12)
            assert np.sum(v * r**k) == pytest.approx(2 ** (k / 2) * gamma(k / 2 + 1), rel=1e-12)


def test_kink_plan_follows_every_kink_it_can():
    t = sp.tanh(X)
    assert kink_plan([t, t], X) == KinkPlan()
    assert kink_plan([H, t], X).variants() == [((0,), None)]
    assert kink_plan([t, relu, H], X).variants() == [((1, 2), None)]
    three = kink_plan([H, H, relu, t], X)
    assert three.variants() == [((1, 2), 0), ((0, 2), 1), ((0, 1), 2)]
    # a kink times a function without closed form cannot be smoothed in closed form
    assert kink_plan([relu * t, H, H, t], X).closed == (1, 2)
    assert kink_parts(sp.sign(X - 1), X) is None  # a kink away from 0 is left alone
    assert kink_parts(t, X) is None


def test_closed_form_kink_is_the_field_least_determined_by_the_others():
    # H H relu tanh with the relu field nearly determined by the tanh field (a specialised ReLU
    # student and its tanh teacher): integrating relu in closed form leaves a near-kink in the
    # tanh coordinate (measured 7e-5 at 20 nodes for correlation 0.99, 2e-4 at 0.9994); the
    # generated code picks an H field instead. Reference: 64 nodes per dimension. Measured
    # <= 1e-7 at the default 20 nodes; tolerance 1e-6.
    funcs = [H, H, relu, sp.tanh(X)]
    f20, f64 = (
        expectation_function(gaussian_expectation(funcs, X, quadrature_nodes=n)) for n in (20, 64)
    )
    rng = np.random.default_rng(11)
    for rho in (0.99, 0.9994):
        d = rng.standard_normal((4, 8))
        d[2] = rho * d[3] / np.linalg.norm(d[3]) * np.linalg.norm(d[2]) + np.sqrt(1 - rho**2) * d[2]
        C = d @ d.T / 8
        assert abs(float(f20(C)) - float(f64(C))) < 1e-6


def test_coincident_unit_variants_equal_generic_closed_forms_for_erf(monkeypatch):
    # The merged-slot variants (used for kinked activations where units coincide) must agree with
    # the generic erf closed forms, which are regular there; 1e-8 absolute (the generic form loses
    # ~sqrt(eps) accuracy in arcsin at exactly coincident fields).
    import jax

    import hildlimits._families.committee.derive as D
    from hildlimits._families.committee.solve import problem

    K, M = 3, 2
    model = hl.Committee(K=K, M=M, activation="erf", train_second_layer=True)
    rng = np.random.default_rng(0)
    W = rng.standard_normal((K + M, 7))
    G = W @ W.T / 7
    init = hl.Overlaps.for_model(
        model,
        Q=G[:K, :K],
        R=G[:K, K:],
        T=G[K:, K:],
        v=rng.standard_normal(K),
        v_teacher=rng.standard_normal(M),
    )
    generic = D._derive_committee("erf", "erf", True)
    y0, args = problem(generic, init, hl.Hyperparams(lr=0.5, noise=0.2))
    a = jax.jit(generic.module.vector_field)(0.0, y0, args)
    monkeypatch.setattr(D, "_needs_merging", lambda entry: True)
    merged = D._derive_committee.__wrapped__("erf", "erf", True)
    assert any(t.coincident for eq in merged.equations for t in eq.terms)
    b = jax.jit(merged.module.vector_field)(0.0, y0, args)
    for key in a:
        np.testing.assert_allclose(np.asarray(b[key]), np.asarray(a[key]), rtol=0, atol=1e-8)


def test_shared_price_integrals_equal_per_point_evaluation():
    # A grid evaluates each four-point Price integral once per distinct set of fields (the
    # (i, k, j, l) points of one set of four students share it); without the sharing every point
    # computes its own. Same quadrature at the same nodes: agreement to rounding, 1e-13 absolute.
    import re
    import types

    import jax

    from hildlimits._families.committee.solve import problem

    model = hl.Committee(K=4, M=3, activation="relu")
    system = hl.derive(model)
    assert "unique(price" in system.source
    plain = re.sub(
        r", q\d+=unique\(price\d+, \([\d, ]*\), \((\([\d, ]*\),? ?)+\)\)", "", system.source
    )
    assert "unique(" not in plain.replace("lambda cov, unique", "")
    module = types.ModuleType("plain")
    exec(compile(plain, "<plain>", "exec"), module.__dict__)
    rng = np.random.default_rng(3)
    W = rng.standard_normal((7, 9))
    G = W @ W.T / 9
    init = hl.Overlaps.for_model(
        model,
        Q=G[:4, :4],
        R=G[:4, 4:],
        T=G[4:, 4:],
        v=rng.uniform(0.5, 1.5, 4),
        v_teacher=rng.uniform(0.5, 1.5, 3),
    )
    y0, args = problem(system, init, hl.Hyperparams(lr=0.8, noise=0.1))
    a = jax.jit(system.module.vector_field)(0.0, y0, args)
    b = jax.jit(module.vector_field)(0.0, y0, args)
    for key in a:
        np.testing.assert_allclose(np.asarray(a[key]), np.asarray(b[key]), rtol=0, atol=1e-13)


def test_grid_unique_evaluates_each_field_set_once():
    # Grid.by_pattern's `unique`: a function symmetric within groups of its fields is evaluated
    # once per distinct (sorted within groups) set of fields and returned at every point;
    # compared with the direct evaluation at each point (exact up to rounding).
    import jax.numpy as jnp

    from hildlimits._engine.runtime import Grid

    K, M = 4, 3
    rng = np.random.default_rng(0)
    W = rng.standard_normal((K + M, 9))
    omega = jnp.asarray(W @ W.T / 9)

    def fn(c00, c01, c02, c03, c11, c12, c13, c22, c23, c33):
        # symmetric under 0 <-> 1 and under 2 <-> 3 (with the covariances permuted), not under
        # 0 <-> 2
        return c01 + 3 * c23 + (c02 + c12) * (c03 + c13) + c00 * c11 + 0.5 * (c22 + c33)

    rows = []

    def counted(*args):
        rows.append(args[0].shape[0])
        return fn(*args)

    grid = Grid(K, M, (("i", "S"), ("k", "S")), (("m", "T"), ("o", "T")), (("i", "k"),))
    labels = ("i", "k", "m", "o")

    def direct(cov, unique):
        return fn(*[cov(a, b) for a in range(4) for b in range(a, 4)])

    def shared(cov, unique):
        return unique(counted, (0, 1, 2, 3), ((0, 1), (2, 3)))

    def merged(cov, unique):  # coinciding units: not under test here
        return cov(0, 1)

    everything = {p: merged for p in [(0, 0, 2, 3), (0, 1, 2, 2), (0, 0, 2, 2)]}
    everything[(0, 1, 2, 3)] = direct
    a = grid.by_pattern(omega, labels, everything)
    b = grid.by_pattern(omega, labels, everything | {(0, 1, 2, 3): shared})
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-14)
    # distinct points i < k, m != o: 6 * 6 = 36 on the grid (m, o ordered), 6 * 3 = 18 field sets
    assert rows == [18]


def test_derive_records_the_path_of_each_expectation():
    relu_sys = hl.derive(hl.Committee(K=2, M=2, activation="relu"))
    methods = [e.method for e in relu_sys.expectations]
    assert any("Price line integral" in m for m in methods)
    assert all(m.startswith("closed form") for m in methods)
    assert "Price line integral" in str(relu_sys)
    tanh_sys = hl.derive(
        hl.Committee(K=1, M=1, activation="tanh", quadrature_nodes=8, mixture_nodes=0)
    )
    assert all("Gauss-Hermite" in e.method for e in tanh_sys.expectations)
    assert "= gauss_hermite_fields(" in tanh_sys.source
    mixed = hl.derive(hl.Committee(K=1, M=1, activation="relu", teacher_activation="tanh"))
    assert any(
        "scale mixture" in e.method and "Price line integral" in e.method
        for e in mixed.expectations
    )
    kinked = hl.derive(
        hl.Committee(K=1, M=1, activation="relu", teacher_activation="tanh", mixture_nodes=0)
    )
    assert any("kinks: z_0, z_1 split by polar wedges" in e.method for e in kinked.expectations)
    assert "kinked_gauss_fields" in kinked.source


# ------------------------------------------------------------------------ ODE vs simulation
def _ode_vs_simulation(model, *, lr=0.5, seeds=8, N=400, t1=4.0):
    K, M = model.K, model.M
    rng = np.random.default_rng(0)
    W = rng.standard_normal((K + M, 50))
    G = W @ W.T / 50
    init = hl.Overlaps.for_model(
        model, Q=G[:K, :K], R=G[:K, K:], T=np.eye(M), v=np.full(K, 1 / K), v_teacher=np.ones(M)
    )
    hyper = hl.Hyperparams(lr=lr)
    sim = hl.simulate(
        model, hyper=hyper, N=N, init=init, seeds=seeds, t1=t1, n_save=9, spacing="linear"
    )
    traj = hl.solve(hl.derive(model), init=init, hyper=hyper, ts=sim.t)
    return sim, traj


ODE_CASES = {
    "relu": dict(K=2, M=2, activation="relu"),
    "tanh": dict(K=2, M=1, activation="tanh"),
    "user expression": dict(K=2, M=2, activation="sin(x) + x/2"),
    "sigmoid": dict(K=2, M=1, activation="sigmoid", lr=2.0),  # sigmoid' <= 1/4: slower
    "erf student, relu teacher": dict(K=2, M=2, activation="erf", teacher_activation="relu"),
    "relu student, tanh teacher": dict(K=2, M=2, activation="relu", teacher_activation="tanh"),
}


@pytest.mark.parametrize("case", sorted(ODE_CASES))
def test_ode_agrees_with_simulation(case):
    # N = 400, 8 seeds, t <= 4: the seed mean lies within 5 standard errors of the ODE plus 2%
    # of the risk (the O(1/N) finite-size bias). tanh and sigmoid take the scale-mixture path.
    spec = dict(ODE_CASES[case])
    lr = spec.pop("lr", 0.5)
    sim, traj = _ode_vs_simulation(hl.Committee(**spec), lr=lr)
    assert sim.status == "ok" and traj.status == "ok"
    dev = np.abs(sim.risk_mean - traj.risk)
    assert np.all(dev <= 5 * sim.risk_sem + 0.02 * traj.risk), (dev, sim.risk_sem)
    assert traj.risk[-1] < 0.9 * traj.risk[0]  # real learning happens in the window


# ------------------------------------------------------------------------------- registry, bad input
def test_registry_names():
    names = set(hl.available_activations())
    assert {"relu", "tanh", "sigmoid", "quadratic", "sign", "erf", "linear"} <= names
    assert {f"he{k}" for k in range(1, 7)} <= names
    assert sp.expand(get_activation("he4").expr - (X**4 - 6 * X**2 + 3)) == 0


@pytest.mark.parametrize(
    "text,fragment",
    [
        ("x + y", "may only use the variable x, found 'y'"),
        ("foo(x)", "unknown function 'foo'"),
        ("sqrt(x)", "not real and finite"),
        ("x +", "cannot parse"),
        ("3", "does not depend on x"),
    ],
)
def test_bad_expressions(text, fragment):
    with pytest.raises(ConfigError, match="teacher_activation") as info:
        hl.Committee(K=1, M=1, activation="erf", teacher_activation=text)
    assert fragment in str(info.value)


def test_sign_is_teacher_only():
    hl.Committee(K=1, M=1, activation="erf", teacher_activation="sign")
    with pytest.raises(ConfigError, match="activation = 'sign' cannot be a student activation"):
        hl.Committee(K=1, M=1, activation="sign")
    with pytest.raises(ConfigError, match="cannot be a student"):
        hl.Committee(K=1, M=1, activation="Heaviside(x)")


def test_bad_activation_from_the_cli(tmp_path, capsys):
    from hildlimits._cli import main

    base = (
        '[model]\nK = 1\nM = 1\nactivation = "{a}"\n[training]\nlr = 0.1\n'
        "[init]\nQ = [[1.0]]\nR = [[0.0]]\nT = [[1.0]]\n[solve]\nt1 = 1.0\n"
    )
    for act, fragment in [("sign", "cannot be a student"), ("x*z", "found 'z'")]:
        cfg = tmp_path / "c.toml"
        cfg.write_text(base.format(a=act))
        assert main(["derive", str(cfg)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error:") and "activation" in err and fragment in err, err
        assert "Traceback" not in err


GRADIENT_CASES = {
    "relu": dict(K=2, M=2, activation="relu"),
    "relu student, tanh teacher": dict(K=2, M=2, activation="relu", teacher_activation="tanh"),
}


@pytest.mark.parametrize(
    "kinked", [[sign] * 4, [H, H, relu, relu], [relu, relu, X]], ids=["sign4", "HHrr", "rrx"]
)
def test_gradients_of_kinked_expectations_equal_central_differences(kinked):
    # The default-suite stand-in for the ODE-level gradient tests below (marked slow: ~90 s of
    # reverse-pass compilation): reverse mode through the Price line integral (nodes that move
    # with the covariance, the guarded arcsine) and the arc-cosine closed forms equals central
    # differences (h = 1e-6, truncation ~1e-12) in every covariance direction to 1e-8.
    import jax

    f = expectation_function(gaussian_expectation(kinked, X, line_nodes=DEFAULT_LINE_NODES))
    r = len(kinked)
    d = np.random.default_rng(11).standard_normal((r, r + 2))
    C = d @ d.T / (r + 2)
    grad = np.asarray(jax.grad(lambda c: f(c))(C))
    h = 1e-6
    for a, b in itertools.combinations_with_replacement(range(r), 2):
        E = np.zeros((r, r))
        E[a, b] = E[b, a] = 1.0
        fd = (float(f(C + h * E)) - float(f(C - h * E))) / (2 * h)
        assert abs(float(np.sum(grad * E)) - fd) < 1e-8


@pytest.mark.parametrize(
    "case",
    [
        # slow: compiling the reverse pass (~90 s each); the expectations' own gradients are
        # checked in the default suite above
        pytest.param("relu", marks=pytest.mark.slow),
        pytest.param("relu student, tanh teacher", marks=pytest.mark.slow),
    ],
)
def test_gradients_through_relu_ode_equal_central_differences(case):
    # The kinked closed forms, merged coincidence variants, Price integrals and (tanh teacher)
    # the scale mixture with a Price integral at each node are differentiable: d risk(t1)/d lr
    # by diffrax equals a central difference (h = 1e-5) to 1e-6 relative (relu: measured 2e-10).
    # relu student / tanh teacher: the difference of two adaptive solves at h = 1e-5 was noisy
    # (4.6e-6) while E[H H tanh tanh] at coinciding student units was evaluated on a singular
    # covariance; with its merged variants the central differences at h = 1e-4, 1e-5, 1e-6
    # converge as h^2 (-0.59305990, -0.593059819, -0.593059818); AD -0.5930598185, 1.3e-9 from
    # the h = 1e-5 difference.
    model = hl.Committee(**GRADIENT_CASES[case])
    init = hl.Overlaps.for_model(model, Q=np.eye(2) * 0.5, R=np.eye(2) * 0.1, T=np.eye(2))
    system = hl.derive(model)
    _, grad = hl.gradient(
        system, init=init, hyper=hl.Hyperparams(lr=0.2, noise=0.1), wrt=["training.lr"], t1=5.0
    )

    def risk(lr):
        hyper = hl.Hyperparams(lr=lr, noise=0.1)
        return hl.solve(system, init=init, hyper=hyper, t1=5.0, n_save=2).risk[-1]

    h = 1e-5
    fd = (risk(0.2 + h) - risk(0.2 - h)) / (2 * h)
    assert grad["training.lr"] == pytest.approx(fd, rel=1e-6)
