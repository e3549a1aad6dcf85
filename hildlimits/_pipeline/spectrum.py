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
    law = "power_law"            # s_j ∝ j^-exponent on bins = d directions of weight 1/d
    law = "two_point"            # condition = s_max/s_min, fraction = weight of s_max
    law = "marchenko_pastur"     # ratio = gamma in (0, 1]; bins of equal weight (bin means)
    bins = 100                   # number of bins of a law
    source = 1.0                 # power law: tau_j ∝ j^-source (teacher), default: weights
    scale = 1.0                  # laws: mean eigenvalue (default 1)

Named laws are normalised to the mean eigenvalue ``scale`` (1 by default: the isotropic scale);
explicit eigenvalues are taken as given (no renormalisation).
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
}
LAWS = ("power_law", "two_point", "marchenko_pastur")
LAW_KEYS = {
    "power_law": {"exponent", "source"},
    "two_point": {"condition", "fraction"},
    "marchenko_pastur": {"ratio"},
}
MAX_BINS = 10_000_000


@dataclass(frozen=True, eq=False)
class Spectrum:
    """Bins of an input covariance: ``eigenvalues`` ``s_b``, ``weights`` ``p_b`` (fractions of
    the directions), ``teacher_weights`` ``tau_b`` (fractions of the teacher's squared norm);
    ``spec`` is the ``[data]`` table it came from (for ``meta`` in outputs)."""

    eigenvalues: np.ndarray
    weights: np.ndarray
    teacher_weights: np.ndarray
    spec: dict

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
    else:
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
    return Spectrum(eigenvalues=s, weights=p, teacher_weights=tau, spec=dict(data))


def _law(law: str, bins: int, data: dict):
    if law == "power_law":
        a = _number("exponent", data.get("exponent", 1.0), positive=False)
        if a < 0:
            raise ConfigError(f"data.exponent must be non-negative, got {a!r}")
        j = np.arange(1, bins + 1, dtype=np.float64)
        s = j**-a
        p = np.full(bins, 1.0 / bins)
        tau = None
        if "source" in data:
            b = _number("source", data["source"], positive=False)
            if b < 0:
                raise ConfigError(f"data.source must be non-negative, got {b!r}")
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
