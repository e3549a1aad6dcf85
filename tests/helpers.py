"""Shared test utilities."""

from __future__ import annotations

import numpy as np


def random_covariance(rng: np.random.Generator, n: int, *, scale: float = 1.0) -> np.ndarray:
    """A random positive-definite covariance with variances of order ``scale``."""
    A = rng.standard_normal((n, n + 2))
    C = A @ A.T / (n + 2) * scale
    return (C + C.T) / 2


def monte_carlo(funcs, C, *, n_samples: int, rng: np.random.Generator):
    """Mean and standard error of prod_s funcs[s](z_s), z ~ N(0, C)."""
    z = rng.multivariate_normal(np.zeros(len(C)), C, size=n_samples, method="cholesky")
    vals = np.ones(n_samples)
    for s, f in enumerate(funcs):
        vals = vals * f(z[:, s])
    return vals.mean(), vals.std(ddof=1) / np.sqrt(n_samples)


def rel_err(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))
