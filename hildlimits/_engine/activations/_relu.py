from hildlimits._engine.activations._base import Activation


def _expr():
    import sympy as sp

    from hildlimits._engine.activations._base import X

    return sp.Max(0, X)


RELU = Activation(name="relu", build=_expr, differentiable=True, description="g(x) = max(0, x)")
