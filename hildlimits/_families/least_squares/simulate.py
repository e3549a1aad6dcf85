r"""Finite-``N`` simulator of finite-data least squares (JAX, ``vmap`` over seeds).

Per seed: a teacher ``w*`` with ``|w*|^2/N = T`` exactly, a start ``w(0) = (R/T) w* + c`` with
``c`` orthogonal to ``w*`` and ``|c|^2/N = Q - R^2/T`` (so the initial overlaps are exact), and
``n = round(alpha N)`` Gaussian samples drawn once, in blocks, into the sufficient statistics
``C = X^T X / n``, ``u = (sqrt(N)/n) X^T y``, ``|y|^2/n``. Then:

* full-batch GD: the actual iteration ``w <- w - lr [(C + lambda) w - u]`` (``= w - lr N grad
  L(w)``), one step per ``lr`` of time (a schedule: the step size at the start of each step);
* gradient flow: the exact solution of ``dw/dt = -[(C + lambda) w - u]`` in the eigenbasis of
  ``C`` (``eigh``): ``w(t) = w(0) - V diag((1 - e^{-r t})/r) V^T g(0)`` -- no time steps.

Recorded exactly (no test samples needed): ``risk = |w - w*|^2/(2N)``,
``train_loss = (1/2n)|y - X w/sqrt(N)|^2 = (w^T C w/N - 2 w.u/N + |y|^2/n)/2``, ``Q``, ``R``.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np

from hildlimits._errors import ConfigError
from hildlimits._families.committee.simulate import SeedStatistics
from hildlimits._pipeline.runner import RunStatus, Status, save_times

MAX_STEPS = 10_000_000
MEMORY = 2 * 2**30  # bytes of seed-batched matrices held at once


@dataclass(frozen=True, eq=False)
class LeastSquaresSimulation(SeedStatistics):
    """Result of :func:`simulate_least_squares`: ``t`` (``lr * steps``), ``steps`` (GD),
    per-seed ``risk``, ``train_loss``, ``Q``, ``R`` (seeds x times)."""

    t: np.ndarray
    steps: np.ndarray | None
    risk: np.ndarray
    train_loss: np.ndarray
    Q: np.ndarray
    R: np.ndarray
    N: int
    n: int
    seeds: int
    seed: int
    method: str
    dtype: str
    status: object
    timings: dict = field(default_factory=dict)

    @property
    def train_mean(self) -> np.ndarray:
        return self.train_loss.mean(axis=0)

    @property
    def train_sem(self) -> np.ndarray:
        if self.seeds < 2:
            return np.zeros_like(self.train_loss[0])
        return self.train_loss.std(axis=0, ddof=1) / math.sqrt(self.seeds)

    def to_dict(self) -> dict:
        out = {
            "t": self.t.tolist(),
            "risk": self.risk_mean.tolist(),
            "risk_std": self.risk_std.tolist(),
            "risk_sem": self.risk_sem.tolist(),
            "train_loss": self.train_mean.tolist(),
            "train_loss_sem": self.train_sem.tolist(),
            "Q": self.Q.mean(axis=0).tolist(),
            "R": self.R.mean(axis=0).tolist(),
            "risk_per_seed": self.risk.tolist(),
            "train_loss_per_seed": self.train_loss.tolist(),
            "N": self.N,
            "n": self.n,
            "samples_effective": self.n / self.N,
            "seeds": self.seeds,
            "seed": self.seed,
            "method": self.method,
            "dtype": self.dtype,
            "status": self.status,
            "time_unit": "t = lr * steps" if self.method == "full_batch" else "gradient-flow time",
            "simulation": "full-batch GD iterated step by step"
            if self.method == "full_batch"
            else "gradient flow solved exactly in the eigenbasis of X^T X / n",
        }
        if self.steps is not None:
            out["steps"] = self.steps.tolist()
        return out


def n_samples(cfg, N: int) -> int:
    return max(1, int(round(cfg.samples * N)))


def check_size(cfg, N: int, seeds: int) -> None:
    if isinstance(N, bool) or not isinstance(N, int) or N < 1:
        raise ConfigError(f"--N must be a positive integer, got {N!r}")
    if N > 50_000:
        raise ConfigError(f"--N = {N} is too large for the N x N Gram matrix (at most 50000)")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ConfigError(f"--seeds must be a positive integer, got {seeds!r}")


def _step_plan(cfg, ts, schedule):
    """``(etas, save_steps, t_saved)``: the GD step sizes, the step counts at the save times and
    the times reached there."""
    if schedule is None:
        k = np.unique(np.round(np.asarray(ts) / cfg.lr).astype(np.int64))
        if k[-1] > MAX_STEPS:
            raise ConfigError(f"{k[-1]} GD steps (t1 / lr) exceed the simulator's {MAX_STEPS}")
        return np.full(int(k[-1]), cfg.lr), k, k * cfg.lr
    etas, times = [], [0.0]
    t1 = float(ts[-1])
    while times[-1] < t1 - 1e-12 * t1:
        eta = float(schedule(times[-1]))
        if eta <= 0:
            raise ConfigError("a schedule value of 0 never reaches t1 in the GD simulation")
        etas.append(eta)
        times.append(times[-1] + eta)
        if len(etas) > MAX_STEPS:
            raise ConfigError(f"the schedule needs more than {MAX_STEPS} GD steps")
    times = np.asarray(times)
    k = np.unique([int(np.argmin(np.abs(times - t))) for t in ts])
    return np.asarray(etas), k, times[k]


def _pow2(k: int, least: int = 16) -> int:
    return max(least, 1 << (max(k, 1) - 1).bit_length())


@functools.lru_cache(maxsize=16)
def _kernel(N: int, gd: bool, dtype: str, block: int, batch: int):
    """The jitted simulation of all seeds (``lax.map`` over seeds, ``batch`` at a time under
    ``vmap``); ``n`` is an argument, so one compilation serves every ``alpha`` at this ``N``."""
    dt = jnp.dtype(dtype)
    sqN = math.sqrt(N)

    def stats(key, prm, n):
        nblocks = (n + block - 1) // block
        kt, ks, kd, kz = jax.random.split(key, 4)
        ws = jax.random.normal(kt, (N,), dt)
        ws = ws * jnp.sqrt(N * prm["T"]) / jnp.linalg.norm(ws)
        c = jax.random.normal(ks, (N,), dt)
        c = c - (c @ ws) / (ws @ ws) * ws
        var = jnp.maximum(prm["Q"] - prm["R"] ** 2 / prm["T"], 0.0)
        c = c * jnp.sqrt(N * var) / jnp.maximum(jnp.linalg.norm(c), 1e-30)
        w0 = prm["R"] / prm["T"] * ws + c

        def body(b, carry):
            C, u, yy = carry
            X = jax.random.normal(jax.random.fold_in(kd, b), (block, N), dt)
            z = jax.random.normal(jax.random.fold_in(kz, b), (block,), dt)
            keep = (b * block + jnp.arange(block)) < n
            X = jnp.where(keep[:, None], X, 0.0)
            y = jnp.where(keep, X @ ws / sqN + prm["sigma"] * z, 0.0)
            return C + X.T @ X, u + X.T @ y, yy + y @ y

        C, u, yy = jax.lax.fori_loop(
            0, nblocks, body, (jnp.zeros((N, N), dt), jnp.zeros(N, dt), jnp.zeros((), dt))
        )
        nf = n.astype(dt)
        return ws, w0, C / nf, u * sqN / nf, yy / nf

    def measure(w, ws, C, u, yy):
        e = w - ws
        return {
            "risk": 0.5 * (e @ e) / N,
            "train": 0.5 * (w @ (C @ w) / N - 2 * (w @ u) / N + yy),
            "Q": (w @ w) / N,
            "R": (w @ ws) / N,
        }

    def one_gd(key, prm, n, etas, save_steps):
        ws, w, C, u, yy = stats(key, prm, n)
        lam = prm["lam"]

        def segment(carry, k1):
            w, k0 = carry

            def step(j, w):
                return w - etas[j] * (C @ w + lam * w - u)

            w = jax.lax.fori_loop(k0, k1, step, w)
            return (w, k1), measure(w, ws, C, u, yy)

        _, out = jax.lax.scan(segment, (w, jnp.asarray(0, save_steps.dtype)), save_steps)
        return out

    def one_gf(key, prm, n, ts):
        ws, w0, C, u, yy = stats(key, prm, n)
        s, V = jnp.linalg.eigh(C)
        s = jnp.maximum(s, 0.0)
        r = s + prm["lam"]
        a0, b, uu = V.T @ w0, V.T @ ws, V.T @ u
        g0 = r * a0 - uu

        def at(t):
            h = jnp.where(r * t > 1e-12, -jnp.expm1(-r * t) / jnp.where(r > 0, r, 1.0), t)
            a = a0 - h * g0
            e = a - b
            return {
                "risk": 0.5 * (e @ e) / N,
                "train": 0.5 * ((s * a) @ a / N - 2 * (a @ uu) / N + yy),
                "Q": (a @ a) / N,
                "R": (a @ b) / N,
            }

        return jax.vmap(at)(ts)

    one = one_gd if gd else one_gf

    def run(keys, prm, n, *rest):
        return jax.lax.map(lambda k: one(k, prm, n, *rest), keys, batch_size=batch)

    return jax.jit(run)


def _dtype(dtype):
    if dtype is None:
        return "float64" if jax.default_backend() == "cpu" else "float32"
    if dtype not in ("float32", "float64"):
        raise ConfigError(f"--dtype must be float32 or float64, got {dtype!r}")
    return dtype


def simulate_least_squares(
    cfg,
    *,
    N: int,
    seeds: int = 8,
    seed: int = 0,
    dtype: str | None = None,
    schedule=None,
    ts=None,
    t1: float | None = None,
    n_save: int | None = None,
    spacing: str | None = None,
    t_first: float | None = None,
) -> LeastSquaresSimulation:
    """Train ``seeds`` least-squares students at input dimension ``N`` with ``n = round(alpha
    N)`` samples (see the module docstring); save times as in the config (or ``ts``), rounded to
    whole GD steps. ``schedule``: a :class:`~hildlimits.Schedule` of the GD step over ``t``."""
    check_size(cfg, N, seeds)
    dtype = _dtype(dtype)
    gd = not cfg.gradient_flow
    if schedule is not None and not gd:
        raise ConfigError("a learning-rate schedule needs training.full_batch = true")
    so = cfg.solve
    if ts is None:
        ts = save_times(
            float(t1 or so["t1"]),
            int(n_save or so["n_save"]),
            spacing or so["spacing"],
            t_first if t_first is not None else (so["t_first"] if t1 is None else None),
        )
    ts = np.asarray(ts, np.float64)
    n = n_samples(cfg, N)
    block = int(max(1, min(4096, (1 << 24) // (N * 8))))
    per_seed = 8 * (N * N + block * N) * (2 if dtype == "float64" else 1)
    batch = int(max(1, min(seeds, MEMORY // max(per_seed, 1))))
    prm = {
        "T": cfg.T,
        "Q": cfg.Q,
        "R": cfg.R,
        "sigma": cfg.noise,
        "lam": cfg.weight_decay,
    }
    t0 = time.perf_counter()
    with jax.enable_x64(dtype == "float64"):
        prm = {k: jnp.asarray(v, dtype) for k, v in prm.items()}
        keys = jax.vmap(lambda s: jax.random.fold_in(jax.random.PRNGKey(seed), s))(
            jnp.arange(seeds)
        )
        kernel = _kernel(N, gd, dtype, block, batch)
        n_j = jnp.asarray(n, jnp.int32)
        if gd:
            etas, steps, t_saved = _step_plan(cfg, ts, schedule)
            # padded to powers of 2 (few compiled shapes): extra steps are never taken, extra
            # save points repeat the last one and are dropped
            etas_p = np.concatenate([etas, np.zeros(_pow2(len(etas)) - len(etas))])
            steps_p = np.concatenate([steps, np.full(_pow2(len(steps)) - len(steps), steps[-1])])
            out = kernel(
                keys, prm, n_j, jnp.asarray(etas_p, dtype), jnp.asarray(steps_p, jnp.int32)
            )
            n_out = len(steps)
        else:
            steps, t_saved = None, ts
            ts_p = np.concatenate([ts, np.full(_pow2(len(ts)) - len(ts), ts[-1])])
            out = kernel(keys, prm, n_j, jnp.asarray(ts_p, dtype))
            n_out = len(ts)
        out = {k: np.asarray(v)[:, :n_out] for k, v in jax.device_get(out).items()}
    elapsed = time.perf_counter() - t0
    risk = np.asarray(out["risk"], np.float64)
    train = np.asarray(out["train"], np.float64)
    Q, R = np.asarray(out["Q"], np.float64), np.asarray(out["R"], np.float64)
    bound = so["divergence_bound"]
    bad = ~np.isfinite(risk) | (risk > bound) | ~np.isfinite(train)
    status = RunStatus.of(Status.OK)
    if bad.any():
        first = int(np.argmax(bad.any(axis=0)))
        tb = float(t_saved[first])
        status = (
            RunStatus.diverged_at_step(int(steps[first]), tb)
            if gd
            else RunStatus.of(Status.DIVERGED, tb)
        )
        keep = slice(0, first)
        risk, train, Q, R = risk[:, keep], train[:, keep], Q[:, keep], R[:, keep]
        t_saved = t_saved[keep]
        steps = None if steps is None else steps[keep]
    return LeastSquaresSimulation(
        t=np.asarray(t_saved, np.float64),
        steps=None if steps is None else np.asarray(steps),
        risk=risk,
        train_loss=train,
        Q=Q,
        R=R,
        N=N,
        n=n,
        seeds=seeds,
        seed=seed,
        method="full_batch" if gd else "gradient_flow",
        dtype=dtype,
        status=status,
        timings={"compile_and_run": elapsed},
    )
