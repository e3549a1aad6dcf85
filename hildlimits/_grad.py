r"""Gradients of observables of the ODE solution with respect to parameters and initial
conditions, by reverse-mode differentiation through diffrax's solve (discretise-then-optimise,
``RecursiveCheckpointAdjoint``).

Differentiable names: ``training.lr``, ``training.lr_second_layer``, ``model.noise``,
``model.weight_decay`` (scalars) and ``init.Q``, ``init.R``, ``init.T``, ``init.v``,
``init.v_teacher`` (arrays; the gradient treats every entry as independent, so for a symmetric
perturbation ``dQ`` the change of the observable is ``sum_ik G_ik dQ_ik``).
"""

from __future__ import annotations

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from ._errors import ConfigError, SolveError
from ._model import Hyperparams, Overlaps
from ._solve import _SOLVERS, Controller, check_solve_options, problem, scheduled_vector_field

SCALARS = {
    "training.lr": "eta",
    "training.lr_second_layer": "eta_v",
    "model.noise": "sigma",
    "model.weight_decay": "kappa",
}
ARRAYS = {
    "init.Q": ("y", "Q"),
    "init.R": ("y", "R"),
    "init.T": ("args", "T"),
    "init.v": (None, "v"),
    "init.v_teacher": ("args", "v_teacher"),
}
DIFFERENTIABLE = tuple(SCALARS) + tuple(ARRAYS)
OBSERVABLES = ("final", "mean")


def _observable_fn(
    system,
    base_y,
    base_args,
    *,
    t1,
    observable,
    solver,
    rtol,
    atol,
    max_steps,
    lr_tied,
    schedule=None,
):
    module = system.module
    trained = system.structure["train_second_layer"]
    if schedule is not None:
        edges = jnp.asarray(schedule[0])
        base_args = {**base_args, "_sched_edges": edges}
    vf = scheduled_vector_field(module) if schedule is not None else module.vector_field

    def f(theta):
        y0 = dict(base_y)
        args = dict(base_args)
        for name, val in theta.items():
            if name in SCALARS:
                args[SCALARS[name]] = val
                if name == "training.lr" and lr_tied:
                    args["eta_v"] = val
            elif name == "init.v":
                (y0 if trained else args)["v"] = val
            elif name == "schedule":
                args["_sched_values"] = val
            else:
                where, key = ARRAYS[name]
                (y0 if where == "y" else args)[key] = val
        ts = jnp.linspace(0.0, t1, 401) if observable == "mean" else None
        saveat = diffrax.SaveAt(ts=ts) if ts is not None else diffrax.SaveAt(t1=True)
        controller = Controller(rtol=rtol, atol=atol)
        if schedule is not None and edges.shape[0] > 0:
            controller = diffrax.ClipStepSizeController(controller, jump_ts=edges)
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(vf),
            _SOLVERS[solver](),
            t0=0.0,
            t1=t1,
            dt0=None,
            y0=y0,
            args=args,
            saveat=saveat,
            stepsize_controller=controller,
            max_steps=max_steps,
        )
        risks = jax.vmap(lambda y: module.risk(y, args))(sol.ys)
        if observable == "mean":  # time average by the trapezoidal rule on 401 points
            return jnp.trapezoid(risks, ts) / t1
        return risks[-1]

    return f


def gradient(
    system,
    *,
    init: Overlaps,
    hyper: Hyperparams,
    wrt,
    t1: float,
    observable: str = "final",
    lr_tied: bool = False,
    rtol: float = 1e-10,
    atol: float = 1e-12,
    solver: str = "tsit5",
    max_steps: int = 100_000,
) -> tuple[float, dict]:
    r"""Value of an observable and its gradient with respect to the names in ``wrt``.

    Args:
        wrt: names from :data:`DIFFERENTIABLE`.
        observable: ``"final"`` (risk at ``t1``) or ``"mean"`` (time-averaged risk on ``[0, t1]``,
            trapezoidal rule on 401 points).
        lr_tied: the second-layer rate equals the first-layer rate (config did not set it).
        max_steps: step budget of the differentiated solve (memory of the checkpoints grows with it).

    Returns:
        ``(value, {name: gradient})`` with floats for scalars and NumPy arrays for arrays.

    Example:
        >>> import hildlimits as hl
        >>> m = hl.Committee(K=1, M=1, activation="linear")
        >>> init = hl.Overlaps.for_model(m, Q=[[0.3]], R=[[0.05]], T=[[1.0]])
        >>> val, g = gradient(hl.derive(m), init=init, hyper=hl.Hyperparams(lr=0.4), wrt=["training.lr"], t1=5.0)
    """
    wrt = list(wrt)
    if not wrt:
        raise ConfigError("--wrt needs at least one name")
    for name in wrt:
        if name not in DIFFERENTIABLE:
            raise ConfigError(
                f"--wrt name must be one of {', '.join(DIFFERENTIABLE)}; got {name!r}"
            )
    if len(set(wrt)) != len(wrt):
        raise ConfigError(f"--wrt lists a name twice: {wrt}")
    if observable not in OBSERVABLES:
        raise ConfigError(f"observable must be one of {OBSERVABLES}, got {observable!r}")
    check_solve_options(
        t1=t1,
        n_save=2,
        spacing="linear",
        t_first=None,
        rtol=rtol,
        atol=atol,
        solver=solver,
        max_steps=max_steps,
        divergence_bound=1e8,
        steady_state=None,
    )
    y0, args = problem(system, init, hyper)
    theta = {}
    for name in wrt:
        if name in SCALARS:
            theta[name] = np.float64(args[SCALARS[name]])
        elif name == "init.v":
            theta[name] = np.asarray(init.v, np.float64)
        else:
            where, key = ARRAYS[name]
            theta[name] = np.asarray((y0 if where == "y" else args)[key], np.float64)
    key = (
        "grad",
        init.K,
        init.M,
        tuple(wrt),
        float(t1),
        observable,
        solver,
        max_steps,
        lr_tied,
        rtol,
        atol,
    )
    with jax.enable_x64(True):
        if key not in system._jax:

            def fg(theta, y0, args):
                g = _observable_fn(
                    system,
                    y0,
                    args,
                    t1=float(t1),
                    observable=observable,
                    solver=solver,
                    rtol=rtol,
                    atol=atol,
                    max_steps=max_steps,
                    lr_tied=lr_tied,
                )
                return jax.value_and_grad(g)(theta)

            system._jax[key] = jax.jit(fg)
        value, grads = system._jax[key](theta, y0, args)
        value = float(value)
        grads = {
            k: (float(v) if np.ndim(v) == 0 else np.asarray(v))
            for k, v in jax.device_get(grads).items()
        }
    if not np.isfinite(value) or not all(np.all(np.isfinite(g)) for g in grads.values()):
        raise SolveError(
            "the differentiated solve produced non-finite values (diverging dynamics, or max_steps too small)"
        )
    return value, grads
