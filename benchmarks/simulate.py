"""Throughput of the finite-width simulator ``hildlimits.simulate`` (K = M = 2 erf committee,
first layer trained, eta = 0.5, random initial weights) on the default JAX device (CPU here).

For every (N, seeds) pair it reports separately:

* first call: a tiny run (one block of 256 steps): setup, tracing and XLA compilation;
* per-call overhead: a second identical tiny call (kernels are cached after the first call, so
  this is the Python-side setup: initial weights, dispatch, recording; ~10-30 ms on CPU);
* warm run: ``steps`` SGD steps in one call (default 1e5 for N <= 1000, 2e4 for larger N):
  wall time, steps/s and (seeds x N x steps)/s, both raw and net of the per-call overhead;
* the extrapolated wall time of a 10^6-step run (overhead + 10^6 / net rate);

and, per N, the ratio time(most seeds) / time(1 seed) for the same number of steps (how well
``vmap`` over seeds amortises the per-step cost).

Run:
    python benchmarks/simulate.py                          # N in {1000, 10000}, seeds in {1, 8}
    python benchmarks/simulate.py --N 2000 --seeds 1,4,16 --steps 50000 --dtype float32
Default total runtime: about 1-2 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import time

import jax

jax.config.update("jax_enable_x64", True)

import hildlimits as hl  # noqa: E402

TINY = 256  # steps of the compile / overhead calls (one input block)


def default_steps(N: int) -> int:
    return 100_000 if N <= 1000 else 20_000


def run(model, hyper, N, seeds, steps, dtype):
    kw = dict(
        hyper=hyper,
        N=N,
        random_init=hl.RandomInit(student_std=0.5),
        seeds=seeds,
        n_save=2,
        spacing="linear",  # save times [0, t1]: exactly `steps` steps (log spacing with
        dtype=dtype,  # n_save=2 would stop at t_first, see the report)
        progress=False,
    )
    t0 = time.perf_counter()
    hl.simulate(model, t1=TINY / N, **kw)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    hl.simulate(model, t1=TINY / N, **kw)
    overhead = time.perf_counter() - t0
    t0 = time.perf_counter()
    sim = hl.simulate(model, t1=steps / N, **kw)
    warm = time.perf_counter() - t0
    assert sim.status == "ok" and int(sim.steps[-1]) == steps, (sim.status, sim.steps)
    # net of the per-call overhead only where the run is long enough for that to be meaningful
    net = warm - overhead if warm > 2 * overhead else None
    rate = net if net is not None else warm
    return {
        "N": N,
        "seeds": seeds,
        "steps": steps,
        "dtype": sim.dtype,
        "first_s": first,
        "overhead_s": overhead,
        "warm_s": warm,
        "steps_per_s": steps / warm,
        "steps_per_s_net": steps / net if net else float("nan"),
        "elems_per_s": seeds * N * steps / warm,
        "elems_per_s_net": seeds * N * steps / net if net else float("nan"),
        "t_1e6_steps_s": (overhead if net else 0.0) + 1e6 * rate / steps,
        "net_s": rate,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--N", default="1000,10000", help="comma-separated input dimensions")
    p.add_argument("--seeds", default="1,8", help="comma-separated numbers of seeds")
    p.add_argument(
        "--steps", type=int, default=None, help="steps of the warm run (default 1e5 / 2e4)"
    )
    p.add_argument("--dtype", choices=["float64", "float32"], default=None)
    p.add_argument("--K", type=int, default=2, help="K = M (default 2)")
    ns = p.parse_args()
    Ns = [int(x) for x in ns.N.split(",")]
    seeds_list = sorted(int(x) for x in ns.seeds.split(","))
    model = hl.Committee(K=ns.K, M=ns.K, activation="erf", train_second_layer=False)
    hyper = hl.Hyperparams(lr=0.5)
    hl.derive(model)  # derivation (cached) outside the timings
    print(
        f"hildlimits {hl.__version__}, jax {jax.__version__}, device {jax.devices()[0]}, "
        f"K=M={ns.K} erf, eta=0.5"
    )
    head = (
        f"{'N':>6} {'seeds':>5} {'steps':>7} {'dtype':>7} {'first[s]':>8} {'ovh[s]':>7} "
        f"{'warm[s]':>8} {'steps/s':>9} {'net st/s':>9} {'elem/s':>9} {'net el/s':>9} "
        f"{'1e6 st[s]':>9}"
    )
    print(head)
    t_all = time.perf_counter()
    results = []
    for N in Ns:
        steps = ns.steps or default_steps(N)
        for S in seeds_list:
            r = run(model, hyper, N, S, steps, ns.dtype)
            results.append(r)
            print(
                f"{N:>6} {S:>5} {steps:>7} {r['dtype']:>7} {r['first_s']:>8.2f} "
                f"{r['overhead_s']:>7.2f} {r['warm_s']:>8.2f} {r['steps_per_s']:>9.0f} "
                f"{r['steps_per_s_net']:>9.0f} {r['elems_per_s']:>9.3g} "
                f"{r['elems_per_s_net']:>9.3g} {r['t_1e6_steps_s']:>9.1f}",
                flush=True,
            )
    if len(seeds_list) > 1:
        for N in Ns:
            rs = {r["seeds"]: r for r in results if r["N"] == N}
            lo, hi = rs[seeds_list[0]], rs[seeds_list[-1]]
            print(
                f"N={N}: time({hi['seeds']} seeds) / time({lo['seeds']} seed"
                f"{'s' if lo['seeds'] > 1 else ''}) = {hi['net_s'] / lo['net_s']:.2f} "
                f"(net of per-call overhead; raw {hi['warm_s'] / lo['warm_s']:.2f}) for "
                f"{lo['steps']} steps"
            )
    print(
        "first = compile + tiny run (first call); ovh = the same tiny call again (cached "
        "kernels: Python-side setup only); net = warm minus ovh (nan if warm < 2 ovh)"
    )
    print(f"total {time.perf_counter() - t_all:.0f} s")


if __name__ == "__main__":
    main()
