"""Symbolic building blocks of a derivation: index symbols, the update-rule algebra that turns an
SGD step into order-parameter increments, and the normal form of index sums.

A *term* is ``coeff * prod(factors)`` summed over *dummy* unit indices; ``coeff`` holds parameters
(``v_j``, ``eta``, ``Q_ik``, ...), ``factors`` hold functions of the local fields (and the noise
``zeta``). Sums over units stay symbolic: a term is a template valid for every ``K`` and ``M``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass

import sympy as sp

# ----------------------------------------------------------------------------- symbols
K, M = sp.symbols("K M", integer=True, positive=True)
STUDENT, TEACHER = "S", "T"
RANGE = {STUDENT: K, TEACHER: M}

i, k = sp.symbols("i k", integer=True)
n = sp.Symbol("n", integer=True)
FREE_KIND = {i: STUDENT, k: STUDENT, n: TEACHER}
DUMMY_NAMES = {STUDENT: ("j", "l", "p", "q"), TEACHER: ("m", "o", "r", "s")}

lam = sp.IndexedBase("lambda", real=True)  # student local fields lambda_i = w_i . x / sqrt(N)
nu = sp.IndexedBase("nu", real=True)  # teacher local fields nu_n = w*_n . x / sqrt(N)
FIELD_KIND = {lam: STUDENT, nu: TEACHER}
v = sp.IndexedBase("v", real=True)
vs = sp.IndexedBase("v^*", real=True)
Q = sp.IndexedBase("Q", real=True)
R = sp.IndexedBase("R", real=True)
T = sp.IndexedBase("T", real=True)
zeta = sp.Symbol("zeta", real=True)  # output noise, N(0, 1)
h = sp.Symbol("h", positive=True)  # 1/sqrt(N)
eta, eta_v, sigma, kappa = sp.symbols("eta eta_v sigma kappa", nonnegative=True)
batch = sp.Symbol("B", positive=True)  # mini-batch size (derivations with minibatch=True)
g = sp.Function("g")  # student activation (abstract until an expectation is taken)
gs = sp.Function("g_*")  # teacher activation

_counter = itertools.count()


def fresh(kind: str) -> sp.Symbol:
    return sp.Symbol(f"_{kind}{next(_counter)}", integer=True)


def is_field_factor(expr: sp.Expr) -> bool:
    return expr.has(lam) or expr.has(nu) or expr.has(zeta)


# ----------------------------------------------------------------------------- update algebra
class Vec:
    """A vector of R^N as a linear combination of ``w_i``, ``w*_n`` and the input ``x``."""

    def __init__(self, parts: dict[tuple, sp.Expr]):
        self.parts = {key: c for key, c in parts.items() if c != 0}

    @staticmethod
    def w(idx) -> Vec:
        return Vec({("w", idx): sp.Integer(1)})

    @staticmethod
    def ws(idx) -> Vec:
        return Vec({("ws", idx): sp.Integer(1)})

    @staticmethod
    def x() -> Vec:
        return Vec({("x",): sp.Integer(1)})

    def __add__(self, other: Vec) -> Vec:
        parts = dict(self.parts)
        for key, c in other.parts.items():
            parts[key] = parts.get(key, 0) + c
        return Vec(parts)

    def __rmul__(self, c: sp.Expr) -> Vec:
        return Vec({key: c * val for key, val in self.parts.items()})


_ONE = sp.Integer(1)


def _inner_basis(a: tuple, b: tuple, xx: sp.Expr = _ONE) -> sp.Expr:
    """``<a, b> / N`` for basis vectors, to leading order (``x ~ N(0, I_N)``, ``h = 1/sqrt N``);
    ``xx``: ``|x|^2 / N`` of the input direction of the step (see :func:`inner`)."""
    a, b = sorted((a, b), key=lambda key: ("w", "ws", "x").index(key[0]))
    kinds = (a[0], b[0])
    if kinds == ("w", "w"):
        return Q[a[1], b[1]]
    if kinds == ("w", "ws"):
        return R[a[1], b[1]]
    if kinds == ("ws", "ws"):
        return T[a[1], b[1]]
    if kinds == ("w", "x"):
        return h * lam[a[1]]
    if kinds == ("ws", "x"):
        return h * nu[a[1]]
    return xx  # |x|^2 / N -> 1 (fluctuations are higher order in h)


def inner(a: Vec, b: Vec, *, xx: sp.Expr = _ONE) -> sp.Expr:
    """``<a, b> / N`` by bilinearity.

    ``xx`` is ``|x|^2/N`` of the step's input direction ``x``: ``1`` for one sample. For a
    mini-batch the step direction is the batch mean ``(1/B) sum_b delta_b x_b`` of independent
    inputs; in ``<w, xbar>`` each sample contributes its own field (``E`` of the mean is that of
    one sample), while ``|xbar|^2/N = (1/B^2) sum_{b,b'} x_b.x_b'/N`` keeps only its ``B``
    diagonal terms to leading order (``x_b.x_b'/N = O(h)`` for ``b != b'``), so ``xx = 1/B``
    with the products of one sample's factors: the ``eta^2`` terms carry ``1/B``."""
    return sp.Add(
        *[
            ca * cb * _inner_basis(ka, kb, xx)
            for ka, ca in a.parts.items()
            for kb, cb in b.parts.items()
        ]
    )


def rate(increment: sp.Expr) -> sp.Expr:
    """Mean rate per unit time ``t = steps/N = steps * h^2`` of a one-step increment.

    The increment must be ``O(h^2)``; the ``O(h)`` part (zero here by construction) is checked.
    """
    expanded = sp.expand(increment)
    for order in (0, 1):
        if sp.simplify(expanded.coeff(h, order)) != 0:
            raise AssertionError(f"the increment has a non-vanishing O(h^{order}) part")
    return expanded.coeff(h, 2)


# ----------------------------------------------------------------------------- normal form of sums
@dataclass(frozen=True)
class RawTerm:
    coeff: sp.Expr
    dummies: tuple[tuple[sp.Symbol, str], ...]
    factors: tuple[sp.Expr, ...]


def _mul(a: RawTerm, b: RawTerm) -> RawTerm:
    return RawTerm(a.coeff * b.coeff, a.dummies + b.dummies, a.factors + b.factors)


def _kind_of_range(lo: sp.Expr, hi: sp.Expr) -> str:
    if lo != 1 or hi not in (K, M):
        raise ValueError(f"unsupported summation range ({lo}, {hi})")
    return STUDENT if hi == K else TEACHER


def raw_terms(expr: sp.Expr) -> list[RawTerm]:
    """Expand an expression with sums over units into a list of :class:`RawTerm` (no sums inside)."""
    if isinstance(expr, sp.Add):
        return [t for arg in expr.args for t in raw_terms(arg)]
    if isinstance(expr, sp.Mul):
        terms = [RawTerm(sp.Integer(1), (), ())]
        for arg in expr.args:
            terms = [_mul(a, b) for a in terms for b in raw_terms(arg)]
        return terms
    if (
        isinstance(expr, sp.Pow)
        and expr.exp.is_Integer
        and expr.exp > 0
        and (expr.base.has(sp.Sum) or is_field_factor(expr.base))
    ):
        if not expr.base.has(sp.Sum) and not isinstance(expr.base, sp.Add):
            return [RawTerm(sp.Integer(1), (), (expr,))]
        terms = [RawTerm(sp.Integer(1), (), ())]
        for _ in range(int(expr.exp)):  # each copy gets fresh dummies
            terms = [_mul(a, b) for a in terms for b in raw_terms(expr.base)]
        return terms
    if isinstance(expr, sp.Sum):
        out = []
        body = expr.function
        for idx, lo, hi in reversed(expr.limits):
            kind = _kind_of_range(lo, hi)
            new = fresh(kind)
            body = body.xreplace({idx: new})
            out.append((new, kind))
        return [RawTerm(t.coeff, tuple(out) + t.dummies, t.factors) for t in raw_terms(body)]
    if is_field_factor(expr):
        return [RawTerm(sp.Integer(1), (), (expr,))]
    return [RawTerm(expr, (), ())]


def eliminate_deltas(term: RawTerm) -> RawTerm | None:
    """Sum out Kronecker deltas that involve a dummy index; drop terms with a vanishing delta."""
    while True:
        deltas = [d for d in sp.Mul.make_args(term.coeff) if isinstance(d, sp.KroneckerDelta)]
        dummies = {d for d, _ in term.dummies}
        target = next((d for d in deltas if d.args[0] in dummies or d.args[1] in dummies), None)
        if target is None:
            return term
        a, b = target.args
        old, new = (a, b) if a in dummies else (b, a)
        kinds = dict(term.dummies)
        new_kind = kinds.get(new, FREE_KIND.get(new))
        if new_kind is not None and new_kind != kinds[old]:
            return None  # a student index never equals a teacher index
        coeff = (term.coeff / target).xreplace({old: new})
        factors = tuple(f.xreplace({old: new}) for f in term.factors)
        term = RawTerm(coeff, tuple(d for d in term.dummies if d[0] != old), factors)


def normal_terms(expr: sp.Expr) -> list[RawTerm]:
    """:func:`raw_terms` followed by delta elimination."""
    out = []
    for t in raw_terms(sp.expand(expr)):
        t = eliminate_deltas(t)
        if t is not None and t.coeff != 0:
            out.append(t)
    return out


def field_of(factor: sp.Expr) -> tuple[sp.Indexed, str]:
    """The single local field a factor depends on, and its kind."""
    fields = {a for a in factor.atoms(sp.Indexed) if a.base in FIELD_KIND}
    if len(fields) != 1:
        raise ValueError(f"factor {factor} must depend on exactly one local field")
    (fld,) = fields
    return fld, FIELD_KIND[fld.base]


def dummy_renamings(dummies: Iterable[tuple[sp.Symbol, str]]):
    """All maps of the dummies onto canonical names (permutations within each kind)."""
    by_kind: dict[str, list[sp.Symbol]] = {}
    for d, kind in dummies:
        by_kind.setdefault(kind, []).append(d)
    kinds = sorted(by_kind)
    perms = [itertools.permutations(by_kind[kd]) for kd in kinds]
    for combo in itertools.product(*perms):
        mapping = {}
        for kd, order in zip(kinds, combo, strict=True):
            for name, d in zip(DUMMY_NAMES[kd], order, strict=False):
                mapping[d] = sp.Symbol(name, integer=True)
        yield mapping
