"""Warm solve time of ReLU (closed forms + the numerical Price line integral for the four-point
terms) against erf at the same K.
Run: python benchmarks/activations.py [--Ks 2,8] [--tanh] [--relu-tanh] [--per-rhs]

Same problem for every activation: K = M, random initial overlaps (student weights of norm 0.5,
orthonormal teacher), fixed second layer, lr = 0.2, output noise sigma = 0.1, t1 = 1000,
200 log-spaced saves, default tolerances. (With sigma = 0 and a realisable ReLU teacher the
student recovers the teacher exactly; near that point the ReLU closed forms are not Lipschitz
(sqrt(1 - rho^2)) and the adaptive steps shrink -- see docs/accuracy.md -- so the benchmark uses noise.)
``--tanh`` adds tanh at K = 2 twice: by default (the Kolmogorov scale mixture of erf, closed forms
at the mixture nodes) and as ``tanh@gh`` with the mixture turned off (``mixture_nodes = 0``:
tensor Gauss-Hermite quadrature, 20^4 nodes for the four-point terms); ``--relu-tanh`` adds a ReLU
student with a tanh teacher at K = 2 (mixture closed forms; for H H tanh tanh a Price line
integral at each mixture node). ``--per-rhs`` adds the cost of one right-hand side (200 chained
evaluations in one jitted loop) for erf and relu, and for relu with every Price line integral
replaced by 0 (the closed forms alone): that, times the ReLU solve's steps, is a floor for the
warm ReLU solve that no faster four-point method can go below (``floor / erf``).
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)

import hildlimits as hl  # noqa: E402


def problem(K: int, activation: str, seed: int = 0):
    activation, _, path = activation.partition("@")
    student, _, teacher = activation.partition("/")
    model = hl.Committee(
        K=K,
        M=K,
        activation=student,
        teacher_activation=teacher or None,
        mixture_nodes=0 if path == "gh" else None,
    )
    rng = np.random.default_rng(seed)
    N = 10_000
    W = rng.standard_normal((K, N)) * 0.5
    Ws = np.linalg.qr(rng.standard_normal((K, N)).T)[0].T * np.sqrt(N)
    init = hl.Overlaps.for_model(model, Q=W @ W.T / N, R=W @ Ws.T / N, T=np.eye(K))
    return model, init


def time_solve(K: int, activation: str, repeats: int) -> dict:
    model, init = problem(K, activation)
    t0 = time.perf_counter()
    system = hl.derive(model)
    t_derive = time.perf_counter() - t0
    kw = dict(init=init, hyper=hl.Hyperparams(lr=0.2, noise=0.1), t1=1000.0, n_save=200)
    t0 = time.perf_counter()
    traj = hl.solve(system, **kw)
    first = time.perf_counter() - t0
    warm = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        traj = hl.solve(system, **kw)
        warm.append(time.perf_counter() - t0)
    w = statistics.median(warm)
    return {
        "derive": t_derive,
        "compile": first - w,
        "warm": w,
        "steps": traj.num_steps,
        "risk": float(traj.risk[-1]),
        "status": traj.status,
    }


def per_rhs(K: int, activation: str, drop_price: bool = False, n: int = 200) -> float:
    """Seconds per evaluation of the generated right-hand side (a fresh copy of the module; with
    ``drop_price`` every Price line integral returns 0)."""
    import jax.numpy as jnp

    from hildlimits.engine import load_module

    model, init = problem(K, activation)
    system = hl.derive(model)
    module = load_module(system)  # a new module object each call: patching it stays local
    if drop_price:
        for name in [k for k in vars(module) if k.startswith("price")]:
            setattr(module, name, lambda *a, **kw: 0.0 * a[1])
    field = module.vector_field
    fam = hl.get_family("committee")
    cfg = fam.from_objects(system=system, init=init, hyper=hl.Hyperparams(lr=0.2, noise=0.1))
    y0, args = fam.initial(system, cfg)
    y0, args = jax.tree.map(jnp.asarray, y0), jax.tree.map(jnp.asarray, args)

    @jax.jit
    def loop(y):
        def body(i, y):  # chained, so nothing can be hoisted out of the loop
            return jax.tree.map(lambda a, b: a + 1e-9 * b, y, field(0.0, y, args))

        return jax.lax.fori_loop(0, n, body, y)

    jax.block_until_ready(loop(y0))
    best = np.inf
    for _ in range(5):
        t0 = time.perf_counter()
        jax.block_until_ready(loop(y0))
        best = min(best, time.perf_counter() - t0)
    return best / n


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--Ks", default="2,8")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--tanh", action="store_true")
    p.add_argument("--relu-tanh", action="store_true", help="ReLU student, tanh teacher")
    p.add_argument("--per-rhs", action="store_true", help="cost per right-hand side, and a floor")
    ns = p.parse_args()
    print(
        f"{'K=M':>4} {'activation':>10} {'derive [s]':>10} {'compile [s]':>11} {'warm [s]':>9} "
        f"{'steps':>6} {'risk(t1)':>10} {'warm / erf':>10}"
    )
    for K in [int(k) for k in ns.Ks.split(",")]:
        acts = ["erf", "relu"] + (["tanh", "tanh@gh"] if ns.tanh and K <= 2 else [])
        acts += ["relu/tanh"] if ns.relu_tanh and K <= 2 else []
        base, warm = None, {}
        for act in acts:
            r = time_solve(K, act, ns.repeats)
            base = r["warm"] if act == "erf" else base
            warm[act] = r["warm"]
            print(
                f"{K:>4} {act:>10} {r['derive']:>10.2f} {r['compile']:>11.2f} {r['warm']:>9.3f} "
                f"{r['steps']:>6} {r['risk']:>10.3e} {r['warm'] / base:>10.1f}  {r['status']}",
                flush=True,
            )
        if ns.per_rhs:
            erf, relu = per_rhs(K, "erf"), per_rhs(K, "relu")
            closed = per_rhs(K, "relu", drop_price=True)
            floor = warm["relu"] * closed / relu
            print(
                f"     per right-hand side [ms]: erf {erf * 1e3:.4f}, relu {relu * 1e3:.4f} "
                f"({relu / erf:.1f}x), relu closed forms alone {closed * 1e3:.4f} "
                f"({closed / erf:.1f}x); floor {floor:.3f} s = {floor / base:.1f}x erf",
                flush=True,
            )


if __name__ == "__main__":
    main()
