import sympy as sp

from ._base import Activation, X

HERMITE = tuple(
    Activation(
        name=f"he{k}",
        expr=sp.expand(sp.hermite_prob(k, X)),
        description=f"g(x) = He_{k}(x), the probabilists' Hermite polynomial of degree {k}",
    )
    for k in range(1, 7)
)
