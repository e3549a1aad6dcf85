r"""Finite-width simulator in mean-field scaling: trains the actual wide networks.

``width = p`` hidden units, input dimension ``d``, ``\hat y = (1/p) \sum_j a_j g(w_j.x/\sqrt d)``,
fresh ``x ~ N(0, I_d)`` per step and the steps of :mod:`._meanfield`::

    w_j <- w_j - (eta/sqrt d)(yhat - y) a_j g'(lambda_j) x,   a_j <- a_j - (eta_a/d)(yhat - y) g(lambda_j)

With ``batch_size = B > 1`` each step averages the gradient over ``B`` fresh samples (same step
size, so still ``tau = eta * steps / d``): the SGD noise of the particles, ``O(eta)`` per unit
``tau`` at ``B = 1``, falls to ``O(eta / B)``. ``[training] gradient_flow = true`` uses this as
a large-batch approximation of gradient descent on the population loss (the mean-field ODE is the
``eta -> 0`` limit already: gradient flow in ``tau``).

Time ``tau = eta * steps / d``. Teacher weights realise ``T`` exactly (``sqrt(d) L O`` with
orthonormal ``O``); student weights ``w_j ~ N(0, q I_d)`` i.i.d.; the readout ``a_j`` from the
law of :class:`~hildlimits.MeanFieldInit` (quantiles, the same in every seed, or random draws per
seed). The risk recorded is the closed form ``(1/2) E[(yhat - f*)^2]`` of the measured overlaps
(``O(p^2)``, all of them, orthogonal ones included). Memory ``O(seeds p d)``; inputs are drawn in
blocks of steps keyed by the step index (results do not depend on chunking), ``vmap`` over seeds.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np

from hildlimits._engine.activations import get_activation
from hildlimits._errors import ConfigError
from hildlimits._families.committee.simulate import SeedStatistics
from hildlimits._families.committee.solve import check_solve_options, save_times
from hildlimits._families.meanfield.model import (
    MeanField,
    MeanFieldInit,
    _pairwise_terms,
    derive_meanfield,
)
from hildlimits._pipeline.runner import RunStatus, Status
from hildlimits._pipeline.validators import integer_at_least as _int
from hildlimits._pipeline.validators import real as _real


@dataclass(frozen=True, eq=False)
class MeanFieldSimulation(SeedStatistics):
    """Result of :func:`simulate_meanfield` (per seed; ``risk_mean``/``risk_std`` over seeds).

    Attributes:
        t: save times in ``tau = eta * steps / d``; steps: step counts.
        r: ``(S, n, p, M)``; q: ``(S, n, p)``; a: ``(S, n, p)``; risk: ``(S, n)``.
        q_offdiag: ``(S, n)`` root-mean-square orthogonal overlap
            ``(w_j.w_k/d - r_j^T T^{-1} r_k)`` over pairs ``j != k`` (zero in the limit).
    """

    t: np.ndarray
    steps: np.ndarray
    r: np.ndarray
    q: np.ndarray
    a: np.ndarray
    risk: np.ndarray
    q_offdiag: np.ndarray
    d: int
    width: int
    seeds: int
    seed: int
    lr: float
    dtype: str
    status: str
    timings: dict = field(default_factory=dict)
    batch_size: int = 1

    def to_dict(self) -> dict:
        return {
            "t": self.t.tolist(),
            "steps": self.steps.tolist(),
            "risk": self.risk_mean.tolist(),
            "risk_std": self.risk_std.tolist(),
            "risk_per_seed": self.risk.tolist(),
            "q_offdiag_rms": self.q_offdiag.mean(axis=0).tolist(),
            "r": self.r[0].tolist(),
            "q": self.q[0].tolist(),
            "a": self.a[0].tolist(),
            "d": self.d,
            "width": self.width,
            "seeds": self.seeds,
            "seed": self.seed,
            "lr": self.lr,
            "batch_size": self.batch_size,
            "dtype": self.dtype,
            "status": self.status,
            "time_unit": "tau = lr * steps / d",
        }


def _block(d: int) -> int:
    return int(max(1, min(256, (1 << 22) // (d + 1))))


@functools.lru_cache(maxsize=16)
def _kernels(activation, teacher_activation, d, p, dtype, trained, schedule=False, batch=1):
    g = get_activation(activation).jax_function(0)
    dg = get_activation(activation).jax_function(1)
    gs = get_activation(teacher_activation).jax_function(0)
    sqd = math.sqrt(d)
    B = _block(d * batch)
    wid = -(-(d + 1) // 128) * 128

    def advance_one(W, Ws, a, div, key, start, stop, prm):
        vs = prm["v_teacher"]
        eta, eta_a = prm["eta"], prm["eta_a"]

        def readout_rate(s):
            if schedule:  # piecewise-constant eta_a(tau), tau = eta * s / d
                k = jnp.searchsorted(prm["sched_edges"], eta * s / d, side="right")
                return prm["sched_values"][k]
            return eta_a

        def block(b, carry):
            shape = (B, wid) if batch == 1 else (B, batch, wid)
            Z = jax.random.normal(jax.random.fold_in(key, b), shape, jnp.float32)

            def body(s, carry):
                W, a, div = carry
                z = jax.lax.dynamic_index_in_dim(Z, s - b * B, keepdims=False).astype(dtype)
                x, zeta = z[:d], z[d]
                lam = W @ x / sqd
                nu = Ws @ x / sqd
                gl = g(lam)
                err = a @ gl / p - (vs @ gs(nu) + prm["sigma"] * zeta)
                ok = jnp.isfinite(err) & (jnp.abs(err) < prm["bound"])
                W = W - (eta / sqd) * (err * a * dg(lam))[:, None] * x[None, :]
                if trained:
                    a = a - (readout_rate(s) / d) * err * gl
                div = jnp.where((div < 0) & ~ok, s, div)
                return W, a, div

            def body_batch(s, carry):  # the gradient averaged over `batch` samples
                W, a, div = carry
                z = jax.lax.dynamic_index_in_dim(Z, s - b * B, keepdims=False).astype(dtype)
                x, zeta = z[:, :d], z[:, d]
                lam = x @ W.T / sqd  # (batch, p)
                nu = x @ Ws.T / sqd
                gl = g(lam)
                err = gl @ a / p - (gs(nu) @ vs + prm["sigma"] * zeta)  # (batch,)
                ok = jnp.all(jnp.isfinite(err) & (jnp.abs(err) < prm["bound"]))
                W = W - (eta / (sqd * batch)) * ((err[:, None] * a * dg(lam)).T @ x)
                if trained:
                    a = a - (readout_rate(s) / (d * batch)) * (err @ gl)
                div = jnp.where((div < 0) & ~ok, s, div)
                return W, a, div

            lo = jnp.maximum(start, b * B)
            hi = jnp.minimum(stop, (b + 1) * B)
            return jax.lax.fori_loop(lo, hi, body if batch == 1 else body_batch, carry)

        return jax.lax.fori_loop(start // B, (stop - 1) // B + 1, block, (W, a, div))

    @jax.jit
    def advance(W, Ws, a, div, keys, start, stop, prm):
        return jax.vmap(advance_one, in_axes=(0, 0, 0, 0, 0, None, None, None))(
            W, Ws, a, div, keys, start, stop, prm
        )

    @jax.jit
    def overlaps(W, Ws):
        Q = jnp.einsum("sjn,skn->sjk", W, W) / d
        R = jnp.einsum("sjn,smn->sjm", W, Ws) / d
        return Q, R

    return advance, overlaps


def risk_of_overlaps(system, Q, r, a, T, v_teacher):
    """``(1/2) E[(yhat - f*)^2]`` of a width-``p`` network with overlaps ``Q`` (all of them),
    ``r``, readout ``a`` (``yhat = (1/p) sum a_j g``), by the closed forms of ``system``."""
    y = {"r": r, "q": jnp.diagonal(Q), "a": a}
    args = {"T": T, "v_teacher": v_teacher, "ratio": 0.0}
    return _pairwise_terms(
        system, system.risk, y, a, args, free=(), diag=False, cross_diag=jnp.diagonal(Q), Cpp=Q
    )


def simulate_meanfield(
    model: MeanField,
    *,
    init: MeanFieldInit,
    lr: float,
    lr_second_layer: float | None = None,
    noise: float = 0.0,
    d: int,
    width: int,
    seeds: int = 1,
    seed: int = 0,
    t1: float,
    n_save: int = 20,
    spacing: str = "linear",
    t_first: float | None = None,
    dtype: str | None = None,
    divergence_bound: float = 1e8,
    lr_second_layer_schedule=None,
    batch_size: int = 1,
    checkpoint=None,
    checkpoint_every: float = 30.0,
) -> MeanFieldSimulation:
    r"""Train ``seeds`` networks of width ``width`` and input dimension ``d`` in mean-field scaling.

    Args:
        model, init: as for :func:`~hildlimits.solve_meanfield` (``init.particles`` is not used:
            the network has ``width`` units).
        lr, lr_second_layer, noise: ``eta``, ``eta_a`` (default ``eta``), output-noise ``sigma``.
        d: input dimension; width: hidden units ``p`` (``1 <= p <= d``).
        seeds, seed: independent runs and base seed.
        t1, n_save, spacing, t_first: save times in ``tau``, rounded to whole steps
            (``steps = tau d / eta``).
        dtype: ``"float64"`` (default on CPU) or ``"float32"``.
        divergence_bound: ``|yhat - y|`` above this, or non-finite, ends the run
            (``"diverged at step s (t=...)"``).
        lr_second_layer_schedule: a :class:`~hildlimits.Schedule` of the readout learning rate
            ``eta_a`` over ``tau`` (replaces ``lr_second_layer``), applied at
            ``tau = eta * step / d``.
        batch_size: samples per step (the gradient is their average; ``tau`` per step
            unchanged). ``[training] gradient_flow`` simulates with a large batch.
        checkpoint: called with the partial :class:`MeanFieldSimulation` every
            ``checkpoint_every`` seconds (the CLI writes it). Ctrl-C ends the run with status
            ``interrupted`` and the save times finished so far.

    Returns:
        :class:`MeanFieldSimulation`.

    Example:
        >>> import hildlimits as hl
        >>> init = hl.MeanFieldInit(T=[[1.0]], v_teacher=[1.0])
        >>> sim = hl.simulate_meanfield(hl.MeanField(M=1), init=init, lr=0.5, d=64, width=8,
        ...                             t1=0.5, n_save=2)
        >>> sim.r.shape
        (1, 2, 8, 1)
    """
    if not isinstance(model, MeanField):
        raise TypeError(f"model must be a hildlimits.MeanField, got {type(model).__name__}")
    if not isinstance(init, MeanFieldInit):
        raise TypeError(f"init must be a hildlimits.MeanFieldInit, got {type(init).__name__}")
    d = _int("d (--N)", d)
    width = _int("width", width)
    if width > d:
        raise ConfigError(
            f"width must not exceed the input dimension d (mean-field limit d >> p), "
            f"got width={width} > d={d}"
        )
    if d < init.M:
        raise ConfigError(f"d must be at least M={init.M}, got {d}")
    seeds = _int("seeds", seeds)
    seed = _int("seed", seed, minimum=0)
    batch_size = _int("training.batch_size", batch_size)
    eta = _real("training.lr", lr)
    if eta <= 0:
        raise ConfigError(f"training.lr must be positive, got {lr!r}")
    eta_a = eta if lr_second_layer is None else _real("training.lr_second_layer", lr_second_layer)
    sigma = _real("model.noise", noise, nonnegative=True)
    check_solve_options(
        t1=t1,
        n_save=n_save,
        spacing=spacing,
        t_first=t_first,
        rtol=1.0,
        atol=1.0,
        solver="tsit5",
        max_steps=1,
        divergence_bound=divergence_bound,
        steady_state=None,
    )
    if dtype is None:
        dtype = "float64" if jax.default_backend() == "cpu" else "float32"
    if dtype not in ("float32", "float64"):
        raise ConfigError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    ts = save_times(float(t1), int(n_save), spacing, t_first)
    steps = np.unique(np.round(ts * d / eta).astype(np.int64))
    M = init.M
    G = np.linalg.cholesky(init.T)
    W_l, Ws_l, a_l = [], [], []
    for s in range(seeds):
        rng = np.random.default_rng([seed, s])
        O, _ = np.linalg.qr(rng.standard_normal((d, M)))
        Ws_l.append(math.sqrt(d) * G @ O.T)
        W_l.append(rng.standard_normal((width, d)) * math.sqrt(init.q))
        a_l.append(init.second_layer(width, seed=int(rng.integers(2**31))))
    system = derive_meanfield(model)
    rec = {"r": [], "q": [], "a": [], "risk": [], "off": []}
    done, status = [], RunStatus.of(Status.OK)

    def result(status) -> MeanFieldSimulation:
        n = len(done)

        def stack(key):
            return np.stack(rec[key][:n], axis=1) if n else np.zeros((seeds, 0))

        return MeanFieldSimulation(
            t=np.asarray(done, np.float64) * eta / d,
            steps=np.asarray(done, np.int64),
            r=stack("r"),
            q=stack("q"),
            a=stack("a"),
            risk=stack("risk"),
            q_offdiag=stack("off"),
            d=d,
            width=width,
            seeds=seeds,
            seed=seed,
            lr=eta,
            dtype=dtype,
            status=status,
            timings={"compile_and_run": time.perf_counter() - t_start},
            batch_size=batch_size,
        )

    t_start = time.perf_counter()
    with jax.enable_x64(True), jax.threefry_partitionable(False):
        jdt = jnp.dtype(dtype)
        sched = lr_second_layer_schedule
        advance, overlaps = _kernels(
            model.activation,
            model.teacher_activation,
            d,
            width,
            jdt,
            model.train_second_layer,
            sched is not None and model.train_second_layer,
            batch_size,
        )
        W = jnp.asarray(np.stack(W_l), jdt)
        Ws = jnp.asarray(np.stack(Ws_l), jdt)
        a = jnp.asarray(np.stack(a_l), jdt)
        div = jnp.full((seeds,), -1, jnp.int64)
        keys = jax.vmap(lambda s: jax.random.fold_in(jax.random.key(seed), s))(jnp.arange(seeds))
        prm = {
            "v_teacher": jnp.asarray(init.v_teacher, jdt),
            "eta": jnp.asarray(eta, jdt),
            "eta_a": jnp.asarray(eta_a, jdt),
            "sigma": jnp.asarray(sigma, jdt),
            "bound": jnp.asarray(divergence_bound, jdt),
        }
        if sched is not None and model.train_second_layer:
            prm["sched_edges"] = jnp.asarray(sched.edges, jdt)
            prm["sched_values"] = jnp.asarray(sched.values, jdt)
        T = np.asarray(init.T, np.float64)
        vt = np.asarray(init.v_teacher, np.float64)
        Tinv = np.linalg.inv(T)
        risk_fn = jax.jit(
            jax.vmap(lambda Q, r, a: risk_of_overlaps(system, Q, r, a, T, vt), in_axes=(0, 0, 0))
        )
        current = 0
        last_ckpt = time.monotonic()
        try:
            for target in steps:
                if target > current:
                    W, a, div = advance(
                        W, Ws, a, div, keys, jnp.asarray(current), jnp.asarray(int(target)), prm
                    )
                    current = int(target)
                Q, R = overlaps(W, Ws)
                Qn, Rn, an = (np.asarray(x, np.float64) for x in (Q, R, a))
                dn = np.asarray(div)
                if np.any(dn >= 0) or not np.all(np.isfinite(Qn)):
                    s_bad = int(dn[dn >= 0].min()) if np.any(dn >= 0) else current
                    status = RunStatus.diverged_at_step(s_bad, s_bad * eta / d)
                    break
                risk = np.asarray(risk_fn(Qn, Rn, an))
                off = Qn - np.einsum("sjm,mn,skn->sjk", Rn, Tinv, Rn)
                iu = np.triu_indices(width, 1)
                rms = (
                    np.sqrt(np.mean(off[:, iu[0], iu[1]] ** 2, axis=1))
                    if width > 1
                    else 0 * an[:, 0]
                )
                # appended together, after every value exists: an interrupt never leaves a
                # save time half recorded
                rec["r"].append(Rn)
                rec["q"].append(np.diagonal(Qn, axis1=1, axis2=2).copy())
                rec["a"].append(an)
                rec["risk"].append(risk)
                rec["off"].append(rms)
                done.append(current)
                if checkpoint is not None and time.monotonic() - last_ckpt > checkpoint_every:
                    checkpoint(result("running"))
                    last_ckpt = time.monotonic()
        except KeyboardInterrupt:
            status = RunStatus.of(Status.INTERRUPTED, current * eta / d)
    return result(status)
