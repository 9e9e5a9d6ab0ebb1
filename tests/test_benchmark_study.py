"""The benchmark study's derived figures (runs/studies/benchmark.py) against their definitions.

The leaderboard of one task is computed by the study's own code on an analytic task
(flowkit.AnalyticTask, registered here as a Gymnasium id) whose every episode is a formula, with
"agents" that are fixed-tolerance run directories written by hand: nothing is trained, and each
figure (every classical setting's best constant, the best classical configuration, best
schedule, oracle, room, gap closed, savings read off a front, the best agent and the verdicts)
is recomputed here from its definition in the study's docstring.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
from flowkit import AnalyticTask

from agents.registry import agent_flags, default_flags
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
KWARGS = {"train": TRAIN, "test": TEST, **SHAPE}
#: The hand-written runs: name -> (log10 tolerance of seed 0, of seed 1, first step), and their
#: training rewards (seed 0, seed 1) for the "rising at the end" verdict.
AGENTS = {"steady": ([-4.0, -4.0], None, ([-9, -8, -7, -6, -5], [-9, -8, -7, -6, -5])),
          "loose": ([-2.0, -3.0], None, ([-5, -5, -5, -5, -4], [-5, -5, -5, -4, -5])),
          "tight": ([-6.0, -5.0], None, ([-1, -1, -1, -1, -1], [-1, -1, -1, -1, -1])),
          # the training pool's best constant on both seeds: it ties with that baseline
          "same": ([-3.0, -3.0], None, ([-2, -2, -2, -2, -2], [-2, -2, -2, -2, -2]))}
#: A hand-written run on the best classical setting's solver (the PI controller of the analytic
#: task) in the first-step mode: (row name, log10 tolerance per seed, first step).
ON_CLASSICAL = ("steady@dopri5-pi+first-step", [-4.0, -4.0], 0.1)
THRESHOLDS = {"gap_fraction": 0.05, "gap_closed": 0.0, "nfe_saving_at_equal_error": 0.1, "vs_classical": 0.0}
#: The study's settings on the analytic task: its own solver, a costlier and a cheaper one.
TASK_CONFIG = {"settings": ["dopri5", "bosh3", "dopri5-pi"], "whole_span": [], "first_step_settings": ["dopri5"],
               "extra_modes": []}


def _fixed_run(run_dir: Path, log_tol: float, first_step: float | None, rewards: list[float]) -> None:
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({"agent": "fixed", "env": TASK, "tol": 10.0 ** log_tol,
                                                     "schedule": [], "first_step": first_step}))
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps({"iteration": i + 1, "reward": r}) + "\n"
                                                   for i, r in enumerate(rewards)))


def _leaderboard(ctx: Context, arms: dict) -> dict:
    """``task_result`` as the study's ``run`` calls it: the tables, the classical choice, the rows."""
    env = S.make_task(ctx, TASK, ctx.config["tasks"][TASK]["task_kwargs"])
    tables = {name: S._table(*job) for name, job in S.table_jobs(ctx, TASK, env).items()}
    return S.task_result(ctx, TASK, arms, tables, S.choose_classical(ctx, TASK, tables))


@pytest.fixture(scope="module")
def board(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The task's leaderboard as ``task_result`` computes it, with the context it ran in."""
    workdir = tmp_path_factory.mktemp("study")
    config = load_config("benchmark", True)
    config.update(tasks={TASK: {"task_kwargs": {"train": TRAIN, "test": TEST, **SHAPE},
                                 "targets": THRESHOLDS, **TASK_CONFIG}},
                  grid_step=1.0, schedule_grid_step=1.0, schedule_sweeps=1, first_step_grid=[-2.0, -1.0, 0.0],
                  contextual_neighbours=1, agents=list(AGENTS), agent_episodes=5)
    ctx = Context("benchmark", True, (0, 1), 1, 1, workdir, workdir / "out", config, {})
    arms = {}
    for name, (tols, first_step, rewards) in AGENTS.items():
        for seed in ctx.seeds:
            arm = Arm(label=f"hand-{name}", module="fixed", env=TASK, seed=seed, iterations=5,
                      env_kwargs=tuple(sorted(KWARGS.items())))  # a run's env is its arm's, as the study's arms
            _fixed_run(arm.run_dir(ctx.runs_dir), tols[seed], first_step, rewards[seed])
            arms[(TASK, name, seed)] = arm
    name, tols, first_step = ON_CLASSICAL
    for seed in ctx.seeds:
        arm = Arm(label="hand-steady-pi", module="fixed", env=TASK, seed=seed, iterations=7,
                  env_kwargs=tuple(sorted({**KWARGS, "action_mode": "tol_first_step",
                                           "backend": "torchode-pi"}.items())))
        _fixed_run(arm.run_dir(ctx.runs_dir), tols[seed], first_step, [-3, -2, -1, 0, 1][::1 - 2 * seed])
        arms[(TASK, name, seed)] = arm
    result = _leaderboard(ctx, arms)
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
    trains = {}
    solvers = (("dopri5", {}), ("bosh3", {"method": "bosh3"}), ("dopri5-pi", {"backend": "torchode-pi"}))
    for setting, overrides in solvers:
        solver = AnalyticTask(train=TRAIN, test=TEST, **SHAPE, **overrides)
        chosen = max(GRID, key=lambda t: _mean(solver, "train", [t] * n))  # noqa: B023
        row = rows[f"classical:{setting}"]
        assert row["log10_tol"] == chosen and row["setting"] == setting
        assert row["reward_mean"] == pytest.approx(_mean(solver, "test", [chosen] * n))
        trains[f"classical:{setting}"] = _mean(solver, "train", [chosen] * n)
        (entry,) = [e for e in result["settings"] if e["setting"] == setting]  # the settings table's line
        assert entry["log10_tol"] == chosen
        for key, split, column in (("train_reward", "train", 0), ("test_reward", "test", 0), ("nfe", "test", 1),
                                   ("error", "test", 2)):
            assert entry[key] == pytest.approx(_mean(solver, split, [chosen] * n, key=column)), (setting, key)
        assert entry["oracle_reward"] == pytest.approx(
            np.mean([max(solver.by_hand(d, [t] * n)[0] for t in GRID) for d in solver.pool("test")]))
    trains["classical:dopri5+first-step"] = _mean(env, "train", [best] * n, 10.0 ** first)
    classical = max(trains, key=trains.get)  # the best classical configuration, chosen on the training pool
    assert result["best_classical"] == classical == rows["best_classical"]["row"] == "classical:dopri5-pi"
    assert rows["best_classical"]["reward_mean"] == rows[classical]["reward_mean"] == result["best_classical_reward"]
    for name, row in rows.items():
        reference = result["best_classical_reward"]
        assert row["vs_classical"] == pytest.approx((row["reward_mean"] - reference) / abs(reference)), name
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


def _front_reading(costs: list[float], errors: list[float], target: float) -> float | None:
    """NFE of a front at ``target`` error: log-log interpolation between neighbouring grid points,
    the cheapest reading; the cheapest accurate point above every error; None below them."""
    if target < min(errors):
        return None
    readings = []
    for (n0, e0), (n1, e1) in itertools.pairwise(zip(costs, errors, strict=True)):
        if min(e0, e1) <= target <= max(e0, e1) and e0 != e1:
            readings.append(n0 * (n1 / n0) ** (math.log(target / e0) / math.log(e1 / e0)))
    return min(readings) if readings else min(c for c, e in zip(costs, errors, strict=True) if e <= target)


def test_savings_are_read_off_each_front_at_equal_error(board: dict) -> None:
    env, rows = board["env"], board["rows"]
    n = env.num_blocks
    pi = AnalyticTask(train=TRAIN, test=TEST, **SHAPE, backend="torchode-pi")
    for name, row in rows.items():
        if row["savings"] is None:  # the oracle rows
            continue
        assert set(row["savings"]) == {"dopri5", "dopri5-pi"}  # the own solver's front, the best classical one
        for front, solver in (("dopri5", env), ("dopri5-pi", pi)):
            costs = [_mean(solver, "test", [t] * n, key=1) for t in GRID]
            errors = [_mean(solver, "test", [t] * n, key=2) for t in GRID]
            at = _front_reading(costs, errors, row["error_mean"])
            got = row["savings"][front]["mean"]
            assert got == (None if at is None else pytest.approx(1 - row["nfe_mean"] / at)), (name, front)
        if name == "best_constant":  # on its own front at its own error: no saving
            assert row["savings"]["dopri5"]["mean"] == pytest.approx(0.0, abs=1e-12)
            assert row["nfe_saving_at_equal_error"] == pytest.approx(0.0, abs=1e-12)


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
        errors = [env.by_hand(d, [t] * n)[2] for t in tols for d in env.pool("test")]  # both seeds' episodes
        assert np.median(errors) != pytest.approx(np.mean(errors))
        assert row["error_median"] == pytest.approx(np.median(errors))
        assert row["seeds"] == [0, 1] and row["episodes"] == 5 and row["action_mode"] == "tol"
        fifths = [[float(r) for r in rs] for rs in rewards]
        assert row["train_reward_fifths"] == fifths
        assert row["rising_at_end"] == all(f[-1] > f[-2] for f in fifths)
        for family in ("easy", "hard"):
            episodes = [e for e, d in enumerate(env.pool("test")) if (d < 10) == (family == "easy")]
            assert row["per_family"][family]["reward"] == pytest.approx(
                np.mean([_mean(env, "test", [t] * n, episodes=episodes) for t in tols]))
    on = rows[ON_CLASSICAL[0]]
    first = AnalyticTask(train=TRAIN, test=TEST, **SHAPE, action_mode="tol_first_step", backend="torchode-pi")
    assert on["action_mode"] == "tol_first_step" and on["episodes"] == 7 and on["solver"] == {"backend": "torchode-pi"}
    assert on["reward_mean"] == pytest.approx(_mean(first, "test", [-4.0] * n, ON_CLASSICAL[2]))
    assert not on["rising_at_end"]  # seed 1's rewards fall at the end
    best = board["result"]["best_constant_per_family"]
    best_tol = rows["best_constant"]["log10_tol"]
    for family, figures in best.items():
        episodes = [e for e, d in enumerate(env.pool("test")) if (d < 10) == (family == "easy")]
        assert figures["reward"] == pytest.approx(_mean(env, "test", [best_tol] * n, episodes=episodes))


def test_the_verdict_takes_the_best_agent_by_mean_test_reward(board: dict) -> None:
    result, rows = board["result"], board["rows"]
    verdict = S.task_verdict(result, list(AGENTS), THRESHOLDS)
    names = [*AGENTS, ON_CLASSICAL[0]]  # every agent row, on any solver
    best = max(names, key=lambda a: rows[a]["reward_mean"])
    assert verdict["best_agent"] == best != "loose"
    assert verdict["best_on_classical"] == ON_CLASSICAL[0]
    assert verdict["best_on_classical_vs_classical"] == rows[ON_CLASSICAL[0]]["vs_classical"]
    assert verdict["best_vs_classical"] == rows[best]["vs_classical"]
    assert verdict["vs_classical_met"] == (rows[best]["vs_classical"] >= THRESHOLDS["vs_classical"])
    assert verdict["best_gap_closed"] == rows[best]["gap_closed"]
    assert verdict["best_nfe_saving_at_equal_error"] == rows[best]["nfe_saving_at_equal_error"]
    assert verdict["gap_met"] == (result["gap_fraction"] >= THRESHOLDS["gap_fraction"])
    assert verdict["gap_closed_met"] == (rows[best]["gap_closed"] >= THRESHOLDS["gap_closed"])
    assert verdict["best_no_worse_on_every_family"] == all(
        rows[best]["per_family"][f]["reward"] >= result["best_constant_per_family"][f]["reward"]
        for f in ("easy", "hard"))
    assert verdict["nfe_saving_vs_classical_met"] is None  # no such target on this task
    assert verdict["ood_no_worse_on_every_family"] is None  # no out-of-range pool
    constant, classical = result["best_constant_reward"], result["best_classical_reward"]
    assert rows["same"]["reward_mean"] == constant and "same" not in verdict["agents_beating_best_constant"]
    assert verdict["agents_beating_best_constant"] == [a for a in names if rows[a]["reward_mean"] > constant]
    assert verdict["agents_beating_best_classical"] == [a for a in names if rows[a]["reward_mean"] > classical]
    assert verdict["agents_rising_at_end"] == [a for a in names if rows[a]["rising_at_end"]] == ["steady"]


def _synthetic(agents: dict[str, tuple[float, float | None, dict[str, float]]], gap_fraction: float) -> dict:
    """A task result of agents (mean reward, gap closed, per-family rewards), best constant -10 per
    family, best classical -9 (and -12 per family on the out-of-range pool, where an agent scores
    its test reward minus one)."""
    rows: list[dict] = [{"agent": "best_constant", "split": "test", "reward_mean": -10.0, "gap_closed": -0.5},
                        {"agent": "oracle", "split": "test", "reward_mean": 0.0, "gap_closed": 1.0}]
    for split, shift in (("test", 0.0), ("ood", -1.0)):
        rows += [{"agent": name, "split": split, "reward_mean": reward + shift, "gap_closed": gap,
                  "vs_classical": (reward + shift + 9.0) / 9.0, "nfe_saving_at_equal_error": 0.3,
                  "savings": {"dopri5-pi": {"median": 0.25}}, "rising_at_end": False,
                  "per_family": {f: {"reward": r + shift} for f, r in fam.items()}}
                 for name, (reward, gap, fam) in agents.items()]
    return {"task": "T", "gap_fraction": gap_fraction, "best_constant_reward": -10.0, "rows": rows,
            "best_constant_per_family": {"a": {"reward": -10.0}, "b": {"reward": -10.0}},
            "best_classical": "classical:dopri5-pi", "best_classical_setting": "dopri5-pi",
            "best_classical_reward": -9.0,
            "best_classical_per_family": {"test": {"a": {"reward": -9.0}, "b": {"reward": -9.0}},
                                          "ood": {"a": {"reward": -12.0}, "b": {"reward": -7.5}}}}


def test_the_verdicts_thresholds_are_inclusive_and_a_missing_gap_is_not_met() -> None:
    targets = {"gap_fraction": 0.2, "gap_closed": 0.5, "nfe_saving_at_equal_error": 0.2, "vs_classical": 1 / 9,
               "nfe_saving_vs_classical_median": 0.25}
    result = _synthetic({"x": (-8.0, 0.5, {"a": -10.0, "b": -6.0}), "y": (-9.0, 0.9, {"a": -11.0, "b": -7.0})}, 0.2)
    verdict = S.task_verdict(result, ["x", "y"], targets)
    assert verdict["best_agent"] == "x"  # by reward, not by gap closed
    assert verdict["gap_met"] and verdict["gap_closed_met"] and verdict["best_no_worse_on_every_family"]
    assert verdict["vs_classical_met"] and verdict["nfe_saving_vs_classical_met"]  # both exactly at the target
    assert verdict["agents_beating_best_constant"] == ["x", "y"] and verdict["agents_beating_best_classical"] == ["x"]
    # out of range, x scores -11 on a (the best classical -12) and -7 on b (-7.5): no worse on either
    assert verdict["ood_no_worse_per_family"] == {"a": True, "b": True} and verdict["ood_no_worse_on_every_family"]
    worse = _synthetic({"x": (-8.0, None, {"a": -10.5, "b": -6.0})}, 0.19)
    worse["best_classical_per_family"]["ood"]["a"]["reward"] = -11.0
    verdict = S.task_verdict(worse, ["x"], targets)
    assert not verdict["gap_met"] and not verdict["gap_closed_met"]
    assert verdict["best_no_worse_on_every_family"] is False
    assert verdict["ood_no_worse_per_family"] == {"a": False, "b": True}
    assert verdict["ood_no_worse_on_every_family"] is False
    assert S.task_verdict(worse, [], targets)["best_agent"] is None


def test_training_fifths_are_the_mean_reward_of_each_fifth(tmp_path: Path) -> None:
    _fixed_run(tmp_path / "a", -3.0, None, list(range(10)))
    assert S.training_fifths(tmp_path / "a") == [0.5, 2.5, 4.5, 6.5, 8.5]
    _fixed_run(tmp_path / "b", -3.0, None, [1.0, 3.0, 8.0])
    assert S.training_fifths(tmp_path / "b") == [1.0, 3.0, 8.0]


def test_agents_act_on_the_own_solver_and_on_the_best_classical_setting_in_each_mode() -> None:
    config = load_config("benchmark", False)
    ctx = SimpleNamespace(config={**config, "agents": ["ppo", "a2c"], "extra_mode_agents": ["ppo"]})
    ode = {"agent_setting": "scipy-DOP853", "agent_mode": "tol"}
    assert S.agent_sets(ctx, "ODE-Mixed-v0", ode) == [  # type: ignore[arg-type]
        ("", None, None, ["ppo", "a2c"]), ("@scipy-DOP853", "scipy-DOP853", "tol", ["ppo", "a2c"]),
        ("@scipy-DOP853+method", "scipy-DOP853", "tol_method", ["ppo"])]
    cnf = {"agent_setting": "dopri5-pi", "agent_mode": "tol_first_step"}  # the extra mode is the best's own
    assert S.agent_sets(ctx, "CNF-Frozen-Mixed-v0", cnf) == [  # type: ignore[arg-type]
        ("", None, None, ["ppo", "a2c"]), ("@dopri5-pi+first-step", "dopri5-pi", "tol_first_step", ["ppo", "a2c"])]
    own = {"agent_setting": "dopri5", "agent_mode": "tol"}  # the own solver is the best: no second set
    assert [s[0] for s in S.agent_sets(ctx, "CNF-Frozen-Mixed-v0", own)] == ["", "@dopri5+first-step"]  # type: ignore[arg-type]
    env = SimpleNamespace(num_blocks=4, reward_config=SimpleNamespace(alpha=2.0))
    task = config["tasks"]["ODE-Mixed-v0"]
    assert S.setting_overrides(task, "scipy-DOP853-whole", env) == {  # one solve, the task's price per NFE
        "backend": "scipy", "method": "DOP853", "segments": 1, "alpha": 0.5}
    assert S.setting_overrides(task, "dopri5-pi+first-step", env) == {
        "backend": "torchode-pi", "method": "dopri5", "action_mode": "tol_first_step"}


def test_agent_arms_carry_the_committed_flags_and_the_tasks_settings(tmp_path: Path) -> None:
    ctx = Context("benchmark", True, (0,), 1, 1, tmp_path, tmp_path / "out", load_config("benchmark", True), {})
    kwargs = {"families": ["vdp"], "segments": 2}
    arm = S.agent_arm(ctx, "ODE-Mixed-v0", kwargs, "ppo", 1)
    assert arm.module == "sb3" and arm.seed == 1 and arm.iterations == ctx.config["agent_episodes"]
    assert list(arm.agent_args) == agent_flags("ODE-Mixed-v0", "ppo")
    env_kwargs = dict(arm.env_kwargs)
    assert env_kwargs["families"] == ("vdp",) and env_kwargs["cache"] == str(tmp_path / "task-cache")
    longer = S.agent_arm(ctx, "ODE-Mixed-v0", kwargs, "ppo", 1, episodes=9, action_mode="tol_first_step")
    assert longer.iterations == 9 and dict(longer.env_kwargs)["action_mode"] == "tol_first_step"
    assert longer.key != arm.key and S.agent_arm(ctx, "ODE-Mixed-v0", kwargs, "ppo", 1).key == arm.key
    assert S.agent_arm(ctx, "ODE-Mixed-v0", kwargs, "reinforce", 0).module == "reinforce"


def test_an_agent_arms_key_follows_what_decides_the_task_beyond_its_argv(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A frozen flow's training budget and an ODE family's definition live in the registered
    config and the code, not in the run's argv: a change to either must give a new run."""
    import dataclasses

    import infocnf_env
    from flows import ivp

    ctx = Context("benchmark", False, (0,), 1, 1, tmp_path, tmp_path / "out", load_config("benchmark", False), {})
    frozen = S.agent_arm(ctx, "CNF-Frozen-Mixed-v0", {}, "ppo", 0)
    ode = S.agent_arm(ctx, "ODE-Mixed-v0", {"families": ["vdp"]}, "ppo", 0)
    config = infocnf_env.FROZEN_IDS["CNF-Frozen-Mixed-v0"]
    monkeypatch.setitem(infocnf_env.FROZEN_IDS, "CNF-Frozen-Mixed-v0",
                        config.replace(train_iterations=config.train_iterations // 2))
    shorter = S.agent_arm(ctx, "CNF-Frozen-Mixed-v0", {}, "ppo", 0)
    assert shorter.argv(tmp_path) == frozen.argv(tmp_path) and shorter.key != frozen.key
    monkeypatch.setitem(ivp.FAMILIES, "vdp", dataclasses.replace(ivp.FAMILIES["vdp"], t_end=3.0))
    redefined = S.agent_arm(ctx, "ODE-Mixed-v0", {"families": ["vdp"]}, "ppo", 0)
    assert redefined.argv(tmp_path) == ode.argv(tmp_path) and redefined.key != ode.key


def test_every_field_of_an_arm_but_its_label_goes_into_its_cache_key() -> None:
    """runs.run_cache.Arm: ``label`` only names the directory; a run that differs in anything
    else (its evaluation cadence included: it decides what eval.jsonl holds) is another run."""
    import dataclasses

    arm = Arm("x", "fixed", TASK, 0, 10, 0, ("--tol", "1e-5"), (("hidden", 4),), "")
    changes = {"label": "y", "module": "reinforce", "env": "InfoCNF-Digits-v0", "seed": 1, "iterations": 11,
               "eval_every": 5, "agent_args": ("--tol", "1e-4"), "env_kwargs": (("hidden", 8),),
               "task_key": "pool-1"}
    assert set(changes) == {f.name for f in dataclasses.fields(Arm)}  # every field is tried
    for name, value in changes.items():
        changed = dataclasses.replace(arm, **{name: value})
        assert (changed.key == arm.key) == (name == "label"), name
        assert changed.run_dir(Path("runs")) != arm.run_dir(Path("runs")), name  # never the same folder


def test_a_seed_without_a_figure_leaves_its_mean_over_seeds_unknown() -> None:
    """runs.aggregate: mean and sample std over seeds; a seed whose figure is missing (``None``)
    makes them unknown (NaN, ``null`` in the JSON), never a mean that counts it as zero."""
    from runs.aggregate import finite, mean_std, summarise

    assert mean_std([1.0, 3.0, 8.0]) == pytest.approx((4.0, float(np.std([1.0, 3.0, 8.0], ddof=1))))
    assert mean_std([5.0]) == (5.0, 0.0)
    mean, std = mean_std([1.0, None, 3.0])
    assert math.isnan(mean) and math.isnan(std)
    summary = summarise([{"nfe": 10.0, "error": 0.1}, {"nfe": None, "error": 0.3}], ("nfe", "error", "wall_s"))
    assert set(summary) == {"nfe_mean", "nfe_std", "error_mean", "error_std"}  # wall_s: no seed has it
    assert summary["error_mean"] == pytest.approx(0.2) and finite(summary)["nfe_mean"] is None


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
    assert rows[("reinforce", 3e-3)]["flags"] == default_flags("reinforce")  # the leaderboard's own run


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
    config.update(tasks={TASK: {"task_kwargs": kwargs, "targets": THRESHOLDS, "settings": ["dopri5"],
                                 "whole_span": [], "first_step_settings": [], "extra_modes": []}},
                  agents=["reinforce", "ppo"], grid_step=1.0, schedule_grid_step=1.0, first_step_grid=[-1.0],
                  contextual_neighbours=1, agent_episodes=2, cotrain_targets={"nfe_ratio": 0.45, "bpd_tol": 0.01})
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
    assert task["best_classical"] == "classical:dopri5" and task["agent_setting"] == "dopri5"
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
    config.update(tasks={TASK: {"task_kwargs": flat, "targets": THRESHOLDS, **TASK_CONFIG}}, grid_step=1.0,
                  schedule_grid_step=1.0, first_step_grid=[-1.0], contextual_neighbours=1)
    ctx = Context("benchmark", True, (0,), 1, 1, tmp_path, tmp_path / "out", config, {})
    result = _leaderboard(ctx, {})
    rows = {r["agent"]: r for r in result["rows"]}
    assert result["gap_fraction"] == 0.0 and rows["oracle"]["reward_mean"] == rows["best_schedule"]["reward_mean"]
    assert rows["oracle"]["gap_closed"] is None
    assert all(math.isnan(r["gap_closed"]) for name, r in rows.items() if name != "oracle")
    assert result["gap_fraction_vs_constant"] == 0.0


# ---------------------------------------------------------------------------- leaderboard-scale
def test_a_scale_trial_sets_its_values_over_the_committed_flags_and_the_cli_reads_them() -> None:
    from agents import sb3
    from agents.cli import parse_args
    from runs.studies import scale

    flags = scale.trial_flags("ODE-Mixed-v0", "ppo", {"--policy-lr": 5e-4, "n_steps": 8, "ent_coef": 0.01}, 16)
    assert flags.count("--policy-lr") == 1 and flags[flags.index("--policy-lr") + 1] == "0.0005"
    assert flags[flags.index("--n-envs") + 1] == "16"
    assert sorted(flags[flags.index("--algo-kwargs") + 1:]) == ["batch_size=64", "ent_coef=0.01", "n_steps=8"]
    args = parse_args(sb3.Args, ["--env", "ODE-Mixed-v0", *flags])
    assert args.n_envs == 16 and args.policy_lr == 5e-4 and args.algo == "ppo"
    assert sb3.algo_overrides(sb3.algo_class("ppo"), args.algo_kwargs) == {"batch_size": 64, "ent_coef": 0.01,
                                                                           "n_steps": 8}
    gates = scale.trial_flags("ODE-Mixed-v0", "reinforce", {"--gate-lr": 0.002, "--init-std": 0.7}, 4)
    assert gates[gates.index("--gate-lr") + 1] == "0.002" and gates.count("--init-std") == 1
    assert gates[gates.index("--init-std") + 1] == "0.7" and "--algo-kwargs" not in gates


@pytest.mark.parametrize("name", ["leaderboard-scale", "leaderboard-scale-cnf"])
def test_an_off_policy_agent_in_a_scale_search_starts_learning_within_its_trial(name: str) -> None:
    """Every ``learning_starts`` choice of a scale study's search comes before a trial's last
    environment step (its episodes times its task's decisions per episode)."""
    import infocnf_env
    from runs.studies import load_config

    config = load_config(name, False, {})
    task = config["task"]
    steps_per_episode = (infocnf_env.ODE_IDS[task].segments if task in infocnf_env.ODE_IDS
                         else infocnf_env.FROZEN_IDS[task].num_blocks)
    for agent in ("sac", "td3"):
        kind, choices = config["spaces"][agent]["learning_starts"]
        assert kind == "cat" and max(choices) < config["trial_episodes"] * steps_per_episode, (agent, choices)


def test_a_scale_agent_beats_the_best_constant_only_when_every_seed_does(tmp_path: Path, monkeypatch) -> None:
    """leaderboard-scale's ``beats_constant`` (its table's "beats it every seed") and its target:
    on the analytic task, with hand-written fixed runs in place of the trained ones, an agent one
    of whose seeds scores below the best constant (chosen on the training pool, computed here by
    hand) does not beat it; one whose every seed scores above does."""
    from runs.studies import scale

    env = AnalyticTask(**KWARGS)
    grid = [-8.0 + i for i in range(8)]  # grid_step 1 over the bounds (-8, -1)

    def by_hand(split: str, log_tol: float) -> float:
        return float(np.mean([env.by_hand(c, [log_tol] * env.num_blocks)[0] for c in env.pool(split)]))

    constant = max(grid, key=lambda t: by_hand("train", t))
    above, below = max(grid, key=lambda t: by_hand("test", t)), min(grid, key=lambda t: by_hand("test", t))
    assert by_hand("test", below) < by_hand("test", constant) < by_hand("test", above)
    #: per agent, the log10 tolerance of its final run on seed 0 and seed 1
    finals = {"reinforce": (above, below), "ppo": (above, above)}

    def hand_written_runs(ctx: Context, arms: list) -> dict:
        for arm in arms:
            agent = arm.label.split("-")[-2 if arm.label.endswith("-trial") else -1]
            log_tol = constant if arm.label.endswith("-trial") else finals[agent][arm.seed]
            if not arm.run_dir(ctx.runs_dir).exists():
                _fixed_run(arm.run_dir(ctx.runs_dir), log_tol, None, [-1.0, -2.0, -3.0])
        return {}

    monkeypatch.setattr(scale, "run_arms", hand_written_runs)
    config = load_config("leaderboard-scale", True, {"task": TASK, "trials": 1, "parallel_trials": 1, "grid_step": 1.0})
    config["task_kwargs"] = KWARGS  # in place of the ODE task's, not merged into them
    ctx = Context("leaderboard-scale", True, (0, 1), 1, 1, tmp_path, tmp_path / "out", config, {})
    result = scale.run(ctx)
    rows = {r["agent"]: r for r in result["rows"]}
    assert result["best_constant"]["log10_tol"] == constant
    assert result["best_constant"]["test_reward"] == pytest.approx(by_hand("test", constant))
    # the search scores its trials (runs at the best constant here) on the training pool
    assert by_hand("train", constant) != pytest.approx(by_hand("test", constant))
    assert [t["train_reward"] for t in result["trials"]] == pytest.approx([by_hand("train", constant)] * 2)
    assert rows["reinforce"]["per_seed"] == pytest.approx([by_hand("test", above), by_hand("test", below)])
    assert not rows["reinforce"]["beats_constant"] and rows["ppo"]["beats_constant"]
    assert result["targets"]["every_agent_beats_constant"] is False


def test_a_scale_choice_is_at_an_edge_only_near_the_ends_of_its_range() -> None:
    from runs.studies.scale import at_edge

    assert at_edge(("cat", [1, 2, 4]), 1) and at_edge(("cat", [1, 2, 4]), 4) and not at_edge(("cat", [1, 2, 4]), 2)
    assert at_edge(("log", 1e-4, 1e-2), 1.1e-4) and not at_edge(("log", 1e-4, 1e-2), 1e-3)
    assert not at_edge(("log", 1e-4, 1e-2), 2e-4)  # 15% of the decades in: inside
    assert at_edge(("float", 0.2, 1.5), 1.47) and not at_edge(("float", 0.2, 1.5), 0.9)
    assert not at_edge(("cat", [1, 2, 4]), 1, floor=1) and at_edge(("cat", [1, 2, 4]), 4, floor=1)


def test_a_train_frequency_of_one_is_an_edge_unless_gradient_steps_is_searched_too() -> None:
    """With ``train_freq`` and ``gradient_steps`` both searched, a 1 for either leaves room on
    both sides of the update ratio; with ``train_freq`` alone, a 1 asks for more updates."""
    from runs.studies.scale import edge_names

    freq, steps, lr = ("cat", [1, 4, 16]), ("cat", [1, 4, 16]), ("log", 1e-4, 1e-2)
    assert edge_names({"train_freq": freq, "lr": lr}, {"train_freq": 1, "lr": 1e-3}) == ["train_freq"]
    both = {"train_freq": freq, "gradient_steps": steps, "lr": lr}
    assert edge_names(both, {"train_freq": 1, "gradient_steps": 1, "lr": 1e-3}) == []
    top = {"train_freq": 16, "gradient_steps": 16, "lr": 1e-4}
    assert edge_names(both, top) == ["train_freq", "gradient_steps", "lr"]


def test_savings_read_each_front_at_the_agents_mean_and_at_its_median_error() -> None:
    """savings(): NFE saved at equal mean error and at equal median error, on the pool and per
    family, each read off the front by baselines.saving_on_front with the matching statistic."""
    from infocnf_env import baselines as B

    nfe = np.array([[300.0, 200.0, 100.0], [310.0, 210.0, 110.0], [320.0, 220.0, 120.0]])
    error = np.array([[1e-6, 1e-4, 1e-2], [2e-6, 3e-4, 5e-2], [1e-5, 2e-3, 1e-1]])
    table = B.GridTable([-6.0, -4.0, -2.0], reward={}, nfe={"test": nfe}, error={"test": error})
    episodes = [{"nfe": 150.0, "error": 1e-5, "family": "a"}, {"nfe": 160.0, "error": 1e-4, "family": "a"},
                {"nfe": 170.0, "error": 5e-3, "family": "b"}]
    out = S.savings({"s": table}, ["s"], episodes, "test", ["a", "a", "b"])["s"]
    errors = [e["error"] for e in episodes]
    assert out["mean"] == pytest.approx(B.saving_on_front(table, 160.0, float(np.mean(errors)), "test", "mean"))
    assert out["median"] == pytest.approx(B.saving_on_front(table, 160.0, float(np.median(errors)), "test", "median"))
    assert out["mean"] != pytest.approx(out["median"])
    assert out["per_family"]["a"]["median"] == pytest.approx(
        B.saving_on_front(table, 155.0, float(np.median(errors[:2])), "test", "median", [0, 1]))


def test_the_committed_leaderboard_ran_the_studys_own_tasks_and_settings() -> None:
    """``python -m runs.reproduce benchmark`` reruns what runs/results/benchmark.json holds: the
    committed run's tasks, their settings and their task arguments are the study's config."""
    committed = json.loads((Path(__file__).resolve().parents[1] / "runs" / "results" / "benchmark.json").read_text())
    for task, spec in S.CONFIG["tasks"].items():
        ran = committed["config"]["tasks"][task]
        assert ran["settings"] == spec["settings"], task
        assert ran["task_kwargs"] == spec["task_kwargs"], task


def test_the_committed_leaderboard_played_the_pools_its_task_gives_today() -> None:
    """The pools of a rerun, the registered task's config with the study's task arguments, are
    the pools the committed run played (a changed default pool size would change every figure)."""
    import infocnf_env  # noqa: F401  (registers the ids)

    committed = json.loads((Path(__file__).resolve().parents[1] / "runs" / "results" / "benchmark.json").read_text())
    for result in committed["tasks"]:
        config = gym.spec(result["task"]).kwargs["config"].replace(**S.CONFIG["tasks"][result["task"]]["task_kwargs"])
        sizes = {"train": config.pools.train_pool_size, "test": config.pools.test_pool_size}
        if getattr(config, "ood_pool_size", 0):
            sizes["ood"] = config.ood_pool_size
        assert result["pool_sizes"] == sizes, result["task"]
