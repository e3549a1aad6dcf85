r"""The exact expected-SGD recursion of least squares on a spectrum at finite ``N``
(docs/exact-recursion.md).

Model (the committee's linear ``K = M = 1`` model with a ``[data]`` spectrum, square loss,
``v = v* = 1``): ``x ~ N(0, diag(s_1..s_N))``, student ``yhat = w.x/sqrt(N)``, label
``y = w*.x/sqrt(N) + sigma zeta``. One step averages ``B`` fresh samples,

``g = (eta/sqrt N) (1/B) sum_b (yhat_b - y_b) x_b``,  ``u <- beta u - g``,  ``w <- w + u``

(``beta = 0``: plain SGD), time ``t = steps/N``. With ``e = w - w*``, ``c = eta/N`` and
``A = (1/B) sum_b x_b x_b^T`` the step is ``u' = beta u - c A e + xi``, ``e' = e + u'`` with
``xi = (eta sigma / (sqrt(N) B)) sum_b zeta_b x_b``. The Gaussian fourth moments
``E[x_i^2 (x.e)^2] = s_i sum_j s_j e_j^2 + 2 s_i^2 e_i^2`` give

``E[(A e)_i^2] = s_i^2 (1 + 1/B) e_i^2 + (1/B) s_i sum_j s_j e_j^2``, ``E[(A e)_i] = s_i e_i``,

so the second moments ``d_i = E e_i^2``, ``x_i = E e_i u_i``, ``m_i = E u_i^2`` close per
direction (``a = c s_i``, ``q = c^2 s_i^2 (1 + 1/B)``, ``F_i = (c^2/B) s_i (sum_j s_j d_j +
N sigma^2)``):

``m' = q d - 2 beta a x + beta^2 m + F``,
``x' = (q - a) d + beta (1 - 2a) x + beta^2 m + F``,
``d' = (1 - 2a + q) d + 2 beta (1 - a) x + beta^2 m + F``

(plain SGD: ``d' = d (1 - 2a + q) + F``), and the first moments ``E w*_i e_i``,
``E w*_i u_i`` follow ``(1 - a, beta; -a, beta)``. Summed over the ``n_b = N p_b`` directions
of a bin (which share ``s_b``) and divided by ``N``, the per-bin state ``D_b``, ``X_b``, ``U_b``
obeys the same map with the forcing ``f_b phi``, ``f_b = eta^2 p_b s_b / (N B)`` and
``phi = sum_b s_b D_b + sigma^2``: the recursion is exact for those counts. The risk is
``(1/2) sum_b s_b D_b``; the per-bin overlaps are ``R_b = T_b + G_b`` and
``Q_b = T_b + 2 G_b + D_b`` (``G_b = sum_{i in b} w*_i E e_i / N``).

Two methods:

* ``"exact"``: the recursion step by step (cost ``steps x bins``);
* ``"log"``: blocks of ``k = 2^l`` steps, ``k <= max(1, resolution * n)`` at step ``n`` (so the
  number of blocks grows like ``log(steps) / resolution``), landing exactly on the save steps
  and the edges of a learning-rate schedule. Within a block the homogeneous part is applied
  exactly (``M^k``) and the forcing ``phi`` is taken linear in the step between its values at
  the two ends, ``sum_j M^{k-1-j} f phi_j = S0 phi_0 + (S1/k)(phi_k - phi_0)`` with
  ``S0 = sum_j M^{k-1-j} f``, ``S1 = sum_j j M^{k-1-j} f``; ``phi_k`` is linear in itself and
  solved for (one division: an implicit trapezoid-like rule, second order in ``k/n``). ``M^k``,
  ``S0``, ``S1`` for ``k = 2^l`` come from a table built by doubling
  (``M^{2h} = (M^h)^2``, ``S0_{2h} = M^h S0_h + S0_h``, ``S1_{2h} = M^h S1_h + S1_h + h S0_h``):
  sums of positive terms for plain SGD, no eigendecomposition, no cancellation for
  ``1 - a -> 0``. The table costs ``levels x bins x (m^2 + 2m + m_1^2)`` floats (``m = 1`` plain,
  ``3`` with momentum; ``m_1 = 1, 2``).

Divergence: a step (block) after which the risk is not finite or exceeds
``divergence_bound * max(risk(0), (1/2) sum_b s_b T_b, sigma^2/2)``, or (``"log"``) whose implicit
solve has a non-positive denominator, stops the run with status ``"diverged at t=..."``; the
rows saved before stay, no NaN is returned. :attr:`ExpectedSGD.stable` reports the linear
stability condition checked before the run (every bin's map contracting and the noise kernel's
mass ``kappa = sum_b s_b [(I - M_b)^{-1} f_b]_D < 1``).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from hildlimits._errors import ConfigError

METHODS = ("log", "exact")
MAX_EXACT_STEPS = 10**9
"""Largest number of steps ``method="exact"`` accepts (beyond: ``method="log"``)."""
_BIG = np.iinfo(np.int64).max // 4


@dataclass(frozen=True, eq=False)
class ExpectedSGD:
    """Exact expected dynamics of SGD on least squares at finite ``N`` (immutable; arrays are
    read-only).

    Attributes:
        t: save times ``steps / N`` reached, shape ``(n,)`` (requested times rounded to whole
            steps, duplicates merged).
        steps: the step counts of ``t``.
        risk: ``(1/2) E[(yhat - f*)^2] = (1/2) sum_b s_b D_b``, ``(n,)``.
        Q, R: field covariances ``sum_b s_b Q_b``, ``sum_b s_b R_b``, ``(n,)``; T: ``sum_b s_b T_b``.
        Q_bins, R_bins: per-bin overlaps ``sum_{i in b} E w_i^2 / N``, ``sum_{i in b} w*_i E w_i
            / N``, ``(n, B)`` (``None`` with ``save_bins=False``); T_bins: ``(B,)``.
        D_bins: per-bin ``sum_{i in b} E e_i^2 / N`` (``e = w - w*``), ``(n, B)`` or ``None``.
        velocity: with momentum, ``{"eu": X_b, "uu": U_b}`` (``sum E e_i u_i / N``,
            ``sum E u_i^2 / N``), each ``(n, B)``; else empty.
        status: :class:`~hildlimits.RunStatus` (``"ok"`` or ``"diverged at t=..."``).
        t_stop: the time the run stopped (the last save time, or the divergence time).
        N, counts: the dimension and the directions per bin.
        eigenvalues: ``s_b``.
        method: ``"exact"`` or ``"log"``; num_blocks: recursion applications (steps or blocks).
        stable: the linear stability condition holds (module docstring); kappa: the largest
            noise-kernel mass over the learning rates used (stability needs ``kappa < 1``).
    """

    t: np.ndarray
    steps: np.ndarray
    risk: np.ndarray
    Q: np.ndarray
    R: np.ndarray
    T: float
    Q_bins: np.ndarray | None
    R_bins: np.ndarray | None
    T_bins: np.ndarray
    D_bins: np.ndarray | None
    status: object
    t_stop: float
    N: int
    counts: np.ndarray
    eigenvalues: np.ndarray
    method: str
    num_blocks: int
    stable: bool
    kappa: float
    velocity: dict = field(default_factory=dict)

    @property
    def diverged(self) -> bool:
        return self.status.diverged


# ----------------------------------------------------------------------------- validation


def _int(name: str, value, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        kind = "positive integer" if minimum == 1 else f"integer >= {minimum}"
        raise ConfigError(f"{name} must be a {kind}, got {value!r}")
    return int(value)


def _real(name: str, value, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    if positive and value <= 0:
        raise ConfigError(f"{name} must be positive, got {value!r}")
    if value < 0:
        raise ConfigError(f"{name} must be non-negative, got {value!r}")
    return float(value)


def _isotropic():
    from hildlimits._pipeline.spectrum import Spectrum

    one = np.ones(1)
    return Spectrum(eigenvalues=one, weights=one.copy(), teacher_weights=one.copy(), spec={})


def _initial_bins(spectrum, init, bins):
    """Per-bin ``(Q_b, R_b, T_b)``, shape ``(B,)`` each."""
    B = spectrum.bins
    if bins is not None:
        try:
            out = tuple(np.asarray(x, np.float64).reshape(B) for x in bins)
        except (ValueError, TypeError):
            raise ConfigError(
                f"bins must be three arrays (Q_b, R_b, T_b) of {B} entries (shape (B,) or "
                f"(B, 1, 1)), got {bins!r}"
            ) from None
        if len(out) != 3 or not all(np.isfinite(x).all() for x in out):
            raise ConfigError("bins must be three finite arrays (Q_b, R_b, T_b)")
        return out
    from hildlimits._pipeline.spectrum import spread_overlaps

    if init is None:
        Q, R, T = [[0.0]], [[0.0]], [[1.0]]
    else:
        Q, R, T = init.Q, init.R, init.T
        if np.shape(Q) != (1, 1) or np.shape(T) != (1, 1):
            raise ConfigError(
                f"init must have K = M = 1 for the recursion, got K={np.shape(Q)[0]}, "
                f"M={np.shape(T)[0]}"
            )
        for name, v in (("init.v", init.v), ("init.v_teacher", init.v_teacher)):
            if not np.allclose(np.asarray(v, float), 1.0, rtol=0, atol=1e-15):
                raise ConfigError(
                    f"{name} must be 1 for the discrete-time recursion, got "
                    f"{np.asarray(v).tolist()!r}"
                )
    Qb, Rb, Tb = spread_overlaps(spectrum, Q, R, T)
    return Qb.reshape(B), Rb.reshape(B), Tb.reshape(B)


def _schedule_steps(lr_schedule, lr, N: int):
    """Learning rates ``(V,)`` and the step at which each later value starts ``(V-1,)``: step
    ``k`` (from ``k`` to ``k + 1``) uses the value at ``t = k/N``."""
    if lr_schedule is None:
        return np.array([lr]), np.zeros(0, np.int64)
    edges = np.asarray(lr_schedule.edges, np.float64)
    values = np.asarray(lr_schedule.values, np.float64)
    return values, np.maximum(np.ceil(edges * N - 1e-9), 0).astype(np.int64)


# ----------------------------------------------------------------------------- the maps


def step_maps(s, p, *, eta, N: int, batch_size: int, momentum: float):
    r"""The per-bin map of one step (NumPy, float64): ``M`` ``(B, m, m)`` on the second moments
    (``m = 1``: ``D``; ``m = 3``: ``(D, X, U)``), the forcing ``f`` ``(B, m)`` multiplying
    ``phi = sum_b s_b D_b + sigma^2``, and the first-moment map ``P1`` ``(B, m1, m1)``."""
    s = np.asarray(s, np.float64)
    a = eta * s / N
    q = a * a * (1.0 + 1.0 / batch_size)
    f = eta**2 * np.asarray(p, np.float64) * s / (N * batch_size)
    B = s.shape[0]
    beta = momentum
    if beta == 0.0:
        M = (1.0 - 2.0 * a + q).reshape(B, 1, 1)
        P1 = (1.0 - a).reshape(B, 1, 1)
        return M, f.reshape(B, 1), P1
    b2 = np.full(B, beta * beta)
    M = np.stack(
        [
            np.stack([1.0 - 2.0 * a + q, 2.0 * beta * (1.0 - a), b2], -1),
            np.stack([q - a, beta * (1.0 - 2.0 * a), b2], -1),
            np.stack([q, -2.0 * beta * a, b2], -1),
        ],
        -2,
    )
    P1 = np.stack(
        [np.stack([1.0 - a, np.full(B, beta)], -1), np.stack([-a, np.full(B, beta)], -1)], -2
    )
    return M, np.repeat(f[:, None], 3, axis=1), P1


def _stability(M, f, s, eta) -> tuple[bool, float]:
    """Every bin's map contracting and the noise-kernel mass ``kappa`` (at ``z = 1``)."""
    if eta == 0.0:
        return True, 0.0
    m = M.shape[-1]
    rho = np.abs(np.linalg.eigvals(M)).max(axis=-1) if m > 1 else np.abs(M[:, 0, 0])
    if np.any(rho >= 1.0):
        return False, math.inf
    resp = np.linalg.solve(np.eye(m) - M, f[..., None])[..., 0, 0]
    kappa = float(s @ resp)
    return bool(kappa < 1.0), kappa


# ----------------------------------------------------------------------------- JAX kernels


def _mv(P, z):
    """``P @ z`` over a leading bin axis, written out (``m <= 3``) so that XLA fuses it."""
    return jnp.sum(P * z[..., None, :], axis=-1)


def _mm(P, R):
    return jnp.sum(P[..., :, :, None] * R[..., None, :, :], axis=-2)


@partial(jax.jit, static_argnames=("levels",))
def _tables(M, f, P1, *, levels: int):
    """``(M^k, S0, S1, P1^k)`` for ``k = 2^l``, ``l < levels``: arrays ``(levels, V, B, ...)``."""

    def body(c, _):
        P, S0, S1, Q1, h = c
        nxt = (_mm(P, P), _mv(P, S0) + S0, _mv(P, S1) + S1 + h * S0, _mm(Q1, Q1), 2.0 * h)
        return nxt, (P, S0, S1, Q1)

    init = (M, f, jnp.zeros_like(f), P1, jnp.asarray(1.0, M.dtype))
    _, tabs = jax.lax.scan(body, init, None, length=levels)
    return tabs


def _floor_log2(x):
    return 63 - jax.lax.clz(x)


def _series_h(y):
    """``y - 1 + e^{-y}`` by its Taylor series (relative error < 1e-16 for ``|y| < 0.05``)."""
    c = (1.0 / 40320, -1.0 / 5040, 1.0 / 720, -1.0 / 120, 1.0 / 24, -1.0 / 6, 0.5)
    acc = c[0]
    for coef in c[1:]:
        acc = coef + y * acc
    return y * y * acc


def _h(y, em1=None):
    """``h(y) = y - 1 + e^{-y}`` without cancellation (the series for ``|y| < 0.05``);
    ``em1 = expm1(-y)`` if already computed."""
    small = jnp.abs(y) < 0.05
    em1 = jnp.expm1(-y) if em1 is None else em1
    return jnp.where(small, _series_h(jnp.where(small, y, 0.0)), y + em1)


def _closed_form(M, f, P1):
    """Per-value, per-bin constants of the closed form of plain SGD (``m = 1``): ``x = -log a``,
    ``1 - a``, ``h(x)``, ``f``, ``log|1 - c s|`` and whether ``1 - c s < 0``."""
    a = M[..., 0, 0]
    oma = 1.0 - a
    x = -jnp.log(a)
    b = P1[..., 0, 0]
    return (x, oma, _h(x), f[..., 0], jnp.log(jnp.abs(b)), b < 0)


def _closed_block(consts, k, v):
    """``(a^k, S0, S1, (1 - c s)^k)`` of plain SGD for any block length ``k`` (exact sums
    ``S0 = f (1 - a^k)/(1 - a)``, ``S1 = f (h(k x) - k h(x)) / (1 - a)^2``, ``x = -log a``;
    ``a = 1``: ``f k``, ``f k (k - 1)/2``)."""
    x, oma, hx, f, l1, neg = (c[v] for c in consts)
    kf = k.astype(x.dtype)
    kx = kf * x
    one = oma == 0
    den = jnp.where(one, 1.0, oma)
    em1 = jnp.expm1(-kx)  # a^k - 1 (a^k = 1 + em1: absolute error ~1e-16, harmless)
    S0 = f * jnp.where(one, kf, -em1 / den)
    S1 = f * jnp.where(one, 0.5 * kf * (kf - 1.0), (_h(kx, em1) - kf * hx) / (den * den))
    sign = jnp.where(neg & (k % 2 == 1), -1.0, 1.0)
    P1 = sign * jnp.exp(kf * l1)
    return (1.0 + em1)[:, None, None], S0[:, None], S1[:, None], P1[:, None, None]


@partial(jax.jit, static_argnames=("mode", "save_bins"))
def _run(tabs, s, sigma2, Z0, G0, save_steps, edge_steps, rho, bound, *, mode: str, save_bins):
    """Advance from step 0 through ``save_steps``; returns the saved states, steps reached, the
    divergence step (``-1``: none) and the number of blocks.

    ``mode``: ``"exact"`` (one step per block, ``tabs`` holds the one-step maps at level 0),
    ``"table"`` (blocks ``2^l`` from the doubling table ``tabs``) or ``"closed"`` (plain SGD,
    any block length, ``tabs`` the constants of :func:`_closed_form`). ``phi = sigma^2 +
    sum_b s_b D_b`` is carried, so that a block makes two passes over the bins."""
    if mode != "closed":
        P_, S0_, S1_, P1_ = tabs
        levels = P_.shape[0]
        sS0_ = jnp.einsum("b,lvb->lv", s, S0_[..., 0])
        sS1_ = jnp.einsum("b,lvb->lv", s, S1_[..., 0])
    edges = jnp.concatenate([edge_steps, jnp.array([_BIG], jnp.int64)])
    lower = jnp.concatenate([jnp.zeros(1, jnp.int64), edge_steps])

    def block(carry, target):
        Z, G, phi0, n, div, n_div, count = carry
        v = jnp.searchsorted(edge_steps, n, side="right")
        room = jnp.minimum(target, edges[v]) - n
        # log time restarts at a schedule edge (the fast directions re-equilibrate there)
        since = n - lower[v]
        kmax = jnp.maximum((rho * since.astype(s.dtype)).astype(jnp.int64), 1)
        if mode == "closed":
            k = jnp.minimum(kmax, room)
            P, S0, S1, P1 = _closed_block(tabs, k, v)
            sS0, sS1 = s @ S0[:, 0], s @ S1[:, 0]
        else:
            if mode == "table":
                lev = jnp.minimum(jnp.minimum(_floor_log2(kmax), _floor_log2(room)), levels - 1)
            else:
                lev = jnp.zeros((), jnp.int64)
            k = jnp.left_shift(jnp.ones((), jnp.int64), lev)
            P, S0, S1, P1 = P_[lev, v], S0_[lev, v], S1_[lev, v], P1_[lev, v]
            sS0, sS1 = sS0_[lev, v], sS1_[lev, v]
        PZ = _mv(P, Z)
        w = 1.0 / k.astype(s.dtype)  # the forcing is phi0 + (j/k)(phi1 - phi0) on step j
        den = 1.0 - w * sS1
        phi1 = (sigma2 + s @ PZ[:, 0] + phi0 * (sS0 - w * sS1)) / den
        risk = 0.5 * (phi1 - sigma2)
        bad = ~(den > 0) | ~jnp.isfinite(phi1) | (risk > bound)
        Znew = PZ + S0 * phi0 + (w * (phi1 - phi0)) * S1
        return (
            jnp.where(bad, Z, Znew),
            jnp.where(bad, G, _mv(P1, G)),
            jnp.where(bad, phi0, phi1),
            jnp.where(bad, n, n + k),
            bad,
            jnp.where(bad, n + k, n_div),
            count + 1,
        )

    def save(i, c):
        carry, out = c
        target = save_steps[i]
        carry = jax.lax.while_loop(
            lambda c: (c[3] < target) & ~c[4], lambda c: block(c, target), carry
        )
        Z, G, n = carry[0], carry[1], carry[3]
        row = (s @ Z[:, 0], s @ G[:, 0], n, *((Z, G) if save_bins else ()))
        # written into carried buffers (in place; stacked scan outputs were copied per save)
        out = tuple(o.at[i].set(r) for o, r in zip(out, row, strict=True))
        return carry, out

    zero = jnp.zeros((), jnp.int64)
    phi = sigma2 + s @ Z0[:, 0]
    init = (Z0, G0, phi, zero, jnp.asarray(False), zero - 1, zero)
    n_save = save_steps.shape[0]
    out = (jnp.zeros(n_save, s.dtype), jnp.zeros(n_save, s.dtype), jnp.zeros(n_save, jnp.int64))
    if save_bins:
        out = (*out, jnp.zeros((n_save, *Z0.shape), s.dtype), jnp.zeros((n_save, *G0.shape)))
    (*_, n_div, count), out = jax.lax.fori_loop(0, n_save, save, (init, out))
    return out, n_div, count


# ----------------------------------------------------------------------------- entry point


def expected_sgd(
    spectrum=None,
    *,
    N: int,
    lr: float,
    t1: float | None = None,
    ts=None,
    n_save: int = 200,
    spacing: str = "log",
    t_first: float | None = None,
    noise: float = 0.0,
    batch_size: int = 1,
    momentum: float = 0.0,
    init=None,
    bins=None,
    method: str = "log",
    resolution: float = 1.0 / 16,
    divergence_bound: float = 1e8,
    lr_schedule=None,
    save_bins: bool = True,
) -> ExpectedSGD:
    r"""Exact expected risk and overlaps of SGD (mini-batch, heavy-ball momentum) on least
    squares with Gaussian inputs of spectrum ``spectrum`` at dimension ``N`` (module docstring;
    docs/exact-recursion.md).

    Args:
        spectrum: a :class:`~hildlimits.Spectrum` (``None``: ``x ~ N(0, I)``). Bin ``b`` holds
            ``spectrum.counts(N)[b]`` directions (every bin needs at least one); the recursion is
            exact for these counts (``N`` bins of weight ``1/N``: the finite-``N`` problem).
        N: input dimension (positive integer); ``t = steps / N``.
        lr: learning rate ``eta > 0`` (step ``(eta/sqrt N) dl/dlambda x``, as the committee).
        t1, ts, n_save, spacing, t_first: save times as for :func:`hildlimits.solve` (each
            rounded to a whole number of steps).
        noise: label-noise standard deviation ``sigma >= 0``.
        batch_size: ``B >= 1`` fresh samples averaged per step.
        momentum: heavy-ball ``beta`` in ``[0, 1)`` (velocity starts at 0).
        init: initial :class:`~hildlimits.Overlaps` (``K = M = 1``, ``v = v* = 1``), spread over
            the bins by :func:`~hildlimits.spread_overlaps` (default ``Q = R = 0``, ``T = 1``).
        bins: per-bin initial overlaps ``(Q_b, R_b, T_b)`` instead (plain, not multiplied by
            ``s_b``).
        method: ``"log"`` (blocks growing with ``t``: cost ~ ``log(steps)/resolution``) or
            ``"exact"`` (step by step).
        resolution: ``"log"`` only: the largest block is ``resolution * steps so far`` (rounded
            down to a power of two); the error falls like ``resolution^2``.
        divergence_bound: stop with ``"diverged at t=..."`` when the risk exceeds this multiple
            of ``max(risk(0), (1/2) sum_b s_b T_b, sigma^2 / 2)``.
        lr_schedule: a :class:`~hildlimits.Schedule` of ``eta(t)`` (piecewise constant; ``lr`` is
            then ignored); blocks end on its edges.
        save_bins: keep the per-bin overlaps at the save times.

    Returns:
        :class:`ExpectedSGD`.

    Raises:
        ConfigError: invalid input (the message names the argument and the value).

    Example:
        >>> import hildlimits as hl
        >>> sp = hl.spectrum_from_config({"law": "power_law", "exponent": 1.5, "bins": 500})
        >>> r = hl.expected_sgd(sp, N=500, lr=1.0, t1=10.0, n_save=5, spacing="linear", noise=0.1)
        >>> r.status, r.risk.shape
        ('ok', (5,))
    """
    from hildlimits._pipeline.runner import RunStatus, Status, resolve_save_times
    from hildlimits._pipeline.spectrum import Spectrum

    N = _int("N", N)
    if lr_schedule is None:
        lr = _real("lr", lr, positive=True)
    noise = _real("noise", noise)
    batch_size = _int("batch_size", batch_size)
    momentum = _real("momentum", momentum)
    if not momentum < 1.0:
        raise ConfigError(f"momentum must be in [0, 1), got {momentum!r}")
    if method not in METHODS:
        raise ConfigError(f"method must be one of {', '.join(map(repr, METHODS))}, got {method!r}")
    resolution = _real("resolution", resolution, positive=True)
    if resolution > 1:
        raise ConfigError(f"resolution must be in (0, 1], got {resolution!r}")
    divergence_bound = _real("divergence_bound", divergence_bound, positive=True)
    if not isinstance(save_bins, bool):
        raise ConfigError(f"save_bins must be true or false, got {save_bins!r}")
    if spectrum is None:
        spectrum = _isotropic()
    elif not isinstance(spectrum, Spectrum):
        raise ConfigError(f"spectrum must be a hildlimits.Spectrum, got {type(spectrum).__name__}")
    ts = resolve_save_times(
        ts=ts,
        t1=t1,
        n_save=n_save,
        spacing=spacing,
        t_first=t_first,
        rtol=1e-10,
        atol=1e-12,
        solver="tsit5",
        max_steps=1,
        divergence_bound=divergence_bound,
        steady_state=None,
        who="expected_sgd",
    )
    steps = np.unique(np.rint(np.asarray(ts, np.float64) * N).astype(np.int64))
    if method == "exact" and steps[-1] > MAX_EXACT_STEPS:
        raise ConfigError(
            f"method='exact' would take {steps[-1]} steps (t1 * N); at most {MAX_EXACT_STEPS}: "
            "use method='log'"
        )
    counts = spectrum.counts(N)
    if np.any(counts == 0):
        b = int(np.argmax(counts == 0))
        raise ConfigError(
            f"N = {N} leaves bin {b} (weight {spectrum.weights[b]:.3g}) without a direction: the "
            f"recursion needs every bin to hold a direction (N >= 1/min weight, here "
            f"{math.ceil(1 / spectrum.weights.min())}), or fewer bins"
        )
    s = np.asarray(spectrum.eigenvalues, np.float64)
    p = counts / N
    Qb, Rb, Tb = _initial_bins(spectrum, init, bins)
    values, edge_steps = _schedule_steps(lr_schedule, lr if lr_schedule is None else 0.0, N)
    maps = [
        step_maps(s, p, eta=float(e), N=N, batch_size=batch_size, momentum=momentum) for e in values
    ]
    stab = [_stability(M, f, s, float(e)) for (M, f, _), e in zip(maps, values, strict=True)]
    stable = all(x[0] for x in stab)
    kappa = max(x[1] for x in stab)
    m = maps[0][0].shape[-1]
    D0 = Qb - 2.0 * Rb + Tb
    G0 = Rb - Tb
    Z0 = np.zeros((s.size, m))
    Z0[:, 0] = D0
    G0v = np.zeros((s.size, 2 if m == 3 else 1))
    G0v[:, 0] = G0
    risk0 = 0.5 * float(s @ D0)
    scale = max(risk0, 0.5 * float(s @ Tb), 0.5 * noise**2, 1e-300)
    with jax.enable_x64(True):
        M, f, P1 = (jnp.asarray(np.stack([mp[i] for mp in maps])) for i in range(3))
        if method == "exact":
            mode, tabs = "exact", (M[None], f[None], jnp.zeros_like(f)[None], P1[None])
        elif m == 1:
            mode, tabs = "closed", _closed_form(M, f, P1)
        else:
            top = max(1, int(resolution * steps[-1]))
            mode, tabs = "table", _tables(M, f, P1, levels=max(1, top.bit_length()))
        out, n_div, count = jax.device_get(
            _run(
                tabs,
                jnp.asarray(s),
                jnp.asarray(noise**2),
                jnp.asarray(Z0),
                jnp.asarray(G0v),
                jnp.asarray(steps),
                jnp.asarray(edge_steps),
                jnp.asarray(resolution),
                jnp.asarray(divergence_bound * scale),
                mode=mode,
                save_bins=save_bins,
            )
        )
    reached = out[2] == steps
    sD, sG, kept = out[0][reached], out[1][reached], steps[reached]
    n_div = int(n_div)
    if n_div >= 0:
        status = RunStatus.of(Status.DIVERGED, n_div / N)
        t_stop = n_div / N
    else:
        status = RunStatus.of(Status.OK)
        t_stop = float(steps[-1] / N)

    def ro(a):  # read-only, copying only what is not already a float64 array of its own
        a = np.asarray(a, np.float64)
        if a.base is not None and not isinstance(a.base, np.ndarray):
            a = a.copy()
        a.setflags(write=False)
        return a

    sT = float(Tb @ s)
    Qbins = Rbins = D = None
    velocity = {}
    if save_bins:
        Zs, Gs = out[3], out[4]
        if not reached.all():
            Zs, Gs = Zs[reached], Gs[reached]
        D, G = Zs[..., 0], Gs[..., 0]
        Rbins = G + Tb[None, :]
        Qbins = Rbins + G
        Qbins += D
        if m == 3:
            velocity = {"eu": ro(Zs[..., 1]), "uu": ro(Zs[..., 2])}
    return ExpectedSGD(
        t=ro(kept / N),
        steps=kept.copy(),
        risk=ro(0.5 * sD),
        Q=ro(sT + 2.0 * sG + sD),
        R=ro(sT + sG),
        T=sT,
        Q_bins=ro(Qbins) if save_bins else None,
        R_bins=ro(Rbins) if save_bins else None,
        T_bins=ro(Tb),
        D_bins=ro(D) if save_bins else None,
        status=status,
        t_stop=t_stop,
        N=N,
        counts=ro(counts),
        eigenvalues=ro(s),
        method=method,
        num_blocks=int(count),
        stable=stable,
        kappa=float(kappa),
        velocity=velocity,
    )
