"""The deep linear family (``kind = "deep_linear"``): closed forms of Saxe et al. (balanced, L = 2)
and Braun et al. (lambda-balanced, L = 2), a quadrature reference for L > 2, finite networks
against the ODE, and every command.

Float64 throughout (set here and in conftest.py). Tolerances:

* closed forms and quadrature: 1e-6 absolute on the mode strengths (singular values <= 3): the
  ODE is solved at rtol 1e-10 / atol 1e-12, so the solver error is ~1e-9; the quadrature
  reference (scipy ``quad`` at epsabs 1e-13, ``brentq`` at xtol 1e-14) is good to ~1e-11;
* simulations: the shared criterion (``|d| <= z se + rel * risk``) with z = 5 standard errors of
  the seed mean and, at the reduced sizes of the default suite, rel = 0.15: the finite-size
  correction is O(1/N) (measured: mean |d| ~ N^-0.9, ~10% of the risk at N = 128); the slow
  test at N = 512 uses rel = 0.05;
* sweep point vs its own solve: 1e-10 relative (the same runner and tolerances under vmap);
* grad vs central differences: 1e-5 relative (h = 1e-5 relative; solves at rtol 1e-10).
"""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib

import jax
import numpy as np
import pytest

import hildlimits as hl
from hildlimits._cli import main
from hildlimits._families import get_family

jax.config.update("jax_enable_x64", True)

FAM = get_family("deep_linear")

BASE = """
[model]
kind = "deep_linear"
depth = {depth}
teacher_singular_values = {s}
noise = {noise}
hidden_dim = {hidden}

[training]
lr = {lr}
gradient_flow = {gf}

[init]
modes = {modes}
balance = {balance}

[solve]
t1 = {t1}
n_save = {n_save}
spacing = "linear"
rtol = 1e-10
atol = 1e-12
"""


def _text(**kw) -> str:
    d = dict(
        depth=2,
        s=[3.0, 2.0, 1.0],
        noise=0.0,
        hidden=1.0,
        lr=1.0,
        gf="true",
        modes=[1e-3, 1e-3, 1e-3],
        balance=0.0,
        t1=6.0,
        n_save=25,
    )
    d.update(kw)
    return BASE.format(**d)


def _cfg(**kw):
    return hl.config_from_dict(tomllib.loads(_text(**kw)), source="<test>")


def _solve(cfg):
    return FAM.solve(FAM.derive(cfg), cfg)


# ----------------------------------------------------------------------------- closed forms


def test_derivation_is_saxes_gradient_flow():
    import sympy as sp

    system = FAM.derive(_cfg())
    eq = system.equations
    w1, w2, s, G, Phi = sp.symbols("w1 w2 s G Phi")
    sub = {str(x): x for x in (w1, w2, s, G, Phi)}
    e = {k: v.subs({x: sub[str(x)] for x in v.free_symbols}) for k, v in eq.items()}
    # no bulk: dw1/dtau = w2 (s - w1 w2), dw2/dtau = w1 (s - w1 w2)  (Saxe et al. 2014)
    assert sp.expand(e["w1"].subs({G: 0, Phi: 0}) - w2 * (s - w1 * w2)) == 0
    assert sp.expand(e["w2"].subs({G: 0, Phi: 0}) - w1 * (s - w1 * w2)) == 0
    assert sp.expand(e["risk"].subs({G: 0, Phi: 0}) - (s - w1 * w2) ** 2 / 2) == 0
    assert "dw1/dτ" in str(system) and "\\frac{dG_\\alpha}" in system.latex()


def test_saxe_sigmoid_balanced_small_init():
    # Saxe, McClelland & Ganguli (2014): pi(tau) = s e^{2 s tau} / (e^{2 s tau} - 1 + s / pi0)
    s = np.array([3.0, 2.0, 1.0])
    pi0 = np.array([1e-3, 2e-3, 1e-2])
    cfg = _cfg(s=s.tolist(), modes=pi0.tolist(), t1=8.0, n_save=41)
    tr = _solve(cfg)
    assert tr.status.ok
    t = tr.t[:, None]
    ref = s * np.exp(2 * s * t) / (np.exp(2 * s * t) - 1 + s / pi0)
    assert np.abs(tr.modes - ref).max() < 1e-6
    np.testing.assert_allclose(tr.risk, 0.5 * ((s - ref) ** 2).sum(1), rtol=0, atol=1e-6)
    # balanced stays balanced, and the bulk stays zero under gradient flow
    np.testing.assert_allclose(tr.layers[..., 0], tr.layers[..., 1], rtol=0, atol=1e-9)
    assert np.all(tr.bulk_input == 0) and np.all(tr.bulk_output == 0)


def _tau_of(pi, pi0, s, L):
    """Time for a balanced depth-L mode to go from pi0 to pi: the integral of
    dpi / (L pi^(2 - 2/L) (s - pi))."""
    from scipy.integrate import quad

    val, _ = quad(
        lambda p: 1.0 / (L * p ** (2 - 2 / L) * (s - p)),
        pi0,
        pi,
        epsabs=1e-13,
        epsrel=1e-13,
        limit=200,
    )
    return val


def test_deep_balanced_against_quadrature():
    # No closed form for L > 2: balanced modes obey dpi/dtau = L pi^(2 - 2/L) (s - pi), so the
    # time to reach pi is tau(pi) = int_pi0^pi dp / (L p^(2 - 2/L) (s - p)) (scipy quad). The
    # error in pi is |tau(pi_ode) - tau| * |dpi/dtau| (to first order).
    depth = 3
    s = np.array([3.0, 2.0, 1.0])
    pi0 = np.array([0.05, 0.02, 0.1])
    cfg = _cfg(depth=depth, s=s.tolist(), modes=pi0.tolist(), t1=8.0, n_save=41)
    tr = _solve(cfg)
    assert tr.status.ok
    worst = 0.0
    for i, t in enumerate(tr.t[1:], start=1):
        for a in range(3):
            p = tr.modes[i, a]
            rate = depth * p ** (2 - 2 / depth) * (s[a] - p)
            worst = max(worst, abs(_tau_of(p, pi0[a], s[a], depth) - t) * rate)
    assert worst < 1e-6
    np.testing.assert_allclose(
        tr.layers, np.repeat(tr.modes[..., None] ** (1 / depth), depth, -1), atol=1e-8
    )


@pytest.mark.parametrize("lam", [-1.0, 0.5, 2.0])
def test_braun_lambda_balanced_two_layers(lam):
    # Braun, Dominé, Fitzgerald & Saxe (2022): a^2 - b^2 = lambda is conserved; with
    # p = a + b, P = p^2 obeys the Riccati equation dP/dtau = -(P - P+)(P - P-)/2,
    # P+- = 2 s +- sqrt(4 s^2 + lambda^2), so (P - P+)/(P - P-) = C exp(-k tau),
    # k = sqrt(4 s^2 + lambda^2), and pi = (P - lambda^2 / P) / 4, a = (p + lambda/p)/2,
    # b = (p - lambda/p)/2.
    s = np.array([3.0, 1.5, 0.5])
    pi0 = np.array([0.0 if lam > 0 else 0.01, 0.2, 1.0])
    cfg = _cfg(s=s.tolist(), modes=pi0.tolist(), balance=lam, t1=8.0, n_save=41)
    tr = _solve(cfg)
    assert tr.status.ok
    b0 = np.sqrt(0.5 * (np.sqrt(lam**2 + 4 * pi0**2) - lam))
    a0 = np.sqrt(b0**2 + lam)
    np.testing.assert_allclose(tr.layers[0, :, 0], b0, atol=1e-12)
    np.testing.assert_allclose(tr.layers[0, :, 1], a0, atol=1e-12)
    k = np.sqrt(4 * s**2 + lam**2)
    Pp, Pm = 2 * s + k, 2 * s - k
    P0 = (a0 + b0) ** 2
    C = (P0 - Pp) / (P0 - Pm)
    E = C * np.exp(-k * tr.t[:, None])
    P = (Pp - E * Pm) / (1 - E)
    pi = (P - lam**2 / P) / 4
    p = np.sqrt(P)
    assert np.abs(tr.modes - pi).max() < 1e-6
    assert np.abs(tr.layers[..., 1] - (p + lam / p) / 2).max() < 1e-6
    assert np.abs(tr.layers[..., 0] - (p - lam / p) / 2).max() < 1e-6
    a2b2 = tr.layers[..., 1] ** 2 - tr.layers[..., 0] ** 2
    np.testing.assert_allclose(a2b2, lam, atol=1e-8)


def test_lambda_balanced_deep_start():
    # w_l^2 = x + (l - 1) lambda with prod_l w_l = pi0 (bisection + Newton): realised exactly.
    from hildlimits._families.deep_linear.model import layer_strengths_numpy

    pi0 = np.array([0.0, 1e-3, 0.5, 2.0])
    for lam in (-0.3, 0.0, 0.7):
        w = layer_strengths_numpy(pi0, lam, 4)
        np.testing.assert_allclose(np.prod(w, axis=1), pi0, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(np.diff(w**2, axis=1), lam, atol=1e-12)
        assert np.all(w >= 0)


# ----------------------------------------------------------------------------- simulations


# three modes and 41 save times, as the gradient-flow tests: the compiled ODE solve is shared
SIM = dict(s=[2.0, 1.0, 0.5], noise=0.3, gf="false", modes=[0.05] * 3, hidden=0.5, n_save=41)


@pytest.mark.parametrize("depth,lr,t1,balance", [(2, 0.5, 6.0, 0.0), (3, 0.3, 8.0, 0.2)])
def test_trained_network_follows_the_ode(depth, lr, t1, balance):
    cfg = _cfg(depth=depth, lr=lr, t1=t1, balance=balance, **SIM)
    tol = hl.Tolerance(z_tol=5.0, rel_tol=0.15, abs_tol=1e-5)
    report, sims, odes = hl.validate(cfg, Ns=[128], seeds=8, tolerance=tol)
    row = report["per_N"][0]
    assert report["passed"], report["reason"]
    # the modes: within 5 se + 0.1 (finite-size shift of the transition times)
    sim, ode = sims[0], odes[0]
    assert np.all(np.abs(sim.modes_mean - ode.modes) <= 5 * sim.modes_sem + 0.1)
    # the noise-driven bulk exists in both and agrees to O(1/N)
    assert ode.bulk_input[-1].min() > 0.01
    np.testing.assert_allclose(sim.bulk_input.mean(0)[-1], ode.bulk_input[-1], rtol=0.3)
    np.testing.assert_allclose(sim.bulk_output.mean(0)[-1], ode.bulk_output[-1], rtol=0.3)
    assert row["N"] == 128 and sim.dims["hidden"] == [64] * (depth - 1)
    # the finite network starts at the configured (lambda-balanced) modes, without bulk
    np.testing.assert_allclose(sim.modes[:, 0], 0.05, atol=1e-12)
    np.testing.assert_allclose(np.diff(sim.layers[:, 0] ** 2, axis=-1), balance, atol=1e-12)
    assert np.all(np.abs(sim.bulk_input[:, 0]) < 1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("depth,lr,t1", [(2, 0.5, 6.0), (3, 0.3, 8.0)])
def test_trained_network_follows_the_ode_large(depth, lr, t1):
    cfg = _cfg(depth=depth, lr=lr, t1=t1, **(SIM | {"hidden": 1.0}))
    tol = hl.Tolerance(z_tol=5.0, rel_tol=0.05, abs_tol=1e-5)
    report, sims, odes = hl.validate(cfg, Ns=[128, 512], seeds=8, tolerance=tol)
    assert report["passed"], report["reason"]
    rows = report["per_N"]
    assert rows[1]["mean_abs_deviation"] < rows[0]["mean_abs_deviation"]
    sim, ode = sims[-1], odes[-1]
    assert np.all(np.abs(sim.modes_mean - ode.modes) <= 5 * sim.modes_sem + 0.03)


# ----------------------------------------------------------------------------- every command


def test_sweep_point_equals_its_own_solve():
    cfg = _cfg(**SIM | {"hidden": 1.0}, lr=0.5, t1=4.0)
    system = FAM.derive(cfg)
    params = {"training.lr": [0.2, 0.8], "init.balance": [0.0, 0.5], "model.noise": [0.0, 0.5]}
    res = hl.sweep(system, config=cfg, params=params, n_save=41, spacing="linear", batch_size=8)
    assert all(s == "ok" for s in res.status)
    for i, p in enumerate(res.points):
        tr = FAM.solve(system, FAM.with_values(cfg, p))
        np.testing.assert_allclose(res.risk[i], tr.risk, rtol=1e-10, atol=0)
    with pytest.raises(hl.ConfigError, match="training.lr must be positive"):
        FAM.with_values(cfg, {"training.lr": -1.0})


def test_grad_equals_central_differences():
    cfg = _cfg(depth=3, lr=0.4, t1=3.0, balance=0.2, **SIM | {"modes": [0.1, 0.3, 0.0]})
    system = FAM.derive(cfg)
    wrt = [
        "training.lr",
        "model.noise",
        "init.scale",
        "init.balance",
        "model.output_dim",
        "init.modes",
        "model.teacher_singular_values",
    ]
    value, grads = hl.gradient(system, config=cfg, wrt=wrt)

    def risk_at(**changes):
        return float(FAM.solve(system, dataclasses.replace(cfg, **changes)).risk[-1])

    assert value == pytest.approx(risk_at(), rel=1e-9)
    for name, attr in [
        ("training.lr", "lr"),
        ("model.noise", "noise"),
        ("init.scale", "scale"),
        ("init.balance", "balance"),
        ("model.output_dim", "output_dim"),
    ]:
        x0 = getattr(cfg, attr)
        h = 1e-5 * max(abs(x0), 1e-2)
        fd = (risk_at(**{attr: x0 + h}) - risk_at(**{attr: x0 - h})) / (2 * h)
        assert grads[name] == pytest.approx(fd, rel=1e-5, abs=1e-9), name
    for name, attr in [("init.modes", "modes"), ("model.teacher_singular_values", "teacher")]:
        x0 = np.asarray(getattr(cfg, attr))
        for k in range(len(x0)):
            e = np.zeros(len(x0))
            e[k] = 1e-5 * max(abs(x0[k]), 1e-2)
            fd = (risk_at(**{attr: x0 + e}) - risk_at(**{attr: x0 - e})) / (2 * e[k])
            assert grads[name][k] == pytest.approx(fd, rel=1e-5, abs=1e-9), (name, k)


@pytest.mark.slow
def test_schedule_in_solve_and_simulation():
    cfg = _cfg(**SIM, lr=0.5, t1=2.0)
    system = FAM.derive(cfg)
    const = hl.Schedule.constant(0.5)
    a, b = FAM.solve(system, cfg), FAM.solve(system, cfg, schedule=const)
    np.testing.assert_allclose(a.risk, b.risk, rtol=1e-12)
    two = hl.Schedule.pieces([0.8, 0.1], 2.0)
    assert not np.allclose(FAM.solve(system, cfg, schedule=two).risk, a.risk)
    opts = {"N": 32, "seeds": 2, "seed": 1}
    s1 = FAM.simulate(cfg, options=opts)
    s2 = FAM.simulate(cfg, options=opts, schedule=const)
    np.testing.assert_allclose(s1.risk, s2.risk, rtol=1e-12)
    assert not np.allclose(FAM.simulate(cfg, options=opts, schedule=two).risk, s1.risk)
    with pytest.raises(hl.ConfigError, match="gradient_flow = false"):
        FAM.schedule_value(_cfg())


def _write(tmp_path, text, name="c.toml"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_cli_solve_outputs(tmp_path, capsys):
    # the configuration of test_saxe_sigmoid_balanced_small_init (its compiled run is reused)
    text = _text(modes=[1e-3, 2e-3, 1e-2], t1=8.0, n_save=41)
    cfg = _write(tmp_path, text)
    out = tmp_path / "s.json"
    assert main(["solve", cfg, "--out", str(out), "--plot", str(tmp_path / "s.png")]) == 0
    data = json.loads(out.read_text())
    keys = {"t", "risk", "modes", "layers", "bulk_input", "bulk_output", "map_norm_sq"}
    assert keys <= set(data) and data["time_unit"] == "tau = lr * steps / N"
    assert np.shape(data["modes"]) == (41, 3) and np.shape(data["layers"]) == (41, 3, 2)
    assert data["meta"]["config"]["model"]["kind"] == "deep_linear"
    assert (tmp_path / "s.png").stat().st_size > 0
    assert main(["derive", cfg, "--source"]) == 0
    assert "def vector_field" in capsys.readouterr().out


@pytest.mark.slow
def test_cli_simulate_validate_outputs(tmp_path):
    cfg = _write(tmp_path, _text(**SIM | {"hidden": 0.5, "n_save": 5}, lr=0.5, t1=2.0))
    sim = tmp_path / "sim.json"
    assert main(["simulate", cfg, "--N", "16", "--seeds", "2", "--out", str(sim)]) == 0
    d = json.loads(sim.read_text())
    assert np.shape(d["modes"]) == (5, 3) and len(d["risk"]) == 5
    v = tmp_path / "val"
    args = ["validate", cfg, "--N", "16,32", "--seeds", "2", "--rel-tol", "1", "--out", str(v)]
    assert main(args) == 0
    assert (v / "report.json").exists() and (v / "modes.png").stat().st_size > 0


BAD = [
    ({"depth": 1}, "model.depth must be an integer >= 2, got 1"),
    ({"s": [1.0, -2.0]}, "model.teacher_singular_values must be non-negative"),
    ({"modes": [0.1, -0.1, 0.1]}, "init.modes must be non-negative"),
    ({"modes": [0.1, 0.1]}, "init.modes must have 3 entries"),
    ({"lr": 0.0}, "training.lr must be positive, got 0.0"),
    ({"noise": -1.0}, "model.noise must be non-negative"),
    ({"hidden": [1.0, 1.0]}, "model.hidden_dim must be one ratio or a list of depth - 1 = 1"),
    ({"gf": '"yes"'}, "training.gradient_flow must be true or false"),
]


@pytest.mark.parametrize("change,message", BAD)
def test_bad_input_exits_2_naming_the_key(tmp_path, capsys, change, message):
    cfg = _write(tmp_path, _text(**change))
    assert main(["solve", cfg, "--out", str(tmp_path / "o.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_more_modes_than_dimensions_exits_2(tmp_path, capsys):
    cfg = _write(tmp_path, _text())
    assert main(["simulate", cfg, "--N", "2", "--out", str(tmp_path / "o.json")]) == 2
    err = capsys.readouterr().err
    assert "model.teacher_singular_values has 3 values" in err and "--N 2" in err
    text = _text(hidden=0.01)
    cfg = _write(tmp_path, text, "h.toml")
    assert main(["validate", cfg, "--N", "100", "--out", str(tmp_path / "v")]) == 2
    assert "model.hidden_dim" in capsys.readouterr().err
    assert main(["grad", cfg, "--wrt", "init.Q", "--out", str(tmp_path / "g.json")]) == 2
    assert "for model.kind = 'deep_linear'" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_sweep_grad_optimize_schedule(tmp_path):
    cfg = _write(tmp_path, _text(**SIM, lr=0.5, t1=3.0))
    sw = tmp_path / "sw"
    assert main(["sweep", cfg, "--param", "training.lr=0.2,0.6", "--out", str(sw)]) == 0
    assert len(json.loads((sw / "sweep.json").read_text())["points"]) == 2
    g = tmp_path / "g.json"
    assert main(["grad", cfg, "--wrt", "training.lr,init.modes", "--out", str(g)]) == 0
    assert len(json.loads(g.read_text())["grad"]["init.modes"]) == 3
    sched = tmp_path / "sched"
    args = ["optimize-schedule", cfg, "--pieces", "2", "--steps", "3", "--N", "32"]
    assert main(args + ["--seeds", "2", "--out", str(sched)]) == 0
    data = json.loads((sched / "schedule.json").read_text())
    assert data["parameter"] == "training.lr" and len(data["schedule"]) == 2
    assert data["risk_t1_ode"]["optimised"] <= data["risk_t1_ode"]["best_constant"] * (1 + 1e-9)


def test_example_config_loads():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cfg = hl.load_config(os.path.join(root, "examples", "deep_linear.toml"))
    assert cfg.kind == "deep_linear"
