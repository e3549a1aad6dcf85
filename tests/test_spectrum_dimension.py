"""Power-law spectra in large dimension: ``[data] dimension = d`` groups the d directions into
``bins`` bins (hildlimits._pipeline.spectrum). Checks: ``bins == dimension`` is today's law bit
for bit; the grouping (singletons, then log-spaced groups, every direction counted once); each
group's trace and teacher mass are exact (also through the Euler--Maclaurin sums beyond 2^20
directions); the binned least-squares risk curve against the exact one-bin-per-direction one;
configuration errors name the key and the value. Float64 (tests/conftest.py)."""

from __future__ import annotations

import numpy as np
import pytest

import hildlimits as hl
from hildlimits._errors import ConfigError
from hildlimits._families.committee.derive import derive
from hildlimits._pipeline.config import config_from_dict
from hildlimits._pipeline.spectrum import group_edges, power_sums, spectrum_from_config


def law(bins, **kw):
    return spectrum_from_config({"law": "power_law", "bins": bins, **kw})


@pytest.mark.parametrize("kw", [{}, {"exponent": 1.5}, {"exponent": 0.6, "source": 1.0}])
def test_bins_equal_to_dimension_is_todays_law(kw):
    plain, same = law(500, **kw), law(500, dimension=500, **kw)
    for name in ("eigenvalues", "weights", "teacher_weights"):
        assert np.array_equal(getattr(plain, name), getattr(same, name))
    assert same.resolved()["dimension"] == 500


@pytest.mark.parametrize(
    "d, B", [(10**5, 1000), (10**5, 3000), (1000, 999), (1000, 1), (10**12, 700)]
)
def test_groups_cover_every_direction_once(d, B):
    edges = group_edges(d, B)
    n = np.diff(edges)
    assert edges[0] == 0 and edges[-1] == d and len(n) == B and (n >= 1).all()
    # singletons first, then groups that never shrink by more than rounding (log spacing)
    k0 = int(np.argmax(n > 1)) if (n > 1).any() else B
    assert (n[:k0] == 1).all()
    sp = law(B, dimension=d, exponent=1.2)
    assert np.isclose(sp.weights.sum(), 1.0, rtol=0, atol=1e-12)
    if d <= 10**5:  # the simulator's directions per bin at N = d are the group sizes
        assert np.array_equal(sp.counts(d), n)


@pytest.mark.parametrize("a", [0.0, 0.6, 1.0, 1.5, 3.0])
def test_group_sums_exact_also_beyond_direct_range(a):
    """Term-by-term sums up to 2^20, Euler--Maclaurin beyond: both to rounding (1e-13)."""
    d = 3 * 10**6
    edges = group_edges(d, 200)
    lo, hi = edges[:-1] + 1, edges[1:]
    assert (hi > 2**20).sum() > 10  # the Euler--Maclaurin branch is exercised
    direct = np.add.reduceat(np.arange(1, d + 1, dtype=np.float64) ** -a, lo - 1)
    np.testing.assert_allclose(power_sums(a, lo, hi), direct, rtol=1e-13)


def test_trace_and_teacher_mass_of_every_group_exact():
    d, B, a, b = 200_000, 800, 1.3, 0.4
    sp = law(B, dimension=d, exponent=a, source=b, scale=2.0)
    j = np.arange(1, d + 1, dtype=np.float64)
    s, tau = j**-a, j**-b
    s *= 2.0 / s.mean()
    tau /= tau.sum()
    edges = group_edges(d, B)
    np.testing.assert_allclose(
        sp.weights * sp.eigenvalues, np.add.reduceat(s, edges[:-1]) / d, rtol=1e-12
    )
    np.testing.assert_allclose(sp.teacher_weights, np.add.reduceat(tau, edges[:-1]), rtol=1e-12)
    assert abs(sp.mean - 2.0) < 1e-12
    # sum p s^2 is low by the within-group variance: small (measured -4.3e-9) and never high
    err = sp.weights @ sp.eigenvalues**2 / np.mean(s**2) - 1
    assert -1e-6 < err <= 1e-14


def test_binned_risk_curve_close_to_exact():
    """Least squares (linear K = M = 1, square loss, noise 0.5) at d = 4000: the risk curve of
    200 bins against the 4000 bins of the exact representation. Measured max relative
    difference 1.2e-5 (exponent 0.6, source 1, t <= 10) and 1.4e-5 (exponent 1, source 0.5,
    t <= 3); it is the binning error ((exponent ln r)^2/12 per group), not the solver's (rtol
    1e-12, atol 1e-18). Tolerance 1e-4: about 7 times the measured error."""
    model = hl.Committee(K=1, M=1, activation="linear", covariance="spectrum")
    system = derive(model)
    init = hl.Overlaps.for_model(model, Q=[[0.0]], R=[[0.0]], T=[[1.0]])
    hyper = hl.Hyperparams(lr=1.0, noise=0.5)
    for a, source, t1 in [(0.6, 1.0, 10.0), (1.0, 0.5, 3.0)]:
        risks = []
        for bins in (4000, 200):
            sp = law(bins, dimension=4000, exponent=a, source=source)
            tr = hl.solve(
                system,
                init=init,
                hyper=hyper,
                t1=t1,
                n_save=40,
                spectrum=sp,
                rtol=1e-12,
                atol=1e-18,
            )
            assert tr.status == "ok"
            risks.append(np.asarray(tr.risk))
        exact, binned = risks
        assert np.max(np.abs(binned - exact) / exact) < 1e-4


BASE = {
    "model": {"K": 1, "M": 1, "activation": "linear"},
    "training": {"lr": 0.5},
    "init": {"Q": [[0.0]], "R": [[0.0]], "T": [[1.0]]},
    "solve": {"t1": 1.0},
}


def test_config_with_dimension_resolves():
    data = {**BASE, "data": {"law": "power_law", "bins": 100, "dimension": 10**6, "exponent": 1.5}}
    cfg = config_from_dict(data)
    assert cfg.data.bins == 100 and cfg.data.dimension == 10**6
    assert cfg.resolved()["data"]["dimension"] == 10**6


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"bins": 100, "dimension": 50}, "data.dimension must be at least data.bins = 100"),
        (
            {"bins": 100, "dimension": 1e5},
            "data.dimension must be a positive integer, got 100000.0",
        ),
        ({"bins": 100, "dimension": 2.5}, "data.dimension must be a positive integer, got 2.5"),
        ({"bins": 100, "dimension": True}, "data.dimension must be a positive integer, got True"),
        ({"bins": 100, "dimension": "1e5"}, "data.dimension must be a positive integer, got '1e5'"),
        ({"bins": 100, "dimension": -5}, "data.dimension must be a positive integer, got -5"),
        ({"bins": 100, "dimension": 10**16}, "data.dimension must be at most"),
        ({"bins": 10, "dimension": 100, "exponent": -1.0}, "data.exponent must be non-negative"),
        ({"bins": 10, "dimension": 100, "source": -0.5}, "data.source must be non-negative"),
        ({"bins": 10.0, "dimension": 100}, "data.bins must be a positive integer"),
    ],
)
def test_bad_dimension_names_key_and_value(spec, message):
    with pytest.raises(ConfigError) as info:
        spectrum_from_config({"law": "power_law", **spec})
    assert message in str(info.value)


def test_dimension_only_with_power_law():
    with pytest.raises(
        ConfigError, match="data.dimension is not a parameter of data.law = 'two_point'"
    ):
        spectrum_from_config({"law": "two_point", "bins": 2, "dimension": 10})
    with pytest.raises(ConfigError, match="data.dimension is only used with data.law"):
        spectrum_from_config({"eigenvalues": [1.0, 2.0], "dimension": 10})
