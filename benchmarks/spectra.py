"""Spectra and the joint rule: cost per right-hand side against the number of bins, the
10^4-bin logistic solve, and the joint rule's cost and accuracy against its node count.

Run: python benchmarks/spectra.py   (prints a table; float64 on the CPU)
"""

from __future__ import annotations

import json
import time

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

import hildlimits as hl  # noqa: E402
from hildlimits._families.committee.derive import derive  # noqa: E402
from hildlimits._families.committee.joint import derive_joint  # noqa: E402
from hildlimits._families.committee.solve import problem  # noqa: E402
from hildlimits._pipeline.spectrum import spectrum_from_config  # noqa: E402


def best_of(fn, repeats=5):
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return min(times)


def rhs_cost():
    print("cost per right-hand side (logistic, sign labels, K = M = 1 linear), by bins")
    model = hl.Committee(
        K=1, M=1, activation="linear", loss="logistic", label="sign(y)", covariance="spectrum"
    )
    system = derive(model)
    init = hl.Overlaps.for_model(model, Q=[[0.5]], R=[[0.2]], T=[[1.0]])
    vf = jax.jit(system.module.vector_field)
    rows = []
    for B in (1, 10, 100, 1000, 10_000, 100_000):
        spectrum = spectrum_from_config({"law": "power_law", "bins": B, "exponent": 1.0})
        y0, args = problem(system, init, hl.Hyperparams(lr=0.5, noise=0.1), spectrum=spectrum)
        t = best_of(lambda y0=y0, args=args: vf(0.0, y0, args))
        rows.append((B, t))
        print(f"  bins {B:>7}: {t * 1e6:9.1f} us")
    return rows


def solve_10k():
    model = hl.Committee(
        K=1, M=1, activation="linear", loss="logistic", label="sign(y)", covariance="spectrum"
    )
    system = derive(model)
    init = hl.Overlaps.for_model(model, Q=[[0.0]], R=[[0.0]], T=[[1.0]])
    out = {}
    for law in (
        {"law": "marchenko_pastur", "bins": 10_000, "ratio": 0.5},
        {"law": "power_law", "bins": 10_000, "exponent": 1.0},
    ):
        spectrum = spectrum_from_config(law)
        hyper = hl.Hyperparams(lr=0.5, noise=0.1)

        def run(spectrum=spectrum, hyper=hyper):
            return hl.solve(system, init=init, hyper=hyper, t1=10.0, n_save=50, spectrum=spectrum)

        run()
        t0 = time.perf_counter()
        traj = run()
        warm = time.perf_counter() - t0
        print(
            f"10^4 bins, {law['law']}: solve to t = 10 warm {warm:.2f} s "
            f"({traj.num_steps} steps, risk {traj.risk[-1]:.5f})"
        )
        out[law["law"]] = {"warm_s": warm, "steps": traj.num_steps}
    return out


def joint_accuracy():
    print("joint rule: cost and accuracy against nodes (max |error| of F, H, D)")
    Q = jnp.asarray([[1.0, 0.3], [0.3, 0.8]])
    R = jnp.asarray([[0.5], [0.2]])
    args = {
        "T": np.eye(1),
        "v_teacher": np.ones(1),
        "v": np.array([0.7, 1.1]),
        "eta": 1.0,
        "eta_v": 1.0,
        "sigma": 0.4,
        "kappa": 0.0,
    }
    y = {"Q": Q, "R": R}
    rows = []
    for act in ("erf", "relu"):
        ref_sys = derive(
            hl.Committee(K=2, M=1, activation=act, covariance="spectrum", line_nodes=40)
        )
        ref = ref_sys.module.moments(y, args)
        for nodes in (8, 16, 32, 64):
            m = hl.Committee(K=2, M=1, activation=act, loss="(yhat - y)**2/2", joint_nodes=nodes)
            st = dict(m.structure, forced="joint")
            system = derive_joint(
                act, act, False, "(yhat - y)**2/2", "y", 1.0, nodes, False, json.dumps(st)
            )
            fn = jax.jit(lambda y, a, s=system: s.module.moments(y, a, observables=False))
            got = fn(y, args)
            err = max(float(np.abs(np.asarray(got[k]) - np.asarray(ref[k])).max()) for k in "FHD")
            t = best_of(lambda fn=fn: fn(y, args))
            rows.append((act, nodes, err, t))
            print(f"  {act:>5} nodes {nodes:>3}: error {err:.1e}, {t * 1e3:7.2f} ms")
    return rows


if __name__ == "__main__":
    rhs_cost()
    solve_10k()
    joint_accuracy()
