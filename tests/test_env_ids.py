"""Every registered id passes gymnasium's and stable-baselines3's ``check_env`` (tiny overrides).

CIFAR10 and MNIST ids read tiny fake datasets written to a temporary data root
(:mod:`fakedata`); every flow is shrunk to 3 narrow ODE blocks (2 scales x 1 flow) so a
check takes about a second on one CPU core.
"""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from fakedata import allow_fake_cifar10, write_fake_cifar10, write_fake_mnist
from flowkit import TINY_IMAGE, TINY_SPIRALS, TINY_VECTOR
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import infocnf_env

EXPECTED_IDS = {
    *(f"{head}-{data}-v0" for head in ("InfoCNF", "CCNF", "CNF") for data in ("CIFAR10", "MNIST", "Digits")),
    "InfoCNF-CIFAR10-LargeBatch-v0", "CCNF-CIFAR10-LargeBatch-v0", "InfoCNF-Toy1D-v0",
    "LatentODE-Spirals-v0", "LatentODE-Partitioned-Spirals-v0",
}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("data")
    write_fake_cifar10(root)
    write_fake_mnist(root)
    return str(root)


def overrides(env_id: str, data_root: str) -> dict:
    dataset = infocnf_env.ENV_IDS[env_id].data.dataset
    if dataset in ("cifar10", "mnist"):
        return dict(TINY_IMAGE, data_root=data_root)
    if dataset == "spirals":
        return dict(TINY_SPIRALS)
    return dict(TINY_VECTOR)


def test_registered_ids():
    assert set(infocnf_env.ENV_IDS) == EXPECTED_IDS
    for env_id in EXPECTED_IDS:
        assert env_id in gym.registry
        assert gym.registry[env_id].entry_point == "infocnf_env.training_env:TrainingStepEnv"


def test_the_clis_take_an_id_with_or_without_the_package_prefix_and_name_another_packages_id():
    from agents.envs import ID_PREFIX, check_env_id

    for name in ("InfoCNF-Digits-v0", "CNF-Frozen-Mixed-v0", "ODE-Mixed-v0"):
        assert check_env_id(name) == name
        assert check_env_id(ID_PREFIX + name) == name
    with pytest.raises(ValueError, match="'CartPole-v1' is not an InfoCNF id"):
        check_env_id("CartPole-v1")
    with pytest.raises(ValueError, match="unknown env id 'InfoCNF-Digits-v9'"):
        check_env_id(ID_PREFIX + "InfoCNF-Digits-v9")


def test_paper_recipes_in_registered_kwargs():
    """Section 4.1 / Appendix B settings of the CIFAR10 ids (overridden elsewhere to stay small)."""
    small, large = infocnf_env.ENV_IDS["InfoCNF-CIFAR10-v0"], infocnf_env.ENV_IDS["InfoCNF-CIFAR10-LargeBatch-v0"]
    assert (small.data.batch_size, small.optim.lr, small.model["hidden"], small.model["flows_per_scale"]) == \
        (900, 1e-3, 64, 2)
    assert small.optim.lr_milestones == ((250, 1e-4),) and small.model["adjoint"] is True
    assert (large.data.batch_size, large.optim.lr, large.optim.lr_milestones) == (8000, 1e-2, ((120, 1e-3),))


@pytest.mark.parametrize("env_id", sorted(EXPECTED_IDS))
def test_check_env(env_id, data_root, monkeypatch):
    allow_fake_cifar10(monkeypatch)
    env = gym.make(env_id, **overrides(env_id, data_root))
    unwrapped = env.unwrapped
    spec = infocnf_env.ENV_IDS[env_id]
    assert unwrapped.spec_kwargs["dataset"] == spec.data.dataset and unwrapped.spec_kwargs["head"] == spec.head
    assert unwrapped.num_blocks >= 2
    with warnings.catch_warnings():
        # Both checkers warn about the [-8, -2] action bounds and the unbounded observation
        # statistics; both are deliberate (SB3 agents see the action through RescaleAction).
        warnings.simplefilter("ignore", UserWarning)
        gym_check_env(unwrapped)
        sb3_check_env(unwrapped, warn=True)
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)


@pytest.mark.parametrize("env_id", ["InfoCNF-Digits-v0", "CCNF-CIFAR10-v0", "InfoCNF-Toy1D-v0"])
def test_check_env_features_mode(env_id, data_root, monkeypatch):
    allow_fake_cifar10(monkeypatch)
    env = gym.make(env_id, obs_mode="features", feature_samples=4, **overrides(env_id, data_root))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        gym_check_env(env.unwrapped)
        sb3_check_env(env.unwrapped, warn=True)


def test_fake_datasets_load(data_root, monkeypatch):
    from flows import load_dataset

    allow_fake_cifar10(monkeypatch)
    cifar = load_dataset("cifar10", "train", root=data_root)
    assert tuple(cifar.x.shape) == (40, 3, 32, 32) and cifar.num_classes == 10 and cifar.flip
    mnist = load_dataset("mnist", "test", root=data_root)
    assert tuple(mnist.x.shape) == (16, 1, 28, 28)
    assert np.array_equal(mnist.y.numpy(), np.arange(16) % 10)


def test_missing_data_root_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        gym.make("InfoCNF-MNIST-v0", data_root=str(tmp_path), **TINY_IMAGE)
