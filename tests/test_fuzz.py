"""Property-based robustness (issue 19): random configs, random TOML text and random command-line
values fed to the loaders and the argument handling; nothing but the project's own errors
(:class:`~hildlimits.ConfigError`, argparse's exit 2) may escape.

Bounded for the default suite (``max_examples`` per test below, a few seconds each). For a
release check, raise the volume with ``HILDLIMITS_FUZZ_EXAMPLES``, e.g.::

    HILDLIMITS_FUZZ_EXAMPLES=20000 .venv/bin/python -m pytest tests/test_fuzz.py -q
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hildlimits._errors import ConfigError
from hildlimits._pipeline.config import config_from_dict, config_from_text

EXAMPLES = int(os.environ.get("HILDLIMITS_FUZZ_EXAMPLES", "0")) or None
ROOT = Path(__file__).resolve().parents[1]
BASES = {
    name: tomllib.loads((ROOT / "examples" / name).read_text())
    for name in ("goldt_k2.toml", "meanfield_erf.toml", "relu_tanh_k2.toml")
}


def fuzz(n: int):
    return settings(
        max_examples=EXAMPLES or n,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        derandomize=EXAMPLES is None,  # the default suite is reproducible
    )


@pytest.fixture(autouse=True, scope="module")
def _small_machine():
    """A small memory and time budget, so that a random config that is valid but large is
    refused by the size estimate instead of allocated."""
    mp = pytest.MonkeyPatch()
    mp.setenv("HILDLIMITS_MEMORY_LIMIT", "256M")
    mp.setenv("HILDLIMITS_TIME_LIMIT", "5")
    yield
    mp.undo()


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, 2, 3, -1, 10**9, 2**31, 2**63]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, 0.5, 1.0, -0.5, 1e300, 1e-300]),
    st.text(max_size=12),
    st.sampled_from(["erf", "relu", "tanh", "linear", "x**2", "log", "pairwise", "random"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=12,
)
KEYS = sorted(
    {(s, k) for base in BASES.values() for s, table in base.items() for k in table}
    | {("init", "random"), ("model", "kind"), ("init", "particles"), ("model", "K")}
)


@st.composite
def mutated(draw):
    """A valid example config with a few keys replaced, removed or added."""
    base = draw(st.sampled_from(sorted(BASES)))
    data = {s: dict(t) for s, t in BASES[base].items()}
    for _ in range(draw(st.integers(1, 4))):
        section, key = draw(st.sampled_from(KEYS))
        action = draw(st.sampled_from(["set", "set", "set", "delete"]))
        table = data.setdefault(section, {})
        if not isinstance(table, dict):
            continue
        if action == "delete":
            table.pop(key, None)
        elif key == "random":
            table[key] = draw(
                st.dictionaries(
                    st.sampled_from(["N", "seed", "student_std", "teacher_std", "x"]),
                    scalars,
                    max_size=4,
                )
            )
        else:
            table[key] = draw(values)
    if draw(st.booleans()):
        data[draw(st.sampled_from(["model", "init", "extra", "solve"]))] = draw(values)
    return data


def _load(data):
    try:
        config_from_dict(data, source="<fuzz>")
    except ConfigError:
        pass


@fuzz(500)
@given(mutated())
def test_random_configs_raise_only_config_errors(data):
    _load(data)


@fuzz(200)
@given(values)
def test_arbitrary_values_as_a_config(data):
    _load(data)
    _load({"model": data, "training": {"lr": 0.1}, "init": {}, "solve": {"t1": 1.0}})


toml_fragments = st.sampled_from(
    [
        "[model]\n",
        "[training]\n",
        "[init]\n",
        "[init.random]\n",
        "[solve]\n",
        'kind = "meanfield"\n',
        "K = 2\n",
        "M = 1\n",
        "N = 100\n",
        "lr = 0.5\n",
        "t1 = 1.0\n",
        "Q = [[0.5, 0.0], [0.0, 0.5]]\n",
        "T = [[1.0]]\n",
        'Q = [["0.5"]]\n',
        "R = [[0.1], [0.2]]\n",
        "v = [true, false]\n",
        "particles = 16\n",
        "x = [[[[[[1]]]]]]\n",
        "= 1\n",
        "[[model]]\n",
        "a = {b = 1}\n",
        "K = 1e400\n",
        "K = nan\n",
        "lr = inf\n",
    ]
)


@fuzz(300)
@given(st.one_of(st.text(max_size=200), st.lists(toml_fragments, max_size=12).map("".join)))
def test_random_toml_text_raises_only_config_errors(text):
    try:
        config_from_text(text, source="<fuzz>")
    except ConfigError:
        pass


@fuzz(100)
@given(st.binary(max_size=200))
def test_random_bytes_as_a_config_file(tmp_path_factory, blob):
    from hildlimits._pipeline.config import load_config

    path = tmp_path_factory.mktemp("fuzz") / "c.toml"
    path.write_bytes(blob)
    try:
        load_config(path)
    except ConfigError:
        pass


# ----------------------------------------------------------------------------- command line


class _Reached(Exception):
    """The command got past its checks and would start the work."""


flag_values = st.one_of(
    st.text(max_size=10),
    st.integers(-5, 10**12).map(str),
    st.sampled_from(["0", "1", "-1", "1e9", "nan", "", ",", "1,1", "100,100", "2,x", "log:0:1:3"]),
)
COMMANDS = {
    "derive": [],
    "solve": ["--plot"],
    "simulate": ["--N", "--seeds", "--seed", "--test-samples", "--dtype", "--width"],
    "validate": ["--N", "--seeds", "--z-tol", "--rel-tol", "--abs-tol", "--width", "--dtype"],
    "sweep": ["--param", "--batch-size", "--spread"],
    "grad": ["--wrt", "--observable", "--max-steps"],
    "optimize-schedule": ["--pieces", "--steps", "--N", "--seeds", "--width"],
}


@st.composite
def command_lines(draw):
    command = draw(st.sampled_from(sorted(COMMANDS)))
    config = draw(st.sampled_from(sorted(BASES) + ["missing.toml"]))
    argv = [command, str(ROOT / "examples" / config)]
    flags = COMMANDS[command]
    for flag in draw(st.lists(st.sampled_from(flags), max_size=4)) if flags else []:
        argv += [flag, draw(flag_values)]
    if command != "derive":
        argv += ["--out", draw(st.sampled_from(["out", "out/x.json", "file/x", "."]))]
    if draw(st.booleans()):
        argv.append("--force")
    return argv


@fuzz(300)
@given(command_lines())
def test_random_command_lines_end_in_exit_2_or_reach_the_work(tmp_path_factory, argv):
    """Up to the start of the work (derivation), every command line ends in exit 2 with one
    error line, argparse's exit 2, or gets through."""
    import contextlib
    import io

    from hildlimits._cli import main
    from hildlimits._families import all_families

    cwd = tmp_path_factory.mktemp("cli")
    (cwd / "file").write_text("x")
    mp = pytest.MonkeyPatch()
    try:
        mp.chdir(cwd)

        def stop(*a, **k):
            raise _Reached

        for fam in all_families():  # where every command starts its work
            for method in ("derive", "simulate", "validate", "solve"):
                mp.setattr(type(fam), method, stop)
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                rc = main(argv)
            except SystemExit as exc:
                assert exc.code in (0, 2), (argv, err.getvalue())
                return
            except _Reached:
                return
        assert rc == 2, (argv, err.getvalue())
        assert "Traceback" not in err.getvalue()
    finally:
        mp.undo()


@fuzz(300)
@given(st.text(max_size=40))
def test_sweep_param_specs(spec):
    from hildlimits._families import get_family
    from hildlimits._pipeline.sweep import parse_param

    for kind in ("committee", "meanfield"):
        try:
            parse_param("training.lr=" + spec, get_family(kind))
            parse_param(spec, get_family(kind))
        except ConfigError:
            pass


@fuzz(300)
@given(values)
def test_numeric_validators(value):
    from hildlimits._pipeline.validators import int_list, matrix, numeric_array, square_matrix

    for check in (
        lambda: numeric_array("x", value),
        lambda: matrix("x", value, (2, 2)),
        lambda: square_matrix("x", value),
        lambda: int_list(str(value), "--N"),
    ):
        try:
            check()
        except ConfigError:
            pass
