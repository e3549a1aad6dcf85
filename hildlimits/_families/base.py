r"""The model-family interface: what a family provides so that every command works for it.

A family is one kind of model with its own state (``committee``: overlaps ``Q``, ``R``, ``v``;
``meanfield``: particles ``r_j``, ``q_j``, ``a_j``). The shared pipeline -- the CLI, the config
loader, :func:`hildlimits.solve` of a config, ``sweep``, ``grad``, ``optimize-schedule``,
``validate`` -- knows families only through this interface and the registry
(:mod:`hildlimits._families`), which maps ``[model] kind`` to a :class:`Family`.

See ``docs/adding-a-family.md`` for a walk-through.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hildlimits._errors import ConfigError

COMMANDS = ("derive", "solve", "simulate", "validate", "sweep", "grad", "optimize-schedule")


@dataclass(frozen=True)
class Flag:
    """A family-specific command-line flag: ``argparse`` ``add_argument(*names, **options)``.
    Flags of all families are registered on the parser; a flag given for a config of a family
    that does not declare it is refused (exit 2)."""

    names: tuple[str, ...]
    options: dict = field(default_factory=dict)

    @property
    def dest(self) -> str:
        return self.options.get("dest") or self.names[0].lstrip("-").replace("-", "_")


@dataclass(frozen=True, eq=False)
class Dynamics:
    """A family's ODE for one derived system and one set of static options.

    Attributes:
        vector_field: ``vf(t, y, args)`` over pytrees of arrays (traceable).
        risk: ``risk(y, args)`` (traceable), the generalisation error of the family.
        key: hashable static identity (shapes, options) for caching compiled runs.
        cache: the dict compiled runs are kept in (usually the system's ``_jax``).
        schedule: ``apply(args, value) -> args`` setting the family's scheduled parameter
            (:attr:`Family.schedule_param`), or ``None`` if it has none.
        risk_event: the divergence event also checks the risk.
        risk_map: evaluate the risk at save times one state at a time (large states).
    """

    vector_field: Any
    risk: Any
    key: tuple
    cache: dict
    schedule: Any = None
    risk_event: bool = True
    risk_map: bool = False


class Family:
    """Base class of a model family (see the module docstring). Subclasses set the class
    attributes and implement the methods; a method left to this base class refuses its command
    with a clear :class:`~hildlimits.ConfigError` (exit 2 on the command line)."""

    kind: str = ""
    """The ``[model] kind`` value (registry key)."""
    title: str = ""
    """One line for help texts and errors."""
    commands: tuple[str, ...] = COMMANDS
    """Commands this family supports (the others are refused with exit 2)."""
    sweepable: dict[str, str] = {}
    """``--param`` names of ``sweep`` -> what they mean."""
    differentiable: dict[str, str] = {}
    """``--wrt`` names of ``grad`` -> what they mean."""
    schedule_param: str | None = None
    """The parameter ``optimize-schedule`` makes piecewise constant in time."""
    batch_param: str | None = None
    """The mini-batch size ``optimize-schedule --batch`` schedules jointly with
    :attr:`schedule_param` under a sample budget (``None``: the family has none). Its dynamics
    then honour ``args["_sched_batch"]`` (the batch size on the schedule's pieces) and
    ``args["_per_sample"]`` (the time variable is samples / N)."""
    flags: dict[str, tuple[Flag, ...]] = {}
    """Command -> family-specific flags."""
    sections: tuple[str, ...] | None = None
    """Top-level config sections the family reads (``None``: it checks them itself); a
    section of the config file outside these is refused naming it."""

    # ------------------------------------------------------------------ config

    def config(self, data: dict, *, source: str):
        """Validate a parsed TOML table (``[model]``, ``[training]``, ``[init]``, ``[solve]``)
        into the family's immutable config object."""
        raise NotImplementedError

    def resolved(self, cfg) -> dict:
        """The configuration with every default filled in (``meta.config`` of outputs)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ derivation and ODE

    def derive(self, cfg):
        """The derived system (``str()``, ``latex()``, ``markdown()``, ``source``), disk- or
        memory-cached by the family."""
        raise NotImplementedError

    def solve(self, system, cfg, *, ts=None, schedule=None):
        """Integrate the family's ODE from the config's initial state; a result with
        ``to_dict()``, ``t``, ``risk``, ``status`` (:class:`~hildlimits._pipeline.runner.RunStatus`),
        ``num_steps``. ``schedule``: a :class:`~hildlimits.Schedule` of
        :attr:`schedule_param`."""
        raise NotImplementedError

    def dynamics(self, system, cfg, *, schedule: bool = False) -> Dynamics:
        """The vector field and risk of ``system`` with ``cfg``'s static options."""
        raise NotImplementedError

    def initial(self, system, cfg) -> tuple[dict, dict]:
        """``(y0, args)`` of the vector field (float64 NumPy pytrees, guards included)."""
        raise NotImplementedError

    def solve_options(self, cfg) -> dict:
        """``t1``, ``n_save``, ``spacing``, ``t_first``, ``rtol``, ``atol``, ``solver``,
        ``max_steps``, ``divergence_bound``, ``steady_state`` of ``cfg``."""
        raise NotImplementedError

    # ------------------------------------------------------------------ parameters

    def with_values(self, cfg, point: dict):
        """``cfg`` with the sweep values ``point`` (name in :attr:`sweepable` -> value); raises
        :class:`ConfigError` for a point that is not a valid configuration."""
        raise NotImplementedError

    def parameters(self, system, cfg, wrt: list[str]):
        """``(theta0, build)``: the values of the names ``wrt`` (in :attr:`differentiable`) and a
        traceable ``build(theta) -> (y0, args)``."""
        raise NotImplementedError

    def schedule_value(self, cfg) -> float:
        """The configured value of :attr:`schedule_param`."""
        raise NotImplementedError

    def batch_value(self, system, cfg) -> float:
        """The configured value of :attr:`batch_param` (refuses a config or system that cannot
        schedule it); families without :attr:`batch_param` refuse ``--batch``."""
        raise ConfigError(
            f"optimize-schedule --batch: the {self.kind!r} family has no mini-batch size to "
            "schedule"
        )

    def with_schedules(self, cfg, *, lr=None, batch=None):
        """``cfg`` with the schedules (:class:`~hildlimits.Schedule`, in time ``t``) of
        :attr:`schedule_param` and :attr:`batch_param` (``None``: unchanged)."""
        raise ConfigError(f"the {self.kind!r} family cannot take a batch-size schedule")

    # ------------------------------------------------------------------ simulation

    def simulate(self, cfg, *, options: dict, schedule=None, checkpoint=None):
        """Train finite networks (``options``: the command's flags, e.g. ``N``, ``seeds``,
        ``seed``, ``dtype`` and the family's own); a result with ``to_dict()``, ``t``,
        ``risk`` (seeds x times), ``risk_mean``, ``risk_std``, ``risk_sem``, ``status``."""
        raise NotImplementedError

    def check_simulation(self, cfg, options: dict) -> None:
        """Refuse simulation ``options`` that :meth:`simulate` would refuse, before other work."""

    def validate(self, cfg, *, options: dict, tolerance, outdir=None):
        """ODE against simulations; returns ``(report, artefacts)`` where ``report`` is the
        JSON-ready report (``passed``, ``reason``, ...) and ``artefacts`` what
        :meth:`plot_validation` draws."""
        raise NotImplementedError

    # ------------------------------------------------------------------ output

    def summary(self, traj) -> str:
        """One line after ``solve``."""
        return f"{traj.status}: risk(t={traj.t[-1]:.6g}) = {traj.risk[-1]:.6e}"

    def plot_solve(self, traj, path, *, cfg) -> None:
        raise NotImplementedError

    def plot_validation(self, artefacts, outdir, *, cfg) -> list:
        """Write the validation figures into ``outdir``; return their paths."""
        raise NotImplementedError

    # ------------------------------------------------------------------ helpers

    def refuse(self, command: str):
        raise ConfigError(
            f"'{command}' is not available for model.kind = {self.kind!r}"
            + (f" ({self.title})" if self.title else "")
        )

    def check_command(self, command: str) -> None:
        if command not in self.commands:
            self.refuse(command)
