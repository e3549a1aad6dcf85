"""The finite-width simulator and the validation harness."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from helpers import random_covariance

import hildlimits as hl
from hildlimits import validate
from hildlimits._families.committee.simulate import RandomInit, exact_weights, simulate

MODEL = hl.Committee(K=2, M=2, activation="erf", train_second_layer=True)
INIT = hl.Overlaps.for_model(
    MODEL, Q=np.eye(2) * 0.5, R=[[0.3, 0.0], [0.05, 0.2]], T=np.eye(2), v=[0.5, 0.5]
)
HYPER = hl.Hyperparams(lr=0.5, noise=0.1)


def test_initial_overlaps_are_exact():
    # Cholesky-type factor of the joint Gram matrix on random orthonormal directions:
    # overlaps equal the target to rounding (1e-12), also for a singular (rank-deficient) one.
    rng = np.random.default_rng(0)
    for K, M, N in [(3, 2, 7), (4, 4, 100), (2, 1, 3)]:
        Om = random_covariance(rng, K + M)
        init = hl.Overlaps.for_model(
            hl.Committee(K=K, M=M), Q=Om[:K, :K], R=Om[:K, K:], T=Om[K:, K:]
        )
        W, Ws = exact_weights(init, N, rng)
        np.testing.assert_allclose(W @ W.T / N, init.Q, atol=1e-12)
        np.testing.assert_allclose(W @ Ws.T / N, init.R, atol=1e-12)
        np.testing.assert_allclose(Ws @ Ws.T / N, init.T, atol=1e-12)
    singular = hl.Overlaps.for_model(
        hl.Committee(K=2, M=1), Q=np.ones((2, 2)), R=np.ones((2, 1)), T=np.ones((1, 1))
    )
    W, Ws = exact_weights(singular, 10, rng)
    np.testing.assert_allclose(
        np.vstack([W, Ws]) @ np.vstack([W, Ws]).T / 10, np.ones((3, 3)), atol=1e-12
    )


def test_short_simulation_agrees_with_ode_within_statistical_error():
    # N = 400, 8 seeds, t <= 4: the seed mean must lie within 5 standard errors of the ODE plus
    # 2% of the risk (room for the O(1/N) finite-size bias).
    sim = simulate(
        MODEL, hyper=HYPER, N=400, init=INIT, seeds=8, t1=4.0, n_save=9, spacing="linear"
    )
    assert sim.status == "ok" and sim.Q.shape == (8, 9, 2, 2) and sim.risk.shape == (8, 9)
    np.testing.assert_allclose(sim.Q[:, 0], np.broadcast_to(INIT.Q, (8, 2, 2)), atol=1e-12)
    traj = hl.solve(hl.derive(MODEL), init=INIT, hyper=HYPER, ts=sim.t)
    dev = np.abs(sim.risk_mean - traj.risk)
    assert np.all(dev <= 5 * sim.risk_sem + 0.02 * traj.risk), (dev, sim.risk_sem)
    assert traj.risk[-1] < 0.6 * traj.risk[0]  # the interval shows real learning


def test_same_seed_same_result_and_chunking_invariance():
    kw = dict(hyper=HYPER, N=64, init=INIT, seeds=3, t1=2.0, spacing="linear")
    a = simulate(MODEL, seed=5, n_save=5, **kw)
    b = simulate(MODEL, seed=5, n_save=5, **kw)
    c = simulate(MODEL, seed=5, n_save=9, **kw)  # other save times: same random stream
    d = simulate(MODEL, seed=6, n_save=5, **kw)
    assert np.array_equal(a.risk, b.risk) and np.array_equal(a.Q, b.Q)
    np.testing.assert_array_equal(a.Q, c.Q[:, ::2])
    assert not np.allclose(a.risk[:, 1:], d.risk[:, 1:])


def test_interrupt_keeps_partial_results():
    calls = []

    def stop(partial):
        calls.append(len(partial.t))
        raise KeyboardInterrupt

    sim = simulate(
        MODEL,
        hyper=HYPER,
        N=32,
        init=INIT,
        seeds=2,
        t1=4.0,
        n_save=9,
        spacing="linear",
        checkpoint=stop,
        checkpoint_every=0.0,
    )
    assert sim.status.startswith("interrupted at t=")
    assert 0 < len(sim.t) < 9 and sim.Q.shape[1] == len(sim.t) and calls


def test_random_init_and_monte_carlo_test_error():
    sim = simulate(
        MODEL,
        hyper=HYPER,
        N=300,
        random_init=RandomInit(student_std=0.7),
        seeds=2,
        t1=1.0,
        n_save=3,
        test_samples=4000,
    )
    Q0 = sim.Q[:, 0]
    assert np.allclose(np.diagonal(Q0, axis1=1, axis2=2), 0.49, atol=0.15)  # |w|^2/N ~ 0.7^2
    assert np.all(np.abs(sim.R[:, 0]) < 0.3)  # O(1/sqrt N)
    # closed-form risk of the measured overlaps vs Monte Carlo on 4000 held-out samples
    # (the estimator's relative standard error is ~sqrt(2/4000) ~ 2%; allow 5 sigma)
    assert np.allclose(sim.test_error, sim.risk, rtol=0.12)


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(N=0), "N must be a positive integer, got 0"),
        (dict(N=3), "N must be at least K \\+ M = 4"),
        (dict(seeds=0), "seeds must be a positive integer, got 0"),
        (dict(test_samples=-1), "test_samples"),
        (dict(dtype="float16"), "dtype"),
    ],
)
def test_bad_input(kw, match):
    args = dict(hyper=HYPER, N=50, init=INIT, seeds=1, t1=1.0, n_save=3) | kw
    with pytest.raises(hl.ConfigError, match=match):
        simulate(MODEL, **args)


def test_divergence_reports_step_and_time():
    model = hl.Committee(K=1, M=1, activation="linear")
    init = hl.Overlaps.for_model(model, Q=[[1.0]], R=[[0.0]], T=[[1.0]])
    sim = simulate(
        model, hyper=hl.Hyperparams(lr=5.0), N=100, init=init, seeds=2, t1=50.0, n_save=20
    )
    assert sim.diverged and "step" in sim.status and "(t=" in sim.status
    step = int(sim.status.split("step ")[1].split(" ")[0])
    assert 100 < step < 20 * 100  # the ODE crosses the bound near t = 1.3 (tests/test_solve.py)


def test_validate_report_schema():
    report, sims, odes = validate(
        MODEL, hyper=HYPER, init=INIT, Ns=[100, 200], seeds=4, t1=2.0, n_save=6, spacing="linear"
    )
    assert set(report) >= {"per_N", "finite_size_exponent", "tolerance", "passed", "reason"}
    assert [p["N"] for p in report["per_N"]] == [100, 200]
    for p in report["per_N"]:
        assert set(p) >= {
            "max_abs_deviation",
            "mean_abs_deviation",
            "max_deviation_in_se",
            "mean_deviation_in_se",
        }
        assert p["max_abs_deviation"] >= p["mean_abs_deviation"] >= 0
    assert isinstance(report["finite_size_exponent"], float) and isinstance(report["passed"], bool)
    json.dumps(report)


def _write_config(path, extra=""):
    path.write_text(
        """
[model]
K = 2
M = 2
activation = "erf"
train_second_layer = true
noise = 0.1
[training]
lr = 0.5
[init]
Q = [[0.5, 0.0], [0.0, 0.5]]
R = [[0.3, 0.0], [0.05, 0.2]]
T = [[1.0, 0.0], [0.0, 1.0]]
v = [0.5, 0.5]
[solve]
"""
        + extra
    )
    return path


def test_cli_simulate_json_and_sigint_keeps_partial_output(tmp_path):
    env = dict(os.environ, HILDLIMITS_CACHE_DIR=str(tmp_path / "cache"))
    cfg = _write_config(tmp_path / "c.toml", 't1 = 3.0\nn_save = 4\nspacing = "linear"\n')
    out = tmp_path / "sim.json"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "hildlimits",
            "simulate",
            str(cfg),
            "--N",
            "50",
            "--seeds",
            "3",
            "--out",
            str(out),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    data = json.loads(out.read_text())
    for key in ("t", "risk", "risk_std", "Q", "R", "v", "N", "seeds", "meta"):
        assert key in data
    assert data["N"] == 50 and data["seeds"] == 3 and len(data["t"]) == 4
    assert np.array(data["Q"]).shape == (4, 2, 2) and np.array(data["R"]).shape == (4, 2, 2)
    # a long run interrupted with Ctrl-C (SIGINT) writes what it has and exits 130
    cfg2 = _write_config(
        tmp_path / "long.toml", 't1 = 100000.0\nn_save = 400\nspacing = "linear"\n'
    )
    out2 = tmp_path / "long.json"
    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hildlimits",
            "simulate",
            str(cfg2),
            "--N",
            "50",
            "--seeds",
            "2",
            "--out",
            str(out2),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(12)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err
    part = json.loads(out2.read_text())
    assert part["status"].startswith("interrupted at t=") and 0 < len(part["t"]) < 400
