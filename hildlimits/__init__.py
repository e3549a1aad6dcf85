"""hildlimits: exact high-dimensional ODEs of online SGD, derived, generated, solved and validated."""

from ._activations import available_activations as available_activations
from ._cache import cache_dir as cache_dir
from ._derive import Equation as Equation
from ._derive import ExpectationEntry as ExpectationEntry
from ._derive import ODESystem as ODESystem
from ._derive import Term as Term
from ._derive import derive as derive
from ._errors import ConfigError as ConfigError
from ._errors import SolveError as SolveError
from ._gaussian import NoClosedForm as NoClosedForm
from ._gaussian import gaussian_expectation as gaussian_expectation
from ._model import Committee as Committee
from ._model import Hyperparams as Hyperparams
from ._model import Overlaps as Overlaps
from ._simulate import RandomInit as RandomInit
from ._simulate import Simulation as Simulation
from ._simulate import simulate as simulate
from ._solve import Trajectory as Trajectory
from ._solve import save_times as save_times
from ._solve import solve as solve
from ._validate import Tolerance as Tolerance
from ._validate import validate as validate
from ._version import __version__ as __version__
