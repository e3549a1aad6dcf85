"""tanh and sigmoid expectations through the Kolmogorov scale mixture of erf: the mixing rule,
the recognition of tanh polynomials, expectations against an independent quadrature (the
trapezoid rule), and the derivation path."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
from scipy import stats
from scipy.special import erf

import hildlimits as hl
from hildlimits import gaussian_expectation
from hildlimits._engine.activations import X
from hildlimits._engine.codegen import expectation_function
from hildlimits._engine.gaussian import DEFAULT_MIXTURE_NODES, tanh_polynomial
from hildlimits._engine.runtime import kolmogorov_rule, scale_mixture_nodes
from hildlimits._errors import ConfigError

tanh, sech2 = sp.tanh(X), 1 / sp.cosh(X) ** 2
sigmoid = 1 / (1 + sp.exp(-X))
d_sigmoid = sp.simplify(sp.diff(sigmoid, X))


def _trapezoid(fns, C, h=0.25, R=8.0):
    r"""E[prod_s f_s(z_s)], z ~ N(0, C), by the tensor trapezoid rule in the whitened coordinates
    (z = L u, |u_t| <= R, step h). The integrand is analytic in a strip around the real axes of
    half-width d = pi / (2 max_s |L_s|) (the poles of tanh and sech at i pi / 2), so the error is
    ~exp(-2 pi d / h) + the tail e^{-R^2/2} (~1e-14): below 2e-9 for the variances used here
    (<= 3.8, h <= 0.25). An independent reference: the mixture path does no quadrature in z."""
    r = C.shape[0]
    L = np.linalg.cholesky(C)
    u = np.arange(-R, R + h / 2, h)
    wu = np.exp(-(u**2) / 2) * h / np.sqrt(2 * np.pi)
    rest = np.stack(np.meshgrid(*([u] * (r - 1)), indexing="ij"), -1).reshape(-1, r - 1)
    w_rest = np.prod(np.stack(np.meshgrid(*([wu] * (r - 1)), indexing="ij"), -1), -1).ravel()
    total = 0.0
    for u0, w0 in zip(u, wu, strict=True):
        U = np.concatenate([np.full((len(rest), 1), u0), rest], axis=1)
        Z = U @ L.T
        total += w0 * np.sum(w_rest * np.prod([f(Z[:, s]) for s, f in enumerate(fns)], axis=0))
    return total


def _cov(r, scale, seed):
    d = np.random.default_rng(seed).standard_normal((r, 6))
    return d @ d.T / 6 * scale


n_tanh = np.tanh
n_sech2 = lambda z: 1 / np.cosh(z) ** 2  # noqa: E731
n_sigmoid = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
n_dsigmoid = lambda z: n_sigmoid(z) * (1 - n_sigmoid(z))  # noqa: E731
n_erf = lambda z: erf(z / np.sqrt(2))  # noqa: E731


# ------------------------------------------------------------------------ the mixing rule
def test_kolmogorov_rule_matches_scipy_moments_and_reproduces_tanh():
    # Moments of the 12-node rule against scipy's kstwobign (numerical integration of its
    # density; agrees to ~1e-12): exact up to degree 2n - 1 = 23.
    k, w = kolmogorov_rule(12)
    for p in range(0, 8):
        assert abs(np.sum(w * k**p) - stats.kstwobign.moment(p)) < 1e-9 * (1 + 2.0**p)
    # tanh(y) = E_K[erf(y / (sqrt(2) K))]: pointwise, 16 nodes, measured 2.0e-9 on |y| <= 12.
    y = np.linspace(-12, 12, 481)
    k, w = kolmogorov_rule(16)
    mixture = np.sum(w * erf(y[:, None] / (np.sqrt(2) * k)), axis=-1)
    assert np.max(np.abs(mixture - np.tanh(y))) < 1e-8
    betas, weights = scale_mixture_nodes(2, 8)
    assert len(betas) == 2 and betas[0].shape == weights.shape
    assert abs(weights.sum() - 1) < 1e-14


# ------------------------------------------------------------------------ recognising tanh
@pytest.mark.parametrize(
    "f,c",
    [
        (tanh, 1),
        (sech2, 1),
        (1 - tanh**2, 1),
        (sigmoid, sp.Rational(1, 2)),
        (d_sigmoid, sp.Rational(1, 2)),
        (X * sp.tanh(2 * X) ** 3, 2),
        (sp.exp(-(X**2) / 2) * tanh, 1),
        (sp.tanh(sp.sqrt(2) * X), sp.sqrt(2)),
    ],
)
def test_tanh_polynomial_recognises_forms(f, c):
    found = tanh_polynomial(f, X)
    assert found is not None and sp.simplify(found[0] - c) == 0
    P = found[1]
    ys = np.linspace(-3, 3, 13)
    lhs = sp.lambdify(X, f, "numpy")(ys)
    rhs = [float(P.as_expr().subs({P.gens[0]: sp.tanh(c * y), X: y})) for y in ys]
    np.testing.assert_allclose(lhs, rhs, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(
    "f", [sp.exp(X) * tanh, sp.log(1 + sp.exp(X)), sp.sin(X), X**2, tanh + sp.tanh(2 * X)]
)
def test_tanh_polynomial_rejects_other_functions(f):
    assert tanh_polynomial(f, X) is None


# ------------------------------------------------------------------------ expectations
MIXED = [  # (name, sympy factors, numpy factors, variance scale)
    ("tanh tanh", [tanh, tanh], [n_tanh, n_tanh], 1.5),
    ("sech2 id tanh", [sech2, X, tanh], [n_sech2, lambda z: z, n_tanh], 1.0),
    ("erf tanh sech2", [sp.erf(X / sp.sqrt(2)), tanh, sech2], [n_erf, n_tanh, n_sech2], 1.0),
    ("sech2 sech2 tanh tanh", [sech2, sech2, tanh, tanh], [n_sech2] * 2 + [n_tanh] * 2, 1.5),
    ("sech2 sech2 tanh tanh small", [sech2, sech2, tanh, tanh], [n_sech2] * 2 + [n_tanh] * 2, 0.05),
    ("sigmoid' sigmoid' sigmoid sigmoid", [d_sigmoid, d_sigmoid, sigmoid, sigmoid],
     [n_dsigmoid] * 2 + [n_sigmoid] * 2, 2.0),
    ("tanh^3 x tanh", [tanh**3, X * tanh], [lambda z: np.tanh(z) ** 3, lambda z: z * np.tanh(z)],
     1.0),
]  # fmt: skip


@pytest.mark.parametrize("case", MIXED, ids=[c[0] for c in MIXED])
def test_mixture_against_trapezoid_reference(case):
    # Default mixture nodes (16, 12, 10, 8 for 1-4 mixture variables). Measured against the
    # trapezoid reference: <= 1e-8 for the four-point terms (5.2e-9 at variances ~0.03, 2.7e-10
    # at ~1, 4e-11 at ~3; at 14 nodes within 1.5e-11), two-point <= 2e-9; tolerance 1e-7 (the
    # issue's accuracy target for smooth activations).
    name, funcs, fns, scale = case
    C = _cov(len(funcs), scale, seed=len(name))
    e = gaussian_expectation(funcs, X, mixture_nodes=DEFAULT_MIXTURE_NODES)
    assert "scale mixture" in e.method
    ref = _trapezoid(fns, C, h=0.25 if scale <= 1.5 else 0.2)
    assert abs(float(expectation_function(e)(C)) - ref) < 1e-7


def test_mixture_on_coincident_fields():
    # Units that coincide give a singular covariance (z_1 = z_0): finite, and equal to the
    # merged three-field expectation E[sech^4(z_0) tanh(z_2) tanh(z_3)] (trapezoid, 1e-7).
    e = gaussian_expectation([sech2, sech2, tanh, tanh], X, mixture_nodes=DEFAULT_MIXTURE_NODES)
    C3 = _cov(3, 1.0, seed=5)
    C = np.empty((4, 4))
    idx = [0, 0, 1, 2]
    C[:] = C3[np.ix_(idx, idx)]
    got = float(expectation_function(e)(C))
    ref = _trapezoid([lambda z: n_sech2(z) ** 2, n_tanh, n_tanh], C3)
    assert np.isfinite(got) and abs(got - ref) < 1e-7


def test_mixture_gradient_is_finite_and_matches_differences():
    # d/dC_23 of E[sech^2 sech^2 tanh tanh] (reverse mode through the closed forms at the
    # mixture nodes) against a central difference (step 1e-5: truncation ~1e-10).
    import jax

    e = gaussian_expectation([sech2, sech2, tanh, tanh], X, mixture_nodes=8)
    f = expectation_function(e)
    C = _cov(4, 1.0, seed=2)
    E = np.zeros((4, 4))
    E[2, 3] = E[3, 2] = 1.0
    grad = np.asarray(jax.grad(lambda c: f(c))(C))
    directional = float(np.sum(grad * E))
    h = 1e-5
    fd = (float(f(C + h * E)) - float(f(C - h * E))) / (2 * h)
    assert abs(directional - fd) < 1e-8


@pytest.mark.parametrize("kinked", ["H H tanh tanh", "H H relu tanh"])
def test_mixture_with_kinks_against_kink_following_quadrature(kinked):
    # Two kinks beside tanh: sign sign erf erf at each mixture node is a Price line integral
    # whose erf scales are the mixture variables (the generated Price function takes them as
    # arrays); H H relu tanh reduces in closed form. Reference: the kink-following quadrature
    # (polar wedges, 32 nodes per dimension; 1.6e-9 and 4e-9 against conditional references in
    # test_activations). Measured 1.1e-9 and 9.2e-10; tolerance 1e-7.
    H = sp.Heaviside(X)
    funcs = [H, H, tanh, tanh] if kinked == "H H tanh tanh" else [H, H, sp.Max(0, X), tanh]
    C = _cov(4, 1.0, seed=7)
    e = gaussian_expectation(funcs, X, mixture_nodes=DEFAULT_MIXTURE_NODES, line_nodes=12)
    assert "scale mixture" in e.method
    if kinked == "H H tanh tanh":
        assert "Price line integral" in e.method
    ref = gaussian_expectation(funcs, X, quadrature_nodes=32)
    assert "kinks:" in ref.method
    got = float(expectation_function(e)(C))
    assert abs(got - float(expectation_function(ref)(C))) < 1e-7


def test_more_than_four_mixture_variables_fall_back_to_gauss_hermite():
    # tanh^3 = tanh - tanh sech^2 takes two mixture variables: 2 + 2 + 1 + 1 = 6 > 4.
    funcs = [tanh**3, tanh**3, tanh, tanh]
    e = gaussian_expectation(funcs, X, mixture_nodes=8, quadrature_nodes=6)
    assert "Gauss-Hermite" in e.method
    assert "scale mixture" in gaussian_expectation(funcs[1:], X, mixture_nodes=8).method


# ------------------------------------------------------------------------ derivation path
def test_derive_uses_the_mixture_for_tanh_and_can_turn_it_off():
    on = hl.derive(hl.Committee(K=1, M=1, activation="tanh"), cache=False)
    assert all("scale mixture" in e.method for e in on.expectations)
    assert "= scale_mixture_nodes(" in on.source and "= gauss_hermite_fields(" not in on.source
    off = hl.derive(hl.Committee(K=1, M=1, activation="tanh", mixture_nodes=0), cache=False)
    assert all("Gauss-Hermite" in e.method for e in off.expectations)
    sig = hl.derive(hl.Committee(K=1, M=1, activation="sigmoid", mixture_nodes=6), cache=False)
    assert all("6^" in e.method for e in sig.expectations)


def test_relu_student_tanh_teacher_right_hand_side_is_smooth():
    # H H tanh tanh (a Price line integral at each mixture node) at coinciding student units
    # (the diagonal of dQ/dt) must use the merged three-field expectation: evaluated on the
    # singular covariance, the Price integral returned rounding noise, 2nd differences ~3e-11
    # along a line where smooth entries give ~1e-16, and adaptive solves at rtol = 1e-12 took
    # 16257 steps instead of 577. Second differences at spacing 2.5e-9 of a smooth function are
    # ~1e-17 * f''; tolerance 1e-14.
    import jax

    from hildlimits._families.committee.solve import problem

    model = hl.Committee(K=2, M=2, activation="relu", teacher_activation="tanh")
    system = hl.derive(model)
    rng = np.random.default_rng(0)
    W = rng.standard_normal((2, 50)) * 0.5
    Ws = np.linalg.qr(rng.standard_normal((50, 2)))[0].T * np.sqrt(50)
    init = hl.Overlaps.for_model(model, Q=W @ W.T / 50, R=W @ Ws.T / 50, T=np.eye(2))
    y, args = problem(system, init, hl.Hyperparams(lr=0.2, noise=0.1))
    dQ = rng.standard_normal((2, 2))
    dQ, dR = dQ + dQ.T, rng.standard_normal((2, 2))
    field = jax.jit(
        lambda t: system.module.vector_field(
            0.0, {"Q": y["Q"] + t * dQ, "R": y["R"] + t * dR}, args
        )
    )
    out = np.array([np.asarray(field(t)["Q"]).ravel() for t in np.linspace(0, 1e-7, 41)])
    assert np.abs(np.diff(out, 2, axis=0)).max() < 1e-14


def test_mixture_nodes_validation():
    with pytest.raises(ConfigError, match=r"model.mixture_nodes must be a non-negative integer"):
        hl.Committee(K=1, M=1, activation="tanh", mixture_nodes=-1)
    with pytest.raises(ConfigError, match="model.mixture_nodes"):
        hl.Committee(K=1, M=1, activation="tanh", mixture_nodes=2.5)
