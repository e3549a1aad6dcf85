"""Command-line interface: exit codes (0 ok, 1 diverged, 2 bad input), messages and outputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hildlimits._cli import main

SMALL_CONFIG = """\
[model]
K = 2
M = 2
activation = "erf"
teacher_activation = "erf"

[training]
lr = 0.5

[init]
Q = [[0.2, 0.0], [0.0, 0.2]]
R = [[0.01, 0.0], [0.0, 0.005]]
T = [[1.0, 0.0], [0.0, 1.0]]
v = [1.0, 1.0]
v_teacher = [1.0, 1.0]

[solve]
t1 = 10.0
n_save = 20
"""

# linear dynamics explode for lr > 2
DIVERGING_CONFIG = """\
[model]
K = 1
M = 1
activation = "linear"

[training]
lr = 5.0

[init]
Q = [[0.2]]
R = [[0.01]]
T = [[1.0]]

[solve]
t1 = 100.0
n_save = 20
"""

BAD_CONFIGS = {
    "K0": (SMALL_CONFIG.replace("K = 2", "K = 0"), "K must be a positive integer, got 0"),
    "misspelt": (SMALL_CONFIG.replace("activation = ", "activaton = ", 1), "activaton"),
    "relu2": (SMALL_CONFIG.replace('activation = "erf"', 'activation = "relu2"', 1), "'relu2'"),
}


def write(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def run_cli(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """Run ``python -m hildlimits ARGS`` in a subprocess with a private cache directory."""
    env = dict(os.environ)
    env["HILDLIMITS_CACHE_DIR"] = str(tmp_path / "cache")
    return subprocess.run(
        [sys.executable, "-m", "hildlimits", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )


def _shape(x) -> tuple[int, ...]:
    shape = []
    while isinstance(x, list):
        shape.append(len(x))
        x = x[0]
    return tuple(shape)


def _all_floats(x) -> bool:
    if isinstance(x, list):
        return all(_all_floats(y) for y in x)
    return type(x) is float


# ------------------------------------------------------------------------------- bad input


def test_missing_config_file(tmp_path, capsys):
    path = tmp_path / "nope.toml"
    assert main(["derive", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "not found" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
@pytest.mark.parametrize("command", ["derive", "solve"])
def test_bad_config_exit_2(tmp_path, capsys, case, command):
    text, fragment = BAD_CONFIGS[case]
    cfg = write(tmp_path, text)
    args = [command, str(cfg)] + (
        ["--out", str(tmp_path / "out.json")] if command == "solve" else []
    )
    assert main(args) == 2
    out, err = capsys.readouterr()
    assert fragment in err
    assert err.startswith("error:")
    assert not (tmp_path / "out.json").exists()


def test_misspelt_key_suggestion(tmp_path, capsys):
    cfg = write(tmp_path, BAD_CONFIGS["misspelt"][0])
    assert main(["derive", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "model.activaton" in err and "did you mean 'activation'" in err


def test_unwritable_output(tmp_path, capsys):
    cfg = write(tmp_path, SMALL_CONFIG)
    assert main(["solve", str(cfg), "--out", "/proc/forbidden/x.json"]) == 2
    err = capsys.readouterr().err
    assert "--out" in err and "/proc/forbidden" in err


def test_out_is_directory(tmp_path, capsys):
    cfg = write(tmp_path, SMALL_CONFIG)
    assert main(["solve", str(cfg), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--out" in err and "directory" in err


@pytest.mark.parametrize(
    "case",
    ["missing", "K0", "misspelt", "relu2", "unwritable"],
)
def test_bad_input_subprocess(tmp_path, case):
    cfg = tmp_path / "config.toml"
    if case == "missing":
        args, fragment = ["derive", str(cfg)], str(cfg)
    elif case == "unwritable":
        write(tmp_path, SMALL_CONFIG)
        args, fragment = ["solve", str(cfg), "--out", "/proc/forbidden/x.json"], "/proc/forbidden"
    else:
        text, fragment = BAD_CONFIGS[case]
        write(tmp_path, text)
        args = ["derive", str(cfg)]
    proc = run_cli(*args, tmp_path=tmp_path)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 2, proc.stderr
    assert fragment in proc.stderr
    assert proc.stdout == ""


# ----------------------------------------------------------------------------------- derive


def test_derive_text(tmp_path, capsys):
    cfg = write(tmp_path, SMALL_CONFIG)
    assert main(["derive", str(cfg)]) == 0
    out = capsys.readouterr().out
    for fragment in ("dQ_ik/dt", "dR_in/dt", "risk"):
        assert fragment in out


def test_derive_latex(tmp_path, capsys):
    cfg = write(tmp_path, SMALL_CONFIG)
    assert main(["derive", str(cfg), "--latex"]) == 0
    out = capsys.readouterr().out
    assert "\\begin{align}" in out and "\\end{align}" in out


def test_derive_out_file(tmp_path, capsys):
    cfg = write(tmp_path, SMALL_CONFIG)
    target = tmp_path / "sub" / "eqs.txt"
    assert main(["derive", str(cfg), "--out", str(target)]) == 0
    assert capsys.readouterr().out == ""
    assert "dQ_ik/dt" in target.read_text()


# ------------------------------------------------------------------------------------ solve


def test_solve_writes_json(tmp_path, capsys):
    cfg = write(tmp_path, SMALL_CONFIG)
    out = tmp_path / "out.json"
    assert main(["solve", str(cfg), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert str(out) in captured.out
    data = json.loads(out.read_text())

    n = 20
    assert isinstance(data["t"], list) and len(data["t"]) == n
    assert _all_floats(data["t"]) and data["t"][0] == 0.0
    assert data["t"] == sorted(data["t"]) and data["t"][-1] == pytest.approx(10.0)
    assert isinstance(data["risk"], list) and len(data["risk"]) == n and _all_floats(data["risk"])
    for key, shape in (("Q", (n, 2, 2)), ("R", (n, 2, 2)), ("v", (n, 2)), ("T", (2, 2))):
        assert _shape(data[key]) == shape, key
        assert _all_floats(data[key]), key
    assert data["Q"][0] == [[0.2, 0.0], [0.0, 0.2]]
    assert data["R"][0] == [[0.01, 0.0], [0.0, 0.005]]
    assert data["T"] == [[1.0, 0.0], [0.0, 1.0]]
    assert data["status"] == "ok"

    meta = data["meta"]
    assert isinstance(meta, dict)
    assert isinstance(meta["config"], dict) and isinstance(meta["versions"], dict)
    assert meta["config"]["model"]["K"] == 2 and meta["config"]["solve"]["n_save"] == n
    assert meta["status"] == "ok"
    assert "hildlimits" in meta["versions"] and "jax" in meta["versions"]
    assert not out.with_name(out.name + ".tmp").exists()


def test_solve_plot(tmp_path):
    cfg = write(tmp_path, SMALL_CONFIG)
    out, png = tmp_path / "out.json", tmp_path / "p.png"
    assert main(["solve", str(cfg), "--out", str(out), "--plot", str(png)]) == 0
    assert out.is_file()
    assert png.is_file() and png.stat().st_size > 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_solve_diverging_in_process(tmp_path, capsys):
    cfg = write(tmp_path, DIVERGING_CONFIG)
    out = tmp_path / "out.json"
    assert main(["solve", str(cfg), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "diverged at t=" in err
    data = json.loads(out.read_text())
    assert data["meta"]["status"].startswith("diverged at t=")
    assert data["status"] == data["meta"]["status"]
    assert len(data["t"]) == len(data["risk"]) >= 1
    assert data["t"][-1] < 100.0


def test_solve_diverging_subprocess(tmp_path):
    cfg = write(tmp_path, DIVERGING_CONFIG)
    out = tmp_path / "out.json"
    proc = run_cli("solve", str(cfg), "--out", str(out), tmp_path=tmp_path)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 1, proc.stderr
    assert "diverged at t=" in proc.stderr
    data = json.loads(out.read_text())
    assert data["meta"]["status"].startswith("diverged at t=")


def test_cli_exposes_cpu_cores_unless_xla_flags_set_a_count(monkeypatch):
    from hildlimits._cli import expose_cpu_cores

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_enable_fast_math=false")
    expose_cpu_cores()
    assert os.environ["XLA_FLAGS"] == (
        "--xla_cpu_enable_fast_math=false --xla_force_host_platform_device_count=3"
    )
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=1")
    expose_cpu_cores()
    assert os.environ["XLA_FLAGS"] == "--xla_force_host_platform_device_count=1"
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    monkeypatch.delenv("XLA_FLAGS")
    expose_cpu_cores()
    assert "XLA_FLAGS" not in os.environ
