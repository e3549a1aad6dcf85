"""The model-family interface: registry, every command for every family, the shared runner's
outcomes and guards (sweep, grad and schedules of the mean-field family, the gradient solve's
step-collapse guard, refusal of unsupported commands)."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hildlimits as hl
from hildlimits import _families
from hildlimits._cli import main
from hildlimits._families import Family, get_family
from hildlimits._pipeline import runner as _runner

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

GRAD_NAMES = [
    "training.lr_second_layer",
    "training.lr",
    "init.a_mean",
    "init.a_std",
    "init.q",
    "model.noise",
    "init.T",
    "init.v_teacher",
]

MF_CONFIG = """
[model]
kind = "meanfield"
M = 1
activation = "erf"
train_second_layer = true

[training]
lr = 0.2
lr_second_layer = 0.3

[init]
T = [[1.0]]
v_teacher = [1.0]
q = 0.8
a_mean = 0.2
a_std = 0.7
particles = 64

[solve]
t1 = 1.5
n_save = 6
spacing = "linear"
rtol = 1e-10
atol = 1e-12
"""


def _mf(tmp_path, text=MF_CONFIG):
    path = tmp_path / "mf.toml"
    path.write_text(text)
    return str(path)


@pytest.fixture(scope="module")
def mf_cfg():
    return hl.config_from_dict(__import__("tomllib").loads(MF_CONFIG), source="<test>")


# ----------------------------------------------------------------------------- registry


def test_registry_families_and_errors():
    assert set(hl.available_families()) >= {"committee", "meanfield"}
    for kind in hl.available_families():
        fam = get_family(kind)
        assert isinstance(fam, Family) and fam.kind == kind
        # every registered family supports every command and declares its parameters
        assert set(fam.commands) == set(_families.COMMANDS)
        assert fam.sweepable and fam.differentiable and fam.schedule_param
    with pytest.raises(hl.ConfigError, match=r"model.kind must be one of .*'meanfeild'.*did you"):
        get_family("meanfeild")
    with pytest.raises(hl.ConfigError, match="model.kind must be one of"):
        get_family(["committee"])


def test_config_kind_is_looked_up_once(tmp_path):
    cfg = hl.load_config(os.path.join(ROOT, "examples", "goldt_k2.toml"))
    assert cfg.kind == "committee" and _families.family_of(cfg).kind == "committee"
    mf = hl.load_config(_mf(tmp_path))
    assert mf.kind == "meanfield" and _families.family_of(mf).kind == "meanfield"


class _LimitedFamily(Family):
    kind = "limited"
    commands = ("derive",)

    def config(self, data, *, source="<dict>"):
        import types

        return types.SimpleNamespace(kind="limited", source=source)


def test_unsupported_command_is_refused_with_exit_2(tmp_path, capsys, monkeypatch):
    import sys
    import types

    mod = types.ModuleType("hildlimits_test_limited_family")
    mod.FAMILY = _LimitedFamily()
    monkeypatch.setitem(sys.modules, mod.__name__, mod)
    monkeypatch.setitem(_families.REGISTRY, "limited", mod.__name__)
    path = tmp_path / "l.toml"
    path.write_text('[model]\nkind = "limited"\n')
    for cmd in (["solve", "--out", str(tmp_path / "o.json")], ["grad", "--wrt", "x", "--out", "o"]):
        assert main([cmd[0], str(path), *cmd[1:]]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error:") and f"'{cmd[0]}' is not available" in err
        assert "limited" in err and "Traceback" not in err


def test_family_flag_of_another_family_is_refused(tmp_path, capsys):
    cfg = os.path.join(ROOT, "examples", "goldt_k2.toml")
    out = str(tmp_path / "s.json")
    assert main(["simulate", cfg, "--N", "16", "--width", "4", "--out", out]) == 2
    assert "--width applies to model.kind = 'meanfield' only" in capsys.readouterr().err
    mf = _mf(tmp_path)
    args = ["simulate", mf, "--N", "16", "--width", "4", "--test-samples", "5", "--out", out]
    assert main(args) == 2
    assert "--test-samples applies to model.kind = 'committee' only" in capsys.readouterr().err


# ----------------------------------------------------------------------------- outcomes


def test_run_status_renders_todays_strings():
    s = _runner.RunStatus.of(_runner.Status.DIVERGED, 12.5)
    assert s == "diverged at t=12.5" and s.diverged and s.t == 12.5
    assert json.dumps({"status": s}) == '{"status": "diverged at t=12.5"}'
    assert (
        _runner.RunStatus.of(_runner.Status.OK) == "ok"
        and _runner.RunStatus.of(_runner.Status.OK).ok
    )
    assert _runner.RunStatus.of(_runner.Status.STEADY, 3.0) == "steady state at t=3"
    step = _runner.RunStatus.diverged_at_step(40, 0.04)
    assert step == "diverged at step 40 (t=0.04)" and step.diverged
    for text in ("diverged at t=2", "diverged at step 5 (t=0.5)", "ok", "steady state at t=1"):
        parsed = _runner.RunStatus.parse(text)
        assert parsed == text
    assert _runner.RunStatus.parse("diverged at step 5 (t=0.5)").t == 0.5
    assert _runner.RunStatus.parse("interrupted at t=4").kind is _runner.Status.INTERRUPTED


# ----------------------------------------------------------------------------- mean field: every command


def test_meanfield_sweep_points_equal_individual_solves(mf_cfg):
    # The same runner with the same tolerances: vmap keeps a step size per point, so each point
    # equals its own solve up to rounding (1e-10 relative on the risk).
    fam = get_family("meanfield")
    system = fam.derive(mf_cfg)
    params = {
        "training.lr_second_layer": [0.1, 0.4],
        "init.a_std": [0.5, 1.0],
        "init.q": [0.6, 1.1],
    }
    res = hl.sweep(system, config=mf_cfg, params=params, n_save=6, spacing="linear", batch_size=8)
    assert len(res.points) == 8 and all(s == "ok" for s in res.status)
    for i, p in enumerate(res.points):
        init = hl.MeanFieldInit(
            T=[[1.0]],
            v_teacher=[1.0],
            q=p["init.q"],
            a_mean=mf_cfg.init.a_mean,
            a_std=p["init.a_std"],
            particles=64,
        )
        tr = hl.solve_meanfield(
            system,
            model=mf_cfg.model,
            init=init,
            lr=0.2,
            lr_second_layer=p["training.lr_second_layer"],
            t1=1.5,
            n_save=6,
            spacing="linear",
            rtol=1e-10,
            atol=1e-12,
        )
        np.testing.assert_allclose(res.risk[i], tr.risk, rtol=1e-10, atol=0)


def test_meanfield_sweep_lr_follows_when_tied(tmp_path):
    # lr_second_layer not configured: it follows the swept lr, so eta_a / eta stays 1 and every
    # point of an lr sweep has the same tau-dynamics.
    cfg = hl.load_config(_mf(tmp_path, MF_CONFIG.replace("lr_second_layer = 0.3\n", "")))
    assert cfg.lr_tied
    system = get_family("meanfield").derive(cfg)
    res = hl.sweep(
        system, config=cfg, params={"training.lr": [0.1, 0.5]}, n_save=6, spacing="linear"
    )
    np.testing.assert_allclose(res.risk[0], res.risk[1], rtol=1e-12)
    res = hl.sweep(
        system, config=cfg, params={"model.noise": [0.0, 0.5]}, n_save=6, spacing="linear"
    )
    np.testing.assert_allclose(res.risk[0], res.risk[1], rtol=1e-12)  # noise: not in the ODE


def test_meanfield_grad_equals_central_differences(mf_cfg):
    # Central differences of the solve at h = 1e-5 (relative) against reverse mode: both solves at
    # rtol 1e-10, so the difference quotient carries ~1e-10/1e-5 = 1e-5 relative noise at most;
    # tolerance 1e-5 relative (the target), 1e-9 absolute for the zero noise gradient.
    fam = get_family("meanfield")
    system = fam.derive(mf_cfg)
    wrt = GRAD_NAMES
    value, grads = hl.gradient(system, config=mf_cfg, wrt=wrt)
    assert grads["model.noise"] == 0.0

    def risk_at(**changes):
        import dataclasses

        cfg = mf_cfg
        init_changes = {
            k: v for k, v in changes.items() if k in ("a_mean", "a_std", "q", "T", "v_teacher")
        }
        if init_changes:
            cfg = dataclasses.replace(cfg, init=dataclasses.replace(cfg.init, **init_changes))
        rates = {k: v for k, v in changes.items() if k in ("lr", "lr_second_layer")}
        if rates:
            cfg = dataclasses.replace(cfg, **rates)
        return float(fam.solve(system, cfg).risk[-1])

    assert value == pytest.approx(risk_at(), rel=1e-9)
    ini = mf_cfg.init
    for name, attr, x0 in [
        ("training.lr_second_layer", "lr_second_layer", mf_cfg.lr_second_layer),
        ("training.lr", "lr", mf_cfg.lr),
        ("init.a_mean", "a_mean", ini.a_mean),
        ("init.a_std", "a_std", ini.a_std),
        ("init.q", "q", ini.q),
    ]:
        h = 1e-5 * max(abs(x0), 1.0)
        fd = (risk_at(**{attr: x0 + h}) - risk_at(**{attr: x0 - h})) / (2 * h)
        assert grads[name] == pytest.approx(fd, rel=1e-5, abs=1e-9), name
    h = 1e-5
    fd_T = (risk_at(T=[[1.0 + h]]) - risk_at(T=[[1.0 - h]])) / (2 * h)
    assert float(np.asarray(grads["init.T"])[0, 0]) == pytest.approx(fd_T, rel=1e-5)
    fd_v = (risk_at(v_teacher=[1.0 + h]) - risk_at(v_teacher=[1.0 - h])) / (2 * h)
    assert float(np.asarray(grads["init.v_teacher"])[0]) == pytest.approx(fd_v, rel=1e-5)


def test_meanfield_cli_sweep_grad_schedule(tmp_path, capsys):
    cfg = _mf(tmp_path)
    out = tmp_path / "sw"
    # (8 points and the gradient's names as in the tests above: the compiled runs are reused)
    args = ["sweep", cfg, "--param", "init.a_std=0.5,1", "--param", "training.lr=0.1,0.2,0.3,0.4"]
    assert main(args + ["--out", str(out)]) == 0
    data = json.loads((out / "sweep.json").read_text())
    assert len(data["points"]) == 8 and data["meta"]["config"]["model"]["kind"] == "meanfield"
    assert (out / "sweep.png").stat().st_size > 0
    assert main(["sweep", cfg, "--param", "init.Q=1,2", "--out", str(out)]) == 2
    assert "init.a_std" in capsys.readouterr().err  # the family's own names are listed
    g = tmp_path / "g.json"
    assert main(["grad", cfg, "--wrt", ",".join(GRAD_NAMES), "--out", str(g)]) == 0
    grads = json.loads(g.read_text())["grad"]
    assert set(grads) == set(GRAD_NAMES) and grads["model.noise"] == 0.0
    assert main(["grad", cfg, "--wrt", "init.Q", "--out", str(g)]) == 2
    assert "for model.kind = 'meanfield'" in capsys.readouterr().err


def test_meanfield_cli_optimize_schedule_needs_width(tmp_path, capsys):
    cfg = _mf(tmp_path)
    args = ["optimize-schedule", cfg, "--pieces", "2", "--steps", "3", "--N", "64"]
    assert main(args + ["--seeds", "2", "--out", str(tmp_path / "s")]) == 2
    assert "--width" in capsys.readouterr().err


@pytest.mark.slow  # ~50 s: compiles a reverse-mode solve with a schedule (committee: test_schedule)
def test_meanfield_optimize_schedule_python(mf_cfg):
    # Reduced: a 3-point constant grid, 2 pieces, 4 Adam steps; the optimised schedule starts at
    # the best constant rate, so its risk can only be lower or equal.
    fam = get_family("meanfield")
    system = fam.derive(mf_cfg)
    res = hl.optimize_schedule(
        system, config=mf_cfg, pieces=2, steps=4, constant_grid=[0.1, 0.4, 1.6]
    )
    assert res["parameter"] == "training.lr_second_layer"
    assert res["best_constant_lr"] in (0.1, 0.4, 1.6) and len(res["history"]) >= 1
    assert res["risk_optimised"] <= res["risk_best_constant"] * (1 + 1e-9)
    tr = fam.solve(system, mf_cfg, schedule=res["schedule"])
    assert tr.risk[-1] == pytest.approx(res["risk_optimised"], rel=1e-6)


@pytest.mark.slow
def test_meanfield_cli_optimize_schedule(tmp_path, capsys):
    cfg = _mf(tmp_path)
    sched = tmp_path / "sched"
    args = ["optimize-schedule", cfg, "--pieces", "2", "--steps", "3", "--N", "64"]
    assert main(args + ["--width", "8", "--seeds", "2", "--out", str(sched)]) == 0
    data = json.loads((sched / "schedule.json").read_text())
    assert data["parameter"] == "training.lr_second_layer" and len(data["schedule"]) == 2
    assert data["risk_t1_ode"]["optimised"] <= data["risk_t1_ode"]["best_constant"] * (1 + 1e-9)


def test_meanfield_schedule_solve_and_simulation_use_it(mf_cfg):
    # A constant schedule equals the constant rate, in the ODE and in the simulation (the same
    # seeds draw the same inputs).
    fam = get_family("meanfield")
    system = fam.derive(mf_cfg)
    const = hl.Schedule.constant(mf_cfg.lr_second_layer)
    a = fam.solve(system, mf_cfg)
    b = fam.solve(system, mf_cfg, schedule=const)
    np.testing.assert_allclose(a.risk, b.risk, rtol=1e-12)
    two = hl.Schedule.pieces([0.05, 0.6], 1.5)
    c = fam.solve(system, mf_cfg, schedule=two)
    assert not np.allclose(c.risk, a.risk)
    opts = {"N": 64, "width": 8, "seeds": 2, "seed": 3}
    s1 = fam.simulate(mf_cfg, options=opts)
    s2 = fam.simulate(mf_cfg, options=opts, schedule=const)
    np.testing.assert_allclose(s1.risk, s2.risk, rtol=1e-12)
    s3 = fam.simulate(mf_cfg, options=opts, schedule=two)
    assert not np.allclose(s3.risk, s1.risk)


def test_validate_python_function_for_every_family(mf_cfg):
    report, sims, odes = hl.validate(
        mf_cfg, Ns=[64, 128], width=[8, 16], seeds=2, tolerance=hl.Tolerance(rel_tol=1.0)
    )
    assert [r["width"] for r in report["per_width"]] == [8, 16] and report["passed"]
    assert len(sims) == len(odes) == 2 and sims[-1].width == 16


# ----------------------------------------------------------------------------- gradient guards


def test_gradient_solve_stops_cleanly_on_a_nan_vector_field():
    # The differentiated solve has the step-collapse guard of every solve: a right-hand side that
    # turns NaN at t = 2 stops it there with an error naming the time (without the guard it
    # runs through max_steps rejected steps).
    def vf(t, y, args):
        return {"x": jnp.where(t < 2.0, -args["k"] * y["x"], jnp.nan)}

    def risk(y, args):
        return y["x"] ** 2

    y0 = {"x": jnp.asarray(1.0)}
    args = {"k": jnp.asarray(0.5)} | _runner.bounds(y0, divergence_bound=1e8)
    with jax.enable_x64(True):

        def f(k):
            return _runner.final_value(
                vf,
                risk,
                y0,
                {**args, "k": k},
                t1=5.0,
                observable="final",
                solver="tsit5",
                rtol=1e-8,
                atol=1e-10,
                max_steps=100_000,
            )

        (value, info), g = jax.value_and_grad(f, has_aux=True)(jnp.asarray(0.5))
        assert not bool(info["max_steps"])
        with pytest.raises(hl.SolveError, match=r"failed at t=2"):
            _runner.check_differentiated(float(value), g, info, t1=5.0, max_steps=100_000)


def test_grad_reports_divergence_with_its_time(tmp_path, capsys):
    # A learning rate far too large (linear K = M = 1, lr = 5: the state grows exponentially):
    # the gradient solve stops at the divergence event and the command exits 1 naming the time,
    # as a diverging solve does (not a long equinox traceback after max_steps).
    path = tmp_path / "div.toml"
    path.write_text(
        '[model]\nK = 1\nM = 1\nactivation = "linear"\n[training]\nlr = 5.0\n'
        "[init]\nQ = [[0.2]]\nR = [[0.01]]\nT = [[1.0]]\n[solve]\nt1 = 100.0\n"
    )
    assert main(["grad", str(path), "--wrt", "training.lr", "--out", str(tmp_path / "g.json")]) == 1
    err = capsys.readouterr().err
    assert "diverged at t=" in err and "Traceback" not in err
