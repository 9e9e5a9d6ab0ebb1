"""Several environments at once: ``gymnasium.make_vec`` on the registered ids, and
``python -m agents.sb3 --n-envs K`` (SB3 on a ``DummyVecEnv`` of K environments)."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch
from flowkit import DIGITS_ID, TINY, cli, killed_after, read_jsonl, snapshot

import infocnf_env  # noqa: F401  (registers the ids)
from agents import sb3
from agents.loop import run_cli
from infocnf_env.checkpoint import load_checkpoint

ENV_ID = DIGITS_ID
#: log10 tolerance of every block in the make_vec episodes.
ACTION = -4.0


def make_vec(num_envs: int = 2) -> gym.vector.VectorEnv:
    return gym.make_vec(ENV_ID, num_envs=num_envs, vectorization_mode="sync", **TINY)


def vector_episode(envs: gym.vector.VectorEnv) -> tuple[list[np.ndarray], dict]:
    """One episode of every sub-env (they end together: one step per block); the rewards of each
    step and the info of the last."""
    blocks = envs.unwrapped.envs[0].unwrapped.num_blocks
    rewards, info = [], {}
    for _ in range(blocks):
        _, reward, terminated, truncated, info = envs.step(np.full((envs.num_envs, 1), ACTION, np.float32))
        rewards.append(reward)
    assert terminated.all() and not truncated.any()
    return rewards, info


# ---------------------------------------------------------------------- gymnasium.make_vec
def test_make_vec_steps_and_batches_each_sub_envs_reward():
    envs = make_vec(num_envs=2)
    obs, _ = envs.reset(seed=0)
    blocks = envs.unwrapped.envs[0].unwrapped.num_blocks
    assert obs.shape == (2, blocks + 4) and envs.action_space.shape == (2, 1)
    rewards, info = vector_episode(envs)
    assert all(r.shape == (2,) and np.isfinite(r).all() for r in rewards)
    # Eq. 6 with alpha = 1 per sub-env: its own forward NFE, loss and backward NFE
    expected = -(info["nfe_forward"] + info["nfe_backward"]) / blocks - info["loss"]
    np.testing.assert_allclose(np.sum(rewards, axis=0), expected, rtol=1e-9)
    assert info["nfe_forward"].shape == (2,) and info["_loss"].all()
    envs.close()


def test_make_vec_sub_envs_are_seeded_seed_plus_i_and_deterministic():
    """Sub-env i of ``reset(seed=s)`` is the single env reset with ``s + i``: the two draw
    different batches, and the whole vector env repeats itself under the same seed."""
    first, second = make_vec(), make_vec()
    obs_a, _ = first.reset(seed=7)
    obs_b, _ = second.reset(seed=7)
    assert not np.array_equal(obs_a[0], obs_a[1])  # block 0's input statistics: different batches
    np.testing.assert_array_equal(obs_a, obs_b)
    rewards_a, info_a = vector_episode(first)
    rewards_b, info_b = vector_episode(second)
    np.testing.assert_array_equal(np.array(rewards_a), np.array(rewards_b))
    np.testing.assert_array_equal(info_a["loss"], info_b["loss"])
    assert info_a["loss"][0] != info_a["loss"][1]
    for i in range(2):
        single = gym.make(ENV_ID, **TINY)
        obs, _ = single.reset(seed=7 + i)
        np.testing.assert_array_equal(obs, obs_a[i])
    other_seed, _ = make_vec().reset(seed=8)
    np.testing.assert_array_equal(other_seed[0], obs_a[1])  # sub-env 0 with seed 8 is sub-env 1 with seed 7
    assert not np.array_equal(other_seed[1], obs_a[1])


# ---------------------------------------------------------------------- agents.sb3 --n-envs
PPO = ["--algo", "ppo", "--eval-every", "0"]


def _check_env_states(run_dir, n_envs: int, metrics: list[dict]) -> None:
    """Each env's flow was updated once per logged episode of that env, and the flows differ."""
    state = load_checkpoint(run_dir / "checkpoint.pt")
    envs = [state["env"], *state["agent"]["other_envs"]]
    assert len(envs) == n_envs
    for i, env_state in enumerate(envs):
        assert env_state["counters"]["iteration"] == sum(m["env_index"] == i for m in metrics), f"env {i}"
    weights = [e["model"] for e in envs]
    assert any(not torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_sb3_n_envs_logs_each_episode_of_every_env_once(tmp_path):
    run_dir = tmp_path / "run"
    summary = sb3.main(cli(run_dir, *PPO, "--n-envs", "2", iterations=4))
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    assert [m["iteration"] for m in metrics] == [1, 2, 3, 4] and summary["iterations"] == 4
    assert [m["env_index"] for m in metrics] == [0, 1, 0, 1]  # equal-length episodes end together
    for m in metrics:  # each line is the return of its own env's episode (Eq. 6, alpha = 1, 3 blocks)
        assert m["reward"] == pytest.approx(-(m["nfe_forward"] + m["nfe_backward"]) / 3 - m["loss"], rel=1e-6)
    assert metrics[0]["loss"] != metrics[1]["loss"]
    assert json.loads((run_dir / "config.json").read_text())["args"]["n_envs"] == 2
    _check_env_states(run_dir, 2, metrics)


def test_sb3_n_envs_stops_logging_at_the_iterations_asked_for(tmp_path):
    """Two envs end their episodes together; with an odd --iterations the second one's episode
    of the last step is past the total and is not logged."""
    run_dir = tmp_path / "run"
    summary = sb3.main(cli(run_dir, *PPO, "--n-envs", "2", iterations=3))
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    assert [m["iteration"] for m in metrics] == [1, 2, 3] and summary["iterations"] == 3


def test_sb3_n_envs_resume_continues_to_the_total_and_keeps_its_n_envs(tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "run"
    killed_after(monkeypatch, sb3.main, cli(run_dir, *PPO, "--n-envs", "2", "--checkpoint-every", "2",
                                            iterations=6), 3)
    assert load_checkpoint(run_dir / "checkpoint.pt")["run"]["iteration"] == 2
    before = snapshot(run_dir)
    for other in ("1", "3"):
        with pytest.raises(SystemExit) as exit_info:
            run_cli(lambda other=other: sb3.main(["--resume", str(run_dir), "--n-envs", other]))
        assert exit_info.value.code == 2
        assert f"--n-envs {other} differs from the run's 2" in capsys.readouterr().err
    # a config that does not record --n-envs (written before the flag existed): the checkpoint decides
    config_path = run_dir / "config.json"
    config = json.loads(config_path.read_text())
    del config["args"]["n_envs"]
    config_path.write_text(json.dumps(config, indent=2))
    with pytest.raises(SystemExit):
        run_cli(lambda: sb3.main(["--resume", str(run_dir), "--n-envs", "1"]))
    assert "its checkpoint holds 2 environment(s), not --n-envs 1" in capsys.readouterr().err
    config_path.write_bytes(before["config.json"])
    assert snapshot(run_dir) == before
    sb3.main(["--resume", str(run_dir)])  # the run's own --n-envs 2
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    assert [m["iteration"] for m in metrics] == list(range(1, 7))
    _check_env_states(run_dir, 2, metrics)  # env 1's flow went on from the checkpoint, not from scratch


@pytest.mark.parametrize("bad", ["0", "-1"])
def test_sb3_bad_n_envs_is_refused_before_anything_is_written(tmp_path, capsys, bad):
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: sb3.main(cli(run_dir, *PPO, "--n-envs", bad)))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err == f"error: --n-envs must be a positive integer, got {bad}\n"
    assert not run_dir.exists() and not list(tmp_path.iterdir())
