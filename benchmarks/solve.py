"""Timings of the core pipeline (CPU). Run: python benchmarks/solve.py [--Ks 2,4,8,16]

Reports separately: derivation time (SymPy, cache bypassed), codegen + JIT compile time (first
solve minus warm solve), and warm solve time (median of repeats, block_until_ready inside solve),
for erf committees with K = M, t1 = 1000, 200 log-spaced saves, default tolerances.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)

import hildlimits as hl  # noqa: E402


def problem(K: int, seed: int = 0):
    model = hl.Committee(K=K, M=K, activation="erf")
    rng = np.random.default_rng(seed)
    N = 10_000
    W = rng.standard_normal((K, N)) * 0.5
    Ws = rng.standard_normal((K, N))
    Ws = np.linalg.qr(Ws.T)[0].T * np.sqrt(N)  # T = I exactly
    init = hl.Overlaps.for_model(model, Q=W @ W.T / N, R=W @ Ws.T / N, T=np.eye(K))
    return model, init


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--Ks", default="2,4,8,16")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--solver", default="tsit5")
    ns = p.parse_args()
    Ks = [int(k) for k in ns.Ks.split(",")]

    t0 = time.perf_counter()
    system = hl.derive(hl.Committee(K=2, M=2, activation="erf"), cache=False)
    t_derive = time.perf_counter() - t0
    t0 = time.perf_counter()
    _ = system.source
    t_codegen = time.perf_counter() - t0
    print(
        f"derivation (SymPy, no cache): {t_derive:.2f} s   code generation: {t_codegen * 1e3:.0f} ms"
    )
    print(f"{'K=M':>4} {'compile [s]':>12} {'warm [s]':>10} {'steps':>7} {'risk(t1)':>12}")
    for K in Ks:
        model, init = problem(K)
        hyper = hl.Hyperparams(lr=0.5)
        kw = dict(init=init, hyper=hyper, t1=1000.0, n_save=200, spacing="log", solver=ns.solver)
        t0 = time.perf_counter()
        traj = hl.solve(system, **kw)
        first = time.perf_counter() - t0
        warm = []
        for _ in range(ns.repeats if K <= 8 else max(1, ns.repeats // 2)):
            t0 = time.perf_counter()
            traj = hl.solve(system, **kw)
            warm.append(time.perf_counter() - t0)
        w = statistics.median(warm)
        print(
            f"{K:>4} {first - w:>12.2f} {w:>10.4f} {traj.num_steps:>7} {traj.risk[-1]:>12.4e}",
            flush=True,
        )


if __name__ == "__main__":
    main()
