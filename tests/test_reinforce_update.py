"""One REINFORCE update (agents.reinforce, Eq. 7) against the same update computed by hand:
the returns-to-go, the moving-average baseline, the learned value baseline, the return
normalisation and the gates' Adam step. Episodes are played by hand on made-up observations
(the block one-hot and two features), so every number of the update is known."""

from __future__ import annotations

import copy

import gymnasium as gym
import numpy as np
import pytest
import torch

from agents.reinforce import ReinforceAgent

BLOCKS = 3
SPACE = gym.spaces.Box(-np.inf, np.inf, (BLOCKS + 2,), np.float32)
LR = 0.01


def _obs(block: int, episode: int) -> np.ndarray:
    obs = np.zeros(BLOCKS + 2, dtype=np.float32)
    obs[block] = 1.0
    obs[BLOCKS:] = [0.3 * episode - 0.5, 0.2 * block + 0.1]
    return obs


def _play(agent: ReinforceAgent, rewards: list[float], episode: int = 0) -> tuple[list[np.ndarray], dict]:
    """Act on each block's observation, pay ``rewards``; the actions and the update's statistics."""
    actions = []
    for block, reward in enumerate(rewards):
        actions.append(agent.act(_obs(block, episode)))
        agent.observe(reward)
    return actions, agent.end_episode()


def _returns(rewards: list[float], gamma: float) -> np.ndarray:
    return np.array([sum(gamma ** (j - i) * rewards[j] for j in range(i, len(rewards))) for i in range(len(rewards))])


def _stepped(agent: ReinforceAgent, actions: list[np.ndarray], advantages: np.ndarray, episode: int = 0,
             before: tuple[torch.nn.ModuleList, dict] | None = None, entropy: float = 0.0) -> list[torch.Tensor]:
    """The gates' parameters after one Adam step on ``-sum_i (log pi(a_i | x_i) A_i + entropy H_i)``,
    computed by hand on a copy of the gates and optimizer as they were before the update (``before``)."""
    gates, state = before if before is not None else (copy.deepcopy(agent.gates), agent.optimizer.state_dict())
    gates = copy.deepcopy(gates)
    optimizer = torch.optim.Adam(gates.parameters(), lr=LR)
    optimizer.load_state_dict(copy.deepcopy(state))
    loss = torch.zeros(())
    for block, (action, advantage) in enumerate(zip(actions, advantages, strict=True)):
        mean, log_std = gates[block](torch.as_tensor(_obs(block, episode)))
        dist = torch.distributions.Normal(mean, log_std.exp())
        loss = loss - dist.log_prob(torch.as_tensor(action).reshape(mean.shape)).sum() * float(advantage)
        loss = loss - entropy * dist.entropy().sum()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return [p.detach() for p in gates.parameters()]


def _before(agent: ReinforceAgent) -> tuple[torch.nn.ModuleList, dict]:
    return copy.deepcopy(agent.gates), copy.deepcopy(agent.optimizer.state_dict())


def _assert_params(agent: ReinforceAgent, expected: list[torch.Tensor]) -> None:
    for got, want in zip(agent.gates.parameters(), expected, strict=True):
        torch.testing.assert_close(got.detach(), want, rtol=1e-5, atol=1e-6)


REWARDS = [[-3.0, -5.0, -20.0], [-1.0, -4.0, -30.0], [-2.0, -2.0, -10.0]]


@pytest.mark.parametrize("gamma, entropy", [(1.0, 0.0), (0.5, 0.0), (1.0, 1000.0)])
def test_without_a_baseline_the_gates_step_along_the_returns_to_go(gamma: float, entropy: float) -> None:
    agent = ReinforceAgent(SPACE, BLOCKS, gamma=gamma, lr=LR, baseline_momentum=None, hidden=8, seed=0,
                           entropy=entropy)
    before = _before(agent)
    actions, stats = _play(agent, REWARDS[0])
    returns = _returns(REWARDS[0], gamma)
    assert stats["advantage"] == pytest.approx(returns.mean(), rel=1e-6)
    _assert_params(agent, _stepped(agent, actions, returns, before=before, entropy=entropy))
    if entropy:  # a large bonus: every gate's spread grows
        for gate, old in zip(agent.gates, before[0], strict=True):
            assert float(gate.head.linear.bias[1]) > float(old.head.linear.bias[1])


def test_a_two_entry_action_steps_along_its_joint_log_density() -> None:
    """The tol_first_step mode: each entry a Gaussian, the log-density of the action their sum."""
    agent = ReinforceAgent(SPACE, BLOCKS, gamma=1.0, lr=LR, baseline_momentum=None, hidden=8, seed=0, action_dim=2)
    gates = copy.deepcopy(agent.gates)
    actions, stats = _play(agent, REWARDS[0])
    assert all(a.shape == (2,) for a in actions)
    assert stats["gate_mean"] == pytest.approx(-3.0) and stats["gate_std"] == pytest.approx(0.5)  # the tolerance's
    # the gradient itself (Adam's first step would not see a uniform scale): by hand on a copy
    loss = torch.zeros(())
    for block, (action, advantage) in enumerate(zip(actions, _returns(REWARDS[0], 1.0), strict=True)):
        mean, log_std = gates[block](torch.as_tensor(_obs(block, 0)))
        log_density = torch.distributions.Normal(mean, log_std.exp()).log_prob(torch.as_tensor(action)).sum()
        loss = loss - log_density * float(advantage)
    loss.backward()
    for got, want in zip(agent.gates.parameters(), gates.parameters(), strict=True):
        if want.grad is not None:
            torch.testing.assert_close(got.grad, want.grad, rtol=1e-5, atol=1e-6)


def test_the_moving_average_baseline_is_subtracted_block_by_block() -> None:
    momentum = 0.8
    agent = ReinforceAgent(SPACE, BLOCKS, gamma=1.0, lr=LR, baseline_momentum=momentum, hidden=8, seed=0)
    before = [p.detach().clone() for p in agent.gates.parameters()]
    _, stats = _play(agent, REWARDS[0])
    assert stats["advantage"] == 0.0  # the first episode's returns start the baseline
    assert all(torch.equal(a, b) for a, b in zip(before, agent.gates.parameters(), strict=True))
    baseline = _returns(REWARDS[0], 1.0)
    for episode in (1, 2):
        before = _before(agent)
        actions, stats = _play(agent, REWARDS[episode], episode)
        returns = _returns(REWARDS[episode], 1.0)
        assert stats["advantage"] == pytest.approx((returns - baseline).mean(), rel=1e-6)
        _assert_params(agent, _stepped(agent, actions, returns - baseline, episode, before))
        baseline = momentum * baseline + (1 - momentum) * returns
        torch.testing.assert_close(agent.baseline, torch.tensor(baseline, dtype=torch.float32))


def test_the_learned_value_baseline_is_subtracted_and_learns_the_advantages() -> None:
    agent = ReinforceAgent(SPACE, BLOCKS, gamma=1.0, lr=LR, baseline_momentum=None, hidden=8, seed=0,
                           value_baseline=True)
    assert agent.critics is not None
    before, critics = _before(agent), copy.deepcopy(agent.critics)
    with torch.no_grad():
        predicted = np.array([float(critics[b](torch.as_tensor(_obs(b, 0)))) for b in range(BLOCKS)])
    assert np.abs(predicted).max() > 0.01  # a critic that predicts something
    actions, stats = _play(agent, REWARDS[0])
    returns = _returns(REWARDS[0], 1.0)
    assert stats["advantage"] == pytest.approx((returns - predicted).mean(), rel=1e-5)
    _assert_params(agent, _stepped(agent, actions, returns - predicted, before=before))
    # the critics' step moves each prediction toward that block's advantage before the critic
    with torch.no_grad():
        after = np.array([float(agent.critics[b](torch.as_tensor(_obs(b, 0)))) for b in range(BLOCKS)])
    assert np.all(np.abs(after - returns) < np.abs(predicted - returns))


def test_normalised_advantages_are_divided_by_a_running_rms() -> None:
    agent = ReinforceAgent(SPACE, BLOCKS, gamma=1.0, lr=LR, baseline_momentum=None, hidden=8, seed=0,
                           normalize_returns=True)
    second = None
    for episode, rewards in enumerate(REWARDS):
        _, stats = _play(agent, rewards, episode)
        returns = _returns(rewards, 1.0)
        moment = float((returns ** 2).mean())
        second = moment if second is None else 0.99 * second + 0.01 * moment
        assert stats["advantage"] == pytest.approx((returns / np.sqrt(second)).mean(), rel=1e-5)
    # the scale of the rewards does not change the first update
    small = ReinforceAgent(SPACE, BLOCKS, gamma=1.0, lr=LR, baseline_momentum=None, hidden=8, seed=0,
                           normalize_returns=True)
    large = copy.deepcopy(small)
    _play(small, REWARDS[0])
    _play(large, [100.0 * r for r in REWARDS[0]])
    for a, b in zip(small.gates.parameters(), large.gates.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_actions_sample_each_blocks_gate_with_the_agents_generator() -> None:
    agent = ReinforceAgent(SPACE, BLOCKS, init_mean=-4.0, init_std=0.5, hidden=8, seed=3)
    generator = torch.Generator().manual_seed(3)
    for block in range(BLOCKS):
        noise = float(torch.randn((), generator=generator))
        assert float(agent.act(_obs(block, 0))[0]) == pytest.approx(-4.0 + 0.5 * noise, rel=1e-6)
        agent.observe(-1.0)
    stats = agent.end_episode()
    assert stats["gate_mean"] == pytest.approx(-4.0) and stats["gate_std"] == pytest.approx(0.5)
    # each block's own gate: train one gate, the others' means stay
    with torch.no_grad():
        agent.gates[1].head.linear.bias[0] += 2.0
        means = [float(agent.gates[b](torch.as_tensor(_obs(b, 0)))[0]) for b in range(BLOCKS)]
    assert means[1] != pytest.approx(means[0])
    acts = [agent.act(_obs(b, 0)) for b in range(BLOCKS)]
    assert abs(float(acts[1][0]) - means[1]) < 5 * 0.5 and agent._episodes[0].means == pytest.approx(means, rel=1e-6)


def test_the_first_step_entry_has_its_own_gaussian() -> None:
    agent = ReinforceAgent(SPACE, BLOCKS, init_mean=-4.0, init_std=0.5, hidden=8, seed=0, action_dim=2)
    action = agent.act(_obs(0, 0))
    assert action.shape == (2,)
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(2, generator=generator)
    assert action.tolist() == pytest.approx([-4.0 + 0.5 * float(noise[0]), -1.0 + 0.5 * float(noise[1])], rel=1e-6)
    with pytest.raises(ValueError, match="action_dim"):
        ReinforceAgent(SPACE, BLOCKS, action_dim=3)


@pytest.mark.parametrize("flags, critics, baseline", [([], False, True), (["--value-baseline"], True, True),
                                                      (["--no-baseline"], False, False)])
def test_the_cli_builds_the_agent_its_flags_ask_for(tmp_path, flags: list[str], critics: bool,
                                                    baseline: bool) -> None:
    from agents import reinforce
    from infocnf_env.checkpoint import load_checkpoint

    reinforce.main(["--env", "ODE-Mixed-v0", "--iterations", "1", "--out", str(tmp_path / "r"), "--no-progress",
                    "--no-tensorboard", *flags, "--env-kwargs", "families=('vdp',)", "segments=2",
                    "train_pool_size=1", "test_pool_size=1", "ood_pool_size=0", "reference_tol=1e-9",
                    f"cache={str(tmp_path)!r}"])
    state = load_checkpoint(tmp_path / "r" / "checkpoint.pt")["agent"]
    assert ("critics" in state) == critics
    assert bool(state["baseline_ready"].all()) == baseline  # the moving average is kept only with a baseline
