"""TOML configuration: strict schema, resolved into validated objects.

Schema (every key below is a public contract; unknown keys are errors)::

    [model]     K, M, activation, teacher_activation, train_second_layer, noise, weight_decay,
                quadrature_nodes, line_nodes, mixture_nodes
                (kind = "committee" is the default; kind = "meanfield" has its own schema,
                see hildlimits/_meanfield_config.py)
    [training]  lr, lr_second_layer
    [init]      Q, R, T, v, v_teacher            -- explicit initial order parameters, or
    [init.random] N, seed, student_std, teacher_std
                -- overlaps of i.i.d. Gaussian weights drawn at finite N (v, v_teacher from [init])
    [solve]     t1, n_save, spacing, t_first, rtol, atol, solver, max_steps,
                divergence_bound, steady_state
"""

from __future__ import annotations

import difflib
import math
import numbers
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ._errors import ConfigError
from ._model import Committee, Hyperparams, Overlaps

SCHEMA = {
    "model": {
        "kind",
        "K",
        "M",
        "activation",
        "teacher_activation",
        "train_second_layer",
        "noise",
        "weight_decay",
        "quadrature_nodes",
        "line_nodes",
        "mixture_nodes",
    },
    "training": {"lr", "lr_second_layer"},
    "init": {"Q", "R", "T", "v", "v_teacher", "random"},
    "init.random": {"N", "seed", "student_std", "teacher_std"},
    "solve": {
        "t1",
        "n_save",
        "spacing",
        "t_first",
        "rtol",
        "atol",
        "solver",
        "max_steps",
        "divergence_bound",
        "steady_state",
    },
}
REQUIRED = {"model": {"K", "M"}, "training": {"lr"}, "solve": {"t1"}}


@dataclass(frozen=True)
class SolveOptions:
    """Options of :func:`hildlimits.solve` from the ``[solve]`` table."""

    t1: float
    n_save: int = 200
    spacing: str = "log"
    t_first: float | None = None
    rtol: float = 1e-10
    atol: float = 1e-12
    solver: str = "tsit5"
    max_steps: int = 1_000_000
    divergence_bound: float = 1e8
    steady_state: float | None = None

    def __post_init__(self) -> None:
        from ._solve import check_solve_options

        check_solve_options(**asdict(self))

    def as_kwargs(self) -> dict:
        return asdict(self)


@dataclass(frozen=True, eq=False)
class Config:
    """A resolved configuration file."""

    model: Committee
    hyper: Hyperparams
    init: Overlaps
    solve: SolveOptions
    source: str = "<dict>"
    # RandomInit when [init.random] is given (the simulator redraws at its N)
    random_init: object = None
    # training.lr_second_layer not given: it follows training.lr in sweeps and gradients
    lr_tied: bool = False

    def resolved(self) -> dict:
        """The configuration with every default filled in (for ``meta`` in outputs)."""
        return {
            "model": {
                "kind": "committee",
                "K": self.model.K,
                "M": self.model.M,
                "activation": self.model.activation,
                "teacher_activation": self.model.teacher_activation,
                "train_second_layer": self.model.train_second_layer,
                "noise": self.hyper.noise,
                "weight_decay": self.hyper.weight_decay,
            },
            "training": {"lr": self.hyper.lr, "lr_second_layer": self.hyper.lr_second_layer},
            "init": {
                "Q": self.init.Q.tolist(),
                "R": self.init.R.tolist(),
                "T": self.init.T.tolist(),
                "v": self.init.v.tolist(),
                "v_teacher": self.init.v_teacher.tolist(),
            },
            "solve": {k: v for k, v in self.solve.as_kwargs().items() if v is not None},
            **(
                {
                    "init_random": {
                        "student_std": self.random_init.student_std,
                        "teacher_std": self.random_init.teacher_std,
                    }
                }
                if self.random_init is not None
                else {}
            ),
        }


def _meanfield_loader():
    from ._meanfield_config import meanfield_config

    return meanfield_config


# model.kind -> (lazy) loader of a family with its own schema; "committee" is handled here
_OTHER_KINDS = {"meanfield": _meanfield_loader}


def _check_keys(table: dict, section: str) -> None:
    if not isinstance(table, dict):
        raise ConfigError(f"[{section}] must be a table, got {table!r}")
    allowed = SCHEMA[section]
    for key in table:
        if key not in allowed:
            close = difflib.get_close_matches(key, sorted(allowed), n=1)
            hint = (
                f" (did you mean '{close[0]}'?)"
                if close
                else f"; allowed: {', '.join(sorted(allowed))}"
            )
            raise ConfigError(f"unknown key '{section}.{key}'{hint}")
    for key in REQUIRED.get(section, ()):
        if key not in table:
            raise ConfigError(f"missing required key '{section}.{key}'")


def _finite_tree(name: str, value) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{name} must be finite, got {value!r}")
    if isinstance(value, list):
        for x in value:
            _finite_tree(name, x)


def load_config(path: str | Path) -> Config:
    """Read and validate a TOML configuration file (see the module docstring for the schema)."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {str(path)!r}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {str(path)!r}: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    return config_from_dict(data, source=str(path))


def _random_overlaps(model: Committee, spec: dict, v, v_teacher) -> Overlaps:
    _check_keys(spec, "init.random")
    N = spec.get("N")
    if isinstance(N, bool) or not isinstance(N, numbers.Integral) or N < 1:
        raise ConfigError(f"init.random.N must be a positive integer, got {N!r}")
    seed = spec.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ConfigError(f"init.random.seed must be a non-negative integer, got {seed!r}")
    stds = {}
    for key in ("student_std", "teacher_std"):
        val = spec.get(key, 1.0)
        if (
            isinstance(val, bool)
            or not isinstance(val, numbers.Real)
            or not math.isfinite(val)
            or val <= 0
        ):
            raise ConfigError(f"init.random.{key} must be a positive number, got {val!r}")
        stds[key] = float(val)
    rng = np.random.default_rng(int(seed))
    W = rng.standard_normal((model.K, N)) * stds["student_std"]
    Ws = rng.standard_normal((model.M, N)) * stds["teacher_std"]
    Q, R, T = W @ W.T / N, W @ Ws.T / N, Ws @ Ws.T / N
    return Overlaps.for_model(
        model, Q=(Q + Q.T) / 2, R=R, T=(T + T.T) / 2, v=v, v_teacher=v_teacher
    )


def config_from_dict(data: dict, *, source: str = "<dict>") -> Config:
    """Validate a parsed configuration (same schema as :func:`load_config`)."""
    if not isinstance(data, dict):
        raise ConfigError(f"configuration must be a table, got {data!r}")
    for section in data:
        if section not in ("model", "training", "init", "solve"):
            close = difflib.get_close_matches(section, ["model", "training", "init", "solve"], n=1)
            hint = f" (did you mean '[{close[0]}]'?)" if close else ""
            raise ConfigError(f"unknown section '[{section}]'{hint}")
    kind = (
        data.get("model", {}).get("kind", "committee")
        if isinstance(data.get("model"), dict)
        else None
    )
    if kind in _OTHER_KINDS:  # registry of model families with their own schema
        return _OTHER_KINDS[kind]()(data, source=source)
    if kind not in (None, "committee"):
        kinds = ", ".join(repr(k) for k in ["committee", *_OTHER_KINDS])
        raise ConfigError(f"model.kind must be one of {kinds}, got {kind!r}")
    for section in ("model", "training", "init", "solve"):
        if section not in data:
            raise ConfigError(f"missing section '[{section}]'")
        _check_keys(data[section], section)
        for key, value in data[section].items():
            _finite_tree(f"{section}.{key}", value)
    m, tr, ini, so = data["model"], data["training"], data["init"], data["solve"]
    kind = m.get("kind", "committee")
    if kind != "committee":
        kinds = ", ".join(repr(k) for k in ["committee", *_OTHER_KINDS])
        raise ConfigError(f"model.kind must be one of {kinds}, got {kind!r}")
    model = Committee(
        K=m["K"],
        M=m["M"],
        activation=m.get("activation", "erf"),
        teacher_activation=m.get("teacher_activation"),
        train_second_layer=m.get("train_second_layer", False),
        quadrature_nodes=m.get("quadrature_nodes"),
        line_nodes=m.get("line_nodes"),
        mixture_nodes=m.get("mixture_nodes"),
    )
    hyper = Hyperparams(
        lr=tr["lr"],
        lr_second_layer=tr.get("lr_second_layer"),
        noise=m.get("noise", 0.0),
        weight_decay=m.get("weight_decay", 0.0),
    )
    if "random" in ini:
        clash = sorted({"Q", "R", "T"} & set(ini))
        if clash:
            raise ConfigError(f"init.{clash[0]} cannot be given together with [init.random]")
        init = _random_overlaps(model, ini["random"], ini.get("v"), ini.get("v_teacher"))
    else:
        for key in ("Q", "R", "T"):
            if key not in ini:
                raise ConfigError(f"missing required key 'init.{key}' (or give [init.random])")
        init = Overlaps.for_model(
            model,
            Q=ini["Q"],
            R=ini["R"],
            T=ini["T"],
            v=ini.get("v"),
            v_teacher=ini.get("v_teacher"),
        )
    solve = _solve_options(so)
    random_init = None
    if "random" in ini:
        from ._simulate import RandomInit

        spec = ini["random"]
        random_init = RandomInit(
            student_std=spec.get("student_std", 1.0), teacher_std=spec.get("teacher_std", 1.0)
        )
    return Config(
        model=model,
        hyper=hyper,
        init=init,
        solve=solve,
        source=source,
        random_init=random_init,
        lr_tied="lr_second_layer" not in tr,
    )


def _solve_options(so: dict) -> SolveOptions:
    opts = dict(so)
    ints = ("n_save", "max_steps")
    for key in ints:
        if key in opts and (
            isinstance(opts[key], bool) or not isinstance(opts[key], numbers.Integral)
        ):
            raise ConfigError(f"solve.{key} must be a positive integer, got {opts[key]!r}")
    for key, val in opts.items():
        if key in ("spacing", "solver"):
            if not isinstance(val, str):
                raise ConfigError(f"solve.{key} must be a string, got {val!r}")
        elif key not in ints and (isinstance(val, bool) or not isinstance(val, numbers.Real)):
            raise ConfigError(f"solve.{key} must be a number, got {val!r}")
    return SolveOptions(**opts)
