"""Exact expected SGD on least squares with a power-law spectrum, in log time
(:func:`hildlimits.expected_sgd`, docs/exact-recursion.md).

* s_j ∝ j^-1.5 (mean 1), random teacher, noise 0.5, eta = 1, batch 1, N = 10^5 directions in
  10^5 bins, 200 log-spaced saves to t = 10^4 (10^9 SGD steps = samples), method="log":
  compile time, then the warm time (median of 3), wall and process CPU, without the per-bin
  overlaps (``save_bins=False``: 200 x 10^5 floats less to write) and with them.
* the accuracy of the log-time blocks: N = 2000, t <= 50, against the step-by-step recursion.

Run: ``python benchmarks/power_law_least_squares.py`` (``--quick``: 10^4 bins, t = 10^3).
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np


def _timed(fn):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--resolution", type=float, default=1 / 16)
    ns = ap.parse_args()
    jax.config.update("jax_enable_x64", True)
    import hildlimits as hl

    N, t1 = (10_000, 1e3) if ns.quick else (100_000, 1e4)
    sp = hl.spectrum_from_config({"law": "power_law", "exponent": 1.5, "bins": N})
    kw = dict(N=N, lr=1.0, noise=0.5, t1=t1, n_save=200, t_first=1e-2, method="log")
    kw["resolution"] = ns.resolution

    def run(save_bins=False):
        return hl.expected_sgd(sp, save_bins=save_bins, **kw)

    first, w0, c0 = _timed(run)
    warm = [_timed(run) for _ in range(3)]
    w = float(np.median([x[1] for x in warm]))
    c = float(np.median([x[2] for x in warm]))
    r = warm[-1][0]
    print(
        f"power law 1.5, {N} bins, N = {N}, t1 = {t1:g} ({int(t1 * N):.3g} steps), "
        f"200 saves, resolution {ns.resolution:g}: {r.num_blocks} blocks, status {r.status}"
    )
    print(f"  first call (compile + run): {w0:.2f} s wall")
    print(
        f"  warm: {w:.2f} s wall, {c:.2f} s CPU (median of 3); {1e6 * w / r.num_blocks:.0f} us/block"
    )
    print(f"  risk(t=1) = {np.interp(1.0, r.t, r.risk):.6e}, risk(t1) = {r.risk[-1]:.6e}")
    assert np.array_equal(first.risk, r.risk)
    run(True)
    rb, wb, cb = _timed(lambda: run(True))
    assert np.array_equal(rb.risk, r.risk)
    print(f"  warm with the per-bin overlaps at every save (save_bins=True): {wb:.2f} s wall")

    n = 2000
    sp2 = hl.spectrum_from_config({"law": "power_law", "exponent": 1.5, "bins": n})
    for noise in (0.0, 0.5):
        args = dict(N=n, lr=1.0, noise=noise, t1=50.0, n_save=60)
        ex, we, _ = _timed(lambda a=args: hl.expected_sgd(sp2, method="exact", **a))
        for res in (1 / 8, 1 / 16, 1 / 32):
            lg = hl.expected_sgd(sp2, method="log", resolution=res, **args)
            rel = float(np.abs(lg.risk / ex.risk - 1).max())
            print(
                f"  N = {n}, t <= 50, noise {noise}: log (resolution {res:g}, {lg.num_blocks} "
                f"blocks) vs exact ({ex.num_blocks} steps, {we:.2f} s): max rel. risk diff "
                f"{rel:.2e}"
            )


if __name__ == "__main__":
    main()
