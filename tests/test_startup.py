"""Cold start of ``hildlimits solve``: a repeated solve of a cached derivation imports neither SymPy
nor matplotlib, loads its exported (traced) solve instead of tracing it, hits JAX's persistent
compilation cache, and gives the same numbers; corrupt cache entries are rebuilt."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import hildlimits as hl
from hildlimits._pipeline import export as _export

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "examples" / "goldt_k2.toml"

# runs the console command's entry point, then reports the modules it imported
WRAPPER = """
import atexit, json, sys
atexit.register(lambda: print("MODULES " + json.dumps(sorted(sys.modules)), file=sys.stderr))
from hildlimits._cli import entry
sys.argv = ["hildlimits", *sys.argv[1:]]
sys.exit(entry())
"""


def _cli(cache: Path, out: Path, *extra_env) -> tuple[str, list[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HILDLIMITS_", "JAX_"))}
    env |= {"HILDLIMITS_CACHE_DIR": str(cache), "HILDLIMITS_LOG_EXPORT": "1"}
    env |= dict(extra_env)
    proc = subprocess.run(
        [sys.executable, "-c", WRAPPER, "solve", str(CONFIG), "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    modules = next(
        json.loads(line[len("MODULES ") :])
        for line in proc.stderr.splitlines()
        if line.startswith("MODULES ")
    )
    return proc.stderr, modules


def _same_numbers(a: Path, b: Path) -> None:
    x, y = json.loads(a.read_text()), json.loads(b.read_text())
    for key in ("t", "risk", "Q", "R", "v", "status", "num_steps"):
        assert x[key] == y[key], key  # bitwise: the same executable ran


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("startup")
    cache = tmp / "cache"
    first = _cli(cache, tmp / "first.json")
    second = _cli(cache, tmp / "second.json", ("JAX_LOG_COMPILES", "1"))
    return tmp, cache, first, second


def test_second_solve_loads_the_export_without_sympy_or_matplotlib(two_runs):
    tmp, cache, (log1, _), (log2, modules2) = two_runs
    assert "export: stored" in log1
    assert "export: loaded" in log2 and "export: stored" not in log2
    assert "sympy" not in modules2 and "matplotlib" not in modules2
    assert "hildlimits._engine.codegen" not in modules2
    # nothing traced but the call of the loaded module, whose executable came from disk
    assert "Finished tracing run " not in log2
    assert "Persistent compilation cache hit for 'jit_call'" in log2
    _same_numbers(tmp / "first.json", tmp / "second.json")
    (entry,) = (cache / "export").glob("*.jaxexport")
    assert list((cache / "xla").glob("jit_call-*-cache"))
    assert not list(cache.rglob("*.tmp"))


def test_corrupt_entries_are_rebuilt_not_fatal(two_runs):
    tmp, cache, _, _ = two_runs
    (entry,) = (cache / "export").glob("*.jaxexport")
    blob = entry.read_bytes()
    entry.write_bytes(blob[: len(blob) // 2])  # truncated export
    for xla in (cache / "xla").glob("jit_call-*-cache"):
        xla.write_bytes(xla.read_bytes()[:1000])  # torn executable
    log, _ = _cli(cache, tmp / "third.json")
    assert "export: discarded" in log and "export: stored" in log
    assert "removed unreadable compilation cache entry" in log
    _same_numbers(tmp / "first.json", tmp / "third.json")
    blob = entry.read_bytes()  # rewritten whole: magic, digest of the payload, payload
    head = len(_export.MAGIC) + 65
    assert blob.startswith(_export.MAGIC)
    assert blob[len(_export.MAGIC) : head - 1] == hashlib.sha256(blob[head:]).hexdigest().encode()


def test_library_import_is_light_and_switches_nothing_on():
    code = (
        "import sys, jax, hildlimits as hl\n"
        "from hildlimits._pipeline import export as _export\n"
        "hl.Committee(K=2, M=2, activation='erf', teacher_activation='sign')\n"
        "hl.Hyperparams(lr=0.5)\n"
        "print(json.dumps(['sympy' in sys.modules, 'matplotlib' in sys.modules, "
        "_export.enabled(), jax.config.jax_compilation_cache_dir]))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    proc = subprocess.run(
        [sys.executable, "-c", "import json\n" + code],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [False, False, False, None]


def test_public_names_resolve_lazily():
    for name in hl.__all__:
        assert getattr(hl, name) is not None
    assert set(hl.__all__) <= set(dir(hl))
    from hildlimits import Committee, derive, solve  # noqa: F401

    with pytest.raises(AttributeError):
        hl.not_a_name  # noqa: B018


def test_named_activations_check_without_sympy_and_match_their_expressions():
    from hildlimits._engine.activations import _REGISTRY, Activation

    for name, act in _REGISTRY.items():
        plain = Activation(name, act.expr, act.description)  # differentiable derived by SymPy
        assert plain.differentiable == act.differentiable, name
        assert plain == act and hash(plain) == hash(act)


def test_opt_out_of_the_compilation_caches(monkeypatch):
    from hildlimits._cli import enable_compilation_caches

    monkeypatch.setenv("HILDLIMITS_NO_COMPILATION_CACHE", "1")
    before = jax.config.jax_compilation_cache_dir
    enable_compilation_caches()
    assert not _export.enabled() and jax.config.jax_compilation_cache_dir == before


def test_export_failure_falls_back_to_jit_with_the_reason(monkeypatch, tmp_path):
    monkeypatch.setenv("HILDLIMITS_CACHE_DIR", str(tmp_path))

    def refuse(self, *args, **kwargs):
        raise NotImplementedError("cannot serialise this")

    model = hl.Committee(K=1, M=1, activation="linear")
    init = hl.Overlaps.for_model(model, Q=[[0.5]], R=[[0.1]], T=[[1.0]])
    system = hl.derive(model)
    reference = hl.solve(
        system, init=init, hyper=hl.Hyperparams(lr=0.3), t1=2.0, n_save=5, max_steps=4096
    )
    fresh = hl.derive(model, cache=False)
    fresh = type(fresh)(fresh.structure, fresh.equations, fresh.observables, fresh.expectations)
    monkeypatch.setattr(jax.export.Exported, "serialize", refuse)
    monkeypatch.setattr(_export, "EVENTS", [])
    _export.enable()
    try:
        traj = hl.solve(
            fresh, init=init, hyper=hl.Hyperparams(lr=0.3), t1=2.0, n_save=5, max_steps=4096
        )
    finally:
        _export.enable(False)
    assert any(
        "fallback to jit (NotImplementedError: cannot serialise this)" in e for e in _export.EVENTS
    ), _export.EVENTS
    np.testing.assert_allclose(traj.risk, reference.risk, rtol=1e-13, atol=0)
    assert not list(tmp_path.glob("export/*"))
