r"""Mean-field limit of wide two-layer networks: particle ODEs derived, generated and solved.

Model (conventions of this module; see the README, "Mean-field limit")::

    student  \hat y(x) = (1/p) \sum_{j<=p} a_j g(\lambda_j),   \lambda_j = w_j.x/\sqrt d
    teacher  y = \sum_{n<=M} v^*_n g_*(\nu_n) + \sigma\zeta,    \nu_n = w^*_n.x/\sqrt d
    SGD      w_j <- w_j - (\eta/\sqrt d)(\hat y - y) a_j g'(\lambda_j) x
             a_j <- a_j - (\eta_a/d)(\hat y - y) g(\lambda_j)

Limit ``d -> oo``, then ``p -> oo`` and ``eta -> 0``, in time ``tau = eta * steps / d``. Each
unit is a particle with ``r_j = W^* w_j / d`` (in ``R^M``), ``q_j = |w_j|^2/d`` and ``a_j``. Its
field is ``\lambda_j = r_j^T T^{-1}\nu + s_j\xi_j`` with ``s_j^2 = q_j - r_j^T T^{-1} r_j`` and
``\xi_j ~ N(0, 1)`` independent of the teacher fields and, for ``j != k``, of ``\xi_k`` (distinct
units' fields are correlated through their teacher components only). The drift is

.. math::

    \dot r_j = -a_j E[(\hat y - y) g'(\lambda_j)\nu], \quad
    \dot q_j = -2 a_j E[(\hat y - y) g'(\lambda_j)\lambda_j], \quad
    \dot a_j = -(\eta_a/\eta) E[(\hat y - y) g(\lambda_j)],

and the population enters through the mean field ``F(\nu) = (1/P)\sum_k a_k E_\xi[g(\lambda_k)]``
(``P`` particles represent the law). The learning-rate noise terms (``O(eta)`` per unit time,
e.g. ``eta a_j^2 E[(yhat - y)^2 g'(lambda_j)^2]`` in ``dq_j``, and the correlations they create
between different units' orthogonal components, which do not vanish as ``p`` grows) are absent: the
ODE is the ``eta -> 0`` limit. The output noise ``sigma`` enters only through such terms, so it
does not appear in the ODE (it does in the finite-``eta`` simulation).

Two ways to evaluate the population terms (``solve_meanfield(..., method=...)``):

* ``"pairwise"``: every particle--particle and particle--teacher expectation in closed form from
  the Gaussian-expectation engine (for erf the Saad--Solla ``I2``/``I3`` forms with the effective
  covariance ``C_jk = r_j^T T^{-1} r_k``): ``O(P^2 M)`` per right-hand side.
* ``"quadrature"`` (default): the mean field ``F`` is evaluated once per right-hand side on
  tensor Gauss--Hermite nodes of the whitened teacher fields ``z = L^{-1}\nu`` (``T = L L^T``),
  and every particle's drift is ``E_z[(F - f_*)(z) \cdot E_\xi[...]]`` with the inner ``\xi``
  expectations in closed form (derived by SymPy): ``O(P n^M)`` per right-hand side, linear in
  ``P``. Its error falls exponentially with ``n`` (see ``tests/test_meanfield.py``).

``finite_width=True`` adds the ``O(1/P)`` self-interaction of each unit with itself (field
variance ``q_j`` instead of the conditional-independence value): the ``P``-particle drift is then
exactly the committee ODE of width ``K = P`` with readout ``1/P`` at ``eta -> 0`` on the manifold
of zero orthogonal overlaps ``Q_jk = r_j^T T^{-1} r_k`` (``j != k``). The default (``False``) is the
``p -> oo`` limit with the law represented by ``P`` particles.
"""

from __future__ import annotations

import functools
import linecache
import math
import numbers
import types
from dataclasses import dataclass, field

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import sympy as sp
from sympy.printing.numpy import JaxPrinter

from ._activations import X, get_activation
from ._errors import ConfigError
from ._gaussian import NoClosedForm, gaussian_expectation
from ._model import _bool, _matrix, _positive_int, _real
from ._solve import _SOLVERS, check_stop, resolve_save_times, step_controller

# ----------------------------------------------------------------------------- model, init


@dataclass(frozen=True)
class MeanField:
    r"""Wide two-layer network in mean-field scaling (``1/p`` readout), ``M`` teacher units.

    Args:
        M: number of teacher hidden units.
        activation: student activation (see :func:`hildlimits.available_activations`).
        teacher_activation: teacher activation (default: same as the student).
        train_second_layer: whether the readout weights ``a_j`` are trained.
        finite_width: include the ``O(1/P)`` self-interaction of each particle (then ``P``
            particles are exactly a width-``P`` committee at ``eta -> 0``); default: the
            ``p -> oo`` limit.

    Example:
        >>> MeanField(M=1).structure["family"]
        'meanfield'
    """

    M: int
    activation: str = "erf"
    teacher_activation: str | None = None
    train_second_layer: bool = True
    finite_width: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "M", _positive_int("M", self.M))
        get_activation(self.activation, field="activation")
        if self.teacher_activation is None:
            object.__setattr__(self, "teacher_activation", self.activation)
        get_activation(self.teacher_activation, field="teacher_activation")
        _bool("train_second_layer", self.train_second_layer)
        _bool("finite_width", self.finite_width)

    @property
    def structure(self) -> dict:
        return {
            "family": "meanfield",
            "activation": self.activation,
            "teacher_activation": self.teacher_activation,
        }


_SAMPLINGS = ("quantile", "random")


@dataclass(frozen=True, eq=False)
class MeanFieldInit:
    r"""Initial law of the particles and the teacher.

    ``r_j = 0``, ``q_j = q`` (the ``d -> oo`` limit of ``w_j ~ N(0, q I_d)``), and
    ``a_j ~ N(a_mean, a_std^2)`` represented by ``particles`` values (``v_teacher`` defaults to
    ones): the ``(i + 1/2)/P``
    quantiles of the law (``sampling="quantile"``, default: deterministic, error ``O(1/P^2)`` on
    smooth averages) or ``P`` random draws from ``seed`` (``sampling="random"``).

    Raises:
        ConfigError: naming the field (``init.q``, ``init.a_std``, ``init.particles``, ...).
    """

    T: np.ndarray
    v_teacher: np.ndarray | None = None
    q: float = 1.0
    a_mean: float = 0.0
    a_std: float = 1.0
    particles: int = 2048
    sampling: str = "quantile"
    seed: int = 0

    def __post_init__(self) -> None:
        M = np.asarray(self.T).shape[0] if np.ndim(self.T) == 2 else None
        if M is None:
            raise ConfigError(f"init.T must be a square matrix, got {self.T!r}")
        T = _matrix("init.T", self.T, (M, M))
        vt = _matrix(
            "init.v_teacher", np.ones(M) if self.v_teacher is None else self.v_teacher, (M,)
        )
        if not np.allclose(T, T.T, rtol=0, atol=1e-12 * max(1.0, np.abs(T).max())):
            raise ConfigError(f"init.T must be symmetric, got {T.tolist()!r}")
        if np.linalg.eigvalsh(T).min() <= 0:
            raise ConfigError(f"init.T must be positive definite, got {T.tolist()!r}")
        object.__setattr__(self, "T", T)
        object.__setattr__(self, "v_teacher", vt)
        q = _real("init.q", self.q)
        if q <= 0:
            raise ConfigError(f"init.q must be positive (|w_j|^2/d at the start), got {self.q!r}")
        object.__setattr__(self, "q", q)
        object.__setattr__(self, "a_mean", _real("init.a_mean", self.a_mean))
        a_std = _real("init.a_std", self.a_std)
        if a_std < 0:
            raise ConfigError(
                f"init.a_std must be non-negative (a standard deviation), got {a_std!r}"
            )
        object.__setattr__(self, "a_std", a_std)
        object.__setattr__(self, "particles", _positive_int("init.particles", self.particles))
        if self.sampling not in _SAMPLINGS:
            raise ConfigError(f"init.sampling must be one of {_SAMPLINGS}, got {self.sampling!r}")
        s = self.seed
        if isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 0:
            raise ConfigError(f"init.seed must be a non-negative integer, got {s!r}")

    @property
    def M(self) -> int:
        return self.T.shape[0]

    def second_layer(self, n: int | None = None, *, seed: int | None = None) -> np.ndarray:
        """``n`` (default ``particles``) readout weights drawn from the law (see the class)."""
        n = self.particles if n is None else n
        if self.sampling == "quantile":
            from scipy.special import ndtri

            u = (np.arange(n) + 0.5) / n
            return self.a_mean + self.a_std * ndtri(u)
        rng = np.random.default_rng(self.seed if seed is None else seed)
        return self.a_mean + self.a_std * rng.standard_normal(n)

    def state(self) -> dict:
        """The initial particle state ``{"r": (P, M), "q": (P,), "a": (P,)}`` (float64)."""
        P = self.particles
        return {
            "r": np.zeros((P, self.M)),
            "q": np.full(P, self.q),
            "a": np.asarray(self.second_layer(), np.float64),
        }


# ----------------------------------------------------------------------------- derivation

# Field symbols: the particle's own field, population fields (summed with weight a_k / P),
# teacher fields summed with weight v*_m, and the free teacher index n of dr_jn/dtau.
_FIELDS = {
    "j": ("S", sp.Symbol("lambda_j", real=True)),
    "k": ("S", sp.Symbol("lambda_k", real=True)),
    "k'": ("S", sp.Symbol("lambda_k'", real=True)),
    "m": ("T", sp.Symbol("nu_m", real=True)),
    "m'": ("T", sp.Symbol("nu_m'", real=True)),
    "n": ("T", sp.Symbol("nu_n", real=True)),
}
_SYM2IDX = {sym: idx for idx, (_, sym) in _FIELDS.items()}
_g, _gs = sp.Function("g"), sp.Function("g_*")
_a_j = sp.Symbol("a_j", real=True)
_ratio = sp.Symbol("rho_a", nonnegative=True)  # eta_a / eta
_sigma, _zeta = sp.Symbol("sigma", nonnegative=True), sp.Symbol("zeta", real=True)
# markers of the sums: <a_k ...>_k = (1/P) sum_k a_k ..., sum_m v*_m ...
_SUMS = {
    sp.Symbol("A_k"): ("k", "pop"),
    sp.Symbol("A_k'"): ("k'", "pop"),
    sp.Symbol("V_m"): ("m", "teacher"),
    sp.Symbol("V_m'"): ("m'", "teacher"),
}
_MARK = {idx: s for s, (idx, _) in _SUMS.items()}


@dataclass(frozen=True)
class MFTerm:
    """``coeff * [sums] E[prod_s funcs[s](field_s)]`` of one equation of the particle system."""

    coeff: sp.Expr  # in a_j, rho_a
    sums: tuple[str, ...]  # summed indices: "k", "k'" (population), "m", "m'" (teacher)
    fields: tuple[str, ...]  # index of the field of each slot
    funcs: tuple[sp.Expr, ...]  # function of each slot, in X
    labels: tuple[str, ...]  # "g", "g'", "g' id", "g_*", "id" ...
    name: str  # expectation name (pairwise closed form)


@dataclass(frozen=True, eq=False)
class MeanFieldSystem:
    """The derived particle system of a :class:`MeanField` structure (valid for every ``P``, ``M``).

    Attributes:
        structure: activations.
        equations: ``{"r": terms, "q": terms, "a": terms}`` (:class:`MFTerm` lists).
        risk: terms of ``(1/2) E[(yhat - f*)^2]``.
        expectations: name -> (funcs, fields, closed form in covariance symbols ``C_ab``).
        smoothings: label -> closed form of ``E_xi[f(m + sqrt(s2) xi)]`` in ``m``, ``s2``.
    """

    structure: dict
    equations: dict
    risk: tuple
    expectations: dict
    smoothings: dict
    _jax: dict = field(default_factory=dict, repr=False, compare=False)

    def __str__(self) -> str:
        return format_meanfield(self, latex=False)

    def latex(self) -> str:
        return format_meanfield(self, latex=True)

    def markdown(self) -> str:
        """The system as Markdown: the equations in LaTeX, then the readable form with every
        closed form (used by ``derivations/meanfield.py``)."""
        st = self.structure
        return "\n".join(
            [
                f"# Mean-field particle ODEs: {st['activation']} student, "
                f"{st['teacher_activation']} teacher",
                "",
                "Generated by `hildlimits` from the model description; do not edit by hand.",
                "",
                "$$",
                format_meanfield(self, latex=True)
                .replace("\\begin{align}", "\\begin{aligned}")
                .replace("\\end{align}", "\\end{aligned}"),
                "$$",
                "",
                "```",
                format_meanfield(self, latex=False),
                "```",
                "",
            ]
        )

    @property
    def source(self) -> str:
        """Generated JAX source: one function per closed-form expectation and smoothing."""
        if "source" not in self._jax:
            self._jax["source"] = _generate_source(self)
        return self._jax["source"]

    @property
    def module(self):
        if "module" not in self._jax:
            src = self.source
            name = f"<hildlimits-meanfield-{abs(hash(src)) % 10**12}>"
            linecache.cache[name] = (len(src), None, src.splitlines(True), name)
            mod = types.ModuleType("hildlimits_meanfield_generated")
            mod.__file__ = name
            exec(compile(src, name, "exec"), mod.__dict__)
            self._jax["module"] = mod
        return self._jax["module"]

    def write_source(self, path) -> None:
        from pathlib import Path

        Path(path).write_text(self.source)


def _cov_symbol(a: str, b: str) -> sp.Symbol:
    order = list(_FIELDS)
    a, b = sorted((a, b), key=order.index)
    return sp.Symbol(f"C_{a}{b}".replace("'", "p"), positive=(a == b), real=True)


def _label(factors) -> str:
    parts = []
    for f in factors:
        if isinstance(f, sp.Derivative):
            parts.append(("g_*" if f.expr.func == _gs else "g") + "'" * len(f.variables))
        elif isinstance(f, sp.Symbol):
            parts.append("id")
        else:
            parts.append("g_*" if f.func == _gs else "g")
    return " ".join(parts)


def _split(term: sp.Expr):
    """Coefficient, summed indices and per-field factors of one expanded product."""
    coeff, sums, per_field, zeta_power = sp.Integer(1), [], {}, 0
    for fac in sp.Mul.make_args(term):
        base, exp = fac.as_base_exp()
        if base in _SUMS:
            sums.append(_SUMS[base][0])
            continue
        if base == _zeta:
            zeta_power += int(exp)
            continue
        fields = fac.free_symbols & set(_SYM2IDX)
        if not fields:
            coeff *= fac
            continue
        if len(fields) != 1:
            raise ValueError(f"factor {fac} mixes fields")
        idx = _SYM2IDX[fields.pop()]
        per_field.setdefault(idx, []).extend([base] * int(exp))
    return coeff, tuple(sorted(sums)), per_field, zeta_power


def _terms(expr: sp.Expr, acts: dict, store: dict) -> tuple[MFTerm, ...]:
    out: dict[tuple, list] = {}
    for term in sp.Add.make_args(sp.expand(expr)):
        coeff, sums, per_field, zp = _split(term)
        if zp % 2:  # E[zeta] = 0, zeta independent of the fields
            continue
        if zp:
            coeff *= sp.factorial2(zp - 1)
        order = list(_FIELDS)
        fields = tuple(sorted(per_field, key=order.index))
        funcs, labels = [], []
        for idx in fields:
            sym = _FIELDS[idx][1]
            f = sp.Mul(*per_field[idx]).xreplace({sym: X})
            for fn, lam_ in acts.items():
                f = f.replace(fn, lam_)
            funcs.append(sp.simplify(f.doit()))
            labels.append(_label(per_field[idx]))
        key = (sums, fields, tuple(sp.srepr(f) for f in funcs))
        if key not in out:
            out[key] = [sp.Integer(0), sums, fields, tuple(funcs), tuple(labels)]
        out[key][0] += coeff
    terms = []
    for coeff, sums, fields, funcs, labels in out.values():
        coeff = sp.factor_terms(sp.expand(coeff))
        if coeff == 0:
            continue
        ekey = (fields, funcs)
        if ekey not in store:
            cov = sp.ImmutableMatrix([[_cov_symbol(fa, fb) for fb in fields] for fa in fields])
            expr = gaussian_expectation(list(funcs), X, cov=cov).expr if fields else sp.Integer(1)
            store[ekey] = (f"E{len(store)}", funcs, fields, expr, labels)
        terms.append(MFTerm(coeff, sums, fields, funcs, labels, store[ekey][0]))
    return tuple(terms)


def _exp_quadratic(expr: sp.Expr, u: sp.Symbol, B: sp.Symbol):
    """Rewrite ``exp(c u^2)`` factors as ``exp(-B u^2)``; returns (expr, c) or None."""
    exps = [e for e in expr.atoms(sp.exp) if e.has(u)]
    if len(exps) != 1:
        return None
    arg = sp.cancel(exps[0].args[0])
    c = sp.cancel(arg / u**2)
    if c.has(u):
        return None
    return expr.xreplace({exps[0]: sp.exp(-B * u**2)}), -c


@functools.lru_cache(maxsize=64)
def _smoothing(f: sp.Expr) -> sp.Expr:
    r"""``S[f](m, s2) = E_\xi[f(m + \sqrt{s2}\,\xi)]``, derived by SymPy.

    Functions without ``erf`` are integrated against the Gaussian directly; with ``erf``:
    ``S[f](m) = S[f](0) + \int_0^m S[f'](u) du``, the value at ``m = 0`` from the
    Gaussian-expectation engine (a zero-mean expectation) and ``S[f']`` (a Gaussian for erf) by
    recursion.
    """
    m, s2 = _SM, _SS2
    xi = sp.Symbol("xi", real=True)
    if not f.has(sp.erf):
        dens = sp.exp(-(xi**2) / 2) / sp.sqrt(2 * sp.pi)
        val = sp.integrate(
            sp.expand(f.xreplace({X: m + sp.sqrt(s2) * xi}) * dens),
            (xi, -sp.oo, sp.oo),
            conds="none",
        )
        return _tidy_exp(sp.simplify(val))
    at0 = gaussian_expectation([f], X, cov=sp.ImmutableMatrix([[s2]])).expr
    u, B = sp.Symbol("u", real=True), sp.Symbol("B", positive=True)
    d = _smoothing(sp.diff(f, X)).xreplace({m: u})
    rew = _exp_quadratic(d, u, B)
    if rew is None:
        raise NoClosedForm(f"no closed-form Gaussian smoothing for {f}")
    d_b, c = rew
    val = sp.integrate(d_b, (u, 0, m), conds="none").xreplace({B: c})
    return _tidy_exp(sp.simplify(at0 + val))


def _tidy_exp(expr: sp.Expr) -> sp.Expr:
    return expr.replace(lambda e: isinstance(e, sp.exp), lambda e: sp.exp(sp.factor(e.args[0])))


_SM, _SS2 = sp.Symbol("m", real=True), sp.Symbol("s2", nonnegative=True)


def _derive_meanfield(activation: str, teacher_activation: str) -> MeanFieldSystem:
    student, teacher = get_activation(activation), get_activation(teacher_activation)
    acts = {_g: sp.Lambda(X, student.expr), _gs: sp.Lambda(X, teacher.expr)}
    lj, lk, lk2 = (_FIELDS[i][1] for i in ("j", "k", "k'"))
    nm, nm2, nn = (_FIELDS[i][1] for i in ("m", "m'", "n"))
    err = _MARK["k"] * _g(lk) - _MARK["m"] * _gs(nm) - _sigma * _zeta  # yhat - y
    dg_j = sp.Derivative(_g(lj), lj)
    rates = {
        "r": -_a_j * err * dg_j * nn,
        "q": -2 * _a_j * err * dg_j * lj,
        "a": -_ratio * err * _g(lj),
    }
    risk = (
        (_MARK["k"] * _g(lk) - _MARK["m"] * _gs(nm))
        * (_MARK["k'"] * _g(lk2) - _MARK["m'"] * _gs(nm2))
        / 2
    )
    store: dict = {}
    equations = {name: _terms(expr, acts, store) for name, expr in rates.items()}
    risk_terms = _terms(risk, acts, store)
    smoothings = {}
    for terms in list(equations.values()) + [risk_terms]:
        for t in terms:
            for idx, f, lbl in zip(t.fields, t.funcs, t.labels, strict=True):
                if _FIELDS[idx][0] == "S" and lbl not in smoothings:
                    try:
                        smoothings[lbl] = (f, _smoothing(f))
                    except NoClosedForm:
                        smoothings[lbl] = (f, None)
    exps = {v[0]: v[1:] for v in store.values()}
    return MeanFieldSystem(
        structure={
            "family": "meanfield",
            "activation": activation,
            "teacher_activation": teacher_activation,
        },
        equations=equations,
        risk=risk_terms,
        expectations=exps,
        smoothings=smoothings,
    )


@functools.lru_cache(maxsize=16)
def _derive_cached(activation: str, teacher_activation: str) -> MeanFieldSystem:
    return _derive_meanfield(activation, teacher_activation)


def derive_meanfield(model: MeanField) -> MeanFieldSystem:
    r"""Derive the particle drift and the risk of the mean-field limit of ``model``.

    SymPy writes the per-sample increments of ``r_j``, ``q_j``, ``a_j`` in terms of the fields,
    expands them into templates ``coeff * [sums over population / teacher] E[...]`` and hands every
    expectation to the Gaussian-expectation engine (closed forms in the covariance entries
    ``C_ab``); it also derives the Gaussian smoothings ``E_xi[f(m + s xi)]`` used by the
    linear-cost quadrature path. ``P`` and ``M`` stay symbolic.

    Example:
        >>> system = derive_meanfield(MeanField(M=1))
        >>> sorted(system.equations)
        ['a', 'q', 'r']
    """
    if not isinstance(model, MeanField):
        raise TypeError(f"model must be a hildlimits.MeanField, got {type(model).__name__}")
    return _derive_cached(model.activation, model.teacher_activation)


# ----------------------------------------------------------------------------- formatting

_FIELD_TEXT = {
    "j": ("λ_j", r"\lambda_j"),
    "k": ("λ_k", r"\lambda_k"),
    "k'": ("λ_k'", r"\lambda_{k'}"),
    "m": ("ν_m", r"\nu_m"),
    "m'": ("ν_m'", r"\nu_{m'}"),
    "n": ("ν_n", r"\nu_n"),
}


def _slot_text(label: str, idx: str, latex: bool) -> str:
    arg = _FIELD_TEXT[idx][1 if latex else 0]
    parts = []
    for p in label.split():
        parts.append(arg if p == "id" else f"{p}({arg})")
    return (r"\," if latex else " ").join(parts)


def _term_text(t: MFTerm, latex: bool) -> str:
    coeff = sp.latex(t.coeff) if latex else sp.sstr(t.coeff)
    slots = [_slot_text(lbl, idx, latex) for lbl, idx in zip(t.labels, t.fields, strict=True)]
    ex = (
        (r"\mathbb{E}\left[" + r"\,".join(slots) + r"\right]")
        if latex
        else "E[" + " ".join(slots) + "]"
    )
    pre = ""
    for s in t.sums:
        if s.startswith("k"):
            pre += (r"\frac{1}{P}\sum_{" + s + "} a_{" + s + "} ") if latex else f"<a_{s}>_{s} "
        else:
            pre += (r"\sum_{" + s + "} v^*_{" + s + "} ") if latex else f"Σ_{s} v*_{s} "
    return f"({coeff}) {pre}{ex}" if t.fields else f"({coeff}) {pre}"


def format_meanfield(system: MeanFieldSystem, *, latex: bool) -> str:
    st = system.structure
    lhs = {"r": "dr_jn/dτ", "q": "dq_j/dτ", "a": "da_j/dτ"}
    lhs_tex = {
        "r": r"\frac{dr_{jn}}{d\tau}",
        "q": r"\frac{dq_j}{d\tau}",
        "a": r"\frac{da_j}{d\tau}",
    }
    rows = []
    for name, terms in list(system.equations.items()) + [("risk", system.risk)]:
        parts = [_term_text(t, latex) for t in terms]
        if latex:
            left = lhs_tex.get(name, r"\varepsilon")
            rows.append(left + " &= " + r" \\ &\quad + ".join(parts))
        else:
            rows.append(lhs.get(name, "risk") + " =\n    " + "\n  + ".join(parts))
    if latex:
        return "\\begin{align}\n" + " \\\\\n".join(rows) + "\n\\end{align}"
    lines = [
        f"Mean-field particle ODEs (d -> inf, then p -> inf, eta -> 0; tau = eta*steps/d): "
        f"student '{st['activation']}', teacher '{st['teacher_activation']}', readout 1/p.",
        "particle j: r_j = W* w_j/d (M), q_j = |w_j|^2/d, a_j;  rho_a = eta_a/eta;  "
        "<a_k ...>_k = (1/P) sum_k a_k ... over the particles",
        "fields: λ_j = r_j^T T^-1 ν + s_j ξ_j, s_j^2 = q_j - r_j^T T^-1 r_j; "
        "Cov(λ_j, λ_k) = r_j^T T^-1 r_k (j != k), Cov(λ_j, ν) = r_j, Cov(ν) = T",
        "",
    ]
    lines += rows
    lines += ["", "Gaussian expectations (closed forms, covariance entries C_ab):"]
    for name, (_funcs, fields, expr, labels) in system.expectations.items():
        slots = " ".join(_slot_text(lb, f, False) for lb, f in zip(labels, fields, strict=True))
        lines.append(f"  {name} = E[{slots}] = {sp.sstr(expr)}")
    lines += ["", "Gaussian smoothings S[f](m, s2) = E_ξ[f(m + sqrt(s2) ξ)] (quadrature path):"]
    for lbl, (_f, expr) in system.smoothings.items():
        lines.append(f"  S[{lbl}] = {sp.sstr(expr) if expr is not None else 'no closed form'}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- code generation


class _Printer(JaxPrinter):
    def _print_erf(self, expr):
        return f"jax.scipy.special.erf({self._print(expr.args[0])})"


def _fn_source(name: str, args: list[str], expr: sp.Expr, doc: str) -> list[str]:
    pr = _Printer()
    lines = [f"def {name}({', '.join(args)}):", f'    """{doc}"""']
    reps, (red,) = sp.cse([expr], symbols=sp.numbered_symbols("t"))
    for s, v in reps:
        lines.append(f"    {s} = {pr.doprint(v)}")
    lines.append(f"    return {pr.doprint(red)}")
    return lines


def _smooth_name(label: str) -> str:
    return "S_" + label.replace("'", "p").replace("*", "s").replace(" ", "_")


def _generate_source(system: MeanFieldSystem) -> str:
    st = system.structure
    lines = [
        '"""Generated by hildlimits (mean-field particle system) -- do not edit.',
        "",
        f"inputs: activation={st['activation']!r}, teacher_activation={st['teacher_activation']!r}",
        '"""',
        "",
        "import jax",
        "import jax.numpy as jnp",
        "import jax.scipy.special",
        "",
    ]
    for name, (_funcs, fields, expr, labels) in system.expectations.items():
        syms = sorted(expr.free_symbols, key=lambda s: s.name)
        slots = " ".join(_slot_text(lb, f, False) for lb, f in zip(labels, fields, strict=True))
        lines += _fn_source(name, [s.name for s in syms], expr, f"E[{slots}] (closed form).")
        lines += ["", ""]
    for lbl, (_f, expr) in system.smoothings.items():
        if expr is None:
            continue
        lines += _fn_source(
            _smooth_name(lbl), ["m", "s2"], expr, f"E_xi[{lbl}(m + sqrt(s2) xi)] (closed form)."
        )
        lines += ["", ""]
    g = get_activation(st["teacher_activation"]).expr
    lines += _fn_source("teacher_g", ["x"], g, "teacher activation g_*(x).")
    return "\n".join(lines).rstrip() + "\n"


# ----------------------------------------------------------------------------- evaluation


def _whiten(T):
    L = jnp.linalg.cholesky(T)
    return L


def _particle_geometry(y, T, finite_width: bool):
    r = y["r"]
    L = _whiten(T)
    rho = jax.scipy.linalg.solve_triangular(L, r.T, lower=True).T  # (P, M), r^T T^-1 r = |rho|^2
    rr = jnp.sum(rho**2, axis=1)
    return rho, rr, L


def _pairwise_terms(
    system, terms, y, a, args, *, free: tuple[str, ...], diag: bool, cross_diag, Cpp=None
):
    """Sum of ``terms`` by closed forms on index grids.

    ``free``: output indices (``("j",)``, ``("j", "n")`` or ``()``). ``diag``: population index
    ``k`` bound to ``j`` (and ``k'`` to ``k``), i.e. the self-interaction only. ``cross_diag``:
    the value of ``C_jk`` for ``j == k`` (``q`` or ``r^T T^-1 r``). ``Cpp``: explicit
    student-student covariances (e.g. the measured overlaps of a finite network).
    """
    mod = system.module
    T, vt = args["T"], args["v_teacher"]
    rho, rr, _ = _particle_geometry(y, T, False)
    P, M = y["r"].shape
    if Cpp is None:  # zero orthogonal overlaps: C_jk = r_j^T T^-1 r_k
        idx = jnp.arange(P)
        Cpp = (rho @ rho.T).at[idx, idx].set(cross_diag)
    total = 0.0
    for t in terms:
        used = set(t.fields) | set(t.sums) | set(free)
        alias = {}
        if diag:
            if "j" in used and "k" in used:
                alias["k"] = "j"
            elif "k" in used and "k'" in used:
                alias["k'"] = "k"
        axes = [i for i in ("j", "n", "k", "k'", "m", "m'") if i in used and i not in alias]
        pos = {i: axes.index(alias.get(i, i)) for i in used}
        size = {i: (P if _FIELDS[i][0] == "S" else M) for i in axes}
        nd = len(axes)

        def place(arr, names, nd=nd, pos=pos):
            shape = [1] * nd
            for ax_name in names:
                shape[pos[ax_name]] = arr.shape[names.index(ax_name)]
            if len(names) == 2 and pos[names[0]] > pos[names[1]]:
                arr = arr.T
            return arr.reshape(shape)

        def cov(a_, b_, place=place, pos=pos):
            ka, kb = _FIELDS[a_][0], _FIELDS[b_][0]
            if a_ == b_:
                return place(y["q"] if ka == "S" else jnp.diagonal(T), [a_])
            if pos[a_] == pos[b_]:  # bound by the diagonal
                return place(cross_diag if ka == "S" else jnp.diagonal(T), [a_])
            if ka == kb == "S":
                mat = Cpp
            elif ka == "S":
                mat = y["r"]
            elif kb == "S":
                mat = y["r"].T
            else:
                mat = T
            return place(mat, [a_, b_])

        funcs, fields, expr, labels = system.expectations[t.name]
        kw = {}
        for s in sorted(expr.free_symbols, key=lambda s: s.name):
            a_, b_ = _sym_pair(s.name, fields)
            kw[s.name] = cov(a_, b_)
        val = getattr(mod, t.name)(**kw) if kw else jnp.asarray(float(expr))
        coeff = (
            float(t.coeff.subs({_a_j: 1, _ratio: 1})) if t.coeff.free_symbols else float(t.coeff)
        )
        w = coeff * jnp.ones([1] * nd)
        if t.coeff.has(_a_j):
            w = w * place(a, ["j"])
        if t.coeff.has(_ratio):
            w = w * args["ratio"]
        for s in t.sums:
            if _FIELDS[s][0] == "S":
                w = w * place(a / P, [s])
            else:
                w = w * place(vt, [s])
        val = jnp.broadcast_to(val * w, [size[i] for i in axes])
        sum_axes = tuple(ax for ax, i in enumerate(axes) if i not in free)
        val = val.sum(axis=sum_axes) if sum_axes else val
        total = total + val
    return total


def _sym_pair(name: str, fields) -> tuple[str, str]:
    body = name[2:].replace("p", "'")
    for a_ in sorted(fields, key=len, reverse=True):
        if body.startswith(a_):
            rest = body[len(a_) :]
            if rest in fields:
                return a_, rest
    raise ValueError(f"cannot parse covariance symbol {name}")


def gauss_hermite(M: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Tensor Gauss--Hermite nodes ``(n^M, M)`` and weights (sum 1) for ``z ~ N(0, I_M)``."""
    x, w = np.polynomial.hermite_e.hermegauss(n)
    w = w / w.sum()
    grids = np.meshgrid(*([x] * M), indexing="ij")
    wg = np.meshgrid(*([w] * M), indexing="ij")
    nodes = np.stack([gr.ravel() for gr in grids], axis=1)
    weights = np.prod(np.stack([gr.ravel() for gr in wg], axis=1), axis=1)
    return nodes, weights


def default_nodes(M: int) -> int:
    """Default Gauss--Hermite nodes per teacher dimension (``n^M`` nodes in all)."""
    return {1: 64, 2: 32, 3: 14}.get(M, 8)


def _quadrature_terms(system, terms, y, a, args, *, free):
    """Sum of ``terms`` through the mean field on quadrature nodes (``O(P n^M)``)."""
    mod = system.module
    T, vt = args["T"], args["v_teacher"]
    rho, rr, L = _particle_geometry(y, T, False)
    P, M = y["r"].shape
    z, wz = args["_nodes"], args["_weights"]  # (Z, M), (Z,)
    nu = z @ L.T  # (Z, M)
    mu = rho @ z.T  # (P, Z)
    s2 = jnp.clip(y["q"] - rr, 0.0, None)[:, None]
    gs = mod.teacher_g
    cache = {}

    def smooth(lbl):
        if lbl not in cache:
            cache[lbl] = jnp.broadcast_to(getattr(mod, _smooth_name(lbl))(mu, s2), mu.shape)
        return cache[lbl]

    total = 0.0
    for t in terms:
        if not any(_FIELDS[f][0] == "S" for f in t.fields):
            continue  # teacher-only terms: closed form, added by the caller
        prod = jnp.ones_like(wz)
        part = None
        nfree = None
        for idx, lbl, f in zip(t.fields, t.labels, t.funcs, strict=True):
            if _FIELDS[idx][0] == "S":
                S = smooth(lbl)
                if idx == "j":
                    part = S
                else:
                    prod = prod * ((a / P) @ S)
            else:
                vals = jnp.ones_like(nu) if f == 1 else (nu if f == X else gs(nu))
                if lbl not in ("id", "g_*"):
                    raise NoClosedForm(f"unsupported teacher factor {lbl}")
                if idx == "n":
                    nfree = vals  # (Z, M)
                else:
                    prod = prod * (vals @ vt)
        coeff = (
            float(t.coeff.subs({_a_j: 1, _ratio: 1})) if t.coeff.free_symbols else float(t.coeff)
        )
        wp = wz * prod
        if part is None:  # risk: no particle field
            val = coeff * jnp.sum(wp)
        elif nfree is None:
            val = coeff * (part @ wp)
        else:
            val = coeff * (part @ (wp[:, None] * nfree))
        if t.coeff.has(_a_j):
            val = val * (a if val.ndim == 1 else a[:, None])
        if t.coeff.has(_ratio):
            val = val * args["ratio"]
        total = total + val
    return total


def _equation(system, name, y, a, args, method, finite_width):
    terms = system.equations[name]
    free = ("j", "n") if name == "r" else ("j",)
    _, rr, _ = _particle_geometry(y, args["T"], False)
    cross = y["q"] if finite_width else rr
    if method == "pairwise":
        return _pairwise_terms(system, terms, y, a, args, free=free, diag=False, cross_diag=cross)
    out = _quadrature_terms(system, terms, y, a, args, free=free)
    teacher_only = [t for t in terms if not any(_FIELDS[f][0] == "S" for f in t.fields)]
    if teacher_only:
        out = out + _pairwise_terms(
            system, teacher_only, y, a, args, free=free, diag=False, cross_diag=cross
        )
    if finite_width:  # exact self-interaction minus its conditional-independence value
        self_terms = [t for t in terms if "k" in t.fields]
        out = out + _pairwise_terms(
            system, self_terms, y, a, args, free=free, diag=True, cross_diag=y["q"]
        )
        out = out - _pairwise_terms(
            system, self_terms, y, a, args, free=free, diag=True, cross_diag=rr
        )
    return out


def drift(system, y, args, *, method: str = "quadrature", finite_width: bool = False):
    """``{"r": (P, M), "q": (P,), "a": (P,)}``: the particle drift at state ``y`` (traceable).

    ``args``: ``T``, ``v_teacher``, ``ratio`` (``eta_a/eta``; 0 freezes ``a``), and for the
    quadrature path ``_nodes``/``_weights`` (:func:`gauss_hermite`); ``y`` holds ``r``, ``q`` and
    ``a``.
    """
    a = y["a"]
    out = {
        "r": _equation(system, "r", y, a, args, method, finite_width),
        "q": _equation(system, "q", y, a, args, method, finite_width),
        "a": _equation(system, "a", y, a, args, method, finite_width),
    }
    return out


def risk(system, y, args, *, method: str = "quadrature", finite_width: bool = False):
    """``(1/2) E[(yhat - f*)^2]`` of the particle state (the noiseless teacher)."""
    a = y["a"]
    terms = system.risk
    _, rr, _ = _particle_geometry(y, args["T"], False)
    cross = y["q"] if finite_width else rr
    if method == "pairwise":
        return _pairwise_terms(system, terms, y, a, args, free=(), diag=False, cross_diag=cross)
    out = _quadrature_terms(system, terms, y, a, args, free=())
    teacher_only = [t for t in terms if not any(_FIELDS[f][0] == "S" for f in t.fields)]
    out = out + _pairwise_terms(
        system, teacher_only, y, a, args, free=(), diag=False, cross_diag=cross
    )
    if finite_width:
        pair = [t for t in terms if "k" in t.fields and "k'" in t.fields]
        out = out + _pairwise_terms(system, pair, y, a, args, free=(), diag=True, cross_diag=y["q"])
        out = out - _pairwise_terms(system, pair, y, a, args, free=(), diag=True, cross_diag=rr)
    return out


# ----------------------------------------------------------------------------- solve


@dataclass(frozen=True, eq=False)
class MeanFieldTrajectory:
    """Solution of the particle ODEs at the save times (read-only arrays).

    Attributes:
        t: save times in ``tau = eta * steps / d``, ``(n,)``.
        r: ``(n, P, M)``; q: ``(n, P)``; a: ``(n, P)`` particle states.
        risk: ``(n,)``; status: ``"ok"`` or ``"diverged at t=..."``; t_stop, num_steps.
        timings: ``compile`` (0 when an executable of the same shapes was cached) and ``run``
            seconds.
    """

    t: np.ndarray
    r: np.ndarray
    q: np.ndarray
    a: np.ndarray
    risk: np.ndarray
    T: np.ndarray
    v_teacher: np.ndarray
    status: str
    t_stop: float
    num_steps: int
    method: str
    nodes: int | None
    timings: dict = field(default_factory=dict)

    @property
    def diverged(self) -> bool:
        return self.status.startswith("diverged")

    def to_dict(self) -> dict:
        return {
            "t": self.t.tolist(),
            "risk": self.risk.tolist(),
            "r": self.r.tolist(),
            "q": self.q.tolist(),
            "a": self.a.tolist(),
            "T": self.T.tolist(),
            "v_teacher": self.v_teacher.tolist(),
            "status": self.status,
            "t_stop": self.t_stop,
            "num_steps": self.num_steps,
            "method": self.method,
            "quadrature_nodes": self.nodes,
            "time_unit": "tau = lr * steps / d",
        }


_METHODS = ("quadrature", "pairwise")


def _make_args(system, init: MeanFieldInit, ratio: float, method: str, nodes: int | None):
    f64 = np.float64
    args = {
        "T": np.asarray(init.T, f64),
        "v_teacher": np.asarray(init.v_teacher, f64),
        "ratio": f64(ratio),
    }
    if method == "quadrature":
        z, w = gauss_hermite(init.M, nodes)
        args["_nodes"], args["_weights"] = z, w
    return args


def solve_meanfield(
    system: MeanFieldSystem,
    *,
    model: MeanField,
    init: MeanFieldInit,
    lr: float,
    lr_second_layer: float | None = None,
    t1: float | None = None,
    n_save: int = 200,
    spacing: str = "log",
    t_first: float | None = None,
    rtol: float = 1e-8,
    atol: float = 1e-10,
    solver: str = "tsit5",
    max_steps: int = 100_000,
    divergence_bound: float = 1e8,
    steady_state: float | None = None,
    ts=None,
    method: str = "quadrature",
    nodes: int | None = None,
    y0: dict | None = None,
) -> MeanFieldTrajectory:
    r"""Integrate the particle ODEs (float64, diffrax, scoped ``jax.enable_x64``).

    Args:
        system: from :func:`derive_meanfield`. model: the :class:`MeanField` (``finite_width``,
            ``train_second_layer``). init: :class:`MeanFieldInit` (``particles`` sets ``P``).
        lr, lr_second_layer: ``eta`` and ``eta_a``; only ``eta_a/eta`` enters the ODE (in
            ``tau``); ``lr_second_layer`` defaults to ``lr``.
        t1, n_save, spacing, t_first, ts: save times in ``tau`` as in :func:`hildlimits.solve`.
        rtol, atol, solver, max_steps, divergence_bound: as in :func:`hildlimits.solve`.
        method: ``"quadrature"`` (``O(P n^M)`` per right-hand side, default) or ``"pairwise"``
            (exact closed forms, ``O(P^2 M)``; memory ``O(P^2 M)``, for ``P`` up to ~2000).
        nodes: Gauss--Hermite nodes per teacher dimension (default :func:`default_nodes`).
        y0: explicit initial state ``{"r", "q", "a"}`` (default ``init.state()``).

    Returns:
        :class:`MeanFieldTrajectory`.

    Raises:
        ConfigError: invalid options. SolveError: the step budget ran out, or the step size
        collapsed without a blow-up.

    Example:
        >>> import hildlimits as hl
        >>> model = hl.MeanField(M=1)
        >>> init = hl.MeanFieldInit(T=[[1.0]], v_teacher=[1.0], particles=64)
        >>> tr = hl.solve_meanfield(hl.derive_meanfield(model), model=model, init=init,
        ...                         lr=0.05, t1=1.0, n_save=3, spacing="linear")
        >>> tr.r.shape
        (3, 64, 1)
    """
    import time

    if not isinstance(model, MeanField):
        raise TypeError(f"model must be a hildlimits.MeanField, got {type(model).__name__}")
    if not isinstance(init, MeanFieldInit):
        raise TypeError(f"init must be a hildlimits.MeanFieldInit, got {type(init).__name__}")
    if init.M != model.M:
        raise ConfigError(f"init.T must be {model.M}x{model.M} (model.M={model.M}), got {init.M}")
    if method not in _METHODS:
        raise ConfigError(f"method must be one of {_METHODS}, got {method!r}")
    eta = _real("training.lr", lr)
    if eta <= 0:
        raise ConfigError(f"training.lr must be positive (tau = lr * steps / d), got {lr!r}")
    eta_a = eta if lr_second_layer is None else _real("training.lr_second_layer", lr_second_layer)
    if eta_a < 0:
        raise ConfigError(f"training.lr_second_layer must be non-negative, got {eta_a!r}")
    ratio = eta_a / eta if model.train_second_layer else 0.0
    nodes = default_nodes(model.M) if nodes is None else _positive_int("nodes", nodes)
    if method == "quadrature" and any(v[1] is None for v in system.smoothings.values()):
        raise ConfigError(
            "method 'quadrature' needs closed-form Gaussian smoothings of the activation; "
            "use method='pairwise'"
        )
    ts = resolve_save_times(
        ts=ts,
        t1=t1,
        n_save=n_save,
        spacing=spacing,
        t_first=t_first,
        rtol=rtol,
        atol=atol,
        solver=solver,
        max_steps=max_steps,
        divergence_bound=divergence_bound,
        steady_state=steady_state,
        who="solve_meanfield",
    )
    state0 = init.state() if y0 is None else {k: np.asarray(v, np.float64) for k, v in y0.items()}
    with jax.enable_x64(True):
        args = _make_args(system, init, ratio, method, nodes)
        scale = 1.0 + max(float(np.abs(v).max()) for v in state0.values())
        args["_state_bound"] = np.float64(divergence_bound * scale)
        args["_risk_bound"] = np.float64(divergence_bound)
        run = _compiled(system, method, model.finite_width, solver, max_steps, len(ts))
        t0 = time.perf_counter()
        # compiled executables are kept per shape (P, M, nodes, save times): compile once
        exe_key = ("exe", method, model.finite_width, solver, max_steps, len(ts))
        exe_key += (state0["r"].shape, args.get("_nodes", np.zeros(0)).shape)
        comp = system._jax.get(exe_key)
        if comp is None:
            comp = run.lower(state0, args, jnp.asarray(ts), float(rtol), float(atol)).compile()
            system._jax[exe_key] = comp
        t_compile = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = comp(state0, args, jnp.asarray(ts), float(rtol), float(atol))
        out = jax.device_get(jax.block_until_ready(out))
        t_run = time.perf_counter() - t0
    return _trajectory(
        out, ts, init, method, nodes, max_steps, {"compile": t_compile, "run": t_run}
    )


def _compiled(system, method, finite_width, solver, max_steps, n_save):
    key = ("solve", method, finite_width, solver, max_steps, n_save)
    if key in system._jax:
        return system._jax[key]

    def vf(t, y, args):
        return drift(system, y, args, method=method, finite_width=finite_width)

    def risk_fn(y, args):
        return risk(system, y, args, method=method, finite_width=finite_width)

    def diverged(t, y, args, **kwargs):
        leaves = jax.tree.leaves(y)
        finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))
        big = jnp.max(jnp.stack([jnp.max(jnp.abs(x)) for x in leaves])) > args["_state_bound"]
        return (~finite) | big

    def run(y0, args, ts, rtol, atol):
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(vf),
            _SOLVERS[solver](),
            t0=ts[0],
            t1=ts[-1],
            dt0=None,
            y0=y0,
            args=args,
            saveat=diffrax.SaveAt(subs=(diffrax.SubSaveAt(ts=ts), diffrax.SubSaveAt(t1=True))),
            stepsize_controller=step_controller(ts, rtol, atol),
            event=diffrax.Event(diverged),
            max_steps=max_steps,
            throw=False,
        )
        ys = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), sol.ys[0], sol.ys[1])
        risks = jax.lax.map(lambda y: risk_fn(y, args), ys)
        return {
            "ts": jnp.concatenate([sol.ts[0], sol.ts[1]]),
            "ys": ys,
            "risk": risks,
            "event": sol.result == diffrax.RESULTS.event_occurred,
            "ok": sol.result == diffrax.RESULTS.successful,
            "max_steps": sol.result == diffrax.RESULTS.max_steps_reached,
            "num_steps": sol.stats["num_steps"],
        }

    system._jax[key] = jax.jit(run)
    return system._jax[key]


def _trajectory(out, ts_req, init, method, nodes, max_steps, timings) -> MeanFieldTrajectory:
    ts = np.asarray(out["ts"])
    t_stop = float(ts[-1])
    t1 = float(ts_req[-1])
    blow_up = check_stop(out, t1, max_steps)
    if bool(out["event"]) or blow_up:
        status = f"diverged at t={t_stop:.6g}"
        rows = np.concatenate([np.nonzero(ts[:-1] < t_stop)[0], [len(ts) - 1]])
    else:
        status = "ok"
        rows = np.arange(len(ts) - 1)
    ys = out["ys"]
    fin = np.isfinite(ys["r"][rows]).all(axis=(1, 2)) & np.isfinite(ys["q"][rows]).all(axis=1)
    rows = rows[fin]

    def ro(x):
        x = np.array(x, np.float64)
        x.setflags(write=False)
        return x

    return MeanFieldTrajectory(
        t=ro(ts[rows]),
        r=ro(ys["r"][rows]),
        q=ro(ys["q"][rows]),
        a=ro(ys["a"][rows]),
        risk=ro(out["risk"][rows]),
        T=init.T,
        v_teacher=init.v_teacher,
        status=status,
        t_stop=t_stop,
        num_steps=int(out["num_steps"]),
        method=method,
        nodes=nodes if method == "quadrature" else None,
        timings=timings,
    )


def drift_numpy(
    system,
    model: MeanField,
    init: MeanFieldInit,
    y: dict,
    *,
    lr=1.0,
    lr_second_layer=None,
    method="quadrature",
    nodes=None,
) -> dict:
    """The drift at state ``y`` as NumPy arrays (float64; for checks and tests)."""
    eta_a = lr if lr_second_layer is None else lr_second_layer
    ratio = eta_a / lr if model.train_second_layer else 0.0
    nodes = default_nodes(model.M) if nodes is None else nodes
    with jax.enable_x64(True):
        args = _make_args(system, init, ratio, method, nodes)
        yj = {k: jnp.asarray(v, jnp.float64) for k, v in y.items()}
        out = drift(system, yj, args, method=method, finite_width=model.finite_width)
        rk = risk(system, yj, args, method=method, finite_width=model.finite_width)
        res = {k: np.asarray(v) for k, v in out.items()}
        res["risk"] = float(rk)
        return res


__all__ = [
    "MeanField",
    "MeanFieldInit",
    "MeanFieldSystem",
    "MeanFieldTrajectory",
    "derive_meanfield",
    "solve_meanfield",
    "drift_numpy",
    "gauss_hermite",
    "default_nodes",
    "math",
]
