r"""Optimisers of the committee family on top of the derived vector field (docs/optimisers.md).

The derivation (:mod:`.derive`) gives the drift of one SGD step with learning rates ``eta``,
``eta_v`` and mini-batch size ``B`` (its ``eta^2`` terms carry ``1/B`` when derived with
``minibatch=True``). The optimisers below change only *which* step size enters that drift, so
they wrap the generated vector field instead of re-deriving it:

* heavy-ball momentum with constant ``beta`` (``u <- beta u - step``, ``w <- w + u``): the
  velocity relaxes within ``O(1/(1 - beta))`` steps, ``O(1/N)`` in ``t = steps/N``, so in the
  ``N -> infinity`` limit it is slaved to the current gradient and the step is
  ``sum_k beta^k step = step / (1 - beta)``; the cross terms of different samples in ``|u|^2``
  vanish to leading order as they do for mini-batches. The drift is SGD's at learning rates
  ``eta / (1 - beta)`` and ``eta_v / (1 - beta)`` (both orders, the weight decay included).
  A momentum that varies on the ``t`` scale enters the same way pointwise; momentum with
  ``1 - beta = O(1/N)`` (as in DANA) makes the velocity a slow variable and is *not* covered by
  this limit (the exact recursion of :mod:`hildlimits._engine.recursion` covers it for least
  squares).
* AdaGrad-Norm (step ``eta / b_k``, ``b_{k+1}^2 = b_k^2 + |g_k|^2 / N`` with ``g_k`` the
  first-layer gradient in the parametrisation of the step, ``w_i <- w_i - (eta/b) g_{k,i}``,
  ``g_{k,i} = (1/sqrt N) dl/dlambda_i x``): per unit time ``N`` steps add
  ``E|g|^2 = sum_i E[(dl/dlambda_i)^2] |x|^2/N / B``, so ``d(b^2)/dt = grad_sq * tr(Sigma)/N / B``
  (``grad_sq`` derived with ``adagrad=True``; ``tr(Sigma)/N`` is the mean eigenvalue, 1 for
  ``Sigma = I``); the state ``b2 = b^2`` joins the ODE and the learning rates are ``eta / b``.
  The second layer's gradient is ``O(1/N)`` per step and does not enter ``b`` to leading order.
* a batch-size schedule ``B(t)``: ``args["_sched_batch"]`` on the edges of the learning-rate
  schedule (``args["_sched_edges"]``); a momentum schedule ``beta(t)``:
  ``args["_sched_momentum"]`` on the same edges (the limit above holds pointwise while ``beta``
  changes on the ``t`` scale).
* sample time: with ``args["_per_sample"]`` present the independent variable is the number of
  samples seen over ``N``, ``s = int B dt``, so ``dy/ds = (dy/dt) / B`` and the schedules are
  indexed by ``s`` (the joint learning-rate and batch-size optimisation under a sample budget,
  :func:`hildlimits.optimize_schedule` with ``batch=True``).

Time stays ``t = steps/N`` throughout (gradient flow: ``eta t``, with ``B = inf``).
"""

from __future__ import annotations

import jax.numpy as jnp

STATE = "b2"
"""The extra state key of AdaGrad-Norm (``b^2``)."""


def _core(y: dict) -> dict:
    return {k: v for k, v in y.items() if k != STATE} if STATE in y else y


def effective_args(t, y, args) -> dict:
    """``args`` with the learning rates the drift sees (momentum, AdaGrad-Norm) and the batch
    size at ``t`` (a batch schedule)."""
    beta = args["momentum"]
    if "_sched_momentum" in args:
        beta = args["_sched_momentum"][jnp.searchsorted(args["_sched_edges"], t, side="right")]
    scale = 1.0 / (1.0 - beta)
    if STATE in y:
        scale = scale / jnp.sqrt(y[STATE])
    out = {**args, "eta": args["eta"] * scale, "eta_v": args["eta_v"] * scale}
    if "_sched_batch" in args:
        idx = jnp.searchsorted(args["_sched_edges"], t, side="right")
        out["batch"] = args["_sched_batch"][idx]
    return out


def vector_field(module):
    """The optimiser's vector field ``vf(t, y, args)`` around ``module.vector_field``."""
    vf = module.vector_field

    def field(t, y, args):
        a = effective_args(t, y, args)
        core = _core(y)
        d = vf(t, core, a)
        if STATE in y:
            d = {**d, STATE: module.grad_sq(core, a) * args["_trace"] / a["batch"]}
        if "_per_sample" in args:  # d/ds = (d/dt) / B
            d = {k: v / a["batch"] for k, v in d.items()}
        return d

    return field


def risk(module):
    """``module.risk`` of the overlaps only (the optimiser's state left out)."""
    fn = module.risk

    def r(y, args):
        return fn(_core(y), args)

    return r


def observable(module, name: str):
    fn = getattr(module, name)

    def f(y, args):
        return fn(_core(y), effective_args(0.0, y, args))

    return f
