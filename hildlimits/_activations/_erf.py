import sympy as sp

from ._base import Activation, X

ERF = Activation(
    name="erf",
    expr=sp.erf(X / sp.sqrt(2)),
    description="g(x) = erf(x/sqrt(2)), the soft committee machine of Saad & Solla",
)
