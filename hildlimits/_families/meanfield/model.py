r"""Mean-field limit of wide two-layer networks: particle ODEs derived, generated and solved.

Model (conventions of this module; see docs/meanfield.md)::

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

* ``"pairwise"``: every particle--particle and particle--teacher expectation from the
  Gaussian-expectation engine with the committee's numerical paths (for erf the Saad--Solla
  ``I2``/``I3`` closed forms with the effective covariance ``C_jk = r_j^T T^{-1} r_k``; tanh and
  sigmoid as Kolmogorov scale mixtures of erf, relu by the sign/delta rules, Gauss--Hermite
  where nothing else applies): ``O(P^2 M)`` per right-hand side.
* ``"quadrature"`` (default): the mean field ``F`` is evaluated once per right-hand side on
  tensor Gauss--Hermite nodes of the whitened teacher fields ``z = L^{-1}\nu`` (``T = L L^T``),
  and every particle's drift is ``E_z[(F - f_*)(z) \cdot E_\xi[...]]`` with the inner ``\xi``
  expectations (Gaussian smoothings, :func:`smoothing_rule`: closed forms, scale mixtures of erf
  for tanh/sigmoid, partial Gaussian moments for kinks): ``O(P n^M)`` per right-hand side, linear
  in ``P``. Its error falls exponentially with ``n`` (see ``tests/test_meanfield.py``).
  Particle--teacher terms whose teacher factor is kinked or not entire (relu, sign, tanh) are
  taken from the pairwise expectations (``O(P M^2)``), where the rule in ``z`` converges slowly.

``finite_width=True`` adds the ``O(1/P)`` self-interaction of each unit with itself (field
variance ``q_j`` instead of the conditional-independence value): the ``P``-particle drift is then
exactly the committee ODE of width ``K = P`` with readout ``1/P`` at ``eta -> 0`` on the manifold
of zero orthogonal overlaps ``Q_jk = r_j^T T^{-1} r_k`` (``j != k``). The default (``False``) is the
``p -> oo`` limit with the law represented by ``P`` particles.
"""

from __future__ import annotations

import functools
import math
import numbers
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
import sympy as sp

from hildlimits._engine.activations import X, get_activation
from hildlimits._engine.codegen import (
    _IMPORTS,
    _WEIGHTED_SUM,
    _Printer,
    function_source,
    load_module,
)
from hildlimits._engine.gaussian import (
    DEFAULT_LINE_NODES,
    DEFAULT_MIXTURE_NODES,
    ELL,
    KINKS,
    MU,
    NoClosedForm,
    _mixture_factor,
    atoms_of,
    gaussian_expectation,
    smoothed_kink,
    tanh_polynomial,
)
from hildlimits._errors import ConfigError
from hildlimits._families.committee.derive import DEFAULT_GH_NODES, ExpectationEntry, _needs_merging
from hildlimits._pipeline.runner import RunStatus
from hildlimits._pipeline.validators import boolean as _bool
from hildlimits._pipeline.validators import matrix as _matrix
from hildlimits._pipeline.validators import positive_int as _positive_int
from hildlimits._pipeline.validators import real as _real
from hildlimits._pipeline.validators import square_matrix as _square_matrix

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
        # g' enters every update: a student activation without a derivative (sign) is refused
        get_activation(self.activation, field="model.activation", student=True)
        if self.teacher_activation is None:
            object.__setattr__(self, "teacher_activation", self.activation)
        get_activation(self.teacher_activation, field="model.teacher_activation")
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
        T = _square_matrix("init.T", self.T)
        M = T.shape[0]
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
    # expectation with the population slot merged into the particle's ("k" into "j", "k'" into
    # "k"), for the exact self-interaction (finite_width) where the expectation's closed form is
    # singular at coincident fields (sign/delta rules: relu, ...); "" where none is needed
    merged: str = ""


@dataclass(frozen=True, eq=False)
class MeanFieldSystem:
    """The derived particle system of a :class:`MeanField` structure (valid for every ``P``, ``M``).

    Attributes:
        structure: activations.
        equations: ``{"r": terms, "q": terms, "a": terms}`` (:class:`MFTerm` lists).
        risk: terms of ``(1/2) E[(yhat - f*)^2]``.
        expectations: name -> (funcs, fields, expression in covariance symbols ``C_ab``,
            labels): a closed form, or one with numerical calls (scale mixture, Gauss--Hermite,
            Price line integral) as for the committee.
        smoothings: label -> (f, ``E_xi[f(m + sqrt(s2) xi)]`` in ``m``, ``s2``): a closed form,
            or a :class:`XiMixture` / :class:`XiGaussHermite` call (numerical).
        methods: how each was derived, keyed by expectation name and ``S[label]``.
    """

    structure: dict
    equations: dict
    risk: tuple
    expectations: dict
    smoothings: dict
    methods: dict = field(default_factory=dict)
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
        """Generated JAX source: one function per expectation, smoothing and teacher factor
        (printed by the committee's printer, numerical paths included)."""
        if "source" not in self._jax:
            self._jax["source"] = _generate_source(self)
        return self._jax["source"]

    @property
    def module(self):
        """The generated module (loaded as the committee's)."""
        if "module" not in self._jax:
            self._jax["module"] = load_module(source=self.source, kind="meanfield")
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
        entry = _store_entry(store, fields, funcs, labels)
        merged = ""
        pair = ("j", "k") if "j" in fields else ("k", "k'")
        if set(pair) <= set(fields) and _needs_merging(
            ExpectationEntry(entry[0], funcs, labels, entry[3], entry[5])
        ):
            keep = [i for i, f in enumerate(fields) if f != pair[1]]
            a_, b_ = fields.index(pair[0]), fields.index(pair[1])
            m_funcs = [funcs[i] for i in keep]
            m_labels = [labels[i] for i in keep]
            m_funcs[keep.index(a_)] = sp.expand(funcs[a_] * funcs[b_])
            m_labels[keep.index(a_)] = f"{labels[a_]}·{labels[b_]}"
            merged = _store_entry(
                store, tuple(fields[i] for i in keep), tuple(m_funcs), tuple(m_labels)
            )[0]
        terms.append(MFTerm(coeff, sums, fields, funcs, labels, entry[0], merged))
    return tuple(terms)


def _store_entry(store: dict, fields: tuple, funcs: tuple, labels: tuple) -> tuple:
    """``(name, funcs, fields, expr, labels, method)`` of an expectation, derived once."""
    ekey = (fields, funcs)
    if ekey not in store:
        expr, method = _expectation(funcs, fields)
        store[ekey] = (f"E{len(store)}", funcs, fields, expr, labels, method)
    return store[ekey]


def _expectation(funcs: tuple, fields: tuple) -> tuple[sp.Expr, str]:
    """Expression and method of ``E[prod_s funcs[s](field_s)]`` in the covariance symbols of
    ``fields``: the Gaussian-expectation engine with the committee's numerical paths and node
    counts (:meth:`hildlimits._families.committee.derive._Builder._entry`): closed form where the rules reach one,
    else the Price line integral (four odd factors), the Kolmogorov scale mixture (factors
    polynomial in tanh: tanh, sigmoid, their derivatives), or Gauss--Hermite quadrature that
    follows kinks at 0."""
    if not fields:
        return sp.Integer(1), "constant"
    cov = sp.ImmutableMatrix([[_cov_symbol(fa, fb) for fb in fields] for fa in fields])
    e = gaussian_expectation(
        list(funcs),
        X,
        cov=cov,
        line_nodes=DEFAULT_LINE_NODES,
        quadrature_nodes=DEFAULT_GH_NODES[len(funcs)],
        mixture_nodes=DEFAULT_MIXTURE_NODES,
    )
    return e.expr, e.method


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

SMOOTHING_MIXTURE_NODES = 32
"""Nodes of the Kolmogorov rule (26 after pruning weights below 1e-15) of a scale-mixture
smoothing. Measured against adaptive quadrature (scipy ``quad``) on m in [-4, 4], s2 in
[0, 10]: max error 1.2e-12 for tanh, sech^2, x sech^2, sigmoid and its derivatives (16 nodes:
2e-8; 48 nodes: 5e-16)."""
SMOOTHING_GH_NODES = 96
"""Gauss--Hermite nodes in xi of a smoothing without closed form or scale mixture (smooth
functions converge exponentially; a kink that is not followed converges slowly)."""
_TINY_VARIANCE = 1e-30  # floor of s2 in closed forms that divide by s = sqrt(s2) (kinks)


class XiMixture(sp.Function):
    r"""``E_\beta[h(m, s2, \beta)]``: the mean of a closed form ``h`` over the Kolmogorov scale-
    mixture variables ``\beta = 1/(\sqrt2 K)`` (``\tanh(y) = E_K[\operatorname{erf}(\beta y)]``,
    ``\operatorname{sech}^2(y) = E_K[(2\beta/\sqrt\pi) e^{-\beta^2 y^2}]``).

    Arguments: ``(h, betas, nodes)``: ``h`` in ``m``, ``s2`` and the Symbols ``betas`` (a Tuple),
    ``nodes`` of the Gauss rule per mixture variable."""

    @classmethod
    def eval(cls, *args):
        return None


class XiGaussHermite(sp.Function):
    r"""``E_\xi[f(m + \sqrt{s2}\,\xi)]`` by Gauss--Hermite quadrature in ``\xi``.

    Arguments: ``(f, nodes)`` with ``f`` an expression in the activation variable ``x``."""

    @classmethod
    def eval(cls, *args):
        return None


@functools.lru_cache(maxsize=64)
def smoothing_rule(f: sp.Expr) -> tuple[sp.Expr, str]:
    r"""``S[f](m, s2) = E_\xi[f(m + \sqrt{s2}\,\xi)]`` and how it was derived.

    In this order: a kink at 0 with polynomial parts (``relu``, ``Heaviside``, ``sign``, ``|x|``,
    ``x H(x)``) in closed form from partial Gaussian moments (``smoothed_kink`` of the engine,
    e.g. ``S[relu] = m \Phi(m/s) + s \varphi(m/s)``; other kinks: Gauss--Hermite); a polynomial in
    ``\tanh(c x)`` with one mixture variable (``tanh``, ``sigmoid``, their derivatives, times
    polynomials) as the Kolmogorov scale mixture of erf and Gaussian smoothings, each in closed
    form (:class:`XiMixture`, :data:`SMOOTHING_MIXTURE_NODES`); functions of the engine's atoms
    (polynomials, Gaussians, ``erf``, ``sin``/``cos``, ...) in closed form by SymPy
    (:func:`_smoothing`); anything else by Gauss--Hermite quadrature in ``\xi``
    (:class:`XiGaussHermite`, :data:`SMOOTHING_GH_NODES`).
    """
    f = sp.sympify(f)
    m, s2 = _SM, _SS2
    if not f.has(X):
        return f, "constant"
    gh = XiGaussHermite(f, sp.Integer(SMOOTHING_GH_NODES))
    gh_text = f"numerical: Gauss-Hermite quadrature in ξ, {SMOOTHING_GH_NODES} nodes"
    if f.has(*KINKS) and not f.has(sp.DiracDelta):
        closed = smoothed_kink(f, X)
        if closed is not None:
            ell = sp.sqrt(sp.Max(s2, sp.Float(_TINY_VARIANCE)))
            return (
                closed.xreplace({MU: m, ELL: ell}),
                "closed form (kink at 0, f = s0 + s1 sign with polynomial s0, s1: partial "
                "Gaussian moments)",
            )
        return gh, gh_text + " (kink not followed: slow convergence)"
    if tanh_polynomial(f, X) is not None:
        integrand, betas = _mixture_factor(f, X, 0)
        if len(betas) == 1:
            try:
                inner = _atom_smoothing(atoms_of(integrand, X))
            except NoClosedForm:
                inner = None
            if inner is not None:
                n = SMOOTHING_MIXTURE_NODES
                return (
                    XiMixture(inner, sp.Tuple(*betas), sp.Integer(n)),
                    f"numerical: tanh as a Kolmogorov scale mixture of erf, {n} mixture nodes, "
                    "each in closed form",
                )
    try:
        atoms = atoms_of(f, X)
    except NoClosedForm:  # a factor outside the engine's atoms (softplus, tanh^3, ...)
        return gh, gh_text
    if all(at.kind is None and at.alpha.is_nonnegative for at in atoms):
        return _atom_smoothing(atoms), "closed form (Gaussian integral of the engine's atoms)"
    # erf: S[f](0) + int_0^m S[f'], recursing until a derivative is free of erf
    if any(not sp.diff(f, X, k).has(sp.erf) for k in range(1, 4)):
        try:
            expr = _smoothing(f)
        except Exception:  # noqa: BLE001 -- no rule or SymPy's integrator failed: quadrature
            expr = None
        if expr is not None and not expr.has(sp.Integral):
            return (
                expr,
                "closed form (S[f](0) from the Gaussian engine + SymPy integral of S[f'] in m)",
            )
    return gh, gh_text


def _gauss_atom(k: int, alpha: sp.Expr, gamma: sp.Expr) -> sp.Expr:
    """``E_xi[z^k e^{-alpha z^2 + gamma z}]``, ``z = m + sqrt(s2) xi`` (see
    :func:`_atom_smoothing`)."""
    m, s2 = _SM, _SS2
    D = 1 + 2 * alpha * s2
    mean, var = (m + gamma * s2) / D, s2 / D
    moments = sum(
        (
            sp.binomial(k, j) * mean ** (k - j) * var ** (j // 2) * sp.factorial2(j - 1)
            for j in range(0, k + 1, 2)
        ),
        sp.Integer(0),
    )
    norm = sp.exp((2 * m * gamma + gamma**2 * s2 - 2 * alpha * m**2) / (2 * D))
    return moments * norm / sp.sqrt(D)


def _erf_atom(k: int, beta: sp.Expr) -> sp.Expr:
    """``E_xi[z^k erf(beta z)]``, ``z = m + sqrt(s2) xi``: ``erf(beta m / sqrt(1 + 2 beta^2 s2))``
    for ``k = 0``, else Stein's lemma ``E[z h(z)] = m E[h] + s2 E[h']``."""
    m, s2 = _SM, _SS2
    if k == 0:
        return sp.erf(beta * m / sp.sqrt(1 + 2 * beta**2 * s2))
    out = m * _erf_atom(k - 1, beta)
    out += s2 * 2 * beta / sp.sqrt(sp.pi) * _gauss_atom(k - 1, beta**2, sp.Integer(0))
    if k >= 2:
        out += s2 * (k - 1) * _erf_atom(k - 2, beta)
    return out


def _atom_smoothing(atoms) -> sp.Expr:
    r"""``\sum E_\xi[c z^k e^{-\alpha z^2 + \gamma z}]``, ``z = m + s\xi``, ``\alpha \ge 0``
    (polynomials, Gaussians, exponentials, ``sin``/``cos`` through complex ``\gamma``), by
    completing the square: with ``D = 1 + 2\alpha s^2``, ``z`` under the tilted law is Gaussian
    with mean ``(m + \gamma s^2)/D`` and variance ``s^2/D``, and the normalisation is
    ``D^{-1/2} \exp((2m\gamma + \gamma^2 s^2 - 2\alpha m^2)/(2D))`` (no division by ``s``);
    atoms ``c z^k \operatorname{erf}(\beta z)`` (the scale-mixture integrands) by
    :func:`_erf_atom`. Raises :class:`NoClosedForm` for any other atom."""
    total = sp.Integer(0)
    for at in atoms:
        if at.kind is None and at.alpha.is_nonnegative:
            total += at.coef * _gauss_atom(at.k, at.alpha, at.gamma)
        elif at.kind == "erf" and at.alpha == 0 and at.gamma == 0:
            total += at.coef * _erf_atom(at.k, at.beta)
        else:
            raise NoClosedForm(f"no smoothing rule for the atom {at}")
    if total.has(sp.I):  # complex gamma (sin, cos): the imaginary parts cancel
        total = sp.expand_complex(sp.expand(total))
    return _tidy_exp(sp.simplify(total))


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
    smoothings, methods = {}, {}
    for terms in list(equations.values()) + [risk_terms]:
        for t in terms:
            for idx, f, lbl in zip(t.fields, t.funcs, t.labels, strict=True):
                if _FIELDS[idx][0] == "S" and lbl not in smoothings:
                    expr, how = smoothing_rule(f)
                    smoothings[lbl] = (f, expr)
                    methods[f"S[{lbl}]"] = how
    exps = {v[0]: v[1:5] for v in store.values()}
    methods.update({v[0]: v[5] for v in store.values()})
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
        methods=methods,
    )


def _system_to_json(system: MeanFieldSystem) -> dict:
    """The derivation-cache entry of a mean-field system (SymPy parts as ``srepr``)."""
    from hildlimits._pipeline.cache import FORMAT, content_digest

    sr = sp.srepr

    def term(t: MFTerm) -> dict:
        return {
            "coeff": sr(t.coeff),
            "sums": list(t.sums),
            "fields": list(t.fields),
            "funcs": [sr(f) for f in t.funcs],
            "labels": list(t.labels),
            "name": t.name,
            "merged": t.merged,
        }

    data = {
        "format": FORMAT,
        "structure": system.structure,
        "equations": {k: [term(t) for t in v] for k, v in system.equations.items()},
        "risk": [term(t) for t in system.risk],
        "expectations": {
            name: [[sr(f) for f in funcs], list(fields), sr(expr), list(labels)]
            for name, (funcs, fields, expr, labels) in system.expectations.items()
        },
        "smoothings": {
            lbl: [sr(f), None if expr is None else sr(expr)]
            for lbl, (f, expr) in system.smoothings.items()
        },
        "methods": dict(system.methods),
        "source": system.source,
    }
    data["digest"] = content_digest(data)
    return data


def _system_from_json(data: dict, rebuild=None) -> MeanFieldSystem:
    """The system of a checked cache entry (see :func:`_system_to_json`)."""
    from hildlimits._engine.gaussian import SYMPY_LOCALS

    names = dict(SYMPY_LOCALS) | {"XiMixture": XiMixture, "XiGaussHermite": XiGaussHermite}

    def ex(text):
        return sp.sympify(text, locals=names)

    def term(t) -> MFTerm:
        return MFTerm(
            coeff=ex(t["coeff"]),
            sums=tuple(t["sums"]),
            fields=tuple(t["fields"]),
            funcs=tuple(ex(f) for f in t["funcs"]),
            labels=tuple(t["labels"]),
            name=t["name"],
            merged=t["merged"],
        )

    system = MeanFieldSystem(
        structure=data["structure"],
        equations={k: tuple(term(t) for t in v) for k, v in data["equations"].items()},
        risk=tuple(term(t) for t in data["risk"]),
        expectations={
            name: (tuple(ex(f) for f in funcs), tuple(fields), ex(expr), tuple(labels))
            for name, (funcs, fields, expr, labels) in data["expectations"].items()
        },
        smoothings={
            lbl: (ex(f), None if expr is None else ex(expr))
            for lbl, (f, expr) in data["smoothings"].items()
        },
        methods=dict(data["methods"]),
    )
    system._jax["source"] = data["source"]
    return system


@functools.lru_cache(maxsize=16)
def _derive_cached(activation: str, teacher_activation: str) -> MeanFieldSystem:
    from hildlimits._pipeline.cache import cached_system

    structure = {
        "family": "meanfield",
        "activation": activation,
        "teacher_activation": teacher_activation,
    }
    return cached_system(
        structure,
        lambda: _derive_meanfield(activation, teacher_activation),
        to_json=_system_to_json,
        from_json=_system_from_json,
    )


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
    lines += ["", "Gaussian expectations (pairwise path; covariance entries C_ab; [method]):"]
    for name, (_funcs, fields, expr, labels) in system.expectations.items():
        slots = " ".join(_slot_text(lb, f, False) for lb, f in zip(labels, fields, strict=True))
        lines.append(f"  {name} = E[{slots}]   [{system.methods.get(name, 'closed form')}]")
        lines.append(f"      = {sp.sstr(expr)}")
    lines += [
        "",
        "Gaussian smoothings S[f](m, s2) = E_ξ[f(m + sqrt(s2) ξ)] (quadrature path; [method]):",
    ]
    for lbl, (f, expr) in system.smoothings.items():
        method = system.methods.get(f"S[{lbl}]", "closed form")
        lines.append(f"  S[{lbl}]   f(x) = {sp.sstr(f)}   [{method}]")
        lines.append(f"      = {sp.sstr(expr) if expr is not None else 'no closed form'}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- code generation


def _smooth_name(label: str) -> str:
    return "S_" + label.replace("'", "p").replace("*", "s").replace(" ", "_")


def _teacher_name(label: str) -> str:
    if label == "g_*":
        return "teacher_g"
    return "teacher_" + label.replace("'", "p").replace("*", "s").replace(" ", "_")


def _cov_args(expr: sp.Expr) -> list[sp.Symbol]:
    """The covariance symbols ``C_ab`` an expectation depends on (its function's arguments)."""
    return sorted((s for s in expr.free_symbols if s.name.startswith("C_")), key=lambda s: s.name)


def _teacher_factors(system: MeanFieldSystem) -> dict:
    """label -> function (in ``x``) of every teacher-field slot of the system."""
    out = {}
    for terms in list(system.equations.values()) + [system.risk]:
        for t in terms:
            for idx, f, lbl in zip(t.fields, t.funcs, t.labels, strict=True):
                if _FIELDS[idx][0] == "T":
                    out.setdefault(lbl, f)
    return out


def _smoothing_source(label: str, expr: sp.Expr, method: str, printer: _Printer) -> list[str]:
    name, doc = _smooth_name(label), f"E_xi[{label}(m + sqrt(s2) xi)]: {method}."
    if isinstance(expr, XiMixture):
        h, betas, n = expr.args
        body = function_source(name, ["m", "s2"], h, doc, printer, _WEIGHTED_SUM)
        setup = [
            f"    ({', '.join(b.name for b in betas)},), weights = "
            f"scale_mixture_nodes({len(betas)}, {int(n)})",
            "    m, s2 = trailing((m, s2))",
        ]
        return body[:2] + setup + body[2:]
    if isinstance(expr, XiGaussHermite):
        f, n = expr.args
        body = function_source(name, ["m", "s2"], f, doc, printer, _WEIGHTED_SUM)
        setup = [
            f"    z, weights = gauss_hermite_fields((s2,), 1, {int(n)})",
            f"    {X.name} = trailing((m,))[0] + z[0]",
        ]
        return body[:2] + setup + body[2:]
    return function_source(name, ["m", "s2"], expr, doc, printer)


def _generate_source(system: MeanFieldSystem) -> str:
    """Module source: the expectations (pairwise path), the smoothings (quadrature path) and the
    teacher factors, printed by the committee's printer (:class:`hildlimits._engine.codegen._Printer`)
    with its numerical primitives (scale mixtures, Gauss--Hermite, Price line integrals)."""
    st = system.structure
    lines = [
        '"""Generated by hildlimits (mean-field particle system) -- do not edit.',
        "",
        f"inputs: activation={st['activation']!r}, teacher_activation={st['teacher_activation']!r}",
        '"""',
        "",
        *_IMPORTS,
        "",
    ]
    printer = _Printer()
    functions = []
    for name, (_funcs, fields, expr, labels) in system.expectations.items():
        slots = " ".join(_slot_text(lb, f, False) for lb, f in zip(labels, fields, strict=True))
        doc = f"E[{slots}]: {system.methods.get(name, 'closed form')}."
        functions += function_source(name, [s.name for s in _cov_args(expr)], expr, doc, printer)
        functions += ["", ""]
    for lbl, (_f, expr) in system.smoothings.items():
        method = system.methods.get(f"S[{lbl}]", "closed form")
        functions += _smoothing_source(lbl, expr, method, printer) + ["", ""]
    g = get_activation(st["teacher_activation"]).expr
    factors = {"g_*": g, **_teacher_factors(system)}
    for lbl, f in factors.items():
        name = _teacher_name(lbl)
        if f.has(X):
            functions += function_source(name, ["x"], f, f"teacher factor {lbl}(x).", printer)
        else:
            functions += [
                f"def {name}(x):",
                f'    """teacher factor {lbl}(x) (constant)."""',
                f"    return jnp.full_like(x, {float(f)!r})",
            ]
        functions += ["", ""]
    for _key, definition in printer.primitives.values():
        lines += definition + ["", ""]
    lines += functions
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
    system,
    terms,
    y,
    a,
    args,
    *,
    free: tuple[str, ...],
    diag: bool,
    cross_diag,
    Cpp=None,
    coincident: bool = False,
):
    """Sum of ``terms`` by closed forms on index grids.

    ``free``: output indices (``("j",)``, ``("j", "n")`` or ``()``). ``diag``: population index
    ``k`` bound to ``j`` (and ``k'`` to ``k``), i.e. the self-interaction only. ``cross_diag``:
    the value of ``C_jk`` for ``j == k`` (``q`` or ``r^T T^-1 r``). ``Cpp``: explicit
    student-student covariances (e.g. the measured overlaps of a finite network).
    ``coincident`` (with ``diag``, ``cross_diag = q``): the bound slots are one field; terms
    with a merged expectation (:attr:`MFTerm.merged`) use it, as their closed form is singular
    there.
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

        name = t.merged if (coincident and t.merged) else t.name
        funcs, fields, expr, labels = system.expectations[name]
        kw = {}
        for s in _cov_args(expr):
            a_, b_ = _sym_pair(s.name, fields)
            kw[s.name] = cov(a_, b_)
        val = getattr(mod, name)(**kw) if kw else jnp.asarray(float(expr))
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
    cache = {}

    def smooth(lbl):
        if lbl not in cache:
            cache[lbl] = jnp.broadcast_to(getattr(mod, _smooth_name(lbl))(mu, s2), mu.shape)
        return cache[lbl]

    def teacher(lbl):
        key = ("teacher", lbl)
        if key not in cache:
            cache[key] = jnp.broadcast_to(getattr(mod, _teacher_name(lbl))(nu), nu.shape)
        return cache[key]

    total = 0.0
    for t in terms:
        if _by_pairwise(t):
            continue  # closed form (O(P M^2) at most), added by the caller
        prod = jnp.ones_like(wz)
        part = None
        nfree = None
        for idx, lbl in zip(t.fields, t.labels, strict=True):
            if _FIELDS[idx][0] == "S":
                S = smooth(lbl)
                if idx == "j":
                    part = S
                else:
                    prod = prod * ((a / P) @ S)
            else:
                vals = teacher(lbl)  # (Z, M)
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


@functools.lru_cache(maxsize=64)
def _entire_factor(f: sp.Expr) -> bool:
    """Whether ``f`` is built from the engine's atoms without kinks (polynomials, Gaussians,
    ``erf``, ``sin``/``cos``): analytic everywhere, so Gauss--Hermite rules converge fast."""
    if f.has(*KINKS, sp.DiracDelta):
        return False
    try:
        atoms_of(f, X)
    except Exception:  # noqa: BLE001 -- no rule for a factor (tanh, sigmoid, ...)
        return False
    return True


def _by_pairwise(t: MFTerm) -> bool:
    """Whether the quadrature path evaluates term ``t`` by its pairwise expectation instead:
    terms without a particle field (teacher only), and terms with one particle field
    (particle--teacher: ``O(P M^2)`` expectations) whose teacher factor is kinked (``sign``,
    ``relu``) or has poles near the real axis (``tanh``, ``sigmoid``), where the Gauss--Hermite
    rule in the teacher fields converges slowly (measured, tanh teacher, M = 2, 32 nodes: 2e-6
    on the quadrature nodes, 1e-13 by the scale mixture)."""
    kinds = [_FIELDS[f][0] for f in t.fields]
    if kinds.count("S") != 1:
        return "S" not in kinds
    return not all(_entire_factor(f) for kind, f in zip(kinds, t.funcs, strict=True) if kind == "T")


def _sum_terms(system, terms, y, a, args, *, free, method, finite_width, pair):
    """Sum of ``terms`` (one equation, or the risk) on the ``method`` path; ``pair``: the
    population index bound to the particle's in the self-interaction (``("j", "k")`` for the
    drift, ``("k", "k'")`` for the risk)."""
    _, rr, _ = _particle_geometry(y, args["T"], False)
    cross = y["q"] if finite_width else rr
    # singular closed forms at coincident fields (relu, ...): the self-interaction separately
    merged = finite_width and any(t.merged for t in terms)
    if method == "pairwise" and not merged:
        return _pairwise_terms(system, terms, y, a, args, free=free, diag=False, cross_diag=cross)
    if method == "pairwise":
        out = _pairwise_terms(system, terms, y, a, args, free=free, diag=False, cross_diag=rr)
    else:
        out = _quadrature_terms(system, terms, y, a, args, free=free)
        exact = [t for t in terms if _by_pairwise(t)]
        if exact:
            out = out + _pairwise_terms(
                system, exact, y, a, args, free=free, diag=False, cross_diag=cross
            )
    if finite_width:  # exact self-interaction minus its conditional-independence value
        self_terms = [t for t in terms if set(pair) <= set(t.fields)]
        kw = dict(free=free, diag=True)
        out = out + _pairwise_terms(
            system, self_terms, y, a, args, cross_diag=y["q"], coincident=True, **kw
        )
        out = out - _pairwise_terms(system, self_terms, y, a, args, cross_diag=rr, **kw)
    return out


def _equation(system, name, y, a, args, method, finite_width):
    free = ("j", "n") if name == "r" else ("j",)
    return _sum_terms(
        system,
        system.equations[name],
        y,
        a,
        args,
        free=free,
        method=method,
        finite_width=finite_width,
        pair=("j", "k"),
    )


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
    return _sum_terms(
        system,
        system.risk,
        y,
        y["a"],
        args,
        free=(),
        method=method,
        finite_width=finite_width,
        pair=("k", "k'"),
    )


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
        return RunStatus.parse(self.status).diverged

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


def _make_args(system, init: MeanFieldInit, ratio: float, method: str, nodes: int | None, eta=1.0):
    f64 = np.float64
    args = {
        "T": np.asarray(init.T, f64),
        "v_teacher": np.asarray(init.v_teacher, f64),
        "ratio": f64(ratio),
        "eta": f64(eta),  # only eta_a / eta enters the drift; kept for schedules of eta_a
    }
    if method == "quadrature":
        z, w = gauss_hermite(init.M, nodes)
        args["_nodes"], args["_weights"] = z, w
    return args


def meanfield_dynamics(system, model: MeanField, *, method: str, schedule: bool = False):
    """The particle drift and risk as a :class:`~hildlimits._families.Dynamics` (shared runner).
    ``schedule``: the readout rate ``eta_a`` becomes piecewise constant in ``tau``."""
    from hildlimits._families import Dynamics

    fw = model.finite_width

    def vf(t, y, args):
        return drift(system, y, args, method=method, finite_width=fw)

    def risk_fn(y, args):
        return risk(system, y, args, method=method, finite_width=fw)

    def apply(args, value):  # eta_a(tau) -> the ratio eta_a / eta of the drift
        return {**args, "ratio": value / args["eta"]}

    return Dynamics(
        vector_field=vf,
        risk=risk_fn,
        key=("meanfield", method, fw),
        cache=system._jax,
        schedule=apply if schedule else None,
        risk_event=False,  # one risk costs as much as one drift: checked at the save times
        risk_map=True,
    )


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
    lr_second_layer_schedule=None,
) -> MeanFieldTrajectory:
    r"""Integrate the particle ODEs (float64, diffrax, scoped ``jax.enable_x64``).

    Args:
        system: from :func:`derive_meanfield`. model: the :class:`MeanField` (``finite_width``,
            ``train_second_layer``). init: :class:`MeanFieldInit` (``particles`` sets ``P``).
        lr, lr_second_layer: ``eta`` and ``eta_a``; only ``eta_a/eta`` enters the ODE (in
            ``tau``); ``lr_second_layer`` defaults to ``lr``.
        t1, n_save, spacing, t_first, ts: save times in ``tau`` as in :func:`hildlimits.solve`.
        rtol, atol, solver, max_steps, divergence_bound, steady_state: as in
            :func:`hildlimits.solve`.
        method: ``"quadrature"`` (``O(P n^M)`` per right-hand side, default) or ``"pairwise"``
            (exact closed forms, ``O(P^2 M)``; memory ``O(P^2 M)``, for ``P`` up to ~2000).
        nodes: Gauss--Hermite nodes per teacher dimension (default :func:`default_nodes`).
        y0: explicit initial state ``{"r", "q", "a"}`` (default ``init.state()``).
        lr_second_layer_schedule: a :class:`~hildlimits.Schedule` of ``eta_a`` over ``tau``
            (replaces ``lr_second_layer``); the solver steps onto its edges.

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

    from hildlimits._pipeline import runner as _runner

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
    ts = _runner.resolve_save_times(
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
    sched = lr_second_layer_schedule if model.train_second_layer else None
    state0 = init.state() if y0 is None else {k: np.asarray(v, np.float64) for k, v in y0.items()}
    dyn = meanfield_dynamics(system, model, method=method, schedule=sched is not None)
    steady = steady_state is not None
    with jax.enable_x64(True):
        args = _make_args(system, init, ratio, method, nodes, eta)
        args |= _runner.bounds(state0, divergence_bound=divergence_bound, steady_state=steady_state)
        if sched is not None:
            args["_sched_edges"] = np.asarray(sched.edges, np.float64)
            args["_sched_values"] = np.asarray(sched.values, np.float64)
        run = _runner.compiled_dynamics(dyn, solver=solver, max_steps=max_steps, steady=steady)
        t0 = time.perf_counter()
        # compiled executables are kept per shape (P, M, nodes, save times): compile once
        exe_key = ("exe", *dyn.key, solver, max_steps, steady, len(ts), sched is not None)
        exe_key += (state0["r"].shape, args.get("_nodes", np.zeros(0)).shape)
        exe_key += (args["_sched_edges"].shape,) if sched is not None else ()
        comp = system._jax.get(exe_key)
        tols = (np.float64(rtol), np.float64(atol))
        if comp is None:
            comp = run.lower(state0, args, jnp.asarray(ts), *tols).compile()
            system._jax[exe_key] = comp
        t_compile = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = comp(state0, args, jnp.asarray(ts), *tols)
        out = jax.device_get(jax.block_until_ready(out))
        t_run = time.perf_counter() - t0
    return _trajectory(
        out, ts, init, method, nodes, max_steps, {"compile": t_compile, "run": t_run}
    )


def _trajectory(out, ts_req, init, method, nodes, max_steps, timings) -> MeanFieldTrajectory:
    from hildlimits._pipeline import runner as _runner

    status = _runner.check_stop(out, float(ts_req[-1]), max_steps)
    rows = _runner.kept_rows(out, status)
    ts, ys = np.asarray(out["ts"]), out["ys"]
    if status.ok:  # the risk is checked at the save times only (risk_event=False)
        bad = ~np.isfinite(np.asarray(out["risk"])[rows])
        if bad.any():
            first = int(np.argmax(bad))
            status = _runner.RunStatus.of(_runner.Status.DIVERGED, float(ts[rows][first]))
            rows = rows[: first + 1]

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
        t_stop=float(ts[-1]),
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
        out, rk = _drift_and_risk(system, method, model.finite_width)(yj, args)
        res = {k: np.asarray(v) for k, v in out.items()}
        res["risk"] = float(rk)
        return res


def _drift_and_risk(system, method: str, finite_width: bool):
    """Jitted ``(drift, risk)`` of ``system`` (one XLA program: eager evaluation of the
    numerical expectations dispatches thousands of small operations, ~10x slower)."""
    key = ("drift_and_risk", method, finite_width)
    if key not in system._jax:

        def both(y, args):
            kw = dict(method=method, finite_width=finite_width)
            return drift(system, y, args, **kw), risk(system, y, args, **kw)

        system._jax[key] = jax.jit(both)
    return system._jax[key]


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
