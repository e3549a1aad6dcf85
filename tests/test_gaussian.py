"""The Gaussian-expectation engine against published closed forms and Monte Carlo."""

import numpy as np
import pytest
import sympy as sp
from helpers import monte_carlo, random_covariance
from reference import I2_erf, I3_erf, I4_erf, J2_erf
from scipy.special import erf

from hildlimits import NoClosedForm, gaussian_expectation
from hildlimits._engine.activations import X

g = sp.erf(X / sp.sqrt(2))
dg = sp.diff(g, X)


def numeric(funcs):
    e = gaussian_expectation(funcs, X)
    n = len(funcs)
    pairs = [(a, b) for a in range(n) for b in range(a, n)]
    f = sp.lambdify([e.cov[a, b] for a, b in pairs], e.expr, "numpy")
    return lambda C: f(*[C[a, b] for a, b in pairs])


PUBLISHED = [
    ("I2 (Saad & Solla)", [g, g], I2_erf),
    ("I3 (Saad & Solla)", [dg, X, g], I3_erf),
    ("I4 (Saad & Solla)", [dg, dg, g, g], I4_erf),
    ("J2 (Goldt et al.)", [dg, dg], J2_erf),
]


@pytest.mark.parametrize("name,funcs,ref", PUBLISHED, ids=[p[0] for p in PUBLISHED])
def test_engine_equals_published_closed_forms(name, funcs, ref):
    # Both sides are exact closed forms evaluated in float64: agreement to 1e-12 relative
    # (a few ulps times the conditioning of arcsin/sqrt) on random covariances.
    rng = np.random.default_rng(0)
    f = numeric(funcs)
    for _ in range(50):
        C = random_covariance(rng, len(funcs), scale=rng.uniform(0.1, 3))
        assert f(C) == pytest.approx(ref(C), rel=1e-12, abs=1e-14)


def test_engine_handles_coincident_fields():
    # Slots on the same field (i == k == j in a template) give a singular covariance; the
    # closed forms stay finite and agree with the published ones there.
    C = np.full((4, 4), 0.7)
    assert numeric([dg, dg, g, g])(C) == pytest.approx(I4_erf(C), rel=1e-12)


g_num = lambda z: erf(z / np.sqrt(2))  # noqa: E731
dg_num = lambda z: np.sqrt(2 / np.pi) * np.exp(-(z**2) / 2)  # noqa: E731
lin = lambda z: z  # noqa: E731
MC_CASES = [
    ("erf-erf", [g, g], [g_num, g_num]),
    ("g' z g", [dg, X, g], [dg_num, lin, g_num]),
    ("g' g' g g", [dg, dg, g, g], [dg_num, dg_num, g_num, g_num]),
    ("g' g' g z (mixed erf/linear teacher)", [dg, dg, g, X], [dg_num, dg_num, g_num, lin]),
    ("g' g' z z", [dg, dg, X, X], [dg_num, dg_num, lin, lin]),
    ("z^3 g (polynomial x erf)", [X**3, g], [lambda z: z**3, g_num]),
    ("Wick z z z z", [X, X, X, X], [lin, lin, lin, lin]),
]


@pytest.mark.parametrize("name,funcs,nums", MC_CASES, ids=[c[0] for c in MC_CASES])
def test_engine_against_monte_carlo(name, funcs, nums):
    # 4e5 samples: the engine must lie within 5 standard errors of the Monte Carlo mean
    # (a false alarm has probability < 1e-6 per comparison); seeds are fixed.
    rng = np.random.default_rng(1)
    f = numeric(funcs)
    for _ in range(3):
        C = random_covariance(rng, len(funcs), scale=rng.uniform(0.3, 2))
        mean, se = monte_carlo(nums, C, n_samples=400_000, rng=rng)
        assert abs(f(C) - mean) < 5 * se + 1e-12, (f(C), mean, se)


def test_odd_products_vanish_and_rules_are_recorded():
    e = gaussian_expectation([g, g, g], X)
    assert e.expr == 0 and "odd symmetry" in e.rules
    e = gaussian_expectation([dg, dg, g, g], X)
    assert set(e.rules) == {"Gaussian tilting", "erf-erf pair by Price's theorem"}


def test_no_closed_form_is_reported():
    with pytest.raises(NoClosedForm):
        gaussian_expectation([g, g, g, g], X)
    with pytest.raises(NoClosedForm, match="tanh"):
        gaussian_expectation([sp.tanh(X), X], X)


def test_sin_cos_quadrant_matches_numpy():
    # The Price-integral nodes use Taylor polynomials for sin and cos on [0, pi/2] (XLA's on CPU
    # cost 10x more); they must be as accurate as the library functions: 4e-16 absolute.
    import jax

    from hildlimits._engine.runtime import sin_cos_quadrant

    p = np.concatenate([np.linspace(0, np.pi / 2, 100_001), [np.pi / 2, 1e-300, 0.0]])
    s, c = (np.asarray(a) for a in jax.jit(sin_cos_quadrant)(p))
    assert np.max(np.abs(s - np.sin(p))) <= 4e-16
    assert np.max(np.abs(c - np.cos(p))) <= 4e-16


def test_vectorised_asin_matches_numpy():
    # The generated code uses hildlimits._engine.runtime.asin (Taylor series + half-angle identity,
    # vectorised by XLA) instead of jnp.arcsin; it must be as accurate as the library arcsin:
    # a few ulp (relative 1e-15) in value, 1e-13 relative in its derivative, clipped outside [-1, 1].
    import jax

    from hildlimits._engine.runtime import asin

    x = np.concatenate(
        [
            np.linspace(-1, 1, 200_001),
            np.random.default_rng(0).uniform(-1, 1, 100_000),
            [0.5, np.nextafter(0.5, 1), np.nextafter(1.0, 0), 1e-300, 0.0, -1.0, 1.5, -2.0],
        ]
    )
    got = np.asarray(jax.jit(asin)(x))
    ref = np.arcsin(np.clip(x, -1, 1))
    assert np.all(np.abs(got - ref) <= 1e-15 * np.maximum(np.abs(ref), 1e-300) + 5e-16)
    xs = np.random.default_rng(1).uniform(-0.999, 0.999, 10_000)
    d = np.asarray(jax.jit(jax.vmap(jax.grad(asin)))(xs))
    np.testing.assert_allclose(d, 1 / np.sqrt(1 - xs**2), rtol=1e-13)
