"""Timings of the mean-field particle solver (CPU). Run: python benchmarks/meanfield.py
[--particles 1000,10000,100000] [--pairwise 1000,2000]

For examples/meanfield_erf.toml (M = 1 erf, both layers, t1 = 8 in tau, 9 linear saves, rtol 1e-8,
atol 1e-10), per number of particles P: compile time and run time of solve_meanfield (compile
once, block_until_ready), accepted steps, the time of one right-hand side (median of repeats of
the jitted drift), and the risk at t1 (its change with P is the particle-discretisation error of
the quantile representation of the initial law). The quadrature path costs O(P n^M) per
right-hand side (n = 64 Gauss-Hermite nodes); the exact pairwise path O(P^2 M), timed for
comparison at small P.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import hildlimits as hl  # noqa: E402


def rhs_time(system, model, init, method, nodes, repeats=5):
    fam = hl.get_family("meanfield")
    cfg = fam.from_objects(model=model, init=init, lr=1.0, method=method, nodes=nodes)
    dyn = fam.dynamics(system, cfg)
    with jax.enable_x64(True):
        y, args = fam.initial(system, cfg)
        y = {k: jnp.asarray(v) for k, v in y.items()}
        y["r"] = y["r"] + 0.3  # a generic state
        f = jax.jit(lambda y, a: dyn.vector_field(0.0, y, a))
        jax.block_until_ready(f(y, args))
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            jax.block_until_ready(f(y, args))
            ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--particles", default="1000,10000,100000")
    ap.add_argument("--pairwise", default="1000,2000")
    ap.add_argument("--out", default=None, help="also write the numbers as JSON")
    ns = ap.parse_args()
    model = hl.MeanField(M=1)
    system = hl.derive_meanfield(model)
    rows = []
    print(
        f"{'P':>8} {'method':>10} {'compile s':>10} {'run s':>8} {'steps':>6} "
        f"{'rhs ms':>8} {'risk(t1)':>14}"
    )
    for P in [int(x) for x in ns.particles.split(",")]:
        init = hl.MeanFieldInit(T=[[1.0]], v_teacher=[1.0], particles=P)
        tr = hl.solve_meanfield(
            system, model=model, init=init, lr=0.05, t1=8.0, n_save=9, spacing="linear"
        )
        rhs = rhs_time(system, model, init, "quadrature", tr.nodes)
        rows.append(
            {
                "P": P,
                "method": "quadrature",
                "nodes": tr.nodes,
                **tr.timings,
                "steps": tr.num_steps,
                "rhs_seconds": rhs,
                "risk_t1": float(tr.risk[-1]),
            }
        )
        print(
            f"{P:>8} {'quadrature':>10} {tr.timings['compile']:>10.2f} {tr.timings['run']:>8.2f} "
            f"{tr.num_steps:>6} {1e3 * rhs:>8.2f} {tr.risk[-1]:>14.8e}",
            flush=True,
        )
    for P in [int(x) for x in ns.pairwise.split(",") if x]:
        init = hl.MeanFieldInit(T=[[1.0]], v_teacher=[1.0], particles=P)
        rhs_p = rhs_time(system, model, init, "pairwise", None, repeats=3)
        rhs_q = rhs_time(system, model, init, "quadrature", 64)
        rows.append(
            {
                "P": P,
                "method": "pairwise",
                "rhs_seconds": rhs_p,
                "quadrature_rhs_seconds": rhs_q,
                "ratio": rhs_p / rhs_q,
            }
        )
        print(
            f"{P:>8} {'pairwise':>10} rhs {1e3 * rhs_p:.2f} ms vs quadrature "
            f"{1e3 * rhs_q:.2f} ms: ratio {rhs_p / rhs_q:.1f}",
            flush=True,
        )
    if ns.out:
        Path(ns.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
