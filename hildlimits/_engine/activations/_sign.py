from hildlimits._engine.activations._base import Activation


def _expr():
    import sympy as sp

    from hildlimits._engine.activations._base import X

    return sp.sign(X)


SIGN = Activation(
    name="sign",
    build=_expr,
    differentiable=False,
    description="g(x) = sign(x) (teacher only: no derivative)",
)
