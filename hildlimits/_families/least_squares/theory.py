r"""Finite-data least squares in the ``N -> oo`` limit: derivation (SymPy), Marchenko--Pastur
quadrature, the per-mode ODE for the shared runner, and closed forms.

Model (``docs/least-squares.md``): ``x ~ N(0, I_N)``, ``y = w*.x/sqrt(N) + sigma zeta``,
``yhat = w.x/sqrt(N)``, ``n = alpha N`` samples reused at every step, empirical loss
``L(w) = (1/2n) sum_mu (y_mu - yhat_mu)^2 + (lambda/2N) |w|^2``.

* full-batch GD: ``w <- w - eta N grad L(w)``, time ``t = eta * steps``;
* gradient flow: ``dw/dt = -N grad L(w)`` (the ``eta -> 0`` limit at fixed ``t``).

In the eigenbasis of ``C = X^T X / n`` (eigenvalue ``s``, ``r = s + lambda``) each mode relaxes
independently to its fixed point by the factor ``d(s, t)``: ``(1 - eta r)^(t/eta)`` for GD,
``exp(-r t)`` for gradient flow. As ``N -> oo`` the eigenvalues follow the Marchenko--Pastur law
of ratio ``gamma = 1/alpha`` (an atom ``(1 - alpha)_+`` at ``s = 0``), so risk and training loss
are integrals of the per-mode mean squares against it.

State of the ODE (per quadrature node ``s_k``): ``M_k = -log|d_k| / r_k`` (``dM/dt = q(eta r)``,
``q(x) = -log|1 - x| / x``, ``q = 1`` for gradient flow) and ``phi_k``, the number of GD steps
with ``eta r_k > 1`` (each flips the sign of the mode: ``d = e^{-r M} cos(pi phi)``). The
right-hand side is constant between schedule edges, so diffrax integrates it exactly (to
rounding): the only approximations are the ``N -> oo`` limit and the quadrature.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np

STRUCTURE = {"family": "least_squares", "version": 1}

# ----------------------------------------------------------------------------- derivation


def _symbols():
    import sympy as sp

    pos = {"nonnegative": True}
    return {
        "s": sp.Symbol("s", **pos),
        "lam": sp.Symbol("lambda", **pos),
        "eta": sp.Symbol("eta", positive=True),
        "sigma": sp.Symbol("sigma", **pos),
        "alpha": sp.Symbol("alpha", positive=True),
        "T": sp.Symbol("T", positive=True),
        "Q": sp.Symbol("Q", **pos),
        "R": sp.Symbol("R", real=True),
        "a": sp.Symbol("a", real=True),
        "b": sp.Symbol("b", real=True),
        "c": sp.Symbol("c", real=True),
        "g": sp.Symbol("g", real=True),
        "d": sp.Symbol("d", real=True),
        "h": sp.Symbol("h", real=True),
        "x": sp.Symbol("x", positive=True),
        "z": sp.Symbol("z", real=True),
        "m": sp.Symbol("m", real=True),
        "t": sp.Symbol("t", nonnegative=True),
    }


def _moments(expr, S):
    """``E[expr]`` over independent centred ``b`` (variance ``T``), ``c`` (``Q - R^2/T``) and
    ``g`` (1), for ``expr`` a polynomial of degree <= 2 in each."""
    import sympy as sp

    var = {S["b"]: S["T"], S["c"]: S["Q"] - S["R"] ** 2 / S["T"], S["g"]: sp.Integer(1)}
    poly = sp.Poly(sp.expand(expr), *var)
    out = sp.Integer(0)
    for powers, coeff in poly.terms():
        term = coeff
        for v, p in zip(var, powers, strict=True):
            if p % 2 == 1:
                term = 0
                break
            if p == 2:
                term *= var[v]
            elif p > 2:
                raise ValueError("degree > 2")
        out += term
    return sp.expand(out)


def _derive() -> LeastSquaresSystem:
    import sympy as sp

    S = _symbols()
    s, lam, eta, sigma, alpha = S["s"], S["lam"], S["eta"], S["sigma"], S["alpha"]
    T, Q, R, a, b, c, g, d, h, x = (
        S[k] for k in ("T", "Q", "R", "a", "b", "c", "g", "d", "h", "x")
    )
    r = s + lam
    # one GD step in the eigenbasis of C: eta N grad L = eta [(C + lambda) w - (sqrt N / n) X^T y];
    # the noise X^T zeta has component sqrt(n s) g on the mode, so (sqrt N / n) X^T (sigma zeta)
    # contributes sigma sqrt(s / alpha) g.
    update = a - eta * (r * a - s * b - sigma * sp.sqrt(s / alpha) * g)
    (fixed,) = sp.solve(sp.Eq(update, a), a)
    contraction = sp.diff(update, a)  # the update is affine in a
    if sp.simplify(update - fixed - contraction * (a - fixed)) != 0:
        raise AssertionError("the per-mode update is not a contraction towards a_inf")
    contraction = 1 - eta * sp.factor(sp.expand(1 - contraction) / eta)
    kappa_gd = sp.log(1 - eta * r) / eta
    kappa_gf = sp.limit(kappa_gd, eta, 0)
    q_gd = -sp.log(1 - x) / x
    q_series = sp.series(q_gd, x, 0, 5).removeO()
    # the mode after time t: a(t) = a_inf + d (a(0) - a_inf), a(0) = (R/T) b + c
    a0 = R / T * b + c
    error_full = fixed + d * (a0 - fixed) - b
    error = b * (R / T * d - 1 + s * h) + c * d + sigma * sp.sqrt(s / alpha) * g * h
    if sp.simplify((error_full - error).subs(h, (1 - d) / r)) != 0:
        raise AssertionError("per-mode error does not reduce to the h form")
    e2 = _moments(error**2, S)
    train = sp.expand(s * e2 / 2 - sigma * sp.sqrt(s / alpha) * _moments(g * error, S))
    q_mode = sp.expand(_moments((error + b) ** 2, S))
    r_mode = sp.expand(_moments((error + b) * b, S))
    # Marchenko-Pastur law of ratio gamma = 1/alpha (eigenvalues of X^T X / n)
    gam = 1 / alpha
    density = sp.sqrt(((1 + sp.sqrt(gam)) ** 2 - s) * (s - (1 - sp.sqrt(gam)) ** 2)) / (
        2 * sp.pi * gam * s
    )
    z, m = S["z"], S["m"]
    stieltjes_eq = gam * z * m**2 - (1 - gam - z) * m + 1  # m(z) = E[1/(s - z)]
    # bulk part of m at z = -lambda (the atom (1 - alpha)_+ / lambda removed), rationalised so it
    # stays finite as lambda -> 0 for alpha != 1; checked against the quadratic below
    D = (alpha * lam + alpha - 1) ** 2 + 4 * alpha * lam
    m_over = 2 * alpha / (sp.sqrt(D) + alpha * lam + alpha - 1)  # alpha >= 1: no atom
    m_under = 2 * alpha**2 / (sp.sqrt(D) + alpha * lam + 1 - alpha)  # alpha < 1
    for mb, atom, vals in (
        (m_over, 0, {alpha: sp.Rational(5, 2), lam: sp.Rational(3, 10)}),
        (m_under, 1 - alpha, {alpha: sp.Rational(2, 5), lam: sp.Rational(3, 10)}),
    ):
        resid = stieltjes_eq.subs({z: -lam, m: mb + atom / lam}).subs(vals)
        if abs(float(sp.N(resid, 30))) > 1e-20:
            raise AssertionError("bulk Stieltjes transform does not solve the MP equation")
    # t -> oo (d = 0, h = 1/r) on the bulk: integrals of 1/r, 1/r^2 are m_b and dm_b = -dm_b/dlam
    mb_sym, dmb_sym, mass = sp.symbols("m_b m_b' beta", real=True)
    risk_inf_bulk = sp.expand(T * lam**2 * dmb_sym + sigma**2 / alpha * (mb_sym - lam * dmb_sym))
    train_inf_bulk = sp.expand(
        T * lam**2 / 2 * (mb_sym - lam * dmb_sym)
        + sigma**2 / (2 * alpha) * (mass - 2 * lam * mb_sym + lam**2 * dmb_sym)
        - sigma**2 / alpha * (mass - lam * mb_sym)
    )
    # check the bulk integrands: E e^2 and the training integrand at d = 0, h = 1/r
    e2_inf = sp.cancel(e2.subs({d: 0, h: 1 / r}))
    if sp.simplify(e2_inf - (T * lam**2 + sigma**2 * s / alpha) / r**2) != 0:
        raise AssertionError("unexpected t -> oo integrand")
    exprs = {
        "loss": sp.Symbol("L"),
        "update": update,
        "fixed_point": sp.simplify(fixed),
        "contraction": contraction,
        "kappa_gd": kappa_gd,
        "kappa_gf": kappa_gf,
        "q_gd": q_gd,
        "q_series": q_series,
        "error": error,
        "e2": e2,
        "train": train,
        "Q": q_mode,
        "R": r_mode,
        "density": density,
        "stieltjes": stieltjes_eq,
        "m_over": m_over,
        "m_under": m_under,
        "dm_over": sp.simplify(-sp.diff(m_over, lam)),
        "dm_under": sp.simplify(-sp.diff(m_under, lam)),
        "risk_inf_bulk": risk_inf_bulk,
        "train_inf_bulk": train_inf_bulk,
    }
    return LeastSquaresSystem(structure=dict(STRUCTURE), exprs=exprs)


# ----------------------------------------------------------------------------- the system

_GENERATED = {
    # name: (expression key, arguments, doc)
    "e2": ("e2", ("s", "d", "h", "sigma", "alpha", "T", "Q", "R"), "E[e^2] of one mode"),
    "train": ("train", ("s", "d", "h", "sigma", "alpha", "T", "Q", "R"), "training integrand"),
    "q_mode": ("Q", ("s", "d", "h", "sigma", "alpha", "T", "Q", "R"), "E[a^2] of one mode"),
    "r_mode": ("R", ("s", "d", "h", "sigma", "alpha", "T", "Q", "R"), "E[a b] of one mode"),
    "m_over": ("m_over", ("lam", "alpha"), "bulk Stieltjes m_b(-lambda), alpha >= 1"),
    "m_under": ("m_under", ("lam", "alpha"), "bulk Stieltjes m_b(-lambda), alpha < 1"),
    "dm_over": ("dm_over", ("lam", "alpha"), "m_b'(-lambda) = E_bulk[1/(s+lambda)^2], alpha >= 1"),
    "dm_under": ("dm_under", ("lam", "alpha"), "m_b'(-lambda), alpha < 1"),
}


@dataclass(frozen=True, eq=False)
class LeastSquaresSystem:
    """The derived per-mode theory (valid for every ``alpha``, ``lambda``, ``sigma``, ``eta``).

    Attributes:
        structure: ``{"family": "least_squares", ...}`` (the derivation-cache key).
        exprs: name -> SymPy expression (the per-mode update, fixed point, relaxation factors,
            mean squares, Marchenko--Pastur density and Stieltjes transform, ``t -> oo`` closed
            forms).
    """

    structure: dict
    exprs: dict
    _jax: dict = field(default_factory=dict, repr=False, compare=False)

    def __str__(self) -> str:
        return format_system(self, latex=False)

    def latex(self) -> str:
        return format_system(self, latex=True)

    def markdown(self) -> str:
        return "\n".join(
            [
                "# Finite-data least squares: full-batch GD and gradient flow (N -> oo)",
                "",
                "Generated by `hildlimits` from the model description; do not edit by hand.",
                "",
                "$$",
                "\\begin{aligned}",
                format_system(self, latex=True),
                "\\end{aligned}",
                "$$",
                "",
                "```",
                format_system(self, latex=False),
                "```",
                "",
            ]
        )

    @property
    def source(self) -> str:
        """Generated JAX source: the per-mode integrands and the closed forms."""
        if "source" not in self._jax:
            self._jax["source"] = _generate_source(self)
        return self._jax["source"]

    @property
    def module(self):
        if "module" not in self._jax:
            from hildlimits._engine.codegen import load_module

            self._jax["module"] = load_module(source=self.source, kind="least_squares")
        return self._jax["module"]


def _generate_source(system: LeastSquaresSystem) -> str:
    import sympy as sp

    from hildlimits._engine.codegen import _IMPORTS, _Printer, function_source, header

    S = _symbols()
    names = {"lam": S["lam"]}
    lines = [
        '"""Generated by hildlimits (least_squares family): per-mode integrands of the',
        "Marchenko--Pastur integrals and the t -> oo closed forms. Do not edit.",
        "",
        f"inputs: {header(system)['inputs']}",
        '"""',
        *_IMPORTS,
        "",
    ]
    printer = _Printer()
    for name, (key, args, doc) in _GENERATED.items():
        expr = system.exprs[key]
        syms = {S[a] if a in S else names[a]: sp.Symbol(a) for a in args}
        expr = expr.xreplace(syms)
        lines += ["", *function_source(name, list(args), expr, doc, printer), ""]
    return "\n".join(lines) + "\n"


def format_system(system: LeastSquaresSystem, *, latex: bool) -> str:
    import sympy as sp

    E = system.exprs
    if latex:

        def f(x):
            return sp.latex(x)

        rows = [
            r"&\text{model: } x\sim\mathcal N(0,I_N),\ y=w^*\!\cdot x/\sqrt N+\sigma\zeta,\ "
            r"\hat y=w\cdot x/\sqrt N,\ n=\alpha N,\ "
            r"L(w)=\tfrac1{2n}\textstyle\sum_\mu(y_\mu-\hat y_\mu)^2+\tfrac{\lambda}{2N}|w|^2\\",
            r"&\text{GD: } w\leftarrow w-\eta N\nabla L,\ t=\eta\,\text{steps};\quad "
            r"\text{gradient flow: } \dot w=-N\nabla L\\",
            rf"&a' = {f(E['update'])}\\",
            rf"&a_\infty = {f(E['fixed_point'])},\quad a'-a_\infty = ({f(E['contraction'])})(a-a_\infty)\\",
            rf"&d(s,t)=e^{{\kappa t}},\ \kappa_{{GD}} = {f(E['kappa_gd'])},\ "
            rf"\kappa_{{GF}} = {f(E['kappa_gf'])}\\",
            rf"&e = a-b = {f(E['error'])},\quad h=\frac{{1-d}}{{s+\lambda}}\\",
            rf"&\mathbb E e^2 = {f(E['e2'])}\\",
            rf"&\ell_{{train}}(s) = {f(E['train'])}\\",
            r"&\varepsilon_g(t)=\tfrac12\int d\mu_{MP}(s)\,\mathbb E e^2,\quad "
            r"\varepsilon_{train}(t)=\int d\mu_{MP}(s)\,\ell_{train}(s)+\sigma^2/2\\",
            rf"&d\mu_{{MP}} = (1-\alpha)_+\delta(s) + {f(E['density'])}\,ds\\",
            rf"&{f(E['stieltjes'])}=0\ \ (m(z)=\textstyle\int d\mu/(s-z))\\",
            rf"&m_b(-\lambda)={f(E['m_over'])}\ (\alpha\ge1),\ {f(E['m_under'])}\ (\alpha<1)\\",
            rf"&2\varepsilon_g(\infty)={f(E['risk_inf_bulk'])}+(1-\alpha)_+A,\ "
            r"A=T\ (\lambda>0),\ Q-2R+T\ (\lambda=0)\\",
            rf"&\varepsilon_{{train}}(\infty)={f(E['train_inf_bulk'])}+\sigma^2/2",
        ]
        return "\n".join(rows)

    def f(x):
        return sp.sstr(x)

    return "\n".join(
        [
            "Finite-data least squares, N -> oo with n = alpha N samples reused every step",
            "  x ~ N(0, I_N), teacher y = w*.x/sqrt(N) + sigma zeta, student yhat = w.x/sqrt(N)",
            "  L(w) = (1/2n) sum_mu (y_mu - yhat_mu)^2 + (lambda/2N) |w|^2",
            "  full-batch GD: w <- w - eta N grad L(w), time t = eta * steps",
            "  gradient flow: dw/dt = -N grad L(w)            (eta -> 0 at fixed t)",
            "",
            "Per mode (eigenvalue s of C = X^T X/n; a = v.w, b = v.w*, c = a(0) - (R/T) b,",
            "g ~ N(0,1) the mode's label noise; E b^2 = T, E c^2 = Q - R^2/T):",
            f"  a'           = {f(E['update'])}",
            f"  a_inf        = {f(E['fixed_point'])}",
            f"  a' - a_inf   = ({f(E['contraction'])}) (a - a_inf)",
            f"  d(s,t)       = exp(kappa t), kappa_GD = {f(E['kappa_gd'])}   "
            f"(exact at t = k eta: (1 - eta r)^k)",
            f"                 kappa_GF = lim_(eta->0) kappa_GD = {f(E['kappa_gf'])}",
            f"  ODE state    M = -log|d|/r:  dM/dt = q(eta r), q(x) = {f(E['q_gd'])}"
            f" = {f(E['q_series'])} + ...;  GF: q = 1",
            "                 phi: number of steps with eta r > 1 (d = exp(-r M) cos(pi phi))",
            f"  e = a - b    = {f(E['error'])},   h = (1 - d)/(s + lambda)",
            f"  E e^2        = {f(E['e2'])}",
            f"  train(s)     = {f(E['train'])}",
            f"  E a^2        = {f(E['Q'])}",
            f"  E a b        = {f(E['R'])}",
            "",
            "Observables (N -> oo): integrals against the Marchenko-Pastur law of ratio 1/alpha",
            "  risk(t)       = (1/2) int dmu(s) E e^2          (= (1/2)|w - w*|^2/N)",
            "  train_loss(t) = int dmu(s) train(s) + sigma^2/2   (the data term of L)",
            "  Q(t) = int dmu E a^2 = |w|^2/N,   R(t) = int dmu E a b = w.w*/N",
            f"  dmu = (1 - alpha)_+ delta(s) + {f(E['density'])} ds on [(1 -+ 1/sqrt(alpha))^2]",
            "  quadrature: s = (1 - sqrt(gamma))^2 + 4 sqrt(gamma) sin^2(eps/2), gamma = 1/alpha,",
            "    dmu = (2/pi) sin^2(eps)/s deps on (0, pi) (the square-root edges become smooth);",
            "    eps = delta sinh(A u) grades the nodes towards the lower edge; Gauss-Legendre in u,",
            "    plus the atom as one node of weight (1 - alpha)_+",
            "",
            "t -> oo (d = 0, h = 1/(s + lambda)):",
            f"  Stieltjes transform m(z) = int dmu/(s - z) solves {f(E['stieltjes'])} = 0",
            f"  bulk m_b(-lambda) = {f(E['m_over'])}   (alpha >= 1)",
            f"                    = {f(E['m_under'])}   (alpha < 1)",
            "  m_b' = int_bulk dmu/(s + lambda)^2 = -d m_b/d lambda, beta = min(1, alpha)",
            f"  2 risk_inf     = {f(E['risk_inf_bulk'])} + (1 - alpha)_+ A,"
            "  A = T (lambda > 0) or Q - 2R + T (lambda = 0)",
            f"  train_loss_inf = {f(E['train_inf_bulk'])} + sigma^2/2",
        ]
    )


# ----------------------------------------------------------------------------- cache


def _system_to_json(system: LeastSquaresSystem) -> dict:
    import sympy as sp

    from hildlimits._pipeline.cache import FORMAT, content_digest

    data = {
        "format": FORMAT,
        "structure": system.structure,
        "exprs": {k: sp.srepr(v) for k, v in system.exprs.items()},
        "source": system.source,
    }
    data["digest"] = content_digest(data)
    return data


def _system_from_json(data: dict, rebuild=None) -> LeastSquaresSystem:
    import sympy as sp

    exprs = {k: sp.sympify(v) for k, v in data["exprs"].items()}
    system = LeastSquaresSystem(structure=data["structure"], exprs=exprs)
    system._jax["source"] = data["source"]
    return system


@functools.lru_cache(maxsize=1)
def derive_least_squares() -> LeastSquaresSystem:
    """The derived per-mode theory, cached in memory and on disk (``hildlimits.cache_dir()``).

    Example:
        >>> system = derive_least_squares()
        >>> "E e^2" in str(system)
        True
    """
    from hildlimits._pipeline.cache import cached_system

    return cached_system(
        dict(STRUCTURE), _derive, to_json=_system_to_json, from_json=_system_from_json
    )


# ----------------------------------------------------------------------------- quadrature


def mp_nodes(alpha, nodes: int, xp=np, *, t1: float = 1.0):
    """Nodes ``s`` and weights ``w`` (``nodes + 1`` each) of the Marchenko--Pastur law of ratio
    ``gamma = 1/alpha``: the bulk, then the atom at ``s = 0`` with weight ``(1 - alpha)_+``.

    The bulk: ``s = (1 - sqrt(gamma))^2 + 4 sqrt(gamma) sin^2(eps/2)`` with ``eps = pi - theta``
    turns ``dmu`` into ``(2/pi) sin^2(eps) / s deps`` on ``(0, pi)`` (the square-root edges
    become smooth ends); ``eps = delta sinh(A u)``, ``A = asinh(pi/delta)``, grades the nodes
    geometrically towards the lower edge, where ``1/s`` has poles at ``eps ~ +-i (1 -
    sqrt(gamma))`` (``alpha`` near 1) and the integrands vary on ``eps ~ 1/sqrt(t)`` (the slow
    modes); ``delta = min(|1 - sqrt(gamma)|, 1/sqrt(1 + t1))`` (at least 1e-6). Gauss--Legendre
    in ``u``: exponential convergence, at a rate that depends on ``alpha`` and ``t1`` only
    through ``log(1/delta)``. Traceable in ``alpha`` with ``xp = jnp``. The bulk weights sum
    to ``min(1, alpha)`` up to the rule's error."""
    u, wu = np.polynomial.legendre.leggauss(nodes)
    u, wu = (u + 1) / 2, wu / 2
    sg = 1.0 / xp.sqrt(alpha)
    delta = xp.maximum(xp.minimum(xp.abs(1.0 - sg), 1.0 / math.sqrt(1.0 + t1)), 1e-6)
    A = xp.arcsinh(np.pi / delta)
    eps = delta * xp.sinh(A * u)
    jac = delta * A * xp.cosh(A * u)
    s = (1.0 - sg) ** 2 + 4.0 * sg * xp.sin(eps / 2) ** 2
    w = wu * jac * (2.0 / np.pi) * xp.sin(eps) ** 2 / s
    atom = xp.maximum(1.0 - alpha, 0.0)
    zero = xp.zeros(1, dtype=s.dtype) if xp is np else xp.zeros(1)
    return xp.concatenate([s, zero]), xp.concatenate([w, xp.reshape(atom, (1,))])


def default_nodes(t1: float, lr: float | None) -> int:
    """Quadrature nodes by default: 256. Measured against adaptive QUADPACK (algebraic edge
    weights) for alpha in [0.1, 10] (0.999..1.001 included) and t up to 1e6: relative error
    <= 1e-12 from 128 nodes on (``tests/test_least_squares.py``, ``docs/least-squares.md``)."""
    del t1, lr
    return 256


# ----------------------------------------------------------------------------- ODE and observables


def _q_gd(x, jnp):
    """``q(x) = -log|1 - x| / x`` (``q(0) = 1``), safe for gradients at ``x = 0`` and ``x = 1``."""
    small = jnp.abs(x) < 1e-3
    xs = jnp.where(small, 0.5, x)
    big = -jnp.log(jnp.maximum(jnp.abs(1.0 - xs), 1e-300)) / xs
    series = 1.0 + x / 2 + x**2 / 3 + x**3 / 4 + x**4 / 5
    return jnp.where(small, series, big)


def rates(args, gd, jnp):
    """``(dM/dt, dphi/dt)`` per node for learning rate ``args["eta"]`` (GD) or gradient flow.
    ``gd``: a bool, or ``None`` to read ``args["gd"]`` (1.0 or 0.0) at run time, so GD and
    gradient flow share one compiled solve."""
    r = args["s"] + args["lam"]
    if gd is False:
        return jnp.ones_like(r), jnp.zeros_like(r)
    x = args["eta"] * r
    dM, dphi = _q_gd(x, jnp), jnp.where(x > 1.0, 1.0 / args["eta"], 0.0)
    if gd is None:
        flow = args["gd"] == 0.0
        dM, dphi = jnp.where(flow, 1.0, dM), jnp.where(flow, 0.0, dphi)
    return dM, dphi


def _phi1(L, jnp):
    """``expm1(L)/L`` (1 at 0)."""
    small = jnp.abs(L) < 1e-6
    Ls = jnp.where(small, 1.0, L)
    return jnp.where(small, 1.0 + L / 2 + L**2 / 6, jnp.expm1(Ls) / Ls)


def mode_factors(M, phi, r, jnp):
    """``d = exp(-r M) cos(pi phi)`` and ``h = (1 - d)/r`` (``= M`` at ``r = 0``)."""
    L = -r * M
    dabs = jnp.exp(L)
    cos = jnp.cos(jnp.pi * phi)
    d = dabs * cos
    flip = 1.0 - cos
    rs = jnp.where(r > 0, r, 1.0)
    h = M * _phi1(L, jnp) + jnp.where(flip > 0, dabs * flip / rs, 0.0)
    return d, h


def observables(module, y, args, jnp):
    """``risk``, ``train_loss``, ``Q``, ``R`` of a state (node axis last)."""
    s, w = args["s"], args["w"]
    r = s + args["lam"]
    d, h = mode_factors(y["M"], y["phi"], r, jnp)
    p = (args["sigma"], args["alpha"], args["T"], args["Q"], args["R"])
    risk = 0.5 * jnp.sum(w * module.e2(s, d, h, *p), axis=-1)
    noise = jnp.sum(jnp.zeros_like(w[..., :1]) + args["sigma"] ** 2, axis=-1)  # batch shape
    train = jnp.sum(w * module.train(s, d, h, *p), axis=-1) + 0.5 * noise
    Q = jnp.sum(w * module.q_mode(s, d, h, *p), axis=-1)
    R = jnp.sum(w * module.r_mode(s, d, h, *p), axis=-1)
    return {"risk": risk, "train_loss": train, "Q": Q, "R": R}


def closed_state(args, ts, gd: bool):
    """The exact state at times ``ts`` for a constant learning rate (NumPy): ``M = t q``,
    ``phi = (t/eta) [eta r > 1]``."""
    dM, dphi = rates(args, gd, np)
    ts = np.asarray(ts, np.float64)[:, None]
    return {"M": ts * dM[None, :], "phi": ts * dphi[None, :]}


def converged(system, *, alpha, lam, sigma, T, Q, R) -> dict:
    """``risk`` and ``train_loss`` at ``t -> oo`` in closed form (bulk Stieltjes transform;
    ``inf`` where they diverge: ``alpha = 1``, ``lambda = 0``, ``sigma > 0``)."""
    import jax

    mod = system.module
    with jax.enable_x64(True):
        if alpha >= 1:
            mb, dmb = float(mod.m_over(lam, alpha)), float(mod.dm_over(lam, alpha))
        else:
            mb, dmb = float(mod.m_under(lam, alpha)), float(mod.dm_under(lam, alpha))
    beta = min(1.0, alpha)
    atom = max(0.0, 1.0 - alpha)
    A = T if lam > 0 else Q - 2 * R + T
    if alpha == 1.0 and lam == 0.0:
        # m_b and m_b' diverge: 0 * inf terms drop; the variance term sigma^2 E[1/s] is infinite
        risk = math.inf if sigma > 0 else 0.0
        train = 0.0 if sigma > 0 else 0.0
        return {"risk": risk, "train_loss": train}
    risk = 0.5 * (T * lam**2 * dmb + sigma**2 / alpha * (mb - lam * dmb) + atom * A)
    train = (
        T * lam**2 / 2 * (mb - lam * dmb)
        + sigma**2 / (2 * alpha) * (beta - 2 * lam * mb + lam**2 * dmb)
        - sigma**2 / alpha * (beta - lam * mb)
        + sigma**2 / 2
    )
    return {"risk": float(risk), "train_loss": float(train)}
