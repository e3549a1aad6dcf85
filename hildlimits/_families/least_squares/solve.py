r"""Solve the least-squares theory on the shared runner, plus what the closed form gives for free:
the early-stopping time, the ``t -> oo`` values, the double-descent curve over ``alpha`` and a
quadrature-error estimate."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np

from hildlimits._errors import ConfigError
from hildlimits._families.least_squares import theory as th
from hildlimits._pipeline import runner as _runner

TIME_UNIT_GD = "t = lr * steps (full-batch GD)"
TIME_UNIT_GF = "t = time of the gradient flow dw/dt = -N grad L (eta * steps as eta -> 0)"
LIMIT_NOTE = (
    "N -> oo limit at fixed alpha = n/N (Marchenko-Pastur law); finite N adds O(1/N) to the "
    "mean and O(1/sqrt(N)) fluctuations per run (docs/least-squares.md)"
)


def _ro(x):
    x = np.array(x, np.float64)
    x.setflags(write=False)
    return x


@dataclass(frozen=True, eq=False)
class LeastSquaresTrajectory:
    """Theory at the save times (read-only arrays) and the closed-form extras.

    Attributes:
        t: save times (``lr * steps`` for GD); risk, train_loss, Q, R: ``(n,)``.
        status, t_stop, num_steps: the runner's outcome.
        method: ``"full_batch"`` or ``"gradient_flow"``; lr: the GD step (``None`` for flow).
        early_stopping, converged, double_descent, quadrature: dicts (``None`` with a schedule).
    """

    t: np.ndarray
    risk: np.ndarray
    train_loss: np.ndarray
    Q: np.ndarray
    R: np.ndarray
    status: object
    t_stop: float
    num_steps: int
    method: str
    lr: float | None
    samples: float
    nodes: int
    early_stopping: dict | None = None
    converged: dict | None = None
    double_descent: dict | None = None
    quadrature: dict | None = None
    timings: dict = field(default_factory=dict)

    @property
    def diverged(self) -> bool:
        return self.status.diverged

    @property
    def steps(self) -> np.ndarray | None:
        return None if self.lr is None else self.t / self.lr

    def to_dict(self) -> dict:
        conv = self.converged or {}
        out = {
            "t": self.t.tolist(),
            "risk": self.risk.tolist(),
            "train_loss": self.train_loss.tolist(),
            "Q": self.Q.tolist(),
            "R": self.R.tolist(),
            "status": self.status,
            "t_stop": self.t_stop,
            "num_steps": self.num_steps,
            "method": self.method,
            "time_unit": TIME_UNIT_GD if self.method == "full_batch" else TIME_UNIT_GF,
            "samples": self.samples,
            "quadrature_nodes": self.nodes,
            "early_stopping": self.early_stopping,
            "risk_converged": _finite_or_none(conv.get("risk")),
            "train_loss_converged": _finite_or_none(conv.get("train_loss")),
            "double_descent": self.double_descent,
            "quadrature": self.quadrature,
            "limit": LIMIT_NOTE,
        }
        if self.lr is not None:
            out["steps"] = self.steps.tolist()
        return out


def _finite_or_none(x):
    return None if x is None or not math.isfinite(x) else float(x)


# ----------------------------------------------------------------------------- evaluation


def args_of(cfg, nodes: int | None = None, alpha: float | None = None) -> dict:
    """Arguments of the vector field and observables (float64 NumPy)."""
    f64 = np.float64
    alpha = cfg.samples if alpha is None else alpha
    n = cfg.nodes if nodes is None else nodes
    s, w = th.mp_nodes(alpha, n, t1=float(cfg.solve["t1"]))
    return {
        "s": s,
        "w": w,
        "eta": f64(cfg.lr if cfg.lr is not None else 1.0),
        "gd": f64(0.0 if cfg.gradient_flow else 1.0),
        "lam": f64(cfg.weight_decay),
        "sigma": f64(cfg.noise),
        "alpha": f64(alpha),
        "T": f64(cfg.T),
        "Q": f64(cfg.Q),
        "R": f64(cfg.R),
    }


def evaluate(system, cfg, ts, *, nodes: int | None = None, alpha: float | None = None) -> dict:
    """The theory at times ``ts`` for the constant learning rate of ``cfg`` from the exact
    state (no ODE solve): ``risk``, ``train_loss``, ``Q``, ``R`` arrays (NumPy, float64)."""
    ts = np.atleast_1d(np.asarray(ts, np.float64))
    args = args_of(cfg, nodes, alpha)
    gd = not cfg.gradient_flow
    chunk = 1 << max(8, int(4e6 // len(args["s"])).bit_length() - 1)
    parts = []
    with jax.enable_x64(True):
        f = _observables_jit(system)
        for i in range(0, len(ts), chunk):
            part = ts[i : i + chunk]
            size = max(256, 1 << (len(part) - 1).bit_length())  # few compiled shapes
            padded = np.concatenate([part, np.full(size - len(part), part[-1])])
            y = th.closed_state(args, padded, gd)
            out = jax.device_get(f(y, args))
            parts.append({k: np.asarray(v)[: len(part)] for k, v in out.items()})
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _observables_jit(system):
    key = ("observables",)
    if key not in system._jax:
        mod = system.module
        system._jax[key] = jax.jit(lambda y, a: th.observables(mod, y, a, jnp))
    return system._jax[key]


# ----------------------------------------------------------------------------- solve


def solve_least_squares(system, cfg, *, ts=None, schedule=None, extras=True, **over):
    """Integrate the per-mode ODE of ``cfg`` on the shared runner (see :mod:`.theory`).

    ``ts``: explicit save times; otherwise ``cfg``'s ``t1``, ``n_save``, ``spacing``,
    ``t_first`` (overridable by keyword), rounded to whole steps for full-batch GD.
    ``schedule``: a :class:`~hildlimits.Schedule` of the GD learning rate over ``t``.
    ``extras``: also compute the early-stopping time, the ``t -> oo`` values, the double-descent
    curve and the quadrature-error estimate (constant learning rate only).
    """
    from hildlimits._families.least_squares import FAMILY

    so = dict(cfg.solve) | over
    gd = not cfg.gradient_flow
    if schedule is not None and not gd:
        raise ConfigError(
            "a learning-rate schedule needs training.full_batch = true (with "
            "training.gradient_flow = true time is in units of eta t: no learning rate)"
        )
    runner_keys = ("rtol", "atol", "solver", "max_steps", "divergence_bound", "steady_state")
    given = ts is not None
    ts = _runner.resolve_save_times(
        ts=ts,
        t1=so["t1"],
        n_save=so["n_save"],
        spacing=so["spacing"],
        t_first=so["t_first"],
        who="solve",
        **{k: so.get(k) for k in runner_keys},
    )
    if gd and not given and schedule is None:
        ts = snapped_times(cfg, ts)  # the GD iterates: t = k lr
    dyn = FAMILY.dynamics(system, cfg, schedule=schedule is not None)
    y0, args = FAMILY.initial(system, cfg, t_end=float(ts[-1]))
    if schedule is not None:
        args["_sched_edges"] = np.asarray(schedule.edges, np.float64)
        args["_sched_values"] = np.asarray(schedule.values, np.float64)
    t0 = time.perf_counter()
    with jax.enable_x64(True):
        run = _runner.compiled_dynamics(
            dyn, solver=so["solver"], max_steps=so["max_steps"], steady=False
        )
        # save times padded (repeating the last) to 256 or a power of 2: one compiled solve
        # serves runs whose number of save times differs (simulation step grids)
        n_ts = len(ts)
        size = max(256, 1 << (n_ts - 1).bit_length())
        padded = np.concatenate([ts, np.full(size - n_ts, ts[-1])])
        out = _runner.run_once(run, y0, args, padded, rtol=so["rtol"], atol=so["atol"])
        obs_all = jax.device_get(_observables_jit(system)(out["ys"], args))  # fixed shape
        out = dict(out)
        keep = np.concatenate([np.arange(n_ts), [len(padded)]])
        for k in ("ts", "risk"):
            out[k] = np.asarray(out[k])[keep]
        out["ys"] = {k: np.asarray(v)[keep] for k, v in out["ys"].items()}
        status = _runner.check_stop(out, float(ts[-1]), so["max_steps"])
        rows = _runner.kept_rows(out, status)
        obs = {k: np.asarray(v)[keep][rows] for k, v in obs_all.items()}
    t_run = time.perf_counter() - t0
    tt = np.asarray(out["ts"])[rows]
    extra = {}
    if extras and schedule is None:
        t0 = time.perf_counter()
        extra = _extras(system, cfg, tt, np.asarray(obs["risk"]), status)
        extra["timings"] = {"run": t_run, "extras": time.perf_counter() - t0}
    return LeastSquaresTrajectory(
        t=_ro(tt),
        risk=_ro(obs["risk"]),
        train_loss=_ro(obs["train_loss"]),
        Q=_ro(obs["Q"]),
        R=_ro(obs["R"]),
        status=status,
        t_stop=float(np.asarray(out["ts"])[-1]),
        num_steps=int(out["num_steps"]),
        method="full_batch" if gd else "gradient_flow",
        lr=cfg.lr if gd else None,
        samples=cfg.samples,
        nodes=cfg.nodes,
        early_stopping=extra.get("early_stopping"),
        converged=extra.get("converged"),
        double_descent=extra.get("double_descent"),
        quadrature=extra.get("quadrature"),
        timings=extra.get("timings", {"run": t_run}),
    )


def snapped_times(cfg, ts: np.ndarray) -> np.ndarray:
    """Save times rounded to whole GD steps ``t = k lr`` (duplicates dropped)."""
    k = np.unique(np.round(np.asarray(ts) / cfg.lr).astype(np.int64))
    return k * cfg.lr


# ----------------------------------------------------------------------------- extras


def stable(cfg, alpha: float | None = None) -> bool:
    """GD converges: ``lr (s_max + lambda) < 2`` with ``s_max = (1 + 1/sqrt(alpha))^2``."""
    if cfg.gradient_flow:
        return True
    alpha = cfg.samples if alpha is None else alpha
    return cfg.lr * ((1 + 1 / math.sqrt(alpha)) ** 2 + cfg.weight_decay) < 2


def _extras(system, cfg, ts, risk, status) -> dict:
    conv = th.converged(
        system,
        alpha=cfg.samples,
        lam=cfg.weight_decay,
        sigma=cfg.noise,
        T=cfg.T,
        Q=cfg.Q,
        R=cfg.R,
    )
    if not stable(cfg):
        conv = {"risk": math.inf, "train_loss": math.inf}
    conv["stable"] = stable(cfg)
    out = {"converged": conv}
    if len(ts) >= 1 and status.ok:
        out["early_stopping"] = early_stopping(system, cfg, ts, risk)
    out["double_descent"] = double_descent(system, cfg, float(ts[-1]))
    half = max(8, cfg.nodes // 2)
    coarse = evaluate(system, cfg, ts, nodes=half)["risk"]
    diff = np.abs(coarse - risk)
    out["quadrature"] = {
        "rule": "Gauss-Legendre in u on the MP bulk, s = (1-sqrt(g))^2 + 4 sqrt(g) sin^2(eps/2), "
        "eps = delta sinh(A u) (theory.mp_nodes), + the atom at s = 0",
        "nodes": cfg.nodes,
        "error_estimate": float(diff.max()),
        "relative_error_estimate": float(np.max(diff / np.maximum(np.abs(risk), 1e-300))),
        "estimate": f"max over save times of |risk(nodes) - risk(nodes/2 = {half})|: an upper "
        "bound in practice (the rule converges exponentially in the number of nodes)",
    }
    return out


def early_stopping(system, cfg, ts, risk) -> dict:
    """The time minimising the risk on ``[0, t1]``: the best save time, refined between its
    neighbours on every GD step (or by a bounded scalar minimisation for gradient flow)."""
    i = int(np.argmin(risk))
    lo, hi = float(ts[max(i - 1, 0)]), float(ts[min(i + 1, len(ts) - 1)])
    gd = not cfg.gradient_flow
    if gd:
        k_lo, k_hi = int(round(lo / cfg.lr)), int(round(hi / cfg.lr))
        best_k, best = int(round(ts[i] / cfg.lr)), float(risk[i])
        ks = np.arange(k_lo, k_hi + 1)
        while len(ks) > 1:
            stride = max(1, len(ks) // 20000)
            grid = ks[::stride]
            r = evaluate(system, cfg, grid * cfg.lr)["risk"]
            j = int(np.argmin(r))
            if r[j] <= best:
                best_k, best = int(grid[j]), float(r[j])
            if stride == 1:
                break
            ks = np.arange(max(k_lo, best_k - stride), min(k_hi, best_k + stride) + 1)
        t_best = best_k * cfg.lr
        result = {"t": t_best, "step": best_k}
    else:
        from scipy.optimize import minimize_scalar

        grid = np.linspace(lo, hi, 201)
        r = evaluate(system, cfg, grid)["risk"]
        j = int(np.argmin(r))
        a, b = grid[max(j - 1, 0)], grid[min(j + 1, len(grid) - 1)]
        t_best, best = float(grid[j]), float(r[j])
        if b > a:
            res = minimize_scalar(
                lambda t: float(evaluate(system, cfg, [t])["risk"][0]),
                bounds=(a, b),
                method="bounded",
                options={"xatol": 1e-10 * max(1.0, b)},
            )
            if res.fun <= best:
                t_best, best = float(res.x), float(res.fun)
        result = {"t": t_best}
    ev = evaluate(system, cfg, [result["t"]])
    t1 = float(ts[-1])
    step = cfg.lr if gd else 1e-9 * max(t1, 1.0)
    result |= {
        "risk": float(ev["risk"][0]),
        "train_loss": float(ev["train_loss"][0]),
        "at_end": bool(result["t"] >= t1 - step / 2),
        "at_start": bool(result["t"] <= step / 2),
        "saved_t": float(ts[i]),
        "saved_risk": float(risk[i]),
        "note": "argmin of the risk over [0, t1]; at_end = true means the risk still decreases "
        "at t1 (no early stopping within the run)",
    }
    return result


DEFAULT_ALPHAS = tuple(
    float(a)
    for a in np.concatenate(
        [np.geomspace(0.1, 1.0, 41)[:-1], [1.0], np.geomspace(1.0, 10.0, 41)[1:]]
    )
)


def double_descent(system, cfg, t1: float) -> dict:
    """Risk and training loss over ``alpha`` (``cfg``'s ``double_descent_samples`` or 0.1..10,
    81 points with ``alpha = 1``) at ``t1`` and at ``t -> oo``; ``None`` where GD diverges or
    the limit is infinite."""
    alphas = cfg.solve.get("double_descent_samples") or DEFAULT_ALPHAS
    alphas = [float(a) for a in alphas]
    gd = not cfg.gradient_flow
    risk_t1, train_t1, risk_inf, train_inf = [], [], [], []
    n = min(cfg.nodes, 2048)
    S, W = zip(*[th.mp_nodes(a, n, t1=float(cfg.solve["t1"])) for a in alphas], strict=True)
    args = args_of(cfg, n) | {"s": np.stack(S), "w": np.stack(W)}
    args["alpha"] = np.asarray(alphas)[:, None]
    for k in ("eta", "lam", "sigma", "T", "Q", "R"):
        args[k] = np.full((len(alphas), 1), args[k])
    dM, dphi = th.rates(args, gd, np)
    y = {"M": t1 * dM, "phi": t1 * dphi}
    with jax.enable_x64(True):
        obs = jax.device_get(_observables_jit(system)(y, args))
    for i, a in enumerate(alphas):
        ok = stable(cfg, a)
        risk_t1.append(_finite_or_none(float(obs["risk"][i])) if ok else None)
        train_t1.append(_finite_or_none(float(obs["train_loss"][i])) if ok else None)
        c = th.converged(
            system, alpha=a, lam=cfg.weight_decay, sigma=cfg.noise, T=cfg.T, Q=cfg.Q, R=cfg.R
        )
        risk_inf.append(_finite_or_none(c["risk"]) if ok else None)
        train_inf.append(_finite_or_none(c["train_loss"]) if ok else None)

    def peak(vals):
        v = np.array([np.nan if x is None else x for x in vals])
        inf_at = [alphas[i] for i, x in enumerate(vals) if x is None and stable(cfg, alphas[i])]
        if inf_at:
            return inf_at[0]
        return float(alphas[int(np.nanargmax(v))]) if np.isfinite(v).any() else None

    return {
        "samples": alphas,
        "t1": t1,
        "risk_t1": risk_t1,
        "train_loss_t1": train_t1,
        "risk_converged": risk_inf,
        "train_loss_converged": train_inf,
        "peak_samples_t1": peak(risk_t1),
        "peak_samples_converged": peak(risk_inf),
        "quadrature_nodes": n,
        "note": "risk over alpha = n/N at t1 and at t -> oo (closed form); null: infinite "
        "(alpha = 1 without ridge) or GD unstable (lr (s_max + lambda) >= 2)",
    }
