import functools

from hildlimits._engine.activations._base import Activation


def _expr(k: int):
    import sympy as sp

    from hildlimits._engine.activations._base import X

    return sp.expand(sp.hermite_prob(k, X))


HERMITE = tuple(
    Activation(
        name=f"he{k}",
        build=functools.partial(_expr, k),
        differentiable=True,
        description=f"g(x) = He_{k}(x), the probabilists' Hermite polynomial of degree {k}",
    )
    for k in range(1, 7)
)
