r"""Finite-width simulator: trains the actual networks with online SGD on fresh Gaussian samples.

Exactly the ODE's conventions (README, "Conventions"): inputs ``x ~ N(0, I_N)``, fields
``\lambda = Wx/\sqrt N``, ``\nu = W^*x/\sqrt N``, square loss, step
``W_i <- W_i (1 - \eta\kappa/N) - (\eta/\sqrt N)(\hat y - y) v_i g'(\lambda_i) x`` and
``v_i <- v_i - (\eta_v/N)(\hat y - y) g(\lambda_i)``, time ``t = steps/N``.

The optimisers of docs/optimisers.md (mini-batches and batch schedules, heavy-ball momentum,
AdaGrad-Norm, gradient flow as gradient descent on the population loss) are described in
:func:`simulate`; plain SGD runs the original kernel, unchanged bit for bit.

Memory is ``O(seeds (K+M) N)``; steps run in a ``lax.fori_loop`` per save interval, ``vmap``-ed over
seeds, on whatever device JAX uses (CPU here, a GPU when present); seeds that do not fit in the
memory budget at once run in chunks (the result does not depend on the chunking). Inputs are drawn in blocks of
:func:`block_size` steps from ``fold_in(fold_in(key(seed), s), step // block)``, so results do not
depend on how the run is chunked nor on the number of seeds. Inputs
are drawn as float32 normals (a 2^-24-resolution N(0,1) law; ~3x faster on CPU) and used in the
simulation dtype.
"""

from __future__ import annotations

import functools
import math
import numbers
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np

from hildlimits._engine.activations import get_activation
from hildlimits._errors import ConfigError
from hildlimits._families.committee.derive import derive
from hildlimits._families.committee.model import Committee, Hyperparams, Overlaps
from hildlimits._families.committee.solve import save_times
from hildlimits._pipeline.runner import RunStatus, Status
from hildlimits._pipeline.validators import positive_int as _positive_int


@dataclass(frozen=True)
class RandomInit:
    """I.i.d. Gaussian initial weights ``W_ik ~ N(0, student_std^2)``, ``W*_nk ~ N(0, teacher_std^2)``
    drawn at the simulation's N; their measured overlaps are the ODE's initial condition."""

    student_std: float = 1.0
    teacher_std: float = 1.0

    def __post_init__(self) -> None:
        for name in ("student_std", "teacher_std"):
            val = getattr(self, name)
            if (
                isinstance(val, bool)
                or not isinstance(val, numbers.Real)
                or not math.isfinite(val)
                or val <= 0
            ):
                raise ConfigError(f"init.random.{name} must be a positive number, got {val!r}")


class SeedStatistics:
    """Statistics over seeds of a simulation result with ``risk`` ``(seeds, times)``, ``seeds``
    and ``status`` fields (shared by the committee and mean-field simulators)."""

    @property
    def diverged(self) -> bool:
        return RunStatus.parse(self.status).diverged

    @property
    def risk_mean(self) -> np.ndarray:
        return self.risk.mean(axis=0)

    @property
    def risk_std(self) -> np.ndarray:
        return self.risk.std(axis=0, ddof=1) if self.seeds > 1 else np.zeros_like(self.risk[0])

    @property
    def risk_sem(self) -> np.ndarray:
        """Standard error of the seed mean."""
        return self.risk_std / math.sqrt(self.seeds)


@dataclass(frozen=True, eq=False)
class Simulation(SeedStatistics):
    """Result of :func:`simulate` (arrays per seed; ``*_mean`` / ``risk_std`` over seeds).

    Attributes:
        t: save times ``steps / N``, shape ``(n,)``; steps: the step counts.
        Q: ``(S, n, K, K)``; R: ``(S, n, K, M)``; v: ``(S, n, K)``; T: ``(S, M, M)``.
        risk: ``(S, n)`` risk from the measured overlaps (closed form of the derived system).
        test_error: ``(S, n)`` Monte Carlo ``(1/2) E[(yhat - f*)^2]`` on held-out samples, or None.
        status: ``"ok"``, ``"diverged at step s (t=...)"`` or ``"interrupted at t=..."``.
    """

    t: np.ndarray
    steps: np.ndarray
    Q: np.ndarray
    R: np.ndarray
    v: np.ndarray
    T: np.ndarray
    v_teacher: np.ndarray
    risk: np.ndarray
    test_error: np.ndarray | None
    N: int
    seeds: int
    seed: int
    dtype: str
    status: str
    timings: dict = field(default_factory=dict)
    # observables other than the risk (``loss``, ``classification_error``): (S, n) each
    observables: dict = field(default_factory=dict)
    # with a spectrum: the bins and each seed's per-bin overlaps at t = 0
    # (Q_b (S, B, K, K), R_b (S, B, K, M), T_b (S, B, M, M)); exact_init: whether the initial
    # overlaps (per bin, with a spectrum) were realised exactly (the same for every seed)
    spectrum: object = None
    bins0: tuple | None = None
    exact_init: bool = True

    def initial_bins(self, s: int):
        """Per-bin overlaps ``(Q_b, R_b, T_b)`` of seed ``s`` at ``t = 0`` (with a spectrum)."""
        return tuple(a[s] for a in self.bins0)

    def initial_overlaps(self, s: int) -> Overlaps:
        """Measured overlaps of seed ``s`` at ``t = 0`` (the ODE's initial condition)."""
        return Overlaps(
            Q=self.Q[s, 0],
            R=self.R[s, 0],
            T=self.T[s],
            v=self.v[s, 0],
            v_teacher=self.v_teacher,
            _checked=True,
        )

    def to_dict(self) -> dict:
        out = {
            "t": self.t.tolist(),
            "steps": self.steps.tolist(),
            "risk": self.risk_mean.tolist(),
            "risk_std": self.risk_std.tolist(),
            "Q": self.Q.mean(axis=0).tolist(),
            "R": self.R.mean(axis=0).tolist(),
            "v": self.v.mean(axis=0).tolist(),
            "T": self.T.mean(axis=0).tolist(),
            "N": self.N,
            "seeds": self.seeds,
            "seed": self.seed,
            "dtype": self.dtype,
            "status": self.status,
            "risk_per_seed": self.risk.tolist(),
        }
        for name, val in self.observables.items():
            out[name] = val.mean(axis=0).tolist()
            out[name + "_std"] = (
                val.std(axis=0, ddof=1) if self.seeds > 1 else 0 * val[0]
            ).tolist()
        if self.spectrum is not None:
            out["eigenvalues"] = self.spectrum.eigenvalues.tolist()
            out["weights"] = self.spectrum.weights.tolist()
            out["teacher_weights"] = self.spectrum.teacher_weights.tolist()
        if self.test_error is not None:
            out["test_error"] = self.test_error.mean(axis=0).tolist()
            out["test_error_std"] = (
                self.test_error.std(axis=0, ddof=1) if self.seeds > 1 else 0 * self.test_error[0]
            ).tolist()
        return out


# ----------------------------------------------------------------------------- initial weights


def exact_weights(
    init: Overlaps, N: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Student and teacher weights (``K x N``, ``M x N``) whose overlaps equal ``init`` exactly:
    ``sqrt(N) L O`` with ``L L^T = [[Q, R], [R^T, T]]`` and ``O`` random orthonormal rows."""
    K, M = init.K, init.M
    G = np.block([[init.Q, init.R], [init.R.T, init.T]])
    w, U = np.linalg.eigh((G + G.T) / 2)
    L = U * np.sqrt(np.clip(w, 0.0, None))
    O, _ = np.linalg.qr(rng.standard_normal((N, K + M)))
    Wall = math.sqrt(N) * L @ O.T
    return Wall[:K], Wall[K:]


def binned_weights(bins, counts, N: int, rng: np.random.Generator):
    """Student and teacher weights (``K x N``, ``M x N``, coordinates ordered by bin) whose
    per-bin overlaps ``sum_{j in b} w_j w'_j / N`` equal ``bins = (Q_b, R_b, T_b)``: exactly in a
    bin of at least ``K + M`` directions (:func:`exact_weights` within the bin), in expectation in
    smaller bins (Gaussian coordinates of covariance ``N J_b / n_b``). Returns
    ``(W, W*, exact)``."""
    Qb, Rb, Tb = (np.asarray(a) for a in bins)
    K, M = Qb.shape[1], Tb.shape[1]
    D = K + M
    J = np.concatenate(
        [np.concatenate([Qb, Rb], 2), np.concatenate([np.swapaxes(Rb, 1, 2), Tb], 2)], 1
    )
    w, U = np.linalg.eigh((J + np.swapaxes(J, 1, 2)) / 2)
    L = U * np.sqrt(np.clip(w, 0.0, None))[:, None, :]  # (B, D, D)
    Wall = np.empty((D, N))
    exact = True
    small = counts < D
    # bins of fewer than K + M directions, at once: one Gaussian coordinate per direction
    if small.any():
        exact = False
        idx = np.repeat(np.arange(len(counts)), counts)
        where = small[idx]
        n_of = counts[idx[where]]
        g = rng.standard_normal((int(where.sum()), D))
        Wall[:, where] = (np.sqrt(N / n_of)[:, None] * np.einsum("jab,jb->ja", L[idx[where]], g)).T
    for b in np.nonzero(~small)[0]:
        lo = int(counts[:b].sum())
        n = int(counts[b])
        O, _ = np.linalg.qr(rng.standard_normal((n, D)))
        Wall[:, lo : lo + n] = math.sqrt(N) * L[b] @ O.T
    return Wall[:K], Wall[K:], exact


# ----------------------------------------------------------------------------- the jitted steps


def block_size(N: int) -> int:
    """Steps whose inputs are drawn in one call (depends on N only, so results do not depend on
    the number of seeds or on chunking); about 16 MiB of float32 per seed."""
    return int(max(1, min(256, (1 << 22) // (N + 1))))


def _step_functions(model: Committee):
    """The student activation and its derivative, the teacher activation,
    ``error(yhat, y)``: ``dl/dyhat`` at the label of the noisy teacher output ``y``
    (``yhat - y`` for the square loss with identity labels), and ``label`` (``None``: identity)
    -- shared by the SGD kernels."""
    g = get_activation(model.activation).jax_function(0)
    dg = get_activation(model.activation).jax_function(1)
    gs = get_activation(model.teacher_activation).jax_function(0)
    if model.loss == "square" and model.label == "y":
        return g, dg, gs, (lambda yhat, y: yhat - y), None
    from hildlimits._families.committee.loss import jax_functions

    f_label, _, f_dloss = jax_functions(model.loss, model.label, model.huber_delta)
    return g, dg, gs, (lambda yhat, y: f_dloss(yhat, f_label(y))), f_label


def _risk_kernel(system):
    """The derived observables (``risk`` first) of measured overlaps (per bin, with a
    spectrum), vmapped over seeds (cached on the system): ``f(Q, R, T, v, vt, sigma, s, p)``."""
    key = ("simulate-observables",)
    if key not in system._jax:
        names = system.observable_names
        module = system.module

        def one(Q, R, T, v, vt, sigma, s, p):
            zero = jnp.zeros((), Q.dtype)
            args = {
                "T": T,
                "v_teacher": vt,
                "v": v,
                "eta": zero,
                "eta_v": zero,
                "sigma": sigma,
                "kappa": zero,
                "s": s,
                "p": p,
                # the optimiser's parameters (read by systems derived with minibatch=True or
                # adagrad=True; the observables do not depend on them)
                "batch": jnp.ones((), Q.dtype),
                "momentum": zero,
                "_trace": jnp.ones((), Q.dtype),
            }
            y = {"Q": Q, "R": R, "v": v}
            return tuple(getattr(module, n)(y, args) for n in names)

        system._jax[key] = jax.jit(jax.vmap(one, in_axes=(0, 0, 0, 0, None, None, None, None)))
    return system._jax[key]


@functools.lru_cache(maxsize=32)
def _make_kernels(
    model: Committee,
    N: int,
    dtype,
    trained: bool,
    schedule: bool = False,
    spectral: bool = False,
    bins: int = 1,
):
    g, dg, gs, error, f_label = _step_functions(model)
    sqrtN = math.sqrt(N)

    B = block_size(N)
    width = -(-(N + 1) // 128) * 128  # padded row: odd widths make the generator ~2x slower

    def advance_one(W, Ws, v, div, key, start, stop, p):
        vs = p["v_teacher"]

        def block(b, carry):
            # the inputs of steps b*B .. b*B+B-1 (drawn at once: far cheaper than per step)
            Z = jax.random.normal(jax.random.fold_in(key, b), (B, width), jnp.float32)

            def body(s, carry):
                W, v, div = carry
                z = jax.lax.dynamic_index_in_dim(Z, s - b * B, keepdims=False).astype(dtype)
                x, zeta = z[:N], z[N]
                if spectral:  # x ~ N(0, Sigma): coordinate j scaled by sqrt(s_b(j))
                    x = x * p["sqrt_s"]
                lam = W @ x / sqrtN
                nu = Ws @ x / sqrtN
                gl = g(lam)
                d = error(v @ gl, vs @ gs(nu) + p["sigma"] * zeta)
                ok = jnp.isfinite(d) & (jnp.abs(d) < p["bound"])
                if schedule:  # piecewise-constant eta(t), t = s / N
                    eta = p["sched_values"][jnp.searchsorted(p["sched_edges"], s / N, side="right")]
                else:
                    eta = p["eta"]
                W = (
                    W * (1 - eta * p["kappa"] / N)
                    - (eta / sqrtN) * (d * v * dg(lam))[:, None] * x[None, :]
                )
                if trained:
                    v = v - (p["eta_v"] / N) * d * gl
                div = jnp.where((div < 0) & ~ok, s, div)
                return W, v, div

            lo = jnp.maximum(start, b * B)
            hi = jnp.minimum(stop, (b + 1) * B)
            return jax.lax.fori_loop(lo, hi, body, carry)

        return jax.lax.fori_loop(start // B, (stop - 1) // B + 1, block, (W, v, div))

    @jax.jit
    def advance(W, Ws, v, div, keys, start, stop, p):
        return jax.vmap(advance_one, in_axes=(0, 0, 0, 0, 0, None, None, None))(
            W, Ws, v, div, keys, start, stop, p
        )

    @jax.jit
    def overlaps(W, Ws):
        Q = jnp.einsum("skn,sln->skl", W, W) / N
        R = jnp.einsum("skn,smn->skm", W, Ws) / N
        T = jnp.einsum("smn,son->smo", Ws, Ws) / N
        return Q, R, T

    @jax.jit
    def binned_overlaps(W, Ws, bin_ids):
        """Per-bin overlaps ``(S, B, K, K)``, ... (coordinates summed by bin)."""

        def per_bin(A, Bm):
            prod = jnp.einsum("skn,sln->snkl", A, Bm) / N
            return jax.vmap(lambda x: jax.ops.segment_sum(x, bin_ids, num_segments=bins))(prod)

        return per_bin(W, W), per_bin(W, Ws), per_bin(Ws, Ws)

    def test_error_one(W, Ws, v, key, n_samples, p):
        vs = p["v_teacher"]

        def one(carry, i):
            # sample i's key from fold_in: no array of n_samples keys, and the same samples
            # whatever the number of seeds or their chunking
            x = jax.random.normal(jax.random.fold_in(key, i), (N,), jnp.float32).astype(dtype)
            if spectral:
                x = x * p["sqrt_s"]
            lam, nu = W @ x / sqrtN, Ws @ x / sqrtN
            target = vs @ gs(nu)
            if f_label is not None:  # the noiseless teacher output through the label map
                target = f_label(target)
            return carry + 0.5 * (v @ g(lam) - target) ** 2, None

        total, _ = jax.lax.scan(one, jnp.zeros((), dtype), jnp.arange(n_samples))
        return total / n_samples

    @functools.partial(jax.jit, static_argnums=5)
    def test_error(W, Ws, v, keys, p, n_samples: int):
        return jax.vmap(test_error_one, in_axes=(0, 0, 0, 0, None, None))(
            W, Ws, v, keys, n_samples, p
        )

    return advance, (binned_overlaps if spectral else overlaps), test_error


def _steps_per_block(N: int, batch: int) -> int:
    """Steps of ``batch`` samples whose inputs are drawn in one call (about :func:`block_size`
    samples; depends on N and the batch size only)."""
    return max(1, block_size(N) // batch)


@functools.lru_cache(maxsize=32)
def _make_opt_kernel(
    model: Committee,
    N: int,
    dtype,
    trained: bool,
    schedule: bool,
    spectral: bool,
    batch: int,
    momentum: bool,
    adagrad: bool,
):
    """``advance(state, Ws, keys, start, stop, p)`` of mini-batch SGD with ``batch`` samples
    per step (static), heavy-ball momentum and AdaGrad-Norm (module docstring); ``state`` holds
    ``W``, ``v``, the velocities ``uW``, ``uv`` (momentum), ``b2`` (AdaGrad-Norm) and ``div``."""
    g, dg, gs, error, f_label = _step_functions(model)
    sqrtN = math.sqrt(N)

    S = _steps_per_block(N, batch)
    width = -(-(N + 1) // 128) * 128

    def advance_one(state, Ws, key, start, stop, p):
        vs = p["v_teacher"]

        def block(b, state):
            # batch 1 draws today's stream (fold_in(key, b)); a batch B > 1 its own
            # (fold_in(fold_in(key, b), B)), so segments of a batch schedule never share inputs
            kb = jax.random.fold_in(key, b)
            if batch > 1:
                kb = jax.random.fold_in(kb, batch)
            Z = jax.random.normal(kb, (S, batch, width), jnp.float32)

            def body(s, st):
                z = jax.lax.dynamic_index_in_dim(Z, s - b * S, keepdims=False).astype(dtype)
                X, zeta = z[:, :N], z[:, N]
                if spectral:
                    X = X * p["sqrt_s"]
                W, v = st["W"], st["v"]
                lam = X @ W.T / sqrtN  # (batch, K)
                nu = X @ Ws.T / sqrtN
                gl = g(lam)
                d = error(gl @ v, gs(nu) @ vs + p["sigma"] * zeta)  # (batch,)
                ok = jnp.all(jnp.isfinite(d) & (jnp.abs(d) < p["bound"]))
                if schedule:
                    eta = p["sched_values"][jnp.searchsorted(p["sched_edges"], s / N, side="right")]
                else:
                    eta = p["eta"]
                eta_v = p["eta_v"]
                # sqrt(N) g: the batch mean of dl/dlambda_i x (g the gradient of the step)
                G = (d[:, None] * v * dg(lam)).T @ X / batch
                new = dict(st)
                if adagrad:  # step eta / b_k, then b_{k+1}^2 = b_k^2 + |g_k|^2 / N
                    inv_b = 1.0 / jnp.sqrt(st["b2"])
                    eta, eta_v = eta * inv_b, eta_v * inv_b
                    new["b2"] = st["b2"] + jnp.sum(G * G) / (N * N)
                step_W = (eta * p["kappa"] / N) * W + (eta / sqrtN) * G
                if momentum:
                    if "beta_edges" in p:  # a momentum schedule beta(t), t = s / N
                        beta = p["beta_values"][
                            jnp.searchsorted(p["beta_edges"], s / N, side="right")
                        ]
                    else:
                        beta = p["beta"]
                    new["uW"] = beta * st["uW"] - step_W
                    new["W"] = W + new["uW"]
                else:
                    new["W"] = W - step_W
                if trained:
                    step_v = (eta_v / N) * (d @ gl) / batch
                    if momentum:
                        new["uv"] = beta * st["uv"] - step_v
                        new["v"] = v + new["uv"]
                    else:
                        new["v"] = v - step_v
                new["div"] = jnp.where((st["div"] < 0) & ~ok, s, st["div"])
                return new

            lo = jnp.maximum(start, b * S)
            hi = jnp.minimum(stop, (b + 1) * S)
            return jax.lax.fori_loop(lo, hi, body, state)

        return jax.lax.fori_loop(start // S, (stop - 1) // S + 1, block, state)

    @jax.jit
    def advance(state, Ws, keys, start, stop, p):
        return jax.vmap(advance_one, in_axes=(0, 0, 0, None, None, None))(
            state, Ws, keys, start, stop, p
        )

    return advance


@functools.lru_cache(maxsize=32)
def _make_gf_kernel(model: Committee, N: int, dtype, trained: bool, spectral: bool, bins: int):
    """``advance(W, Ws, v, div, start, stop, p)``: gradient descent on the *population* loss
    (gradient flow, module docstring). The population loss of Gaussian inputs is a function of
    the overlaps alone -- the derived closed form ``risk`` (or ``loss`` for other losses than the
    square loss) -- so its gradient in the weights is, with ``G = dL/dQ``, ``H = dL/dR``
    (per bin with a spectrum, ``Q_b = sum_{j in b} W_j W_j^T / N``),
    ``dL/dW_i = (1/N) (sum_k (G_ik + G_ki) W_k + sum_n H_in W*_n)``; the step is
    ``W <- W - eta (kappa W / N + dL/dW)``, ``v <- v - (eta_v / N) dL/dv``."""
    system = derive(model)
    module = system.module
    name = "risk" if "loss" not in system.observable_names else "loss"
    loss_fn = getattr(module, name)

    def population(Q, R, v, T, p):
        args = {
            "T": T,
            "v_teacher": p["v_teacher"],
            "v": v,
            "sigma": p["sigma"],
            "eta": p["zero"],
            "eta_v": p["zero"],
            "kappa": p["zero"],
            "batch": p["zero"] + 1,
            "momentum": p["zero"],
            "_trace": p["zero"] + 1,
        }
        if spectral:
            args["s"], args["p"] = p["s"], p["p"]
        return loss_fn({"Q": Q, "R": R, "v": v}, args)

    _grad = jax.grad(population, argnums=(0, 1, 2))

    def grad(Q, R, T, v, p):
        return _grad(Q, R, v, T, p)

    def advance_one(W, Ws, v, div, start, stop, p):
        # the teacher overlaps of this seed (per bin with a spectrum), fixed along the run
        if spectral:
            ids = p["bin_ids"]
            T = jax.ops.segment_sum(jnp.einsum("mn,on->nmo", Ws, Ws) / N, ids, bins)
        else:
            T = Ws @ Ws.T / N

        def body(s, carry):
            W, v, div = carry
            if spectral:
                Q = jax.ops.segment_sum(jnp.einsum("kn,ln->nkl", W, W) / N, ids, bins)
                R = jax.ops.segment_sum(jnp.einsum("kn,mn->nkm", W, Ws) / N, ids, bins)
            else:
                Q, R = W @ W.T / N, W @ Ws.T / N
            G, H, gv = grad(Q, R, T, v, p)
            G = G + jnp.swapaxes(G, -1, -2)
            if spectral:  # coordinate j of bin b(j): G_b(j), H_b(j)
                dW = (
                    jnp.einsum("nkl,ln->kn", G[ids], W) + jnp.einsum("nkm,mn->kn", H[ids], Ws)
                ) / N
            else:
                dW = (G @ W + H @ Ws) / N
            ok = jnp.all(jnp.isfinite(dW))
            W = W - p["eta"] * (p["kappa"] / N * W + dW)
            if trained:
                v = v - (p["eta_v"] / N) * gv
            div = jnp.where((div < 0) & ~ok, s, div)
            return W, v, div

        return jax.lax.fori_loop(start, stop, body, (W, v, div))

    @jax.jit
    def advance(W, Ws, v, div, start, stop, p):
        return jax.vmap(advance_one, in_axes=(0, 0, 0, 0, None, None, None))(
            W, Ws, v, div, start, stop, p
        )

    return advance


# ----------------------------------------------------------------------------- entry point


def _edge_step(edge: float, N: int) -> int:
    """The first step ``s`` with ``s / N >= edge`` (the step from which a scheduled value holds,
    as the ODE's ``searchsorted(edges, t, side="right")``)."""
    s = max(0, int(math.ceil(edge * N)))
    while s > 0 and (s - 1) / N >= edge:
        s -= 1
    while s / N < edge:
        s += 1
    return s


def _batch_plan(hyper: Hyperparams, batch_schedule, N: int) -> tuple[np.ndarray, list[int]]:
    """``(edge_steps, batches)``: the batch size ``batches[k]`` from step ``edge_steps[k-1]``
    on (``hyper.batch_size`` without a schedule). A scheduled batch size must be a whole number
    of samples (:class:`ConfigError` naming ``training.batch_schedule`` otherwise)."""
    if batch_schedule is None:
        return np.zeros(0, np.int64), [int(hyper.batch_size)]
    values = np.asarray(batch_schedule.values, np.float64)
    for val in values:
        if not (math.isfinite(val) and float(val).is_integer() and val >= 1):
            raise ConfigError(
                "training.batch_schedule values must be whole numbers of samples >= 1 for the "
                f"simulator, got {val:g} (in {values.tolist()}); round them"
            )
    edges = np.asarray([_edge_step(float(e), N) for e in batch_schedule.edges], np.int64)
    return edges, [int(v) for v in values]


def _seed_chunk(seed_chunk, seeds: int, per_seed: float) -> int:
    """Seeds simulated at once: ``seed_chunk`` if given, else as many as fit in the memory
    budget (:func:`hildlimits._pipeline.limits.memory_budget`, ``per_seed`` bytes each)."""
    if seed_chunk is not None:
        return min(seeds, _positive_int("seed_chunk", seed_chunk))
    from hildlimits._pipeline.limits import memory_budget

    fit = int(memory_budget() // max(per_seed, 1.0))
    if fit < 1:
        from hildlimits._pipeline.limits import human_bytes

        raise ConfigError(
            f"one seed needs about {human_bytes(per_seed)} of memory, more than the "
            f"{human_bytes(memory_budget())} available; reduce N"
        )
    return min(seeds, fit, MAX_SEED_CHUNK)


MAX_SEED_CHUNK = 1024
"""Most seeds simulated at once (vmapped): more give no speed on a CPU and only hold memory."""


def simulate(
    model: Committee,
    *,
    hyper: Hyperparams,
    N: int,
    init: Overlaps | None = None,
    random_init: RandomInit | None = None,
    seeds: int = 1,
    seed: int = 0,
    t1: float,
    n_save: int = 200,
    spacing: str = "log",
    t_first: float | None = None,
    dtype: str | None = None,
    test_samples: int = 0,
    divergence_bound: float = 1e8,
    progress: bool | None = None,
    checkpoint: Callable[[Simulation], None] | None = None,
    checkpoint_every: float = 30.0,
    lr_schedule=None,
    spectrum=None,
    bins=None,
    batch_schedule=None,
    seed_chunk: int | None = None,
    momentum_schedule=None,
) -> Simulation:
    r"""Train ``seeds`` finite networks of input dimension ``N`` with online SGD (or the
    optimiser of ``hyper``).

    The optimisers (docs/optimisers.md; ``t = steps / N`` throughout):

    * mini-batch ``B = hyper.batch_size`` (or ``batch_schedule``): each step averages the
      gradient over ``B`` fresh samples, ``W_i <- W_i (1 - \eta\kappa/N) - (\eta/\sqrt N)
      (1/B) \sum_b \partial_{\lambda_i} l_b x_b``;
    * heavy-ball momentum ``\beta = hyper.momentum``: ``u <- \beta u - step``, ``w <- w + u``
      for the first layer and (when trained) the second, the weight decay inside the step;
    * AdaGrad-Norm (``hyper.optimizer = "adagrad_norm"``): the step of step ``k`` uses
      ``\eta / b_k`` (both layers), then ``b_{k+1}^2 = b_k^2 + |g_k|^2 / N`` with
      ``g_{k,i} = N^{-1/2} (1/B) \sum_b \partial_{\lambda_i} l_b x_b`` the first-layer gradient,
      ``b_0 = hyper.adagrad_b0``; the observable ``lr_effective = \eta(t) / ((1-\beta) b)``
      (also with momentum alone) compares with the ODE's;
    * gradient flow (``hyper.gradient_flow``): gradient descent with step ``lr`` on the
      *population* loss, whose gradient is exact: the population loss of Gaussian inputs is the
      derived closed form of the overlaps (``risk``; ``loss`` for other losses), differentiated
      with :func:`jax.grad` and mapped to the weights by ``dL/dW_i = (1/N) (\sum_k (G_{ik} +
      G_{ki}) W_k + \sum_n H_{in} W^*_n)`` (``G = dL/dQ``, ``H = dL/dR``, per bin with a
      spectrum). No samples are drawn (``batch_size`` is not used): the run is deterministic
      given the initial weights, and differs from gradient flow by the step, ``O(lr / N)`` in
      ``\tau``. Times are reported as ``\tau = lr \cdot steps / N`` (the ODE's unit).

    Plain SGD (batch 1, no momentum, SGD, no batch schedule) runs the original kernel.

    Args:
        model, hyper: as for the ODE (same conventions).
        N: input dimension (>= K + M for exact initial overlaps).
        init: initial overlaps, realised exactly at finite N (one of ``init``/``random_init``).
        random_init: i.i.d. Gaussian initial weights (:class:`RandomInit`); ``init`` then only
            supplies ``v`` and ``v_teacher`` (if given).
        seeds, seed: number of independent runs and the base seed (same seed, same result).
        t1, n_save, spacing, t_first: save times as in :func:`~hildlimits.solve`, rounded to
            whole steps (``t = steps/N``; gradient flow: ``tau = lr steps / N``).
        dtype: ``"float64"`` (default on CPU) or ``"float32"`` (default on GPU).
        test_samples: if > 0, also estimate the test error on that many held-out samples per
            save time and seed (sample ``i`` drawn from ``fold_in(key, i)``).
        divergence_bound: a step whose error ``|yhat - y|`` exceeds this (or is non-finite), or a
            ``Q_ii`` above ``divergence_bound (1 + max|init|)`` at a save time, ends the run with
            status ``"diverged at step s (t=...)"``.
        progress: show a progress bar (default: when stderr is a terminal).
        checkpoint: called with the partial :class:`Simulation` every ``checkpoint_every``
            seconds (e.g. to write it to disk).
        lr_schedule: a :class:`~hildlimits.Schedule` for the first-layer learning rate
            (``hyper.lr`` is then ignored), evaluated at ``t = step / N``.
        spectrum: inputs ``x ~ N(0, Sigma)`` with this spectrum (a model derived with
            ``covariance="spectrum"``): ``round(p_b N)`` coordinates of variance ``s_b`` per bin;
            the initial per-bin overlaps are ``bins`` (default: ``init`` spread over the bins),
            realised exactly in bins of at least ``K + M`` directions and in expectation in
            smaller ones (then every seed's ODE starts from its own measured overlaps).
        batch_schedule: a :class:`~hildlimits.Schedule` of the batch size ``B(t)`` (whole
            numbers; ``hyper.batch_size`` is then ignored), evaluated at ``t = step / N``.
        momentum_schedule: a :class:`~hildlimits.Schedule` of the heavy-ball ``beta(t)`` (values
            in ``[0, 1)``; ``hyper.momentum`` is then ignored), evaluated at ``t = step / N``.
        seed_chunk: seeds simulated at once (default: as many as fit in the memory budget of
            :mod:`hildlimits._pipeline.limits`, so a request too large for memory runs in
            chunks). Every seed draws its weights and inputs from its own keys, so the result
            does not depend on the chunking.

    Returns:
        :class:`Simulation`. Ctrl-C ends the run early with status ``"interrupted at t=..."``,
        keeping every save time reached.

    Raises:
        ConfigError: invalid options, e.g. a batch schedule of non-integer sizes, or gradient
            flow with a zero learning rate or with a schedule.
    """
    if not isinstance(model, Committee):
        raise TypeError(f"model must be a hildlimits.Committee, got {type(model).__name__}")
    if not isinstance(hyper, Hyperparams):
        raise TypeError(f"hyper must be hildlimits.Hyperparams, got {type(hyper).__name__}")
    N = _positive_int("N", N)
    seeds = _positive_int("seeds", seeds)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    if (
        isinstance(test_samples, bool)
        or not isinstance(test_samples, numbers.Integral)
        or test_samples < 0
    ):
        raise ConfigError(f"test_samples must be a non-negative integer, got {test_samples!r}")
    K, M = model.K, model.M
    if init is None and random_init is None:
        raise ConfigError(
            "give init (exact initial overlaps) or random_init (i.i.d. Gaussian weights)"
        )
    spectral = model.covariance == "spectrum"
    if spectral != (spectrum is not None):
        raise ConfigError(
            "a model with covariance='spectrum' needs spectrum=..."
            if spectral
            else "spectrum=... needs a model with covariance='spectrum'"
        )
    gflow = bool(hyper.gradient_flow)
    if gflow:
        if batch_schedule is not None:
            raise ConfigError(
                "training.batch_schedule cannot be combined with training.gradient_flow"
            )
        if lr_schedule is not None:
            raise ConfigError(
                "training.lr_schedule cannot be combined with training.gradient_flow in the "
                "simulator (its time is tau = lr * steps / N)"
            )
        if not hyper.lr > 0:
            raise ConfigError(
                "training.lr must be positive with training.gradient_flow (the step of the "
                f"gradient descent that simulates it), got {hyper.lr!r}"
            )
    if momentum_schedule is not None:
        beta = np.asarray(momentum_schedule.values, np.float64)
        if np.any((beta < 0) | (beta >= 1)):
            raise ConfigError(
                f"training.momentum_schedule values must be in [0, 1), got {beta.tolist()}"
            )
        if gflow:
            raise ConfigError(
                "training.momentum_schedule cannot be combined with training.gradient_flow"
            )
    plain = hyper.plain and batch_schedule is None and momentum_schedule is None
    edge_steps, batches = _batch_plan(hyper, batch_schedule, N)
    momentum = hyper.momentum > 0 or momentum_schedule is not None
    adagrad = hyper.optimizer == "adagrad_norm"
    counts = bin_ids = None
    if spectral:
        counts = spectrum.counts(N)
        if (counts == 0).any():
            b = int(np.argmax(counts == 0))
            raise ConfigError(
                f"N={N} leaves bin {b} of the spectrum (weight {spectrum.weights[b]:.3g}) without "
                f"a direction: N must be at least about 1/min(weights) = "
                f"{math.ceil(1 / spectrum.weights.min())}"
            )
        bin_ids = np.repeat(np.arange(spectrum.bins), counts)
    if random_init is None and N < K + M and not spectral:
        raise ConfigError(
            f"N must be at least K + M = {K + M} to realise the initial overlaps exactly, got N={N}"
        )
    if dtype is None:
        dtype = "float64" if jax.default_backend() == "cpu" else "float32"
    if dtype not in ("float32", "float64"):
        raise ConfigError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    from hildlimits._families.committee.solve import check_solve_options

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
    ts = save_times(float(t1), int(n_save), spacing, t_first)
    # gradient flow: time tau = lr * steps / N
    time_scale = float(hyper.lr) if gflow else 1.0
    steps = np.unique(np.round(ts * N / time_scale if gflow else ts * N).astype(np.int64))

    v0 = np.ones(K) if init is None else np.asarray(init.v)
    vt = np.ones(M) if init is None else np.asarray(init.v_teacher)
    if spectral and random_init is None:
        from hildlimits._pipeline.spectrum import spread_overlaps

        if bins is None:
            bins = spread_overlaps(spectrum, init.Q, init.R, init.T)

    def weights(s: int):
        """Seed ``s``'s initial weights ``(W, W*, exact)`` (its own generator)."""
        rng = np.random.default_rng([seed, s])
        if random_init is not None:
            W = rng.standard_normal((K, N)) * random_init.student_std
            Ws = rng.standard_normal((M, N)) * random_init.teacher_std
            if spectral:  # the teacher's squared norm spread as teacher_weights
                Ws = Ws * np.sqrt(spectrum.teacher_weights / spectrum.weights)[bin_ids]
            return W, Ws, False
        if spectral:
            return binned_weights(bins, counts, N, rng)
        W, Ws = exact_weights(init, N, rng)
        return W, Ws, True

    system = derive(model)
    trained = model.train_second_layer
    itemsize = 8 if dtype == "float64" else 4
    from hildlimits._families.committee.limits import WEIGHT_COPIES

    width = -(-(N + 1) // 128) * 128
    per_seed = (
        WEIGHT_COPIES * (K + M) * N * 8.0  # host and device copies of the weights
        + (2 * K * N * itemsize if momentum else 0)  # velocity
        + (3 * N * K * K * itemsize if gflow and spectral else 0)
        # a block of inputs: the random bits, the float32 normals and temporaries (~3 copies)
        + (0 if gflow else 12.0 * width * max(_steps_per_block(N, b) * b for b in batches))
    )
    chunk = _seed_chunk(seed_chunk, seeds, per_seed)
    devices = jax.local_devices()
    if len(devices) > 1 and chunk >= len(devices) and chunk < seeds:
        chunk -= chunk % len(devices)
    timings = {"compile_and_run": 0.0}
    # threefry in its non-partitionable form is ~25% faster on CPU; it is scoped to this call
    with jax.enable_x64(True), jax.threefry_partitionable(False):
        jdt = jnp.dtype(dtype)
        if plain:
            advance, overlaps, test_error = _make_kernels(
                model,
                N,
                jdt,
                trained,
                lr_schedule is not None,
                spectral,
                spectrum.bins if spectral else 1,
            )
        else:
            # the overlaps and the test error of the plain kernels (their advance is not used)
            _, overlaps, test_error = _make_kernels(
                model, N, jdt, trained, False, spectral, spectrum.bins if spectral else 1
            )
        scale = 1.0 + (
            max(float(np.abs(init.Q).max()), float(np.abs(init.T).max()), float(np.abs(v0).max()))
            if init is not None
            else 1.0
        )
        params = {
            "eta": jnp.asarray(hyper.lr, jdt),
            "eta_v": jnp.asarray(hyper.lr_second_layer, jdt),
            "sigma": jnp.asarray(hyper.noise, jdt),
            "kappa": jnp.asarray(hyper.weight_decay, jdt),
            "v_teacher": jnp.asarray(vt, jdt),
            "bound": jnp.asarray(divergence_bound, jdt),
        }
        if lr_schedule is not None:
            params["sched_edges"] = jnp.asarray(lr_schedule.edges, jnp.float64)
            params["sched_values"] = jnp.asarray(lr_schedule.values, jdt)
        if spectral:
            params["sqrt_s"] = jnp.asarray(np.sqrt(spectrum.eigenvalues)[bin_ids], jdt)
            s_np = np.asarray(spectrum.eigenvalues, np.float64)
            p_np = np.asarray(spectrum.weights, np.float64)
            jbins = jnp.asarray(bin_ids)
        else:
            s_np = p_np = np.ones(1)
        if momentum_schedule is not None:
            params["beta_edges"] = jnp.asarray(momentum_schedule.edges, jdt)
            params["beta_values"] = jnp.asarray(momentum_schedule.values, jdt)
        elif momentum:
            params["beta"] = jnp.asarray(hyper.momentum, jdt)
        if gflow:
            gf_params = {k: params[k] for k in ("eta", "eta_v", "sigma", "kappa", "v_teacher")} | {
                "zero": jnp.zeros((), jdt)
            }
            if spectral:
                gf_params |= {
                    "s": jnp.asarray(s_np, jdt),
                    "p": jnp.asarray(p_np, jdt),
                    "bin_ids": jbins,
                }
            advance_gf = _make_gf_kernel(
                model, N, jdt, trained, spectral, spectrum.bins if spectral else 1
            )
        risk_fn = _risk_kernel(system)
        obs_names = system.observable_names
        lr_obs = momentum or adagrad
        show = sys.stderr.isatty() if progress is None else progress
        bar = None
        n_chunks = -(-seeds // chunk)
        if show:
            from tqdm import tqdm

            bar = tqdm(
                total=int(steps[-1]) * n_chunks,
                unit="step",
                unit_scale=True,
                desc=f"simulate N={N} x{seeds}",
                file=sys.stderr,
            )
        chunks: list[dict] = []  # finished chunks
        last_ckpt = time.monotonic()

        def new_record(lo, hi):
            return {
                "lo": lo,
                "hi": hi,
                "Q": [],
                "R": [],
                "v": [],
                "risk": [],
                "test": [],
                "observables": {},
                "done": [],
                "T": None,
                "bins0": None,
                "exact": True,
            }

        def combined(parts, status_):
            parts = [c for c in parts if c["done"]] or parts[:1]
            n = min(len(c["done"]) for c in parts)
            merged = {
                key: [np.concatenate([c[key][j] for c in parts]) for j in range(n)]
                for key in ("Q", "R", "v", "risk", "test")
                if all(len(c[key]) >= n for c in parts)
            }
            merged.setdefault("test", [])
            obs = {}
            for name in parts[0]["observables"]:
                obs[name] = (
                    np.stack(
                        [
                            np.concatenate([c["observables"][name][j] for c in parts])
                            for j in range(n)
                        ],
                        axis=1,
                    )
                    if n
                    else np.zeros((sum(c["hi"] - c["lo"] for c in parts), 0))
                )
            n_seeds = sum(c["hi"] - c["lo"] for c in parts)
            T_all = (
                np.concatenate([c["T"] for c in parts])
                if all(c["T"] is not None for c in parts)
                else None
            )
            b0 = None
            if all(c["bins0"] is not None for c in parts) and spectral:
                b0 = tuple(np.concatenate([c["bins0"][i] for c in parts]) for i in range(3))
            done = parts[0]["done"][:n]
            out = _result(
                merged,
                done,
                N,
                n_seeds,
                seed,
                dtype,
                status_,
                T_all,
                vt,
                test_samples,
                timings,
                time_scale=time_scale,
            )
            import dataclasses

            return dataclasses.replace(
                out,
                observables=obs,
                spectrum=spectrum,
                bins0=b0,
                exact_init=all(c["exact"] for c in parts) and random_init is None,
            )

        def run_chunk(rec, limit):
            """Simulate seeds ``rec["lo"]:rec["hi"]`` over the first ``limit`` save steps."""
            nonlocal last_ckpt
            lo, hi = rec["lo"], rec["hi"]
            n = hi - lo
            W_l, Ws_l = [], []
            for s in range(lo, hi):
                W_, Ws_, exact = weights(s)
                rec["exact"] = rec["exact"] and exact
                W_l.append(W_)
                Ws_l.append(Ws_)
            W = jnp.asarray(np.stack(W_l), jdt)
            Ws = jnp.asarray(np.stack(Ws_l), jdt)
            del W_l, Ws_l
            v = jnp.asarray(np.tile(v0, (n, 1)), jdt)
            div = jnp.full((n,), -1, jnp.int64)
            keys = jax.vmap(lambda s: jax.random.fold_in(jax.random.key(int(seed)), s))(
                jnp.arange(lo, hi)
            )
            if len(devices) > 1 and n % len(devices) == 0:
                # seeds are independent: spread them over the local devices (GPUs, or CPU cores
                # exposed as devices with XLA_FLAGS=--xla_force_host_platform_device_count=n)
                from jax.sharding import Mesh, NamedSharding
                from jax.sharding import PartitionSpec as P

                shard = NamedSharding(Mesh(np.array(devices), ("seeds",)), P("seeds"))
                W, Ws, v, div, keys = jax.device_put((W, Ws, v, div, keys), shard)
            state = None
            if not plain and not gflow:
                state = {"W": W, "v": v, "div": div}
                if momentum:
                    state["uW"] = jnp.zeros_like(W)
                    state["uv"] = jnp.zeros_like(v)
                if adagrad:
                    state["b2"] = jnp.full((n,), hyper.adagrad_b0**2, jdt)
            test_keys = jax.vmap(
                lambda s: jax.random.fold_in(jax.random.key(int(seed) + 1_000_003), s)
            )(jnp.arange(lo, hi))
            current = 0
            Tb0 = None
            status = RunStatus.of(Status.OK)
            try:
                for target in steps[:limit]:
                    if target > current:
                        if plain:
                            W, v, div = advance(
                                W,
                                Ws,
                                v,
                                div,
                                keys,
                                jnp.asarray(current),
                                jnp.asarray(int(target)),
                                params,
                            )
                        elif gflow:
                            W, v, div = advance_gf(
                                W,
                                Ws,
                                v,
                                div,
                                jnp.asarray(current),
                                jnp.asarray(int(target)),
                                gf_params,
                            )
                        else:
                            at = current
                            while at < target:  # one kernel per batch-size segment
                                k = int(np.searchsorted(edge_steps, at, side="right"))
                                stop = int(target)
                                if k < len(edge_steps):
                                    stop = min(stop, int(edge_steps[k]))
                                kernel = _make_opt_kernel(
                                    model,
                                    N,
                                    jdt,
                                    trained,
                                    lr_schedule is not None,
                                    spectral,
                                    batches[k],
                                    momentum,
                                    adagrad,
                                )
                                state = kernel(
                                    state, Ws, keys, jnp.asarray(at), jnp.asarray(stop), params
                                )
                                at = stop
                            W, v, div = state["W"], state["v"], state["div"]
                        if bar is not None:
                            bar.update(int(target) - current)
                        current = int(target)
                    if spectral:
                        Qb, Rb, Tb = (np.asarray(a, np.float64) for a in overlaps(W, Ws, jbins))
                        if rec["bins0"] is None:
                            rec["bins0"] = (Qb, Rb, Tb)
                            Tb0 = Tb
                        Q, R, T = (np.einsum("b,sbij->sij", s_np, X) for X in (Qb, Rb, Tb0))
                        state_ov = (Qb, Rb, Tb0)
                    else:
                        Q, R, T = overlaps(W, Ws)
                    if rec["T"] is None:
                        rec["T"] = np.asarray(T, np.float64)
                    Qn, Rn, vn = (np.asarray(a, np.float64) for a in (Q, R, v))
                    if not spectral:
                        state_ov = (Qn, Rn, rec["T"])
                    div_np = np.asarray(div)
                    if np.any(div_np >= 0):
                        s_bad = int(div_np[div_np >= 0].min())
                        status = RunStatus.diverged_at_step(s_bad, s_bad * time_scale / N)
                        break
                    if (
                        not np.all(np.isfinite(Qn))
                        or np.abs(np.diagonal(Qn, axis1=1, axis2=2)).max()
                        > divergence_bound * scale
                    ):
                        status = RunStatus.diverged_at_step(current, current * time_scale / N)
                        break
                    rec["Q"].append(Qn)
                    rec["R"].append(Rn)
                    rec["v"].append(vn)
                    values = risk_fn(
                        *state_ov,
                        vn,
                        np.asarray(vt, np.float64),
                        np.float64(hyper.noise),
                        s_np,
                        p_np,
                    )
                    rec["risk"].append(np.asarray(values[0]))
                    for name, val in zip(obs_names[1:], values[1:], strict=True):
                        rec["observables"].setdefault(name, []).append(np.asarray(val))
                    if lr_obs:
                        eta_now = hyper.lr
                        if lr_schedule is not None:
                            idx = np.searchsorted(lr_schedule.edges, current / N, side="right")
                            eta_now = float(lr_schedule.values[idx])
                        beta_now = hyper.momentum
                        if momentum_schedule is not None:
                            idx = np.searchsorted(
                                momentum_schedule.edges, current / N, side="right"
                            )
                            beta_now = float(momentum_schedule.values[idx])
                        lr_eff = np.full(n, eta_now / (1.0 - beta_now))
                        if adagrad:
                            lr_eff = lr_eff / np.sqrt(np.asarray(state["b2"], np.float64))
                        rec["observables"].setdefault("lr_effective", []).append(lr_eff)
                    if test_samples:
                        k = jax.vmap(jax.random.fold_in, in_axes=(0, None))(test_keys, current)
                        rec["test"].append(
                            np.asarray(
                                test_error(W, Ws, v, k, params, int(test_samples)), np.float64
                            )
                        )
                    rec["done"].append(current)
                    if checkpoint is not None and time.monotonic() - last_ckpt > checkpoint_every:
                        checkpoint(combined(chunks + [rec], "running"))
                        last_ckpt = time.monotonic()
            except KeyboardInterrupt:
                status = RunStatus.of(Status.INTERRUPTED, current * time_scale / N)
            return status

        status = RunStatus.of(Status.OK)
        limit = len(steps)
        t_start = time.perf_counter()
        try:
            for lo in range(0, seeds, chunk):
                rec = new_record(lo, min(seeds, lo + chunk))
                st = run_chunk(rec, limit)
                chunks.append(rec)
                if st.kind is Status.INTERRUPTED:
                    status = st
                    break
                if st.kind is not Status.OK:
                    # later chunks run up to the save time at which this one stopped
                    limit = min(limit, len(rec["done"]) + 1)
                    if status.kind is Status.OK or st.t < status.t:
                        status = st
        finally:
            if bar is not None:
                bar.close()
        timings["compile_and_run"] = time.perf_counter() - t_start
    return combined(chunks, status)


def _result(
    rec,
    done_steps,
    N,
    seeds,
    seed,
    dtype,
    status,
    T_seeds,
    vt,
    test_samples,
    timings,
    time_scale=1.0,
) -> Simulation:
    n = len(done_steps)

    def stack(key, shape):
        if n == 0:
            return np.zeros((seeds, 0) + shape)
        return np.stack(rec[key], axis=1)

    K = rec["Q"][0].shape[1] if n else 0
    M = rec["R"][0].shape[2] if n else 0
    out = Simulation(
        t=np.asarray(done_steps, np.float64) * time_scale / N
        if time_scale != 1.0
        else np.asarray(done_steps, np.float64) / N,
        steps=np.asarray(done_steps, np.int64),
        Q=stack("Q", (K, K)),
        R=stack("R", (K, M)),
        v=stack("v", (K,)),
        T=T_seeds if T_seeds is not None else np.zeros((seeds, 0, 0)),
        v_teacher=np.asarray(vt, np.float64),
        risk=stack("risk", ()),
        test_error=stack("test", ()) if test_samples else None,
        N=N,
        seeds=seeds,
        seed=int(seed),
        dtype=dtype,
        status=status,
        timings=dict(timings),
    )
    for a in (out.t, out.steps, out.Q, out.R, out.v, out.T, out.risk):
        a.setflags(write=False)
    return out
