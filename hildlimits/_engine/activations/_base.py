from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import FrozenInstanceError


def __getattr__(name: str):
    # X is a SymPy symbol: importing SymPy (~0.7 s) waits until it is asked for
    if name == "X":
        import sympy as sp

        globals()["X"] = sp.Symbol("x", real=True)
        return globals()["X"]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class Activation:
    """A pointwise activation ``g(x)`` given by a SymPy expression in :data:`X`.

    ``Activation(name, expr, description)``; a named activation of the registry instead gives
    ``build`` (a function returning ``expr``, called on first use of :attr:`expr`) and whether it
    is ``differentiable``, so that checking a name does not import SymPy.

    Attributes:
        name: registry name (the config value), or the user's expression string.
        expr: ``g(x)`` as a SymPy expression in :data:`X`.
        description: one line for ``derive`` output.
    """

    __slots__ = ("name", "description", "_expr", "_build", "_differentiable")

    def __init__(
        self,
        name: str,
        expr=None,
        description: str = "",
        *,
        build: Callable[[], object] | None = None,
        differentiable: bool | None = None,
    ):
        if (expr is None) == (build is None):
            raise TypeError("Activation needs exactly one of expr and build")
        for slot, value in (
            ("name", name),
            ("description", description),
            ("_expr", expr),
            ("_build", build),
            ("_differentiable", differentiable),
        ):
            object.__setattr__(self, slot, value)

    def __setattr__(self, name, value):
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name):
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    @property
    def expr(self):
        if self._expr is None:
            object.__setattr__(self, "_expr", self._build())
        return self._expr

    def __eq__(self, other):
        if other.__class__ is not self.__class__:
            return NotImplemented
        return (self.name, self.description) == (other.name, other.description) and (
            self.expr == other.expr
        )

    def __hash__(self):
        return hash((self.name, self.description))

    def __repr__(self):
        return (
            f"Activation(name={self.name!r}, expr={self.expr!r}, description={self.description!r})"
        )

    def __reduce__(self):
        return (Activation, (self.name, self.expr, self.description))

    def derivative(self, order: int = 1):
        import sympy as sp

        return sp.diff(self.expr, _x(), order)

    @property
    def differentiable(self) -> bool:
        """Whether ``g'`` is a function (ReLU's step is; sign's Dirac delta is not)."""
        if self._differentiable is not None:
            return self._differentiable
        import sympy as sp

        from hildlimits._engine.gaussian import canonical

        return not canonical(self.derivative(1), _x()).has(sp.DiracDelta)

    def jax_function(self, order: int = 0):
        """Elementwise JAX function of the activation (``order``: derivative order)."""
        return _lambdify(self.expr, order)


def _x():
    """The symbol :data:`X` (imports SymPy)."""
    return globals()["X"] if "X" in globals() else __getattr__("X")


@functools.lru_cache(maxsize=128)
def _lambdify(expr, order: int):
    import jax.numpy as jnp
    import jax.scipy.special as jss
    import sympy as sp

    X = _x()
    d = sp.diff(expr, X, order)
    if not d.has(X):  # constant (e.g. derivative of linear)
        const = float(d)
        return lambda x: jnp.full_like(x, const)
    return sp.lambdify(X, d, modules=[{"erf": jss.erf}, "jax"])
