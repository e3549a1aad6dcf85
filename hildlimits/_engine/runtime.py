"""Run-time support for generated vector fields: index grids over units.

A template term such as ``sum_{j,l} v_i v_k v_j v_l E[g'(l_i) g'(l_k) g(l_j) g(l_l)]`` is evaluated
on a broadcast grid with one axis per unit index, so the same generated code serves every ``K`` and
``M``. A pair of indices under which the term is symmetric shares one axis that enumerates
``a <= b`` only (with weight 2 off the diagonal for summed pairs, mirrored for free pairs).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def overlap_matrix(Q, R, T):
    """Covariance of the local fields ``(lambda_1..lambda_K, nu_1..nu_M)``: ``[[Q, R], [R^T, T]]``."""
    return jnp.block([[Q, R], [R.T, T]])


class Grid:
    """Broadcast index grid of one term.

    Args:
        K, M: numbers of student and teacher units (static).
        free: ``(name, kind)`` of the output indices, in output order; kind ``"S"`` or ``"T"``.
        dummies: ``(name, kind)`` of the summed indices.
        pairs: pairs of names (both free or both summed, same kind) enumerated as ``a <= b``.
    """

    def __init__(
        self,
        K: int,
        M: int,
        free: Sequence[tuple[str, str]],
        dummies: Sequence[tuple[str, str]],
        pairs: Sequence[tuple[str, str]] = (),
    ):
        size = {"S": K, "T": M}
        offset = {"S": 0, "T": K}
        kinds = dict(free) | dict(dummies)
        partner = {a: b for a, b in pairs}
        second = {b for _, b in pairs}
        order = [name for name, _ in free] + [name for name, _ in dummies]
        axes: list[tuple[str, ...]] = [
            (name, partner[name]) if name in partner else (name,)
            for name in order
            if name not in second
        ]
        self.ndim = len(axes)
        self.kind = kinds
        self.offset = {name: offset[kinds[name]] for name in order}
        self.idx: dict[str, np.ndarray] = {}
        self.shape: list[int] = []
        self.axis: dict[str, int] = {}
        self._weights: list[tuple[int, np.ndarray]] = []
        for ax, names in enumerate(axes):
            n = size[kinds[names[0]]]
            if len(names) == 2:
                a, b = np.triu_indices(n)
                arrays = {names[0]: a, names[1]: b}
                if names[0] not in dict(free):
                    self._weights.append((ax, np.where(a == b, 1.0, 2.0)))
            else:
                arrays = {names[0]: np.arange(n)}
            length = len(next(iter(arrays.values())))
            for name, arr in arrays.items():
                shape = [1] * self.ndim
                shape[ax] = length
                self.idx[name] = arr.reshape(shape)
                self.axis[name] = ax
            self.shape.append(length)
        self.paired = {name for pair in pairs for name in pair}
        self.free = [name for name, _ in free]
        self.free_pair = next(((a, b) for a, b in pairs if a in self.free), None)
        self.free_size = [size[kinds[name]] for name in self.free]
        self.dummy_axes = tuple(sorted({self.axis[name] for name, _ in dummies}))

    def _place(self, block, a: str, b: str):
        """Put a ``(n_a, n_b)`` block (``a``, ``b`` on unpaired axes) onto the grid."""
        shape = [1] * self.ndim
        if a == b:
            shape[self.axis[a]] = self.shape[self.axis[a]]
            return jnp.diagonal(block).reshape(shape)
        shape[self.axis[a]] = block.shape[0]
        shape[self.axis[b]] = block.shape[1]
        if self.axis[a] > self.axis[b]:
            block = block.T
        return block.reshape(shape)

    def cov(self, omega, a: str, b: str):
        """Covariance of the fields of indices ``a`` and ``b`` on the grid."""
        if a not in self.paired and b not in self.paired:
            # static slices instead of gathers (much cheaper, notably under vmap)
            oa, ob = self.offset[a], self.offset[b]
            na, nb = self.shape[self.axis[a]], self.shape[self.axis[b]]
            return self._place(omega[oa : oa + na, ob : ob + nb], a, b)
        return omega[self.offset[a] + self.idx[a], self.offset[b] + self.idx[b]]

    def param(self, array, *names: str):
        """``array[names...]`` on the grid (e.g. ``v_j`` or ``Q_ik``)."""
        if not any(n in self.paired for n in names):
            if len(names) == 1:
                shape = [1] * self.ndim
                shape[self.axis[names[0]]] = array.shape[0]
                return array.reshape(shape)
            if len(names) == 2:
                return self._place(array, *names)
        return array[tuple(self.idx[name] for name in names)]

    def by_pattern(self, omega, labels: Sequence[str], variants: dict):
        """Evaluate an expectation whose slots carry unit indices ``labels`` with the variant that
        matches, at each grid point, the pattern of coinciding same-kind units.

        ``variants`` maps a partition of the slots (each slot labelled by the first slot of its
        group) to ``f(cov, unique)``: ``cov(a, b)`` gives the covariance of merged slots ``a``,
        ``b``; ``unique(fn, slots, classes)`` evaluates ``fn`` (a function of the upper-triangle
        covariance entries of the fields of ``slots``, symmetric under permutations within each
        of ``classes``, positions in ``slots``) once per distinct set of fields and returns its
        value at every point (a four-point Price integral recurs under several index orders).
        """
        shape = tuple(self.shape)
        idx = [np.broadcast_to(self.idx[name], shape).ravel() for name in labels]
        kinds = [self.kind[name] for name in labels]
        r = len(labels)
        groups = np.empty((idx[0].size, r), dtype=int) if r else np.empty((1, 0), dtype=int)
        for s in range(r):
            groups[:, s] = s
            for t in range(s - 1, -1, -1):
                if kinds[t] == kinds[s]:
                    groups[:, s] = np.where(idx[t] == idx[s], groups[:, t], groups[:, s])
        out = jnp.zeros(groups.shape[0], omega.dtype)
        for pattern in np.unique(groups, axis=0):
            pts = np.nonzero((groups == pattern).all(axis=1))[0]
            reps = sorted(set(pattern.tolist()))

            def field(a, pts=pts, reps=reps):
                """Row of ``omega`` of merged slot ``a`` at each point of the pattern."""
                return self.offset[labels[reps[a]]] + idx[reps[a]][pts]

            def cov(a, b, field=field):
                return omega[field(a), field(b)]

            def unique(fn, slots, classes, field=field):
                fields = np.stack([field(a) for a in slots], axis=1)
                for same in classes:
                    fields[:, same] = np.sort(fields[:, same], axis=1)
                keys, inverse = np.unique(fields, axis=0, return_inverse=True)
                n = len(slots)
                args = [omega[keys[:, a], keys[:, b]] for a in range(n) for b in range(a, n)]
                return fn(*args)[inverse.reshape(-1)]

            out = out.at[pts].set(variants[tuple(pattern.tolist())](cov, unique))
        return out.reshape(shape)

    def delta(self, a: str, b: str):
        return (self.idx[a] == self.idx[b]).astype(float)

    def reduce(self, values):
        """Sum ``values`` over the summed indices; returns an array over the free indices."""
        values = jnp.broadcast_to(values, tuple(self.shape))
        for ax, w in self._weights:
            shape = [1] * self.ndim
            shape[ax] = len(w)
            values = values * w.reshape(shape)
        if self.dummy_axes:
            values = values.sum(axis=self.dummy_axes)
        if self.free_pair is None:
            return values.reshape(self.free_size)
        a, b = self.free_pair
        ia, ib = self.idx[a].ravel(), self.idx[b].ravel()
        n = self.free_size[0]
        out = jnp.zeros((n, n), values.dtype)
        return out.at[ia, ib].set(values).at[ib, ia].set(values)


# --------------------------------------------------------------------------- elementary functions
def _asin_taylor(n_terms: int = 26) -> tuple[float, ...]:
    """Taylor coefficients ``c_n = (2n)! / (4^n (n!)^2 (2n + 1))`` of ``asin(y) / y`` in ``y^2``,
    highest first (Horner order). On ``|y| <= 1/2`` the truncation error after 26 terms is below
    ``c_26 4^-26 / (1 - 1/4) < 1e-18``, far below float64 rounding."""
    c, out = 1.0, []
    for n in range(n_terms):
        out.append(c / (2 * n + 1))
        c *= (2 * n + 1) / (2 * n + 2)
    return tuple(reversed(out))


_ASIN_COEFFS = _asin_taylor()


@jax.custom_jvp
def asin(x):
    r"""``arcsin(clip(x, -1, 1))`` from elementwise arithmetic only (so XLA vectorises it; the
    library ``arcsin`` goes through a scalar ``atan2`` and costs ~10x more on CPU). For
    ``|x| <= 1/2`` the Taylor series in ``x^2``; above, ``\arcsin a = \pi/2 - 2\arcsin y`` with
    ``y = \sqrt{(1 - a)/2} \le 1/2``. Agrees with ``numpy.arcsin`` to a few ulp (tested). The
    derivative is the exact ``1/\sqrt{(1 - x)(1 + x)}`` (0 outside ``(-1, 1)``, as for the clip), so
    reverse mode does not trace back through the series (that doubled compile times)."""
    a = jnp.minimum(jnp.abs(x), 1.0)
    big = a > 0.5
    y = jnp.where(big, jnp.sqrt((1.0 - jnp.where(big, a, 0.0)) * 0.5), a)
    u = y * y
    p = _ASIN_COEFFS[0]
    for c in _ASIN_COEFFS[1:]:
        p = p * u + c
    r = y * p
    r = jnp.where(big, jnp.pi / 2 - 2.0 * r, r)
    return jnp.where(x < 0, -r, r)


@asin.defjvp
def _asin_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    inside = jnp.abs(x) < 1.0
    safe = jnp.where(inside, x, 0.0)
    slope = jnp.where(inside, 1.0 / jnp.sqrt((1.0 - safe) * (1.0 + safe)), 0.0)
    return asin(x), slope * dx


def _sin_cos_taylor(n_terms: int = 12) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Taylor coefficients of ``sin(p) / p`` and ``cos(p)`` in ``p^2``, highest first. On
    ``|p| <= pi/2`` the first omitted terms are ``(pi/2)^25/25! < 1e-20`` and
    ``(pi/2)^24/24! < 1e-18``."""
    fact = [float(math.factorial(k)) for k in range(2 * n_terms + 2)]
    sin = tuple((-1) ** n / fact[2 * n + 1] for n in range(n_terms))
    cos = tuple((-1) ** n / fact[2 * n] for n in range(n_terms))
    return tuple(reversed(sin)), tuple(reversed(cos))


_SIN_COEFFS, _COS_COEFFS = _sin_cos_taylor()


def sin_cos_quadrant(p):
    r"""``(sin p, cos p)`` for ``|p| <= \pi/2`` by Taylor polynomials (elementwise arithmetic
    only: XLA's ``sin`` and ``cos`` on CPU cost 15 ns per element together, this 1.4 ns; within
    4e-16 of NumPy, tested). The Price-integral nodes need them at every node of every grid
    point."""
    u = p * p
    s, c = _SIN_COEFFS[0], _COS_COEFFS[0]
    for a, b in zip(_SIN_COEFFS[1:], _COS_COEFFS[1:], strict=True):
        s, c = s * u + a, c * u + b
    return p * s, c


# --------------------------------------------------------------------------- numerical expectations
def price_nodes(cab, caa, cbb, n: int):
    r"""Nodes ``s`` and weights of ``\int_0^1 f(s) ds`` for the Price-integral term of the pair
    ``(a, b)``, shaped ``(..., n)``: ``n``-point Gauss--Legendre in ``u \in [0, 1]`` with
    ``s = \sin(\phi)/\rho_{ab}``, ``\phi = \arcsin(\rho_{ab}) (1 - (1 - u)^3)``.

    The ``\phi`` substitution absorbs the factor ``(1 - s^2\rho_{ab}^2)^{-1/2}`` of the pair's
    density (sharp when ``|\rho_{ab}| \to 1``). The cubic map clusters the nodes at ``s = 1``,
    where the conditional correlation of the other two fields varies on a scale set by the
    smallest eigenvalue of the correlation matrix (nearly aligned student and teacher units):
    a feature of width ``delta`` there becomes one of width ``delta^(1/3)``. Measured on 4x4
    covariances along a ReLU K = M = 8 trajectory (smallest eigenvalue down to 1e-3): maximum
    error 2e-8 at 12 nodes, against 1.7e-5 without the cubic map."""
    t, w = np.polynomial.legendre.leggauss(n)
    u, w = (t + 1) / 2, w / 2
    v, w = 1.0 - (1.0 - u) ** 3, w * 3.0 * (1.0 - u) ** 2
    rho = jnp.clip(jnp.abs(cab) / jnp.sqrt(caa * cbb), 0.0, 1.0)
    small = rho < 1e-6
    safe = jnp.where(small, 1.0, rho)
    phimax = asin(safe)
    sin, cos = sin_cos_quadrant(v * phimax)
    s = jnp.where(small, v, sin / safe)
    ws = jnp.where(small, w, w * phimax * cos / safe)
    return s, ws


def _tensor_rule(t, w, r: int, prune: float) -> tuple[np.ndarray, np.ndarray]:
    """``r``-fold tensor product of the one-dimensional rule ``(t, w)``: nodes ``(P, r)`` and
    weights ``(P,)``, products of weights below ``prune`` dropped; ``r = 0`` gives the one-point
    rule of no dimensions."""
    if r == 0:
        return np.zeros((1, 0)), np.ones(1)
    grids = np.meshgrid(*([t] * r), indexing="ij")
    nodes = np.stack([g.ravel() for g in grids], axis=-1)
    weights = np.prod(np.meshgrid(*([w] * r), indexing="ij"), axis=0).ravel()
    keep = weights > prune
    return nodes[keep], weights[keep]


@functools.lru_cache(maxsize=32)
def gauss_hermite_grid(n: int, r: int, prune: float = 1e-13) -> tuple[np.ndarray, np.ndarray]:
    """Tensor-product Gauss--Hermite rule for ``N(0, I_r)``: nodes ``(P, r)`` and weights ``(P,)``
    (normalised to sum 1; products of weights below ``prune`` are dropped). ``r = 0`` gives the
    one-point rule of no dimensions."""
    t, w = np.polynomial.hermite_e.hermegauss(n)
    return _tensor_rule(t, w / w.sum(), r, prune)


def trailing(entries):
    """Append a quadrature axis to each covariance entry (broadcast against the nodes)."""
    return [jnp.expand_dims(jnp.asarray(c), -1) for c in entries]


def _symmetric(entries, r: int):
    """``r x r`` nested list of the covariance given by its upper triangle (row-major)."""
    it = iter(entries)
    C = [[None] * r for _ in range(r)]
    for a in range(r):
        for b in range(a, r):
            C[a][b] = C[b][a] = next(it)
    return C


def _cholesky(C):
    """Lower Cholesky factor (nested lists) of a semi-definite covariance: a pivot below
    ``1e-12`` of its variance (coincident units) gives a zero column."""
    r = len(C)
    L = [[0.0] * r for _ in range(r)]
    for j in range(r):
        d = C[j][j] - sum(L[j][k] ** 2 for k in range(j))
        ok = d > 1e-12 * C[j][j]
        ljj = jnp.sqrt(jnp.where(ok, d, 1.0))
        L[j][j] = jnp.where(ok, ljj, 0.0)
        for i in range(j + 1, r):
            off = C[i][j] - sum(L[i][k] * L[j][k] for k in range(j))
            L[i][j] = jnp.where(ok, off / ljj, 0.0)
    return L


def gauss_hermite_fields(entries, r: int, n: int):
    """Fields ``z_s`` at the Gauss--Hermite nodes for the covariance given by its upper triangle
    ``entries`` (row-major), via a semi-definite Cholesky factorisation that tolerates the
    singular covariances of coincident units; returns ``(z, weights)``."""
    xi, w = gauss_hermite_grid(n, r)
    L = _cholesky(_symmetric(trailing(entries), r))
    z = [sum(L[s][t] * xi[:, t] for t in range(s + 1)) for s in range(r)]
    return z, w


def _gauss_rule(moment, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n``-point Gauss rule of the weight whose ``k``-th moment is ``moment(k)`` (an mpmath
    number): Golub--Welsch from the Cholesky factor of the Hankel moment matrix, in
    ``40 + 2n``-digit arithmetic (the Hankel matrix is ill conditioned), rounded to float64."""
    import mpmath

    with mpmath.workdps(40 + 2 * n):
        H = mpmath.matrix(n + 1, n + 1)
        for i in range(n + 1):
            for j in range(n + 1):
                H[i, j] = moment(i + j)
        R = mpmath.cholesky(H).T  # upper
        J = mpmath.matrix(n, n)
        for j in range(n):
            J[j, j] = R[j, j + 1] / R[j, j] - (R[j - 1, j] / R[j - 1, j - 1] if j else 0)
            if j + 1 < n:
                J[j, j + 1] = J[j + 1, j] = R[j + 1, j + 1] / R[j, j]
        nodes, vectors = mpmath.eigsy(J)
        weights = [moment(0) * vectors[0, k] ** 2 for k in range(n)]
        return np.array([float(v) for v in nodes]), np.array([float(w) for w in weights])


@functools.lru_cache(maxsize=32)
def half_range_rule(n: int) -> tuple[np.ndarray, np.ndarray]:
    r"""Gauss rule on ``u > 0`` for the weight ``\varphi(u) = e^{-u^2/2}/\sqrt{2\pi}`` (weights sum
    to 1/2); mirrored (``u -> -u``) it integrates ``E[g(u)]`` for ``g`` smooth on each side of
    ``u = 0`` with spectral accuracy, where a kink at 0 stalls Gauss--Hermite."""
    import mpmath

    return _gauss_rule(
        lambda k: (
            mpmath.mpf(2) ** ((k - 1) / mpmath.mpf(2))
            * mpmath.gamma((k + 1) / mpmath.mpf(2))
            / mpmath.sqrt(2 * mpmath.pi)
        ),
        n,
    )


@functools.lru_cache(maxsize=32)
def radial_rule(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss rule on ``r > 0`` for the weight ``r e^{-r^2/2}`` (the radial law of a standard
    two-dimensional Gaussian; weights sum to 1)."""
    import mpmath

    return _gauss_rule(
        lambda k: mpmath.mpf(2) ** (k / mpmath.mpf(2)) * mpmath.gamma(k / mpmath.mpf(2) + 1), n
    )


@functools.lru_cache(maxsize=32)
def kolmogorov_rule(n: int) -> tuple[np.ndarray, np.ndarray]:
    r"""Gauss rule for the Kolmogorov distribution (the law of the supremum of a Brownian bridge,
    density ``8k \sum_{j \ge 1} (-1)^{j-1} j^2 e^{-2 j^2 k^2}``), from its moments
    ``E[K^p] = \Gamma(p/2 + 1)\, 2^{1 - p/2} \eta(p)`` (``\eta`` the Dirichlet eta function,
    ``\eta(0) = 1/2``); weights sum to 1. It is the mixing law of the logistic distribution as a
    normal scale mixture: ``\tanh(y) = E_K[\operatorname{erf}(y/(\sqrt2 K))]``."""
    import mpmath

    def moment(p):
        p = mpmath.mpf(p)
        return mpmath.gamma(p / 2 + 1) * mpmath.mpf(2) ** (1 - p / 2) * mpmath.altzeta(p)

    return _gauss_rule(moment, n)


@functools.lru_cache(maxsize=32)
def scale_mixture_nodes(d: int, n: int, prune: float = 1e-15):
    r"""Tensor-product rule over ``d`` independent mixture variables ``\beta = 1/(\sqrt2 K)``,
    ``K`` Kolmogorov distributed (:func:`kolmogorov_rule`, ``n`` nodes each): ``(betas,
    weights)`` with ``betas`` a tuple of ``d`` arrays ``(P,)`` and weights ``(P,)`` summing to 1
    (products of weights below ``prune`` dropped)."""
    k, w = kolmogorov_rule(n)
    nodes, weights = _tensor_rule(1 / (math.sqrt(2) * k), w, d, prune)
    return tuple(nodes[:, j] for j in range(d)), weights


def kinked_gauss_fields(entries, r: int, n: int, split: tuple[int, ...], last):
    r"""Fields at the nodes of a rule that follows the kinks at 0 of one or two factors.

    The covariance (upper triangle ``entries``) is factorised in the order ``split``, the other
    slots, then ``last``. One split slot is the first Cholesky coordinate ``u_0`` (its kink is
    ``u_0 = 0``): a mirrored :func:`half_range_rule` of ``n // 2 + 2`` nodes a side. Two split
    slots give two kink lines through the origin of ``(u_0, u_1)`` at angles ``\pm\pi/2`` and
    ``\theta_c = atan2(-L_{10}, L_{11})`` (+ ``\pi``): four wedges, each with ``n // 4 + 2``
    Gauss--Legendre angles times the :func:`radial_rule` of ``n // 2 + 2`` radii (measured:
    ``n // 4 + 2`` angles gave the errors of ``n // 2 + 2`` on the reference cases). The remaining
    coordinates get ``n`` Gauss--Hermite nodes each. The ``last`` slot is not sampled: its field
    is ``\mu + \ell u`` with ``\mu`` (at the nodes) and ``\ell`` returned for the closed-form
    smoothing of its factor.

    Returns ``(z, weights, (mu, ell))``: ``z[s]`` for every slot but ``last`` (``None`` there),
    weights broadcastable against them (they depend on the covariance when wedges are used) and
    ``(None, None)`` without a ``last`` slot."""
    if len(split) not in (1, 2):
        raise ValueError(f"split must name one or two slots, got {split!r}")
    order = list(split) + [s for s in range(r) if s not in split and s != last]
    d = len(order)
    if last is not None:
        order.append(last)
    C = _symmetric(trailing(entries), r)
    L = _cholesky([[C[a][b] for b in order] for a in order])
    m = n // 2 + 2  # half-range and radial nodes
    # the rule of the split coordinates: nodes ``lead`` and weights ``wlead``, (..., Q)
    if len(split) == 2:
        rho, nu = radial_rule(m)
        tau, om = np.polynomial.legendre.leggauss(n // 4 + 2)
        tau, om = (tau + 1) / 2, om / 2
        theta_c = jnp.arctan2(-L[1][0], L[1][1])  # in [-pi/2, pi/2]: L_11 >= 0
        bounds = [-np.pi / 2, theta_c, np.pi / 2, theta_c + np.pi, 1.5 * np.pi]
        thetas, widths = [], []
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
            thetas.append(lo + (hi - lo) * tau)
            widths.append((hi - lo) * om / (2 * np.pi))
        shape = jnp.shape(theta_c)[:-1] + tau.shape
        theta = jnp.concatenate([jnp.broadcast_to(t, shape) for t in thetas], -1)
        wtheta = jnp.concatenate([jnp.broadcast_to(w, shape) for w in widths], -1)
        polar = [
            rho[:, None] * jnp.cos(theta)[..., None, :],
            rho[:, None] * jnp.sin(theta)[..., None, :],
        ]
        lead = [jnp.reshape(v, v.shape[:-2] + (-1,)) for v in polar]
        wlead = jnp.reshape(nu[:, None] * wtheta[..., None, :], wtheta.shape[:-1] + (-1,))
    else:
        y, wy = half_range_rule(m)
        lead, wlead = [np.concatenate([y, -y])], np.concatenate([wy, wy])
    # times the Gauss--Hermite rule of the other sampled coordinates
    xi, wg = gauss_hermite_grid(n, d - len(split))
    P, Q = xi.shape[0], wlead.shape[-1]
    u = [jnp.repeat(v, P, axis=-1) for v in lead] + [
        jnp.tile(xi[:, t], Q) for t in range(xi.shape[1])
    ]
    weights = jnp.repeat(wlead, P, axis=-1) * jnp.tile(wg, Q)
    z = [None] * r
    for a in range(d):
        z[order[a]] = sum(L[a][t] * u[t] for t in range(a + 1))
    if last is None:
        return z, weights, (None, None)
    mu = sum(L[d][t] * u[t] for t in range(d))
    ell = L[d][d]
    # ell -> 0 (the last field determined by the others): erf(mu/ell) -> sign, exp(-mu^2/ell^2)
    # -> 0; the floor keeps ell^2 a normal number, so mu = 0 gives 0/tiny, not 0/0
    return z, weights, (mu, jnp.maximum(ell, jnp.sqrt(jnp.finfo(jnp.result_type(ell)).tiny)))


def least_determined(values, spreads):
    """Per covariance, the value of the quadrature variant whose closed-form (kinked) field has
    the largest spread given the other fields (see :class:`hildlimits._engine.gaussian.KinkPlan`)."""
    v = jnp.stack(jnp.broadcast_arrays(*values), -1)
    s = jnp.stack(jnp.broadcast_arrays(*spreads), -1)
    k = jnp.argmax(s, axis=-1)
    return jnp.take_along_axis(v, k[..., None], -1)[..., 0]
