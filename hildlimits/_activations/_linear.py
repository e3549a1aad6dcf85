from ._base import Activation, X

LINEAR = Activation(name="linear", expr=X, description="g(x) = x")
