"""Runs on the benchmark tasks: the summary scores the run's own policy on the test pool, and
``agents.evaluate`` scores any finished run next to the best constant and the oracle."""

from __future__ import annotations

import json

import pytest

from agents import evaluate, fixed, reinforce
from infocnf_env import ODETaskEnv

ODE_KWARGS = ["families=('vdp', 'lorenz')", "segments=2", "train_pool_size=2", "test_pool_size=2",
              "reference_tol=1e-9"]
FROZEN_KWARGS = ["hidden=4", "train_iterations=3", "train_pool_size=2", "test_pool_size=2", "batch_size=8"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("benchmark-cache"))


def _fixed(tmp_path, cache: str, env: str, kwargs: list[str], tol: float, name: str) -> dict:
    return fixed.main(["--env", env, "--tol", str(tol), "--iterations", "2", "--out", str(tmp_path / name),
                       "--no-progress", "--no-tensorboard", "--env-kwargs", *kwargs, f"cache={cache!r}"])


def test_the_summary_scores_the_runs_own_policy_on_the_test_pool(tmp_path, cache) -> None:
    loose = _fixed(tmp_path, cache, "ODE-Mixed-v0", ODE_KWARGS, 1e-3, "loose")
    tight = _fixed(tmp_path, cache, "ODE-Mixed-v0", ODE_KWARGS, 1e-8, "tight")
    env = ODETaskEnv(families=("vdp", "lorenz"), segments=2, train_pool_size=2, test_pool_size=2,
                     reference_tol=1e-9, cache=cache)
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
