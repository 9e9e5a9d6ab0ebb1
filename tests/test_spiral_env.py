"""The LatentODE spiral environments (paper Sec. 4.6) under the flow environments' contract.

``LatentODE-Spirals-v0`` (baseline) and ``LatentODE-Partitioned-Spirals-v0`` are
``TrainingStepEnv`` with ``dataset="spirals"`` (``infocnf_env.spiral_task.SpiralTask``): one
step per time segment of the latent trajectory solve. Tiny sizes keep every test well under
a second or two on one CPU core.
"""

from __future__ import annotations

import json
import math
import warnings

import flowkit
import gymnasium as gym
import numpy as np
import pytest
import torch
from flowkit import TINY_SPIRALS, env_kwargs
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import infocnf_env
from agents import fixed, reinforce
from flows.latent_ode import LatentODE
from flows.spirals import make_spirals
from infocnf_env.checkpoint import CheckpointError
from infocnf_env.spiral_task import SpiralTask

IDS = ("LatentODE-Spirals-v0", "LatentODE-Partitioned-Spirals-v0")
TINY = TINY_SPIRALS
ACTIONS = (-3.0, -5.0)
STEP_KEYS = {"nfe", "tol", "block"}
LAST_STEP_KEYS = {"loss", "recon_mse", "recon_nll", "kl", "bits_per_dim", "nfe_forward", "nfe_backward", "tols",
                  "nfe_blocks", "iteration", "epoch", "lr", "skipped_update", "skipped_updates", "solver_failures"}
PARTITIONED_KEYS = {"xent", "ab_mse", "direction_error", "error"}
EVAL_KEYS = {"recon_mse", "recon_mse_noisy", "extrap_mse", "neg_elbo", "nfe", "num_samples", "bits_per_dim",
             "marginal_bits_per_dim", "error"}



def make(env_id: str = IDS[0], **kwargs) -> gym.Env:
    return gym.make(env_id, **{**TINY, **kwargs})


def run_episode(env: gym.Env, actions=ACTIONS, seed: int | None = None) -> list[tuple]:
    return flowkit.run_episode(env, actions, seed)


def weights(env: gym.Env) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in env.unwrapped.model.state_dict().items()}


# ---------------------------------------------------------------------- registration and checkers
def test_registered_ids_and_defaults():
    for env_id, partitioned in zip(IDS, (False, True), strict=True):
        assert env_id in gym.registry and env_id in infocnf_env.ENV_IDS
        assert gym.registry[env_id].entry_point == "infocnf_env.training_env:TrainingStepEnv"
        spec = infocnf_env.ENV_IDS[env_id]
        # the CPU-sized settings, two segments
        settings = (spec.data.dataset, spec.data.batch_size, spec.optim.lr, spec.model["segments"])
        assert settings == ("spirals", 100, 1e-2, 2)
        env = make(env_id)
        unwrapped = env.unwrapped
        assert isinstance(unwrapped.task, SpiralTask) and isinstance(unwrapped.model, LatentODE)
        assert unwrapped.model.partitioned is partitioned
        assert unwrapped.num_blocks == 2 and env.observation_space.shape == (2 + 4,)
        assert env.action_space.shape == (1,)
    assert make(segments=3).unwrapped.num_blocks == 3


@pytest.mark.parametrize("env_id", IDS)
def test_check_env(env_id):
    env = make(env_id)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # deliberate [-8, -2] bounds, unbounded observations
        gym_check_env(env.unwrapped)
        sb3_check_env(env.unwrapped, warn=True)


@pytest.mark.parametrize("kwargs, match", [
    (dict(hidden=4), "unknown env kwarg"), (dict(head="ccnf"), "head"), (dict(arch="mlp"), "arch"),
    (dict(segments=0), "segments"), (dict(segments=20), "segments need"),
])
def test_bad_kwargs_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make(**kwargs)


# ---------------------------------------------------------------------- the step contract
@pytest.mark.parametrize("env_id", IDS)
def test_observations_info_and_reward_formula(env_id):
    alpha, loss_weight = 0.7, 1.3
    # beta 0.5, not the spiral ids' 1: with beta = 1 the loss check below could not tell the
    # model's beta from a hard-coded 1.
    env = make(env_id, alpha=alpha, loss_weight=loss_weight, beta=0.5)
    assert env.unwrapped.model.beta == 0.5
    n = env.unwrapped.num_blocks
    trace = run_episode(env, seed=0)
    observations = [trace[0][0]] + [s[0] for s in trace[1:]]
    for i, obs in enumerate(observations):
        assert env.observation_space.contains(obs) and np.isfinite(obs).all()
        onehot = np.eye(n, dtype=np.float32)[i] if i < n else np.zeros(n, dtype=np.float32)
        np.testing.assert_array_equal(obs[:n], onehot)
    assert not np.array_equal(observations[0][n:], observations[1][n:])  # segment 2 starts elsewhere
    steps = trace[1:]
    assert len(steps) == n
    for i, (_, reward, terminated, truncated, info) in enumerate(steps):
        assert terminated == (i == n - 1) and not truncated
        if i < n - 1:
            assert set(info) == STEP_KEYS
        assert info["block"] == i and info["tol"] == 10.0 ** ACTIONS[i]
        assert isinstance(info["nfe"], int) and info["nfe"] > 0
        expected = -(alpha / n) * info["nfe"]
        if i == n - 1:  # Eq. 6: the last step adds the loss and the backward NFE
            expected += -loss_weight * info["loss"] - (alpha / n) * info["nfe_backward"]
        assert isinstance(reward, float) and reward == pytest.approx(expected, rel=1e-12, abs=1e-12)
    last = steps[-1][-1]
    partitioned = env.unwrapped.model.partitioned
    assert LAST_STEP_KEYS <= set(last)
    assert (PARTITIONED_KEYS <= set(last)) if partitioned else not (PARTITIONED_KEYS & set(last))
    assert last["nfe_blocks"] == [s[-1]["nfe"] for s in steps] and last["nfe_forward"] == sum(last["nfe_blocks"])
    assert last["tols"] == [10.0 ** a for a in ACTIONS]
    assert isinstance(last["nfe_backward"], int) and last["nfe_backward"] > 0
    assert last["iteration"] == 1 and last["skipped_update"] is False
    # loss = negative ELBO per observed scalar (bits_per_dim in nats) + beta * supervised loss, with the model's beta
    supervised = env.unwrapped.model.beta * (last["xent"] + last["ab_mse"]) if partitioned else 0.0
    assert last["loss"] == pytest.approx(last["bits_per_dim"] * math.log(2) + supervised, rel=1e-5)
    if partitioned:
        assert last["error"] == last["direction_error"] and 0.0 <= last["error"] <= 1.0


def test_nfe_per_segment_moves_with_tolerance():
    env = make(train_flow=False)  # the same model for every tolerance
    nfe = {}
    for log_tol in (-2.0, -5.0, -8.0):
        blocks = [run_episode(env, (log_tol,) * 2, seed=seed)[-1][-1]["nfe_blocks"] for seed in range(3)]
        nfe[log_tol] = np.sum(blocks, axis=0)  # per segment, over three episodes
    assert (nfe[-2.0] < nfe[-5.0]).all() and (nfe[-5.0] < nfe[-8.0]).all(), nfe


def test_seeded_reset_is_reproducible():
    def trace(seed: int) -> list[tuple]:
        env = make()
        return run_episode(env, seed=seed)[1:] + run_episode(env)[1:]

    a, b, other = trace(3), trace(3), trace(4)
    assert [s[-1] for s in a] == [s[-1] for s in b] and [s[1] for s in a] == [s[1] for s in b]
    for sa, sb in zip(a, b, strict=True):
        np.testing.assert_array_equal(sa[0], sb[0])
    assert [s[-1].get("loss") for s in a] != [s[-1].get("loss") for s in other]


def test_solver_failure_truncates_and_leaves_model_untouched():
    env = make(max_num_steps=2, failure_penalty=7.5)
    before = weights(env)
    env.reset(seed=0)
    _, reward, terminated, truncated, info = env.step(np.array([-8.0], dtype=np.float32))
    assert truncated and not terminated and reward == -7.5 and info["solver_failures"] == 1
    assert all(torch.equal(before[k], v) for k, v in weights(env).items())


def test_features_mode_gap_check_and_frozen_model():
    env = make(IDS[1], obs_mode="features", feature_samples=4)
    assert env.observation_space["features"].shape == (4, 5)  # 4 spirals' latent states
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        gym_check_env(env.unwrapped)
    last = run_episode(make(gap_check_every=1), seed=0)[-1][-1]
    assert math.isfinite(last["loss_gap"])  # the same batch and posterior noise re-solved at 1e-5
    frozen = make(train_flow=False)
    before = weights(frozen)
    last = run_episode(frozen, seed=0)[-1][-1]
    assert last["nfe_backward"] == 0 and math.isfinite(last["loss"])
    assert all(torch.equal(before[k], v) for k, v in weights(frozen).items())


# ---------------------------------------------------------------------- evaluation and checkpoints
@pytest.mark.parametrize("env_id", IDS)
def test_evaluate(env_id):
    env = make(env_id)
    partitioned = env.unwrapped.model.partitioned
    metrics = env.unwrapped.evaluate(split="test", tol=1e-5, max_batches=None)
    expected = EVAL_KEYS | ({"direction_error", "ab_mae", "a_mae", "b_mae"} if partitioned else set())
    assert set(metrics) == expected
    assert metrics["num_samples"] == TINY["num_test"] and metrics["nfe"] > 0
    assert metrics["bits_per_dim"] == pytest.approx(metrics["neg_elbo"] / math.log(2))
    if partitioned:
        assert metrics["error"] == metrics["direction_error"] and math.isnan(metrics["marginal_bits_per_dim"])
    else:
        assert math.isnan(metrics["error"]) and metrics["marginal_bits_per_dim"] == metrics["bits_per_dim"]
    assert all(math.isfinite(v) for k, v in metrics.items() if k not in ("error", "marginal_bits_per_dim"))
    assert env.unwrapped.model.training  # evaluation restores training mode
    assert env.unwrapped.evaluate(max_batches=1)["num_samples"] == TINY["eval_batch_size"]
    again = env.unwrapped.evaluate()  # posterior means: repeatable (json, as NaN != NaN)
    assert json.dumps(again, sort_keys=True) == json.dumps(metrics, sort_keys=True)


def test_save_load_round_trip(tmp_path):
    path = tmp_path / "env.pt"
    env = make(IDS[1])
    run_episode(env, seed=0)
    run_episode(env)
    env.unwrapped.save(path)
    saved = weights(env)
    expected = [[s[-1] for s in run_episode(env, actions=a)[1:]] for a in (ACTIONS, (-4.0, -2.5))]
    fresh = make(IDS[1], seed=1)  # other weights and batch order until the checkpoint is loaded
    fresh.unwrapped.load(path)
    assert fresh.unwrapped.iteration == 2
    got = [[s[-1] for s in run_episode(fresh, actions=a)[1:]] for a in (ACTIONS, (-4.0, -2.5))]
    assert got == expected
    assert all(torch.equal(v, weights(fresh)[k]) for k, v in weights(env).items())
    for other in (dict(env_id=IDS[0]), dict(env_id=IDS[1], rnn_hidden=6), dict(env_id=IDS[1], window=24)):
        with pytest.raises(CheckpointError, match="another model"):
            make(**other).unwrapped.load(path)
    resegmented = make(IDS[1], segments=3)  # same weights, the solve cut into three env steps
    resegmented.unwrapped.load(path)
    assert all(torch.equal(v, weights(resegmented)[k]) for k, v in saved.items())


# ---------------------------------------------------------------------- segments of the solve
def test_segments_cover_the_grid_and_match_one_solve():
    data = make_spirals(6, length=100, window=20, extrap=10, seed=0)
    torch.manual_seed(0)
    one = LatentODE(data.times, segments=1, dyn_hidden=8).eval()
    three = LatentODE(data.times, segments=3, dyn_hidden=8).eval()
    three.load_state_dict(one.state_dict())
    assert three.segment_bounds(20) == [(0, 6), (6, 13), (13, 19)]
    state = three.start(data.obs)
    for k in range(3):
        assert three.block_index(state) == k
        state, stats = three.advance(state, 1e-7)
        assert stats.nfe > 0
    assert state.traj.shape == (20, 6, 5)
    reference = one.advance(one.start(data.obs), 1e-7)[0].traj
    torch.testing.assert_close(state.traj, reference, atol=1e-4, rtol=1e-4)
    times = torch.cat([data.times, data.extrap_times])
    torch.testing.assert_close(three.reconstruct(data.obs, times, 1e-7), one.reconstruct(data.obs, times, 1e-7),
                               atol=1e-3, rtol=1e-4)


# ---------------------------------------------------------------------- agents, unchanged
def _cli(run_dir, env_id: str, *extra: str) -> list[str]:
    return ["--env", env_id, "--iterations", "2", "--eval-every", "1", "--eval-batches", "1", "--no-progress",
            "--no-tensorboard", "--out", str(run_dir), *extra, *env_kwargs(TINY)]


@pytest.mark.parametrize("env_id", IDS)
def test_fixed_cli_end_to_end(tmp_path, env_id):
    summary = fixed.main(_cli(tmp_path / "run", env_id, "--tol", "1e-4"))
    assert summary["iterations"] == 2 and EVAL_KEYS <= set(summary["test"])
    assert summary["test"]["num_samples"] == TINY["num_test"]  # the final evaluation is full
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["iteration"] for m in metrics] == [1, 2]
    for m in metrics:
        assert {"loss", "recon_mse", "kl", "bits_per_dim", "nfe_forward", "nfe_backward", "tols"} <= set(m)
        assert m["tols"] == [pytest.approx(1e-4, rel=1e-6)] * 2 and len(m["nfe_blocks"]) == 2
    evals = [json.loads(line) for line in (tmp_path / "run" / "eval.jsonl").read_text().splitlines()]
    assert [e["iteration"] for e in evals] == [1, 2] and evals[0]["num_samples"] == TINY["eval_batch_size"]
    assert (tmp_path / "run" / "checkpoint.pt").exists() and (tmp_path / "run" / "summary.json").exists()


def test_reinforce_cli_end_to_end(tmp_path):
    summary = reinforce.main(_cli(tmp_path / "run", IDS[1]))
    assert summary["iterations"] == 2 and math.isfinite(summary["test"]["extrap_mse"])
