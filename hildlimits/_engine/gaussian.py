r"""Gaussian-expectation engine.

Computes ``E[f_1(z_1) f_2(z_2) ... f_n(z_n)]`` for a zero-mean Gaussian vector ``z`` with a
symbolic covariance ``C`` and functions ``f_s`` given as SymPy expressions in one variable.
Nothing here knows any published integral: every closed form is *derived* from a few rules.

1. **Multilinearity.** Each ``f_s`` is brought to a canonical form (``Heaviside``, ``Abs``,
   ``Max(0, x)`` become ``sign``; ``sin``, ``cos``, ``sinh``, ``cosh`` become exponentials) and
   expanded into atoms ``c x^k e^{-\alpha x^2 + \gamma x} u(x)`` with ``u`` one of ``1``,
   ``erf(\beta x)``, ``sign(x)`` or ``\delta(x)``; the expectation is expanded over atoms.
2. **Gaussian tilting.** Factors ``e^{-\alpha_s z_s^2}`` are absorbed into the measure:
   ``E[\prod_{s\in A} e^{-\alpha_s z_s^2} F(z)] = \det(I + D C_{AA})^{-1/2} E'[F(z)]`` with
   ``D = diag(2\alpha_s)`` and the tilted covariance ``C' = C - C_{:A}(I + D C_{AA})^{-1} D C_{A:}``.
3. **Exponential shift.** ``E[e^{\gamma^T z} P(z)] = e^{\gamma^T C\gamma/2} E[P(z + C\gamma)]`` for
   a polynomial ``P`` (complex ``\gamma`` gives the trigonometric Gaussians).
4. **Conditioning on a Dirac delta.** ``E[\delta(z_b) F(z)] = (2\pi C_{bb})^{-1/2} E[F(z) | z_b = 0]``;
   the conditional law is Gaussian with covariance ``C - C_{:b} C_{b:} / C_{bb}``.
5. **Stein's lemma.** A polynomial factor is removed by
   ``E[z_a h(z)] = \sum_b C_{ab} E[\partial_b h(z)]`` (Wick/Isserlis for polynomials; turns erf into
   a Gaussian kernel and sign into ``2\delta``).
6. **Base cases** on products of odd factors (``erf``, ``sign``): ``E[1] = 1``; an odd number of
   them has zero mean; a pair is obtained from **Price's theorem**,
   ``\partial E[f(z_1) g(z_2)] / \partial C_{12} = E[f'(z_1) g'(z_2)]``, whose right-hand side rules
   1--5 give in closed form and which SymPy integrates in ``C_{12}`` from ``C_{12} = 0``.
7. **Price line integral** (numerical, one dimension). Four odd factors have no closed form in
   general (a four-variate orthant probability for ``sign``). Along the path ``C(s)`` that scales
   the off-diagonal entries by ``s``, Price's theorem gives
   ``E(C) = \int_0^1 \sum_{a<b} C_{ab} E_{C(s)}[f_a' f_b' f_c f_d] ds``, whose integrand rules 1--6
   give in closed form; the generated code integrates it by Gauss--Legendre quadrature in a
   variable that absorbs the pair density and clusters nodes at ``s = 1`` (see
   :func:`hildlimits._engine.runtime.price_nodes`), after giving ``sign`` fields unit variance (``sign``
   is scale invariant). The result is the symbolic call :class:`PriceIntegral`; it is symmetric
   under permutations of identical factors, which lets an index grid evaluate it once per
   distinct set of fields (``unique`` in :meth:`hildlimits._engine.runtime.Grid.by_pattern`).

Expectations that these rules cannot reduce raise :class:`NoClosedForm`. The derivation then
writes factors polynomial in ``tanh`` (``tanh``, ``sigmoid``, their derivatives) as Kolmogorov
scale mixtures of ``erf`` and Gaussians, reduces the expectation given the mixture variables by
the rules above and averages the closed form over a Gauss rule for the mixing law
(:class:`ScaleMixture`, :func:`mixture_expression`); what remains goes to Gauss--Hermite
quadrature (:class:`GaussHermite`, evaluated in the generated code), whose nodes follow the kinks
at 0 of its factors (:class:`KinkPlan`, :func:`smoothed_kink`).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import sympy as sp

__all__ = [
    "Atom",
    "Expectation",
    "GaussHermite",
    "NoClosedForm",
    "PriceIntegral",
    "ScaleMixture",
    "canonical",
    "covariance_symbols",
    "gaussian_expectation",
]

DEFAULT_LINE_NODES = 12


class NoClosedForm(ValueError):
    """Raised when the closed-form rules cannot reduce a Gaussian expectation."""


@dataclass(frozen=True)
class Atom:
    """One term ``coef * x**k * exp(-alpha x**2 + gamma x) * u(x)``.

    ``kind`` names ``u``: ``None`` (1), ``"erf"`` (``erf(beta x)``), ``"sign"`` or ``"delta"``.
    """

    coef: sp.Expr
    k: int
    alpha: sp.Expr
    beta: sp.Expr | None = None
    kind: str | None = None
    gamma: sp.Expr = sp.Integer(0)


@dataclass(frozen=True)
class Expectation:
    """Result of the engine: the expression, its covariance symbols and the rules it used."""

    expr: sp.Expr
    cov: sp.ImmutableMatrix
    rules: tuple[str, ...]

    @property
    def numerical(self) -> bool:
        return bool(self.expr.atoms(PriceIntegral, GaussHermite, ScaleMixture))

    @property
    def method(self) -> str:
        mix = self.expr.atoms(ScaleMixture)
        if mix:
            (call,) = mix
            n = int(call.args[1])
            _, betas, rules = mixture_expression(
                tuple(call.args[0]), sp.Symbol("x", real=True), int(call.args[2])
            )
            closed = ", ".join(r for r in rules if r != "Price line integral")
            text = (
                f"numerical: tanh as a Kolmogorov scale mixture of erf, {n}^{len(betas)} mixture "
                f"nodes, each in closed form ({closed})"
            )
            if "Price line integral" in rules:
                text += f" + numerical Price line integral ({int(call.args[2])} nodes)"
            return text
        gh = self.expr.atoms(GaussHermite)
        if gh:
            (call,) = gh
            r = len(call.args[0])
            n = int(call.args[1])
            plan = kink_plan(call.args[0], sp.Symbol("x", real=True))
            if plan.active:
                return (
                    f"numerical: Gauss-Hermite quadrature, {n} nodes per dimension; kinks: "
                    + plan.describe()
                )
            return f"numerical: Gauss-Hermite quadrature, {n}^{r} nodes"
        text = ", ".join(r for r in self.rules if r != "Price line integral")
        price = self.expr.atoms(PriceIntegral)
        if price:
            n = max(int(p.args[2]) for p in price)
            return (
                f"closed form ({text}) + numerical Price line integral ({n} Gauss-Legendre nodes)"
            )
        return f"closed form ({text})" if text else "closed form"


class PriceIntegral(sp.Function):
    r"""``E[f_0(z_0) f_1(z_1) f_2(z_2) f_3(z_3)]`` for four odd factors by the Price line integral.

    Arguments: ``(kinds, betas, nodes, C_00, C_01, ..., C_33)`` with ``kinds`` a Tuple of Symbols
    ``erf``/``sign``, ``betas`` the erf scales (0 for sign), ``nodes`` the number of
    Gauss--Legendre nodes, then the ten covariance entries (upper triangle, row-major).
    """

    @classmethod
    def eval(cls, *args):
        return None


class GaussHermite(sp.Function):
    r"""``E[\prod_s f_s(z_s)]`` by tensor-product Gauss--Hermite quadrature after a (semi-definite)
    Cholesky factorisation ``C = L L^T``.

    Arguments: ``(funcs, nodes, C_00, C_01, ...)`` with ``funcs`` a Tuple of expressions in the
    engine variable, ``nodes`` the number of nodes per dimension and the covariance entries
    (upper triangle, row-major).
    """

    @classmethod
    def eval(cls, *args):
        return None


class ScaleMixture(sp.Function):
    r"""``E[\prod_s f_s(z_s)]`` for factors polynomial in ``\tanh(c_s x)`` (``tanh``, ``sigmoid``,
    their derivatives and powers), through the scale-mixture representation of the logistic
    function (:func:`tanh_polynomial`, :func:`mixture_expression`): a closed form at each node
    of a Gauss rule for the mixing law.

    Arguments: ``(funcs, nodes, line_nodes, C_00, C_01, ...)``: as for :class:`GaussHermite`,
    with ``nodes`` the Gauss nodes per mixture variable and ``line_nodes`` those of a
    :class:`PriceIntegral` at each mixture node (four odd factors; ``0``: not allowed).
    """

    @classmethod
    def eval(cls, *args):
        return None


SYMPY_LOCALS = {
    "PriceIntegral": PriceIntegral,
    "GaussHermite": GaussHermite,
    "ScaleMixture": ScaleMixture,
}
"""Names :func:`sympy.sympify` needs to read ``srepr`` output of engine results."""


def covariance_symbols(n: int, name: str = "C") -> sp.ImmutableMatrix:
    """Symmetric ``n x n`` matrix of symbols ``C_ab`` (positive variances, real covariances)."""

    def entry(a: int, b: int) -> sp.Symbol:
        a, b = min(a, b), max(a, b)
        return sp.Symbol(f"{name}_{a}{b}", positive=(a == b), real=True)

    return sp.ImmutableMatrix(n, n, lambda a, b: entry(a, b))


def upper(C: sp.Matrix) -> list[sp.Expr]:
    """Upper-triangle entries of ``C``, row-major (the argument order of the numerical calls)."""
    n = C.shape[0]
    return [C[a, b] for a in range(n) for b in range(a, n)]


# --------------------------------------------------------------------------- canonical form
def _kinks_to_sign(f: sp.Expr) -> sp.Expr:
    """``Heaviside(u) -> (1 + sign(u))/2``, ``Abs(u) -> u sign(u)``, ``Max(0, u)``/``Min(0, u)`` ->
    ``(u \\pm |u|)/2``."""

    def max_min(e):  # Max(0, u) = (u + |u|)/2, Min(0, u) = (u - |u|)/2
        (u,) = [a for a in e.args if a != 0]
        return (u + (1 if isinstance(e, sp.Max) else -1) * sp.Abs(u)) / 2

    f = f.replace(
        lambda e: isinstance(e, (sp.Max, sp.Min)) and len(e.args) == 2 and 0 in e.args, max_min
    )
    f = f.replace(lambda e: isinstance(e, sp.Heaviside), lambda e: (1 + sp.sign(e.args[0])) / 2)
    return f.replace(lambda e: isinstance(e, sp.Abs), lambda e: e.args[0] * sp.sign(e.args[0]))


def canonical(f: sp.Expr, x: sp.Symbol) -> sp.Expr:
    """Rewrite kinks and trigonometric factors into the engine's atoms (``sign``, ``exp``).

    Kinks as in :func:`_kinks_to_sign`, ``sin``/``cos``/``sinh``/``cosh`` -> exponentials,
    ``x^k DiracDelta(x) -> 0``. The value at the kink itself is immaterial (a null set of the
    Gaussian).
    """
    f = _kinks_to_sign(sp.sympify(f))
    if f.has(sp.sin, sp.cos, sp.sinh, sp.cosh):
        f = f.rewrite(sp.exp)
    f = sp.expand(f)
    # x * DiracDelta(x) = 0 and sign(x)**2 = 1 almost everywhere / in distribution
    f = f.replace(
        lambda e: e.is_Mul and any(isinstance(a, sp.DiracDelta) for a in e.args) and e.has(x),
        _kill_delta_multiples(x),
    )
    f = f.replace(
        lambda e: e.is_Pow and isinstance(e.base, sp.sign) and e.exp.is_Integer,
        lambda e: sp.Integer(1) if e.exp % 2 == 0 else e.base,
    )
    return f


def _kill_delta_multiples(x):
    def rule(e):
        deltas = [a for a in e.args if isinstance(a, sp.DiracDelta)]
        others = sp.Mul(*[a for a in e.args if not isinstance(a, sp.DiracDelta)])
        if len(deltas) == 1 and deltas[0].args[0] == x and others.subs(x, 0) == 0:
            return sp.Integer(0)
        return e

    return rule


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
        arg = sp.expand(factor.args[0])
        if arg.is_polynomial(x):
            poly = sp.Poly(arg, x)
            if poly.degree() <= 2:
                a2, a1, a0 = (poly.coeff_monomial(x**p) for p in (2, 1, 0))
                if not (a2.is_number and a2 > 0):
                    acc["alpha"] += -a2
                    acc["gamma"] += a1
                    acc["coef"] *= sp.exp(a0)
                    return
    if isinstance(factor, (sp.erf, sp.sign, sp.DiracDelta)) and acc["kind"] is None:
        arg = sp.expand(factor.args[0])
        beta = sp.simplify(arg / x)
        # a numerical scale, or (erf only) a positive symbol such as a scale-mixture node
        scale_ok = beta.is_number or (isinstance(factor, sp.erf) and beta.is_positive)
        if not beta.has(x) and scale_ok and beta != 0:
            if isinstance(factor, sp.erf):
                if beta.is_number and beta < 0:  # erf is odd
                    acc["coef"] *= -1
                    beta = -beta
                acc["kind"], acc["beta"] = "erf", beta
            elif isinstance(factor, sp.sign):
                if beta < 0:
                    acc["coef"] *= -1
                acc["kind"] = "sign"
            else:
                if len(factor.args) > 1:
                    raise NoClosedForm(f"no closed-form rule for the factor {factor}")
                acc["coef"] /= abs(beta)  # delta(b x) = delta(x)/|b|
                acc["kind"] = "delta"
            return
    if isinstance(factor, sp.sign) and acc["kind"] == "sign" and factor.args[0] == x:
        acc["kind"] = None  # sign(x)^2 = 1 almost everywhere
        return
    if isinstance(factor, sp.Pow) and factor.exp.is_Integer and factor.exp > 1:
        for _ in range(int(factor.exp)):
            _parse_factor(factor.base, x, acc)
        return
    raise NoClosedForm(f"no closed-form rule for the factor {factor}")


def atoms_of(f: sp.Expr, x: sp.Symbol) -> tuple[Atom, ...]:
    """Split ``f(x)`` into atoms (raises :class:`NoClosedForm` for unsupported factors)."""
    atoms = []
    for term in sp.Add.make_args(canonical(f, x)):
        acc = {
            "coef": sp.Integer(1),
            "k": 0,
            "alpha": sp.Integer(0),
            "gamma": sp.Integer(0),
            "beta": None,
            "kind": None,
        }
        for factor in sp.Mul.make_args(term):
            _parse_factor(factor, x, acc)
        if acc["coef"] != 0:
            atoms.append(
                Atom(
                    acc["coef"],
                    acc["k"],
                    sp.nsimplify(acc["alpha"]),
                    acc["beta"],
                    acc["kind"],
                    acc["gamma"],
                )
            )
    return tuple(atoms)


def _plain(atom: Atom, **changes) -> Atom:
    d = {
        "coef": sp.Integer(1),
        "k": atom.k,
        "alpha": atom.alpha,
        "beta": atom.beta,
        "kind": atom.kind,
        "gamma": atom.gamma,
    }
    d.update(changes)
    return Atom(**d)


def _derivative(atom: Atom) -> tuple[Atom, ...]:
    """Atoms of d/dx of an atom with ``alpha == gamma == 0`` and no delta (what Stein's lemma
    and Price's theorem meet)."""
    if atom.alpha != 0 or atom.gamma != 0 or atom.kind == "delta":
        raise NoClosedForm("derivative of a tilted, shifted or delta atom")
    out = []
    if atom.k > 0:
        out.append(Atom(atom.coef * atom.k, atom.k - 1, sp.Integer(0), atom.beta, atom.kind))
    if atom.kind == "erf":
        b = atom.beta
        out.append(Atom(atom.coef * 2 * b / sp.sqrt(sp.pi), atom.k, b**2, None, None))
    elif atom.kind == "sign" and atom.k == 0:  # x^k delta(x) = 0 for k >= 1
        out.append(Atom(atom.coef * 2, 0, sp.Integer(0), None, "delta"))
    return tuple(out)


# --------------------------------------------------------------------------- reduction rules
def _submatrix(C: sp.ImmutableMatrix, keep: Sequence[int]) -> sp.ImmutableMatrix:
    return sp.ImmutableMatrix(len(keep), len(keep), lambda a, b: C[keep[a], keep[b]])


def _expect_slots(
    slots: tuple[tuple[Atom, ...], ...], C: sp.ImmutableMatrix, rules: set, opts: tuple
) -> sp.Expr:
    total = sp.Integer(0)
    for choice in itertools.product(*slots):
        total += _expect_atoms(tuple(choice), C, rules, opts)
    return total


def _expect_atoms(atoms: tuple[Atom, ...], C: sp.ImmutableMatrix, rules: set, opts: tuple):
    expr, used = _expect_atoms_cached(atoms, C, opts)
    rules.update(used)
    return expr


@functools.lru_cache(maxsize=65536)
def _expect_atoms_cached(
    atoms: tuple[Atom, ...], C: sp.ImmutableMatrix, opts: tuple
) -> tuple[sp.Expr, frozenset]:
    rules: set[str] = set()
    coef = sp.Mul(*[a.coef for a in atoms])
    atoms = tuple(_plain(a) for a in atoms)
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
        rest = tuple(_plain(a, alpha=sp.Integer(0)) for a in atoms)
        inner = _tidy(_expect_atoms(rest, Cp, rules, opts) / sp.sqrt(delta))
        return coef * inner.xreplace({delta: det}), frozenset(rules)

    # Rule 3: exponential shift (polynomial companions only).
    if any(a.gamma != 0 for a in atoms):
        if any(a.kind is not None for a in atoms):
            raise NoClosedForm("exponential factor together with erf/sign/delta")
        rules.add("exponential shift")
        g = sp.Matrix([a.gamma for a in atoms])
        mu = sp.Matrix(C) * g
        front = sp.exp(sp.expand((g.T * sp.Matrix(C) * g)[0, 0] / 2))
        slots = tuple(
            tuple(
                Atom(sp.binomial(a.k, j) * mu[s] ** (a.k - j), j, sp.Integer(0))
                for j in range(a.k + 1)
            )
            for s, a in enumerate(atoms)
        )
        return coef * front * sp.expand(_expect_slots(slots, C, rules, opts)), frozenset(rules)

    # Constant slots carry no field dependence: drop them.
    keep = [s for s, a in enumerate(atoms) if a.k > 0 or a.kind is not None]
    if len(keep) < n:
        inner = _expect_atoms(tuple(atoms[s] for s in keep), _submatrix(C, keep), rules, opts)
        return coef * inner, frozenset(rules)

    # Rule 4: conditioning on a Dirac delta.
    deltas = [s for s, a in enumerate(atoms) if a.kind == "delta"]
    if deltas:
        b = deltas[0]
        if atoms[b].k > 0:
            return sp.Integer(0), frozenset(rules)
        rules.add("conditioning on a delta")
        rest = [s for s in range(n) if s != b]
        cbb = C[b, b]
        var = cbb if cbb.is_Symbol else sp.Dummy("V", positive=True)
        Cp = sp.ImmutableMatrix(
            len(rest),
            len(rest),
            lambda p, q: sp.cancel(C[rest[p], rest[q]] - C[rest[p], b] * C[b, rest[q]] / var),
        )
        inner = _expect_atoms(tuple(atoms[s] for s in rest), Cp, rules, opts)
        value = _tidy(inner / sp.sqrt(2 * sp.pi * var))
        return coef * value.xreplace({var: cbb}), frozenset(rules)

    # Rule 5: Stein's lemma on the first polynomial factor.
    poly = [s for s, a in enumerate(atoms) if a.k > 0]
    if poly:
        rules.add("Stein's lemma")
        a = poly[0]
        h = _plain(atoms[a], k=atoms[a].k - 1)
        total = sp.Integer(0)
        for b in range(n):
            if C[a, b] == 0:
                continue
            slots = [(atom,) for atom in atoms]
            slots[a] = (h,)
            slots[b] = _derivative(h) if b == a else _derivative(atoms[b])
            if not slots[b]:
                continue
            total += C[a, b] * _expect_slots(tuple(slots), C, rules, opts)
        return coef * total, frozenset(rules)

    # Rule 6: base cases, products of odd factors (erf, sign) only.
    if n == 0:
        return coef, frozenset(rules)
    if n % 2 == 1:
        rules.add("odd symmetry")
        return sp.Integer(0), frozenset(rules)
    if n == 2:
        kinds = (atoms[0].kind, atoms[1].kind)
        order = (0, 1) if kinds <= kinds[::-1] else (1, 0)
        a0, a1 = atoms[order[0]], atoms[order[1]]
        rules.add(f"{a0.kind}-{a1.kind} pair by Price's theorem")
        lemma, (b1, b2, c11, c22, c12) = _pair_lemma(a0.kind, a1.kind)
        sub = {
            b1: a0.beta or sp.Integer(1),
            b2: a1.beta or sp.Integer(1),
            c11: C[order[0], order[0]],
            c22: C[order[1], order[1]],
            c12: C[0, 1],
        }
        return coef * lemma.xreplace(sub), frozenset(rules)
    line_nodes = dict(opts).get("line_nodes")
    if n == 4 and line_nodes:
        rules.add("Price line integral")
        kinds = sp.Tuple(*[sp.Symbol(a.kind) for a in atoms])
        betas = sp.Tuple(*[a.beta if a.kind == "erf" else sp.Integer(0) for a in atoms])
        return coef * PriceIntegral(kinds, betas, sp.Integer(line_nodes), *upper(C)), frozenset(
            rules
        )
    raise NoClosedForm(f"no closed form for a product of {n} odd factors")


def _tidy(expr: sp.Expr) -> sp.Expr:
    """Bring the bases of square roots over a common denominator (so that positive tilting
    determinants leave the root), and cancel rational factors."""
    expr = expr.replace(
        lambda e: e.is_Pow and e.exp.is_Rational and e.exp.q == 2,
        lambda e: sp.Pow(sp.together(e.base), e.exp),
    )
    return sp.factor_terms(expr)


@functools.lru_cache(maxsize=8)
def _pair_lemma(kind1: str, kind2: str):
    r"""``E[u_1(z_1) u_2(z_2)]`` for odd ``u`` (``erf(b x)`` or ``sign(x)``) by Price's theorem.

    ``d/dC_12 E[u_1 u_2] = E[u_1' u_2']`` is a tilting/conditioning integral of the form
    ``1/\sqrt{A - B s^2}``; integrate it from ``C_12 = 0``, where the two fields are independent
    and each odd factor has zero mean.
    """
    b1, b2, c11, c22 = sp.symbols("b1 b2 c11 c22", positive=True)
    c12, s = sp.symbols("c12 s", real=True)
    C = sp.ImmutableMatrix([[c11, s], [s, c22]])
    first = [
        Atom(sp.Integer(1), 0, sp.Integer(0), b if kd == "erf" else None, kd)
        for b, kd in ((b1, kind1), (b2, kind2))
    ]
    density = _expect_slots(tuple(_derivative(a) for a in first), C, set(), ())
    # At s = 0 the factors are independent and each odd factor has zero mean: the value is 0.
    A, B = sp.symbols("A B", positive=True)
    radicand = sp.expand(1 / (density**2))
    poly = sp.Poly(radicand, s)
    a0, a2 = poly.coeff_monomial(1), -poly.coeff_monomial(s**2)
    if poly.degree() != 2 or poly.coeff_monomial(s) != 0:
        raise NoClosedForm("unexpected form of the Price integrand of an odd pair")
    antider = sp.integrate(1 / sp.sqrt(A - B * s**2), (s, 0, c12), conds="none")
    value = antider.xreplace({A: a0, B: a2})
    value = sp.simplify(value).replace(
        lambda e: e.is_Pow and e.exp.is_Rational and e.exp.q == 2,
        lambda e: sp.Pow(sp.factor(e.base), e.exp),
    )
    return value, (b1, b2, c11, c22, c12)


def price_integrand(
    call: PriceIntegral, s: sp.Symbol
) -> tuple[list[tuple[tuple[int, int], sp.Expr]], tuple[sp.Symbol, ...]]:
    r"""Closed-form integrands of a :class:`PriceIntegral`: for each pair ``a < b`` the term
    ``C_{ab} E_{C(s)}[u_a' u_b' u_c u_d]`` (``C(s)``: off-diagonal entries scaled by ``s``), in
    covariance symbols ``C_ab`` and ``s``; the value is ``\int_0^1`` of their sum."""
    kinds, betas = call.args[0], call.args[1]
    C = covariance_symbols(4)
    Cs = sp.ImmutableMatrix(4, 4, lambda a, b: C[a, b] if a == b else s * C[a, b])
    atoms = [
        Atom(sp.Integer(1), 0, sp.Integer(0), (bt if str(kd) == "erf" else None), str(kd))
        for kd, bt in zip(kinds, betas, strict=True)
    ]
    terms = []
    for a, b in itertools.combinations(range(4), 2):
        slots = [(atom,) for atom in atoms]
        slots[a] = _derivative(atoms[a])
        slots[b] = _derivative(atoms[b])
        terms.append(((a, b), C[a, b] * _expect_slots(tuple(slots), Cs, set(), ())))
    return terms, tuple(upper(C))


# --------------------------------------------------------------------------- kinks in quadratures
KINKS = (sp.sign, sp.Heaviside, sp.Abs, sp.Max, sp.Min)
MU, ELL = sp.Symbol("mu", real=True), sp.Symbol("ell", positive=True)
"""Conditional mean and standard deviation of the field a kinked factor is smoothed over."""


@functools.lru_cache(maxsize=256)
def kink_parts(f: sp.Expr, x: sp.Symbol) -> tuple[sp.Expr, sp.Expr] | None:
    r"""``(s_0, s_1)`` with ``f = s_0(x) + s_1(x) \operatorname{sign}(x)`` and ``s_0``, ``s_1`` free
    of kinks, when ``f`` has kinks (``sign``, ``Heaviside``, ``Abs``, ``Max``/``Min`` with 0) at
    ``x = 0`` only; ``None`` when ``f`` has no kink, a kink elsewhere, or a Dirac delta."""
    f = sp.sympify(f)
    if not f.has(*KINKS) or f.has(sp.DiracDelta):
        return None
    g = sp.expand(_kinks_to_sign(f))
    g = g.replace(
        lambda e: e.is_Pow and isinstance(e.base, sp.sign) and e.exp.is_Integer,
        lambda e: sp.Integer(1) if e.exp % 2 == 0 else e.base,
    )
    s1 = sp.expand(g.coeff(sp.sign(x)))
    s0 = sp.expand(g - s1 * sp.sign(x))
    if s1 == 0 or s0.has(*KINKS) or s1.has(*KINKS):
        return None
    return s0, s1


@functools.lru_cache(maxsize=256)
def smoothed_kink(f: sp.Expr, x: sp.Symbol) -> sp.Expr | None:
    r"""``E[f(\mu + \ell u)]`` for ``u ~ N(0, 1)`` in closed form, in the symbols :data:`MU` and
    :data:`ELL`, for ``f = s_0 + s_1 \operatorname{sign}`` with polynomial ``s_0``, ``s_1``
    (``relu``, ``Heaviside``, ``sign``, ``|x|``, ...); ``None`` otherwise.

    With ``t = \mu/\ell``: ``E[(\mu + \ell u)^k \operatorname{sign}(\mu + \ell u)] =
    \sum_j \binom{k}{j} \mu^{k-j} \ell^j (E[u^j] - 2 I_j(-t))`` with the partial moments
    ``I_j(a) = \int_{-\infty}^a u^j \varphi(u) du`` (``I_0 = \Phi(a)``, ``I_1 = -\varphi(a)``,
    ``I_j = -a^{j-1}\varphi(a) + (j - 1) I_{j-2}``). Every power of ``t`` outside ``\Phi`` and
    ``\varphi`` is at most ``j - 1``, so the result has no negative power of ``\ell`` there and
    tends to ``f(\mu)`` as ``\ell \to 0``."""
    parts = kink_parts(f, x)
    if parts is None or not all(p.is_polynomial(x) for p in parts):
        return None
    s0, s1 = (sp.Poly(p, x) for p in parts)
    t = MU / ELL
    Phi = (1 + sp.erf(-t / sp.sqrt(2))) / 2  # Phi(-t)
    phi = sp.exp(-(t**2) / 2) / sp.sqrt(2 * sp.pi)  # phi(-t) = phi(t)

    def moment(j):  # E[u^j]
        return sp.factorial2(j - 1) if j % 2 == 0 else sp.Integer(0)

    partial = [Phi, -phi]  # I_j(-t)
    for j in range(2, max(s0.degree(), s1.degree()) + 1):
        partial.append(-((-t) ** (j - 1)) * phi + (j - 1) * partial[j - 2])
    total = sp.Integer(0)
    for poly, signed in ((s0, False), (s1, True)):
        for (k,), c in poly.terms():
            for j in range(k + 1):
                inner = moment(j) - 2 * partial[j] if signed else moment(j)
                total += c * sp.binomial(k, j) * MU ** (k - j) * ELL**j * inner
    return sp.expand(total)


@dataclass(frozen=True)
class KinkPlan:
    """How the quadrature of a :class:`GaussHermite` call treats the kinks of its factors.

    ``kinked``: the slots with a kink at 0. Up to two, the node rule follows them exactly (one:
    a half-range rule on the first Cholesky coordinate; two: polar wedges bounded by both kink
    lines). With three or more, one of them is put last in the Cholesky order and integrated in
    closed form given the others (:func:`smoothed_kink`), the next two are split by wedges, and
    any further ones are left to the tensor rule. ``closed``: the slots that can be the closed-
    form one; the generated code evaluates each choice and keeps, per covariance, the one whose
    field is least determined by the others (largest conditional standard deviation relative to
    its own): a nearly determined field would make its smoothed factor a near-kink that the
    tensor rule does not follow."""

    kinked: tuple[int, ...] = ()
    closed: tuple[int, ...] = ()

    @property
    def active(self) -> bool:
        return bool(self.kinked)

    def variants(self) -> list[tuple[tuple[int, ...], int | None]]:
        """``(split, last)`` for each choice of the closed-form slot (further kinked slots are
        left to the tensor rule)."""
        if len(self.kinked) <= 2 or not self.closed:
            return [(self.kinked[:2], None)]
        return [(tuple(s for s in self.kinked if s != c)[:2], c) for c in self.closed]

    def describe(self) -> str:
        z = ", ".join(f"z_{s}" for s in self.kinked)
        if len(self.kinked) == 1:
            return f"{z} split at 0 (half-range rule)"
        if len(self.kinked) == 2:
            return f"{z} split by polar wedges"
        if not self.closed:
            text = f"z_{self.kinked[0]}, z_{self.kinked[1]} split by polar wedges"
        else:
            text = (
                f"of {z}, the field least determined by the others (chosen per covariance among "
                + ", ".join(f"z_{s}" for s in self.closed)
                + ") integrated in closed form, two more split by polar wedges"
            )
        n_unsplit = len(self.kinked) - 2 - (1 if self.closed else 0)
        return text + (f"; {n_unsplit} not split (slow convergence)" if n_unsplit else "")


def kink_plan(funcs: Sequence[sp.Expr], x: sp.Symbol) -> KinkPlan:
    """The :class:`KinkPlan` for the factors ``funcs`` (expressions in ``x``)."""
    kinked = tuple(s for s, f in enumerate(funcs) if kink_parts(f, x) is not None)
    if len(kinked) <= 2:
        return KinkPlan(kinked=kinked)
    closed = tuple(s for s in kinked if smoothed_kink(funcs[s], x) is not None)
    return KinkPlan(kinked=kinked, closed=closed)


# --------------------------------------------------------------------------- scale mixtures
DEFAULT_MIXTURE_NODES = {1: 16, 2: 12, 3: 10, 4: 8}
"""Nodes of the Kolmogorov scale-mixture rule per mixture variable, by the number of mixture
variables of an expectation."""
MAX_MIXTURE_VARIABLES = 4
"""Beyond this many mixture variables (``n^d`` closed forms) Gauss--Hermite quadrature is used."""


def _rational_exponent_gcd(values) -> sp.Expr | None:
    r"""Largest ``g > 0`` with every value an integer multiple of ``g`` (values rational
    multiples of one another: ``1/2`` and ``1``, ``\sqrt2`` and ``2\sqrt2``); else ``None``."""
    values = [v for v in values if v != 0]
    if not values:
        return None
    ratios = [sp.nsimplify(v / values[0]) for v in values]
    if not all(r.is_Rational for r in ratios):
        return None
    out = sp.Integer(0)
    for r in ratios:
        out = sp.gcd(out, r)
    return abs(values[0] * out)


@functools.lru_cache(maxsize=256)
def tanh_polynomial(f: sp.Expr, x: sp.Symbol) -> tuple[sp.Expr, sp.Poly] | None:
    r"""``(c, P)`` with ``f(x) = P(\tanh(c x))``, ``P`` a polynomial whose coefficients are free
    of exponentials linear in ``x`` (``x``-polynomials, Gaussians, ...), when there is one;
    ``None`` otherwise.

    Hyperbolic functions are rewritten as exponentials ``e^{k x}``; with ``w = e^{\kappa x}``
    (``\kappa`` the gcd of the ``k``) ``f`` is a rational function of ``w``; if it is one of
    ``E = w^p = e^{2 c x}`` (``p`` the gcd of the exponents), ``E = (1 + t)/(1 - t)`` with
    ``t = \tanh(c x)`` turns it into a rational function of ``t``, accepted when polynomial.
    This finds ``tanh``, ``sech^2 = 1 - \tanh^2`` and the logistic function
    ``1/(1 + e^{-x}) = (1 + \tanh(x/2))/2`` in whatever form SymPy simplified them to."""
    g = sp.sympify(f).rewrite(sp.exp)

    def scale(e):  # real k for exp(k x), else None
        k = sp.simplify(e.args[0] / x)
        return k if not k.has(x) and k.is_number and k.is_real else None

    linear = {e: k for e in g.atoms(sp.exp) if (k := scale(e)) is not None}
    kappa = _rational_exponent_gcd(list(linear.values()))
    if kappa is None:
        return None
    w, t = sp.Dummy("w", positive=True), sp.Dummy("t", real=True)
    h = g.xreplace({e: w ** int(sp.nsimplify(k / kappa)) for e, k in linear.items()})
    num, den = sp.fraction(sp.cancel(sp.together(h)))
    if not (num.is_polynomial(w) and den.is_polynomial(w)):
        return None
    num, den = sp.Poly(num, w), sp.Poly(den, w)
    p = int(_rational_exponent_gcd([sp.Integer(m[0]) for m in num.monoms() + den.monoms()]) or 0)
    if p == 0:
        return None

    def in_t(poly):  # sum a_j w^(p j) with w^p = E = (1 + t)/(1 - t)
        return sum((c * ((1 + t) / (1 - t)) ** (m[0] // p) for m, c in poly.terms()), sp.Integer(0))

    r = sp.cancel(in_t(num) / in_t(den))
    rn, rd = sp.fraction(r)
    if rd.has(t) or not rn.is_polynomial(t):
        return None
    return kappa * p / 2, sp.Poly(sp.expand(rn / rd), t)


def _mixture_factor(f: sp.Expr, x: sp.Symbol, slot: int) -> tuple[sp.Expr, tuple[sp.Symbol, ...]]:
    r"""``f`` with every power of ``t = \tanh(c x)`` written through ``t^2 = 1 - s`` (``s =
    \operatorname{sech}^2(c x)``) as a sum of ``t^a s^b`` (``a \le 1``), and each such monomial
    replaced by its scale-mixture integrand ``\prod_{j<a} \operatorname{erf}(\beta_j c x)
    \prod_{a \le j < a+b} (2\beta_j/\sqrt\pi) e^{-\beta_j^2 c^2 x^2}`` (``\tanh(y) =
    E_K[\operatorname{erf}(\beta y)]``, ``\operatorname{sech}^2(y) = E_K[(2\beta/\sqrt\pi)
    e^{-\beta^2 y^2}]``, ``\beta = 1/(\sqrt2 K)``, independent ``K`` per factor). Returns the
    integrand and its mixture symbols (none when ``f`` is not polynomial in a ``tanh``)."""
    found = tanh_polynomial(f, x)
    if found is None:
        return f, ()
    c, P = found
    t, s = P.gens[0], sp.Dummy("s")
    reduced = sp.Poly(
        sp.expand(sum(cf * t ** (j % 2) * (1 - s) ** (j // 2) for (j,), cf in P.terms())), t, s
    )
    width = max(a + b for a, b in reduced.monoms())
    betas = tuple(sp.Symbol(f"beta_{slot}_{j}", positive=True) for j in range(width))
    out = sp.Integer(0)
    for (a, b), cf in reduced.terms():
        term = cf * sp.Mul(*[sp.erf(betas[j] * c * x) for j in range(a)])
        term *= sp.Mul(
            *[
                2 * betas[j] / sp.sqrt(sp.pi) * sp.exp(-(betas[j] ** 2) * c**2 * x**2)
                for j in range(a, a + b)
            ]
        )
        out += term
    return out, betas


@functools.lru_cache(maxsize=256)
def mixture_expression(
    funcs: tuple[sp.Expr, ...], x: sp.Symbol, line_nodes: int = 0
) -> tuple[sp.Expr, tuple[sp.Symbol, ...], tuple[str, ...]]:
    r"""Closed-form integrand of a :class:`ScaleMixture`: ``E[\prod_s f_s(z_s)]`` given the
    mixture variables, in the covariance symbols ``C_ab`` and the symbols ``\beta`` returned
    with it (and the rules used); the expectation is its mean over independent
    ``\beta = 1/(\sqrt2 K)``, ``K`` Kolmogorov distributed (Andrews & Mallows 1974: the logistic
    law is a normal scale mixture, so ``\tanh(y) = E_K[\operatorname{erf}(y/(\sqrt2 K))]``).

    With ``line_nodes``, four odd factors (``sign sign erf erf`` from ``H H tanh tanh``) become a
    :class:`PriceIntegral` whose erf scales are mixture symbols.

    Raises :class:`NoClosedForm` when no factor is polynomial in a ``tanh``, there are more than
    :data:`MAX_MIXTURE_VARIABLES` mixture variables, or the rules cannot reduce the integrand."""
    parts = [_mixture_factor(f, x, s) for s, f in enumerate(funcs)]
    betas = tuple(b for _, bs in parts for b in bs)
    if not betas:
        raise NoClosedForm("no factor is a polynomial in tanh")
    if len(betas) > MAX_MIXTURE_VARIABLES:
        raise NoClosedForm(f"{len(betas)} scale-mixture variables")
    cov = covariance_symbols(len(funcs))
    opts = (("line_nodes", line_nodes),) if line_nodes else ()
    expr, rules = _gaussian_expectation_cached(tuple(f for f, _ in parts), x, cov, opts)
    return expr, betas, rules


def _mixture_call(funcs, x, cov, nodes, line_nodes) -> sp.Expr | None:
    """The :class:`ScaleMixture` call for ``funcs``, or ``None`` where it does not apply."""
    line_nodes = line_nodes or 0
    try:
        _, betas, _ = mixture_expression(funcs, x, line_nodes)
    except NoClosedForm:
        return None
    m = nodes if isinstance(nodes, int) else dict(nodes).get(len(betas))
    if not m:
        return None
    g = sp.Symbol("x", real=True)
    return ScaleMixture(
        sp.Tuple(*[f.xreplace({x: g}) for f in funcs]),
        sp.Integer(m),
        sp.Integer(line_nodes),
        *upper(cov),
    )


# --------------------------------------------------------------------------- public entry
@functools.lru_cache(maxsize=1024)
def _gaussian_expectation_cached(
    funcs: tuple[sp.Expr, ...], x: sp.Symbol, cov: sp.ImmutableMatrix, opts: tuple
):
    rules: set[str] = set()
    slots = tuple(atoms_of(f, x) for f in funcs)
    if any(len(s) == 0 for s in slots):
        return sp.Integer(0), ()
    expr = _expect_slots(slots, cov, rules, opts)
    return expr, tuple(sorted(rules))


def gaussian_expectation(
    funcs: Sequence[sp.Expr],
    x: sp.Symbol,
    *,
    cov: sp.Matrix | None = None,
    line_nodes: int | None = None,
    quadrature_nodes: int | None = None,
    mixture_nodes: int | Mapping[int, int] | None = None,
) -> Expectation:
    r"""``E[\prod_s f_s(z_s)]`` for ``z ~ N(0, cov)``: closed form where the rules reach one.

    Args:
        funcs: one SymPy expression in ``x`` per field (repeat a field by repeating its row in
            ``cov``).
        x: the variable the expressions are written in.
        cov: symmetric covariance (default: symbols ``C_ab`` from :func:`covariance_symbols`).
        line_nodes: allow the one-dimensional numerical :class:`PriceIntegral` for products of
            four odd factors, with this many Gauss--Legendre nodes (default: not allowed).
        quadrature_nodes: if the rules fail, return a :class:`GaussHermite` call with this many
            nodes per dimension instead of raising (default: raise).
        mixture_nodes: if the rules fail and the factors are polynomials in ``tanh`` (``tanh``,
            ``sigmoid``, their derivatives), first try a :class:`ScaleMixture` call with this
            many nodes per mixture variable, or ``mixture_nodes[d]`` for ``d`` mixture variables
            (a mapping such as :data:`DEFAULT_MIXTURE_NODES`; a missing ``d`` skips the path);
            default: not tried.

    Returns:
        :class:`Expectation` with the expression, the covariance used and the rules applied.

    Raises:
        NoClosedForm: if the rules cannot reduce it and ``quadrature_nodes`` is not given.

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
    funcs = tuple(sp.sympify(f) for f in funcs)
    opts = (("line_nodes", line_nodes),) if line_nodes else ()
    try:
        expr, rules = _gaussian_expectation_cached(funcs, x, cov, opts)
    except NoClosedForm:
        if mixture_nodes:
            call = _mixture_call(funcs, x, cov, mixture_nodes, line_nodes)
            if call is not None:
                return Expectation(expr=call, cov=cov, rules=("scale mixture",))
        if not quadrature_nodes:
            raise
        g = sp.Symbol("x", real=True)
        call = GaussHermite(
            sp.Tuple(*[f.xreplace({x: g}) for f in funcs]),
            sp.Integer(quadrature_nodes),
            *upper(cov),
        )
        return Expectation(expr=call, cov=cov, rules=("Gauss-Hermite quadrature",))
    if expr.has(sp.I):  # trigonometric factors: the imaginary parts cancel on expansion
        expr = sp.expand(expr)
    return Expectation(expr=expr, cov=cov, rules=rules)
