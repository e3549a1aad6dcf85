"""Optimised learning-rate schedule vs the best constant rate, ODE prediction checked by simulation.

Setting (examples/schedule_noise.toml): K = M = 2 erf, first layer trained, output noise
sigma = 0.5, t1 = 40. The noise floor of the risk grows with the learning rate, so the schedule
found by gradient descent through the ODE (20 pieces) anneals the rate; the claim checked is that
finite networks trained with that schedule reach a lower risk than with the best constant rate,
as the ODE predicts.

Run: python validation/schedule.py [--quick]
Writes: validation/out/schedule/schedule.json and schedule.png; exit 0 if the simulation confirms
the ODE's ranking by more than 2 standard errors on each side.
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent


def run() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    ns = p.parse_args()
    out = HERE / "out" / "schedule"
    args = [
        "optimize-schedule",
        str(HERE.parent / "examples" / "schedule_noise.toml"),
        "--pieces",
        "20",
        "--out",
        str(out),
    ]
    args += (
        ["--steps", "40", "--N", "300", "--seeds", "4"]
        if ns.quick
        else ["--steps", "150", "--N", "1000", "--seeds", "8"]
    )
    rc = subprocess.run([sys.executable, "-m", "hildlimits", *args]).returncode
    if rc != 0:
        return rc
    data = json.loads((out / "schedule.json").read_text())
    return 0 if data["simulation_confirms"] else 1


if __name__ == "__main__":
    sys.exit(run())
