"""Gates that stay in their bounds: the squashed Gaussian's density, where it starts, and REINFORCE
and SB3 agents trained on a task whose optimum is the action's upper bound (agents.gates,
agents.reinforce, agents.sb3)."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from agents.cli import parse_args
from agents.gates import SquashedGaussian
from agents.reinforce import ADDED_FLAGS, Args, ReinforceAgent
from agents.run_dir import resolve_args

LOW, HIGH = -8.0, -2.0


def _normal_cdf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1 + torch.erf(x / math.sqrt(2)))


@pytest.mark.parametrize("mean, std", [(0.8, 0.3), (-1.5, 1.0), (0.0, 2.0)])
def test_the_squashed_density_is_the_density_of_its_samples(mean, std):
    """Against brute force: the density integrates to 1, its integral up to c is the Gaussian's
    probability of the pre-image, and a histogram of squashed samples matches it."""
    dist = SquashedGaussian([LOW], [HIGH])
    m, s = torch.tensor([mean]), torch.tensor([std])
    a = torch.linspace(LOW, HIGH, 400_001, dtype=torch.float64)[1:-1]
    u = torch.atanh((a - LOW) / ((HIGH - LOW) / 2) - 1)
    density = dist.log_prob(u.float().reshape(-1, 1), m, s).double().exp().reshape(-1)
    da = float(a[1] - a[0])
    cumulative = torch.cumsum(density, 0) * da
    assert float(cumulative[-1]) == pytest.approx(1.0, abs=2e-3)
    for c in (-7.0, -5.0, -3.5, -2.5):
        at = int(torch.searchsorted(a, torch.tensor(c, dtype=torch.float64)))
        expected = float(_normal_cdf((torch.atanh(torch.tensor((c - LOW) / 3.0 - 1)) - mean) / std))
        assert float(cumulative[at]) == pytest.approx(expected, abs=2e-3), c
    samples = dist.squash(m + s * torch.randn(400_000, 1, generator=torch.Generator().manual_seed(0))).reshape(-1)
    counts, edges = np.histogram(samples.numpy(), bins=24, range=(LOW, HIGH))
    at = torch.searchsorted(a, torch.tensor(edges, dtype=torch.float64)).clamp(max=len(a) - 1)
    predicted = np.diff(np.concatenate([[0.0], cumulative[at[1:]].numpy()]))  # the density's mass per bin
    empirical = counts / len(samples)
    np.testing.assert_allclose(empirical, predicted, atol=3e-3)


def _vector_space(blocks: int = 1) -> gym.spaces.Box:
    return gym.spaces.Box(-np.inf, np.inf, (blocks + 4,), np.float32)


def test_a_squashed_gates_log_prob_is_the_change_of_variables_of_its_action():
    """The log-prob the agent stores for its own action, against a numerical derivative of the
    action's distribution function."""
    agent = ReinforceAgent(_vector_space(), 1, init_mean=-3.0, init_std=0.7, seed=3, gate_dist="squashed",
                           action_bounds=([LOW], [HIGH]))
    obs = np.array([1.0, 0.3, -0.2, 0.5, 0.1], dtype=np.float32)
    mean, log_std = (t.detach().double() for t in agent.gates[0](torch.as_tensor(obs)))
    for _ in range(20):
        action = float(agent.act(obs)[0])
        h = 1e-4

        def cdf(x: float) -> float:
            u = math.atanh((x - LOW) / 3.0 - 1)
            return float(_normal_cdf((torch.tensor(u) - mean) / log_std.exp()))

        numeric = (cdf(action + h) - cdf(action - h)) / (2 * h)
        assert math.exp(float(agent._episodes[0].log_probs[-1].detach())) == pytest.approx(numeric, rel=2e-2)
        assert LOW < action < HIGH


def test_squashed_gates_start_where_the_gaussian_ones_start():
    """Deterministic action = the initial mean, local spread = the initial std (in decades)."""
    for mean, std, bounds in ((-3.0, 0.5, ([LOW], [HIGH])), (-4.0, 1.0, ([-8.0], [0.0])),
                              (-3.0, 0.5, ([LOW, -3.0], [HIGH, 0.0]))):
        dim = len(bounds[0])
        agent = ReinforceAgent(_vector_space(), 1, init_mean=mean, init_std=std, gate_dist="squashed",
                               action_bounds=bounds, action_dim=dim)
        action, spread = agent.policy(np.zeros(5, dtype=np.float32), 0)
        gaussian = ReinforceAgent(_vector_space(), 1, init_mean=mean, init_std=std, action_dim=dim)
        g_action, g_spread = gaussian.policy(np.zeros(5, dtype=np.float32), 0)
        torch.testing.assert_close(action, g_action, rtol=0, atol=1e-5)
        torch.testing.assert_close(spread, g_spread, rtol=1e-5, atol=1e-6)


def test_squashed_gates_refuse_an_initial_mean_outside_the_bounds():
    with pytest.raises(ValueError, match=r"initial mean -1 is not in \(-8, -2\) \(--init-mean\)"):
        ReinforceAgent(_vector_space(), 1, init_mean=-1.0, gate_dist="squashed", action_bounds=([LOW], [HIGH]))
    with pytest.raises(ValueError, match="unknown gate distribution 'beta'; valid: squashed, gaussian"):
        ReinforceAgent(_vector_space(), 1, gate_dist="beta")


class Looser(gym.Env):
    """Looser is always better: the reward is the (clipped) action, so the optimum is the upper
    bound, and beyond it the reward is flat, as the envs' clipped tolerances make it."""

    def __init__(self, blocks: int = 2):
        self.blocks = blocks
        self.action_space = gym.spaces.Box(LOW, HIGH, (1,), np.float32)
        self.observation_space = _vector_space(blocks)

    def _obs(self) -> np.ndarray:
        obs = np.zeros(self.blocks + 4, dtype=np.float32)
        obs[self.block] = 1.0
        return obs

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.block = 0
        return self._obs(), {}

    def step(self, action):
        reward = float(np.clip(action[0], LOW, HIGH)) / self.blocks
        self.block += 1
        done = self.block == self.blocks
        return (np.zeros(self.blocks + 4, np.float32) if done else self._obs()), reward, done, False, {}


def _train(agent: ReinforceAgent, env: Looser, episodes: int) -> None:
    for _ in range(episodes):
        obs, _ = env.reset()
        done = False
        while not done:
            obs, reward, done, _, _ = env.step(agent.act(obs))
            agent.observe(reward)
        agent.end_episode()


def test_reinforce_gates_trained_toward_a_bound_stay_inside_it():
    env = Looser()
    squashed = ReinforceAgent(env.observation_space, 2, lr=0.05, seed=0, gate_dist="squashed",
                              action_bounds=([LOW], [HIGH]))
    gaussian = ReinforceAgent(env.observation_space, 2, lr=0.05, seed=0)
    for agent in (squashed, gaussian):
        _train(agent, env, 300)
    for block in range(2):
        obs = env.reset()[0] if block == 0 else np.eye(6, dtype=np.float32)[1]
        action = float(squashed.policy(obs, block)[0][0])
        assert -3.0 < action <= HIGH  # learned: from -3 towards the optimum, and inside the bounds
        # the paper's Gaussian gate on the same task: its mean drifts past the bound, where every
        # sample is clipped to the same reward (what the squashed gate cannot do)
        assert float(gaussian.policy(obs, block)[0][0]) > HIGH


def test_reinforce_cli_defaults_to_squashed_gates_and_old_runs_keep_the_papers(tmp_path):
    assert parse_args(Args, []).gate_dist == "squashed"
    run = tmp_path / "old"
    run.mkdir()  # a run written before --gate-dist existed: its config has no gate_dist
    (run / "config.json").write_text('{"env": "InfoCNF-Digits-v0", "agent": "reinforce", "env_kwargs": {}, '
                                     '"args": {"env": "InfoCNF-Digits-v0", "gate_lr": 0.01}}')
    resumed = resolve_args(parse_args(Args, ["--resume", str(run)]), "reinforce", ADDED_FLAGS)
    assert resumed.gate_dist == "gaussian"


@pytest.mark.parametrize("algo, steps", [("ppo", 400), ("a2c", 400), ("sac", 200), ("td3", 200)])
def test_sb3_deterministic_actions_trained_toward_a_bound_stay_inside_it(algo, steps):
    """SB3 acts in [-1, 1] behind RescaleAction: SAC and TD3 squash with tanh, PPO and A2C clip
    their Gaussian's mean in ``predict``; in the env's units the action stays in the bounds."""
    from agents.sb3 import EnvUnitsPolicy, algo_class, default_algo_kwargs, on_policy_log_std, training_envs

    env = Looser(blocks=1)
    kwargs = default_algo_kwargs(algo, 1, on_policy_log_std(0.5, (LOW, HIGH)))
    model = algo_class(algo)("MlpPolicy", training_envs([env]), seed=0, verbose=0, **kwargs)
    obs = env.reset()[0]
    policy = EnvUnitsPolicy(model, [LOW], [HIGH])
    before = float(policy(obs)[0])
    model.learn(steps)
    after = float(policy(obs)[0])
    assert LOW <= after <= HIGH and after > before + 1.0
    unit, _ = model.predict(obs, deterministic=True)
    assert -1.0 <= float(unit[0]) <= 1.0


def test_squashed_gates_that_choose_a_method_start_in_the_middle_of_the_method_positions():
    """In the ``tol_method`` mode the second entry is a method position in [0, 1]: the squashed
    gates start there (at 0.5), not at the first step's default mean, which lies outside it."""
    agent = ReinforceAgent(_vector_space(), 1, init_mean=-5.0, init_std=0.5, seed=0, gate_dist="squashed",
                           action_dim=2, action_bounds=([-9.0, 0.0], [-2.0, 1.0]))
    with torch.no_grad():
        actions = np.array([agent.act(np.zeros(5, np.float32)) for _ in range(400)])
    assert np.all((actions[:, 1] > 0.0) & (actions[:, 1] < 1.0))
    assert abs(float(np.median(actions[:, 1])) - 0.5) < 0.1 and abs(float(np.median(actions[:, 0])) + 5.0) < 0.3
