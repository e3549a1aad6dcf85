"""The optimisers of the committee ODE (mini-batch, momentum, AdaGrad-Norm, gradient flow,
batch schedules) against independent references built from the plain SGD derivation.

The plain system's drift is a polynomial in the learning rate, ``f(eta) = eta f1 + eta^2 f2``
(weight decay enters ``f1``): evaluating it at two learning rates separates the two orders
without using the mini-batch derivation, so each optimiser's drift has an independent reference
(``f1`` and ``f2/B``; ``eta/(1 - beta)``; ``d(b^2)/dt = sum_i f2_ii``). Float64 throughout.
"""

import jax
import numpy as np
import pytest

import hildlimits as hl
from hildlimits._families.committee import optim
from hildlimits._families.committee.solve import problem

jax.config.update("jax_enable_x64", True)

RTOL = 1e-12  # the same floating-point expressions up to re-association: rounding only


def _init(model):
    return hl.Overlaps.for_model(
        model,
        Q=[[0.8, 0.1], [0.1, 0.6]],
        R=[[0.3, -0.1], [0.05, 0.2]],
        T=[[1.0, 0.2], [0.2, 0.9]],
        v=[1.0, 0.7],
    )


@pytest.fixture(scope="module")
def systems():
    plain = hl.Committee(K=2, M=2, activation="erf")
    opt = hl.Committee(K=2, M=2, activation="erf", minibatch=True, adagrad=True)
    return plain, hl.derive(plain), opt, hl.derive(opt)


def _orders(system, init, hyper, eta):
    """``f1`` and ``f2`` of the plain drift from evaluations at ``eta`` and ``2 eta``."""
    import dataclasses

    vals = []
    for e in (eta, 2 * eta):
        h = dataclasses.replace(hyper, lr=e, lr_second_layer=e)
        y, a = problem(system, init, h)
        vals.append(system.module.vector_field(0.0, y, a))
    f1 = {k: (4 * vals[0][k] - vals[1][k]) / (2 * eta) for k in vals[0]}
    f2 = {k: (vals[1][k] - 2 * vals[0][k]) / (2 * eta**2) for k in vals[0]}
    return f1, f2


def test_minibatch_drift_divides_the_sgd_noise_terms_by_B(systems):
    plain, ps, opt, os_ = systems
    init = _init(plain)
    hyper = hl.Hyperparams(lr=0.7, noise=0.3, weight_decay=0.05)
    f1, f2 = _orders(ps, init, hyper, 0.7)
    for B in (1, 3, 16):
        y, a = problem(
            os_, init, hl.Hyperparams(lr=0.7, noise=0.3, weight_decay=0.05, batch_size=B)
        )
        got = optim.vector_field(os_.module)(0.0, y, a)
        for k in ("Q", "R"):
            want = 0.7 * f1[k] + 0.49 * f2[k] / B
            np.testing.assert_allclose(got[k], want, rtol=1e-9, atol=1e-13)
    assert "B" in str(os_) and "B" not in str(ps).split("risk =")[0].replace("Biehl", "")


def test_momentum_is_sgd_at_eta_over_one_minus_beta(systems):
    plain, ps, opt, os_ = systems
    init = _init(opt)
    beta = 0.6
    y, a = problem(os_, init, hl.Hyperparams(lr=0.4, noise=0.2, momentum=beta))
    got = optim.vector_field(os_.module)(0.0, y, a)
    y2, a2 = problem(ps, init, hl.Hyperparams(lr=0.4 / (1 - beta), noise=0.2))
    want = ps.module.vector_field(0.0, y2, a2)
    for k in ("Q", "R"):
        np.testing.assert_allclose(got[k], want[k], rtol=RTOL, atol=1e-15)


def test_adagrad_norm_accumulates_the_sgd_noise_coefficient(systems):
    # d(b^2)/dt = E|g|^2 = sum_i E[(dl/dlambda_i)^2] / B: the eta^2 coefficient of dQ_ii (x ~ N(0, I))
    plain, ps, opt, os_ = systems
    init = _init(opt)
    f1, f2 = _orders(ps, init, hl.Hyperparams(lr=0.5, noise=0.3), 0.5)
    b0 = 1.7
    y, a = problem(
        os_,
        init,
        hl.Hyperparams(lr=0.5, noise=0.3, optimizer="adagrad_norm", adagrad_b0=b0, batch_size=2),
    )
    assert float(y["b2"]) == b0**2
    got = optim.vector_field(os_.module)(0.0, y, a)
    np.testing.assert_allclose(got["b2"], np.trace(f2["Q"]) / 2, rtol=1e-9)
    eta = 0.5 / b0
    np.testing.assert_allclose(
        got["Q"], eta * f1["Q"] + eta**2 * f2["Q"] / 2, rtol=1e-9, atol=1e-13
    )


def test_gradient_flow_drops_the_noise_terms_and_rescales_time(systems):
    plain, ps, opt, os_ = systems
    init = _init(opt)
    f1, _ = _orders(ps, init, hl.Hyperparams(lr=0.3, noise=0.5), 0.3)
    y, a = problem(os_, init, hl.Hyperparams(lr=0.3, noise=0.5, gradient_flow=True))
    got = optim.vector_field(os_.module)(0.0, y, a)
    for k in ("Q", "R"):  # d/d(eta t) = f1
        np.testing.assert_allclose(got[k], f1[k], rtol=1e-9, atol=1e-13)


def test_spectral_adagrad_uses_the_mean_eigenvalue():
    # with x ~ N(0, Sigma): |x|^2/N = mean eigenvalue; the eta^2 part of sum_b dQ^b_ii / (s_b p_b)
    model = hl.Committee(
        K=1, M=1, activation="erf", covariance="spectrum", minibatch=True, adagrad=True
    )
    system = hl.derive(model)
    spec = hl.spectrum_from_config({"eigenvalues": [0.5, 2.0, 3.0], "weights": [0.5, 0.3, 0.2]})
    init = hl.Overlaps.for_model(model, Q=[[0.5]], R=[[0.2]], T=[[1.0]])
    hyper = hl.Hyperparams(lr=0.8, noise=0.1, optimizer="adagrad_norm")
    y, a = problem(system, init, hyper, spectrum=spec)
    got = optim.vector_field(system.module)(0.0, y, a)
    vals = []
    for e in (0.8, 1.6):
        import dataclasses

        yy, aa = problem(
            system, init, dataclasses.replace(hyper, optimizer="sgd", lr=e), spectrum=spec
        )
        vals.append(system.module.vector_field(0.0, yy, aa)["Q"])
    f2 = (vals[1] - 2 * vals[0]) / (2 * 0.8**2)  # (bins, 1, 1): s_b p_b E[delta^2]
    s, p = np.asarray(spec.eigenvalues), np.asarray(spec.weights)
    grad_sq = f2[:, 0, 0] / (s * p)
    np.testing.assert_allclose(grad_sq, grad_sq[0], rtol=1e-9)  # one moment for all bins
    np.testing.assert_allclose(got["b2"], grad_sq[0] * np.dot(s, p), rtol=1e-9)


def test_batch_schedule_equals_restarted_solves(systems):
    # B = 1 on [0, 5), B = 8 after: the same as solving to 5 and restarting from its state
    plain, ps, opt, os_ = systems
    init = _init(opt)
    hyper = hl.Hyperparams(lr=1.0, noise=0.2)
    sched = hl.Schedule(edges=[5.0], values=[1.0, 8.0])
    full = hl.solve(os_, init=init, hyper=hyper, ts=np.linspace(0, 10, 11), batch_schedule=sched)
    first = hl.solve(os_, init=init, hyper=hyper, ts=np.linspace(0, 5, 6))
    mid = hl.Overlaps(
        Q=first.Q[-1], R=first.R[-1], T=init.T, v=init.v, v_teacher=init.v_teacher, _checked=True
    )
    second = hl.solve(
        os_,
        init=mid,
        hyper=hl.Hyperparams(lr=1.0, noise=0.2, batch_size=8),
        ts=np.linspace(0, 5, 6),
    )
    # both solved at rtol 1e-10: agreement to ~1e-8 relative
    np.testing.assert_allclose(full.risk[:6], first.risk, rtol=1e-8)
    np.testing.assert_allclose(full.risk[5:], second.risk, rtol=1e-7)


def test_optimisers_need_the_matching_derivation(systems):
    plain, ps, opt, os_ = systems
    init = _init(plain)
    with pytest.raises(hl.ConfigError, match="minibatch=True"):
        problem(ps, init, hl.Hyperparams(lr=1.0, batch_size=2))
    with pytest.raises(hl.ConfigError, match="adagrad=True"):
        problem(ps, init, hl.Hyperparams(lr=1.0, optimizer="adagrad_norm"))


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"batch_size": 0}, "training.batch_size must be a positive integer, got 0"),
        ({"momentum": 1.0}, r"training.momentum must be in \[0, 1\), got 1.0"),
        ({"momentum": -0.1}, r"training.momentum must be in \[0, 1\), got -0.1"),
        (
            {"optimizer": "adam"},
            "training.optimizer must be one of 'sgd', 'adagrad_norm', got 'adam'",
        ),
        ({"adagrad_b0": 0.0}, "training.adagrad_b0 must be positive, got 0.0"),
        ({"gradient_flow": True, "momentum": 0.5}, "cannot be combined"),
        (
            {"gradient_flow": True, "batch_size": 4},
            "training.batch_size cannot be combined with training.gradient_flow",
        ),
    ],
)
def test_bad_optimiser_input(kw, match):
    with pytest.raises(hl.ConfigError, match=match):
        hl.Hyperparams(lr=1.0, **kw)


def test_joint_path_minibatch_and_adagrad():
    # a loss without closed forms (logistic on sign labels): the joint numerical rule's rates
    plain = hl.Committee(K=1, M=1, activation="erf", loss="logistic", label="sign(y)")
    opt = hl.Committee(
        K=1, M=1, activation="erf", loss="logistic", label="sign(y)", minibatch=True, adagrad=True
    )
    ps, os_ = hl.derive(plain), hl.derive(opt)
    assert ps.method == os_.method  # the same expectations
    init = hl.Overlaps.for_model(plain, Q=[[0.7]], R=[[0.3]], T=[[1.0]])
    f1, f2 = _orders(ps, init, hl.Hyperparams(lr=0.5, noise=0.1), 0.5)
    y, a = problem(
        os_,
        init,
        hl.Hyperparams(lr=0.5, noise=0.1, batch_size=5, optimizer="adagrad_norm", adagrad_b0=2.0),
    )
    got = optim.vector_field(os_.module)(0.0, y, a)
    eta = 0.25
    np.testing.assert_allclose(
        got["Q"], eta * f1["Q"] + eta**2 * f2["Q"] / 5, rtol=1e-9, atol=1e-13
    )
    np.testing.assert_allclose(got["R"], eta * f1["R"], rtol=1e-9, atol=1e-13)
    np.testing.assert_allclose(got["b2"], np.trace(f2["Q"]) / 5, rtol=1e-9)


@pytest.mark.slow  # ~60 s: compiling the differentiated solve of the sample-time ODE
def test_joint_lr_and_batch_schedule_under_a_sample_budget():
    # optimise (eta_k, B_k) in sample time; the schedules converted back to t = steps/N must give
    # the same final risk when solved in t (an independent path: t-time solver, union of edges),
    # and the optimum cannot be worse than the best constant rate at the configured batch size
    from hildlimits._pipeline.config import config_from_dict

    cfg = config_from_dict(
        {
            "model": {"K": 1, "M": 1, "activation": "erf", "noise": 0.3},
            "training": {"lr": 1.0, "batch_size": 2},
            "init": {"Q": [[0.5]], "R": [[0.05]], "T": [[1.0]]},
            "solve": {"t1": 10.0},
        }
    )
    fam = hl.get_family("committee")
    system = fam.derive(cfg)
    res = hl.optimize_schedule(
        system,
        config=cfg,
        pieces=3,
        steps=12,
        batch=True,
        learning_rate=0.1,
        constant_grid=np.geomspace(0.1, 3.0, 8),
    )
    assert res["sample_budget_per_dimension"] == 20.0  # t1 * B
    assert res["risk_optimised"] <= res["risk_best_constant"] * (1 + 1e-9)
    bs = res["batch_schedule"]
    assert np.all(bs.values >= 1.0)
    np.testing.assert_allclose(res["t_final"], np.sum(20.0 / 3 / bs.values), rtol=1e-12)
    c2 = fam.with_schedules(cfg, batch=bs)
    tr = fam.solve(system, c2, schedule=res["schedule"], ts=np.linspace(0, res["t_final"], 3))
    # both solves at rtol 1e-8 (the optimiser's) / 1e-10: agreement to ~1e-6 relative
    np.testing.assert_allclose(tr.risk[-1], res["risk_optimised"], rtol=1e-6)


def test_batch_enters_per_sample_only_through_eta_over_B():
    # in sample time s = steps B / N the drift is (eta/B) f1 + (eta/B)^2 f2: (eta, B) and
    # (eta/B, 1) give the same dynamics per sample (the high-dimensional linear-scaling rule)
    model = hl.Committee(K=2, M=2, activation="erf", minibatch=True)
    system = hl.derive(model)
    init = _init(model)
    a = hl.solve(
        system,
        init=init,
        hyper=hl.Hyperparams(lr=2.4, batch_size=4, noise=0.2),
        ts=np.linspace(0, 5, 6),
    )
    b = hl.solve(
        system, init=init, hyper=hl.Hyperparams(lr=0.6, noise=0.2), ts=np.linspace(0, 20, 6)
    )
    np.testing.assert_allclose(a.risk, b.risk, rtol=1e-7)  # rtol 1e-10 solves, rescaled time


def test_gradient_flow_needs_a_positive_lr_and_no_schedule(tmp_path):
    with pytest.raises(hl.ConfigError, match="training.lr must be positive with"):
        hl.Hyperparams(lr=0.0, gradient_flow=True)
    base = (
        '[model]\nK = 1\nM = 1\nactivation = "erf"\n[training]\nlr = 0.5\n'
        "gradient_flow = true\n{extra}[init]\nQ = [[0.5]]\nR = [[0.1]]\nT = [[1.0]]\n"
        "[solve]\nt1 = 1.0\n"
    )
    for extra, name in (
        ("lr_schedule = { edges = [1.0], values = [0.5, 0.1] }\n", "training.lr_schedule"),
        ("batch_schedule = { edges = [1.0], values = [1, 4] }\n", "training.batch_schedule"),
    ):
        path = tmp_path / "gf.toml"
        path.write_text(base.format(extra=extra))
        with pytest.raises(hl.ConfigError, match=f"{name} cannot be combined with"):
            hl.load_config(path)


def test_lr_effective_follows_the_lr_schedule():
    """With momentum and a learning-rate schedule the reported lr_effective is
    eta(t) / (1 - beta) at every saved time (exact: a lookup)."""
    model = hl.Committee(K=2, M=2, activation="erf", minibatch=True)
    system = hl.derive(model)
    sched = hl.Schedule(edges=[1.0, 2.0], values=[0.6, 0.3, 0.1])
    tr = hl.solve(
        system,
        init=_init(model),
        hyper=hl.Hyperparams(lr=0.6, momentum=0.5, noise=0.1),
        ts=np.array([0.0, 0.5, 1.5, 2.5, 3.0]),
        lr_schedule=sched,
    )
    np.testing.assert_allclose(
        tr.observables["lr_effective"], np.array([0.6, 0.6, 0.3, 0.1, 0.1]) / 0.5, rtol=1e-14
    )


@pytest.mark.parametrize(
    "extra, needle",
    [
        ("lr_schedule = { edges = [1.0], values = [0.5, -0.1] }", "training.lr_schedule"),
        ("batch_schedule = { edges = [1.0], values = [1, 0] }", "training.batch_schedule"),
        ("batch_size = 0", "training.batch_size must be a positive integer, got 0"),
        ("momentum = 1.0", "training.momentum must be in [0, 1), got 1.0"),
        ("momentum = -0.5", "training.momentum must be in [0, 1), got -0.5"),
        ('optimizer = "adam"', "training.optimizer must be one of"),
    ],
)
def test_cli_bad_optimiser_input_exits_2(tmp_path, capsys, extra, needle):
    """Issue 17, bad input: one ``error:`` line naming the key and value, exit 2."""
    from hildlimits._cli import main

    path = tmp_path / "bad.toml"
    path.write_text(
        '[model]\nK = 1\nM = 1\nactivation = "erf"\n[training]\nlr = 0.5\n'
        f"{extra}\n[init]\nQ = [[0.5]]\nR = [[0.1]]\nT = [[1.0]]\n[solve]\nt1 = 1.0\n"
    )
    assert main(["solve", str(path), "--out", str(tmp_path / "o.json")]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err


def test_momentum_schedule_equals_restarted_solves_and_its_config(tmp_path):
    """``momentum_schedule``: the drift at eta / (1 - beta(t)) piecewise, equal to restarting
    the solve at the edge with the next constant momentum (both rtol 1e-11: measured 3.4e-13);
    lr_effective follows beta(t); the config key and its errors."""
    model = hl.Committee(K=2, M=2, activation="erf", train_second_layer=True)
    system = hl.derive(model)
    init = hl.Overlaps.for_model(
        model, Q=[[0.8, 0.1], [0.1, 0.6]], R=[[0.3, 0.0], [0.05, 0.2]], T=[[1, 0], [0, 1]],
        v=[0.9, 1.1],
    )  # fmt: skip
    sched = hl.Schedule(edges=[1.5], values=[0.6, 0.2])
    ts = np.linspace(0, 3, 7)
    kw = dict(rtol=1e-11, atol=1e-13)
    a = hl.solve(
        system, init=init, hyper=hl.Hyperparams(lr=0.4, noise=0.1), ts=ts,
        momentum_schedule=sched, **kw,
    )  # fmt: skip
    first = hl.solve(
        system, init=init, hyper=hl.Hyperparams(lr=0.4, noise=0.1, momentum=0.6), ts=ts[:4], **kw
    )
    mid = hl.Overlaps(
        Q=first.Q[-1], R=first.R[-1], T=init.T, v=first.v[-1], v_teacher=init.v_teacher,
        _checked=True,
    )  # fmt: skip
    second = hl.solve(
        system, init=mid, hyper=hl.Hyperparams(lr=0.4, noise=0.1, momentum=0.2), ts=ts[3:] - 1.5,
        **kw,
    )  # fmt: skip
    np.testing.assert_allclose(a.risk, np.concatenate([first.risk, second.risk[1:]]), atol=1e-11)
    np.testing.assert_allclose(
        a.observables["lr_effective"], [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5], rtol=1e-14
    )
    base = (
        '[model]\nK = 1\nM = 1\nactivation = "erf"\n[training]\nlr = 0.5\n{extra}\n'
        "[init]\nQ = [[0.5]]\nR = [[0.1]]\nT = [[1.0]]\n[solve]\nt1 = 1.0\n"
    )
    path = tmp_path / "m.toml"
    path.write_text(base.format(extra="momentum_schedule = { edges = [0.5], values = [0.9, 0] }"))
    cfg = hl.load_config(path)
    assert cfg.momentum_schedule.values.tolist() == [0.9, 0.0]
    assert cfg.resolved()["training"]["momentum_schedule"]["edges"] == [0.5]
    for extra, match in (
        ("momentum_schedule = { edges = [0.5], values = [0.9, 1.0] }", r"in \[0, 1\)"),
        ("momentum_schedule = { edges = [0.5], values = [0.9, -0.1] }", "momentum_schedule"),
        ("momentum = 0.5\nmomentum_schedule = { edges = [0.5], values = [0.9, 0] }", "not both"),
        (
            "gradient_flow = true\nmomentum_schedule = { edges = [0.5], values = [0.9, 0] }",
            "cannot be combined",
        ),
    ):
        path.write_text(base.format(extra=extra))
        with pytest.raises(hl.ConfigError, match=match):
            hl.load_config(path)
