r"""The joint numerical backend: expectations over the joint law of all local fields and the noise.

Used where the drift does not factorise into expectations of a few fields (a loss whose
derivative is not a polynomial in ``yhat``, a label map other than the identity). With
``z = (nu_1..nu_M, lambda_1..lambda_K) ~ N(0, C)`` and ``zeta ~ N(0, 1)`` independent:

* the fields are sampled at the nodes of a rule for ``N(0, I_D)`` (``D = K + M``) mapped through a
  semi-definite Cholesky factor of ``C``: tensor Gauss--Hermite up to :data:`MAX_TENSOR_DIM`
  dimensions, a scrambled Sobol' (randomised quasi-Monte Carlo) rule beyond; where the integrand
  has kinks on hyperplanes of the fields (a ReLU's ``lambda_i = 0``, a ``sign`` label of a linear
  teacher without noise, ...), the last coordinate of a rotated factor instead takes
  Gauss--Legendre panels split where each line crosses each hyperplane (:func:`joint_moments`);
* the noise is integrated per field node, following the label's kinks: a piecewise-constant
  label (``sign``, ``Heaviside``) exactly, as a sum over its values weighted by normal
  probabilities ``Phi``; a label with kinks in its slope (``abs``, ``Max``) by Gauss--Legendre
  panels split at the kink in ``zeta``; a smooth label by Gauss--Hermite.

Accuracy is measured in ``docs/accuracy.md`` (section "Joint backend") and by
``benchmarks/joint.py``.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from hildlimits._engine.runtime import _cholesky, gauss_hermite_grid, half_range_rule

MAX_TENSOR_DIM = 4
DEFAULT_NODES = {1: 128, 2: 64, 3: 32, 4: 14}
"""Gauss--Hermite nodes per field dimension, by the number of fields ``D = K + M``."""
DEFAULT_QMC_POINTS = 1 << 15
"""Sobol' points beyond :data:`MAX_TENSOR_DIM` fields."""
NOISE_NODES = 24
"""Nodes of the noise rule (Gauss--Hermite, or Gauss--Legendre per panel)."""
NOISE_RANGE = 8.5
"""Panels cover ``|zeta| <= 8.5`` (normal mass outside: 1.9e-17)."""


def default_nodes(D: int) -> int:
    return DEFAULT_NODES.get(D, DEFAULT_QMC_POINTS)


@functools.lru_cache(maxsize=32)
def field_rule(D: int, nodes: int, split_first: bool) -> tuple[np.ndarray, np.ndarray]:
    """Nodes ``(P, D)`` and weights ``(P,)`` (sum 1) of the rule for ``N(0, I_D)``."""
    if D > MAX_TENSOR_DIM:
        from scipy.special import ndtri
        from scipy.stats import qmc

        m = max(4, int(math.ceil(math.log2(max(nodes, 16)))))
        u = qmc.Sobol(d=D, scramble=True, seed=20261201).random_base2(m)
        return ndtri(u), np.full(u.shape[0], 1.0 / u.shape[0])
    if split_first:
        h, wh = half_range_rule(nodes // 2 + 2)
        lead, wlead = np.concatenate([h, -h]), np.concatenate([wh, wh])
        xi, wg = gauss_hermite_grid(nodes, D - 1)
        P = xi.shape[0]
        u = np.concatenate([np.repeat(lead, P)[:, None], np.tile(xi, (lead.size, 1))], axis=1)
        w = np.repeat(wlead, P) * np.tile(wg, lead.size)
        keep = w > 1e-15
        return u[keep], w[keep] / w[keep].sum()
    return gauss_hermite_grid(nodes, D, 1e-15)


@functools.lru_cache(maxsize=8)
def _legendre(n: int):
    return np.polynomial.legendre.leggauss(n)


@functools.lru_cache(maxsize=8)
def _hermite(n: int):
    t, w = np.polynomial.hermite_e.hermegauss(n)
    return t, w / w.sum()


def _phi(x):
    return jnp.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


def _ndtr(x):
    return jax.scipy.special.ndtr(x)


def noise_average(fn, y0, sigma, *, mode: str, kinks: tuple, values: tuple = ()):
    r"""``E_zeta[fn(label(y0 + sigma zeta))]`` for every node, ``fn`` returning a tuple of arrays.

    ``fn(lab)`` is called with labels of shape ``(P, Z)``; returns the tuple of averages ``(P,)``.

    Modes: ``"constant"`` -- the label is piecewise constant with jumps at ``kinks`` and takes
    ``values`` on the intervals between (exact); ``"panels"`` -- Gauss--Legendre panels split at
    the kinks; ``"smooth"`` -- Gauss--Hermite.
    """
    dtype = y0.dtype
    pos = sigma > 0
    s_safe = jnp.where(pos, sigma, 1.0)

    def at(c):  # zeta where y0 + sigma zeta = c (+-inf when sigma = 0)
        inf = jnp.where(c - y0 > 0, jnp.inf, -jnp.inf)
        return jnp.where(pos, (c - y0) / s_safe, jnp.where(c == y0, 0.0, inf))

    if mode == "constant":
        cuts = [at(c) for c in kinks]
        cdf = [jnp.zeros_like(y0)] + [_ndtr(b) for b in cuts] + [jnp.ones_like(y0)]
        probs = jnp.stack([cdf[j + 1] - cdf[j] for j in range(len(values))], -1)
        labels = jnp.broadcast_to(jnp.asarray(values, dtype), probs.shape)
        outs = fn(labels)
        return tuple(jnp.sum(probs * o, -1) for o in outs)
    if mode == "panels":
        t, wt = _legendre(NOISE_NODES)
        L = NOISE_RANGE
        edges = (
            [jnp.full_like(y0, -L)]
            + [jnp.clip(jnp.nan_to_num(at(c), posinf=L, neginf=-L), -L, L) for c in kinks]
            + [jnp.full_like(y0, L)]
        )
        zs, ws = [], []
        for a, b in zip(edges[:-1], edges[1:], strict=True):
            half = 0.5 * (b - a)
            z = a[:, None] + half[:, None] * (t + 1)
            zs.append(z)
            ws.append(half[:, None] * wt * _phi(z))
        zeta, w = jnp.concatenate(zs, -1), jnp.concatenate(ws, -1)
    else:
        t, wt = _hermite(NOISE_NODES)
        zeta, w = jnp.asarray(t, dtype)[None, :], jnp.asarray(wt, dtype)[None, :]
    outs = fn(y0[:, None] + sigma * zeta)
    return tuple(jnp.sum(w * o, -1) for o in outs)


@functools.lru_cache(maxsize=8)
def _rotation(D: int) -> np.ndarray:
    """A fixed orthogonal ``D x D`` matrix (QR of a seeded Gaussian matrix): rotating the
    standard normal nodes leaves the law unchanged, and makes every field depend on the last
    coordinate, so each kink hyperplane crosses the lines along which the panels run."""
    if D == 1:
        return np.ones((1, 1))
    q, r = np.linalg.qr(np.random.default_rng(20261201 + D).standard_normal((D, D)))
    return q * np.sign(np.diag(r))


@functools.lru_cache(maxsize=16)
def _panel_nodes(n: int):
    t, w = np.polynomial.legendre.leggauss(n)
    return (t + 1) / 2, w / 2


def _line_rule(breaks, n: int):
    """Gauss--Legendre panels on ``[-8.5, 8.5]`` split at ``breaks`` (``(P, k)``, any order):
    nodes and ``phi``-weights ``(P, (k + 1) n)``."""
    Lr = NOISE_RANGE
    b = jnp.sort(jnp.clip(jnp.nan_to_num(breaks, posinf=Lr, neginf=-Lr), -Lr, Lr), axis=-1)
    lo = jnp.concatenate([jnp.full(b.shape[:-1] + (1,), -Lr, b.dtype), b], -1)
    hi = jnp.concatenate([b, jnp.full(b.shape[:-1] + (1,), Lr, b.dtype)], -1)
    t, w = _panel_nodes(n)
    width = (hi - lo)[..., None]  # (P, k+1, 1)
    u = lo[..., None] + width * t
    wu = width * w * _phi(u)
    return u.reshape(u.shape[0], -1), wu.reshape(wu.shape[0], -1)


def _polar_rule(A, normals, n: int):
    """Rule for ``N(0, I_2)`` in ``(u_1, u_2)``: the radial Gauss rule of ``r e^{-r^2/2}`` times
    Gauss--Legendre angles on panels split at the directions where the breakpoints of two planes
    along ``u_3`` coincide (the integrand over ``u_3`` is smooth between them)."""
    from hildlimits._engine.runtime import radial_rule

    slopes = []
    for nm in normals:
        w_ = A.T @ nm
        safe = jnp.where(jnp.abs(w_[2]) > 1e-300, w_[2], 1.0)
        slopes.append(w_[:2] / safe)
    angles = []
    for i in range(len(slopes)):
        for j in range(i + 1, len(slopes)):
            d = slopes[i] - slopes[j]
            th = jnp.arctan2(d[0], -d[1])  # the direction (-d_1, d_0) of the line d . u = 0
            angles += [jnp.mod(th, 2 * np.pi), jnp.mod(th + np.pi, 2 * np.pi)]
    a = jnp.sort(jnp.stack(angles))
    lo = a
    hi = jnp.concatenate([a[1:], a[:1] + 2 * np.pi])
    t, w = _panel_nodes(max(8, n // 2))
    theta = (lo[:, None] + (hi - lo)[:, None] * t).reshape(-1)
    wtheta = ((hi - lo)[:, None] * w / (2 * np.pi)).reshape(-1)
    r, wr = radial_rule(n // 2 + 2)
    xi = jnp.stack(
        [
            (r[:, None] * jnp.cos(theta)[None, :]).reshape(-1),
            (r[:, None] * jnp.sin(theta)[None, :]).reshape(-1),
        ],
        -1,
    )
    return xi, (wr[:, None] * wtheta[None, :]).reshape(-1)


def _line_roots(f, P: int, dt, *, coarse: int = 33, roots: int = 3, iterations: int = 16):
    """The ``roots`` smallest zeros of ``f`` along each line on ``[-8.5, 8.5]`` (``+inf`` where
    there are fewer): sign changes on a ``coarse`` grid, each bracket refined by the Illinois
    variant of regula falsi (superlinear; ``iterations`` steps reach rounding for smooth ``f``)."""
    grid = jnp.linspace(-NOISE_RANGE, NOISE_RANGE, coarse, dtype=dt)
    fv = f(jnp.broadcast_to(grid, (P, coarse)))
    a, b = jnp.broadcast_to(grid[:-1], (P, coarse - 1)), jnp.broadcast_to(grid[1:], (P, coarse - 1))
    fa, fb = fv[:, :-1], fv[:, 1:]
    has = fa * fb < 0

    def step(_, carry):
        a, b, fa, fb, side = carry
        c = jnp.where(has, (a * fb - b * fa) / jnp.where(has, fb - fa, 1.0), a)
        fc = f(c)
        left = fa * fc < 0  # root in [a, c]
        b_new = jnp.where(left, c, b)
        fb_new = jnp.where(left, fc, fb)
        a_new = jnp.where(left, a, c)
        fa_new = jnp.where(left, fa, fc)
        # Illinois: halve the value at the end point kept twice in a row
        fa_new = jnp.where(left & (side == 1), fa_new / 2, fa_new)
        fb_new = jnp.where(~left & (side == -1), fb_new / 2, fb_new)
        side = jnp.where(left, 1, -1).astype(jnp.int32)
        return a_new, b_new, fa_new, fb_new, side

    side = jnp.zeros((P, coarse - 1), jnp.int32)
    a, b, fa, fb, _ = jax.lax.fori_loop(0, iterations, step, (a, b, fa, fb, side))
    root = jnp.where(has, (a * fb - b * fa) / jnp.where(has, fb - fa, 1.0), jnp.inf)
    root = jnp.sort(root, axis=-1)[:, :roots]
    return tuple(root[:, j] for j in range(roots))


def joint_moments(
    Q,
    R,
    T,
    v,
    v_teacher,
    sigma,
    *,
    g,
    g_prime,
    g_teacher,
    label,
    loss,
    dloss,
    nodes: int | None = None,
    mode: str,
    kinks: tuple,
    values: tuple = (),
    student_kinks: tuple = (),
    teacher_kinks: tuple = (),
    teacher_linear: bool = False,
    teacher_zero: bool = False,
    sign_kink: bool = False,
    classification: bool = False,
    observables: bool = True,
):
    r"""The moments of the drift and the observables by the joint rule.

    With ``delta_i = l'(yhat, label) v_i g'(lambda_i)`` (``l'`` the derivative in ``yhat``):
    ``F_ik = E[delta_i lambda_k]``, ``H_in = E[delta_i nu_n]``, ``D_ik = E[delta_i delta_k]``,
    ``G_i = E[l' g(lambda_i)]``, ``loss = E[l(yhat, label)]``, ``risk = E[(yhat - label(f*))^2]/2``
    (``f*`` the noiseless teacher output) and
    ``classification_error = P(yhat label <= 0)`` (when asked). ``observables=False`` leaves the
    last three out (the drift does not need them).

    Kinks on hyperplanes of the fields are followed: ``student_kinks`` (the points ``c`` where
    ``g`` or ``g'`` jumps: hyperplanes ``lambda_i = c``), ``teacher_kinks`` (``nu_n = c``); the label's kinks ``y = c`` without
    noise, for a linear teacher (``v* . nu = c``) or one teacher unit with ``g*(0) = 0``
    (``nu = 0``, ``c = 0``); and, for one student unit with ``g(0) = 0`` increasing
    (``sign_kink``), the classification error's jump at ``lambda = 0``. The fields are then
    ``z = L O u`` (``O`` a fixed rotation): Gauss--Hermite in ``u_1..u_{D-1}`` and, along
    ``u_D``, Gauss--Legendre panels split where the line crosses each hyperplane.
    """
    K, M = Q.shape[0], T.shape[0]
    D = K + M
    n = default_nodes(D) if nodes is None else nodes
    C = jnp.block([[T, R.T], [R, Q]])
    dt = C.dtype
    L = _cholesky([[C[a, b] for b in range(D)] for a in range(D)])
    L = jnp.stack([jnp.stack([jnp.asarray(x, dt) for x in row]) for row in L])
    # hyperplanes c . z = h of the kinks
    planes = []
    for c in student_kinks:
        for i in range(K):
            planes.append((jnp.zeros(D, dt).at[M + i].set(1.0), c))
    for c in teacher_kinks:
        for n_ in range(M):
            planes.append((jnp.zeros(D, dt).at[n_].set(1.0), c))
    if kinks:
        for c in kinks:
            if teacher_linear:
                planes.append((jnp.concatenate([v_teacher.astype(dt), jnp.zeros(K, dt)]), c))
            elif teacher_zero and M == 1 and c == 0.0:
                planes.append((jnp.zeros(D, dt).at[0].set(1.0), 0.0))
    if sign_kink and classification and K == 1 and 0.0 not in student_kinks:
        planes.append((jnp.zeros(D, dt).at[M].set(1.0), 0.0))
    # the classification error jumps on the surface yhat = 0, curved for K >= 2: its crossings
    # of each line are found numerically (observables only: the drift does not need it)
    curved = observables and classification and not (K == 1 and sign_kink)
    # the label's kinks y0 = c of a teacher that is neither linear nor a single unit with
    # g*(0) = 0 lie on curved surfaces of the teacher fields: found numerically as well
    # (in the drift for <= 3 fields only: with 4 its cost grows ~8x; there the drift keeps the
    # plain rule, measured 1.5e-3 on a K = M = 2 erf classifier with sigma = 0.2 at 14 nodes)
    teacher_curved = (
        bool(kinks)
        and not teacher_linear
        and not (teacher_zero and M == 1)
        and (observables or D <= 3)
    )
    if (planes or curved or teacher_curved) and D <= MAX_TENSOR_DIM:
        O = jnp.asarray(_rotation(D), dt)
        A = L @ O  # z = A u
        if D == 2 and all(h == 0.0 for _, h in planes):
            # every kink line passes through the origin: the breakpoints along the lines meet
            # at u_1 = 0 only, where the integral over u_2 has a kink; a mirrored half-range
            # rule in u_1 keeps the convergence spectral
            h_, wh = half_range_rule(n // 2 + 2)
            xi, wg = np.concatenate([h_, -h_])[:, None], np.concatenate([wh, wh])
        elif (
            D == 3
            and len(planes) >= 2
            and not (curved or teacher_curved)
            and all(h == 0.0 for _, h in planes)
        ):
            # the breakpoints of two planes meet on a line through the origin of (u_1, u_2):
            # polar coordinates, with the angular panels split at those lines
            xi, wg = _polar_rule(A, [nm for nm, _ in planes], n)
        else:
            xi, wg = gauss_hermite_grid(n, D - 1, 1e-15)
        xi = jnp.asarray(xi, dt)
        breaks = []
        for normal, h in planes:
            w_ = A.T @ normal  # normal . z = w_ . u
            last = w_[-1]
            safe = jnp.where(jnp.abs(last) > 1e-300, last, 1.0)
            b = (h - xi @ w_[:-1]) / safe
            breaks.append(jnp.where(jnp.abs(last) > 1e-300, b, jnp.inf))
        if curved:
            base = xi @ A[:, :-1].T  # (P, D): z at u_D = 0
            direction = A[:, -1]

            def yhat_on_line(t):  # t: (P, m) -> yhat (P, m)
                lam_t = base[:, None, M:] + t[..., None] * direction[M:]
                return (g(lam_t) + jnp.zeros_like(lam_t)) @ v

            breaks += list(_line_roots(yhat_on_line, xi.shape[0], dt))
        if teacher_curved:
            base = xi @ A[:, :-1].T
            direction = A[:, -1]
            for c in kinks:

                def y0_on_line(t, c=c):
                    nu_t = base[:, None, :M] + t[..., None] * direction[:M]
                    return (g_teacher(nu_t) + jnp.zeros_like(nu_t)) @ v_teacher - c

                breaks += list(
                    _line_roots(y0_on_line, xi.shape[0], dt, coarse=17, roots=2, iterations=10)
                )
        ul, wl = _line_rule(jnp.stack(breaks, -1), max(8, n // 2))
        P, Z = xi.shape[0], ul.shape[1]
        u = jnp.concatenate([jnp.repeat(xi, Z, axis=0), ul.reshape(P * Z, 1)], axis=1)  # (P Z, D)
        w = (jnp.asarray(wg, dt)[:, None] * wl).reshape(-1)
        z = u @ A.T
    else:
        u, w = field_rule(D, n, False)
        u = jnp.asarray(u, dt)
        w = jnp.asarray(w, dt)
        z = u @ L.T
    nu, lam = z[:, :M], z[:, M:]
    zero = jnp.zeros_like(lam)
    gl = g(lam) + zero  # (+ zero: an expression constant in x still gets the nodes' shape)
    yhat = gl @ v
    y0 = (g_teacher(nu) + jnp.zeros_like(nu)) @ v_teacher
    yh = yhat[:, None]

    def fn(y):
        lab = label(y)
        d = dloss(yh, lab)
        outs = [d, d * d]
        if observables:
            outs.append(loss(yh, lab))
            if classification:
                outs.append(jnp.where(yh * lab > 0, 0.0, 1.0).astype(y.dtype))
        return tuple(jnp.broadcast_to(o, y.shape) for o in outs)

    avg = noise_average(fn, y0, sigma, mode=mode, kinks=kinks, values=values)
    m1, m2 = avg[:2]
    a = v * (g_prime(lam) + zero)  # (P, K)
    wm1 = w * m1
    out = {
        "F": jnp.einsum("p,pi,pk->ik", wm1, a, lam),
        "H": jnp.einsum("p,pi,pn->in", wm1, a, nu),
        "D": jnp.einsum("p,pi,pk->ik", w * m2, a, a),
        "G": jnp.einsum("p,pi->i", wm1, gl),
    }
    if observables:
        out["loss"] = w @ avg[2]
        out["risk"] = 0.5 * (w @ (yhat - label(y0)) ** 2)
        if classification:
            out["classification_error"] = w @ avg[3]
    return out


def isotropic_rates(m, Q, R, eta, kappa, batch=1.0):
    r"""``dQ = -eta (F + F^T) + (eta^2/B) D - 2 eta kappa Q``, ``dR = -eta H - eta kappa R`` from
    the moments ``m`` (inputs ``x ~ N(0, I)``; ``B`` the mini-batch size)."""
    dQ = -eta * (m["F"] + m["F"].T) + (eta**2 / batch) * m["D"] - 2 * eta * kappa * Q
    dR = -eta * m["H"] - eta * kappa * R
    return dQ, dR


def field_covariances(Qb, Rb, Tb, s):
    """Field covariances ``sum_b s_b X_b`` of per-bin overlaps ``X_b`` (leading axis: bins)."""
    return (
        jnp.einsum("b,bij->ij", s, Qb),
        jnp.einsum("b,bij->ij", s, Rb),
        jnp.einsum("b,bij->ij", s, Tb),
    )


def regression(G, C):
    r"""``A = G C^+``: the coefficients of the regression of ``E[z delta_i]`` on the fields
    (``G`` rows ``E[z delta_i]``, ``C`` the field covariance). A ridge of ``1e-13 tr(C)/D`` keeps
    it finite (and differentiable) where ``C`` is singular (zero or coincident units): there
    ``G``'s component along the null space vanishes, and so does every per-bin covariance's."""
    D = C.shape[0]
    eps = 1e-13 * jnp.trace(C) / D + jnp.finfo(C.dtype).tiny
    return jnp.linalg.solve(C + eps * jnp.eye(D, dtype=C.dtype), G.T).T


def spectral_rates(m, Qb, Rb, Tb, s, p, eta, kappa, fields=None, batch=1.0):
    r"""Per-bin rates of ``x ~ N(0, Sigma)`` with ``Sigma`` having eigenvalue ``s_b`` on a fraction
    ``p_b`` of the directions (``docs/spectra.md``).

    A partial field ``lambda^b_k`` (the part of ``w_k x / sqrt N`` in bin ``b``) is jointly Gaussian
    with the fields ``z = (nu, lambda)``, with ``Cov(lambda^b_k, z) = s_b [R^b_k, Q^b_k]``, so
    ``E[delta_i lambda^b_k] = s_b [R^b_k, Q^b_k] . A_i`` with ``A = G C^{-1}``
    (:func:`regression`): one solve for all bins, then a product per bin (cost linear in bins).

    ``dQ^b_ik = -eta (E[delta_i lambda^b_k] + E[delta_k lambda^b_i]) + (eta^2/B) s_b p_b D_ik
    - 2 eta kappa Q^b_ik``, ``dR^b_in = -eta E[delta_i nu^b_n] - eta kappa R^b_in`` (``B`` the
    mini-batch size).
    """
    # ``fields``: the field covariances (Q, R, T) when the caller has them already
    Q, R, T = field_covariances(Qb, Rb, Tb, s) if fields is None else fields
    C = jnp.block([[T, R.T], [R, Q]])
    G = jnp.concatenate([m["H"], m["F"]], axis=1)  # (K, M + K): E[delta_i z_a]
    A = regression(G, C)
    AT, AS = A[:, : T.shape[0]], A[:, T.shape[0] :]  # (K, M), (K, K)
    # E[delta_i lambda^b_k] = s_b (R^b_k . AT_i + Q^b_k . AS_i)
    Fb = s[:, None, None] * (jnp.einsum("bkn,in->bik", Rb, AT) + jnp.einsum("bkl,il->bik", Qb, AS))
    # E[delta_i nu^b_n] = s_b (T^b_n . AT_i + R^b_.n . AS_i)
    Hb = s[:, None, None] * (jnp.einsum("bnm,im->bin", Tb, AT) + jnp.einsum("bln,il->bin", Rb, AS))
    dQb = (
        -eta * (Fb + jnp.swapaxes(Fb, 1, 2))
        + (eta**2 / batch) * (s * p)[:, None, None] * m["D"]
        - 2 * eta * kappa * Qb
    )
    dRb = -eta * Hb - eta * kappa * Rb
    return dQb, dRb
