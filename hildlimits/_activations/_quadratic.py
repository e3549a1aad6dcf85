from ._base import Activation, X

QUADRATIC = Activation(name="quadratic", expr=X**2, description="g(x) = x^2")
