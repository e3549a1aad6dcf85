"""TOML configuration of ``[model] kind = "meanfield"`` (strict schema, unknown keys are errors)::

[model]     kind, M, activation, teacher_activation, train_second_layer, noise, finite_width
[training]  lr, lr_second_layer
[init]      T, v_teacher, q, a_mean, a_std, particles, sampling, seed
[solve]     t1, n_save, spacing, t_first, rtol, atol, solver, max_steps, divergence_bound,
            method ("quadrature" | "pairwise"), nodes
"""

from __future__ import annotations

import difflib
import numbers
from dataclasses import dataclass

from ._config import _finite_tree
from ._errors import ConfigError
from ._meanfield import MeanField, MeanFieldInit, default_nodes
from ._model import _real
from ._solve import check_solve_options

SCHEMA = {
    "model": {
        "kind",
        "M",
        "activation",
        "teacher_activation",
        "train_second_layer",
        "noise",
        "finite_width",
    },
    "training": {"lr", "lr_second_layer"},
    "init": {"T", "v_teacher", "q", "a_mean", "a_std", "particles", "sampling", "seed"},
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
        "method",
        "nodes",
    },
}
REQUIRED = {"model": {"M"}, "training": {"lr"}, "init": {"T"}, "solve": {"t1"}}
SOLVE_DEFAULTS = {
    "n_save": 200,
    "spacing": "log",
    "t_first": None,
    "rtol": 1e-8,
    "atol": 1e-10,
    "solver": "tsit5",
    "max_steps": 100_000,
    "divergence_bound": 1e8,
    "method": "quadrature",
    "nodes": None,
}


@dataclass(frozen=True, eq=False)
class MeanFieldConfig:
    """A resolved ``kind = "meanfield"`` configuration."""

    model: MeanField
    init: MeanFieldInit
    lr: float
    lr_second_layer: float
    noise: float
    solve: dict
    source: str = "<dict>"
    kind: str = "meanfield"

    def solve_kwargs(self) -> dict:
        return dict(self.solve)

    def resolved(self) -> dict:
        ini = self.init
        return {
            "model": {
                "kind": "meanfield",
                "M": self.model.M,
                "activation": self.model.activation,
                "teacher_activation": self.model.teacher_activation,
                "train_second_layer": self.model.train_second_layer,
                "finite_width": self.model.finite_width,
                "noise": self.noise,
            },
            "training": {"lr": self.lr, "lr_second_layer": self.lr_second_layer},
            "init": {
                "T": ini.T.tolist(),
                "v_teacher": ini.v_teacher.tolist(),
                "q": ini.q,
                "a_mean": ini.a_mean,
                "a_std": ini.a_std,
                "particles": ini.particles,
                "sampling": ini.sampling,
                "seed": ini.seed,
            },
            "solve": {k: v for k, v in self.solve.items() if v is not None},
        }


def _check(table: dict, section: str) -> None:
    if not isinstance(table, dict):
        raise ConfigError(f"[{section}] must be a table, got {table!r}")
    allowed = SCHEMA[section]
    for key in table:
        if key not in allowed:
            close = difflib.get_close_matches(key, sorted(allowed), n=1)
            hint = (
                f" (did you mean '{close[0]}'?)"
                if close
                else f"; allowed with kind = 'meanfield': {', '.join(sorted(allowed))}"
            )
            raise ConfigError(f"unknown key '{section}.{key}'{hint}")
    for key in sorted(REQUIRED.get(section, ())):
        if key not in table:
            raise ConfigError(f"missing required key '{section}.{key}'")


def meanfield_config(data: dict, *, source: str = "<dict>") -> MeanFieldConfig:
    """Validate a parsed ``kind = "meanfield"`` configuration (see the module docstring)."""
    for section in ("model", "training", "init", "solve"):
        if section not in data:
            raise ConfigError(f"missing section '[{section}]'")
        _check(data[section], section)
        for key, value in data[section].items():
            _finite_tree(f"{section}.{key}", value)
    m, tr, ini, so = data["model"], data["training"], data["init"], data["solve"]
    model = MeanField(
        M=m["M"],
        activation=m.get("activation", "erf"),
        teacher_activation=m.get("teacher_activation"),
        train_second_layer=m.get("train_second_layer", True),
        finite_width=m.get("finite_width", False),
    )
    M = model.M
    init = MeanFieldInit(
        T=ini["T"],
        v_teacher=ini.get("v_teacher", [1.0] * M),
        q=ini.get("q", 1.0),
        a_mean=ini.get("a_mean", 0.0),
        a_std=ini.get("a_std", 1.0),
        particles=ini.get("particles", 2048),
        sampling=ini.get("sampling", "quantile"),
        seed=ini.get("seed", 0),
    )
    if init.M != M:
        raise ConfigError(f"init.T must be {M}x{M} (model.M = {M}), got {init.T.tolist()!r}")
    lr = _real("training.lr", tr["lr"])
    if lr <= 0:
        raise ConfigError(f"training.lr must be positive (tau = lr * steps / d), got {lr!r}")
    lr2 = _real("training.lr_second_layer", tr.get("lr_second_layer", lr), nonnegative=True)
    noise = _real("model.noise", m.get("noise", 0.0), nonnegative=True)
    opts = dict(SOLVE_DEFAULTS)
    opts.update(so)
    for key in ("n_save", "max_steps"):
        v = opts[key]
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise ConfigError(f"solve.{key} must be a positive integer, got {v!r}")
    if opts["method"] not in ("quadrature", "pairwise"):
        raise ConfigError(
            f"solve.method must be 'quadrature' or 'pairwise', got {opts['method']!r}"
        )
    if opts["nodes"] is None:
        opts["nodes"] = default_nodes(M)
    n = opts["nodes"]
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 2:
        raise ConfigError(f"solve.nodes must be an integer >= 2, got {n!r}")
    check_solve_options(
        **{k: opts[k] for k in opts if k not in ("method", "nodes")}, steady_state=None
    )
    return MeanFieldConfig(
        model=model,
        init=init,
        lr=lr,
        lr_second_layer=lr2,
        noise=noise,
        solve=opts,
        source=source,
    )
