"""Solving: against scipy's DOP853 on the reference right-hand side, exact solutions, events."""

import numpy as np
import pytest
from helpers import rel_err
from reference import reference_solve

import hildlimits as hl


def test_solution_matches_independent_integrator():
    # K != M, both layers trained, noise and weight decay on; the trajectory stays away from
    # unstable plateaus. Reference: hand-written RHS + scipy DOP853 at rtol=1e-13. The default
    # tolerances must give <= 1e-7 relative error on the risk at every save time.
    model = hl.Committee(K=3, M=2, activation="erf", train_second_layer=True)
    rng = np.random.default_rng(3)
    W, Ws = rng.standard_normal((3, 400)) * 0.7, rng.standard_normal((2, 400))
    init = hl.Overlaps.for_model(
        model,
        Q=W @ W.T / 400,
        R=W @ Ws.T / 400 + 0.2,
        T=Ws @ Ws.T / 400,
        v=[0.6, 0.3, 0.5],
        v_teacher=[1.0, 0.8],
    )
    hyper = hl.Hyperparams(lr=0.8, lr_second_layer=0.4, noise=0.3, weight_decay=0.02)
    traj = hl.solve(hl.derive(model), init=init, hyper=hyper, t1=60.0, n_save=40, spacing="linear")
    ref, states = reference_solve(
        init.Q,
        init.R,
        init.T,
        init.v,
        init.v_teacher,
        ts=traj.t,
        eta=0.8,
        eta_v=0.4,
        sigma=0.3,
        kappa=0.02,
        train_v=True,
    )
    assert traj.status == "ok" and len(traj.t) == 40
    assert rel_err(traj.risk, ref) <= 1e-7
    assert rel_err(traj.Q[-1], states[-1][0]) <= 1e-7
    assert traj.risk[-1] < 0.5 * traj.risk[0]  # it actually learned something


def linear_exact(t, *, eta, kappa, sigma, Q0, R0, T=1.0):
    """Exact solution of the K = M = 1 linear network with v = v* = 1 (derived by hand)."""
    a = eta * (1 + kappa)
    R_inf = eta * T / a
    dR = R0 - R_inf
    b = 2 * eta + 2 * eta * kappa - eta**2
    c, d = 2 * eta - 2 * eta**2, eta**2 * (T + sigma**2)
    Q_inf = (c * R_inf + d) / b
    A = c * dR / (b - a)
    R = R_inf + dR * np.exp(-a * t)
    Q = Q_inf + A * np.exp(-a * t) + (Q0 - Q_inf - A) * np.exp(-b * t)
    return Q, R, 0.5 * (Q - 2 * R + T)


def test_linear_network_exact_solution():
    model = hl.Committee(K=1, M=1, activation="linear")
    init = hl.Overlaps.for_model(model, Q=[[0.3]], R=[[0.05]], T=[[1.0]])
    hyper = hl.Hyperparams(lr=0.4, noise=0.5, weight_decay=0.1)
    traj = hl.solve(hl.derive(model), init=init, hyper=hyper, t1=100.0, n_save=50)
    Q, R, risk = linear_exact(traj.t, eta=0.4, kappa=0.1, sigma=0.5, Q0=0.3, R0=0.05)
    # default tolerances; the risk converges to a positive floor, so relative error is meaningful
    assert rel_err(traj.risk, risk) <= 1e-8
    assert rel_err(traj.Q[:, 0, 0], Q) <= 1e-8 and rel_err(traj.R[:, 0, 0], R) <= 1e-8


def test_divergence_is_detected_with_its_time():
    # Linear K = M = 1: Q grows like exp((eta^2 - 2 eta) t) for eta > 2. The event fires at the
    # end of the first step past the bound 1e8 * (1 + max|init|).
    model = hl.Committee(K=1, M=1, activation="linear")
    init = hl.Overlaps.for_model(model, Q=[[1.0]], R=[[0.0]], T=[[1.0]])
    traj = hl.solve(hl.derive(model), init=init, hyper=hl.Hyperparams(lr=5.0), t1=100.0, n_save=50)
    assert traj.diverged and traj.status.startswith("diverged at t=")
    t = np.linspace(0, 3, 30001)
    Q, _, _ = linear_exact(t, eta=5.0, kappa=0.0, sigma=0.0, Q0=1.0, R0=0.0)
    crossing = t[np.argmax(Q > 2e8)]
    assert crossing <= traj.t_stop <= crossing + 0.2
    assert np.all(np.isfinite(traj.risk)) and traj.t[-1] == traj.t_stop
    assert np.all(traj.t[:-1] < traj.t_stop)


def test_non_finite_right_hand_side_fails_fast_with_its_time():
    # A right-hand side that turns NaN at t >= 2 while the state stays finite (what a broken
    # closed form at a coincidence of units looked like): every step from there on is rejected.
    # The solve stops at t ~ 2 with the step-collapse error instead of running through max_steps
    # rejected steps.
    import dataclasses
    import types

    import jax.numpy as jnp

    model = hl.Committee(K=1, M=1, activation="linear")
    shared = hl.derive(model, cache=False)
    good = shared.module
    system = dataclasses.replace(shared, _jax={})  # a copy: the derived system is shared

    def vector_field(t, y, args):
        out = good.vector_field(t, y, args)
        return {k: jnp.where(t >= 2.0, jnp.nan, v) for k, v in out.items()}

    system._jax["module"] = types.SimpleNamespace(vector_field=vector_field, risk=good.risk)
    init = hl.Overlaps.for_model(model, Q=[[0.3]], R=[[0.05]], T=[[1.0]])
    with pytest.raises(hl.SolveError, match=r"failed at t=(1\.9|2)\S*: the step size collapsed"):
        hl.solve(system, init=init, hyper=hl.Hyperparams(lr=0.4), t1=10.0, max_steps=100_000)


@pytest.mark.parametrize("lr", [0.05, 1.0])
def test_finite_time_blow_up_is_a_divergence_at_the_blow_up_time(lr):
    # A cubic student and teacher blow up in finite time (dQ/dt grows faster than Q): the steps
    # collapse before the state reaches divergence_bound. That must read "diverged at t=..." at
    # the blow-up time, not "solver failed". At lr = 1 diffrax's first trial step (0.01)
    # overshoots the blow-up (t ~ 4.5e-4) into non-finite values; that step must shrink rather
    # than stall at t = 0 until max_steps. Reference: the same right-hand side integrated by
    # scipy's DOP853, whose step size also collapses at the blow-up; measured agreement 2e-10
    # (lr = 0.05) and 2e-7 (lr = 1) relative. Tolerance 1e-5: both stop where Q ~ 1e2..1e3,
    # within a relative ~1e-6 of the singularity.
    import jax
    from scipy.integrate import solve_ivp

    from hildlimits._families.committee.solve import problem

    model = hl.Committee(K=1, M=1, activation="x**3", teacher_activation="x**3")
    system = hl.derive(model, cache=False)
    init = hl.Overlaps.for_model(model, Q=[[0.5]], R=[[0.1]], T=[[1.0]])
    hyper = hl.Hyperparams(lr=lr)
    traj = hl.solve(system, init=init, hyper=hyper, t1=50.0)
    assert traj.diverged and traj.status == f"diverged at t={traj.t_stop:.6g}"
    assert abs(traj.Q[-1, 0, 0]) > 10 * 0.5 and np.isfinite(traj.risk).all()

    _, args = problem(system, init, hyper)
    field = jax.jit(
        lambda y: system.module.vector_field(
            0.0, {"Q": y[0].reshape(1, 1), "R": y[1].reshape(1, 1)}, args
        )
    )

    def rhs(t, y):
        out = field(y)
        return [float(out["Q"][0, 0]), float(out["R"][0, 0])]

    ref = solve_ivp(rhs, (0.0, 50.0), [0.5, 0.1], method="DOP853", rtol=1e-12, atol=1e-14)
    assert ref.status == -1 and abs(ref.y[0, -1]) > 100  # scipy's steps collapsed too
    assert rel_err(traj.t_stop, ref.t[-1]) < 1e-5


def test_steady_state_stop_and_trajectory_is_immutable():
    model = hl.Committee(K=1, M=1, activation="linear")
    init = hl.Overlaps.for_model(model, Q=[[0.3]], R=[[0.05]], T=[[1.0]])
    traj = hl.solve(
        hl.derive(model), init=init, hyper=hl.Hyperparams(lr=0.4), t1=1e4, steady_state=1e-9
    )
    assert traj.status.startswith("steady state at t=") and traj.t_stop < 1e3
    assert traj.risk[-1] == pytest.approx(0.0, abs=1e-8)
    with pytest.raises(ValueError):
        traj.risk[0] = 1.0
    with pytest.raises(AttributeError):
        traj.status = "x"


def test_save_times_and_observables():
    t = hl.save_times(1000.0, 200, "log")
    assert (
        t[0] == 0
        and t[1] == pytest.approx(0.1)
        and t[-1] == pytest.approx(1000.0)
        and len(t) == 200
    )
    assert np.allclose(np.diff(np.log(t[1:])), np.log(1e4) / 198)
    assert np.allclose(hl.save_times(10.0, 11, "linear"), np.arange(11.0))
    assert hl.save_times(10.0, 2, "log").tolist() == [0.0, 10.0]  # two saves: the ends
    model = hl.Committee(K=2, M=2, activation="erf")
    init = hl.Overlaps.for_model(model, Q=np.eye(2) * 0.5, R=np.eye(2) * 0.1, T=np.eye(2))
    traj = hl.solve(
        hl.derive(model),
        init=init,
        hyper=hl.Hyperparams(lr=0.5),
        t1=10.0,
        n_save=11,
        spacing="linear",
    )
    assert np.allclose(traj.observable("risk"), traj.risk)
    cos = traj.observable(lambda Q, R, v, T, vt: R / np.sqrt(np.outer(np.diag(Q), np.diag(T))))
    assert cos.shape == (11, 2, 2) and np.all(np.abs(cos) <= 1)
    assert traj.v.shape == (11, 2) and np.all(traj.v == 1.0)


def test_tight_tolerances_are_accepted():
    model = hl.Committee(K=2, M=2, activation="erf")
    init = hl.Overlaps.for_model(model, Q=np.eye(2) * 0.5, R=np.eye(2) * 0.1, T=np.eye(2))
    a = hl.solve(
        hl.derive(model), init=init, hyper=hl.Hyperparams(lr=0.5), t1=20.0, rtol=1e-12, atol=1e-14
    )
    b = hl.solve(hl.derive(model), init=init, hyper=hl.Hyperparams(lr=0.5), t1=20.0)
    assert rel_err(b.risk, a.risk) < 1e-8
