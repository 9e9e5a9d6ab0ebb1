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
from flowkit import DIGITS_ID, TINY, count_net_calls, digits_batch, digits_flow, env_kwargs, perturb
from torchdiffeq._impl.rk_common import RKAdaptiveStepsizeODESolver

import flows.cnf_block
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


@pytest.fixture
def accepted_steps(monkeypatch) -> list[float]:
    """The steps torchdiffeq's adaptive Runge-Kutta loop accepts, read off its own state (the
    step's end time moves on an accepted step only), apart from the library's step callbacks."""
    steps: list[float] = []
    original = RKAdaptiveStepsizeODESolver._adaptive_step

    def spy(self, rk_state):
        new_state = original(self, rk_state)
        if new_state.t1 != rk_state.t1:
            steps.append(float((new_state.t1 - rk_state.t1).detach()))
        return new_state

    monkeypatch.setattr(RKAdaptiveStepsizeODESolver, "_adaptive_step", spy)
    return steps


def stiffer_model() -> torch.nn.Module:
    """A warm-started digits flow whose solves take several steps of different sizes at 1e-5."""
    model, _ = counted_model(True)
    for block in model.blocks:
        perturb(block.net, 0.2)
    return model


def test_the_kept_step_is_the_last_step_the_solve_accepted(batch, accepted_steps):
    model = stiffer_model()
    first_differs = []
    for _ in range(2):  # the heuristic start, then the warm start
        x, y = batch
        state = model.start(x, y, generator=torch.Generator().manual_seed(0))
        for _ in range(model.num_blocks):
            block = model.ops[state.position]
            accepted_steps.clear()
            state, _ = model.advance(state, 1e-5)
            step, tol = block.last_step
            assert tol == 1e-5 and step == pytest.approx(accepted_steps[-1], rel=1e-6)
            first_differs.append(accepted_steps[0] != pytest.approx(accepted_steps[-1], rel=1e-6))
    assert sum(first_differs) >= 3  # the solves take steps of different sizes: first and last tell apart


def test_a_solve_at_a_new_tolerance_starts_from_the_rescaled_step(batch, monkeypatch):
    given: list[float | None] = []
    solve = flows.cnf_block.solve

    def spy(*args, **kwargs):
        given.append(kwargs["first_step"])
        return solve(*args, **kwargs)

    monkeypatch.setattr(flows.cnf_block, "solve", spy)
    model = stiffer_model()
    forward(model, batch, 1e-5)
    assert given == [None] * model.num_blocks  # nothing kept yet: the solver's heuristic
    for old_tol, new_tol in ((1e-5, 1e-4), (1e-4, 1e-5), (1e-5, 1e-5)):
        kept = [b.last_step for b in model.blocks]
        assert all(at_tol == old_tol for _, at_tol in kept)
        given.clear()
        forward(model, batch, new_tol)
        ends = [float(b.end_time) for b in model.blocks]
        expected = [min(step * (new_tol / old_tol) ** (1 / 5), end)  # dopri5's error estimate: order 5
                    for (step, _), end in zip(kept, ends, strict=True)]
        assert given == pytest.approx(expected, rel=1e-9)
        if new_tol != old_tol:  # the rescaling shows: some first step is neither the kept step nor the cap
            assert any(g != pytest.approx(step, rel=0.1) and g < end
                       for g, (step, _), end in zip(given, kept, ends, strict=True))


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
    make = lambda: gym.make(DIGITS_ID, **TINY, warm_start=True)  # noqa: E731
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
                *env_kwargs({**TINY, "warm_start": True})]

    fixed.main(cli(tmp_path / "straight", 4))
    fixed.main(cli(tmp_path / "split", 2))
    fixed.main(["--resume", str(tmp_path / "split"), "--iterations", "4", "--no-progress"])
    lines = [[{k: v for k, v in json.loads(line).items() if k != "wall_time"}
              for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
             for name in ("straight", "split")]
    assert lines[0] == lines[1]
    assert lines[0][1]["nfe_forward"] < lines[0][0]["nfe_forward"]  # the warm start at work
