"""Sweep throughput: a 1024-point learning-rate sweep of the K = M = 2 erf committee to t1 = 1000
(default tolerances, 100 log-spaced saves), compile and warm times reported separately, and the
scaling with the number of (forced) host devices.

Run: python benchmarks/sweep.py            (runs itself once per device count in subprocesses)
     python benchmarks/sweep.py --devices 4 --child   (one measurement)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def child(points: int, batch: int) -> dict:
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
        progress=False,
    )
    t0 = time.perf_counter()
    hl.sweep(system, **kw)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = hl.sweep(system, **kw)
    warm = time.perf_counter() - t0
    return {
        "devices": len(jax.devices()),
        "points": points,
        "batch": batch,
        "compile_s": first - warm,
        "warm_s": warm,
        "ok": sum(s == "ok" for s in res.status),
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--devices", type=int, nargs="*", default=[1, 2, 4])
    p.add_argument("--points", type=int, default=1024)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--child", action="store_true")
    ns = p.parse_args()
    if ns.child:
        print(json.dumps(child(ns.points, ns.batch)))
        return
    print(f"{'devices':>8} {'points':>7} {'compile [s]':>12} {'warm [s]':>9} {'points/s':>9}")
    base = None
    for d in ns.devices:
        env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={d}")
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                "--points",
                str(ns.points),
                "--batch",
                str(ns.batch),
            ],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        r = json.loads(out.stdout.strip().splitlines()[-1])
        base = base or r["warm_s"]
        print(
            f"{r['devices']:>8} {r['points']:>7} {r['compile_s']:>12.2f} {r['warm_s']:>9.2f} {r['points'] / r['warm_s']:>9.1f}"
            f"   (speed-up vs first row {base / r['warm_s']:.2f}x)",
            flush=True,
        )


if __name__ == "__main__":
    main()
