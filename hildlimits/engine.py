"""The Gaussian-expectation engine, public: what worked derivations and checks use.

``X`` is the SymPy symbol activations are written in; :func:`gaussian_expectation` derives
``E[f_1(z_1) ... f_r(z_r)]`` for ``z ~ N(0, C)`` (closed form or a numerical rule, with the path
it took); :func:`expectation_function` turns one into a JAX function of ``C``;
:func:`load_module` compiles a derived system's generated source into a new module object (e.g.
to instrument it without touching ``system.module``). Importing this module imports SymPy.
"""

from ._engine.activations import X as X
from ._engine.activations import available_activations as available_activations
from ._engine.activations import get_activation as get_activation
from ._engine.codegen import expectation_function as expectation_function
from ._engine.codegen import load_module as load_module
from ._engine.gaussian import Expectation as Expectation
from ._engine.gaussian import NoClosedForm as NoClosedForm
from ._engine.gaussian import covariance_symbols as covariance_symbols
from ._engine.gaussian import gaussian_expectation as gaussian_expectation
