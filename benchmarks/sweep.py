"""Sweep throughput: a 1024-point learning-rate sweep (lr = 0.1 ... 3.0) of the K = M = 2 erf
committee to t1 = 1000 (default tolerances rtol = 1e-10, atol = 1e-12; 100 log-spaced saves),
compile and warm times reported separately, for 1, 2 and 4 (forced) host devices and both ways of
spreading batches over devices (``batches``: whole batches per device in parallel threads;
``mesh``: each batch split over a ``jax.sharding`` mesh).

The reference point is the issue's figure for looping a C++ Euler integrator (dt = 0.01) over the
same 1024 runs: about 140 s on this machine.

Run: python benchmarks/sweep.py                  (runs itself once per setting in subprocesses)
     python benchmarks/sweep.py --devices 2 --child --spread batches   (one measurement)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

CPP_REFERENCE_S = 140.0


def child(points: int, batch: int | None, spread: str) -> dict:
    import jax

    jax.config.update("jax_enable_x64", True)
    import numpy as np

    import hildlimits as hl

    model = hl.Committee(K=2, M=2, activation="erf")
    init = hl.Overlaps.for_model(
        model, Q=np.eye(2) * 0.2, R=[[0.01, 0.0], [0.0, 0.005]], T=np.eye(2)
    )
    system = hl.derive(model)
    params = {"training.lr": list(np.linspace(0.1, 3.0, points))}
    kw = dict(
        init=init,
        hyper=hl.Hyperparams(lr=0.5),
        params=params,
        t1=1000.0,
        n_save=100,
        batch_size=batch,
        spread=spread,
        progress=False,
    )
    t0 = time.perf_counter()
    hl.sweep(system, **kw)
    first = time.perf_counter() - t0
    warm = []
    for _ in range(2):
        t0 = time.perf_counter()
        res = hl.sweep(system, **kw)
        warm.append(time.perf_counter() - t0)
    return {
        "devices": len(jax.devices()),
        "points": points,
        "batch": batch or hl.default_batch_size(),
        "spread": spread,
        "compile_s": first - min(warm),
        "warm_s": min(warm),
        "ok": sum(s == "ok" for s in res.status),
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--devices", type=int, nargs="*", default=[1, 2, 4])
    p.add_argument("--points", type=int, default=1024)
    p.add_argument("--batch", type=int, default=None, help="default: the library's default")
    p.add_argument("--spread", nargs="*", default=["batches", "mesh"])
    p.add_argument("--child", action="store_true")
    ns = p.parse_args()
    if ns.child:
        print(json.dumps(child(ns.points, ns.batch, ns.spread[0])))
        return
    print(
        f"{'devices':>8} {'spread':>8} {'batch':>6} {'compile [s]':>12} {'warm [s]':>9} "
        f"{'points/s':>9} {'vs C++ loop':>12}"
    )
    for spread in ns.spread:
        for d in ns.devices:
            if d == 1 and spread == "mesh":
                continue
            env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={d}")
            cmd = [sys.executable, __file__, "--child", "--points", str(ns.points)]
            cmd += ["--spread", spread] + (["--batch", str(ns.batch)] if ns.batch else [])
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(
                f"{r['devices']:>8} {spread:>8} {r['batch']:>6} {r['compile_s']:>12.2f} "
                f"{r['warm_s']:>9.2f} {r['points'] / r['warm_s']:>9.1f} "
                f"{CPP_REFERENCE_S * r['points'] / 1024 / r['warm_s']:>11.1f}x   ({r['ok']} ok)",
                flush=True,
            )


if __name__ == "__main__":
    main()
