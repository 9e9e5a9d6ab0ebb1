"""The benchmark study's derived figures (runs/studies/benchmark.py) against their definitions.

The leaderboard of one task is computed by the study's own code on an analytic task
(flowkit.AnalyticTask, registered here as a Gymnasium id) whose every episode is a formula, with
"agents" that are fixed-tolerance run directories written by hand: nothing is trained, and each
figure (best constant, best schedule, oracle, room, gap closed, saving at equal error, the best
agent and the verdicts) is recomputed here from its definition in the study's docstring.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from flowkit import AnalyticTask

from runs.run_cache import Arm, Context
from runs.studies import benchmark as S
from runs.studies import load_config

TASK = "Analytic-Leaderboard-v0"
if TASK not in gym.registry:
    gym.register(TASK, entry_point=AnalyticTask)
TRAIN = (10.0, 0.3, 1.0, 0.3, 0.3, 1.0)
TEST = (0.1, 100.0, 1.0, 0.1, 100.0)
#: Steps alike enough, and episodes different enough, that the oracle beats the best schedule;
#: the pools differ enough that the training pool's best constant and schedule are not the test
#: pool's.
SHAPE = {"costs": (10.0, 20.0), "weights": (1e4, 3e3)}
GRID = [-8.0, -7.0, -6.0, -5.0, -4.0, -3.0, -2.0, -1.0]
#: The hand-written runs: name -> (log10 tolerance of seed 0, of seed 1, first step), and their
#: training rewards (seed 0, seed 1) for the "rising at the end" verdict.
AGENTS = {"steady": ([-4.0, -4.0], None, ([-9, -8, -7, -6, -5], [-9, -8, -7, -6, -5])),
          "loose": ([-2.0, -3.0], None, ([-5, -5, -5, -5, -4], [-5, -5, -5, -4, -5])),
          "tight": ([-6.0, -5.0], None, ([-1, -1, -1, -1, -1], [-1, -1, -1, -1, -1])),
          # the training pool's best constant on both seeds: it ties with that baseline
          "same": ([-3.0, -3.0], None, ([-2, -2, -2, -2, -2], [-2, -2, -2, -2, -2]))}
VARIANT = ("steady-first-step", [-4.0, -4.0], 0.1)
THRESHOLDS = {"gap_fraction": 0.05, "gap_closed": 0.0, "nfe_saving_at_equal_error": 0.1}


def _fixed_run(run_dir: Path, log_tol: float, first_step: float | None, rewards: list[float]) -> None:
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({"agent": "fixed", "env": TASK, "tol": 10.0 ** log_tol,
                                                     "schedule": [], "first_step": first_step}))
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps({"iteration": i + 1, "reward": r}) + "\n"
                                                   for i, r in enumerate(rewards)))


@pytest.fixture(scope="module")
def board(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The task's leaderboard as ``task_result`` computes it, with the context it ran in."""
    workdir = tmp_path_factory.mktemp("study")
    config = load_config("benchmark", True)
    config.update(tasks={TASK: {"task_kwargs": {"train": TRAIN, "test": TEST, **SHAPE},
                                 "targets": THRESHOLDS}},
                  grid_step=1.0, schedule_grid_step=1.0, schedule_sweeps=1, first_step_grid=[-2.0, -1.0, 0.0],
                  contextual_neighbours=1, agents=list(AGENTS), agent_episodes=5)
    ctx = Context("benchmark", True, (0, 1), 1, 1, workdir, workdir / "out", config, {})
    arms = {}
    for name, (tols, first_step, rewards) in AGENTS.items():
        for seed in ctx.seeds:
            arm = Arm(label=f"hand-{name}", module="fixed", env=TASK, seed=seed, iterations=5)
            _fixed_run(arm.run_dir(ctx.runs_dir), tols[seed], first_step, rewards[seed])
            arms[(TASK, name, seed)] = arm
    name, tols, first_step = VARIANT
    for seed in ctx.seeds:
        arm = Arm(label=f"hand-{name}", module="fixed", env=TASK, seed=seed, iterations=7,
                  env_kwargs=(("action_mode", "tol_first_step"),))
        _fixed_run(arm.run_dir(ctx.runs_dir), tols[seed], first_step, [-3, -2, -1, 0, 1][::1 - 2 * seed])
        arms[(TASK, name, seed)] = arm
    result = S.task_result(ctx, TASK, arms)
    return {"ctx": ctx, "result": result, "rows": {r["agent"]: r for r in result["rows"]},
            "env": AnalyticTask(train=TRAIN, test=TEST, **SHAPE)}


def _mean(env: AnalyticTask, split: str, log_tols: list[float], first_step: float | None = None,
          key: int = 0, episodes: list[int] | None = None) -> float:
    pool = env.pool(split)
    indices = range(len(pool)) if episodes is None else episodes
    return float(np.mean([env.by_hand(pool[e], log_tols, first_step)[key] for e in indices]))


def test_the_baselines_are_their_definitions(board: dict) -> None:
    env, rows, result = board["env"], board["rows"], board["result"]
    n = env.num_blocks
    best = max(GRID, key=lambda t: _mean(env, "train", [t] * n))  # chosen on the training pool
    assert rows["best_constant"]["log10_tol"] == best == result["best_constant_log10_tol"]
    assert rows["best_constant"]["reward_mean"] == pytest.approx(_mean(env, "test", [best] * n))
    assert rows["best_constant"]["nfe_mean"] == pytest.approx(_mean(env, "test", [best] * n, key=1))
    assert rows["best_constant"]["error_mean"] == pytest.approx(_mean(env, "test", [best] * n, key=2))
    assert result["best_constant_reward"] == pytest.approx(_mean(env, "test", [best] * n))
    assert best != max(GRID, key=lambda t: _mean(env, "test", [t] * n))
    schedule = max(itertools.product(GRID, repeat=n), key=lambda s: _mean(env, "train", list(s)))
    assert schedule != max(itertools.product(GRID, repeat=n), key=lambda s: _mean(env, "test", list(s)))
    assert rows["best_schedule"]["schedule"] == list(schedule) == result["best_schedule"]
    assert rows["best_schedule"]["reward_mean"] == pytest.approx(_mean(env, "test", list(schedule)))
    oracle = [max(env.by_hand(d, [t] * n)[0] for t in GRID) for d in env.pool("test")]
    assert rows["oracle"]["reward_mean"] == pytest.approx(np.mean(oracle)) == result["oracle_reward"]
    first = max([-2.0, -1.0, 0.0], key=lambda f: _mean(env, "train", [best] * n, 10.0 ** f))
    assert rows["best_constant_first_step"]["log10_first_step"] == first
    assert rows["best_constant_first_step"]["reward_mean"] == pytest.approx(
        _mean(env, "test", [best] * n, 10.0 ** first))
    pi = AnalyticTask(train=TRAIN, test=TEST, **SHAPE, backend="torchode-pi")
    pi_best = max(GRID, key=lambda t: _mean(pi, "train", [t] * n))
    assert pi_best != max(GRID, key=lambda t: _mean(pi, "test", [t] * n))
    assert rows["pi_controller"]["log10_tol"] == pi_best
    assert rows["pi_controller"]["reward_mean"] == pytest.approx(_mean(pi, "test", [pi_best] * n))
    assert result["front"] == [{"log10_tol": t, "reward": pytest.approx(_mean(env, "test", [t] * n)),
                                "nfe": pytest.approx(_mean(env, "test", [t] * n, key=1)),
                                "error": pytest.approx(_mean(env, "test", [t] * n, key=2))} for t in GRID]
    assert result["pool_sizes"] == {"train": len(TRAIN), "test": len(TEST)}
    assert result["families"] == list(dict.fromkeys("easy" if d < 10 else "hard" for d in TEST))  # as they come
    assert result["segments"] == n


def test_room_and_gap_closed_are_measured_from_the_best_schedule(board: dict) -> None:
    rows, result = board["rows"], board["result"]
    floor, ceiling = rows["best_schedule"]["reward_mean"], rows["oracle"]["reward_mean"]
    constant = rows["best_constant"]["reward_mean"]
    assert floor > constant and ceiling > floor  # the task has room beyond a schedule
    assert result["best_schedule_reward"] == pytest.approx(floor)
    assert result["gap_fraction"] == pytest.approx((ceiling - floor) / abs(floor))
    assert result["gap_fraction_vs_constant"] == pytest.approx((ceiling - constant) / abs(constant))
    for name, row in rows.items():
        if name == "oracle":
            assert row["gap_closed"] == 1.0 and row["gap_closed_vs_constant"] is None
            continue
        assert row["gap_closed"] == pytest.approx((row["reward_mean"] - floor) / (ceiling - floor)), name
        assert row["gap_closed_vs_constant"] == pytest.approx(
            (row["reward_mean"] - constant) / (ceiling - constant)), name
    assert rows["best_schedule"]["gap_closed"] == pytest.approx(0.0)


def test_the_saving_is_against_the_cheapest_constant_as_accurate(board: dict) -> None:
    env, rows = board["env"], board["rows"]
    n = env.num_blocks
    errors = {t: _mean(env, "test", [t] * n, key=2) for t in GRID}
    costs = {t: _mean(env, "test", [t] * n, key=1) for t in GRID}
    for name, row in rows.items():
        accurate = [costs[t] for t in GRID if errors[t] <= row["error_mean"] * (1 + 1e-12)]
        expected = 1 - row["nfe_mean"] / min(accurate) if accurate else None
        assert row["nfe_saving_at_equal_error"] == (pytest.approx(expected) if accurate else None), name


def test_agent_rows_are_their_runs_policies_over_seeds(board: dict) -> None:
    env, rows = board["env"], board["rows"]
    n = env.num_blocks
    for name, (tols, _, rewards) in AGENTS.items():
        row = rows[name]
        per_seed = [_mean(env, "test", [t] * n) for t in tols]
        assert row["reward_mean"] == pytest.approx(np.mean(per_seed))
        assert row["reward_std"] == pytest.approx(np.std(per_seed, ddof=1))
        assert row["nfe_mean"] == pytest.approx(np.mean([_mean(env, "test", [t] * n, key=1) for t in tols]))
        assert [s["reward"] for s in row["per_seed"]] == pytest.approx(per_seed)
        assert row["seeds"] == [0, 1] and row["episodes"] == 5 and row["action_mode"] == "tol"
        fifths = [[float(r) for r in rs] for rs in rewards]
        assert row["train_reward_fifths"] == fifths
        assert row["rising_at_end"] == all(f[-1] > f[-2] for f in fifths)
        for family in ("easy", "hard"):
            episodes = [e for e, d in enumerate(env.pool("test")) if (d < 10) == (family == "easy")]
            assert row["per_family"][family]["reward"] == pytest.approx(
                np.mean([_mean(env, "test", [t] * n, episodes=episodes) for t in tols]))
    variant = rows[VARIANT[0]]
    first = AnalyticTask(train=TRAIN, test=TEST, **SHAPE, action_mode="tol_first_step")
    assert variant["action_mode"] == "tol_first_step" and variant["episodes"] == 7
    assert variant["reward_mean"] == pytest.approx(_mean(first, "test", [-4.0] * n, VARIANT[2]))
    assert not variant["rising_at_end"]  # seed 1's rewards fall at the end
    best = board["result"]["best_constant_per_family"]
    best_tol = rows["best_constant"]["log10_tol"]
    for family, figures in best.items():
        episodes = [e for e, d in enumerate(env.pool("test")) if (d < 10) == (family == "easy")]
        assert figures["reward"] == pytest.approx(_mean(env, "test", [best_tol] * n, episodes=episodes))


def test_the_verdict_takes_the_best_agent_by_mean_test_reward(board: dict) -> None:
    result, rows = board["result"], board["rows"]
    verdict = S.task_verdict(result, list(AGENTS), THRESHOLDS)
    best = max(AGENTS, key=lambda a: rows[a]["reward_mean"])
    assert verdict["best_agent"] == best != "loose"
    assert verdict["best_gap_closed"] == rows[best]["gap_closed"]
    assert verdict["best_nfe_saving_at_equal_error"] == rows[best]["nfe_saving_at_equal_error"]
    assert verdict["gap_met"] == (result["gap_fraction"] >= THRESHOLDS["gap_fraction"])
    assert verdict["gap_closed_met"] == (rows[best]["gap_closed"] >= THRESHOLDS["gap_closed"])
    assert verdict["best_no_worse_on_every_family"] == all(
        rows[best]["per_family"][f]["reward"] >= result["best_constant_per_family"][f]["reward"]
        for f in ("easy", "hard"))
    constant = result["best_constant_reward"]
    assert rows["same"]["reward_mean"] == constant and "same" not in verdict["agents_beating_best_constant"]
    assert verdict["agents_beating_best_constant"] == [a for a in AGENTS if rows[a]["reward_mean"] > constant]
    assert verdict["agents_rising_at_end"] == [a for a in AGENTS if rows[a]["rising_at_end"]] == ["steady"]
    assert [v["agent"] for v in verdict["variants"]] == [VARIANT[0]]  # reported apart, never the best agent
    assert verdict["variants"][0]["beats_best_constant"] == (rows[VARIANT[0]]["reward_mean"] > constant)


def _synthetic(agents: dict[str, tuple[float, float | None, dict[str, float]]], gap_fraction: float) -> dict:
    """A task result of agents (mean reward, gap closed, per-family rewards), best constant -10 per family."""
    rows = [{"agent": "best_constant", "reward_mean": -10.0, "gap_closed": -0.5},
            {"agent": "oracle", "reward_mean": 0.0, "gap_closed": 1.0}]
    rows += [{"agent": name, "reward_mean": reward, "gap_closed": gap, "nfe_saving_at_equal_error": 0.3,
              "rising_at_end": False, "per_family": {f: {"reward": r} for f, r in fam.items()}}
             for name, (reward, gap, fam) in agents.items()]
    return {"task": "T", "gap_fraction": gap_fraction, "best_constant_reward": -10.0, "rows": rows,
            "best_constant_per_family": {"a": {"reward": -10.0}, "b": {"reward": -10.0}}}


def test_the_verdicts_thresholds_are_inclusive_and_a_missing_gap_is_not_met() -> None:
    targets = {"gap_fraction": 0.2, "gap_closed": 0.5, "nfe_saving_at_equal_error": 0.2}
    result = _synthetic({"x": (-8.0, 0.5, {"a": -10.0, "b": -6.0}), "y": (-9.0, 0.9, {"a": -11.0, "b": -7.0})}, 0.2)
    verdict = S.task_verdict(result, ["x", "y"], targets)
    assert verdict["best_agent"] == "x"  # by reward, not by gap closed
    assert verdict["gap_met"] and verdict["gap_closed_met"] and verdict["best_no_worse_on_every_family"]
    assert verdict["agents_beating_best_constant"] == ["x", "y"]
    worse = _synthetic({"x": (-8.0, None, {"a": -10.5, "b": -6.0})}, 0.19)
    verdict = S.task_verdict(worse, ["x"], targets)
    assert not verdict["gap_met"] and not verdict["gap_closed_met"]
    assert verdict["best_no_worse_on_every_family"] is False
    assert S.task_verdict(worse, [], targets)["best_agent"] is None


def test_training_fifths_are_the_mean_reward_of_each_fifth(tmp_path: Path) -> None:
    _fixed_run(tmp_path / "a", -3.0, None, list(range(10)))
    assert S.training_fifths(tmp_path / "a") == [0.5, 2.5, 4.5, 6.5, 8.5]
    _fixed_run(tmp_path / "b", -3.0, None, [1.0, 3.0, 8.0])
    assert S.training_fifths(tmp_path / "b") == [1.0, 3.0, 8.0]


def test_variant_rows_are_named_by_what_differs() -> None:
    assert S.variant_name({"agent": "sac", "episodes": 2000}) == "sac-2000"
    assert S.variant_name({"agent": "ppo", "action_mode": "tol_first_step"}) == "ppo-first-step"
    assert S.variant_name({"agent": "a2c", "action_mode": "tol"}) == "a2c"


def test_agent_arms_carry_the_committed_flags_and_the_tasks_settings(tmp_path: Path) -> None:
    ctx = Context("benchmark", True, (0,), 1, 1, tmp_path, tmp_path / "out", load_config("benchmark", True), {})
    kwargs = {"families": ["vdp"], "segments": 2}
    arm = S.agent_arm(ctx, "ODE-Mixed-v0", kwargs, "ppo", 1)
    assert arm.module == "sb3" and arm.seed == 1 and arm.iterations == ctx.config["agent_episodes"]
    assert list(arm.agent_args) == S.agent_flags("ODE-Mixed-v0", "ppo")
    env_kwargs = dict(arm.env_kwargs)
    assert env_kwargs["families"] == ("vdp",) and env_kwargs["cache"] == str(tmp_path / "task-cache")
    longer = S.agent_arm(ctx, "ODE-Mixed-v0", kwargs, "ppo", 1, episodes=9, action_mode="tol_first_step")
    assert longer.iterations == 9 and dict(longer.env_kwargs)["action_mode"] == "tol_first_step"
    assert longer.key != arm.key and S.agent_arm(ctx, "ODE-Mixed-v0", kwargs, "ppo", 1).key == arm.key
    assert S.agent_arm(ctx, "ODE-Mixed-v0", kwargs, "reinforce", 0).module == "reinforce"


# ---------------------------------------------------------------------------- the tune study
def test_tune_chooses_each_agents_candidate_by_its_training_pool_reward(tmp_path: Path) -> None:
    """Every candidate's runs are fixed-tolerance run directories written by hand, where the
    study looks for its cached runs; the choice is recomputed from the training pool."""
    from runs.studies import tune as T

    grid = {"reinforce": {**T.GRID["reinforce"], "values": [1e-3, 3e-3, 1e-2]},
            "ppo": {**T.GRID["ppo"], "values": [1e-4, 3e-4]}}
    config = load_config("tune", True)
    config.update(task=TASK, task_kwargs={"train": TRAIN, "test": TEST, **SHAPE}, agents=list(grid),
                  grid=grid, agent_episodes=3)
    ctx = Context("tune", True, (0, 1), 1, 1, tmp_path, tmp_path / "out", config, {})
    env = AnalyticTask(train=TRAIN, test=TEST, **SHAPE)
    # candidate k of an agent plays log10 tol -7 + 2k (seed 0) and -6 + 2k (seed 1)
    tols = {(agent, value, seed): -7.0 + 2 * k + seed
            for agent in grid for k, value in enumerate(grid[agent]["values"]) for seed in ctx.seeds}
    for (agent, value, seed), log_tol in tols.items():
        flags = T.candidate_flags(agent, grid[agent]["flag"], value, grid[agent]["default"])
        run_dir = S.agent_arm(ctx, TASK, config["task_kwargs"], agent, seed, flags).run_dir(ctx.runs_dir)
        _fixed_run(run_dir, log_tol, None, [-1.0])
        (run_dir / "summary.json").write_text(json.dumps({"iterations": 3}))
    result = T.run(ctx)
    rows = {(r["agent"], r["value"]): r for r in result["rows"]}
    assert len(rows) == 5
    for agent in grid:
        means = {}
        for value in grid[agent]["values"]:
            scores = [_mean(env, "train", [tols[(agent, value, s)]] * 2) for s in ctx.seeds]
            row = rows[(agent, value)]
            assert row["per_seed"] == pytest.approx(scores) and row["seeds"] == [0, 1]
            assert row["train_reward_mean"] == pytest.approx(np.mean(scores))
            assert row["train_reward_std"] == pytest.approx(np.std(scores, ddof=1))
            assert row["is_default"] == (value == grid[agent]["default"])
            means[value] = np.mean(scores)
        best = max(means, key=means.get)
        assert [v for v in grid[agent]["values"] if rows[(agent, v)]["chosen"]] == [best]
        assert result["chosen"][TASK][agent] == {"value": best, "flags": rows[(agent, best)]["flags"]}
    flags = rows[("reinforce", 1e-2)]["flags"]
    assert flags.count("--gate-lr") == 1 and flags[flags.index("--gate-lr") + 1] == "0.01"
    assert rows[("ppo", 1e-4)]["flags"][-2:] == ["--policy-lr", "0.0001"]
    assert rows[("reinforce", 3e-3)]["flags"] == S.default_flags("reinforce")  # the leaderboard's own run


# ---------------------------------------------------------------------------- the whole study
def _summary(iterations: int, nfe: float, bits: float) -> dict:
    """A finished digits run's ``summary.json`` with the figures the study reads."""
    return {"iterations": iterations, "train_nfe_mean": nfe, "train_nfe_forward_mean": nfe / 2,
            "train_nfe_backward_mean": nfe / 2, "train_nfe_reference_mean": 0.1 * nfe, "wall_s": 1.0,
            "mean_log10_tol_last": -3.0, "solver_failures": 0,
            "test": {"bits_per_dim": bits, "marginal_bits_per_dim": bits, "nfe": nfe}}


@pytest.mark.parametrize("bits, met", [(1.95, False), (2.01, True), (2.05, False)])
def test_the_study_gathers_its_tasks_and_the_co_training_verdict(tmp_path: Path, bits: float, met: bool) -> None:
    """``run`` over hand-written runs: the leaderboard agents' (fixed-tolerance directories where
    the study looks for its REINFORCE and PPO runs) and the co-training runs' (summaries of
    digits runs, fixed 1e-5 at 100 NFE and 2.0 bits/dim, REINFORCE at 40 NFE and ``bits``)."""
    from runs.matrix import digits_regimes

    config = load_config("benchmark", True)
    kwargs = {"train": TRAIN, "test": TEST, **SHAPE}
    config.update(tasks={TASK: {"task_kwargs": kwargs, "targets": THRESHOLDS}}, agents=["reinforce", "ppo"],
                  variants={}, grid_step=1.0, schedule_grid_step=1.0, first_step_grid=[-1.0], contextual_neighbours=1,
                  agent_episodes=2, cotrain_targets={"nfe_ratio": 0.45, "bpd_tol": 0.01})
    ctx = Context("benchmark", True, (0, 1), 1, 1, tmp_path, tmp_path / "out", config, digits_regimes(True))
    for agent, log_tol in (("reinforce", -4.0), ("ppo", -3.0)):
        for seed in ctx.seeds:
            run_dir = S.agent_arm(ctx, TASK, kwargs, agent, seed).run_dir(ctx.runs_dir)
            _fixed_run(run_dir, log_tol, None, [-2.0, -1.0])
            (run_dir / "summary.json").write_text(json.dumps({"iterations": 2}))
    for seed in ctx.seeds:
        for name, nfe, bpd in (("fixed", 100.0, 2.0), ("reinforce", 40.0, bits)):
            arm = S.cotrain_arm(ctx, name, seed)
            run_dir = arm.run_dir(ctx.runs_dir)
            run_dir.mkdir(parents=True)
            (run_dir / "summary.json").write_text(json.dumps(_summary(arm.iterations, nfe, bpd)))
            (run_dir / "metrics.jsonl").write_text("".join(
                json.dumps({"iteration": i + 1, "nfe_forward": 20, "tols": [1e-3, 1e-4], "first_steps": [0.1, 0.1],
                            "loss_gap": -0.01 * (i + 1)}) + "\n" for i in range(arm.iterations)))
    result = S.run(ctx)
    (task,) = result["tasks"]
    assert "rows" not in task and task["task"] == TASK
    assert [r["agent"] for r in result["rows"]][-2:] == ["reinforce", "ppo"]
    verdict = result["targets"]["tasks"][0]
    assert verdict == S.task_verdict({**task, "rows": result["rows"]}, ["reinforce", "ppo"], THRESHOLDS)
    assert verdict["best_agent"] == max(("reinforce", "ppo"), key=lambda a: next(
        r["reward_mean"] for r in result["rows"] if r["agent"] == a))
    (c,) = result["cotrain"]
    assert c["nfe_ratio"] == pytest.approx(0.4) and c["reference_nfe_ratio"] == pytest.approx(0.04)
    assert c["bpd_ratio"] == pytest.approx(bits / 2.0)
    assert c["per_seed"][0]["log10_tol_last"] == pytest.approx(-3.5)
    assert c["per_seed"][0]["abs_loss_gap_last"] == pytest.approx(0.04)  # the last 10% of the 4 iterations
    assert result["targets"]["cotrain"]["met"] is met


def test_a_task_without_room_has_no_gap_to_close(tmp_path: Path) -> None:
    """Identical episodes of identical steps: the oracle, the best constant and the best schedule
    are one tolerance, and there is no gap, not a closed one."""
    config = load_config("benchmark", True)
    flat = {"train": (3.0,) * 3, "test": (3.0,) * 2, "costs": (10.0, 10.0), "weights": (1e4, 1e4)}
    config.update(tasks={TASK: {"task_kwargs": flat, "targets": THRESHOLDS}}, grid_step=1.0, schedule_grid_step=1.0,
                  first_step_grid=[-1.0], contextual_neighbours=1)
    ctx = Context("benchmark", True, (0,), 1, 1, tmp_path, tmp_path / "out", config, {})
    result = S.task_result(ctx, TASK, {})
    rows = {r["agent"]: r for r in result["rows"]}
    assert result["gap_fraction"] == 0.0 and rows["oracle"]["reward_mean"] == rows["best_schedule"]["reward_mean"]
    assert rows["oracle"]["gap_closed"] is None
    assert all(math.isnan(r["gap_closed"]) for name, r in rows.items() if name != "oracle")
