r"""Gradients of observables of the ODE solution with respect to parameters and initial
conditions, by reverse-mode differentiation through diffrax's solve (discretise-then-optimise,
``RecursiveCheckpointAdjoint``), for every family.

Each family declares its differentiable names (``Family.differentiable``); the committee's are
``training.lr``, ``training.lr_second_layer``, ``model.noise``, ``model.weight_decay`` (scalars)
and ``init.Q``, ``init.R``, ``init.T``, ``init.v``, ``init.v_teacher`` (arrays; the gradient treats
every entry as independent, so for a symmetric perturbation ``dQ`` the change of the observable is
``sum_ik G_ik dQ_ik``). The solve has the guards of every solve (:mod:`hildlimits._pipeline.runner`):
divergence, a non-finite right-hand side or a blow-up stop it with an error naming the time.
"""

from __future__ import annotations

import jax
import numpy as np

from hildlimits._errors import ConfigError
from hildlimits._families import DEFAULT_KIND, config_for, get_family
from hildlimits._pipeline import runner as _runner
from hildlimits._pipeline.runner import OBSERVABLES as OBSERVABLES

DIFFERENTIABLE = tuple(get_family(DEFAULT_KIND).differentiable)
"""The committee's differentiable names (each family declares its own)."""


def gradient(
    system,
    *,
    init=None,
    hyper=None,
    config=None,
    wrt,
    t1: float | None = None,
    observable: str = "final",
    lr_tied: bool = False,
    rtol: float | None = None,
    atol: float | None = None,
    solver: str | None = None,
    max_steps: int = 100_000,
) -> tuple[float, dict]:
    r"""Value of an observable and its gradient with respect to the names in ``wrt``.

    Args:
        system: a derived system of any family.
        config: the family's config; or, for the committee, ``init`` and ``hyper``.
        wrt: names from the family's ``differentiable`` (committee: :data:`DIFFERENTIABLE`).
        t1: final time (default: the config's ``solve.t1``).
        observable: ``"final"`` (risk at ``t1``) or ``"mean"`` (time-averaged risk on ``[0, t1]``,
            trapezoidal rule on 401 points).
        lr_tied: (with ``init``/``hyper``) the second-layer rate equals the first-layer rate.
        rtol, atol, solver: default: the config's (``1e-10``, ``1e-12``, ``tsit5`` for objects).
        max_steps: step budget of the differentiated solve (memory of the checkpoints grows with it).

    Returns:
        ``(value, {name: gradient})`` with floats for scalars and NumPy arrays for arrays.

    Raises:
        ConfigError: bad names or options. SolveError: the dynamics diverged, blew up or ran out of
        steps before ``t1`` (the message names the time).

    Example:
        >>> import hildlimits as hl
        >>> m = hl.Committee(K=1, M=1, activation="linear")
        >>> init = hl.Overlaps.for_model(m, Q=[[0.3]], R=[[0.05]], T=[[1.0]])
        >>> val, g = gradient(hl.derive(m), init=init, hyper=hl.Hyperparams(lr=0.4), wrt=["training.lr"], t1=5.0)
    """
    family, config = config_for(
        system, config, who="gradient", init=init, hyper=hyper, lr_tied=lr_tied
    )
    so = family.solve_options(config)
    t1 = so["t1"] if t1 is None else t1
    rtol = so["rtol"] if rtol is None else rtol
    atol = so["atol"] if atol is None else atol
    solver = so["solver"] if solver is None else solver
    wrt = list(wrt)
    names = tuple(family.differentiable)
    if not wrt:
        raise ConfigError("--wrt needs at least one name")
    for name in wrt:
        if name not in names:
            raise ConfigError(
                f"--wrt name must be one of {', '.join(names)} for model.kind = "
                f"{family.kind!r}; got {name!r}"
            )
    if len(set(wrt)) != len(wrt):
        raise ConfigError(f"--wrt lists a name twice: {wrt}")
    if observable not in OBSERVABLES:
        raise ConfigError(f"observable must be one of {OBSERVABLES}, got {observable!r}")
    _runner.check_solve_options(
        t1=t1,
        n_save=2,
        spacing="linear",
        t_first=None,
        rtol=rtol,
        atol=atol,
        solver=solver,
        max_steps=max_steps,
        divergence_bound=so["divergence_bound"],
        steady_state=None,
    )
    with jax.enable_x64(True):
        theta, base, build, static = family.parameters(system, config, wrt)
        dyn = family.dynamics(system, config)
        key = ("grad", *dyn.key, *static, tuple(wrt), float(t1), observable, solver)
        key += (max_steps, float(rtol), float(atol))
        if key not in dyn.cache:

            def fg(theta, base):
                def f(theta):
                    y0, args = build(theta, base)
                    return _runner.final_value(
                        dyn.vector_field,
                        dyn.risk,
                        y0,
                        args,
                        t1=float(t1),
                        observable=observable,
                        solver=solver,
                        rtol=rtol,
                        atol=atol,
                        max_steps=max_steps,
                    )

                return jax.value_and_grad(f, has_aux=True)(theta)

            dyn.cache[key] = jax.jit(fg)
        (value, info), grads = dyn.cache[key](theta, base)
        value = float(value)
        grads = {
            k: (float(v) if np.ndim(v) == 0 else np.asarray(v))
            for k, v in jax.device_get(grads).items()
        }
    _runner.check_differentiated(value, grads, info, t1=float(t1), max_steps=max_steps)
    return value, grads
