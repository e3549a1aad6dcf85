from hildlimits._engine.activations._base import Activation


def _expr():
    from hildlimits._engine.activations._base import X

    return X


LINEAR = Activation(name="linear", build=_expr, differentiable=True, description="g(x) = x")
