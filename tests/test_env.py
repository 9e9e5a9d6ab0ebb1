"""The environment contract of ``infocnf_env.TrainingStepEnv`` (docs/design.md), on tiny digits flows."""

from __future__ import annotations

import math

import flowkit
import gymnasium as gym
import numpy as np
import pytest
import torch
from flowkit import DIGITS_ID, TINY

import infocnf_env  # noqa: F401  (registers the ids)
from infocnf_env.checkpoint import CheckpointError

ENV_ID = DIGITS_ID
#: One log10 tolerance per block (the digits flow has 3 blocks).
ACTIONS = (-3.0, -4.0, -3.5)
STEP_KEYS = {"nfe", "tol", "block"}
LAST_STEP_KEYS = {"loss", "bits_per_dim", "xent", "error", "nfe_forward", "nfe_backward"}
EVAL_KEYS = {"bits_per_dim", "marginal_bits_per_dim", "error", "nfe", "num_samples"}



def make(env_id: str = ENV_ID, **kwargs) -> gym.Env:
    return gym.make(env_id, **{**TINY, **kwargs})


def run_episode(env: gym.Env, actions=ACTIONS, seed: int | None = None) -> list[tuple]:
    return flowkit.run_episode(env, actions, seed)


def infos(trace: list[tuple]) -> list[dict]:
    return [step[-1] for step in trace[1:]]


def weights(env: gym.Env) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in env.unwrapped.model.state_dict().items()}


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    changed = [k for k in a if not torch.equal(a[k], b[k])]
    assert not changed, f"flow weights changed: {changed}"


# ---------------------------------------------------------------------- spaces and attributes
def test_attributes_and_spaces():
    env = make(alpha=0.25)
    unwrapped = env.unwrapped
    assert unwrapped.config.reward.alpha == 0.25
    assert unwrapped.num_blocks == 3 == unwrapped.model.num_blocks
    assert make().unwrapped.config.reward.alpha == 1.0  # the documented default
    space = env.action_space
    assert isinstance(space, gym.spaces.Box) and space.shape == (1,)
    assert (float(space.low[0]), float(space.high[0])) == infocnf_env.DEFAULT_TOL_BOUNDS
    assert env.observation_space.shape == (unwrapped.num_blocks + 4,)
    narrow = make(tol_bounds=(-6.0, -3.0))
    assert (float(narrow.action_space.low[0]), float(narrow.action_space.high[0])) == (-6.0, -3.0)


@pytest.mark.parametrize("bounds", [(-2.0, -8.0), (-3.0, -3.0), (float("-inf"), -2.0), (-8.0, float("nan"))])
def test_bad_tol_bounds_rejected(bounds):
    with pytest.raises(ValueError, match="tol_bounds"):
        make(tol_bounds=bounds)


@pytest.mark.parametrize("obs_mode", ["vector", "features"])
def test_observations_in_space(obs_mode):
    env = make(obs_mode=obs_mode)
    n = env.unwrapped.num_blocks
    trace = run_episode(env, seed=0)
    observations = [trace[0][0]] + [step[0] for step in trace[1:]]
    assert len(observations) == n + 1
    for i, obs in enumerate(observations):
        assert env.observation_space.contains(obs), f"observation {i} is outside the observation space"
        if obs_mode == "vector":
            onehot = np.eye(n, dtype=np.float32)[i] if i < n else np.zeros(n, dtype=np.float32)
            np.testing.assert_array_equal(obs[:n], onehot)
            assert np.isfinite(obs).all()
        else:
            assert obs["block"] == i  # N marks the terminal observation
            assert np.isfinite(obs["features"]).all()
    if obs_mode == "features":
        assert np.abs(observations[0]["features"]).sum() > 0


def test_a_vector_observation_summarises_the_block_input_by_mean_std_mean_abs_and_log_max_abs():
    """The statistics of ``obs_mode="vector"`` (infocnf_env.observation): over every value of the
    block's input batch, its mean, (population) std, mean |h| and log(1 + max |h|)."""
    from infocnf_env.observation import NUM_STATS, ObservationEncoder

    encoder = ObservationEncoder("vector", 3, [(2,), (2,), (2,)])
    h = torch.tensor([[-3.0, 1.0], [2.0, 0.0]])  # mean 0, variance 14 / 4, mean |h| 1.5, max |h| 3
    obs = encoder.encode(1, h)
    np.testing.assert_array_equal(obs[:3], [0.0, 1.0, 0.0])
    np.testing.assert_allclose(obs[3:3 + NUM_STATS], [0.0, math.sqrt(3.5), 1.5, math.log(4.0)], rtol=1e-6)
    wide = torch.randn(16, 2, generator=torch.Generator().manual_seed(0)) * 5.0
    values = wide.double().numpy().ravel()
    np.testing.assert_allclose(encoder.encode(0, wide)[3:3 + NUM_STATS],
                               [values.mean(), values.std(), np.abs(values).mean(), np.log1p(np.abs(values).max())],
                               rtol=1e-5, atol=1e-6)


def test_info_keys_and_values():
    # beta 0.5 (the authors' --weight_y), not the digits ids' 1: with beta = 1 the loss check below
    # could not tell the model's beta from a hard-coded 1.
    env = make(beta=0.5)
    assert env.unwrapped.model.beta == 0.5
    n = env.unwrapped.num_blocks
    trace = run_episode(env, seed=0)
    steps = trace[1:]
    assert len(steps) == n
    for i, (_, _, terminated, truncated, info) in enumerate(steps):
        assert not truncated
        assert terminated == (i == n - 1)
        assert STEP_KEYS <= set(info)
        if i < n - 1:
            assert set(info) == STEP_KEYS, f"unexpected keys at step {i}: {sorted(set(info) - STEP_KEYS)}"
        assert info["block"] == i
        assert isinstance(info["nfe"], int) and info["nfe"] > 0
        assert info["tol"] == 10.0 ** ACTIONS[i]
    last = steps[-1][-1]
    assert LAST_STEP_KEYS <= set(last), f"missing {sorted(LAST_STEP_KEYS - set(last))}"
    assert last["nfe_forward"] == sum(s[-1]["nfe"] for s in steps)
    assert last["nfe_blocks"] == [s[-1]["nfe"] for s in steps]
    assert last["tols"] == [10.0 ** a for a in ACTIONS]
    assert isinstance(last["nfe_backward"], int) and last["nfe_backward"] > 0  # the flow was trained
    assert math.isfinite(last["loss"]) and 0.0 <= last["error"] <= 1.0
    # J = bits/dim + beta * cross-entropy (Eq. 4, no regularizer), with the model's beta
    beta = env.unwrapped.model.beta
    assert last["loss"] == pytest.approx(last["bits_per_dim"] + beta * last["xent"], rel=1e-5)
    assert last["iteration"] == 1 and last["skipped_update"] is False


# ---------------------------------------------------------------------- actions
@pytest.mark.parametrize("action, log_tol", [(-20.0, -8.0), (-8.5, -8.0), (5.0, -2.0), (-1.9, -2.0), (-5.0, -5.0)])
def test_out_of_bounds_actions_are_clipped(action, log_tol):
    env = make()
    env.reset(seed=0)
    _, _, _, _, info = env.step(np.array([action], dtype=np.float32))
    assert info["tol"] == 10.0 ** log_tol


@pytest.mark.parametrize("action, match", [
    ([float("nan")], "finite"), ([float("inf")], "finite"), ([float("-inf")], "finite"),
    ([-3.0, -4.0], "shape"), ([], "shape"), ([[-3.0, -4.0]], "shape"),
])
def test_bad_actions_raise_value_error(action, match):
    env = make()
    env.reset(seed=0)
    with pytest.raises(ValueError, match=match):
        env.step(np.array(action, dtype=np.float32))
    # The rejected action solved nothing: the episode goes on at block 0.
    _, _, _, _, info = env.step(np.array([-3.0], dtype=np.float32))
    assert info["block"] == 0


def test_step_before_reset_raises():
    env = make().unwrapped
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.array([-3.0], dtype=np.float32))


# ---------------------------------------------------------------------- rewards
def test_rewards_equal_the_formula():
    alpha, loss_weight = 0.7, 1.3
    env = make(alpha=alpha, loss_weight=loss_weight)
    n = env.unwrapped.num_blocks
    for seed in (0, None):
        steps = run_episode(env, seed=seed)[1:]
        for i, (_, reward, _, _, info) in enumerate(steps):
            expected = -(alpha / n) * info["nfe"]
            if i == n - 1:  # Eq. 6: the last step adds the loss and the backward NFE
                expected += -loss_weight * info["loss"] - (alpha / n) * info["nfe_backward"]
            assert isinstance(reward, float)
            assert reward == pytest.approx(expected, rel=1e-12, abs=1e-12), f"step {i}"


# ---------------------------------------------------------------------- determinism
def test_identical_seeds_give_identical_traces():
    def trace(seed: int) -> list[tuple]:
        env = make()
        return run_episode(env, seed=seed)[1:] + run_episode(env)[1:]  # a seeded episode, then one more

    a, b, other = trace(3), trace(3), trace(4)
    assert [s[-1] for s in a] == [s[-1] for s in b]
    assert [s[1] for s in a] == [s[1] for s in b]
    for sa, sb in zip(a, b, strict=True):
        np.testing.assert_array_equal(sa[0], sb[0])
    assert [s[-1]["loss"] for s in a if "loss" in s[-1]] != [s[-1]["loss"] for s in other if "loss" in s[-1]]


def test_env_seed_sets_initial_weights():
    assert_same_weights(weights(make(seed=5)), weights(make(seed=5)))
    five, six = weights(make(seed=5)).values(), weights(make(seed=6)).values()
    assert any(not torch.equal(a, b) for a, b in zip(five, six, strict=True))


# ---------------------------------------------------------------------- evaluation
def test_evaluate_returns_documented_keys():
    env = make()
    metrics = env.unwrapped.evaluate(max_batches=1)
    assert set(metrics) == EVAL_KEYS
    assert metrics["num_samples"] == TINY["eval_batch_size"]
    assert all(math.isfinite(v) for v in metrics.values())
    assert 0.0 <= metrics["error"] <= 1.0 and metrics["nfe"] > 0
    assert env.unwrapped.model.training  # evaluation restores training mode
    assert env.unwrapped.evaluate(max_batches=1) == metrics  # seeded: repeatable


# ---------------------------------------------------------------------- train_flow
def test_train_flow_true_updates_weights():
    env = make()
    before = weights(env)
    run_episode(env, seed=0)
    after = weights(env)
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_train_flow_false_leaves_weights_unchanged():
    env = make(train_flow=False)
    before = weights(env)
    for seed in (0, None):
        last = run_episode(env, seed=seed)[-1][-1]
        assert last["nfe_backward"] == 0 and math.isfinite(last["loss"])
    assert_same_weights(before, weights(env))
    assert env.unwrapped.iteration == 2


# ---------------------------------------------------------------------- solver failure
def test_solver_failure_truncates_and_leaves_flow_untouched():
    # A 2-step cap: dopri5 at 1e-2 needs 2 steps per block; at 1e-8 it needs many more.
    penalty = 7.5
    env = make(max_num_steps=2, failure_penalty=penalty)
    before = weights(env)
    env.reset(seed=0)
    _, reward, terminated, truncated, info = env.step(np.array([-2.0], dtype=np.float32))
    assert not (terminated or truncated) and "solver_error" not in info
    _, reward, terminated, truncated, info = env.step(np.array([-8.0], dtype=np.float32))
    assert truncated and not terminated
    assert reward == -penalty
    assert isinstance(info["solver_error"], str) and info["solver_error"]
    assert info["tol"] == 1e-8 and info["solver_failures"] == 1
    assert_same_weights(before, weights(env))
    assert env.unwrapped.iteration == 0
    with pytest.raises(RuntimeError, match="reset"):  # the failed episode is over
        env.unwrapped.step(np.array([-2.0], dtype=np.float32))
    # The next episode runs normally and trains the flow.
    steps = run_episode(env, actions=(-2.0,) * 3)[1:]
    assert len(steps) == 3 and steps[-1][2] and not steps[-1][3]
    last = steps[-1][-1]
    assert math.isfinite(last["loss"]) and last["solver_failures"] == 1 and last["iteration"] == 1
    assert any(not torch.equal(before[k], v) for k, v in weights(env).items())


# ---------------------------------------------------------------------- checkpoints
def test_save_load_round_trip(tmp_path):
    path = tmp_path / "env.pt"
    env = make()
    run_episode(env, seed=0)
    run_episode(env)
    env.unwrapped.save(path)
    expected = [infos(run_episode(env, actions=a)) for a in (ACTIONS, (-4.0, -3.0, -5.0))]
    fresh = make(seed=1)  # other weights and data order until the checkpoint is loaded
    fresh.unwrapped.load(path)
    assert fresh.unwrapped.iteration == 2
    got = [infos(run_episode(fresh, actions=a)) for a in (ACTIONS, (-4.0, -3.0, -5.0))]
    assert got == expected
    assert_same_weights(weights(env), weights(fresh))


def test_checkpoint_kwarg_loads_at_construction(tmp_path):
    path = tmp_path / "env.pt"
    env = make()
    run_episode(env, seed=0)
    env.unwrapped.save(path)
    loaded = make(seed=1, checkpoint=str(path))
    assert_same_weights(weights(env), weights(loaded))
    assert loaded.unwrapped.iteration == 1


@pytest.mark.parametrize("other", [dict(env_id="CCNF-Digits-v0"), dict(hidden=TINY["hidden"] + 4), dict(num_scales=1)])
def test_checkpoint_of_another_model_raises(tmp_path, other):
    path = tmp_path / "infocnf.pt"
    make().unwrapped.save(path)
    env = make(**other)
    before = weights(env)
    with pytest.raises(CheckpointError, match="another model") as err:
        env.unwrapped.load(path)
    assert "\n" not in str(err.value)
    assert_same_weights(before, weights(env))  # nothing was loaded
    with pytest.raises(CheckpointError, match="another model"):
        make(**other, checkpoint=str(path))


class _NotData:
    """A pickled object (code, not data): ``weights_only`` loading refuses it."""


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "missing", "not_a_dict", "code"])
def test_bad_checkpoint_file_raises_one_line_error(tmp_path, damage):
    good = tmp_path / "good.pt"
    make().unwrapped.save(good)
    bad = tmp_path / "bad.pt"
    if damage == "truncated":
        data = good.read_bytes()
        bad.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        bad.write_bytes(b"this is not a checkpoint\n" * 10)
    elif damage == "empty":
        bad.write_bytes(b"")
    elif damage == "not_a_dict":
        torch.save([1, 2, 3], bad)
    elif damage == "code":
        torch.save({"env": _NotData()}, bad)
    env = make()
    with pytest.raises(CheckpointError) as err:
        env.unwrapped.load(bad)
    message = str(err.value)
    assert "\n" not in message and "bad.pt" in message


def test_frozen_flow_from_checkpoint(tmp_path):
    path = tmp_path / "trained.pt"
    trainer = make()
    run_episode(trainer, seed=0)
    run_episode(trainer)
    trainer.unwrapped.save(path)
    saved = weights(trainer)
    frozen = make(train_flow=False, checkpoint=str(path))
    model = frozen.unwrapped.model
    assert_same_weights(saved, weights(frozen))
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    for actions in (ACTIONS, (-2.0, -2.0, -2.0)):
        steps = run_episode(frozen, actions=actions)[1:]
        last = steps[-1][-1]
        assert steps[-1][2] and last["nfe_backward"] == 0 and math.isfinite(last["loss"])
    assert_same_weights(saved, weights(frozen))
    assert frozen.unwrapped.iteration == 4



def test_feedback_observations_report_the_previous_blocks_solve_counted_independently():
    env = gym.make(DIGITS_ID, **TINY, feedback=True).unwrapped
    flowkit.perturb(env.model, 0.4)  # stiff enough that the solves reject steps
    calls = flowkit.count_net_calls(env.model)
    assert env.observation_space.shape == (env.num_blocks + 4 + 4,)
    obs, _ = env.reset(seed=0)
    assert (obs[-4:] == 0).all()  # nothing solved yet
    rejected = 0
    for log_tol in [-2.0, -4.0, -2.0][: env.num_blocks]:  # the default bounds are (-8, -2)
        calls["n"] = 0
        obs, _, terminated, _, info = env.step(np.array([log_tol]))
        feedback = env._steps.feedback
        # Dormand-Prince: 2 evaluations for the initial step, 6 per attempted step (FSAL)
        assert calls["n"] == info["nfe"] == 2 + 6 * (feedback.accepted + feedback.rejected)
        rejected += feedback.rejected
        if not terminated:
            assert obs[-4] == pytest.approx(math.log1p(calls["n"]))
            assert obs[-2] == pytest.approx(math.log1p(feedback.rejected)) and obs[-1] == pytest.approx(log_tol)
            assert 0 < feedback.last_step < 2 and obs[-3] == pytest.approx(math.log10(feedback.last_step), abs=1e-6)
    assert rejected > 0
    with pytest.raises(ValueError, match="vector observations only"):
        gym.make(DIGITS_ID, **TINY, feedback=True, obs_mode="features")
