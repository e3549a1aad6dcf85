from hildlimits._engine.activations._base import Activation


def _expr():
    import sympy as sp

    from hildlimits._engine.activations._base import X

    return 1 / (1 + sp.exp(-X))


SIGMOID = Activation(
    name="sigmoid",
    build=_expr,
    differentiable=True,
    description="g(x) = 1/(1 + exp(-x)) (logistic)",
)
