"""Time-dependent learning rates in the ODE and the simulator."""

import numpy as np
import pytest

import hildlimits as hl
from hildlimits._families.committee.simulate import simulate

MODEL = hl.Committee(K=2, M=2, activation="erf")
INIT = hl.Overlaps.for_model(MODEL, Q=np.eye(2) * 0.5, R=[[0.3, 0.0], [0.05, 0.2]], T=np.eye(2))
HYPER = hl.Hyperparams(lr=0.5, noise=0.3)
SYSTEM = hl.derive(MODEL)


def test_piecewise_schedule_equals_restarted_solves():
    # Independent reference: solve piece 1 with a constant rate, restart from its final state
    # with the second rate. The schedule run steps onto the edge exactly, so both agree to
    # the integration tolerance (1e-8 relative).
    sched = hl.Schedule(edges=[3.0], values=[0.8, 0.2])
    traj = hl.solve(SYSTEM, init=INIT, hyper=HYPER, lr_schedule=sched, ts=[0.0, 1.0, 3.0, 5.0, 8.0])
    a = hl.solve(SYSTEM, init=INIT, hyper=hl.Hyperparams(lr=0.8, noise=0.3), ts=[0.0, 1.0, 3.0])
    mid = hl.Overlaps(Q=a.Q[-1], R=a.R[-1], T=INIT.T, v=INIT.v, v_teacher=INIT.v_teacher)
    b = hl.solve(SYSTEM, init=mid, hyper=hl.Hyperparams(lr=0.2, noise=0.3), ts=[0.0, 2.0, 5.0])
    np.testing.assert_allclose(traj.risk, np.concatenate([a.risk, b.risk[1:]]), rtol=1e-8)


def test_schedule_validation_and_families():
    with pytest.raises(hl.ConfigError, match="one more value"):
        hl.Schedule(edges=[1.0, 2.0], values=[0.1, 0.2])
    with pytest.raises(hl.ConfigError, match="increasing"):
        hl.Schedule(edges=[2.0, 1.0], values=[0.1, 0.2, 0.3])
    with pytest.raises(hl.ConfigError, match="non-negative"):
        hl.Schedule(edges=[1.0], values=[0.1, -0.2])
    s = hl.Schedule.from_function(lambda t: 0.5 * np.exp(-t / 10), t1=20.0, pieces=4)
    assert s.edges.tolist() == [5.0, 10.0, 15.0]
    assert s(0.0) == pytest.approx(0.5 * np.exp(-0.25)) and s(19.0) == pytest.approx(
        0.5 * np.exp(-1.75)
    )


def test_simulator_schedule_matches_constant_rate_and_ode():
    kw = dict(hyper=HYPER, N=200, init=INIT, seeds=4, t1=4.0, n_save=5, spacing="linear")
    flat = simulate(MODEL, lr_schedule=hl.Schedule(edges=[1.0, 2.0], values=[0.5, 0.5, 0.5]), **kw)
    const = simulate(MODEL, **kw)
    np.testing.assert_allclose(flat.risk, const.risk, rtol=1e-12)  # same random stream
    sched = hl.Schedule(edges=[2.0], values=[0.9, 0.1])
    sim = simulate(MODEL, lr_schedule=sched, **kw)
    traj = hl.solve(SYSTEM, init=INIT, hyper=HYPER, lr_schedule=sched, ts=sim.t)
    # agreement within 5 standard errors of the seed mean plus 3% (finite-size bias at N=200)
    assert np.all(np.abs(sim.risk_mean - traj.risk) <= 5 * sim.risk_sem + 0.03 * traj.risk)
    assert not np.allclose(sim.risk, const.risk)
