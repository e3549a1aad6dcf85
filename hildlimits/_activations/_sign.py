import sympy as sp

from ._base import Activation, X

SIGN = Activation(
    name="sign", expr=sp.sign(X), description="g(x) = sign(x) (teacher only: no derivative)"
)
