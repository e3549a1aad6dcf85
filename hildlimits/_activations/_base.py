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
        name: registry name (the config value).
        expr: ``g(x)`` as a SymPy expression in :data:`X`.
        description: one line for ``derive`` output.
    """

    name: str
    expr: sp.Expr
    description: str

    def derivative(self, order: int = 1) -> sp.Expr:
        return sp.diff(self.expr, X, order)

    def jax_function(self, order: int = 0):
        """Elementwise JAX function of the activation (``order``: derivative order)."""
        return _lambdify(self.expr, order)


@functools.lru_cache(maxsize=128)
def _lambdify(expr: sp.Expr, order: int):
    import jax.numpy as jnp
    import jax.scipy.special as jss

    f = sp.lambdify(X, sp.diff(expr, X, order), modules=[{"erf": jss.erf}, "jax"])
    if not sp.diff(expr, X, order).has(X):  # constant (e.g. derivative of linear)
        const = float(sp.diff(expr, X, order))
        return lambda x: jnp.full_like(x, const)
    return f
