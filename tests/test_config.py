"""``infocnf_env.EnvConfig``: plain-name overrides land in the right group, bad values fail early."""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import pytest

import infocnf_env
from infocnf_env import DataConfig, EnvConfig, OptimConfig, RewardConfig, SpaceConfig


def test_replace_routes_plain_names_to_their_group():
    config = EnvConfig().replace(alpha=0.5, batch_size=32, lr=3e-3, tol_bounds=(-6, -1), hidden=8, head="ccnf", seed=4)
    assert config.reward == RewardConfig(alpha=0.5)
    assert config.data == DataConfig(batch_size=32)
    assert config.optim == OptimConfig(lr=3e-3)
    assert config.spaces == SpaceConfig(tol_bounds=(-6.0, -1.0))
    assert dict(config.model) == {"hidden": 8}
    assert (config.head, config.seed) == ("ccnf", 4)


def test_replace_leaves_the_original_unchanged_and_keeps_other_fields():
    base = infocnf_env.ENV_IDS["InfoCNF-Digits-v0"]
    before = dataclasses.asdict(base)
    changed = base.replace(hidden=4, gap_check_every=5)
    assert dataclasses.asdict(base) == before
    assert changed.model == {**base.model, "hidden": 4}
    assert changed.reward.gap_check_every == 5 and changed.reward.alpha == base.reward.alpha
    assert changed.optim == base.optim and changed.data == base.data


def test_a_whole_group_can_be_replaced_and_then_overridden():
    config = EnvConfig().replace(reward=RewardConfig(alpha=0.1, loss_weight=2.0), loss_weight=3.0)
    assert (config.reward.alpha, config.reward.loss_weight) == (0.1, 3.0)


def test_flat_round_trips_through_from_kwargs():
    config = infocnf_env.ENV_IDS["InfoCNF-CIFAR10-LargeBatch-v0"]
    assert EnvConfig.from_kwargs(**config.flat()) == config
    assert config.flat()["batch_size"] == 8000 and config.flat()["hidden"] == 64


def test_make_kwargs_override_the_registered_config():
    env = gym.make("CCNF-Digits-v0", hidden=4, batch_size=8, alpha=0.25, lr=5e-4)
    config = env.unwrapped.config
    registered = infocnf_env.ENV_IDS["CCNF-Digits-v0"]
    assert config == registered.replace(hidden=4, batch_size=8, alpha=0.25, lr=5e-4)
    assert env.unwrapped.optimizer.param_groups[0]["lr"] == 5e-4
    assert env.unwrapped.task.stream.batch_size == 8


@pytest.mark.parametrize("field, value, match", [
    ("batch_size", 0, "batch_size must be a positive integer"),
    ("batch_size", 2.5, "batch_size must be a positive integer"),
    ("eval_batch_size", -1, "eval_batch_size must be a positive integer"),
    ("lr", 0.0, "lr must be positive"),
    ("lr", float("nan"), "lr must be a finite number"),
    ("alpha", -1.0, "alpha must be >= 0"),
    ("alpha", float("inf"), "alpha must be a finite number"),
    ("loss_weight", "1", "loss_weight must be a finite number"),
    ("failure_penalty", -1.0, "failure_penalty must be >= 0"),
    ("gap_check_every", -2, "gap_check_every must be an integer >= 0"),
    ("gap_weight", float("nan"), "gap_weight must be a finite number"),
    ("max_grad_norm", -1.0, "max_grad_norm must be >= 0"),
    ("obs_mode", "pixels", "unknown obs_mode 'pixels'; valid modes: vector, features"),
    ("feature_samples", 0, "feature_samples must be a positive integer"),
    ("tol_bounds", (-2, -8), "tol_bounds must be finite"),
])
def test_bad_values_fail_with_one_clear_error(field, value, match):
    with pytest.raises(ValueError, match=match):
        EnvConfig().replace(**{field: value})


def test_unknown_names_are_rejected_by_the_task():
    with pytest.raises(ValueError, match=r"unknown env kwarg\(s\) \['hiden'\]"):
        gym.make("InfoCNF-Digits-v0", hiden=4)
    with pytest.raises(ValueError, match=r"unknown env kwarg\(s\) \['hidden'\]"):
        gym.make("LatentODE-Spirals-v0", hidden=4)


def test_a_group_of_the_wrong_type_is_a_type_error():
    with pytest.raises(TypeError, match="EnvConfig.reward must be a RewardConfig"):
        EnvConfig(reward=SpaceConfig())  # type: ignore[arg-type]


def test_a_whole_model_dict_and_flat_model_options_together_are_one_clear_error():
    with pytest.raises(ValueError, match=r"either as model=\{\.\.\.\} or by name \(hidden, beta\), not both"):
        EnvConfig().replace(model={"num_scales": 2}, hidden=8, beta=0.5)
    # each alone, or in two calls, is fine
    assert dict(EnvConfig().replace(model={"num_scales": 2}).model) == {"num_scales": 2}
    assert dict(EnvConfig().replace(model={"num_scales": 2}).replace(hidden=8).model) == {"num_scales": 2, "hidden": 8}
