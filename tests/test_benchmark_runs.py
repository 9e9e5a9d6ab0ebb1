"""Runs on the benchmark tasks: the summary scores the run's own policy on the test pool, and
``agents.evaluate`` scores any finished run next to the best constant and the oracle."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from flowkit import AnalyticTask, read_jsonl

from agents import evaluate, fixed, reinforce
from infocnf_env import ODETaskEnv

ODE_KWARGS = ["families=('vdp', 'lorenz')", "segments=2", "train_pool_size=2", "test_pool_size=2",
              "ood_pool_size=0", "reference_tol=1e-9"]
FROZEN_KWARGS = ["hidden=4", "train_iterations=3", "train_pool_size=2", "test_pool_size=2", "batch_size=8"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("benchmark-cache"))


def _ode_env(cache: str) -> ODETaskEnv:
    return ODETaskEnv(families=("vdp", "lorenz"), segments=2, train_pool_size=2, test_pool_size=2,
                      ood_pool_size=0, reference_tol=1e-9, cache=cache)


def _fixed(tmp_path, cache: str, env: str, kwargs: list[str], tol: float, name: str) -> dict:
    return fixed.main(["--env", env, "--tol", str(tol), "--iterations", "2", "--out", str(tmp_path / name),
                       "--no-progress", "--no-tensorboard", "--env-kwargs", *kwargs, f"cache={cache!r}"])


def test_the_summary_scores_the_runs_own_policy_on_the_test_pool(tmp_path, cache) -> None:
    loose = _fixed(tmp_path, cache, "ODE-Mixed-v0", ODE_KWARGS, 1e-3, "loose")
    tight = _fixed(tmp_path, cache, "ODE-Mixed-v0", ODE_KWARGS, 1e-8, "tight")
    env = ODETaskEnv(families=("vdp", "lorenz"), segments=2, train_pool_size=2, test_pool_size=2,
                     ood_pool_size=0, reference_tol=1e-9, cache=cache)
    for summary, tol in ((loose, 1e-3), (tight, 1e-8)):
        expected = env.score(env.constant_action(tol), "test")
        assert summary["test"]["reward"] == pytest.approx(expected["reward"])
        assert summary["test"]["nfe"] == expected["nfe"]
    assert tight["test"]["nfe"] > loose["test"]["nfe"]  # not one fixed evaluation for every run


def test_evaluate_scores_an_ode_run_against_its_baselines(tmp_path, cache, capsys) -> None:
    _fixed(tmp_path, cache, "ODE-Mixed-v0", ODE_KWARGS, 1e-5, "run")
    capsys.readouterr()
    result = evaluate.main([str(tmp_path / "run"), "--pool", "test", "--grid-step", "2"])
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(result))  # prints what it returns
    assert result["pool"] == "test" and result["agent"] == "fixed"
    assert result["oracle"]["reward"] >= result["best_constant"]["reward"]
    gap = result["oracle"]["reward"] - result["best_constant"]["reward"]
    if gap > 0:
        assert result["gap_closed"] == pytest.approx((result["run"]["reward"] - result["best_constant"]["reward"])
                                                     / gap)
    train = evaluate.main([str(tmp_path / "run"), "--pool", "train", "--grid-step", "2"])
    assert train["run"]["episodes"] == 2
    for flag in (["--split", "train"], ["--batch-size", "50"], ["--tol", "1e-3"]):  # a flow run's flags
        with pytest.raises(ValueError, match=f"^{flag[0]} applies to runs of a flow environment"):
            evaluate.main([str(tmp_path / "run"), *flag])


def test_evaluate_scores_a_frozen_flow_run(tmp_path, cache) -> None:
    reinforce.main(["--env", "CNF-Frozen-8Gaussians-v0", "--iterations", "2", "--out", str(tmp_path / "r"),
                    "--no-progress", "--no-tensorboard", "--env-kwargs", *FROZEN_KWARGS, f"cache={cache!r}"])
    result = evaluate.main([str(tmp_path / "r"), "--grid-step", "2"])
    assert result["env"] == "CNF-Frozen-8Gaussians-v0" and result["run"]["episodes"] == 2
    assert result["oracle"]["reward"] >= result["best_constant"]["reward"]


def test_sb3_trains_on_a_multi_step_task_with_normalised_rewards(tmp_path, cache) -> None:
    """Rollouts of 4 steps end inside and between episodes: SB3's Monitor and logging see the
    benchmark's step infos (which must not use Monitor's ``episode`` key) on every step."""
    from agents import sb3

    summary = sb3.main(["--algo", "ppo", "--env", "ODE-Mixed-v0", "--iterations", "3", "--out", str(tmp_path / "p"),
                        "--no-progress", "--no-tensorboard", "--normalize-reward", "--algo-kwargs", "n_steps=4",
                        "batch_size=4", "--env-kwargs", *ODE_KWARGS, f"cache={cache!r}"])
    assert summary["iterations"] == 3 and summary["test"]["episodes"] == 2
    rewards = [json.loads(line)["reward"] for line in (tmp_path / "p" / "metrics.jsonl").read_text().splitlines()]
    assert all(r < -10 for r in rewards)  # the env's own rewards (NFE in the tens), not normalised ones
    assert len(rewards) == 3  # one line per episode, no more than --iterations


# ---------------------------------------------------------------------------- the policies runs are scored with
def test_evaluate_chooses_the_best_constant_on_the_training_pool(tmp_path, cache) -> None:
    """On a task whose two pools favour different constants, the best constant is the training
    pool's, scored on the pool asked for; the oracle and gap closed follow their definitions."""
    _fixed(tmp_path, cache, "ODE-Mixed-v0", ODE_KWARGS, 1e-4, "run")
    env = AnalyticTask(train=(0.1, 1.0, 0.1, 1.0), test=(100.0, 30.0, 100.0, 1.0, 0.1), cache=str(tmp_path / "c"))
    grid = [-8.0, -7.0, -6.0, -5.0, -4.0, -3.0, -2.0, -1.0]

    def mean(split: str, t: float, key: int = 0) -> float:
        return float(np.mean([env.by_hand(d, [t, t])[key] for d in env.pool(split)]))

    train_best = max(grid, key=lambda t: mean("train", t))
    assert train_best != max(grid, key=lambda t: mean("test", t))
    for pool in ("test", "train"):
        result = evaluate.score_benchmark_run(tmp_path / "run", pool, env=env, grid_step=1.0)
        assert result["best_constant"]["log10_tol"] == train_best
        assert result["best_constant"]["reward"] == pytest.approx(mean(pool, train_best))
        assert result["best_constant"]["nfe"] == pytest.approx(mean(pool, train_best, 1))
        oracle = np.mean([max(env.by_hand(d, [t, t])[0] for t in grid) for d in env.pool(pool)])
        assert result["oracle"]["reward"] == pytest.approx(oracle)
        assert result["run"]["reward"] == pytest.approx(mean(pool, -4.0))  # the run's own 1e-4
        assert result["gap_closed"] == pytest.approx((mean(pool, -4.0) - mean(pool, train_best))
                                                     / (oracle - mean(pool, train_best)))


def test_a_fixed_schedule_run_is_scored_with_each_blocks_tolerance(tmp_path, cache) -> None:
    summary = fixed.main(["--env", "ODE-Mixed-v0", "--schedule", "1e-3", "1e-6", "--iterations", "1", "--out",
                          str(tmp_path / "s"), "--no-progress", "--no-tensorboard", "--env-kwargs", *ODE_KWARGS,
                          f"cache={cache!r}"])
    env = _ode_env(cache)
    policy = evaluate.load_action_policy(tmp_path / "s", env)
    obs, _ = env.reset(options={"episode": 0})
    assert [float(policy(obs, b)[0]) for b in (0, 1)] == pytest.approx([-3.0, -6.0])
    expected = env.score([np.array([-3.0]), np.array([-6.0])], "test")
    assert summary["test"]["reward"] == pytest.approx(expected["reward"]) and summary["test"]["nfe"] == expected["nfe"]


def test_an_sb3_policy_is_played_in_the_envs_units(tmp_path, cache) -> None:
    from stable_baselines3 import PPO

    from agents import sb3

    summary = sb3.main(["--algo", "ppo", "--env", "ODE-Mixed-v0", "--iterations", "2", "--out", str(tmp_path / "p"),
                        "--no-progress", "--no-tensorboard", "--algo-kwargs", "n_steps=4", "batch_size=4",
                        "--env-kwargs", *ODE_KWARGS, f"cache={cache!r}"])
    env = _ode_env(cache)
    model = PPO.load(tmp_path / "p" / sb3.EXPORT, device="cpu")
    policy = evaluate.load_action_policy(tmp_path / "p", env)
    low, high = env.spaces.tol_bounds
    by_hand = []
    for e in range(2):
        obs, _ = env.reset(options={"episode": e, "split": "test"})
        unit, _ = model.predict(obs, deterministic=True)
        action = low + (float(np.clip(unit[0], -1.0, 1.0)) + 1.0) * (high - low) / 2.0
        assert float(policy(obs, 0)[0]) == pytest.approx(action, abs=1e-6)
        by_hand.append(action)
    assert evaluate.load_policy(tmp_path / "p", env)(obs, 0) == (pytest.approx(by_hand[-1], abs=1e-6), 0.0)

    def unscaled(obs: np.ndarray, step: int) -> np.ndarray:
        unit, _ = model.predict(obs, deterministic=True)
        return low + (np.clip(unit, -1.0, 1.0) + 1.0) * (high - low) / 2.0

    assert summary["test"]["reward"] == pytest.approx(env.score(unscaled, "test")["reward"])


def test_a_reinforce_policy_is_its_gates_means_from_the_checkpoint(tmp_path, cache) -> None:
    from agents.reinforce import ReinforceAgent
    from infocnf_env.checkpoint import load_checkpoint

    summary = reinforce.main(["--env", "ODE-Mixed-v0", "--iterations", "3", "--gate-lr", "0.5", "--init-mean", "-5.5",
                              "--out", str(tmp_path / "r"), "--no-progress", "--no-tensorboard", "--env-kwargs",
                              *ODE_KWARGS, f"cache={cache!r}"])
    env = _ode_env(cache)
    # the gates' initial mean is an offset the checkpoint does not hold: it comes from the run's flags
    low, high = float(env.action_space.low[0]), float(env.action_space.high[0])
    agent = ReinforceAgent(env.observation_space, env.num_blocks, seed=123, init_mean=-5.5, gate_dist="squashed",
                           action_bounds=([low], [high]))
    agent.load_state_dict(load_checkpoint(tmp_path / "r" / "checkpoint.pt")["agent"])
    policy = evaluate.load_action_policy(tmp_path / "r", env)

    def median(o: np.ndarray, b: int) -> float:  # the squashed gate's median: its mean through the tanh
        with torch.no_grad():
            mean = float(agent.gates[b](torch.as_tensor(o))[0])
        return low + (high - low) / 2 * (np.tanh(mean) + 1)

    obs, _ = env.reset(options={"episode": 1, "split": "test"})
    actions = []
    for block in range(env.num_blocks):
        obs[:env.num_blocks] = np.eye(env.num_blocks)[block]
        assert float(policy(obs, block)[0]) == pytest.approx(median(obs, block), rel=1e-6)
        actions.append(median(obs, block))
    assert actions[0] != pytest.approx(-5.5, abs=1e-3)  # the gates moved from their initial median
    expected = env.score(lambda o, b: np.array([median(o, b)]), "test")
    assert summary["test"]["reward"] == pytest.approx(expected["reward"])


def test_a_fixed_first_step_run_is_scored_with_its_first_step(tmp_path, cache) -> None:
    summary = fixed.main(["--env", "ODE-Mixed-v0", "--tol", "1e-5", "--first-step", "0.1", "--iterations", "1",
                          "--out", str(tmp_path / "f"), "--no-progress", "--no-tensorboard", "--env-kwargs",
                          *ODE_KWARGS, "action_mode='tol_first_step'", f"cache={cache!r}"])
    env = ODETaskEnv(families=("vdp", "lorenz"), segments=2, train_pool_size=2, test_pool_size=2,
                     ood_pool_size=0, reference_tol=1e-9, cache=cache, action_mode="tol_first_step")
    policy = evaluate.load_action_policy(tmp_path / "f", env)
    obs, _ = env.reset(options={"episode": 0})
    assert [list(policy(obs, b)) for b in (0, 1)] == [pytest.approx([-5.0, -1.0])] * 2
    expected = env.score(env.constant_action(1e-5, 0.1), "test")
    assert summary["test"]["reward"] == pytest.approx(expected["reward"]) and summary["test"]["nfe"] == expected["nfe"]
    assert expected["nfe"] != env.score(env.constant_action(1e-5, 1e-3), "test")["nfe"]  # the first step matters


def test_sb3_units_are_clipped_to_the_unit_interval_and_mapped_onto_the_bounds() -> None:
    from agents.sb3 import EnvUnitsPolicy

    policy = EnvUnitsPolicy(None, [-9.0, -3.0], [-2.0, 0.0])
    np.testing.assert_allclose(policy.to_env_units([-1.0, 1.0]), [-9.0, 0.0])
    np.testing.assert_allclose(policy.to_env_units([0.0, -0.5]), [-5.5, -2.25])
    np.testing.assert_allclose(policy.to_env_units([-3.0, 7.0]), [-9.0, 0.0])  # outside [-1, 1]: the bounds


def test_sb3_trains_on_actions_in_the_unit_interval(cache) -> None:
    """The training env maps -1 and 1 onto the action bounds, as the scorer's units assume."""
    from agents.sb3 import training_envs

    env = _ode_env(cache)
    venv = training_envs([env])
    low, high = env.spaces.tol_bounds
    for unit, log_tol in ((-1.0, low), (1.0, high), (0.0, (low + high) / 2)):
        venv.reset()
        *_, infos = venv.step(np.array([[unit]], dtype=np.float32))
        assert math.log10(infos[0]["tol"]) == pytest.approx(log_tol, abs=1e-5)


def test_reward_normalisation_leaves_the_observations_as_the_env_gives_them(cache) -> None:
    """--normalize-reward scales the rewards only: the policy trains on the env's own
    observations, the ones its saved form is played on."""
    from agents.sb3 import training_envs

    raw = _ode_env(cache)
    venv = training_envs([_ode_env(cache)], normalize_reward=True)
    venv.seed(5)
    expected, _ = raw.reset(seed=5)
    np.testing.assert_array_equal(venv.reset()[0], expected)
    low, high = raw.spaces.tol_bounds
    expected, *_ = raw.step(np.array([(low + high) / 2], dtype=np.float32))
    observations, *_ = venv.step(np.zeros((1, 1), dtype=np.float32))  # the middle of the bounds
    np.testing.assert_allclose(observations[0], expected, rtol=1e-6)


def test_a_runs_episodes_after_the_first_are_drawn_on_from_the_envs_generator(tmp_path, cache) -> None:
    """Only a fresh run's first reset is seeded: six episodes of a four-episode training pool at
    one tolerance meet several episodes (each with its own NFE and error), not one six times."""
    kwargs = [k for k in ODE_KWARGS if not k.startswith("train_pool_size")] + ["train_pool_size=4"]
    fixed.main(["--env", "ODE-Mixed-v0", "--tol", "1e-4", "--iterations", "6", "--seed", "3", "--eval-every", "0",
                "--out", str(tmp_path / "run"), "--no-progress", "--no-tensorboard", "--env-kwargs", *kwargs,
                f"cache={cache!r}"])
    episodes = {(r["nfe_forward"], r["error"]) for r in read_jsonl(tmp_path / "run" / "metrics.jsonl")}
    assert len(episodes) > 1


def test_the_summarys_tolerance_is_the_mean_over_the_last_tenth_of_the_episodes(tmp_path, cache) -> None:
    summary = reinforce.main(["--env", "ODE-Mixed-v0", "--iterations", "20", "--seed", "0", "--gate-lr", "0.05",
                              "--init-std", "1.0", "--eval-every", "0", "--out", str(tmp_path / "run"), "--no-progress",
                              "--no-tensorboard", "--env-kwargs", *ODE_KWARGS, f"cache={cache!r}"])
    records = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert len(records) == 20

    def mean_log10_tol(rs: list[dict]) -> float:
        return float(np.mean([np.log10(r["tols"]).mean() for r in rs]))

    assert summary["mean_log10_tol_last"] == pytest.approx(mean_log10_tol(records[-2:]), rel=1e-9)
    assert mean_log10_tol(records[-2:]) != pytest.approx(mean_log10_tol(records[:2]), abs=1e-3)


def test_a_run_whose_episodes_fail_finishes_with_its_summary(tmp_path, cache) -> None:
    """Every episode truncated by the step cap: the run still logs, checkpoints and summarises."""
    summary = _fixed(tmp_path, cache, "ODE-Mixed-v0", [*ODE_KWARGS, "max_num_steps=20"], 1e-9, "failing")
    assert summary["iterations"] == 2 and summary["test"]["failures"] == summary["test"]["episodes"]
    assert summary["train_nfe_backward_mean"] == 0.0

