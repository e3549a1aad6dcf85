r"""Input covariances given by their spectrum: the ``[data]`` section.

``x ~ N(0, Sigma)`` with ``Sigma`` diagonal in its eigenbasis; its spectrum is a set of *bins*:
eigenvalue ``s_b`` on a fraction ``p_b`` of the ``N`` directions (``weights``, summing to 1). The
teacher's squared norm is spread over the bins in the fractions ``teacher_weights`` (default:
``weights``, a random teacher). A finite-``N`` problem is represented exactly by ``N`` bins of
weight ``1/N``.

Keys (every one a public contract)::

    [data]
    eigenvalues = [...]          # explicit: s_b > 0
    weights = [...]              # p_b > 0, sum 1 (default: equal)
    teacher_weights = [...]      # tau_b >= 0, sum 1 (default: weights)
    # or a named law:
    law = "power_law"            # s_j ∝ j^-exponent, j = 1..dimension, in `bins` bins
    law = "two_point"            # condition = s_max/s_min, fraction = weight of s_max
    law = "marchenko_pastur"     # ratio = gamma in (0, 1]; bins of equal weight (bin means)
    bins = 100                   # number of bins of a law
    dimension = 100000           # power law: number of directions d (integer >= bins;
                                 # default bins: one direction per bin)
    source = 1.0                 # power law: tau_j ∝ j^-source (teacher), default: weights
    scale = 1.0                  # laws: mean eigenvalue (default 1)

Named laws are normalised to the mean eigenvalue ``scale`` (1 by default: the isotropic scale);
explicit eigenvalues are taken as given (no renormalisation).

**Power laws in large dimension (binned).** With ``dimension = d > bins = B`` the directions
``j = 1..d`` are grouped (:func:`group_edges`): the first ``k0`` directions one per bin, the rest
in ``B - k0`` groups equally spaced in ``log j`` (``k0`` is where that spacing matches the spacing
``1 + 1/k`` of neighbouring singletons; d = 10^5 gives k0 = 142 for B = 1000 and 493 for
B = 3000). A group ``b`` of ``n_b`` directions becomes one bin with

* ``p_b = n_b / d`` (its share of the directions: exact, so the simulator's counts at ``N = d``
  are exact),
* ``s_b`` the group's mean eigenvalue, so its trace ``n_b s_b = sum_{j in b} s_j`` is exact, and
* ``tau_b = sum_{j in b} tau_j``, its teacher mass, exact.

Why these moments: for least squares the risk obeys
``R(t) = (1/2) F(t) + eta^2 int_0^t K(t - u) (R(u) + sigma^2/2) du`` with the forcing
``F(t) = T sum_j s_j tau_j e^{-2 eta s_j t}`` and the noise kernel
``K(t) = sum_j p_j s_j^2 e^{-2 eta s_j t}`` (the ``eta^2`` term of the ODE). Their time integrals
are the teacher mass ``T sum tau_j / (2 eta)`` and the trace ``sum p_j s_j / (2 eta)`` -- the two
quantities that fix the total decay and the stability threshold ``eta sum_j p_j s_j < 2`` -- and
these are exact. Their values at ``t = 0`` (the initial risk ``sum s tau`` and the noise
injection ``sum p s^2``) and the shapes of ``F`` and ``K`` carry a relative error of the order of
the within-group variance of ``s_j`` over its mean squared, ``(exponent * ln r)^2 / 12`` for a
group spanning the ratio ``r`` in ``j``: ``sum p s^2`` is low by ``sum_b n_b Var_b(s) / d`` and
``sum tau s`` differs by the within-group covariance of ``s`` and ``tau``.

Measured (``d = 10^5``; least squares, linear K = M = 1, square loss, noise 0.5, student from 0,
``T = 1``; maximal relative difference of the risk curve from the exact one-bin-per-direction
representation, both solved by :func:`hildlimits.solve` with ``rtol = 1e-12``, ``atol = 1e-18``):

==========================================  ==========  ==========  ==========
spectrum                                     B = 300     B = 1000    B = 3000
==========================================  ==========  ==========  ==========
``exponent = 0.6``, random teacher, eta 1,   4.1e-6      2.7e-7      2.0e-8
``t <= 10``
``exponent = 1.5``, ``source = 0.5``,        1.4e-5      8.3e-7      8.1e-8
eta 1, ``t <= 0.3``
==========================================  ==========  ==========  ==========

(moments at B = 1000: ``sum p s^2`` low by 4.4e-7 (exponent 0.6) and 1.9e-10 (1.5);
``sum tau s`` off by 1.4e-8 (1.5, source 0.5)). The error falls as about ``B^-2.3``. The binned
spectrum is 100 times cheaper here (3 s against 31 s and 69 s for the exact 10^5 bins). Note that
``atol`` applies to each per-bin overlap: with many bins of small weight the default
``atol = 1e-12`` limits the *exact* representation to ~1e-6 relative, more than the binning error
at B >= 1000. With ``bins == dimension`` (or no ``dimension``) the spectrum is exactly the
one-bin-per-direction law (the same arrays, bit for bit). Group sums beyond ``2^20`` directions
use the Euler--Maclaurin formula (:func:`power_sums`, exact to rounding), so ``dimension`` may be
as large as ``10^15`` at a cost that depends only on ``bins``.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

from hildlimits._errors import ConfigError

KEYS = {
    "eigenvalues",
    "weights",
    "teacher_weights",
    "law",
    "bins",
    "exponent",
    "source",
    "condition",
    "fraction",
    "ratio",
    "scale",
    "dimension",
}
LAWS = ("power_law", "two_point", "marchenko_pastur")
LAW_KEYS = {
    "power_law": {"exponent", "source", "dimension"},
    "two_point": {"condition", "fraction"},
    "marchenko_pastur": {"ratio"},
}
MAX_BINS = 10_000_000
MAX_DIMENSION = 10**15
"""Largest ``data.dimension`` (integers up to this are exact in float64; the group sums beyond
``2**20`` directions are taken by the Euler--Maclaurin formula, so the cost does not grow with
``d``)."""
_DIRECT = 1 << 20  # directions summed term by term; beyond: Euler--Maclaurin


@dataclass(frozen=True, eq=False)
class Spectrum:
    """Bins of an input covariance: ``eigenvalues`` ``s_b``, ``weights`` ``p_b`` (fractions of
    the directions), ``teacher_weights`` ``tau_b`` (fractions of the teacher's squared norm);
    ``spec`` is the ``[data]`` table it came from (for ``meta`` in outputs)."""

    eigenvalues: np.ndarray
    weights: np.ndarray
    teacher_weights: np.ndarray
    spec: dict
    dimension: int | None = None

    @property
    def bins(self) -> int:
        return int(self.eigenvalues.shape[0])

    @property
    def mean(self) -> float:
        """``tr(Sigma)/N``."""
        return float(self.weights @ self.eigenvalues)

    def resolved(self) -> dict:
        out = dict(self.spec)
        out["bins"] = self.bins
        if self.dimension is not None:
            out["dimension"] = self.dimension
        out["mean_eigenvalue"] = self.mean
        return out

    def counts(self, N: int) -> np.ndarray:
        """Directions per bin at dimension ``N`` (largest remainders; every count is exact when
        the weights are multiples of ``1/N``)."""
        raw = self.weights * N
        base = np.floor(raw + 1e-9).astype(np.int64)
        rest = N - int(base.sum())
        if rest > 0:
            order = np.argsort(-(raw - base), kind="stable")
            base[order[:rest]] += 1
        elif rest < 0:
            order = np.argsort(raw - base, kind="stable")
            for b in order:
                if rest == 0:
                    break
                if base[b] > 0:
                    base[b] -= 1
                    rest += 1
        return base


def _number(key: str, value, *, positive=True, integer=False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        kind = "integer" if integer else "number"
        raise ConfigError(
            f"data.{key} must be a {'positive ' if positive else ''}{kind}, got {value!r}"
        )
    if integer and (not isinstance(value, numbers.Integral)):
        raise ConfigError(f"data.{key} must be a positive integer, got {value!r}")
    if positive and value <= 0:
        kind = "integer" if integer else "number"
        raise ConfigError(f"data.{key} must be a positive {kind}, got {value!r}")
    return float(value)


def _vector(key: str, value) -> np.ndarray:
    if not isinstance(value, list | tuple) or not value:
        raise ConfigError(f"data.{key} must be a non-empty list of numbers, got {value!r}")
    if len(value) > MAX_BINS:
        raise ConfigError(f"data.{key} has {len(value)} entries; at most {MAX_BINS}")
    for x in value:
        if isinstance(x, bool) or not isinstance(x, numbers.Real) or not math.isfinite(x):
            raise ConfigError(f"data.{key} must hold finite numbers, got {x!r}")
    return np.asarray(value, np.float64)


def _fractions(key: str, w: np.ndarray, *, strict: bool) -> np.ndarray:
    bad = w <= 0 if strict else w < 0
    if bad.any():
        j = int(np.argmax(bad))
        need = "positive" if strict else "non-negative"
        raise ConfigError(f"data.{key} must be {need}, got {float(w[j])!r} at index {j}")
    total = float(w.sum())
    if abs(total - 1.0) > 1e-9:
        raise ConfigError(f"data.{key} must sum to 1, got a sum of {total!r}")
    return w / total


def spectrum_from_config(data: dict) -> Spectrum:
    """The :class:`Spectrum` of a ``[data]`` table (every error names the key and value)."""
    if not isinstance(data, dict):
        raise ConfigError(f"[data] must be a table, got {data!r}")
    unknown = sorted(set(data) - KEYS)
    if unknown:
        raise ConfigError(f"unknown key 'data.{unknown[0]}' (known: {', '.join(sorted(KEYS))})")
    law = data.get("law")
    if law is None:
        if "eigenvalues" not in data:
            raise ConfigError("[data] needs 'eigenvalues' (with 'weights') or a 'law'")
        extra = sorted(set(data) - {"eigenvalues", "weights", "teacher_weights"})
        if extra:
            raise ConfigError(f"data.{extra[0]} is only used with data.law")
        s = _vector("eigenvalues", data["eigenvalues"])
        if (s <= 0).any():
            j = int(np.argmax(s <= 0))
            raise ConfigError(
                f"data.eigenvalues must be positive, got {float(s[j])!r} at index {j}"
            )
        if "weights" in data:
            p = _vector("weights", data["weights"])
            if p.shape != s.shape:
                raise ConfigError(
                    f"data.weights has {p.size} entries but data.eigenvalues has {s.size}"
                )
            p = _fractions("weights", p, strict=True)
        else:
            p = np.full(s.shape, 1.0 / s.size)
        tau = None
        dimension = None
    else:
        dimension = None
        if not isinstance(law, str) or law not in LAWS:
            raise ConfigError(f"data.law must be one of {', '.join(map(repr, LAWS))}, got {law!r}")
        for key in ("eigenvalues", "weights"):
            if key in data:
                raise ConfigError(f"data.{key} cannot be given together with data.law")
        extra = sorted(set(data) - {"law", "bins", "teacher_weights", "scale"} - LAW_KEYS[law])
        if extra:
            raise ConfigError(f"data.{extra[0]} is not a parameter of data.law = {law!r}")
        if "bins" not in data:
            raise ConfigError(f"data.bins is required with data.law = {law!r}")
        bins = data["bins"]
        if isinstance(bins, bool) or not isinstance(bins, numbers.Integral) or bins < 1:
            raise ConfigError(f"data.bins must be a positive integer, got {bins!r}")
        if bins > MAX_BINS:
            raise ConfigError(f"data.bins must be at most {MAX_BINS}, got {bins!r}")
        bins = int(bins)
        scale = _number("scale", data.get("scale", 1.0))
        s, p, tau = _law(law, bins, data)
        s = s * (scale / float(p @ s))
        if law == "power_law":
            dimension = _dimension(data, bins)
    if "teacher_weights" in data:
        if law == "power_law" and "source" in data:
            raise ConfigError("data.teacher_weights cannot be given together with data.source")
        t = _vector("teacher_weights", data["teacher_weights"])
        if t.shape != s.shape:
            raise ConfigError(
                f"data.teacher_weights has {t.size} entries but the spectrum has {s.size} bins"
            )
        tau = _fractions("teacher_weights", t, strict=False)
    if tau is None:
        tau = p.copy()
    return Spectrum(
        eigenvalues=s, weights=p, teacher_weights=tau, spec=dict(data), dimension=dimension
    )


def _law(law: str, bins: int, data: dict):
    if law == "power_law":
        a = _number("exponent", data.get("exponent", 1.0), positive=False)
        if a < 0:
            raise ConfigError(f"data.exponent must be non-negative, got {a!r}")
        b = None
        if "source" in data:
            b = _number("source", data["source"], positive=False)
            if b < 0:
                raise ConfigError(f"data.source must be non-negative, got {b!r}")
        d = _dimension(data, bins)
        if d != bins:
            return power_law_bins(a, d, bins, source=b)
        j = np.arange(1, bins + 1, dtype=np.float64)
        s = j**-a
        p = np.full(bins, 1.0 / bins)
        tau = None
        if b is not None:
            t = j**-b
            tau = t / t.sum()
        return s, p, tau
    if law == "two_point":
        kappa = _number("condition", data.get("condition", 10.0))
        if kappa < 1:
            raise ConfigError(f"data.condition must be at least 1, got {kappa!r}")
        f = _number("fraction", data.get("fraction", 0.5))
        if not 0 < f < 1:
            raise ConfigError(f"data.fraction must be in (0, 1), got {f!r}")
        if bins != 2:
            raise ConfigError(f"data.bins must be 2 for data.law = 'two_point', got {bins!r}")
        return np.array([kappa, 1.0]), np.array([f, 1.0 - f]), None
    # Marchenko--Pastur with ratio gamma in (0, 1]: support [(1 - sqrt g)^2, (1 + sqrt g)^2]
    g = _number("ratio", data.get("ratio", 0.5))
    if not 0 < g <= 1:
        raise ConfigError(f"data.ratio must be in (0, 1], got {g!r}")
    return (*marchenko_pastur_bins(g, bins), None)


def _dimension(data: dict, bins: int) -> int:
    """``data.dimension`` (default ``bins``), validated: an integer ``>= bins``."""
    if "dimension" not in data:
        return bins
    d = data["dimension"]
    if isinstance(d, bool) or not isinstance(d, numbers.Integral):
        hint = ""
        if isinstance(d, float) and math.isfinite(d) and d.is_integer():
            hint = f" (write it as an integer: {int(d)})"
        raise ConfigError(f"data.dimension must be a positive integer, got {d!r}{hint}")
    if d < 1:
        raise ConfigError(f"data.dimension must be a positive integer, got {d!r}")
    if d < bins:
        raise ConfigError(
            f"data.dimension must be at least data.bins = {bins} (each bin holds at least one "
            f"direction), got {d!r}"
        )
    if d > MAX_DIMENSION:
        raise ConfigError(f"data.dimension must be at most {MAX_DIMENSION}, got {d!r}")
    return int(d)


def group_edges(dimension: int, bins: int) -> np.ndarray:
    r"""Edges ``0 = E_0 < E_1 < ... < E_B = d`` of ``bins`` groups of the directions
    ``j = 1..d`` (group ``b`` holds ``E_{b-1} < j <= E_b``).

    The first ``k0`` directions get a bin each; the rest are cut into ``B - k0`` groups at the
    geometric points ``k0 (d / k0)^{(b - k0)/(B - k0)}`` (rounded, at least one direction per
    group). ``k0`` is the largest ``k`` whose geometric ratio ``(d/k)^{1/(B-k)}`` does not exceed
    ``1 + 1/k``, the ratio of neighbouring singletons: the grid is as fine in ``log j`` where the
    groups start as the singletons are where they end. ``bins == dimension`` gives one direction
    per bin."""
    d, B = int(dimension), int(bins)
    if not 1 <= B <= d:
        raise ValueError(f"need 1 <= bins <= dimension, got bins={B}, dimension={d}")
    if B == d:
        return np.arange(d + 1, dtype=np.int64)
    k = np.arange(1, B, dtype=np.float64)
    ok = np.log(d / k) / (B - k) <= np.log1p(1.0 / k)
    k0 = int(k[ok].max()) if ok.any() else 0
    base = max(k0, 1)
    b = np.arange(k0 + 1, B + 1, dtype=np.float64)
    target = np.rint(base * np.exp((b - k0) / (B - k0) * math.log(d / base))).astype(np.int64)
    target[-1] = d
    # at least one direction per group (E_b >= E_{b-1} + 1) and room for the groups after it
    # (E_b <= d - (B - b)): with f_b = E_b - b both are a running maximum and a cap
    idx = np.arange(k0 + 1, B + 1, dtype=np.int64)
    f = np.maximum.accumulate(np.maximum(target - idx, 0))
    f = np.minimum(f, d - B)
    edges = np.empty(B + 1, dtype=np.int64)
    edges[: k0 + 1] = np.arange(k0 + 1)
    edges[k0 + 1 :] = idx + f
    return edges


def power_sums(a: float, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    r"""``sum_{j=lo}^{hi} j^{-a}`` for each pair of integer arrays ``lo <= hi`` (contiguous,
    increasing groups ``lo[i+1] = hi[i] + 1``): term by term up to ``j = 2^20``, beyond by the
    Euler--Maclaurin formula ``int_m^n f + (f(m) + f(n))/2 + [f^{(1)}]_m^n / 12 - [f^{(3)}]_m^n / 720``,
    whose remainder is below ``a^5 m^{-a-5} / 10^4`` -- at ``m > 2^20`` far below rounding."""
    lo = np.asarray(lo, np.int64)
    hi = np.asarray(hi, np.int64)
    out = np.zeros(lo.shape, np.float64)
    near = lo <= _DIRECT
    if near.any():
        top = int(min(hi[near].max(), _DIRECT))
        f = np.arange(1, top + 1, dtype=np.float64) ** -a
        out[near] = np.add.reduceat(f, lo[near] - 1)
    far = hi > _DIRECT
    if far.any():
        m = np.maximum(lo[far], _DIRECT + 1).astype(np.float64)
        n = hi[far].astype(np.float64)
        c = 1.0 - a
        L = np.log1p((n - m) / m)
        integral = m**c * (np.expm1(c * L) / c if c != 0.0 else L)
        d1 = -a * (n ** (-a - 1) - m ** (-a - 1))
        d3 = -a * (a + 1) * (a + 2) * (n ** (-a - 3) - m ** (-a - 3))
        out[far] += integral + 0.5 * (m**-a + n**-a) + d1 / 12 - d3 / 720
    return out


def power_law_bins(
    exponent: float, dimension: int, bins: int, *, source: float | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    r"""The power law ``s_j = j^{-exponent}`` on ``d = dimension`` directions in ``bins`` bins
    (:func:`group_edges`): ``(s_b, p_b, tau_b)`` with ``p_b = n_b / d`` (``n_b`` directions),
    ``s_b`` the group's mean eigenvalue (so ``n_b s_b = sum_{j in b} s_j``: every group's
    trace is exact) and ``tau_b = sum_{j in b} j^{-source} / sum_{j <= d} j^{-source}`` (every
    group's teacher mass is exact; ``None`` without a source: the random teacher
    ``tau = p``). Not yet normalised (:func:`spectrum_from_config` scales to the mean)."""
    edges = group_edges(dimension, bins)
    lo, hi = edges[:-1] + 1, edges[1:]
    n = (hi - lo + 1).astype(np.float64)
    s = power_sums(exponent, lo, hi) / n
    p = n / float(dimension)
    tau = None
    if source is not None:
        t = power_sums(source, lo, hi)
        tau = t / t.sum()
    return s, p, tau


def marchenko_pastur_bins(gamma: float, bins: int) -> tuple[np.ndarray, np.ndarray]:
    r"""``bins`` equal-weight bins of the Marchenko--Pastur law of ratio ``gamma`` (mean 1): each
    eigenvalue is the mean of the law over its quantile interval, so the mean is exact. The
    density ``sqrt((b - x)(x - a)) / (2 pi gamma x)`` is integrated in ``x = c - r cos(theta)``,
    which removes the square-root edges and makes the integrand a smooth periodic function of
    ``theta``: the midpoint rule on ``max(4096, 64 bins)`` points is then spectrally accurate."""
    a, b = (1 - math.sqrt(gamma)) ** 2, (1 + math.sqrt(gamma)) ** 2
    c, r = (a + b) / 2, (b - a) / 2
    n = max(4096, 64 * bins)
    theta = (np.arange(n) + 0.5) * math.pi / n
    wt = np.full(n, math.pi / n)
    x = c - r * np.cos(theta)
    # dx = r sin(theta) dtheta; density * dx = r^2 sin^2(theta) / (2 pi gamma x) dtheta
    mass = wt * r * r * np.sin(theta) ** 2 / (2 * math.pi * gamma * x)
    mass = mass / mass.sum()
    cdf = np.cumsum(mass)
    edges = np.searchsorted(cdf, np.arange(1, bins) / bins)
    s = np.empty(bins)
    for k, (lo, hi) in enumerate(zip(np.r_[0, edges], np.r_[edges, n], strict=True)):
        m = mass[lo:hi]
        s[k] = (m @ x[lo:hi]) / m.sum() if m.sum() > 0 else x[min(lo, n - 1)]
    return s, np.full(bins, 1.0 / bins)


def spread_overlaps(spectrum: Spectrum, Q, R, T) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""Per-bin overlaps of student and teacher vectors with plain overlaps ``Q, R, T`` whose
    squared norms spread over the bins as ``weights`` (student) and ``teacher_weights``
    (teacher): the student is ``w = alpha w* + w_perp`` with ``alpha = R T^+``, its
    teacher-aligned part following the teacher's spread and ``w_perp`` (overlaps
    ``Q - alpha T alpha^T``, positive semi-definite) the weights:

    ``T_b = tau_b T``, ``R_b = tau_b R``, ``Q_b = tau_b alpha T alpha^T + p_b (Q - alpha T alpha^T)``.

    Every bin's joint overlap matrix is then positive semi-definite and the sums over bins are
    ``Q, R, T``."""
    Q, R, T = (np.asarray(a, np.float64) for a in (Q, R, T))
    p, tau = spectrum.weights, spectrum.teacher_weights
    alpha = R @ np.linalg.pinv(T)
    aligned = alpha @ T @ alpha.T
    perp = Q - aligned
    Qb = tau[:, None, None] * aligned + p[:, None, None] * perp
    Rb = tau[:, None, None] * R
    Tb = tau[:, None, None] * T
    return Qb, Rb, Tb


def field_covariances(spectrum: Spectrum, Qb, Rb, Tb):
    """``sum_b s_b X_b`` (NumPy) of per-bin overlaps with a leading bin axis (after any others:
    ``X_b`` of shape ``(..., B, a, b)``)."""
    s = spectrum.eigenvalues
    return tuple(np.einsum("b,...bij->...ij", s, np.asarray(X)) for X in (Qb, Rb, Tb))
