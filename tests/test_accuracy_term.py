"""The accuracy term of the reward and the first-step action mode of TrainingStepEnv."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
from flowkit import DIGITS_ID, TINY, perturb

import infocnf_env  # noqa: F401  (registers the ids)
from agents.fixed import make_fixed_agent

SMALL = dict(TINY, eval_batch_size=8, seed=3)
LOOSE = -1.0  # log10 tolerance far looser than the reference's


def _env(**kwargs):
    env = gym.make(DIGITS_ID, **SMALL, tol_bounds=(-8.0, 0.0), **kwargs).unwrapped
    perturb(env.model, 0.3)  # dynamics far from zero: a loose solve errs
    return env


def _episode(env, log_tol: float, first_step: float | None = None):
    env.reset(seed=0)
    total, done, info = 0.0, False, {}
    while not done:
        action = [log_tol] if first_step is None else [log_tol, math.log10(first_step)]
        _, reward, terminated, truncated, info = env.step(np.array(action))
        total += reward
        done = terminated or truncated
    return total, info


@pytest.mark.parametrize("sided", ["one", "two"])
def test_accuracy_term_charges_the_gap_to_an_independent_reference_pass(sided):
    weight = 50.0
    plain_reward, plain = _episode(_env(), LOOSE)
    charged_reward, charged = _episode(_env(gap_check_every=1, gap_weight=weight, gap_sided=sided), LOOSE)
    # the same batch, noise and weights solved at the reference tolerance in an env of its own
    _, reference = _episode(_env(), -5.0)
    gap = reference["loss"] - plain["loss"]
    assert abs(gap) > 1e-3, "the loose solve must err for this test to mean anything"
    assert charged["loss"] == plain["loss"]
    assert charged["loss_gap"] == pytest.approx(gap, abs=1e-5)
    charge = weight * (abs(gap) if sided == "two" else max(0.0, gap))
    assert charged_reward == pytest.approx(plain_reward - charge, rel=1e-5, abs=1e-4)
    # the reference solve's NFE is reported apart: not in the NFE cost or the training counts
    assert charged["nfe_reference"] == reference["nfe_forward"]
    assert charged["nfe_forward"] == plain["nfe_forward"] and plain["nfe_reference"] == 0


@pytest.mark.parametrize("reference_tol", [1e-3, 1e-6])
def test_reference_tolerance_is_configurable(reference_tol):
    _, charged = _episode(_env(gap_check_every=1, reference_tol=reference_tol), LOOSE)
    # the same batch, noise and weights solved at that tolerance in an env of its own
    _, reference = _episode(_env(), math.log10(reference_tol))
    assert charged["nfe_reference"] == reference["nfe_forward"]
    assert charged["loss_gap"] == pytest.approx(reference["loss"] - charged["loss"], abs=1e-5)


def test_first_step_action_skips_the_start_up_steps():
    env = _env(action_mode="tol_first_step")
    assert env.action_space.shape == (2,)
    _, whole = _episode(env, LOOSE, first_step=1.0)
    _, tiny = _episode(_env(action_mode="tol_first_step"), LOOSE, first_step=1e-3)
    _, heuristic = _episode(_env(), LOOSE)
    assert whole["first_steps"] == [1.0] * env.num_blocks
    assert sum(whole["nfe_blocks"]) < sum(heuristic["nfe_blocks"]) < sum(tiny["nfe_blocks"])


def test_first_step_bounds_clip_and_bad_actions_are_one_error():
    env = _env(action_mode="tol_first_step", first_step_bounds=(-2.0, -1.0))
    env.reset(seed=0)
    _, _, _, _, info = env.step(np.array([-3.0, 5.0]))
    assert info["first_step"] == pytest.approx(0.1)
    with pytest.raises(ValueError, match=r"action must hold a log10 tolerance and a log10 first-step fraction"):
        env.step(np.array([-3.0]))
    with pytest.raises(ValueError, match="first_step_bounds must be <= 0"):
        _env(action_mode="tol_first_step", first_step_bounds=(-2.0, 1.0))
    with pytest.raises(ValueError, match="unknown action_mode 'first'"):
        _env(action_mode="first")
    with pytest.raises(ValueError, match="unknown gap_sided 'both'"):
        _env(gap_sided="both")


def test_fixed_agent_needs_a_first_step_exactly_in_first_step_mode():
    with pytest.raises(ValueError, match="pass --first-step"):
        make_fixed_agent(_env(action_mode="tol_first_step"), 1e-5, [], None)
    with pytest.raises(ValueError, match="--first-step needs an env with action_mode=tol_first_step"):
        make_fixed_agent(_env(), 1e-5, [], 0.5)
    agent = make_fixed_agent(_env(action_mode="tol_first_step"), 1e-3, [], 0.5)
    assert np.allclose(agent.act(None), [-3.0, math.log10(0.5)])
