import sympy as sp

from ._base import Activation, X

SIGMOID = Activation(
    name="sigmoid", expr=1 / (1 + sp.exp(-X)), description="g(x) = 1/(1 + exp(-x)) (logistic)"
)
