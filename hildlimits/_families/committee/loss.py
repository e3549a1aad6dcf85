r"""Losses and label maps of the committee family.

A loss is ``l(yhat, y)`` with ``yhat`` the student's output and ``y`` the label the student is
trained on; the label is ``label(y)`` of the noisy teacher output
``y = sum_n v*_n g*(nu_n) + sigma zeta``. Named losses (:data:`LOSSES`) or any expression in
``yhat`` and ``y`` (parsed by :func:`hildlimits._engine.expr.parse_expression`, never evaluated as
Python); labels are expressions in ``y`` (default ``"y"``).

Which derivation a model takes (:func:`path_of`):

* ``"closed"`` -- the label is the identity and the loss is a polynomial of degree <= 2 in
  ``(yhat, y)`` (square, correlation): the drift expands into Gaussian expectations of at most
  four fields, each taken by the closed-form engine (today's path; the square loss gives today's
  equations unchanged);
* ``"joint"`` -- anything else: the drift involves ``E[l'(yhat, label(y)) ...]`` over the joint
  law of all ``K + M`` fields and the noise, taken by the joint numerical rule
  (:mod:`hildlimits._families.committee.joint`).
"""

from __future__ import annotations

import functools
import numbers

import sympy as sp

from hildlimits._errors import ConfigError

YHAT = sp.Symbol("yhat", real=True)
Y = sp.Symbol("y", real=True)
DELTA = sp.Symbol("delta", positive=True)


class softplus(sp.Function):  # noqa: N801 (SymPy function names are lower case)
    r"""``log(1 + e^z)``, printed as ``jax.nn.softplus`` (no overflow for large ``z``)."""

    def fdiff(self, argindex=1):
        return sigmoid(self.args[0])

    def _eval_rewrite_as_log(self, z, **kwargs):
        return sp.log(1 + sp.exp(z))


class sigmoid(sp.Function):  # noqa: N801
    r"""``1 / (1 + e^{-z})``, printed as ``jax.nn.sigmoid``."""

    def fdiff(self, argindex=1):
        z = self.args[0]
        return sigmoid(z) * (1 - sigmoid(z))

    def _eval_rewrite_as_exp(self, z, **kwargs):
        return 1 / (1 + sp.exp(-z))


def _huber(delta: float) -> sp.Expr:
    r = YHAT - Y
    c = sp.Min(sp.Abs(r), sp.Float(delta))
    return c * sp.Abs(r) - c**2 / 2


LOSSES = {
    "square": lambda d: (YHAT - Y) ** 2 / 2,
    "logistic": lambda d: softplus(-Y * YHAT),
    "correlation": lambda d: -Y * YHAT,
    "huber": _huber,
}
"""Named losses: ``square`` ``(yhat - y)^2/2``, ``logistic`` ``log(1 + e^{-y yhat})``,
``correlation`` ``-y yhat``, ``huber`` (quadratic for ``|yhat - y| <= delta``, linear beyond;
``model.huber_delta``, default 1)."""

_FUNCTIONS = None


def _functions():
    global _FUNCTIONS
    if _FUNCTIONS is None:
        from hildlimits._engine.expr import FUNCTIONS

        _FUNCTIONS = {**FUNCTIONS, "softplus": softplus, "sigmoid": sigmoid}
    return _FUNCTIONS


def _stable(expr: sp.Expr) -> sp.Expr:
    """``log(1 + exp(z))`` -> ``softplus(z)`` (so the printed code does not overflow)."""
    w = sp.Wild("w")
    return expr.replace(sp.log(1 + sp.exp(w)), softplus(w))


def _check_derivative(expr: sp.Expr, *, field: str, text: str) -> None:
    if expr.has(sp.Derivative, sp.Subs):
        raise ConfigError(f"{field}: {text!r} has no derivative in yhat SymPy can write down")
    if expr.has(sp.DiracDelta):
        raise ConfigError(
            f"{field}: the derivative of {text!r} in yhat is not a function (it has a Dirac delta)"
        )
    if expr.has(sp.zoo, sp.nan, sp.oo, -sp.oo):
        raise ConfigError(f"{field}: the derivative of {text!r} in yhat is not finite")


@functools.lru_cache(maxsize=64)
def loss_expression(loss: str, huber_delta: float = 1.0) -> sp.Expr:
    """The loss ``l(yhat, y)`` as a SymPy expression (checked: symbols, derivative in yhat)."""
    field = "model.loss"
    if loss in LOSSES:
        expr = LOSSES[loss](huber_delta)
    else:
        from hildlimits._engine.expr import parse_expression

        expr = parse_expression(
            loss, field=field, variables={"yhat": YHAT, "y": Y}, functions=_functions()
        )
        expr = _stable(expr)
        extra = sorted(str(s) for s in expr.free_symbols - {YHAT, Y})
        if extra:
            raise ConfigError(
                f"{field}: {loss!r} may only use yhat and y, found {extra[0]!r} "
                f"(or a named loss: {', '.join(LOSSES)})"
            )
    if not expr.has(YHAT):
        raise ConfigError(f"{field}: {loss!r} does not depend on yhat")
    _check_derivative(sp.diff(expr, YHAT), field=field, text=loss)
    return expr


@functools.lru_cache(maxsize=64)
def label_expression(label: str) -> sp.Expr:
    """The label map ``label(y)`` as a SymPy expression in ``y``."""
    from hildlimits._engine.expr import parse_expression

    expr = parse_expression(label, field="model.label", variables={"y": Y}, functions=_functions())
    expr = _stable(expr)
    extra = sorted(str(s) for s in expr.free_symbols - {Y})
    if extra:
        raise ConfigError(f"model.label: {label!r} may only use the variable y, found {extra[0]!r}")
    return expr


def check_loss(loss: object, label: object, huber_delta: object) -> float:
    """Validate ``model.loss``, ``model.label``, ``model.huber_delta``; returns the delta."""
    import math

    if not isinstance(loss, str) or not loss.strip():
        raise ConfigError(
            f"model.loss must be one of {', '.join(repr(k) for k in LOSSES)} or an expression in "
            f"yhat and y, got {loss!r}"
        )
    if not isinstance(label, str) or not label.strip():
        raise ConfigError(f"model.label must be an expression in y, got {label!r}")
    if (
        isinstance(huber_delta, bool)
        or not isinstance(huber_delta, numbers.Real)
        or not math.isfinite(huber_delta)
        or huber_delta <= 0
    ):
        raise ConfigError(f"model.huber_delta must be a positive number, got {huber_delta!r}")
    if huber_delta != 1.0 and loss != "huber":
        raise ConfigError("model.huber_delta is only used with model.loss = 'huber'")
    if loss not in LOSSES:
        if loss.strip().isidentifier() and loss.strip() not in ("yhat", "y"):
            import difflib

            close = difflib.get_close_matches(loss.strip(), list(LOSSES), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"model.loss must be one of {', '.join(repr(k) for k in LOSSES)} or an "
                f"expression in yhat and y, got {loss!r}{hint}"
            )
        loss_expression(loss, float(huber_delta))
    label_expression(label)
    return float(huber_delta)


def is_default(loss: str, label: str) -> bool:
    return loss == "square" and label.strip() == "y"


@functools.lru_cache(maxsize=64)
def path_of(loss: str, label: str, huber_delta: float = 1.0) -> str:
    """``"closed"`` (template path) or ``"joint"`` (see the module docstring)."""
    if is_default(loss, label):
        return "closed"
    lab = label_expression(label)
    if sp.simplify(lab - Y) != 0:
        return "joint"
    expr = loss_expression(loss, huber_delta)
    try:
        poly = sp.Poly(sp.expand(expr), YHAT, Y)
    except sp.PolynomialError:
        return "joint"
    if poly.total_degree() > 2 or any(c.free_symbols for c in poly.coeffs()):
        return "joint"
    return "closed"


def kink_points(label: sp.Expr) -> tuple[float, ...] | None:
    """Values of ``y`` where ``label`` (or its derivative) jumps: the zeros of the arguments of
    its ``sign``, ``Abs``, ``Heaviside``, ``Max``, ``Min`` factors, when each is linear in ``y``;
    ``()`` for a smooth label, ``None`` if a kink is not at a fixed point."""
    points = set()
    for atom in label.atoms(sp.sign, sp.Abs, sp.Heaviside):
        args = [atom.args[0]]
        points |= _zeros(args)
    for atom in label.atoms(sp.Max, sp.Min):
        a, *rest = atom.args
        for b in rest:
            points |= _zeros([a - b])
    if None in points:
        return None
    return tuple(sorted(points))


def _zeros(args) -> set:
    out = set()
    for arg in args:
        if not arg.has(Y):
            continue
        p = sp.Poly(arg, Y) if arg.is_polynomial(Y) else None
        if p is None or p.degree() != 1:
            out.add(None)
            continue
        a, b = p.all_coeffs()
        out.add(float(-b / a))
    return out


def is_binary(label: sp.Expr) -> bool:
    """Whether the label takes the values +-1 only (``sign(y)``, ``-sign(y)``, ...): then the
    classification error ``P(sign(yhat) != label)`` is an observable."""
    if label.func is sp.sign:
        return True
    if label.is_Mul and len(label.args) == 2:
        c, s = label.args
        return s.func is sp.sign and c in (-1, 1)
    return False


@functools.lru_cache(maxsize=64)
def jax_functions(loss: str, label: str, huber_delta: float = 1.0):
    """``(label(y), l(yhat, y), dl/dyhat(yhat, y))`` as elementwise JAX functions (the
    simulator's), lambdified from the same SymPy expressions the derivation uses."""
    import jax
    import jax.scipy.special as jss

    modules = [
        {"erf": jss.erf, "softplus": jax.nn.softplus, "sigmoid": jax.nn.sigmoid},
        "jax",
    ]
    ell = loss_expression(loss, huber_delta)
    lab = label_expression(label)
    f_label = sp.lambdify(Y, lab, modules=modules)
    f_loss = sp.lambdify((YHAT, Y), ell, modules=modules)
    f_dloss = sp.lambdify((YHAT, Y), sp.diff(ell, YHAT), modules=modules)
    return f_label, f_loss, f_dloss
