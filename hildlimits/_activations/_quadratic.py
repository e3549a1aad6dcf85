from ._base import Activation


def _expr():
    from ._base import X

    return X**2


QUADRATIC = Activation(name="quadratic", build=_expr, differentiable=True, description="g(x) = x^2")
