from hildlimits._engine.activations._base import Activation


def _expr():
    from hildlimits._engine.activations._base import X

    return X**2


QUADRATIC = Activation(name="quadratic", build=_expr, differentiable=True, description="g(x) = x^2")
