from __future__ import annotations

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
