import sympy as sp

from ._base import Activation, X

RELU = Activation(name="relu", expr=sp.Max(0, X), description="g(x) = max(0, x)")
