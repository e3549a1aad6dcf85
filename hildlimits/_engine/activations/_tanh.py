from hildlimits._engine.activations._base import Activation


def _expr():
    import sympy as sp

    from hildlimits._engine.activations._base import X

    return sp.tanh(X)


TANH = Activation(name="tanh", build=_expr, differentiable=True, description="g(x) = tanh(x)")
