"""A learning test with a known optimum: on a two-family task whose best tolerance differs by
family, an agent that reads the family from its observation beats every constant action.

The task is a :class:`~infocnf_env.benchmark.BenchmarkEnv` with an analytic solver in place of
ODE solves (so thousands of episodes cost a second): NFE ``= 10 tol^(-1/5)`` (a fifth-order
method's step count), error ``= c_f tol`` with ``c_f`` 1 for family ``easy`` and 1e4 for
``hard``, and the target reward (1e-4, 300 per decade). The optimum is tol 1e-4 for ``easy``
and 1e-8 for ``hard``; any constant must compromise.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch

from agents.reinforce import ReinforceAgent
from infocnf_env.actions import BlockAction
from infocnf_env.benchmark import BenchmarkEnv, BenchmarkReward, Playthrough
from infocnf_env.config import SpaceConfig
from infocnf_env.episode import Feedback

FAMILIES = {"easy": 1.0, "hard": 1e4}


class TwoFamilyTask(BenchmarkEnv[str]):
    """One step per episode; the observation is the step one-hot and the family one-hot."""

    def __init__(self, pool_size: int = 8):
        super().__init__()
        self.spaces = SpaceConfig(tol_bounds=(-10.0, -2.0))
        self.reward_config = BenchmarkReward(error_form="target", error_weight=300.0, error_target=1e-4)
        self.num_blocks = 1
        families = list(FAMILIES)
        self.pools = {split: [families[i % 2] for i in range(pool_size)] for split in ("train", "test")}
        self._setup_spaces(1 + len(FAMILIES))

    def _start(self, episode: str) -> float:
        return 0.0

    def _advance(self, play: Playthrough[str], action: BlockAction) -> tuple[float, Feedback]:
        nfe = round(10 * action.tol ** (-1 / 5))
        return FAMILIES[play.episode] * action.tol, Feedback(nfe, None, 0, 0, action.tol)

    def _error(self, play: Playthrough[str]) -> float:
        return play.state

    def _observe(self, play: Playthrough[str]) -> np.ndarray:
        family = np.array([name == play.episode for name in FAMILIES], dtype=np.float32)
        return np.concatenate([np.ones(1, dtype=np.float32), family])


def best_constant_reward(env: TwoFamilyTask) -> float:
    grid = np.arange(-10.0, -1.99, 0.25)
    return max(env.score(env.constant_action(10.0 ** t), "test")["reward"] for t in grid)


def _train(seed: int) -> tuple[TwoFamilyTask, Any]:
    """REINFORCE with a learned baseline, 500 episodes on the training pool; its mean policy."""
    env = TwoFamilyTask()
    env.reset(seed=seed)
    agent = ReinforceAgent(env.observation_space, 1, gamma=1.0, lr=3e-3, init_mean=-6.0, init_std=1.0, seed=seed,
                           normalize_returns=True, value_baseline=True)
    for _ in range(500):
        obs, _ = env.reset()
        done = False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(agent.act(obs))
            agent.observe(reward)
            done = terminated or truncated
        agent.end_episode()

    def policy(obs: np.ndarray, step: int) -> np.ndarray:
        mean, _ = agent.gates[0](torch.as_tensor(obs))
        return mean.detach().reshape(-1).numpy()

    return env, policy


def test_reinforce_reading_the_family_beats_every_constant() -> None:
    """A statement over seeds, with margins: every seed beats the best constant, the median seed
    closes at least half the gap, every seed lands within a decade of each family's optimum."""
    closed = []
    for seed in (0, 1, 2):
        env, policy = _train(seed)
        learned = env.score(policy, "test")["reward"]
        constant = best_constant_reward(env)
        oracle = np.mean([max(env.play("test", e, env.constant_action(10.0 ** t))["reward"]
                              for t in np.arange(-10.0, -1.99, 0.25)) for e in range(len(env.pool("test")))])
        assert oracle > constant + 20  # the task has room: a constant must compromise
        closed.append((learned - constant) / (oracle - constant))
        for family, log_tol in (("easy", -4.0), ("hard", -8.0)):
            obs = np.array([1.0] + [name == family for name in FAMILIES], dtype=np.float32)
            assert float(policy(obs, 0)[0]) == pytest.approx(log_tol, abs=1.0)  # near each family's optimum
    assert min(closed) > 0.2 and float(np.median(closed)) > 0.5, closed


def test_the_analytic_task_has_the_stated_optimum() -> None:
    env = TwoFamilyTask(pool_size=2)
    for index, best in ((0, -4.0), (1, -8.0)):  # easy, hard
        rewards = {t: env.play("test", index, env.constant_action(10.0 ** t))["reward"]
                   for t in np.arange(-10.0, -1.99, 0.5)}
        assert max(rewards, key=rewards.get) == pytest.approx(best)
        assert math.isfinite(rewards[best])


#: PPO's training steps in the vector-env learning test (32 rollouts of 64 steps).
STEPS = 2048


def _ppo_closed(seed: int, num_envs: int) -> float:
    """SB3 PPO for ``STEPS`` steps on the two-family task (``num_envs`` 1: the single env in SB3's own
    ``DummyVecEnv``; more: the native vector env), 64 steps per rollout either way: the share of
    the gap between the best constant and the oracle its deterministic policy closes."""
    from stable_baselines3 import PPO

    from agents.sb3 import training_envs
    from infocnf_env.vector import BenchmarkVectorEnv

    env = TwoFamilyTask()
    envs = training_envs(BenchmarkVectorEnv.around(env, num_envs) if num_envs > 1 else [env])
    model = PPO("MlpPolicy", envs, n_steps=64 // num_envs, batch_size=32, learning_rate=3e-3, seed=seed,
                policy_kwargs={"net_arch": [16]}, device="cpu")
    model.learn(STEPS)
    low, high = env.action_space.low, env.action_space.high

    def policy(obs: np.ndarray, step: int) -> np.ndarray:
        action, _ = model.predict(obs, deterministic=True)
        return low + (np.asarray(action) + 1.0) * 0.5 * (high - low)

    grid = np.arange(-10.0, -1.99, 0.25)
    constant = best_constant_reward(env)
    oracle = np.mean([max(env.play("test", e, env.constant_action(10.0 ** t))["reward"] for t in grid)
                      for e in range(len(env.pool("test")))])
    return (env.score(policy, "test")["reward"] - constant) / (oracle - constant)


def test_ppo_learns_the_two_family_task_on_the_native_vector_env_as_on_the_single_env() -> None:
    """Over seeds, with margins: on 8 sub-envs as on one env PPO beats the best constant with
    every seed, and its median share of the gap closed is no worse by more than 0.15."""
    single = [_ppo_closed(seed, 1) for seed in (0, 1, 2)]
    vector = [_ppo_closed(seed, 8) for seed in (0, 1, 2)]
    assert min(single) > 0 and min(vector) > 0, (single, vector)
    assert np.median(vector) >= np.median(single) - 0.15, (single, vector)
