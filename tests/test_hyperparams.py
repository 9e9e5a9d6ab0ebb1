"""agents/hyperparams/benchmark.json and the tune study that chooses its entries."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest

from agents.registry import agent_flags, default_flags
from agents.sb3 import algo_class, default_algo_kwargs
from runs.studies.tune import GRID, STUDY, base_flags, candidate_flags
from runs.studies.tune_cnf import CONFIG as CNF_CONFIG

RESULTS = Path(__file__).resolve().parents[1] / "runs" / "results"


@pytest.mark.parametrize("agent", list(GRID))
def test_the_default_candidate_is_the_committed_default_run(agent):
    grid = GRID[agent]
    assert grid["default"] in grid["values"]
    # the same flags, so the same cached run as the leaderboard's on a task without its own entry
    assert candidate_flags(agent, grid["flag"], grid["default"], grid["default"]) == default_flags(agent)
    other = next(v for v in grid["values"] if v != grid["default"])
    flags = candidate_flags(agent, grid["flag"], other, grid["default"])
    assert flags.count(grid["flag"]) == 1 and float(flags[flags.index(grid["flag"]) + 1]) == other


def test_the_grid_default_is_what_the_default_flags_give():
    # REINFORCE's default flags set the gate lr; the SB3 agents' leave SB3's own (or agents.sb3's) value
    flags = default_flags("reinforce")
    assert float(flags[flags.index("--gate-lr") + 1]) == GRID["reinforce"]["default"]
    for agent in ("ppo", "a2c", "sac", "td3"):
        assert "--policy-lr" not in default_flags(agent)
    assert default_algo_kwargs("ppo", 4)["learning_rate"] == GRID["ppo"]["default"]
    for agent in ("a2c", "sac", "td3"):
        own = inspect.signature(algo_class(agent).__init__).parameters["learning_rate"].default
        assert own == GRID[agent]["default"], agent


@pytest.mark.parametrize("blocks", [1, 2, 4])
def test_the_sized_defaults_update_on_whole_groups_of_episodes(blocks):
    """agents.sb3's defaults for episodes of ``blocks`` steps: PPO's rollout holds 16 episodes
    (and at least 8 steps) in one minibatch, A2C's 4 episodes; SAC and TD3 learn after 4
    episodes, on every step."""
    ppo = default_algo_kwargs("ppo", blocks)
    assert ppo["n_steps"] == ppo["batch_size"] == max(8, 16 * blocks)
    assert default_algo_kwargs("a2c", blocks)["n_steps"] == 4 * blocks
    for algo in ("sac", "td3"):
        off = default_algo_kwargs(algo, blocks)
        assert off["learning_starts"] == 4 * blocks and off["train_freq"] == 1 and off["gradient_steps"] == 1


@pytest.mark.parametrize("study", ["tune", "tune-cnf"])
def test_committed_flags_are_the_tune_studys_choice(study):
    path = RESULTS / f"{study}.json"
    if not path.exists():
        pytest.skip(f"no committed {study} result")
    result = json.loads(path.read_text())
    assert len(result["seeds"]) == STUDY.seeds  # what `python -m runs.reproduce tune` runs without --seeds
    for task, chosen in result["chosen"].items():
        for agent, choice in chosen.items():
            assert agent_flags(task, agent) == choice["flags"], (task, agent)


def test_the_cnf_tasks_candidates_start_from_its_untuned_flags():
    overrides = CNF_CONFIG["base_overrides"]
    flags = base_flags("reinforce", overrides)
    assert flags[flags.index("--init-mean") + 1] == "-4.0"  # the middle of the task's bounds (-8, 0)
    assert flags.count("--init-mean") == 1 and len(flags) == len(default_flags("reinforce"))
    assert base_flags("ppo", overrides) == default_flags("ppo")
    grid = GRID["reinforce"]
    assert candidate_flags("reinforce", grid["flag"], grid["default"], grid["default"], overrides) == flags


def test_a_leaderboard_task_counts_as_tuned_only_when_every_agent_ran_the_chosen_flags():
    from runs.studies.benchmark import tuned_by

    res = {"tune-cnf": {"chosen": {"T": {"ppo": {"flags": ["--policy-lr", "0.001"]}}}}}

    def board(task, flags):
        return {"config": {"agents": ["ppo"]}, "rows": [{"task": task, "agent": "ppo", **flags},
                                                         {"task": "other", "agent": "ppo"}]}

    assert tuned_by(board("T", {"flags": ["--policy-lr", "0.001"]}), res, "T") == "tune-cnf"
    assert tuned_by(board("T", {"flags": ["--policy-lr", "0.0003"]}), res, "T") is None  # another candidate
    assert tuned_by(board("T", {}), res, "T") is None  # a result that predates the flags
    assert tuned_by(board("T", {"flags": ["--policy-lr", "0.001"]}), res, "other") is None  # not tuned
    assert tuned_by(board("T", {"flags": ["--policy-lr", "0.001"]}), {}, "T") is None  # no tune result
