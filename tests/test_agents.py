"""Agents: REINFORCE gates, stable-baselines3 algorithms, and the agent CLIs end to end (with resume)."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from flowkit import DIGITS_ID, TINY, env_kwargs, read_jsonl
from gymnasium.wrappers import RescaleAction
from stable_baselines3.common.logger import Logger

import infocnf_env  # noqa: F401  (registers the ids)
from agents import fixed, registry, reinforce, sb3
from agents.envs import make_env
from agents.gates import DEFAULT_INIT_MEAN, DEFAULT_INIT_STD
from agents.loop import run_cli
from agents.reinforce import ReinforceAgent
from agents.run_log import METRIC_KEYS
from agents.runner import Run
from infocnf_env.checkpoint import CheckpointError, load_checkpoint

ENV_ID = DIGITS_ID
#: Keys of every metrics.jsonl line of a completed iteration (runner.METRIC_KEYS that always exist).
ITERATION_KEYS = {"iteration", "reward", "wall_time", "loss", "bits_per_dim", "xent", "error", "nfe_forward",
                  "nfe_backward", "tols", "nfe_blocks", "epoch", "lr", "skipped_update"}
EVAL_KEYS = {"bits_per_dim", "marginal_bits_per_dim", "error", "nfe", "num_samples"}
SUMMARY_KEYS = {"env", "agent", "seed", "iterations", "test", "train_nfe_forward_mean", "train_nfe_backward_mean",
                "train_nfe_mean", "train_loss_last", "mean_log10_tol_last", "solver_failures", "wall_s"}
DIGITS_TEST_SIZE = 300
#: [-1, 1] as float32, the action space dtype (float64 bounds make gymnasium warn about precision).
UNIT = (np.float32(-1.0), np.float32(1.0))



def cli_args(out: Path, *extra: str, iterations: int = 2, tensorboard: bool = False) -> list[str]:
    return ["--iterations", str(iterations), "--eval-batches", "1", "--no-progress", "--out", str(out),
            "--tensorboard" if tensorboard else "--no-tensorboard", *extra, *env_kwargs(TINY)]


# ---------------------------------------------------------------------- REINFORCE
def _reinforce_episode(env: gym.Env, agent: ReinforceAgent, seed: int | None = None) -> tuple[list[float], dict]:
    obs, _ = env.reset(seed=seed)
    rewards, done = [], False
    while not done:
        obs, reward, terminated, truncated, _ = env.step(agent.act(obs))
        agent.observe(reward)
        rewards.append(reward)
        done = terminated or truncated
    return rewards, agent.end_episode()


def _head_grads(agent: ReinforceAgent) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(gate.head.linear.weight.grad, gate.head.linear.bias.grad) for gate in agent.gates]


@pytest.mark.parametrize("obs_mode", ["vector", "features"])
def test_reinforce_gates_mean_and_spread_get_gradients(obs_mode):
    env = gym.make(ENV_ID, obs_mode=obs_mode, **TINY)
    n = env.unwrapped.num_blocks
    gamma = 0.5
    agent = ReinforceAgent(env.observation_space, n, baseline_momentum=None, gamma=gamma, seed=0)
    kind = reinforce.CNNGate if obs_mode == "features" else reinforce.MLPGate
    assert len(agent.gates) == n and all(isinstance(g, kind) for g in agent.gates)
    before = [p.detach().clone() for p in agent.gates.parameters()]
    rewards, stats = _reinforce_episode(env, agent, seed=0)
    assert len(rewards) == n
    for block, (weight_grad, bias_grad) in enumerate(_head_grads(agent)):
        # Row / entry 0 produces the mean of log10(tol), 1 its log standard deviation.
        for part, name in ((0, "mean"), (1, "spread")):
            assert weight_grad[part].abs().sum() > 0, f"gate {block}: no gradient for the {name} (weights)"
            assert bias_grad[part].abs() > 0, f"gate {block}: no gradient for the {name} (bias)"
    after = list(agent.gates.parameters())
    assert any(not torch.equal(b, a) for b, a in zip(before, after, strict=True)), "the gates were not updated"
    # Without a baseline the advantages are the returns-to-go G_i = sum_j gamma^(j-i) r_j (Eq. 7).
    returns = [sum(gamma ** (j - i) * rewards[j] for j in range(i, n)) for i in range(n)]
    assert stats["advantage"] == pytest.approx(float(np.mean(returns)), rel=1e-5)
    # The gates' heads are zero-initialised: the first episode samples from N(init_mean, init_std^2) in every
    # block. (That the mean then moves the right way: test_reinforce_moves_the_gates_toward_the_cheapest_tolerance.)
    assert stats["gate_mean"] == pytest.approx(DEFAULT_INIT_MEAN)
    assert stats["gate_std"] == pytest.approx(DEFAULT_INIT_STD)


def _greedy_episode(env: gym.Env, log_tols) -> tuple[int, list[float]]:
    """One episode on the seed-0 batch; ``log_tols(block, obs)`` gives each block's log10 tol.
    Returns the forward NFE and the log10 tolerances the env applied."""
    obs, _ = env.reset(seed=0)
    nfe, applied = 0, []
    for block in range(env.unwrapped.num_blocks):
        obs, _, _, _, info = env.step(np.array([log_tols(block, obs)], dtype=np.float32))
        nfe += info["nfe"]
        applied.append(math.log10(info["tol"]))
    return nfe, applied


def test_reinforce_moves_the_gates_toward_the_cheapest_tolerance():
    """A task with a known optimum: a frozen flow (only the gates learn) whose steps pay only NFE
    (loss_weight 0, alpha 3: reward_i = -nfe_i), so the cheapest tolerance, the upper bound 1e-2,
    is the optimum. The flow's weights are perturbed (std 0.2) so that, as in a flow that has
    learnt something, every block's NFE grows steadily as its tolerance tightens (at
    initialisation the dynamics are near zero: NFE is flat above 1e-3.75, nothing to learn
    around the gates' initial 1e-3). gamma = 0 gives each gate its own block's cost as the
    return (less noise than the returns-to-go of the other blocks).

    30 episodes; a learner with lr 0 or a flipped gradient sign fails the margins.
    """
    env = gym.make(ENV_ID, train_flow=False, alpha=3.0, loss_weight=0.0, **TINY)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in env.unwrapped.model.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=generator))
    low, high = float(env.action_space.low[0]), float(env.action_space.high[0])
    agent = ReinforceAgent(env.observation_space, env.unwrapped.num_blocks, gamma=0.0, lr=0.05, hidden=8, seed=0)

    def gate_means(block: int, obs) -> float:
        with torch.no_grad():
            return float(agent.gates[block](torch.as_tensor(obs, dtype=torch.float32))[0])

    best_nfe, _ = _greedy_episode(env, lambda block, obs: high)  # the optimum: every block at the upper bound
    start_nfe, start = _greedy_episode(env, gate_means)
    assert start == pytest.approx([DEFAULT_INIT_MEAN] * env.unwrapped.num_blocks)
    assert start_nfe >= best_nfe + 12, "the task must leave room to improve"
    _reinforce_episode(env, agent, seed=0)
    for _ in range(29):
        _reinforce_episode(env, agent)
    end_nfe, end = _greedy_episode(env, gate_means)  # the gates' means, clipped to the bounds by the env
    assert all(low <= t <= high for t in end)
    assert np.mean(end) >= DEFAULT_INIT_MEAN + 0.5, f"the gates did not move toward the upper bound: {end}"
    assert end_nfe - best_nfe <= (start_nfe - best_nfe) / 2, f"NFE {start_nfe} -> {end_nfe}, optimum {best_nfe}"


def test_reinforce_agent_leaves_the_global_rng_alone():
    """Gate initialisation and sampling draw from the agent's own seeded sources only."""
    env = gym.make(ENV_ID, **TINY)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    agent = ReinforceAgent(env.observation_space, env.unwrapped.num_blocks, seed=7)
    obs, _ = env.reset(seed=0)
    agent.act(obs)
    assert torch.equal(torch.get_rng_state(), before)
    same = ReinforceAgent(env.observation_space, env.unwrapped.num_blocks, seed=7)
    other = ReinforceAgent(env.observation_space, env.unwrapped.num_blocks, seed=8)
    first = [p.detach() for p in agent.gates.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(first, same.gates.parameters(), strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(first, other.gates.parameters(), strict=True))


def test_reinforce_with_baseline_learns_from_the_second_episode():
    env = gym.make(ENV_ID, **TINY)
    agent = ReinforceAgent(env.observation_space, env.unwrapped.num_blocks, baseline_momentum=0.9, seed=0)
    _reinforce_episode(env, agent, seed=0)
    # The first episode's returns initialise the baseline, so their advantages are zero.
    assert all(float(w.abs().sum()) == 0.0 and float(b.abs().sum()) == 0.0 for w, b in _head_grads(agent))
    _reinforce_episode(env, agent)
    for weight_grad, bias_grad in _head_grads(agent):
        assert weight_grad[0].abs().sum() > 0 and weight_grad[1].abs().sum() > 0
        assert bias_grad[0].abs() > 0 and bias_grad[1].abs() > 0


def test_reinforce_state_dict_round_trip():
    env = gym.make(ENV_ID, **TINY)
    n = env.unwrapped.num_blocks
    agent = ReinforceAgent(env.observation_space, n, seed=0)
    _reinforce_episode(env, agent, seed=0)
    copy = ReinforceAgent(env.observation_space, n, seed=1)
    copy.load_state_dict(agent.state_dict())
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(agent.act(obs), copy.act(obs))  # same gates, same sampling generator


# ---------------------------------------------------------------------- stable-baselines3
class _RecordTolerances(gym.Wrapper):
    """Keeps the tolerance the environment received at every step."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.tols: list[float] = []

    def step(self, action):
        out = super().step(action)
        self.tols.append(out[-1]["tol"])
        return out


SB3_SETTINGS = {
    "ppo": dict(n_steps=32, batch_size=32, n_epochs=2),
    "a2c": dict(n_steps=3),
    "sac": dict(learning_starts=10, batch_size=16),
    "td3": dict(learning_starts=10, batch_size=16),
}


@pytest.mark.parametrize("algo", sorted(SB3_SETTINGS))
def test_sb3_algorithms_drive_the_env_within_bounds(algo):
    """Every algorithm drives the real env through RescaleAction: one env step per SB3 step, one
    flow iteration per episode, tolerances within the bounds. (Whether they learn:
    test_sb3_moves_toward_a_known_optimum.)"""
    # The fixed-step Euler solver (1 NFE per block) keeps the flow steps within seconds.
    env = _RecordTolerances(gym.make(ENV_ID, solver="euler", **TINY))
    low, high = env.unwrapped.action_space.low[0], env.unwrapped.action_space.high[0]
    model = sb3.algo_class(algo)("MlpPolicy", RescaleAction(env, *UNIT), seed=0, device="cpu", verbose=0,
                                 **SB3_SETTINGS[algo])
    model.set_logger(Logger(folder=None, output_formats=[]))  # no logger folder in the temp dir
    total = 150
    model.learn(total_timesteps=total)
    log_tols = np.log10(env.tols)
    assert len(log_tols) == model.num_timesteps >= total
    # every finished episode was one flow training iteration
    assert env.unwrapped.iteration == len(log_tols) // env.unwrapped.num_blocks
    assert (log_tols >= low - 1e-9).all() and (log_tols <= high + 1e-9).all()
    assert np.unique(log_tols).size > 1  # the policy explores
    action, _ = model.predict(env.reset(seed=0)[0], deterministic=True)
    assert action.shape == (1,) and -1.0 <= float(action[0]) <= 1.0


class _OneStepTolerance(gym.Env):
    """One block, one step, a known optimum: the reward is -(log10 tol - target)^2.

    Same action space as the flow envs (log10 tol within DEFAULT_TOL_BOUNDS) and an observation
    shaped like their vector one (block one-hot + 4 batch statistics, here constant).
    """

    num_blocks = 1

    def __init__(self, target: float):
        low, high = infocnf_env.DEFAULT_TOL_BOUNDS
        self.target = target
        self.action_space = gym.spaces.Box(np.float32(low), np.float32(high), (1,), np.float32)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (5,), np.float32)
        self.obs = np.array([1.0, 0.5, -0.5, 0.25, 1.0], dtype=np.float32)
        self.received: list[float] = []

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.obs.copy(), {}

    def step(self, action):
        log_tol = float(np.clip(action[0], self.action_space.low[0], self.action_space.high[0]))
        self.received.append(log_tol)
        return self.obs.copy(), -((log_tol - self.target) ** 2), True, False, {}


#: SB3 steps (= episodes) per algorithm.
KNOWN_OPTIMUM_STEPS = {"ppo": 400, "a2c": 400, "sac": 500, "td3": 300}


@pytest.mark.parametrize("algo", sorted(KNOWN_OPTIMUM_STEPS))
def test_sb3_moves_toward_a_known_optimum(algo):
    """Each algorithm, set up as agents.sb3.main sets it up (RescaleAction to [-1, 1], the
    sized defaults, the on-policy spread of 0.5 decades), finds the best tolerance of a
    one-step task: from the policy's start at 1e-5 (action 0, the middle of the bounds) to
    within 0.3 decades of 1e-4.

    The optimum is inside the bounds, so a policy that only runs to a bound fails. (1e-3 would
    not do: TD3 overshoots it to the bound, where its tanh saturates, within this budget.) The
    margins hold for seeds 0..4 of every algorithm (end within 0.15 decades); lr 0 or a flipped
    reward sign fails them.
    """
    target = -4.0
    env = _OneStepTolerance(target)
    bounds = (float(env.action_space.low[0]), float(env.action_space.high[0]))
    wrapped = RescaleAction(env, *UNIT)
    kwargs = sb3.default_algo_kwargs(algo, env.unwrapped.num_blocks, sb3.on_policy_log_std(0.5, bounds))
    model = sb3.algo_class(algo)("MlpPolicy", wrapped, seed=0, verbose=0, device="cpu", **kwargs)
    model.set_logger(Logger(folder=None, output_formats=[]))
    if algo in ("ppo", "a2c"):
        assert model.policy.log_std.exp().item() * (bounds[1] - bounds[0]) / 2 == pytest.approx(0.5)

    def greedy_log_tol() -> float:
        obs, _ = wrapped.reset()
        wrapped.step(model.predict(obs, deterministic=True)[0])
        return env.received.pop()

    start = greedy_log_tol()
    assert abs(start - target) >= 0.7
    model.learn(total_timesteps=KNOWN_OPTIMUM_STEPS[algo])
    assert len(env.received) == model.num_timesteps
    assert all(bounds[0] <= t <= bounds[1] for t in env.received)
    end = greedy_log_tol()
    assert abs(end - target) <= 0.3, f"{algo}: log10 tol {start:.2f} -> {end:.2f}, optimum {target}"


def test_sb3_multi_input_policy_reads_the_feature_maps():
    env = RescaleAction(gym.make(ENV_ID, solver="euler", obs_mode="features", feature_samples=4, **TINY), *UNIT)
    model = sb3.algo_class("ppo")("MultiInputPolicy", env, n_steps=16, batch_size=16, n_epochs=1, seed=0,
                                  device="cpu")
    model.set_logger(Logger(folder=None, output_formats=[]))
    assert set(model.policy.features_extractor.extractors) == {"block", "features"}
    before = [p.detach().clone() for p in model.policy.parameters()]
    model.learn(total_timesteps=32)
    assert model.num_timesteps == 32 and env.unwrapped.iteration == 32 // env.unwrapped.num_blocks
    assert any(not torch.equal(b, a) for b, a in zip(before, model.policy.parameters(), strict=True)), \
        "PPO's two updates did not change the policy"
    obs, _ = env.reset(seed=0)
    shifted = {**obs, "features": obs["features"] + 1.0}
    actions = [float(model.predict(o, deterministic=True)[0][0]) for o in (obs, shifted)]
    assert actions[0] != actions[1], "the policy ignores the feature maps"


def test_sb3_unknown_algorithm():
    with pytest.raises(ValueError, match="ppo"):
        sb3.algo_class("dqn")


# ---------------------------------------------------------------------- CLIs end to end
def _check_run_dir(run_dir: Path, agent: str, extra_metric_keys: set[str] = frozenset()) -> list[dict]:
    config = json.loads((run_dir / "config.json").read_text())
    assert config["env"] == ENV_ID and config["agent"] == agent
    assert {k: config["env_kwargs"][k] for k in TINY} == TINY
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    assert [m["iteration"] for m in metrics] == [1, 2]
    for m in metrics:
        missing = (ITERATION_KEYS | set(extra_metric_keys)) - set(m)
        assert not missing, f"metrics.jsonl line lacks {sorted(missing)}"
        assert set(m) - ITERATION_KEYS - set(extra_metric_keys) <= set(METRIC_KEYS)
        assert len(m["tols"]) == len(m["nfe_blocks"]) == 3 and m["nfe_forward"] == sum(m["nfe_blocks"])
        # alpha = 1, N = 3: the logged return is the sum of the step rewards of Eq. 6
        # (rel 1e-6: SB3's vectorised env hands the callback float32 rewards)
        expected = -m["nfe_forward"] / 3 - m["loss"] - m["nfe_backward"] / 3
        assert m["reward"] == pytest.approx(expected, rel=1e-6)
    evals = read_jsonl(run_dir / "eval.jsonl")
    assert [e["iteration"] for e in evals] == [1, 2]  # periodic (eval_every=1), then the final one
    for e in evals:
        assert EVAL_KEYS <= set(e)
    assert evals[0]["num_samples"] == TINY["eval_batch_size"]  # --eval-batches 1
    assert evals[1]["num_samples"] == DIGITS_TEST_SIZE  # the final evaluation is full
    checkpoint = load_checkpoint(run_dir / "checkpoint.pt")
    assert {"env", "agent", "run"} <= set(checkpoint)
    assert checkpoint["run"]["iteration"] == 2 and checkpoint["env"]["counters"]["iteration"] == 2
    summary = json.loads((run_dir / "summary.json").read_text())
    assert SUMMARY_KEYS <= set(summary)
    assert summary["iterations"] == 2 and summary["agent"] == agent
    assert summary["test"] == {k: v for k, v in evals[1].items() if k != "iteration"}
    assert summary["train_loss_last"] == metrics[-1]["loss"]
    forward, backward = (np.mean([m[k] for m in metrics]) for k in ("nfe_forward", "nfe_backward"))
    assert backward > 0  # a training pass: the NFE of training counts both solves
    assert (summary["train_nfe_forward_mean"], summary["train_nfe_backward_mean"]) == pytest.approx((forward, backward))
    assert summary["train_nfe_mean"] == pytest.approx(forward + backward)
    events = list(run_dir.glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    return metrics


def _registered_agent(run_dir: Path) -> registry.AgentEntry:
    """The registry's entry of the agent a run records (agents.registry)."""
    return registry.of_run(json.loads((run_dir / "config.json").read_text())["agent"])


def test_fixed_cli_end_to_end(tmp_path):
    run_dir = tmp_path / "fixed"
    summary = fixed.main(cli_args(run_dir, "--eval-every", "1", "--tol", "1e-4", tensorboard=True))
    assert summary["iterations"] == 2
    metrics = _check_run_dir(run_dir, "fixed")
    assert _registered_agent(run_dir) is registry.get("fixed")
    assert all(m["tols"] == [pytest.approx(1e-4, rel=1e-6)] * 3 for m in metrics)


def test_reinforce_cli_end_to_end(tmp_path):
    run_dir = tmp_path / "reinforce"
    reinforce.main(cli_args(run_dir, "--eval-every", "1", tensorboard=True))
    _check_run_dir(run_dir, "reinforce", {"gate_mean", "gate_std", "advantage"})
    assert _registered_agent(run_dir) is registry.get("reinforce")
    config = json.loads((run_dir / "config.json").read_text())
    assert config["env_kwargs"]["obs_mode"] == "vector"  # --gate auto on digits: MLP gates
    assert {"gates", "optimizer", "generator"} <= set(load_checkpoint(run_dir / "checkpoint.pt")["agent"])


def test_sb3_ppo_cli_end_to_end(tmp_path, monkeypatch):
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    run_dir = tmp_path / "ppo"
    sb3.main(cli_args(run_dir, "--algo", "ppo", "--eval-every", "1", tensorboard=True))
    _check_run_dir(run_dir, "sb3-ppo")
    assert _registered_agent(run_dir) is registry.get("ppo")
    assert (run_dir / "sb3_model.zip").stat().st_size > 0
    assert not list(temp.iterdir()), "SB3 must not leave logger folders in the temp directory"


def test_sb3_on_policy_exploration_is_measured_in_decades(tmp_path):
    # one unit of the rescaled action is half the bounds' width: 3 decades over (-8, -2)
    assert sb3.on_policy_log_std(3.0, (-8.0, -2.0)) == pytest.approx(0.0)
    assert math.exp(sb3.on_policy_log_std(0.5, (-8.0, -2.0))) * 3.0 == pytest.approx(0.5)
    with pytest.raises(ValueError, match="init_std must be > 0"):
        sb3.on_policy_log_std(0.0, (-8.0, -2.0))
    run_dir = tmp_path / "a2c"
    sb3.main(cli_args(run_dir, "--algo", "a2c", "--init-std", "0.25"))
    model = sb3.algo_class("a2c").load(run_dir / "sb3_model.zip", device="cpu")
    spread = model.policy.log_std.exp().item() * 3.0  # back to decades of tolerance
    assert spread == pytest.approx(0.25, rel=0.05)  # an update, if one happened, may move it slightly
    with pytest.raises(ValueError, match="ppo and a2c only"):
        sb3.main(cli_args(tmp_path / "sac", "--algo", "sac", "--init-std", "0.5"))
    assert not (tmp_path / "sac").exists(), "bad input must fail before a run directory is made"


def test_sb3_algo_kwargs_reach_the_algorithm(tmp_path):
    run_dir = tmp_path / "a2c"
    sb3.main(cli_args(run_dir, "--algo", "a2c", "--algo-kwargs", "n_steps=6", "normalize_advantage=True",
                      "policy_kwargs={'net_arch': [8]}"))
    model = sb3.algo_class("a2c").load(run_dir / "sb3_model.zip", device="cpu")
    assert model.n_steps == 6 and model.normalize_advantage
    assert model.policy_kwargs["net_arch"] == [8]
    assert model.policy_kwargs["log_std_init"] == pytest.approx(sb3.on_policy_log_std(0.5, (-8.0, -2.0)))
    for bad, message in ((["n_step=6"], "A2C has no argument n_step"), (["n_steps"], "not of the form key=value"),
                         (["policy_kwargs=3"], "policy_kwargs must be a dict")):
        with pytest.raises(ValueError, match=message):
            sb3.main(cli_args(tmp_path / "bad", "--algo", "a2c", "--algo-kwargs", *bad))
        assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("algo", ["sac", "td3"])
def test_an_off_policy_runs_checkpoint_holds_every_transition_of_its_replay_buffer(tmp_path, algo):
    """A resumed SAC or TD3 run learns from the transitions it had gathered: its checkpoint
    holds the replay buffer, one transition per block of every episode so far but the step that
    wrote it (SB3 stores a step's transition after the callback that logs its episode)."""
    import io

    run_dir = tmp_path / algo
    sb3.main(cli_args(run_dir, "--algo", algo, "--algo-kwargs", "buffer_size=100", iterations=3))
    state = load_checkpoint(run_dir / "checkpoint.pt")["agent"]
    model = sb3.algo_class(algo).load(run_dir / "sb3_model.zip", device="cpu")
    model.load_replay_buffer(io.BytesIO(state["replay_buffer"].numpy().tobytes()))
    assert model.replay_buffer.size() == 3 * gym.make(DIGITS_ID, **TINY).unwrapped.num_blocks - 1


def test_a_key_value_flag_keeps_every_equals_sign_after_the_first_in_its_value():
    """``--env-kwargs`` / ``--algo-kwargs`` take ``key=value``: the key ends at the first ``=``,
    and the value (a path of a run directory named by its settings, a string) may hold more."""
    from agents.cli import parse_env_kwargs, parse_kwargs

    assert parse_env_kwargs(["checkpoint='runs/lr=1e-3/checkpoint.pt'", "hidden=4"]) == {
        "checkpoint": "runs/lr=1e-3/checkpoint.pt", "hidden": 4}
    assert parse_kwargs(["note=a=b", "empty=", "eq=="]) == {"note": "a=b", "empty": "", "eq": "="}


def test_fixed_schedule_sets_per_block_tolerances(tmp_path):
    schedule = [1e-3, 1e-5, 1e-4]
    fixed.main(cli_args(tmp_path / "run", "--eval-every", "0", "--schedule", *map(str, schedule)))
    for m in read_jsonl(tmp_path / "run" / "metrics.jsonl"):
        assert m["tols"] == [pytest.approx(t, rel=1e-6) for t in schedule]
    with pytest.raises(ValueError, match="one tolerance per block"):
        fixed.main(cli_args(tmp_path / "bad", "--schedule", "1e-3", "1e-4"))


# ---------------------------------------------------------------------- resume
RESUMABLE = {"fixed": (fixed.main, ["--tol", "1e-4"]), "reinforce": (reinforce.main, ["--gate-lr", "0.05"]),
             "reinforce-gaussian": (reinforce.main, ["--gate-lr", "0.05", "--gate-dist", "gaussian"])}


def _without_wall_time(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "wall_time"} for r in records]


@pytest.mark.parametrize("agent", sorted(RESUMABLE))
def test_resume_continues_exactly(tmp_path, agent):
    main, extra = RESUMABLE[agent]
    common = ["--checkpoint-every", "2", "--eval-every", "0", *extra]
    main(cli_args(tmp_path / "straight", *common, iterations=4))
    main(cli_args(tmp_path / "split", *common, iterations=2))
    summary = main(["--resume", str(tmp_path / "split"), "--iterations", "4", "--no-progress", "--no-tensorboard",
                    *common])
    assert summary["iterations"] == 4
    straight = read_jsonl(tmp_path / "straight" / "metrics.jsonl")
    split = read_jsonl(tmp_path / "split" / "metrics.jsonl")
    assert [r["iteration"] for r in split] == [1, 2, 3, 4]
    assert _without_wall_time(split) == _without_wall_time(straight)
    assert load_checkpoint(tmp_path / "split" / "checkpoint.pt")["run"]["iteration"] == 4


def test_resume_after_a_crash_rewrites_lost_iterations(tmp_path, monkeypatch):
    common = ["--checkpoint-every", "2", "--eval-every", "0", "--tol", "1e-4"]
    fixed.main(cli_args(tmp_path / "straight", *common, iterations=4))
    original = Run.after_episode

    def crash_at_3(self, *args, **kwargs):
        record = original(self, *args, **kwargs)
        if self.iteration == 3:
            raise KeyboardInterrupt  # after iteration 3 was logged, before its checkpoint
        return record

    monkeypatch.setattr(Run, "after_episode", crash_at_3)
    with pytest.raises(KeyboardInterrupt):
        fixed.main(cli_args(tmp_path / "crashed", *common, iterations=4))
    monkeypatch.setattr(Run, "after_episode", original)
    assert len(read_jsonl(tmp_path / "crashed" / "metrics.jsonl")) == 3
    fixed.main(["--resume", str(tmp_path / "crashed"), "--iterations", "4", "--no-progress", "--no-tensorboard",
                *common])
    crashed = read_jsonl(tmp_path / "crashed" / "metrics.jsonl")
    assert [r["iteration"] for r in crashed] == [1, 2, 3, 4]
    assert _without_wall_time(crashed) == _without_wall_time(read_jsonl(tmp_path / "straight" / "metrics.jsonl"))


def test_resume_with_another_env_or_agent_raises(tmp_path):
    run_dir = tmp_path / "run"
    fixed.main(cli_args(run_dir, "--eval-every", "0", iterations=1))
    with pytest.raises(CheckpointError, match="CCNF-Digits-v0"):
        fixed.main(["--resume", str(run_dir), "--env", "CCNF-Digits-v0", "--iterations", "2", "--no-progress"])
    with pytest.raises(CheckpointError, match="reinforce"):
        reinforce.main(["--resume", str(run_dir), "--iterations", "2", "--no-progress"])
    with pytest.raises(CheckpointError, match="not a run directory"):
        fixed.main(["--resume", str(tmp_path / "nowhere"), "--iterations", "2", "--no-progress"])
    assert len(read_jsonl(run_dir / "metrics.jsonl")) == 1  # the failed resumes wrote nothing


# ---------------------------------------------------------------------- input errors
def test_make_env_unknown_id_lists_every_registered_id():
    import re

    import infocnf_env

    with pytest.raises(ValueError, match="unknown env id 'InfoCNF-Nope-v0'; registered ids: ") as err:
        make_env("InfoCNF-Nope-v0", {})
    listed = str(err.value).split("registered ids: ", 1)[1].split(", ")
    expanded = set()
    for item in listed:  # "{A,B}-x" stands for "A-x" and "B-x"
        match = re.search(r"\{([^}]*)\}", item)
        choices = match.group(1).split(",") if match else [""]
        expanded |= {item[:match.start()] + c + item[match.end():] if match else item for c in choices}
    assert expanded == {*infocnf_env.ENV_IDS, *infocnf_env.FROZEN_IDS, *infocnf_env.ODE_IDS}
    assert len(listed) < len(expanded)  # grouped, so the line stays short


def test_make_env_unknown_kwarg():
    with pytest.raises(ValueError, match="no_such_option"):
        make_env(ENV_ID, {**TINY, "no_such_option": 1})
    with pytest.raises(ValueError, match="no_such_option"):
        make_env("InfoCNF-Toy1D-v0", {"no_such_option": 1})
    env = make_env(ENV_ID, TINY)
    assert env.unwrapped.num_blocks == 3


def test_cli_bad_input_writes_nothing_and_exits_with_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.raises(ValueError, match="unknown env id"):
        fixed.main(["--env", "Nope-v0", "--out", str(out), "--no-progress"])
    assert not out.exists()
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: fixed.main(["--out", str(out), "--no-progress", "--env-kwargs", "hiden=4"]))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "hiden" in err
    assert not out.exists()


def test_negative_switches_turn_their_option_off(tmp_path):
    from agents.cli import parse_args

    assert parse_args(reinforce.Args, ["--no-baseline"]).no_baseline is True
    assert parse_args(reinforce.Args, []).no_baseline is False
    assert parse_args(reinforce.Args, ["--no-progress"]).progress is False
    # end to end: the run's agent has no baseline, so the advantages are the raw returns
    reinforce.main(cli_args(tmp_path / "run", "--no-baseline", "--eval-every", "0"))
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["args"]["no_baseline"] is True
    assert not load_checkpoint(tmp_path / "run" / "checkpoint.pt")["agent"]["baseline_ready"].any()


def test_env_kwargs_are_parsed_as_literals():
    from agents.cli import parse_env_kwargs

    parsed = parse_env_kwargs(["lr=1e-3", "obs_mode=features", "tol_bounds=(-6, -2)", "train_flow=False"])
    assert parsed == {"lr": 1e-3, "obs_mode": "features", "tol_bounds": (-6, -2), "train_flow": False}
    with pytest.raises(ValueError, match="key=value"):
        parse_env_kwargs(["lr"])
    assert math.isclose(parsed["lr"], 0.001)


def test_an_env_without_the_run_interface_is_refused_before_anything_is_written(tmp_path):
    """A registered env that is not one of this project's (no evaluate, state_dict, ...)."""
    from gymnasium.envs.classic_control import CartPoleEnv

    if "ForeignCartPole-v0" not in gym.registry:
        gym.register("ForeignCartPole-v0", entry_point=lambda seed=0: CartPoleEnv())
    with pytest.raises(ValueError, match="^'ForeignCartPole-v0' is not an InfoCNF id"):
        fixed.main(["--env", "ForeignCartPole-v0", "--iterations", "1", "--out", str(tmp_path / "run")])
    assert not (tmp_path / "run").exists()
