"""Robustness (issue 19): bad types, requests too large for the machine (checked through the
pre-flight estimate, never allocated), Ctrl-C, concurrent runs into one output folder, statistics
that mean nothing, cache integrity, and the smaller guarantees of ``docs/guarantees.md``.

Every refused input exits 2 with one line naming the key, never a traceback."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

import hildlimits as hl
from hildlimits._cli import main
from hildlimits._errors import ConfigError
from hildlimits._pipeline import limits
from hildlimits._pipeline.validators import matrix, numeric_array

ROOT = Path(__file__).resolve().parents[1]

SMALL = """\
[model]
K = 2
M = 2
activation = "erf"

[training]
lr = 0.5

[init]
Q = [[0.5, 0.0], [0.0, 0.5]]
R = [[0.3, 0.0], [0.0, 0.2]]
T = [[1.0, 0.0], [0.0, 1.0]]

[solve]
t1 = 2.0
n_save = 6
spacing = "linear"
"""

RANDOM = """\
[model]
K = {K}
M = {M}

[training]
lr = 0.5

[init.random]
N = {N}

[solve]
t1 = 2.0
n_save = 6
"""

MEANFIELD = (ROOT / "examples" / "meanfield_erf.toml").read_text()


@pytest.fixture(autouse=True)
def _fixed_memory(monkeypatch):
    """The same memory limit on every machine, so that what is refused does not depend on it."""
    monkeypatch.setenv("HILDLIMITS_MEMORY_LIMIT", "16G")
    monkeypatch.delenv("HILDLIMITS_TIME_LIMIT", raising=False)


def _write(tmp_path, text: str | bytes, name: str = "c.toml") -> str:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return str(path)


def _refused(capsys, argv, *needles) -> str:
    """``main(argv)`` exits 2 with one ``error:`` line containing every needle."""
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert "Traceback" not in err
    return lines[0]


# ----------------------------------------------------------------------------- item 2: types

TYPE_CASES = {
    "string entries": (
        SMALL.replace("Q = [[0.5, 0.0], [0.0, 0.5]]", 'Q = [["0.5", "0"], ["0", "0.5"]]'),
        ["init.Q", "string '0.5'"],
    ),
    "boolean entries": (
        SMALL.replace("Q = [[0.5, 0.0], [0.0, 0.5]]", "Q = [[true, false], [false, true]]"),
        ["init.Q", "boolean true"],
    ),
    "boolean vector": (SMALL + "", None),  # placeholder replaced below
    "mixed row": (
        SMALL.replace("R = [[0.3, 0.0], [0.0, 0.2]]", 'R = [[0.3, "x"], [0.0, 0.2]]'),
        ["init.R", "string 'x'"],
    ),
    "table in matrix": (
        SMALL.replace("T = [[1.0, 0.0], [0.0, 1.0]]", "T = [[1.0, {a = 1}], [0.0, 1.0]]"),
        ["init.T", "dict"],
    ),
    "ragged matrix": (
        SMALL.replace("T = [[1.0, 0.0], [0.0, 1.0]]", "T = [[1.0, 0.0], [0.0]]"),
        ["init.T", "ragged"],
    ),
    "kind is a list": (SMALL.replace("[model]\n", "[model]\nkind = [1]\n"), ["model.kind"]),
    "kind is a table": (
        SMALL.replace("[model]\n", "[model]\nkind = {a = 1}\n"),
        ["model.kind"],
    ),
    "meanfield ragged T": (
        MEANFIELD.replace("T = [[1.0]]", "T = [[], [1], []]"),
        ["init.T", "ragged"],
    ),
    "meanfield string T": (
        MEANFIELD.replace("T = [[1.0]]", 'T = [["1.0"]]'),
        ["init.T", "string"],
    ),
    "deeply nested": (
        SMALL.replace("Q = [[0.5, 0.0], [0.0, 0.5]]", "Q = " + "[" * 3000 + "]" * 3000),
        ["nested too deeply"],
    ),
}
TYPE_CASES["boolean vector"] = (SMALL.replace("[solve]", "v = [true, 1.0]\n\n[solve]"), ["init.v"])


@pytest.mark.parametrize("case", sorted(TYPE_CASES))
def test_bad_types_are_refused_naming_the_key(tmp_path, capsys, case):
    text, needles = TYPE_CASES[case]
    path = _write(tmp_path, text)
    _refused(capsys, ["solve", path, "--out", str(tmp_path / "o.json")], *needles)
    assert not (tmp_path / "o.json").exists()


def test_config_that_is_not_utf8(tmp_path, capsys):
    path = _write(tmp_path, b"\xff\xfe[model]\nK = 2\n")
    _refused(capsys, ["derive", path], "not UTF-8", "0xff")
    latin1 = SMALL.replace("[model]", "# d\xe9riv\xe9\n[model]").encode("latin-1")
    _refused(capsys, ["derive", _write(tmp_path, latin1, "l.toml")], "not UTF-8")


def test_config_path_that_is_a_directory_or_huge(tmp_path, capsys):
    _refused(capsys, ["derive", str(tmp_path)], "is a directory")
    big = tmp_path / "big.toml"
    with open(big, "wb") as fh:
        fh.truncate(17 * 2**20)
    _refused(capsys, ["derive", str(big)], "MiB")


def test_numeric_array_validator():
    assert numeric_array("x", [[1, 2], [3, 4.5]]).dtype == np.float64
    assert numeric_array("x", np.arange(3)).tolist() == [0.0, 1.0, 2.0]
    assert matrix("x", [], (0,)).shape == (0,)
    for bad, why in [
        (np.array([True, False]), "boolean"),
        (np.array(["1"]), "dtype"),
        ([1, [2]], "ragged"),
        ([[1, 2], [3]], "ragged"),
        ([None], "NoneType"),
        ("1.0", "array of numbers"),
        ({"a": 1}, "array of numbers"),
        ([1.0, np.bool_(True)], "boolean"),
    ]:
        with pytest.raises(ConfigError, match=why):
            numeric_array("init.Q", bad)
    with pytest.raises(ConfigError, match="init.Q"):
        hl.Overlaps.for_model(hl.Committee(K=1, M=1), Q=[["0.5"]], R=[[0.1]], T=[[1.0]])


# ----------------------------------------------------------------------------- item 3: sizes


@pytest.mark.parametrize(
    "K, M, N, key",
    [
        (2, 2, 1_000_000_000, "init.random.N"),
        (10000, 2, 100, "model.K"),
        (2, 51384, 100, "model.M"),
    ],
)
def test_random_init_too_large_is_refused_while_loading(tmp_path, capsys, K, M, N, key):
    path = _write(tmp_path, RANDOM.format(K=K, M=M, N=N))
    line = _refused(capsys, ["derive", path], key, "reduce " + key)
    assert "more than the 16 GiB available" in line or "more than the limit of 1 min" in line
    with pytest.raises(ConfigError, match=key):
        hl.load_config(path)  # the library refuses too (before drawing any weights)


@pytest.mark.parametrize(
    "flags, key",
    [
        (["--N", "1000000000"], "--N"),
        # seeds run in chunks that fit: only the overlaps saved for every seed must fit
        (["--N", "500", "--seeds", "100000000000"], "--seeds"),
        (["--N", "500", "--test-samples", "1000000000"], "--test-samples"),
    ],
)
def test_simulation_too_large_is_refused(tmp_path, capsys, flags, key):
    path = _write(tmp_path, SMALL)
    out = tmp_path / "sim.json"
    _refused(capsys, ["simulate", path, *flags, "--out", str(out)], key, "reduce " + key)
    assert not out.exists()


def test_many_seeds_fit_in_chunks_but_are_refused_by_the_time_estimate(
    tmp_path, capsys, monkeypatch
):
    """10^6 seeds at N = 500 fit in memory (chunks of seeds; the saved overlaps are small) but
    would run for about an hour: refused under a 60 s limit, naming --seeds."""
    monkeypatch.setenv("HILDLIMITS_TIME_LIMIT", "60")
    path = _write(tmp_path, SMALL)
    argv = ["simulate", path, "--N", "500", "--seeds", "1000000"]
    _refused(capsys, argv + ["--out", str(tmp_path / "s.json")], "--seeds = 1000000", "would run")


def test_simulation_too_long_is_refused_by_the_time_estimate(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HILDLIMITS_TIME_LIMIT", "60")
    path = _write(tmp_path, SMALL.replace("t1 = 2.0", "t1 = 1000.0"))
    _refused(
        capsys,
        ["simulate", path, "--N", "20000", "--out", str(tmp_path / "s.json")],
        "--N = 20000",
        "would run for about",
        "HILDLIMITS_TIME_LIMIT",
    )


def test_sweep_grid_too_large_is_refused(tmp_path, capsys):
    path = _write(tmp_path, SMALL)
    argv = ["sweep", path, "--param", "training.lr=0.1:1:10000"]
    argv += ["--param", "model.noise=0:1:10000", "--out", str(tmp_path / "sw")]
    _refused(capsys, argv, "100000000 points", "GiB")
    one = ["sweep", path, "--param", "training.lr=0.1:1:100000000", "--out", str(tmp_path / "s")]
    _refused(capsys, one, "--param training.lr", "10000000")
    with pytest.raises(ConfigError, match="100000000 points"):  # the library refuses too
        hl.sweep(
            hl.derive(hl.Committee(K=1, M=1, activation="linear")),
            config=_linear_config(),
            params={"training.lr": list(range(1, 10001)), "model.noise": [0.0] * 10000},
        )


def _linear_config():
    from hildlimits._pipeline.config import config_from_text

    return config_from_text(
        SMALL.replace("K = 2\nM = 2", "K = 1\nM = 1")
        .replace('activation = "erf"', 'activation = "linear"')
        .replace("Q = [[0.5, 0.0], [0.0, 0.5]]", "Q = [[0.5]]")
        .replace("R = [[0.3, 0.0], [0.0, 0.2]]", "R = [[0.3]]")
        .replace("T = [[1.0, 0.0], [0.0, 1.0]]", "T = [[1.0]]")
    )


def test_meanfield_sizes_are_refused(tmp_path, capsys):
    big = _write(tmp_path, MEANFIELD.replace("particles = 2048", "particles = 100000000"))
    _refused(capsys, ["solve", big, "--out", str(tmp_path / "o.json")], "init.particles")
    eye = [[1.0 if i == j else 0.0 for j in range(50)] for i in range(50)]
    wide = (
        MEANFIELD.replace("M = 1\n", "M = 50\n")
        .replace("T = [[1.0]]", f"T = {eye}")
        .replace("v_teacher = [1.0]", f"v_teacher = {[1.0] * 50}")
    )
    _refused(capsys, ["solve", _write(tmp_path, wide, "w.toml"), "--out", "o.json"], "model.M")
    small = _write(tmp_path, MEANFIELD, "s.toml")
    argv = ["simulate", small, "--N", "1000000", "--width", "100000", "--out", "x.json"]
    _refused(capsys, argv, "GiB")


def test_optimize_schedule_pieces(tmp_path, capsys):
    path = _write(tmp_path, SMALL)
    out = str(tmp_path / "os")
    _refused(capsys, ["optimize-schedule", path, "--pieces", "100000", "--out", out], "max_steps")
    line = _refused(capsys, ["optimize-schedule", path, "--pieces", "5000", "--out", out])
    assert "--pieces = 5000" in line and "--force" in line


def test_large_requests_that_fit_are_accepted_and_force_overrides(capsys):
    cfg = hl.load_config(str(ROOT / "examples" / "goldt_k2.toml"))
    from hildlimits._families import family_of

    family = family_of(cfg)
    # a large simulation that fits: accepted (estimated, not run)
    limits.check_command(family, cfg, "simulate", {"N": 20_000, "seeds": 64})
    needs = limits.command_needs(family, cfg, "simulate", {"N": 20_000, "seeds": 64})
    assert 0 < sum(n.bytes for n in needs) < 16 * 2**30
    # a sweep of a million points fits in 16 GiB and is accepted (solved batch by batch)
    limits.check_command(family, cfg, "sweep", {"points": 1_000_000, "batch_size": 128})
    too_big = {"N": 10**9, "seeds": 8}
    with pytest.raises(ConfigError, match="--force"):
        limits.check_command(family, cfg, "simulate", too_big)
    limits.check_command(family, cfg, "simulate", too_big, force=True)
    assert "warning (--force)" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="max_steps"):  # impossible: --force does not help
        from hildlimits._pipeline.schedule import check_pieces

        check_pieces(100_000, force=True)


def test_memory_limit_parsing(monkeypatch):
    monkeypatch.setenv("HILDLIMITS_MEMORY_LIMIT", "1.5G")
    assert limits.available_memory() == 1.5 * 2**30
    monkeypatch.setenv("HILDLIMITS_MEMORY_LIMIT", "lots")
    with pytest.raises(ConfigError, match="HILDLIMITS_MEMORY_LIMIT"):
        limits.available_memory()
    monkeypatch.delenv("HILDLIMITS_MEMORY_LIMIT")
    assert 0 < limits.available_memory() < 2**60
    assert limits.human_bytes(3 * 2**30) == "3 GiB"


# ----------------------------------------------------------------------------- item 6: Ctrl-C


def test_interrupt_exits_130_at_once(monkeypatch, capsys):
    """The handler: an interrupt anywhere in a command ends the process with os._exit(130)
    after flushing (no interpreter teardown under XLA's compiler threads)."""
    import hildlimits._cli as cli

    def interrupted(argv=None):
        raise KeyboardInterrupt

    exits = []
    monkeypatch.setattr(cli, "main", interrupted)
    monkeypatch.setattr(cli.os, "_exit", exits.append)
    monkeypatch.setattr(cli, "enable_compilation_caches", lambda: None)
    monkeypatch.setattr(signal, "signal", lambda *a: None)
    cli.entry()
    assert exits == [130]
    assert "interrupted" in capsys.readouterr().err
    monkeypatch.setattr(cli, "main", lambda argv=None: 130)
    cli.entry()
    assert exits == [130, 130]
    monkeypatch.setattr(cli, "main", lambda argv=None: 0)
    assert cli.entry() == 0 and exits == [130, 130]


def _sigint_after(argv, delay: float, tmp_path) -> tuple[int, str]:
    env = dict(os.environ, HILDLIMITS_CACHE_DIR=tempfile.mkdtemp(dir=tmp_path))
    proc = subprocess.Popen(
        [sys.executable, "-m", "hildlimits", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=tmp_path,
    )
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err.decode()


def test_ctrl_c_during_a_solve_exits_130(tmp_path):
    rc, err = _sigint_after(
        ["solve", str(ROOT / "examples" / "relu_tanh_k2.toml"), "--out", "o.json"], 4.0, tmp_path
    )
    assert rc == 130, err
    assert "interrupted" in err and "Traceback" not in err


@pytest.mark.slow
@pytest.mark.parametrize("delay", [11.0, 13.0, 15.0])
def test_ctrl_c_during_compilation_never_segfaults(tmp_path, delay):
    """Interrupted while XLA compiles (about 10-20 s into a cold relu/tanh solve, less on an idle
    machine): exit 130, never -11 (a segmentation fault after "interrupted" in 9 of 12 tries
    before the fix). A Ctrl-C that lands after the work has finished is recorded and also exits
    130; if it lands in the last instants of the interpreter's exit the process may end by the
    signal itself (-2), which a shell reports as 130 as well."""
    rc, err = _sigint_after(
        ["solve", str(ROOT / "examples" / "relu_tanh_k2.toml"), "--out", "o.json"], delay, tmp_path
    )
    assert rc in (130, -2), err
    assert "Traceback" not in err


# ----------------------------------------------------------------------------- item 7: locks


def test_busy_output_folder_is_refused(tmp_path, capsys):
    import fcntl

    from hildlimits._pipeline.io import lock_path, output_lock

    path = _write(tmp_path, SMALL)
    outdir = tmp_path / "sweep"
    outdir.mkdir()
    lock = lock_path(outdir, directory=True)
    with open(lock, "w") as fh:  # another run holds the folder
        fcntl.flock(fh, fcntl.LOCK_EX)
        fh.write("pid 4242 on elsewhere")
        fh.flush()
        argv = ["sweep", path, "--param", "training.lr=0.1,0.2", "--out", str(outdir)]
        _refused(capsys, argv, "is in use by another hildlimits run", "pid 4242", "--out")
        argv = ["validate", path, "--N", "50", "--seeds", "2", "--out", str(outdir)]
        _refused(capsys, argv, "in use")
        out = tmp_path / "o.json"
        with open(lock_path(out, directory=False), "w") as fh2:
            fcntl.flock(fh2, fcntl.LOCK_EX)
            _refused(capsys, ["solve", path, "--out", str(out)], "in use")
    assert not (outdir / "sweep.json").exists()
    # released: taken again at once, and re-entrant within one process
    with output_lock(outdir, directory=True), output_lock(outdir, directory=True):
        pass


def test_two_processes_into_one_folder(tmp_path):
    """A second process into a folder that a running process holds is refused at once."""
    code = (
        "import sys, time\n"
        "from hildlimits._pipeline.io import output_lock\n"
        "with output_lock(sys.argv[1], directory=True):\n"
        "    print('held', flush=True)\n"
        "    time.sleep(30)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path / "out")], stdout=subprocess.PIPE
    )
    try:
        assert holder.stdout.readline().strip() == b"held"
        probe = (
            "import sys\n"
            "from hildlimits._errors import ConfigError\n"
            "from hildlimits._pipeline.io import output_lock\n"
            "try:\n"
            "    with output_lock(sys.argv[1], directory=True):\n"
            "        print('got it')\n"
            "except ConfigError as exc:\n"
            "    print(exc)\n"
        )
        res = subprocess.run(
            [sys.executable, "-c", probe, str(tmp_path / "out")],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert "in use by another hildlimits run" in res.stdout
        assert f"pid {holder.pid}" in res.stdout
    finally:
        holder.kill()
        holder.wait()


# ----------------------------------------------------------------------------- item 9: statistics


def test_validate_needs_two_seeds_and_distinct_sizes(tmp_path, capsys):
    path = _write(tmp_path, SMALL)
    out = str(tmp_path / "v")
    _refused(
        capsys, ["validate", path, "--N", "100", "--seeds", "1", "--out", out], "at least two seeds"
    )
    _refused(capsys, ["validate", path, "--N", "100,100", "--seeds", "4", "--out", out], "distinct")
    mf = _write(tmp_path, MEANFIELD, "mf.toml")
    argv = ["validate", mf, "--N", "256", "--width", "32,32", "--seeds", "2", "--out", out]
    _refused(capsys, argv, "--width", "distinct")
    from hildlimits._pipeline.validate import check_validation_inputs

    assert check_validation_inputs([100], 2) == [100]  # one N is fine (no fit)
    with pytest.raises(ConfigError, match="at least two seeds"):
        hl.validate(
            hl.Committee(K=1, M=1, activation="linear"),
            hyper=hl.Hyperparams(lr=0.5),
            init=hl.Overlaps.for_model(hl.Committee(K=1, M=1), Q=[[0.5]], R=[[0.1]], T=[[1.0]]),
            Ns=[50],
            seeds=1,
            t1=1.0,
        )


# ----------------------------------------------------------------------------- item 10


def test_optimize_schedule_help_shows_defaults(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["optimize-schedule", "--help"])
    assert exc.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for default in ("(default: 20)", "(default: 150)", "(default: 1000)", "(default: 8)"):
        assert default in text


def test_tests_never_use_the_users_cache():
    cache = os.environ["HILDLIMITS_CACHE_DIR"]
    assert "hildlimits-test-cache-" in cache
    assert Path(cache).resolve().is_relative_to(Path(tempfile.gettempdir()).resolve())


def test_out_under_a_regular_file_is_refused_before_the_work(tmp_path, capsys, monkeypatch):
    from hildlimits._families.committee import CommitteeFamily

    def no_work(*a, **k):
        raise AssertionError("the work started")

    monkeypatch.setattr(CommitteeFamily, "derive", no_work)
    path = _write(tmp_path, SMALL)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for argv in (
        ["solve", path, "--out", str(blocker / "o.json")],
        ["solve", path, "--out", str(tmp_path / "o.json"), "--plot", str(blocker / "a/p.png")],
        ["grad", path, "--wrt", "training.lr", "--out", str(blocker / "g.json")],
        ["simulate", path, "--N", "50", "--out", str(blocker / "s.json")],
        ["sweep", path, "--param", "training.lr=0.1,0.2", "--out", str(blocker / "sw")],
        ["validate", path, "--N", "50", "--out", str(blocker)],
    ):
        _refused(capsys, argv, str(blocker))


def test_progress_only_on_a_terminal():
    from hildlimits._pipeline.progress import bar, phase

    quiet = io.StringIO()  # not a terminal: nothing
    with phase("compiling", stream=quiet, every=0.01):
        time.sleep(0.05)
    with bar(3, "steps", stream=quiet) as tick:
        tick(0, 1.0)
    assert quiet.getvalue() == ""
    shown = io.StringIO()
    with phase("compiling", stream=shown, enabled=True, every=0.01):
        time.sleep(0.1)
    assert "compiling ... 0 s" in shown.getvalue() and shown.getvalue().endswith("\r")
    shown = io.StringIO()
    with bar(3, "optimising", stream=shown, enabled=True) as tick:
        for i in range(3):
            tick(i, 0.5)
    assert "optimising" in shown.getvalue()


def test_ctrl_c_in_validate_keeps_the_finished_sizes(tmp_path, capsys, monkeypatch):
    import hildlimits._families.committee.validate as cv

    real = cv.simulate
    calls = []

    def simulate(*a, **k):
        calls.append(k["N"])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(cv, "simulate", simulate)
    path = _write(tmp_path, SMALL.replace("K = 2\nM = 2", "K = 2\nM = 2\nnoise = 0.0"))
    out = tmp_path / "v"
    rc = main(["validate", path, "--N", "40,60", "--seeds", "2", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 130, err
    assert "--N that finished is kept" in err
    report = json.loads((out / "report.json").read_text())
    assert [p["N"] for p in report["per_N"]] == [40]
    assert report["passed"] is False and "1 of 2" in report["interrupted"]
    assert "interrupted after 1 of 2" in report["reason"]


# ----------------------------------------------------------------------------- item 8: cache


def test_changed_cache_entry_is_rederived(tmp_path, monkeypatch):
    """A cache entry that is valid JSON but whose content changed (a coefficient edited, the
    generated code damaged) fails its digest and is derived again, never used."""
    from hildlimits._pipeline import cache as _cache

    monkeypatch.setenv("HILDLIMITS_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(_cache, "_MEMORY", {})
    model = hl.Committee(K=1, M=1, activation="linear")
    first = hl.derive(model)
    (entry,) = tmp_path.glob("*.json")
    good = json.loads(entry.read_text())
    for damage in (
        lambda d: d | {"source": d["source"].replace("eta", "2*eta", 1)},  # a changed coefficient
        lambda d: d | {"source": "def vector_field(:\n"},  # damaged code
        lambda d: d | {"equations": d["equations"][:1]},
    ):
        entry.write_text(json.dumps(damage(good)))
        monkeypatch.setattr(_cache, "_MEMORY", {})
        again = hl.derive(model)
        assert again.source == first.source
        assert json.loads(entry.read_text()) == good  # rewritten whole


def test_meanfield_validate_failure_gives_a_reason():
    """The mean field's failure line and report.json state the time and the deviation, as the
    committee's do."""
    from hildlimits._families import get_family

    row = {
        "width": 128,
        "d": 1024,
        "mean_abs_deviation": 0.01,
        "max_abs_deviation": 0.03,
        "max_deviation_in_se": 9.5,
        "fraction_within_tolerance": 0.5,
        "worst_time": 2.5,
    }
    family = get_family("meanfield")
    report = family._report([row], hl.Tolerance())
    assert report["passed"] is False
    assert "worst at tau=2.5" in report["reason"] and "9.5 standard errors" in report["reason"]
    assert family.validation_lines(report)[-1] == "FAIL: " + report["reason"]
