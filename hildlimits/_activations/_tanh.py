import sympy as sp

from ._base import Activation, X

TANH = Activation(name="tanh", expr=sp.tanh(X), description="g(x) = tanh(x)")
