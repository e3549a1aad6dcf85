"""The ``least_squares`` family: finite data, full-batch GD / gradient flow (Advani & Saxe 2017).

References used here, independent of the family's code:
* adaptive QUADPACK (``scipy.integrate.quad`` with algebraic end-point weights, QAWS) of the
  per-mode mean square written out by hand, against the Marchenko--Pastur density;
* the known ``t -> oo`` closed forms (ridgeless: ``sigma^2/(alpha - 1)``; min-norm interpolation
  ``(1 - alpha) T + sigma^2 alpha/(1 - alpha)``; the optimal ridge ``lambda* = sigma^2/(alpha T)``);
* finite-N full-batch GD simulations (and the exact finite-N gradient flow).
"""

import dataclasses
import json
import math
import os

import jax
import numpy as np
import pytest
from scipy.integrate import quad
from scipy.optimize import minimize_scalar

from hildlimits._cli import main
from hildlimits._families import get_family
from hildlimits._families.least_squares import solve as S

jax.config.update("jax_enable_x64", True)  # explicit (also set in conftest)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "examples", "least_squares.toml")
F = get_family("least_squares")


@pytest.fixture(scope="module")
def system():
    return F.derive(None)


def cfg_of(**kw):
    kw.setdefault("t1", 20.0)
    return F.from_objects(**kw)


def reference(alpha, t, *, lr=None, lam=0.0, sigma=0.0, T=1.0, Q=0.0, R=0.0, what="risk"):
    """QUADPACK of the hand-written per-mode mean square against the MP density (+ atom)."""
    g = 1 / alpha
    a, b = (1 - math.sqrt(g)) ** 2, (1 + math.sqrt(g)) ** 2

    def mode(s):
        r = s + lam
        if lr is None:
            d = math.exp(-r * t)
            h = -math.expm1(-r * t) / r if r > 0 else t
        else:
            k = round(t / lr)
            d = (1 - lr * r) ** k
            h = (1 - d) / r if r > 0 else k * lr
        e2 = (
            T * (R / T * d - 1 + s * h) ** 2
            + (Q - R * R / T) * d * d
            + sigma**2 * s * h * h / alpha
        )
        if what == "risk":
            return 0.5 * e2
        return 0.5 * s * e2 - sigma**2 * s * h / alpha

    kw = {"weight": "alg", "epsabs": 1e-14, "epsrel": 1e-13, "limit": 500}
    if a < 1e-15:  # alpha = 1: the density ~ s^(-1/2) at 0
        bulk = quad(lambda s: mode(s) / (2 * math.pi * g), 0, b, wvar=(-0.5, 0.5), **kw)[0]
    else:
        bulk = quad(lambda s: mode(s) / (2 * math.pi * g * s), a, b, wvar=(0.5, 0.5), **kw)[0]
    out = bulk + max(0.0, 1 - alpha) * mode(0.0)
    return out + (sigma**2 / 2 if what != "risk" else 0.0)


# ----------------------------------------------------------------------------- theory


def test_derive_prints_the_per_mode_theory(system):
    text = str(system)
    for piece in ("a_inf", "(-eta*(lambda + s) + 1) (a - a_inf)", "kappa_GF", "E e^2", "m_b"):
        assert piece in text
    assert "\\mathbb E e^2" in system.latex() and system.markdown().startswith("# Finite-data")
    mod = system.module
    assert mod.e2(1.0, 1.0, 0.0, 0.0, 2.0, 1.0, 0.0, 0.0) == pytest.approx(1.0)  # w(0) = 0


@pytest.mark.parametrize("alpha", [0.5, 0.99, 1.0, 1.01, 2.0, 4.0])
def test_mp_quadrature_against_quadpack(system, alpha):
    # QUADPACK reaches ~1e-13; the graded Gauss-Legendre rule (256 nodes) was measured at
    # <= 1e-12 relative for alpha in [0.1, 10] and t <= 1e6: tolerance 1e-10.
    kw = dict(sigma=0.5, lam=0.02, Q=0.4, R=0.3)
    for lr in (None, 0.3):
        cfg = cfg_of(
            samples=alpha,
            lr=lr,
            gradient_flow=lr is None,
            noise=0.5,
            weight_decay=0.02,
            Q=0.4,
            R=0.3,
            t1=300.0,
        )
        ts = np.array([0.0, 0.3, 3.0, 30.0, 300.0])
        ev = S.evaluate(system, cfg, ts)
        for i, t in enumerate(ts):
            assert ev["risk"][i] == pytest.approx(reference(alpha, t, lr=lr, **kw), rel=1e-10)
            ref_tr = reference(alpha, t, lr=lr, what="train", **kw)
            assert ev["train_loss"][i] == pytest.approx(ref_tr, rel=1e-10, abs=1e-13)


def test_mass_and_convergence_of_the_rule():
    from hildlimits._families.least_squares.theory import mp_nodes

    for alpha in (0.3, 0.999, 1.0, 3.0):
        s, w = mp_nodes(alpha, 256)
        assert w.sum() == pytest.approx(1.0, abs=1e-13)  # bulk min(1, alpha) + atom
        assert np.sum(w * s) == pytest.approx(1.0, abs=1e-13)  # E s = 1
        assert np.sum(w * s**2) == pytest.approx(1 + 1 / alpha, abs=1e-12)  # E s^2 = 1 + gamma


def test_converged_closed_forms(system):
    conv = S.th.converged
    # ridgeless, alpha > 1: sigma^2/(2(alpha - 1)); alpha < 1: min-norm interpolation
    c = conv(system, alpha=3.0, lam=0.0, sigma=0.6, T=1.0, Q=0.0, R=0.0)
    assert c["risk"] == pytest.approx(0.36 / 4, rel=1e-13)
    assert c["train_loss"] == pytest.approx(0.18 * (1 - 1 / 3), rel=1e-13)
    c = conv(system, alpha=0.4, lam=0.0, sigma=0.6, T=1.0, Q=0.5, R=0.2)
    assert c["risk"] == pytest.approx(0.5 * (0.6 * 1.1 + 0.36 * 0.4 / 0.6), rel=1e-13)
    assert abs(c["train_loss"]) < 1e-15
    assert conv(system, alpha=1.0, lam=0.0, sigma=0.6, T=1.0, Q=0.0, R=0.0)["risk"] == math.inf
    # ridge: the closed form equals the quadrature at t -> oo (gradient flow, t = 1e5 >> 1/lam)
    for alpha in (0.5, 1.0, 2.0):
        cfg = cfg_of(samples=alpha, gradient_flow=True, noise=0.5, weight_decay=0.1, t1=1e5)
        c = conv(system, alpha=alpha, lam=0.1, sigma=0.5, T=1.0, Q=0.0, R=0.0)
        ev = S.evaluate(system, cfg, [1e5])
        assert c["risk"] == pytest.approx(ev["risk"][0], rel=1e-11)
        assert c["train_loss"] == pytest.approx(ev["train_loss"][0], rel=1e-11)
    # the optimal ridge is lambda* = sigma^2 / (alpha T) (Dobriban & Wager 2018)
    res = minimize_scalar(
        lambda lam: conv(system, alpha=2.0, lam=lam, sigma=0.5, T=1.0, Q=0, R=0)["risk"],
        bounds=(1e-4, 2.0),
        method="bounded",
        options={"xatol": 1e-9},
    )
    assert res.x == pytest.approx(0.25 / 2.0, rel=1e-5)


def test_ode_equals_exact_state_and_schedules(system):
    # The ODE's right-hand side is constant between schedule edges: diffrax integrates it exactly
    # (rounding, 1e-13), GD modes with lr r > 1 (sign flips) included.
    cfg = cfg_of(samples=0.5, lr=0.3, noise=0.5, weight_decay=0.01, Q=0.5, R=0.3, t1=30.0)
    tr = F.solve(system, cfg)
    assert tr.status.ok and np.allclose(tr.steps, np.round(tr.steps), atol=1e-9)
    ev = S.evaluate(system, cfg, tr.t)
    for k in ("risk", "train_loss", "Q", "R"):
        np.testing.assert_allclose(getattr(tr, k), ev[k], rtol=1e-12, atol=1e-14)
    assert F.solve(system, cfg_of(samples=0.5, lr=0.5, t1=30.0)).status.diverged  # lr s_max > 2


@pytest.mark.slow  # ~15-25 s: compiles the scheduled solve
def test_schedule_in_theory_and_simulation(system):
    from hildlimits import Schedule

    cfg = cfg_of(samples=0.5, lr=0.3, noise=0.5, weight_decay=0.01, Q=0.5, R=0.3, t1=30.0)
    tr = F.solve(system, cfg)
    const = F.solve(system, cfg, ts=tr.t, schedule=Schedule.pieces([0.3, 0.3], 30.0))
    np.testing.assert_allclose(const.risk, tr.risk, rtol=1e-12)
    two = F.solve(system, cfg, ts=tr.t, schedule=Schedule.pieces([0.3, 0.05], 30.0))
    assert not np.allclose(two.risk, tr.risk)
    opts = {"N": 64, "seeds": 2}
    s1 = F.simulate(cfg, options=opts)
    s2 = F.simulate(cfg, options=opts, schedule=Schedule.constant(0.3))
    np.testing.assert_allclose(s1.risk, s2.risk, rtol=1e-12)


# ----------------------------------------------------------------------------- simulations


def _agreement(sim, ode, N):
    # Theory is N -> oo: the finite-N mean carries an O(1/N) bias (e.g. E[s^2] = 1 + gamma + 1/n
    # after one step) that does not average out over seeds; measured <= 0.01 max(risk)/N at
    # N = 100. Allowed: 4 standard errors + 0.5 max(theory)/N.
    for mean, se, th in (
        (sim.risk_mean, sim.risk_sem, ode.risk),
        (sim.train_mean, sim.train_sem, ode.train_loss),
    ):
        excess = np.abs(mean - th) - 4 * se - 0.5 * np.abs(th).max() / N
        assert np.all(excess <= 0), (np.max(excess), N)


@pytest.mark.parametrize("sigma", [0.0, 0.5])
def test_full_batch_gd_against_simulation(system, sigma):
    N = 100
    for alpha in (0.5, 1.0, 2.0, 4.0):
        cfg = cfg_of(samples=alpha, lr=0.1, noise=sigma, t1=20.0, n_save=15)
        sim = F.simulate(cfg, options={"N": N, "seeds": 16, "seed": 1})
        assert sim.status.ok and sim.n == round(alpha * N)
        ode = F.solve(system, cfg, ts=sim.t, extras=False)
        assert sim.risk_mean[0] == pytest.approx(ode.risk[0], rel=1e-12)  # exact start
        _agreement(sim, ode, N)


def test_gradient_flow_against_exact_finite_n_flow(system):
    N = 100
    cfg = cfg_of(samples=0.5, gradient_flow=True, noise=0.5, Q=0.3, R=0.2, t1=100.0, n_save=12)
    sim = F.simulate(cfg, options={"N": N, "seeds": 16, "seed": 2})
    ode = F.solve(system, cfg, ts=sim.t, extras=False)
    _agreement(sim, ode, N)


def test_early_stopping_time(system):
    # Gradient flow: the refined argmin equals an independent minimisation of the QUADPACK risk
    # (both to ~1e-9 in t). GD: the best step equals a brute-force search over every step.
    cfg = cfg_of(samples=2.0, gradient_flow=True, noise=0.5, t1=100.0)
    es = F.solve(system, cfg).early_stopping
    ref = minimize_scalar(
        lambda t: reference(2.0, t, sigma=0.5),
        bounds=(1.0, 20.0),
        method="bounded",
        options={"xatol": 1e-10},
    )
    assert not es["at_end"] and es["t"] == pytest.approx(ref.x, rel=1e-6)
    assert es["risk"] == pytest.approx(ref.fun, rel=1e-10)
    gd = cfg_of(samples=2.0, lr=0.1, noise=0.5, t1=100.0)
    es = F.solve(system, gd).early_stopping
    ks = np.arange(30, 51)  # (the minimum is at step 40)
    r = np.array([reference(2.0, k * 0.1, lr=0.1, sigma=0.5) for k in ks])
    assert es["step"] == ks[np.argmin(r)] and es["t"] == pytest.approx(0.1 * es["step"])
    # the simulation sees the same minimum: its risk at t* is below the risk at t*/3 and at t1
    sim = F.simulate(gd, options={"N": 200, "seeds": 8}, ts=[es["t"] / 3, es["t"], 100.0])
    m, se = sim.risk_mean, sim.risk_sem
    assert m[1] + 3 * se[1] < m[0] - 3 * se[0] and m[1] + 3 * se[1] < m[2] - 3 * se[2]
    # without noise the risk decreases all the way: no early stopping
    assert F.solve(system, cfg_of(samples=2.0, lr=0.1, t1=20.0)).early_stopping["at_end"]


def test_double_descent_peak_at_alpha_one(system):
    for lam in (0.0, 1e-3):
        cfg = cfg_of(samples=2.0, lr=0.05, noise=0.5, weight_decay=lam, t1=1000.0)
        dd = F.solve(system, cfg).double_descent
        assert 1.0 in dd["samples"]
        assert dd["peak_samples_converged"] == 1.0
        assert 0.85 <= dd["peak_samples_t1"] <= 1.2
        if lam == 0.0:
            assert dd["risk_converged"][dd["samples"].index(1.0)] is None  # infinite


def test_grad_equals_central_differences(system):
    # The solve is exact to rounding (~1e-15): central differences at h = 1e-5 carry ~1e-10
    # truncation + 1e-10 rounding error; tolerance 1e-6 relative.
    import dataclasses

    import hildlimits as hl

    # (t1 = 10 and this order of names: the compiled gradient is shared with test_cli_commands)
    cfg = cfg_of(samples=1.5, lr=0.2, noise=0.5, weight_decay=0.05, Q=0.3, R=0.2, T=1.2, t1=10.0)
    names = {
        "data.samples": "samples",
        "model.noise": "noise",
        "model.weight_decay": "weight_decay",
        "training.lr": "lr",
        "init.Q": "Q",
        "init.R": "R",
        "init.T": "T",
    }
    value, grads = hl.gradient(system, config=cfg, wrt=list(names))

    def risk(**ch):  # at t1 exactly (the config's solve would round t1 to whole steps)
        c = dataclasses.replace(cfg, **ch)
        return float(F.solve(system, c, ts=[0.0, 10.0], extras=False).risk[-1])

    assert value == pytest.approx(risk(), rel=1e-12)
    for name, attr in names.items():
        x0 = getattr(cfg, attr)
        h = 1e-5 * max(abs(x0), 1.0)
        fd = (risk(**{attr: x0 + h}) - risk(**{attr: x0 - h})) / (2 * h)
        assert grads[name] == pytest.approx(fd, rel=1e-6, abs=1e-9), name


# ----------------------------------------------------------------------------- command line

GOOD = """
[model]
kind = "least_squares"
noise = 0.5
[data]
samples = 2.0
[training]
lr = 0.1
[solve]
t1 = 10.0
n_save = 12
"""


@pytest.mark.parametrize(
    "change, key",
    [
        (("samples = 2.0", "samples = 0.0"), "data.samples"),
        (("samples = 2.0", "samples = -1.5"), "data.samples"),
        (("samples = 2.0", 'samples = "two"'), "data.samples"),
        (("lr = 0.1", "lr = 0.1\ngradient_flow = true"), "training.gradient_flow"),
        (("lr = 0.1", "gradient_flow = true\nfull_batch = true"), "training.gradient_flow"),
        (("lr = 0.1", "full_batch = false"), "training.full_batch"),
        (("lr = 0.1", "lr = -0.1"), "training.lr"),
        (("noise = 0.5", "noise = -0.5"), "model.noise"),
        (("noise = 0.5", "weight_decay = -1.0"), "model.weight_decay"),
        (("[solve]", "[init]\nQ = 0.1\nR = 0.5\n[solve]"), "init.R"),
        (("[solve]", "[init]\nT = 0.0\n[solve]"), "init.T"),
        (("[solve]", "[init]\nq = 0.1\n[solve]"), "init.q"),
        (("t1 = 10.0", "t1 = 0.05"), "solve.t1"),
        (("n_save = 12", "nodes = 3"), "solve.nodes"),
        (("[data]\nsamples = 2.0\n", ""), "[data]"),
    ],
)
def test_bad_input_exits_2_naming_the_key(tmp_path, capsys, change, key):
    path = tmp_path / "bad.toml"
    path.write_text(GOOD.replace(*change))
    assert main(["solve", str(path), "--out", str(tmp_path / "o.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and key in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_gradient_flow_refuses_schedules_and_lr(tmp_path, capsys):
    path = tmp_path / "gf.toml"
    path.write_text(GOOD.replace("lr = 0.1", "gradient_flow = true"))
    out = str(tmp_path / "o")
    assert (
        main(["optimize-schedule", str(path), "--pieces", "2", "--steps", "2", "--out", out]) == 2
    )
    assert "training.gradient_flow" in capsys.readouterr().err
    assert main(["grad", str(path), "--wrt", "training.lr", "--out", out + ".json"]) == 2
    assert "training.lr" in capsys.readouterr().err


def test_cli_commands(system, tmp_path, capsys):
    path = tmp_path / "ls.toml"
    path.write_text(GOOD)
    cfg = str(path)
    assert main(["derive", cfg]) == 0 and "Marchenko-Pastur" in capsys.readouterr().out
    assert (
        main(["solve", cfg, "--out", str(tmp_path / "s.json"), "--plot", str(tmp_path / "s.png")])
        == 0
    )
    data = json.loads((tmp_path / "s.json").read_text())
    for key in (
        "t",
        "risk",
        "train_loss",
        "steps",
        "early_stopping",
        "risk_converged",
        "double_descent",
    ):
        assert key in data, key
    assert data["meta"]["config"]["data"]["samples"] == 2.0
    assert (
        main(["simulate", cfg, "--N", "64", "--seeds", "2", "--out", str(tmp_path / "m.json")]) == 0
    )
    sim = json.loads((tmp_path / "m.json").read_text())
    assert sim["n"] == 128 and len(sim["risk"]) == len(sim["train_loss"]) == len(sim["t"])
    args = ["validate", cfg, "--N", "64", "--seeds", "4", "--rel-tol", "0.2"]
    assert main(args + ["--out", str(tmp_path / "v")]) == 0
    rep = json.loads((tmp_path / "v" / "report.json").read_text())
    assert [r["N"] for r in rep["per_N"]] == [64] and rep["passed"]
    # sweep: every point equals its own solve to 1e-10 (the same runner; vmap keeps a step size
    # per point)
    params = ["data.samples=0.5,1,3", "model.noise=0,0.5", "training.lr=0.1,0.2"]
    args = ["sweep", cfg, *[x for p in params for x in ("--param", p)]]
    assert main(args + ["--out", str(tmp_path / "w")]) == 0
    res = json.loads((tmp_path / "w" / "sweep.json").read_text())
    assert len(res["points"]) == 12 and all(s == "ok" for s in res["status"])
    base = F.config(__import__("tomllib").loads(GOOD))
    for p, risk in zip(res["points"], res["risk"], strict=True):
        c = dataclasses.replace(
            base, samples=p["data.samples"], noise=p["model.noise"], lr=p["training.lr"]
        )
        tr = F.solve(system, c, ts=res["t"], extras=False)
        np.testing.assert_allclose(risk, tr.risk, rtol=1e-10, atol=0)
    g = tmp_path / "g.json"
    names = "data.samples,model.noise,model.weight_decay,training.lr,init.Q,init.R,init.T"
    assert main(["grad", cfg, "--wrt", names, "--out", str(g)]) == 0
    assert set(json.loads(g.read_text())["grad"]) == set(names.split(","))


@pytest.mark.slow  # ~60 s: a 64-point constant sweep and a differentiated scheduled solve
def test_cli_optimize_schedule(tmp_path):
    path = tmp_path / "ls.toml"
    path.write_text(GOOD)
    out = tmp_path / "o"
    args = ["optimize-schedule", str(path), "--pieces", "3", "--steps", "5", "--N", "64"]
    assert main(args + ["--seeds", "2", "--out", str(out)]) == 0
    data = json.loads((out / "schedule.json").read_text())
    assert data["parameter"] == "training.lr" and len(data["schedule"]) == 3
    assert data["risk_t1_ode"]["optimised"] <= data["risk_t1_ode"]["best_constant"] * (1 + 1e-9)


@pytest.mark.slow  # ~2-4 min: N = 1000, 2000, 4000
def test_finite_size_study(system):
    # alpha = 2, sigma = 0.5, GD lr = 0.1 to t = 20: one run's deviation from the N -> oo theory
    # (RMS over seeds and save times) shrinks with N (log-log slope below -0.35; the O(1/sqrt N)
    # fluctuations dominate), and the seed mean stays within 4 standard errors + 0.5
    # max(theory)/N at every N.
    cfg = cfg_of(samples=2.0, lr=0.1, noise=0.5, t1=20.0, n_save=15)
    devs = []
    Ns = (1000, 2000, 4000)
    for N, seeds in zip(Ns, (16, 8, 4), strict=True):
        sim = F.simulate(cfg, options={"N": N, "seeds": seeds, "seed": 3})
        ode = F.solve(system, cfg, ts=sim.t, extras=False)
        _agreement(sim, ode, N)
        devs.append(float(np.sqrt(np.mean((sim.risk - ode.risk) ** 2))))
    assert np.polyfit(np.log(Ns), np.log(devs), 1)[0] < -0.35, devs
