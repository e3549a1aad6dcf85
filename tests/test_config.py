"""Configuration validation: every bad input is a ConfigError naming the field and the value."""

from __future__ import annotations

import copy
import re

import numpy as np
import pytest

from hildlimits import ConfigError
from hildlimits._pipeline.config import Config, config_from_dict, load_config

_BASE = {
    "model": {
        "K": 2,
        "M": 2,
        "activation": "erf",
        "teacher_activation": "erf",
        "train_second_layer": False,
        "noise": 0.0,
        "weight_decay": 0.0,
    },
    "training": {"lr": 0.5, "lr_second_layer": 0.5},
    "init": {
        "Q": [[0.2, 0.0], [0.0, 0.2]],
        "R": [[0.01, 0.0], [0.0, 0.005]],
        "T": [[1.0, 0.0], [0.0, 1.0]],
        "v": [1.0, 1.0],
        "v_teacher": [1.0, 1.0],
    },
    "solve": {"t1": 10.0, "n_save": 20, "spacing": "log"},
}


def base() -> dict:
    """A fresh, valid configuration dict (K = M = 2 erf, like examples/saad_solla_k2.toml)."""
    return copy.deepcopy(_BASE)


def data_with(data: dict, section: str, key: str, value) -> dict:
    """``data`` with ``data[section][key] = value``."""
    data[section][key] = value
    return data


def _expect_error(data: dict, *fragments: str) -> ConfigError:
    """``config_from_dict(data)`` raises ConfigError whose message contains every fragment."""
    with pytest.raises(ConfigError, match=re.escape(fragments[0])) as excinfo:
        config_from_dict(data)
    msg = str(excinfo.value)
    for frag in fragments[1:]:
        assert frag in msg, f"{frag!r} not in error message {msg!r}"
    return excinfo.value


def test_config_error_is_value_error():
    assert issubclass(ConfigError, ValueError)


# ---------------------------------------------------------------------------------- valid input


def test_base_config_loads():
    cfg = config_from_dict(base())
    assert isinstance(cfg, Config)
    assert cfg.model.K == 2 and cfg.model.M == 2
    assert cfg.model.activation == "erf" and cfg.model.teacher_activation == "erf"
    assert cfg.hyper.lr == 0.5 and cfg.hyper.lr_second_layer == 0.5
    np.testing.assert_array_equal(cfg.init.Q, [[0.2, 0.0], [0.0, 0.2]])
    np.testing.assert_array_equal(cfg.init.R, [[0.01, 0.0], [0.0, 0.005]])
    np.testing.assert_array_equal(cfg.init.T, np.eye(2))
    assert cfg.solve.t1 == 10.0 and cfg.solve.n_save == 20 and cfg.solve.spacing == "log"


def test_base_helper_returns_independent_copies():
    a = base()
    a["init"]["Q"][0][0] = 99.0
    assert base()["init"]["Q"][0][0] == 0.2


def _random_data(seed: int = 3, N: int = 500) -> dict:
    data = base()
    for key in ("Q", "R", "T"):
        del data["init"][key]
    data["init"]["random"] = {"N": N, "seed": seed}
    return data


def test_random_init_overlaps_are_valid_and_reproducible():
    cfg = config_from_dict(_random_data())
    Q, R, T = cfg.init.Q, cfg.init.R, cfg.init.T
    assert Q.shape == (2, 2) and R.shape == (2, 2) and T.shape == (2, 2)
    np.testing.assert_array_equal(Q, Q.T)
    joint = np.block([[Q, R], [R.T, T]])
    assert np.linalg.eigvalsh(joint).min() >= -1e-10
    # overlaps of N = 500 standard Gaussian vectors: diagonal close to 1
    assert np.all(np.abs(np.diag(Q) - 1) < 0.3) and np.all(np.abs(np.diag(T) - 1) < 0.3)

    again = config_from_dict(_random_data())
    for name in ("Q", "R", "T", "v", "v_teacher"):
        np.testing.assert_array_equal(getattr(cfg.init, name), getattr(again.init, name))

    other = config_from_dict(_random_data(seed=4))
    assert not np.array_equal(cfg.init.R, other.init.R)


# ------------------------------------------------------------------------------- model.K / M


@pytest.mark.parametrize(
    "K", [0, -1, 2.5, True, "2"], ids=["zero", "negative", "float", "bool", "str"]
)
def test_bad_K(K):
    data = base()
    data["model"]["K"] = K
    _expect_error(data, "K must be a positive integer", f"got {K!r}")


def test_K_zero_message():
    data = base()
    data["model"]["K"] = 0
    _expect_error(data, "K must be a positive integer, got 0")


def test_M_zero():
    data = base()
    data["model"]["M"] = 0
    _expect_error(data, "M must be a positive integer", "got 0")


# -------------------------------------------------------------------------------- overlaps


def test_joint_overlap_not_psd():
    data = base()
    data["init"]["Q"] = [[1.0, 0.0], [0.0, 1.0]]
    data["init"]["R"] = [[2.0, 0.0], [0.0, 2.0]]
    data["init"]["T"] = [[1.0, 0.0], [0.0, 1.0]]
    _expect_error(data, "positive semi-definite", "init.R", "[[2.0, 0.0], [0.0, 2.0]]")


def test_Q_not_symmetric():
    data = base()
    data["init"]["Q"] = [[0.2, 0.1], [0.0, 0.2]]
    _expect_error(data, "init.Q", "symmetric", "[[0.2, 0.1], [0.0, 0.2]]")


def test_Q_wrong_shape():
    bad = [[0.2, 0.0, 0.0], [0.0, 0.2, 0.0], [0.0, 0.0, 0.2]]
    _expect_error(data_with(base(), "init", "Q", bad), "init.Q", "shape", "(2, 2)", repr(bad))


@pytest.mark.parametrize(
    "key, value",
    [("v", [1.0, 1.0, 1.0]), ("v_teacher", [1.0])],
    ids=["v", "v_teacher"],
)
def test_second_layer_wrong_length(key, value):
    _expect_error(data_with(base(), "init", key, value), f"init.{key}", "shape", repr(value))


# --------------------------------------------------------------------------- hyperparameters


@pytest.mark.parametrize(
    "section, key",
    [
        ("training", "lr"),
        ("training", "lr_second_layer"),
        ("model", "noise"),
        ("model", "weight_decay"),
    ],
)
def test_negative_hyperparameter(section, key):
    data = data_with(base(), section, key, -0.1)
    _expect_error(data, f"{section}.{key}", "non-negative", "-0.1")


@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_non_finite_lr(value):
    data = data_with(base(), "training", "lr", value)
    _expect_error(data, "training.lr", "finite", repr(value))


@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_non_finite_in_Q(value):
    data = base()
    data["init"]["Q"][0][1] = value
    data["init"]["Q"][1][0] = value
    _expect_error(data, "init.Q", "finite", repr(value))


@pytest.mark.parametrize("key", ["activation", "teacher_activation"])
def test_unknown_activation(key):
    data = data_with(base(), "model", key, "relu2")
    _expect_error(data, key, "'relu2'")


# ------------------------------------------------------------------------------ schema / keys


def test_misspelt_key_suggests_correction():
    data = base()
    data["model"]["activaton"] = data["model"].pop("activation")
    _expect_error(data, "model.activaton", "did you mean 'activation'")


def test_unknown_section():
    data = base()
    data["modle"] = data.pop("model")
    _expect_error(data, "[modle]", "model")


@pytest.mark.parametrize("section", ["model", "training", "init", "solve"])
def test_missing_section(section):
    data = base()
    del data[section]
    _expect_error(data, f"[{section}]", "missing")


def test_missing_required_K():
    data = base()
    del data["model"]["K"]
    _expect_error(data, "model.K", "missing")


# ------------------------------------------------------------------------------------ [solve]


@pytest.mark.parametrize(
    "key, value",
    [("spacing", "cubic"), ("n_save", 1), ("t1", 0), ("rtol", -1)],
)
def test_bad_solve_option(key, value):
    data = data_with(base(), "solve", key, value)
    _expect_error(data, f"solve.{key}", f"got {value!r}")


# -------------------------------------------------------------------------------- init.random


def test_random_init_with_explicit_Q():
    data = _random_data()
    data["init"]["Q"] = [[0.2, 0.0], [0.0, 0.2]]
    _expect_error(data, "init.Q", "[init.random]")


def test_random_init_N_zero():
    data = _random_data(N=0)
    _expect_error(data, "init.random.N", "positive integer", "got 0")


# ------------------------------------------------------------------------------- load_config


def test_load_config_missing_file(tmp_path):
    path = tmp_path / "does_not_exist.toml"
    with pytest.raises(ConfigError, match="not found") as excinfo:
        load_config(path)
    assert str(path) in str(excinfo.value)


def test_load_config_invalid_toml(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("[model]\nK = 2\nM = = 2\n")
    with pytest.raises(ConfigError, match="invalid TOML") as excinfo:
        load_config(path)
    assert str(path) in str(excinfo.value)


def test_load_config_example_file():
    from pathlib import Path

    example = Path(__file__).resolve().parent.parent / "examples" / "saad_solla_k2.toml"
    cfg = load_config(example)
    assert cfg.model.K == 2 and cfg.model.M == 2
    assert cfg.source == str(example)


def test_load_config_mismatched_example():
    from pathlib import Path

    example = Path(__file__).resolve().parent.parent / "examples" / "relu_tanh_k2.toml"
    cfg = load_config(example)
    assert (cfg.model.activation, cfg.model.teacher_activation) == ("relu", "tanh")
