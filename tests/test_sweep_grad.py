"""Sweeps (batched, sharded, resumable) and gradients through the ODE solve."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import hildlimits as hl
from hildlimits._pipeline import sweep as _sweep
from hildlimits._pipeline.config import load_config
from hildlimits._pipeline.grad import gradient
from hildlimits._pipeline.sweep import parse_param, sweep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFG = load_config(os.path.join(ROOT, "examples", "goldt_k2.toml"))
SYSTEM = hl.derive(CFG.model)
OPTS = dict(t1=20.0, n_save=12, spacing="linear")


def test_parse_param():
    assert parse_param("training.lr=0.1:0.3:3") == ("training.lr", pytest.approx([0.1, 0.2, 0.3]))
    assert parse_param("training.lr=log:0.01:1:3")[1] == pytest.approx([0.01, 0.1, 1.0])
    assert parse_param("model.noise=0,0.1,0.2")[1] == [0.0, 0.1, 0.2]
    for bad, match in [
        ("solve.t1=1:2:3", "cannot be swept"),
        ("training.lrr=1:2:3", "must be one of"),
        ("training.lr", "must look like"),
        ("training.lr=a:b:c", "cannot parse"),
        ("training.lr=log:0:1:3", "positive"),
    ]:
        with pytest.raises(hl.ConfigError, match=match):
            parse_param(bad)


def test_sweep_points_equal_individual_solves():
    # Same solver, same tolerances: vmap keeps a step size per point, so each point equals its
    # own solve up to rounding (1e-10 relative on the risk).
    params = {"training.lr": [0.2, 0.9], "model.noise": [0.0, 0.3], "init.R": [0.5, 1.0]}
    res = sweep(SYSTEM, init=CFG.init, hyper=CFG.hyper, params=params, batch_size=3, **OPTS)
    assert len(res.points) == 8 and res.risk.shape == (8, 12) and all(s == "ok" for s in res.status)
    for i, p in enumerate(res.points):
        init = hl.Overlaps(
            Q=CFG.init.Q,
            R=CFG.init.R * p["init.R"],
            T=CFG.init.T,
            v=CFG.init.v,
            v_teacher=CFG.init.v_teacher,
        )
        hyper = hl.Hyperparams(
            lr=p["training.lr"], lr_second_layer=CFG.hyper.lr_second_layer, noise=p["model.noise"]
        )
        tr = hl.solve(SYSTEM, init=init, hyper=hyper, **OPTS)
        np.testing.assert_allclose(res.risk[i], tr.risk, rtol=1e-10)


def test_diverging_point_does_not_fail_its_batch():
    model = hl.Committee(K=1, M=1, activation="linear")
    init = hl.Overlaps.for_model(model, Q=[[1.0]], R=[[0.0]], T=[[1.0]])
    res = sweep(
        hl.derive(model),
        init=init,
        hyper=hl.Hyperparams(lr=0.5),
        params={"training.lr": [0.5, 5.0, 1.0]},
        t1=50.0,
        n_save=10,
    )
    assert res.status[0] == "ok" and res.status[2] == "ok"
    assert res.status[1].startswith("diverged at t=")
    assert np.all(np.isfinite(res.risk[[0, 2]])) and np.isnan(res.risk[1, -1])
    d = res.to_dict()
    assert d["risk"][1][-1] is None  # JSON has null, not NaN
    json.dumps(d)


def test_interrupted_sweep_resumes_to_the_same_result(tmp_path, monkeypatch):
    params = {"training.lr": [0.2, 0.4, 0.6, 0.8, 1.0]}
    kw = dict(init=CFG.init, hyper=CFG.hyper, params=params, batch_size=2, **OPTS)
    full = sweep(SYSTEM, **kw)
    original = _sweep.write_json
    calls = []

    def interrupt_after_first(path, data):
        original(path, data)
        calls.append(1)
        if len(calls) == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(_sweep, "write_json", interrupt_after_first)
    with pytest.raises(KeyboardInterrupt):
        sweep(SYSTEM, store=tmp_path, **kw)
    assert len(json.loads((tmp_path / "sweep.partial-0.json").read_text())["batches"]) == 1
    resumed = sweep(SYSTEM, store=tmp_path, **kw)
    assert len(calls) == 3  # 1 batch before the interruption, 2 after: the first was not redone
    np.testing.assert_array_equal(resumed.risk, full.risk)
    assert not list(tmp_path.glob("sweep.partial-*"))


SHARD_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import jax
    jax.config.update("jax_enable_x64", True)
    import numpy as np
    import hildlimits as hl
    from hildlimits._pipeline.config import load_config
    from hildlimits._pipeline.sweep import sweep
    cfg = load_config(sys.argv[1])
    system = hl.derive(cfg.model)
    kw = dict(init=cfg.init, hyper=cfg.hyper, params={"training.lr": list(np.linspace(0.1, 1.5, 10))},
              t1=10.0, n_save=6, spacing="linear", batch_size=3, distributed=len(sys.argv) > 2)
    a = sweep(system, shard=True, **kw)  # whole batches to the devices, one thread each
    m = sweep(system, spread="mesh", **kw)  # each batch split over a 4-device mesh
    b = sweep(system, shard=False, **kw)
    # simulations: 4 seeds are spread over the 4 devices, 3 seeds are not; seed s is the same run
    skw = dict(hyper=cfg.hyper, N=64, init=cfg.init, t1=1.0, n_save=3, spacing="linear")
    s4 = hl.simulate(cfg.model, seeds=4, **skw)
    s3 = hl.simulate(cfg.model, seeds=3, **skw)
    print(json.dumps({"devices": len(jax.devices()), "processes": jax.process_count(),
                      "diff": float(np.max(np.abs(a.risk - b.risk))),
                      "mesh_diff": float(np.max(np.abs(m.risk - b.risk))),
                      "sim_diff": float(np.max(np.abs(s4.risk[:3] - s3.risk)))}))
    """
)


def test_sharded_and_unsharded_sweeps_and_simulations_agree(tmp_path):
    env = dict(
        os.environ,
        XLA_FLAGS="--xla_force_host_platform_device_count=4",
        HILDLIMITS_CACHE_DIR=str(tmp_path),
    )
    script = tmp_path / "shard.py"
    script.write_text(SHARD_SCRIPT)
    r = subprocess.run(
        [sys.executable, str(script), os.path.join(ROOT, "examples", "goldt_k2.toml")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["devices"] == 4 and out["diff"] <= 1e-12 and out["sim_diff"] <= 1e-12
    assert out["mesh_diff"] <= 1e-12


def test_distributed_single_process_smoke(tmp_path):
    env = dict(
        os.environ,
        HILDLIMITS_CACHE_DIR=str(tmp_path),
        JAX_COORDINATOR_ADDRESS="localhost:12391",
        JAX_NUM_PROCESSES="1",
        JAX_PROCESS_ID="0",
    )
    script = tmp_path / "dist.py"
    script.write_text(SHARD_SCRIPT)
    r = subprocess.run(
        [
            sys.executable,
            str(script),
            os.path.join(ROOT, "examples", "goldt_k2.toml"),
            "distributed",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["processes"] == 1 and out["diff"] <= 1e-12


def test_gradients_equal_central_differences():
    # Reverse mode through the adaptive solve vs central differences of solves at rtol=1e-12
    # (step h = 1e-5 x scale: truncation ~h^2 ~ 1e-10, rounding ~1e-14/h ~ 1e-9); agreement
    # to 1e-5 relative.
    hyper = hl.Hyperparams(lr=0.5, lr_second_layer=0.3, noise=0.1, weight_decay=0.01)
    wrt = [
        "training.lr",
        "training.lr_second_layer",
        "model.noise",
        "model.weight_decay",
        "init.R",
        "init.v",
    ]
    value, grads = gradient(SYSTEM, init=CFG.init, hyper=hyper, wrt=wrt, t1=10.0)

    def risk(hyper=hyper, init=CFG.init):
        return hl.solve(
            SYSTEM,
            init=init,
            hyper=hyper,
            t1=10.0,
            n_save=2,
            spacing="linear",
            rtol=1e-12,
            atol=1e-14,
        ).risk[-1]

    assert value == pytest.approx(risk(), rel=1e-8)
    fields = {
        "training.lr": "lr",
        "training.lr_second_layer": "lr_second_layer",
        "model.noise": "noise",
        "model.weight_decay": "weight_decay",
    }
    for name, field in fields.items():
        x = getattr(hyper, field)
        h = 1e-5 * max(x, 1.0)
        up = hl.Hyperparams(**{**hyper.__dict__, field: x + h})
        dn = hl.Hyperparams(**{**hyper.__dict__, field: x - h})
        fd = (risk(hyper=up) - risk(hyper=dn)) / (2 * h)
        assert grads[name] == pytest.approx(fd, rel=1e-5, abs=1e-12), name
    for name, (a, b) in [("init.R", (1, 0)), ("init.v", (0, None))]:
        h = 1e-5
        arrs = {
            "Q": CFG.init.Q,
            "R": CFG.init.R.copy(),
            "T": CFG.init.T,
            "v": CFG.init.v.copy(),
            "v_teacher": CFG.init.v_teacher,
        }
        key = name.split(".")[1]
        idx = (a, b) if b is not None else (a,)
        base = arrs[key].copy()
        vals = []
        for sgn in (1, -1):
            arr = base.copy()
            arr[idx] += sgn * h
            vals.append(risk(init=hl.Overlaps(**{**arrs, key: arr})))
        fd = (vals[0] - vals[1]) / (2 * h)
        assert grads[name][idx] == pytest.approx(fd, rel=1e-5), name


def test_grad_bad_input():
    with pytest.raises(hl.ConfigError, match="--wrt name must be one of"):
        gradient(SYSTEM, init=CFG.init, hyper=CFG.hyper, wrt=["training.lrr"], t1=1.0)
    with pytest.raises(hl.ConfigError, match="observable"):
        gradient(
            SYSTEM, init=CFG.init, hyper=CFG.hyper, wrt=["training.lr"], t1=1.0, observable="max"
        )


def test_unrealisable_point_is_marked_not_solved():
    res = sweep(SYSTEM, init=CFG.init, hyper=CFG.hyper, params={"init.R": [1.0, 10.0]}, **OPTS)
    assert res.status[0] == "ok" and res.status[1].startswith(
        "invalid: scaled joint overlap matrix"
    )
    assert np.all(np.isnan(res.risk[1])) and np.all(np.isfinite(res.risk[0]))
