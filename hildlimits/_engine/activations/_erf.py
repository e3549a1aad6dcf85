from hildlimits._engine.activations._base import Activation


def _expr():
    import sympy as sp

    from hildlimits._engine.activations._base import X

    return sp.erf(X / sp.sqrt(2))


ERF = Activation(
    name="erf",
    build=_expr,
    differentiable=True,
    description="g(x) = erf(x/sqrt(2)), the soft committee machine of Saad & Solla",
)
