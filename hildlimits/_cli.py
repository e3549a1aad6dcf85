"""Command-line interface: ``hildlimits derive|solve CONFIG.toml ...``.

Exit codes: 0 success; 1 the dynamics diverged (the output is still written); 2 bad input.
The CLI enables JAX float64 explicitly (``jax_enable_x64``) before any computation.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

from ._errors import ConfigError, SolveError


def _versions() -> dict:
    import diffrax
    import jax
    import sympy

    from ._version import __version__

    return {
        "hildlimits": __version__,
        "jax": jax.__version__,
        "diffrax": diffrax.__version__,
        "sympy": sympy.__version__,
        "python": platform.python_version(),
    }


def _check_writable(path: Path, what: str) -> None:
    parent = path.resolve().parent
    if path.is_dir():
        raise ConfigError(f"{what} {str(path)!r} is a directory, expected a file path")
    if not parent.exists():
        try:
            parent.mkdir(parents=True)
        except OSError as exc:
            raise ConfigError(
                f"{what}: cannot create directory {str(parent)!r}: {exc.strerror}"
            ) from None
    if not os.access(parent, os.W_OK):
        raise ConfigError(f"{what}: directory {str(parent)!r} is not writable")


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)
    except OSError as exc:
        raise ConfigError(f"cannot write {str(path)!r}: {exc.strerror}") from None


def cmd_derive(ns) -> int:
    from ._config import load_config
    from ._derive import derive

    cfg = load_config(ns.config)
    system = derive(cfg.model)
    if ns.source:
        text = system.source
    elif ns.latex:
        text = system.latex()
    elif ns.markdown:
        text = system.markdown()
    else:
        text = str(system)
    if ns.out:
        out = Path(ns.out)
        _check_writable(out, "--out")
        out.write_text(text)
    else:
        print(text)
    return 0


def cmd_solve(ns) -> int:
    import jax

    jax.config.update("jax_enable_x64", True)
    from ._cache import cache_key
    from ._config import load_config
    from ._derive import derive
    from ._solve import solve

    cfg = load_config(ns.config)
    out = Path(ns.out)
    _check_writable(out, "--out")
    if ns.plot:
        _check_writable(Path(ns.plot), "--plot")
    t0 = time.perf_counter()
    system = derive(cfg.model)
    t_derive = time.perf_counter() - t0
    t0 = time.perf_counter()
    traj = solve(system, init=cfg.init, hyper=cfg.hyper, **cfg.solve.as_kwargs())
    t_solve = time.perf_counter() - t0
    data = traj.to_dict()
    data["meta"] = {
        "config": cfg.resolved(),
        "config_file": cfg.source,
        "versions": _versions(),
        "derivation_key": cache_key(cfg.model.structure),
        "status": traj.status,
        "timings_s": {"derive": t_derive, "solve_including_compile": t_solve},
    }
    _write_json(out, data)
    if ns.plot:
        from ._plot import plot_trajectory

        plot_trajectory(
            traj,
            ns.plot,
            title=f"{Path(cfg.source).stem}: K={cfg.model.K}, M={cfg.model.M}",
            log_time=cfg.solve.spacing == "log",
        )
    final = f"risk(t={traj.t[-1]:.6g}) = {traj.risk[-1]:.6e}"
    print(
        f"{traj.status}: {final}; {len(traj.t)} save times, {traj.num_steps} steps; wrote {out}"
        + (f" and {ns.plot}" if ns.plot else "")
    )
    if traj.diverged:
        print(f"error: the dynamics {traj.status} (learning rate too large?)", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hildlimits", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("derive", help="derive and print the ODE system of a config")
    d.add_argument("config")
    fmt = d.add_mutually_exclusive_group()
    fmt.add_argument("--latex", action="store_true", help="print LaTeX")
    fmt.add_argument("--markdown", action="store_true", help="print Markdown with LaTeX")
    fmt.add_argument("--source", action="store_true", help="print the generated JAX source")
    d.add_argument("--out", help="write to this file instead of stdout")
    d.set_defaults(func=cmd_derive)
    s = sub.add_parser("solve", help="derive and integrate the ODEs, write JSON (and a plot)")
    s.add_argument("config")
    s.add_argument("--out", required=True, help="output JSON path")
    s.add_argument("--plot", help="also write a PNG of risk and overlaps")
    s.set_defaults(func=cmd_solve)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    try:
        return ns.func(ns)
    except (ConfigError, SolveError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
