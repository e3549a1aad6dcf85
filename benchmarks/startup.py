"""Cold start of the command line, as whole processes. Run: python benchmarks/startup.py

Times, each as a fresh Python process (wall clock, median of ``--repeats``):

* ``bare``: ``python -c "import jax, diffrax"``, the floor of any solve;
* ``first``: ``hildlimits solve CONFIG`` with an empty cache directory of its own (derivation,
  tracing, export and XLA compilation all happen);
* ``second``: the same command again on that cache (the derivation, the exported solve and the
  compiled executable are loaded; SymPy and matplotlib are not imported);

and the ratios ``second / bare`` (the target: at most 2) and ``first / second``. The caches live
in temporary directories (``HILDLIMITS_CACHE_DIR``), so neither the user's cache nor an earlier
run is read. The JSON outputs of first and second runs are checked to agree in ``t``, ``risk``,
``Q``, ``R`` (bitwise).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def timed(cmd: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr}")
    return wall


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(ROOT / "examples" / "goldt_k2.toml"))
    p.add_argument("--repeats", type=int, default=3)
    ns = p.parse_args()

    env = {k: v for k, v in os.environ.items() if not k.startswith("HILDLIMITS_")}
    bare_cmd = [sys.executable, "-c", "import jax, diffrax"]
    times: dict[str, list[float]] = {"bare": [], "first": [], "second": []}
    with tempfile.TemporaryDirectory(prefix="hildlimits-startup-") as tmp:
        tmp = Path(tmp)
        timed(bare_cmd, env)  # warm the file-system cache for the imports
        for r in range(ns.repeats):
            cache = tmp / f"cache{r}"
            run_env = env | {"HILDLIMITS_CACHE_DIR": str(cache)}
            outs = [tmp / f"first{r}.json", tmp / f"second{r}.json"]
            solve = [sys.executable, "-m", "hildlimits", "solve", ns.config, "--out"]
            times["bare"].append(timed(bare_cmd, env))
            times["first"].append(timed(solve + [str(outs[0])], run_env))
            times["second"].append(timed(solve + [str(outs[1])], run_env))
            a, b = (json.loads(o.read_text()) for o in outs)
            for key in ("t", "risk", "Q", "R"):
                if a[key] != b[key]:
                    sys.exit(f"first and second run differ in {key!r}")

    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"config: {ns.config}; {ns.repeats} repeats (wall seconds: median [min, max])")
    for k, label in (
        ("bare", 'python -c "import jax, diffrax"'),
        ("first", "hildlimits solve (empty cache)"),
        ("second", "hildlimits solve (second run)"),
    ):
        v = times[k]
        print(f"  {label:34s} {med[k]:7.3f} s  [{min(v):.3f}, {max(v):.3f}]")
    print(f"  second / bare   {med['second'] / med['bare']:6.2f}   (target <= 2)")
    print(f"  first / bare    {med['first'] / med['bare']:6.2f}")
    print(f"  first / second  {med['first'] / med['second']:6.2f}")
    print("  first and second runs agree bitwise in t, risk, Q, R")


if __name__ == "__main__":
    main()
