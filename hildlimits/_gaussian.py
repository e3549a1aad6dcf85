r"""Gaussian-expectation engine.

Computes ``E[f_1(z_1) f_2(z_2) ... f_n(z_n)]`` for a zero-mean Gaussian vector ``z`` with a
symbolic covariance ``C`` and functions ``f_s`` given as SymPy expressions in one variable.
Nothing here knows any published integral: every closed form is *derived* from four rules.

1. **Multilinearity.** Each ``f_s`` is expanded into atoms ``c x^k e^{-\alpha x^2} erf(\beta x)``
   (the erf factor optional) and the expectation is expanded over atoms.
2. **Gaussian tilting.** Factors ``e^{-\alpha_s z_s^2}`` are absorbed into the measure:
   ``E[\prod_{s\in A} e^{-\alpha_s z_s^2} F(z)] = \det(I + D C_{AA})^{-1/2} E'[F(z)]`` with
   ``D = diag(2\alpha_s)`` and the tilted covariance ``C' = C - C_{:A}(I + D C_{AA})^{-1} D C_{A:}``.
3. **Stein's lemma.** A polynomial factor is removed by ``E[z_a h(z)] = \sum_b C_{ab} E[\partial_b h(z)]``
   (this gives Wick/Isserlis for polynomials, and turns erf into a Gaussian kernel).
4. **Base cases** on products of erf's only: ``E[1] = 1``; an odd number of odd functions has zero
   mean; a pair is obtained from **Price's theorem**, ``\partial E[f(z_1) g(z_2)] / \partial C_{12} =
   E[f'(z_1) g'(z_2)]``, whose right-hand side rules 1--3 give in closed form and which SymPy then
   integrates in ``C_{12}`` from the independent point ``C_{12} = 0``.

Expectations that these rules cannot reduce raise :class:`NoClosedForm`.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import sympy as sp

__all__ = ["Atom", "Expectation", "NoClosedForm", "gaussian_expectation", "covariance_symbols"]


class NoClosedForm(ValueError):
    """Raised when the closed-form rules cannot reduce a Gaussian expectation."""


@dataclass(frozen=True)
class Atom:
    """One term ``coef * x**k * exp(-alpha x**2) * erf(beta x)`` (``beta=None``: no erf factor)."""

    coef: sp.Expr
    k: int
    alpha: sp.Expr
    beta: sp.Expr | None


@dataclass(frozen=True)
class Expectation:
    """Result of the engine: the closed form, its covariance symbols and the rules it used."""

    expr: sp.Expr
    cov: sp.ImmutableMatrix
    rules: tuple[str, ...]

    @property
    def method(self) -> str:
        return "closed form (" + ", ".join(self.rules) + ")" if self.rules else "closed form"


def covariance_symbols(n: int, name: str = "C") -> sp.ImmutableMatrix:
    """Symmetric ``n x n`` matrix of symbols ``C_ab`` (positive variances, real covariances)."""

    def entry(a: int, b: int) -> sp.Symbol:
        a, b = min(a, b), max(a, b)
        return sp.Symbol(f"{name}_{a}{b}", positive=(a == b), real=True)

    return sp.ImmutableMatrix(n, n, lambda a, b: entry(a, b))


# --------------------------------------------------------------------------- parsing into atoms
def _parse_factor(factor: sp.Expr, x: sp.Symbol, acc: dict) -> None:
    if not factor.has(x):
        acc["coef"] *= factor
        return
    if factor == x:
        acc["k"] += 1
        return
    if isinstance(factor, sp.Pow) and factor.base == x and factor.exp.is_Integer and factor.exp > 0:
        acc["k"] += int(factor.exp)
        return
    if isinstance(factor, sp.exp):
        poly = sp.Poly(sp.expand(factor.args[0]), x) if factor.args[0].is_polynomial(x) else None
        if poly is not None and poly.degree() <= 2:
            a2, a1, a0 = (poly.coeff_monomial(x**p) for p in (2, 1, 0))
            if a1 == 0 and not (a2.is_number and a2 > 0):
                acc["alpha"] += -a2
                acc["coef"] *= sp.exp(a0)
                return
    if isinstance(factor, sp.erf) and acc["beta"] is None:
        arg = sp.expand(factor.args[0])
        beta = sp.simplify(arg / x)
        if not beta.has(x):
            if beta.is_number and beta < 0:  # erf is odd
                acc["coef"] *= -1
                beta = -beta
            acc["beta"] = beta
            return
    if isinstance(factor, sp.Pow) and factor.exp.is_Integer and factor.exp > 1:
        for _ in range(int(factor.exp)):
            _parse_factor(factor.base, x, acc)
        return
    raise NoClosedForm(f"no closed-form rule for the factor {factor}")


def atoms_of(f: sp.Expr, x: sp.Symbol) -> tuple[Atom, ...]:
    """Split ``f(x)`` into atoms (raises :class:`NoClosedForm` for unsupported factors)."""
    atoms = []
    for term in sp.Add.make_args(sp.expand(sp.sympify(f))):
        acc = {"coef": sp.Integer(1), "k": 0, "alpha": sp.Integer(0), "beta": None}
        for factor in sp.Mul.make_args(term):
            _parse_factor(factor, x, acc)
        if acc["coef"] != 0:
            atoms.append(Atom(acc["coef"], acc["k"], sp.nsimplify(acc["alpha"]), acc["beta"]))
    return tuple(atoms)


def _derivative(atom: Atom) -> tuple[Atom, ...]:
    """Atoms of d/dx of an atom with ``alpha == 0`` (the only case Stein's lemma meets)."""
    out = []
    if atom.k > 0:
        out.append(Atom(atom.coef * atom.k, atom.k - 1, sp.Integer(0), atom.beta))
    if atom.beta is not None:
        b = atom.beta
        out.append(Atom(atom.coef * 2 * b / sp.sqrt(sp.pi), atom.k, b**2, None))
    return tuple(out)


# --------------------------------------------------------------------------- reduction rules
def _submatrix(C: sp.ImmutableMatrix, keep: Sequence[int]) -> sp.ImmutableMatrix:
    return sp.ImmutableMatrix(len(keep), len(keep), lambda a, b: C[keep[a], keep[b]])


def _expect_slots(
    slots: tuple[tuple[Atom, ...], ...], C: sp.ImmutableMatrix, rules: set
) -> sp.Expr:
    total = sp.Integer(0)
    for choice in itertools.product(*slots):
        total += _expect_atoms(tuple(choice), C, rules)
    return total


def _expect_atoms(atoms: tuple[Atom, ...], C: sp.ImmutableMatrix, rules: set) -> sp.Expr:
    expr, used = _expect_atoms_cached(atoms, C)
    rules.update(used)
    return expr


@functools.lru_cache(maxsize=4096)
def _expect_atoms_cached(
    atoms: tuple[Atom, ...], C: sp.ImmutableMatrix
) -> tuple[sp.Expr, frozenset]:
    rules: set[str] = set()
    coef = sp.Mul(*[a.coef for a in atoms])
    atoms = tuple(Atom(sp.Integer(1), a.k, a.alpha, a.beta) for a in atoms)
    n = len(atoms)

    # Rule 2: Gaussian tilting of every exp(-alpha z^2) factor at once.
    tilted = [s for s, a in enumerate(atoms) if a.alpha != 0]
    if tilted:
        rules.add("Gaussian tilting")
        D = sp.diag(*[2 * atoms[s].alpha for s in tilted])
        Mx = sp.eye(len(tilted)) + D * _submatrix(C, tilted)
        det = sp.cancel(sp.expand(Mx.det()))
        # C' = C - C_A (I + D C_AA)^{-1} D C_A^T = N / det; a positive symbol stands for det
        # while the inner expectation is formed, so that square roots split cleanly.
        delta = sp.Dummy("Delta", positive=True)
        CA = sp.Matrix(n, len(tilted), lambda a, b: C[a, tilted[b]])
        num = (det * sp.Matrix(C) - CA * Mx.adjugate() * D * CA.T).applyfunc(sp.cancel)
        Cp = sp.ImmutableMatrix(num / delta)
        rest = tuple(Atom(a.coef, a.k, sp.Integer(0), a.beta) for a in atoms)
        inner = _tidy(_expect_atoms(rest, Cp, rules) / sp.sqrt(delta))
        return coef * inner.xreplace({delta: det}), frozenset(rules)

    # Constant slots carry no field dependence: drop them.
    keep = [s for s, a in enumerate(atoms) if a.k > 0 or a.beta is not None]
    if len(keep) < n:
        inner = _expect_atoms(tuple(atoms[s] for s in keep), _submatrix(C, keep), rules)
        return coef * inner, frozenset(rules)

    # Rule 3: Stein's lemma on the first polynomial factor.
    poly = [s for s, a in enumerate(atoms) if a.k > 0]
    if poly:
        rules.add("Stein's lemma")
        a = poly[0]
        h = Atom(sp.Integer(1), atoms[a].k - 1, sp.Integer(0), atoms[a].beta)
        total = sp.Integer(0)
        for b in range(n):
            if C[a, b] == 0:
                continue
            slots = [(atom,) for atom in atoms]
            slots[a] = (h,)
            slots[b] = _derivative(h) if b == a else _derivative(atoms[b])
            if not slots[b]:
                continue
            total += C[a, b] * _expect_slots(tuple(slots), C, rules)
        return coef * total, frozenset(rules)

    # Rule 4: base cases, products of erf's only.
    if n == 0:
        return coef, frozenset(rules)
    if n % 2 == 1:
        rules.add("odd symmetry")
        return sp.Integer(0), frozenset(rules)
    if n == 2:
        rules.add("erf pair by Price's theorem")
        lemma, (b1, b2, c11, c22, c12) = _erf_pair_lemma()
        sub = {b1: atoms[0].beta, b2: atoms[1].beta, c11: C[0, 0], c22: C[1, 1], c12: C[0, 1]}
        return coef * lemma.xreplace(sub), frozenset(rules)
    raise NoClosedForm(f"no closed form for a product of {n} erf factors")


def _tidy(expr: sp.Expr) -> sp.Expr:
    """Bring the bases of square roots over a common denominator (so that positive tilting
    determinants leave the root), and cancel rational factors."""
    expr = expr.replace(
        lambda e: e.is_Pow and e.exp.is_Rational and e.exp.q == 2,
        lambda e: sp.Pow(sp.together(e.base), e.exp),
    )
    return sp.factor_terms(expr)


@functools.lru_cache(maxsize=1)
def _erf_pair_lemma():
    r"""``E[erf(b_1 z_1) erf(b_2 z_2)]`` derived by Price's theorem.

    ``d/dC_12 E[erf erf] = E[erf' erf']`` is a tilting integral; integrate it from ``C_12 = 0``,
    where the two fields are independent and each odd factor has zero mean.
    """
    b1, b2, c11, c22 = sp.symbols("b1 b2 c11 c22", positive=True)
    c12, s = sp.symbols("c12 s", real=True)
    C = sp.ImmutableMatrix([[c11, s], [s, c22]])
    deriv_slots = (
        _derivative(Atom(sp.Integer(1), 0, sp.Integer(0), b1)),
        _derivative(Atom(sp.Integer(1), 0, sp.Integer(0), b2)),
    )
    density = _expect_slots(deriv_slots, C, set())  # E[erf'(b1 z1) erf'(b2 z2)] at C_12 = s
    # At s = 0 the factors are independent: E = E[erf(b1 z1)] E[erf(b2 z2)] = 0 * 0.
    at_zero = sp.Mul(
        *[
            _expect_atoms(
                (Atom(sp.Integer(1), 0, sp.Integer(0), b),), sp.ImmutableMatrix([[c]]), set()
            )
            for b, c in ((b1, c11), (b2, c22))
        ]
    )
    # density = k / sqrt(A - B s^2): integrate with A, B as positive symbols, then substitute.
    A, B = sp.symbols("A B", positive=True)
    radicand = sp.expand(1 / (density**2))
    poly = sp.Poly(radicand, s)
    a0, a2 = poly.coeff_monomial(1), -poly.coeff_monomial(s**2)
    if poly.degree() != 2 or poly.coeff_monomial(s) != 0:
        raise NoClosedForm("unexpected form of the erf-pair Price integrand")
    # density = 1/sqrt(a0 - a2 s^2) with a0, a2 > 0.
    antider = sp.integrate(1 / sp.sqrt(A - B * s**2), (s, 0, c12), conds="none")
    value = at_zero + antider.xreplace({A: a0, B: a2})
    value = sp.simplify(value).replace(
        lambda e: e.is_Pow and e.exp.is_Rational and e.exp.q == 2,
        lambda e: sp.Pow(sp.factor(e.base), e.exp),
    )
    return value, (b1, b2, c11, c22, c12)


# --------------------------------------------------------------------------- public entry
@functools.lru_cache(maxsize=1024)
def _gaussian_expectation_cached(funcs: tuple[sp.Expr, ...], x: sp.Symbol, cov: sp.ImmutableMatrix):
    rules: set[str] = set()
    slots = tuple(atoms_of(f, x) for f in funcs)
    if any(len(s) == 0 for s in slots):
        return sp.Integer(0), ()
    expr = _expect_slots(slots, cov, rules)
    return expr, tuple(sorted(rules))


def gaussian_expectation(
    funcs: Sequence[sp.Expr], x: sp.Symbol, *, cov: sp.Matrix | None = None
) -> Expectation:
    r"""Closed form of ``E[\prod_s f_s(z_s)]`` for ``z ~ N(0, cov)``.

    Args:
        funcs: one SymPy expression in ``x`` per field (repeat a field by repeating its row in
            ``cov``).
        x: the variable the expressions are written in.
        cov: symmetric covariance (default: symbols ``C_ab`` from :func:`covariance_symbols`).

    Returns:
        :class:`Expectation` with the expression, the covariance used and the rules applied.

    Raises:
        NoClosedForm: if the rules (tilting, Stein, odd symmetry, Price) cannot reduce it.

    Example:
        >>> import sympy as sp
        >>> x = sp.Symbol("x")
        >>> e = gaussian_expectation([x, x], x)
        >>> e.expr
        C_01
    """
    cov = covariance_symbols(len(funcs)) if cov is None else sp.ImmutableMatrix(cov)
    if cov.shape != (len(funcs), len(funcs)):
        raise ValueError(f"cov must be {len(funcs)}x{len(funcs)}, got shape {cov.shape}")
    expr, rules = _gaussian_expectation_cached(tuple(sp.sympify(f) for f in funcs), x, cov)
    return Expectation(expr=expr, cov=cov, rules=rules)
