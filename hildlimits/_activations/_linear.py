from ._base import X, Activation

LINEAR = Activation(name="linear", expr=X, description="g(x) = x")
