"""Warm-started solves: each block starts from the step it last accepted in training.

NFE stays exact with the option on and off (against an independent count of the dynamics
network's calls); the step is kept across passes, rescaled to a new tolerance, left alone by
evaluation, saved with the env's checkpoints and reset when other weights are loaded.
"""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch
from flowkit import count_net_calls, digits_batch, digits_flow

import infocnf_env  # noqa: F401  (registers the ids)
from flows.ode import rescale_step


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    return digits_batch()


def counted_model(warm_start: bool, **options) -> tuple[torch.nn.Module, dict[str, int]]:
    """A digits flow and a count of its dynamics networks' calls, kept apart from its NFE counters."""
    model = digits_flow(warm_start=warm_start, **options)
    return model, count_net_calls(model)


def forward(model, batch, tol: float):
    x, y = batch
    return model(x, y, tol=tol, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("warm_start", [False, True])
def test_forward_nfe_equals_the_calls_of_the_dynamics(batch, warm_start):
    model, calls = counted_model(warm_start)
    for tol in (1e-5, 1e-3, 1e-5):
        calls["n"] = 0
        out = forward(model, batch, tol)
        assert out.nfe_forward == calls["n"] == sum(s.nfe for s in out.stats)


def test_warm_start_skips_the_start_up_steps_at_the_same_density(batch):
    cold, _ = counted_model(False)
    warm, _ = counted_model(True)
    first = forward(warm, batch, 1e-5)
    assert first.nfe_forward == forward(cold, batch, 1e-5).nfe_forward  # nothing to start from yet
    assert all(b.last_step is not None and b.last_step[1] == 1e-5 for b in warm.blocks)
    second, baseline = forward(warm, batch, 1e-5), forward(cold, batch, 1e-5)
    assert second.nfe_forward < baseline.nfe_forward
    torch.testing.assert_close(second.logpx, baseline.logpx, rtol=1e-4, atol=0)  # both within tol 1e-5


def test_evaluation_reads_the_step_but_does_not_move_it(batch):
    model, _ = counted_model(True)
    forward(model, batch, 1e-5)
    kept = [b.last_step for b in model.blocks]
    model.eval()
    with torch.no_grad():
        forward(model, batch, 1e-3)
    assert [b.last_step for b in model.blocks] == kept


def test_a_step_is_rescaled_to_a_new_tolerance():
    assert rescale_step(0.1, 1e-5, 1e-5, 5) == pytest.approx(0.1)
    assert rescale_step(0.1, 1e-5, 1e-10, 5) == pytest.approx(0.01)
    assert rescale_step(0.1, 1e-6, 1e-3, 3) == pytest.approx(1.0)


def test_loading_weights_resets_and_solver_state_restores(batch):
    model, _ = counted_model(True)
    forward(model, batch, 1e-5)
    state = model.solver_state()
    assert all(step is not None for step in state["last_steps"])
    model.load_state_dict(model.state_dict())
    assert all(b.last_step is None for b in model.blocks)
    model.load_solver_state(state)
    assert [list(b.last_step) for b in model.blocks] == state["last_steps"]
    model.load_solver_state({"last_steps": [[0.1, 1e-5]]})  # another model's: does not fit
    assert all(b.last_step is None for b in model.blocks)


def _episode_nfe(env: gym.Env, seed: int | None = None) -> list[int]:
    env.reset(seed=seed)
    nfe, done = [], False
    while not done:
        _, _, terminated, truncated, info = env.step(np.array([-5.0], dtype=np.float32))
        nfe.append(info["nfe"])
        done = terminated or truncated
    return nfe


def test_env_checkpoints_carry_the_steps(tmp_path):
    make = lambda: gym.make("InfoCNF-Digits-v0", batch_size=16, hidden=4, warm_start=True)  # noqa: E731
    env = make()
    _episode_nfe(env, seed=0)
    env.unwrapped.save(tmp_path / "ckpt.pt")
    expected = [_episode_nfe(env) for _ in range(2)]
    restored = make()
    restored.unwrapped.load(tmp_path / "ckpt.pt")
    assert [_episode_nfe(restored) for _ in range(2)] == expected
    cold = make()
    cold.unwrapped.load(tmp_path / "ckpt.pt")
    cold.unwrapped.model.load_solver_state(None)
    assert sum(_episode_nfe(cold)) > sum(expected[0])  # without the steps, the heuristic start again


def test_resume_with_warm_start_is_exact(tmp_path):
    from agents import fixed

    def cli(out, iterations):
        return ["--iterations", str(iterations), "--out", str(out), "--tol", "1e-4", "--eval-every", "0",
                "--checkpoint-every", "2", "--no-progress", "--no-tensorboard",
                "--env-kwargs", "batch_size=8", "hidden=4", "eval_batch_size=64", "warm_start=True"]

    fixed.main(cli(tmp_path / "straight", 4))
    fixed.main(cli(tmp_path / "split", 2))
    fixed.main(["--resume", str(tmp_path / "split"), "--iterations", "4", "--no-progress"])
    lines = [[{k: v for k, v in json.loads(line).items() if k != "wall_time"}
              for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
             for name in ("straight", "split")]
    assert lines[0] == lines[1]
    assert lines[0][1]["nfe_forward"] < lines[0][0]["nfe_forward"]  # the warm start at work
