r"""Finite-size simulator of deep linear networks: online SGD on fresh Gaussian samples.

Sizes from ``N``: ``D = round(input_dim N)`` inputs, ``O = round(output_dim N)`` outputs,
``H_l = round(hidden_dim_l N)`` hidden units. Per seed: a teacher ``M^* = U diag(s) V^T`` with
random orthonormal ``U`` (O x r), ``V`` (D x r); the student in balanced (lambda-balanced),
aligned form on random orthonormal hidden directions ``R_l`` (H_l x r)::

    W_1 = R_1 diag(w_1) V^T,  W_l = R_l diag(w_l) R_{l-1}^T,  W_L = U diag(w_L) R_{L-1}^T

One step: ``x ~ N(0, I_D)``, ``y = M^* x + sigma zeta`` (``zeta ~ N(0, I_O)``), forward
``h_l = W_l h_{l-1}``, ``delta_L = y - h_L``, ``delta_{l-1} = W_l^T delta_l`` (pre-update
weights), ``W_l += (eta/N) delta_l h_{l-1}^T``; time ``t = steps / N`` (``tau = eta steps / N``
under gradient flow). Recorded at the save times, per seed: the risk
``(1/2)|W_L...W_1 - M^*|_F^2`` (exact, from the product matrix), the mode strengths
``u_a^T W_L...W_1 v_a``, the layer strengths, and the bulk norms ``G_a`` (first layer's row
``R_1[:, a]^T W_1`` outside span V) and ``Phi_a`` (last layer's column ``W_L R_{L-1}[:, a]``
outside span U). Inputs are drawn in blocks of steps keyed by the step index (results do not
depend on the save times); ``vmap`` over seeds.
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
from hildlimits._pipeline.runner import RunStatus, Status, check_solve_options, save_times
from hildlimits._pipeline.validators import integer_at_least


def sizes(cfg, N) -> tuple[int, int, tuple[int, ...]]:
    """``(D, O, hidden widths)`` of the simulated network at ``N``; refuses sizes that cannot hold
    the teacher's modes."""
    N = integer_at_least("--N", N, 1)
    D = max(1, round(cfg.input_dim * N))
    O = max(1, round(cfg.output_dim * N))
    H = tuple(max(1, round(h * N)) for h in cfg.hidden_dim)
    r = cfg.rank
    for name, ratio, size in [
        ("model.input_dim", cfg.input_dim, D),
        ("model.output_dim", cfg.output_dim, O),
        *[
            (f"model.hidden_dim (layer {i + 1})", h, n)
            for i, (h, n) in enumerate(zip(cfg.hidden_dim, H, strict=True))
        ],
    ]:
        if size < r:
            raise ConfigError(
                f"model.teacher_singular_values has {r} values, more than the {size} dimensions "
                f"{name} = {ratio:g} gives at --N {N} (at most min(input, output, hidden "
                "sizes) modes)"
            )
    return D, O, H


@dataclass(frozen=True, eq=False)
class DeepLinearSimulation(SeedStatistics):
    """Result of :func:`simulate_deep_linear` (per seed; ``*_mean`` / ``*_std`` over seeds).

    Attributes:
        t: save times; steps: step counts; risk: ``(S, n)``; modes: ``(S, n, r)``;
        layers: ``(S, n, r, L)``; bulk_input, bulk_output: ``(S, n, r)``.
    """

    t: np.ndarray
    steps: np.ndarray
    risk: np.ndarray
    modes: np.ndarray
    layers: np.ndarray
    bulk_input: np.ndarray
    bulk_output: np.ndarray
    N: int
    dims: dict
    seeds: int
    seed: int
    lr: float
    gradient_flow: bool
    dtype: str
    status: RunStatus
    timings: dict = field(default_factory=dict)

    @property
    def modes_mean(self) -> np.ndarray:
        return self.modes.mean(axis=0)

    @property
    def modes_std(self) -> np.ndarray:
        if self.seeds < 2:
            return np.zeros_like(self.modes[0])
        return self.modes.std(axis=0, ddof=1)

    @property
    def modes_sem(self) -> np.ndarray:
        return self.modes_std / math.sqrt(self.seeds)

    def to_dict(self) -> dict:
        return {
            "t": self.t.tolist(),
            "steps": self.steps.tolist(),
            "risk": self.risk_mean.tolist(),
            "risk_std": self.risk_std.tolist(),
            "risk_per_seed": self.risk.tolist(),
            "modes": self.modes_mean.tolist(),
            "modes_std": self.modes_std.tolist(),
            "layers": self.layers.mean(axis=0).tolist(),
            "bulk_input": self.bulk_input.mean(axis=0).tolist(),
            "bulk_output": self.bulk_output.mean(axis=0).tolist(),
            "N": self.N,
            "dims": self.dims,
            "seeds": self.seeds,
            "seed": self.seed,
            "lr": self.lr,
            "dtype": self.dtype,
            "status": str(self.status),
            "time_unit": "tau = lr * steps / N" if self.gradient_flow else "t = steps / N",
        }


def _block(width: int) -> int:
    return int(max(1, min(256, (1 << 22) // (width + 1))))


@functools.lru_cache(maxsize=16)
def _kernels(D: int, O: int, H: tuple, dtype, N: int, scheduled: bool):
    L = len(H) + 1
    B = _block(D + O)

    def advance_one(Ws, U, V, div, key, start, stop, prm):
        s = prm["s"]

        def block(b, carry):
            Z = jax.random.normal(jax.random.fold_in(key, b), (B, D + O), jnp.float32)

            def body(i, carry):
                Ws, div = carry
                z = jax.lax.dynamic_index_in_dim(Z, i - b * B, keepdims=False).astype(dtype)
                x, zeta = z[:D], z[D:]
                hs = [x]
                for W in Ws:
                    hs.append(W @ hs[-1])
                y = U @ (s * (V.T @ x)) + prm["sigma"] * zeta
                delta = y - hs[-1]
                ok = jnp.all(jnp.isfinite(delta)) & (jnp.max(jnp.abs(delta)) < prm["bound"])
                if scheduled:
                    k = jnp.searchsorted(prm["sched_edges"], i / N, side="right")
                    eta = prm["sched_values"][k]
                else:
                    eta = prm["eta"]
                step = eta / N
                new = list(Ws)
                for layer in range(L - 1, -1, -1):
                    W = Ws[layer]
                    new[layer] = W + step * jnp.outer(delta, hs[layer])
                    if layer:
                        delta = W.T @ delta
                div = jnp.where((div < 0) & ~ok, i, div)
                return tuple(new), div

            lo = jnp.maximum(start, b * B)
            hi = jnp.minimum(stop, (b + 1) * B)
            return jax.lax.fori_loop(lo, hi, body, carry)

        return jax.lax.fori_loop(start // B, (stop - 1) // B + 1, block, (Ws, div))

    @jax.jit
    def advance(Ws, U, V, div, keys, start, stop, prm):
        return jax.vmap(advance_one, in_axes=(0, 0, 0, 0, 0, None, None, None))(
            Ws, U, V, div, keys, start, stop, prm
        )

    def measure_one(Ws, U, V, Rs, s):
        M = Ws[0]
        for W in Ws[1:]:
            M = W @ M
        UMV = U.T @ M @ V
        modes = jnp.diagonal(UMV)
        risk = 0.5 * (jnp.sum(M * M) - 2 * jnp.sum(s * modes) + jnp.sum(s * s))
        bases = [V, *Rs, U]
        layers = jnp.stack(
            [jnp.diagonal(bases[l + 1].T @ Ws[l] @ bases[l]) for l in range(L)], axis=-1
        )
        rows = Rs[0].T @ Ws[0]  # (r, D): the modes' first-layer rows
        G = jnp.sum(rows**2, axis=1) - jnp.sum((rows @ V) ** 2, axis=1)
        cols = Ws[-1] @ Rs[-1]  # (O, r): the modes' last-layer columns
        Phi = jnp.sum(cols**2, axis=0) - jnp.sum((U.T @ cols) ** 2, axis=0)
        return risk, modes, layers, G, Phi

    measure = jax.jit(jax.vmap(measure_one, in_axes=(0, 0, 0, 0, None)))
    return advance, measure


def simulate_deep_linear(
    cfg,
    *,
    N: int,
    seeds: int = 1,
    seed: int = 0,
    t1: float,
    n_save: int = 20,
    spacing: str = "linear",
    t_first: float | None = None,
    dtype: str | None = None,
    divergence_bound: float = 1e8,
    schedule=None,
) -> DeepLinearSimulation:
    r"""Train ``seeds`` deep linear networks of the config ``cfg`` at size ``N`` (module
    docstring).

    Args:
        cfg: a ``deep_linear`` config. N: the size (inputs ``input_dim N``, ...; time
            ``t = steps / N``). seeds, seed: independent runs and base seed.
        t1, n_save, spacing, t_first: save times (``t``, or ``tau = lr t`` under gradient
            flow), rounded to whole steps.
        dtype: ``"float64"`` (default on CPU) or ``"float32"``.
        divergence_bound: ``max |y - yhat|`` above this, or non-finite, ends the run.
        schedule: a :class:`~hildlimits.Schedule` of the learning rate over ``t``.

    Returns:
        :class:`DeepLinearSimulation`.
    """
    from hildlimits._families.deep_linear.model import layer_strengths_numpy

    D, O, H = sizes(cfg, N)
    seeds = integer_at_least("seeds", seeds, 1)
    seed = integer_at_least("seed", seed, 0)
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
    if schedule is not None and cfg.gradient_flow:
        raise ConfigError(
            "a learning-rate schedule needs online SGD (training.gradient_flow = false)"
        )
    if dtype is None:
        dtype = "float64" if jax.default_backend() == "cpu" else "float32"
    if dtype not in ("float32", "float64"):
        raise ConfigError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    eta = cfg.lr
    unit = eta if cfg.gradient_flow else 1.0  # time per N steps
    ts = save_times(float(t1), int(n_save), spacing, t_first)
    steps = np.unique(np.round(ts * N / unit).astype(np.int64))
    r, L = cfg.rank, cfg.depth
    w = layer_strengths_numpy(cfg.initial_modes, cfg.balance, L)  # (r, L)
    Ws_l, U_l, V_l, R_l = [], [], [], []
    dims = [D, *H, O]
    for k in range(seeds):
        rng = np.random.default_rng([seed, k])

        def frame(n, rng=rng):
            q, _ = np.linalg.qr(rng.standard_normal((n, r)))
            return q

        V = frame(D)
        Rs = [frame(h) for h in H]
        U = frame(O)
        bases = [V, *Rs, U]
        Ws_l.append([bases[l + 1] @ np.diag(w[:, l]) @ bases[l].T for l in range(L)])
        U_l.append(U)
        V_l.append(V)
        R_l.append(Rs)
    rec = {"risk": [], "modes": [], "layers": [], "G": [], "Phi": []}
    done, status = [], RunStatus.of(Status.OK)
    t_start = time.perf_counter()
    with jax.enable_x64(True), jax.threefry_partitionable(False):
        jdt = jnp.dtype(dtype)
        sched = schedule is not None
        advance, measure = _kernels(D, O, H, jdt, int(N), sched)
        Ws = tuple(jnp.asarray(np.stack([ws[l] for ws in Ws_l]), jdt) for l in range(L))
        U = jnp.asarray(np.stack(U_l), jdt)
        V = jnp.asarray(np.stack(V_l), jdt)
        Rs = tuple(jnp.asarray(np.stack([rs[l] for rs in R_l]), jdt) for l in range(L - 1))
        div = jnp.full((seeds,), -1, jnp.int64)
        keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(seed), i))(jnp.arange(seeds))
        prm = {
            "s": jnp.asarray(cfg.teacher, jdt),
            "eta": jnp.asarray(eta, jdt),
            "sigma": jnp.asarray(cfg.noise, jdt),
            "bound": jnp.asarray(divergence_bound, jdt),
        }
        if sched:
            prm["sched_edges"] = jnp.asarray(schedule.edges, jdt)
            prm["sched_values"] = jnp.asarray(schedule.values, jdt)
        s = jnp.asarray(cfg.teacher, jdt)
        current = 0
        for target in steps:
            if target > current:
                Ws, div = advance(
                    Ws, U, V, div, keys, jnp.asarray(current), jnp.asarray(int(target)), prm
                )
                current = int(target)
            out = [np.asarray(a, np.float64) for a in measure(Ws, U, V, Rs, s)]
            dn = np.asarray(div)
            if np.any(dn >= 0) or not all(np.all(np.isfinite(a)) for a in out):
                s_bad = int(dn[dn >= 0].min()) if np.any(dn >= 0) else current
                status = RunStatus.diverged_at_step(s_bad, s_bad * unit / N)
                break
            for key, a in zip(("risk", "modes", "layers", "G", "Phi"), out, strict=True):
                rec[key].append(a)
            done.append(current)
    elapsed = time.perf_counter() - t_start

    def stack(key, shape):
        return np.stack(rec[key], axis=1) if done else np.zeros((seeds, 0, *shape))

    return DeepLinearSimulation(
        t=np.asarray(done, np.float64) * unit / N,
        steps=np.asarray(done, np.int64),
        risk=stack("risk", ()),
        modes=stack("modes", (r,)),
        layers=stack("layers", (r, L)),
        bulk_input=stack("G", (r,)),
        bulk_output=stack("Phi", (r,)),
        N=int(N),
        dims={"input": D, "output": O, "hidden": list(H), "layers": dims},
        seeds=seeds,
        seed=seed,
        lr=eta,
        gradient_flow=cfg.gradient_flow,
        dtype=dtype,
        status=status,
        timings={"compile_and_run": elapsed},
    )
