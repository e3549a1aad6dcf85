from __future__ import annotations

import functools
from dataclasses import dataclass

import sympy as sp

X = sp.Symbol("x", real=True)
"""The variable every activation expression is written in."""


@dataclass(frozen=True)
class Activation:
    """A pointwise activation ``g(x)`` given by a SymPy expression in :data:`X`.

    Attributes:
        name: registry name (the config value), or the user's expression string.
        expr: ``g(x)`` as a SymPy expression in :data:`X`.
        description: one line for ``derive`` output.
    """

    name: str
    expr: sp.Expr
    description: str

    def derivative(self, order: int = 1) -> sp.Expr:
        return sp.diff(self.expr, X, order)

    @property
    def differentiable(self) -> bool:
        """Whether ``g'`` is a function (ReLU's step is; sign's Dirac delta is not)."""
        from .._gaussian import canonical

        return not canonical(self.derivative(1), X).has(sp.DiracDelta)

    def jax_function(self, order: int = 0):
        """Elementwise JAX function of the activation (``order``: derivative order)."""
        return _lambdify(self.expr, order)


@functools.lru_cache(maxsize=128)
def _lambdify(expr: sp.Expr, order: int):
    import jax.numpy as jnp
    import jax.scipy.special as jss

    d = sp.diff(expr, X, order)
    if not d.has(X):  # constant (e.g. derivative of linear)
        const = float(d)
        return lambda x: jnp.full_like(x, const)
    return sp.lambdify(X, d, modules=[{"erf": jss.erf}, "jax"])
