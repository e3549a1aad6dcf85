"""Long finite-width validations (deselected by default; run with ``pytest -m slow``)."""

import os

import numpy as np
import pytest

import hildlimits as hl
from hildlimits._pipeline.config import load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_validate_goldt_k2_at_larger_N():
    # ~3 minutes on 2 cores: the deviation of the seed mean from the ODE shrinks with N and
    # stays within the stated tolerance at N = 2000 (16 seeds).
    cfg = load_config(os.path.join(ROOT, "examples", "goldt_k2.toml"))
    report, sims, _ = hl.validate(
        cfg.model,
        hyper=cfg.hyper,
        init=cfg.init,
        Ns=[250, 2000],
        seeds=16,
        t1=cfg.solve.t1,
        n_save=cfg.solve.n_save,
        spacing=cfg.solve.spacing,
    )
    assert report["passed"], report["reason"]
    assert report["finite_size_exponent"] < -0.2
    assert np.all(np.isfinite(sims[-1].risk))
