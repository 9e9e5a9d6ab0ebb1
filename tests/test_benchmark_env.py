"""The benchmark skeleton (infocnf_env.benchmark), the step record (infocnf_env.episode), the
action read (infocnf_env.actions) and the baselines (infocnf_env.baselines), on a task whose
every figure is a formula (flowkit.AnalyticTask): each is checked against a count or a search
by hand, not against itself."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from flowkit import AnalyticTask
from gymnasium.utils.env_checker import check_env

from flows.ode import BlockStats, NFECounter
from infocnf_env import baselines as B
from infocnf_env.actions import BlockAction, action_space, check_bounds, parse_action
from infocnf_env.benchmark import BenchmarkReward, PoolConfig
from infocnf_env.config import SpaceConfig
from infocnf_env.episode import NUM_FEEDBACK, Feedback, Steps, nfe_cost


def by_hand(env: AnalyticTask, difficulty: float, log_tols: list[float],
            first_step: float | None = None) -> tuple[float, float, float]:
    return env.by_hand(difficulty, log_tols, first_step)


# ---------------------------------------------------------------------------- the env API
def test_the_analytic_task_passes_the_env_checker() -> None:
    check_env(AnalyticTask(), skip_render_check=True)


def test_without_feedback_an_observation_is_the_tasks_features_alone() -> None:
    env = AnalyticTask(feedback=False)
    assert env.observation_space.shape == (env.num_blocks + 1,)
    obs, _ = env.reset(options={"episode": 0})
    assert obs.shape == (env.num_blocks + 1,)
    check_env(env, skip_render_check=True)
    assert AnalyticTask().observation_space.shape == (env.num_blocks + 1 + NUM_FEEDBACK,)


def test_reset_draws_every_training_episode_about_equally_often() -> None:
    env = AnalyticTask(train=(1.0, 2.0, 3.0, 4.0, 5.0))
    env.reset(seed=0)
    counts = np.bincount([env.reset()[1]["index"] for _ in range(1000)], minlength=5)
    assert len(counts) == 5 and counts.min() > 150, counts  # 200 expected each
    _, info = env.reset(options={"split": "test"})
    assert info["split"] == "test" and 0 <= info["index"] < 4


def test_a_seeded_reset_reproduces_and_seeds_differ() -> None:
    def draws(seed: int) -> list[int]:
        env = AnalyticTask()
        first = env.reset(seed=seed)[1]["index"]
        return [first] + [env.reset()[1]["index"] for _ in range(20)]

    assert draws(3) == draws(3) and draws(3) != draws(4)


def test_unseeded_envs_draw_differently_and_a_config_seed_reproduces() -> None:
    def draws(env: AnalyticTask) -> list[int]:
        return [env.reset()[1]["index"] for _ in range(20)]

    assert draws(AnalyticTask()) != draws(AnalyticTask())
    assert draws(AnalyticTask(seed=5)) == draws(AnalyticTask(seed=5))


def test_reset_options_pick_an_episode_and_refuse_unknown_ones() -> None:
    env = AnalyticTask()
    obs, info = env.reset(options={"episode": 1, "split": "test"})
    assert (info["index"], info["split"]) == (1, "test") and obs[env.num_blocks] == pytest.approx(math.log10(30.0))
    with pytest.raises(ValueError, match="unknown reset option"):
        env.reset(options={"episode": 0, "seed": 1})
    for bad in (4, -1, True, 1.0):
        with pytest.raises(ValueError, match=r"index in \[0, 4\) of the train pool"):
            env.reset(options={"episode": bad})
    with pytest.raises(ValueError, match="unknown pool"):
        env.reset(options={"split": "valid"})


def test_an_episode_pays_the_nfe_per_step_and_the_error_at_the_end() -> None:
    env = AnalyticTask(alpha=3.0, error_weight=2.0)
    obs, _ = env.reset(options={"episode": 1})
    rewards, infos = [], []
    for step, log_tol in enumerate((-3.0, -5.0)):
        assert obs[: env.num_blocks].tolist() == [float(step == k) for k in range(env.num_blocks)]
        obs, reward, terminated, truncated, info = env.step(np.array([log_tol]))
        rewards.append(reward)
        infos.append(info)
    assert terminated and not truncated and not obs.any()  # the terminal observation is zeros
    nfes = [env.step_nfe(0, 1e-3), env.step_nfe(1, 1e-5)]
    error = 30.0 * (3e4 * 1e-3 + 1e3 * 1e-5)
    assert rewards[0] == pytest.approx(-3.0 / 2 * nfes[0])
    assert rewards[1] == pytest.approx(-3.0 / 2 * nfes[1] - 2.0 * error)
    assert sum(rewards) == pytest.approx(by_hand(env, 30.0, [-3.0, -5.0])[0])
    last = infos[-1]
    assert last["nfe_blocks"] == nfes and last["nfe_forward"] == sum(nfes) and last["nfe_backward"] == 0
    assert last["tols"] == pytest.approx([1e-3, 1e-5]) and last["error"] == pytest.approx(error)
    assert [i["block"] for i in infos] == [0, 1] and [i["nfe"] for i in infos] == nfes
    assert [i["rejected"] for i in infos] == [1, 1]  # the analytic solver rejects one step per solve
    assert all(i["index"] == 1 and i["split"] == "train" for i in infos)
    assert "error" not in infos[0] and "first_steps" not in last
    assert (env.iteration, env.solver_failures) == (1, 0)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.array([-3.0]))


def test_a_failed_solve_truncates_with_the_penalty_and_counts_as_a_failure() -> None:
    env = AnalyticTask(fail_below=1e-6, failure_penalty=55.0)
    env.reset(options={"episode": 0})
    env.step(np.array([-3.0]))
    obs, reward, terminated, truncated, info = env.step(np.array([-7.0]))
    assert (terminated, truncated, reward) == (False, True, -55.0) and not obs.any()
    assert info["nfe"] == 0 and info["nfe_forward"] == env.step_nfe(0, 1e-3) and info["error"] == math.inf
    assert info["nfe_backward"] == 0  # the same episode keys as a finished episode's (a run's log needs them)
    assert "solver_error" in info and (env.iteration, env.solver_failures) == (0, 1)
    result = env.play("train", 0, [np.array([-3.0]), np.array([-7.0])])
    assert result["failed"] and result["reward"] == pytest.approx(-env.step_nfe(0, 1e-3) / 2 - 55.0)
    assert result["nfe"] == env.step_nfe(0, 1e-3) and result["error"] == math.inf
    score = env.score([np.array([-7.0])], "test")
    assert (score["failures"], score["episodes"], score["reward"]) == (4.0, 4.0, -55.0)


def test_out_of_bounds_actions_are_clipped_to_the_bounds() -> None:
    env = AnalyticTask()
    env.reset(options={"episode": 0})
    _, _, _, _, info = env.step(np.array([-20.0]))
    assert info["tol"] == pytest.approx(1e-8)
    _, _, _, _, info = env.step(np.array([3.0]))
    assert info["tol"] == pytest.approx(1e-1)


def test_play_runs_each_steps_action_and_leaves_the_env_alone() -> None:
    env = AnalyticTask()
    env.reset(seed=1)
    env.reset()
    before = (env.iteration, env.np_random.bit_generator.state, env._play)
    schedule = [np.array([-3.0]), np.array([-6.0])]
    result = env.play("test", 1, schedule)
    reward, nfe, error = by_hand(env, 30.0, [-3.0, -6.0])
    assert result == {"reward": pytest.approx(reward), "nfe": nfe, "error": pytest.approx(error), "failed": False}
    assert (env.iteration, env.np_random.bit_generator.state, env._play) == before
    # a shorter list repeats its last action; a function sees each step's observation and index
    assert env.play("test", 1, [np.array([-4.0])])["reward"] == pytest.approx(by_hand(env, 30.0, [-4.0, -4.0])[0])
    seen = []

    def policy(obs: np.ndarray, step: int) -> np.ndarray:
        seen.append((step, int(obs[: env.num_blocks].argmax())))
        return np.array([-3.0 - 3.0 * step])

    assert env.play("test", 1, policy)["reward"] == pytest.approx(reward)
    assert seen == [(0, 0), (1, 1)]


def test_score_is_the_mean_over_the_pool_or_its_first_episodes() -> None:
    env = AnalyticTask(test=(1.0, 30.0, 3.0))
    policy = env.constant_action(1e-4)
    figures = [by_hand(env, d, [-4.0, -4.0]) for d in (1.0, 30.0, 3.0)]
    score = env.score(policy, "test")
    assert score["reward"] == pytest.approx(np.mean([f[0] for f in figures]))
    assert score["nfe"] == pytest.approx(np.mean([f[1] for f in figures]))
    assert score["error"] == pytest.approx(np.mean([f[2] for f in figures]))
    assert (score["episodes"], score["failures"]) == (3.0, 0.0)
    two = env.score(policy, "test", max_episodes=2)
    assert two["episodes"] == 2.0 and two["reward"] == pytest.approx(np.mean([f[0] for f in figures[:2]]))
    assert env.score(policy, "train")["reward"] == pytest.approx(np.mean(
        [by_hand(env, d, [-4.0, -4.0])[0] for d in env.config.train]))
    assert env.evaluate("test", 1e-4) == score  # the runner's check: every step at one tolerance
    assert env.evaluate("test", 1e-4, 2) == two


def test_constant_actions_of_both_action_modes() -> None:
    env = AnalyticTask()
    (action,) = env.constant_action(1e-3)
    assert action.tolist() == pytest.approx([-3.0])
    first = AnalyticTask(action_mode="tol_first_step", first_step_bounds=(-3.0, -0.5))
    assert first.constant_action(1e-3, 1e-2)[0].tolist() == pytest.approx([-3.0, -2.0])
    assert first.constant_action(1e-3)[0].tolist() == pytest.approx([-3.0, -0.5])  # the upper bound's step
    result = first.play("train", 0, first.constant_action(1e-3, 1e-2))
    assert result["nfe"] == by_hand(first, 1.0, [-3.0, -3.0], first_step=1e-2)[1]
    first.reset(options={"episode": 0})
    *_, info = first.step(np.array([-3.0, -2.0]))
    assert info["first_step"] == pytest.approx(1e-2)
    *_, info = first.step(np.array([-3.0, -1.0]))
    assert info["first_steps"] == pytest.approx([1e-2, 1e-1])


def test_state_round_trips_and_refuses_another_tasks_state() -> None:
    env = AnalyticTask()
    env.reset(seed=3)
    for _ in range(3):
        env.reset()
        env.step(np.array([-3.0]))
        env.step(np.array([-3.0]))
    state = env.state_dict()
    follow = [env.reset()[1]["index"] for _ in range(10)]
    other = AnalyticTask()
    other.load_state_dict(state)
    assert (other.iteration, other.solver_failures) == (3, 0)
    assert [other.reset()[1]["index"] for _ in range(10)] == follow
    with pytest.raises(ValueError, match="another AnalyticTask task"):
        AnalyticTask(alpha=2.0).load_state_dict(state)
    with pytest.raises(ValueError, match="one process"):
        env.distribute(0, 2)
    env.distribute(0, 1)


def test_a_config_is_replaced_by_plain_field_names_with_one_error_for_bad_ones() -> None:
    env = AnalyticTask(alpha=2.0, tol_bounds=(-6.0, -2.0), train=(5.0,))
    assert env.config.reward.alpha == 2.0 and env.config.reward.error_weight == 1.0  # the group's other fields kept
    assert env.config.spaces.tol_bounds == (-6.0, -2.0) and env.config.spaces.feedback
    assert env.pool("train") == [5.0]
    with pytest.raises(ValueError, match=r"unknown analytic-task kwarg\(s\) \['alpah'\]; valid: .*alpha"):
        AnalyticTask(alpah=2.0)
    with pytest.raises(ValueError, match="give reward= or its fields"):
        AnalyticTask(reward=BenchmarkReward(), alpha=2.0)


# ---------------------------------------------------------------------------- reward and pools
def test_error_costs_of_both_forms() -> None:
    linear = BenchmarkReward(error_weight=4.0, failure_penalty=9.0)
    assert linear.error_cost(0.25) == pytest.approx(1.0)
    assert linear.error_cost(math.inf) == 9.0 and linear.error_cost(math.nan) == 9.0
    target = BenchmarkReward(error_form="target", error_weight=100.0, error_target=1e-4)
    assert target.error_cost(1e-2) == pytest.approx(200.0)  # two decades above the target
    assert target.error_cost(1e-4) == pytest.approx(0.0) and target.error_cost(1e-9) == 0.0
    assert target.error_cost(0.0) == 0.0


@pytest.mark.parametrize("kwargs, message", [
    (dict(error_form="quadratic"), "unknown error_form"),
    (dict(alpha=-1.0), "alpha"),
    (dict(error_weight=math.nan), "error_weight"),
    (dict(failure_penalty=-2.0), "failure_penalty"),
    (dict(error_target=0.0), "error_target must be positive"),
    (dict(error_target=-1e-3), "error_target must be positive"),
])
def test_bad_reward_settings_are_one_clear_error(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BenchmarkReward(**kwargs)


@pytest.mark.parametrize("kwargs, message", [
    (dict(train_pool_size=0), "train_pool_size must be a positive integer"),
    (dict(test_pool_size=-1), "test_pool_size must be a positive integer"),
    (dict(pool_seed=-1), "pool_seed must be an integer >= 0"),
    (dict(pool_seed=True), "pool_seed must be an integer >= 0"),
    (dict(pool_seed=1.5), "pool_seed must be an integer >= 0"),
])
def test_bad_pool_settings_are_one_clear_error(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PoolConfig(**kwargs)
    PoolConfig(pool_seed=0, train_pool_size=1, test_pool_size=1)


# ---------------------------------------------------------------------------- actions and steps
def test_actions_are_read_within_their_bounds_in_both_modes() -> None:
    assert parse_action(np.array([-4.0]), "tol", (-8.0, -2.0)) == BlockAction(pytest.approx(1e-4), None)
    assert parse_action([-9.5], "tol", (-8.0, -2.0)).tol == pytest.approx(1e-8)
    assert parse_action(-1.0, "tol", (-8.0, -2.0)).tol == pytest.approx(1e-2)
    both = parse_action([-3.0, -5.0], "tol_first_step", (-8.0, -2.0), (-3.0, -1.0))
    assert (both.tol, both.first_step) == (pytest.approx(1e-3), pytest.approx(1e-3))
    assert parse_action([-3.0, 0.5], "tol_first_step", (-8.0, -2.0), (-3.0, -1.0)).first_step == pytest.approx(0.1)
    for bad, message in (([-3.0, -2.0], "shape"), ([math.nan], "finite"), (None, "a number"), ("x", "a number"),
                         ([[-3.0, -1.0]], "shape"), (True, "a number"), (np.array([False]), "a number")):
        with pytest.raises(ValueError, match=message):
            parse_action(bad, "tol", (-8.0, -2.0))
    with pytest.raises(ValueError, match="shape"):
        parse_action([-3.0], "tol_first_step", (-8.0, -2.0))
    for bad in ([math.nan, -1.0], [-3.0, math.inf]):
        with pytest.raises(ValueError, match="finite"):
            parse_action(bad, "tol_first_step", (-8.0, -2.0))


def test_the_registered_benchmark_tasks_pools_are_the_documented_sizes() -> None:
    """docs/environment.md: the ODE tasks and the mixed frozen-flow task hold 64 + 64 episodes by
    default, the single-density frozen ids 32 + 32."""
    import gymnasium as gym

    import infocnf_env  # noqa: F401  (registers the ids)

    sizes = {task: (spec.kwargs["config"].pools.train_pool_size, spec.kwargs["config"].pools.test_pool_size)
             for task, spec in gym.registry.items() if task.startswith(("ODE-", "CNF-Frozen-"))}
    assert sizes and all(size == ((64, 64) if task.startswith("ODE-") or task == "CNF-Frozen-Mixed-v0" else (32, 32))
                         for task, size in sizes.items()), sizes


def test_action_spaces_and_bounds() -> None:
    box = action_space("tol", (-8.0, -2.0))
    assert box.shape == (1,) and box.low.tolist() == [-8.0] and box.high.tolist() == [-2.0]
    box = action_space("tol_first_step", (-8.0, -2.0), (-3.0, 0.0))
    assert box.shape == (2,) and box.low.tolist() == [-8.0, -3.0] and box.high.tolist() == [-2.0, 0.0]
    assert check_bounds("b", [-5, 0]) == (-5.0, 0.0)
    for bad, message in (((-2.0, -8.0), "low < high"), ((-3.0, -3.0), "low < high"), ((-3.0, 1.0), "<= 0"),
                         ((-3.0,), "two numbers"), ((-math.inf, -1.0), "finite")):
        with pytest.raises(ValueError, match=message):
            check_bounds("b", bad)
    with pytest.raises(ValueError, match="unknown action_mode"):
        SpaceConfig(action_mode="tol_only")


def test_the_step_record_prices_keeps_and_summarises_each_step() -> None:
    spaces = SpaceConfig(tol_bounds=(-8.0, -2.0), action_mode="tol_first_step", feedback=True)
    steps = Steps()
    assert steps.block == 0 and steps.observed_feedback(spaces).tolist() == [0.0] * NUM_FEEDBACK
    act, info = steps.read([-4.0, -1.0], spaces)
    assert info == {"block": 0, "tol": pytest.approx(1e-4), "first_step": pytest.approx(0.1)}
    feedback = Feedback(nfe=20, last_step=0.01, accepted=3, rejected=2, tol=1e-4)
    assert steps.record(act, feedback, alpha=3.0, num_blocks=4) == pytest.approx(-15.0)
    assert steps.block == 1 and nfe_cost(20, 3.0, 4) == pytest.approx(15.0)
    assert steps.observed_feedback(spaces).tolist() == pytest.approx([math.log1p(20), -2.0, math.log1p(2), -4.0])
    assert steps.observed_feedback(SpaceConfig(feedback=False)).shape == (0,)
    act, _ = steps.read([-6.0, -2.0], spaces)
    steps.record(act, Feedback(7, None, 1, 0, 1e-6), 3.0, 4)
    summary = steps.summary(spaces)
    assert summary == {"nfe_forward": 27, "nfe_blocks": [20, 7], "tols": pytest.approx([1e-4, 1e-6]),
                       "first_steps": pytest.approx([0.1, 0.01])}
    assert steps.observed_feedback(spaces)[1] == 0.0  # no accepted step: no step size to report
    assert "first_steps" not in steps.summary(SpaceConfig())


def test_a_blocks_feedback_reports_its_last_step_as_a_fraction_of_its_span() -> None:
    counter = NFECounter()
    counter.forward, counter.last_step, counter.accepted, counter.rejected = 14, 0.125, 5, 2
    feedback = Feedback.of_block(BlockStats(nfe=14, tol=1e-3, counter=counter, span=0.5))
    assert feedback == Feedback(nfe=14, last_step=0.25, accepted=5, rejected=2, tol=1e-3)
    counter.last_step = None
    assert Feedback.of_block(BlockStats(nfe=14, tol=1e-3, counter=counter, span=0.5)).last_step is None


# ---------------------------------------------------------------------------- baselines
GRID = [-7.0, -6.0, -5.0, -4.0, -3.0, -2.0, -1.0]


@pytest.fixture(scope="module")
def task() -> AnalyticTask:
    # the training pool holds the easy episodes mostly, the test pool the hard ones: the best
    # constant of one pool is not the other's
    return AnalyticTask(train=(0.1, 1.0, 0.1, 1.0), test=(100.0, 30.0, 100.0, 1.0, 0.1))


@pytest.fixture(scope="module")
def table(task: AnalyticTask) -> B.GridTable:
    return B.grid_table(task, GRID)


def test_the_grid_spans_the_action_bounds() -> None:
    assert B.log_tol_grid(AnalyticTask(tol_bounds=(-8.0, -2.0)), 2.0) == [-8.0, -6.0, -4.0, -2.0]
    assert B.log_tol_grid(AnalyticTask(tol_bounds=(-8.0, -2.0)), 2.5) == [-8.0, -5.5, -3.0]
    assert B.log_tol_grid(AnalyticTask(tol_bounds=(-3.0, -1.0)), 0.5) == [-3.0, -2.5, -2.0, -1.5, -1.0]


def test_the_grid_table_holds_each_episode_at_each_constant(task: AnalyticTask, table: B.GridTable) -> None:
    assert table.log_tols == GRID
    for split in ("train", "test"):
        assert table.reward[split].shape == (len(task.pool(split)), len(GRID))
        for e, d in enumerate(task.pool(split)):
            for a, t in enumerate(GRID):
                reward, nfe, error = by_hand(task, d, [t, t])
                assert table.reward[split][e, a] == pytest.approx(reward)
                assert table.nfe[split][e, a] == nfe and table.error[split][e, a] == pytest.approx(error)


def test_the_best_constant_is_chosen_on_the_training_pool(table: B.GridTable) -> None:
    means = {split: table.reward[split].mean(axis=0) for split in ("train", "test")}
    assert B.best_constant(table) == int(np.argmax(means["train"]))
    assert B.best_constant(table, "test") == int(np.argmax(means["test"]))
    assert B.best_constant(table) != B.best_constant(table, "test")  # the fixture's pools disagree
    column = B.column(table, 2, "test")
    assert column["reward"] == pytest.approx(means["test"][2])
    assert column["nfe"] == pytest.approx(table.nfe["test"][:, 2].mean())
    assert column["error"] == pytest.approx(table.error["test"][:, 2].mean())


def test_the_oracle_is_each_episodes_best_constant_in_hindsight(task: AnalyticTask, table: B.GridTable) -> None:
    oracle = B.oracle(table)  # the test pool by default
    best = [max(GRID, key=lambda t, d=d: by_hand(task, d, [t, t])[0]) for d in task.pool("test")]
    assert oracle["log_tols"] == best
    assert oracle["reward"] == pytest.approx(np.mean([by_hand(task, d, [t, t])[0]
                                                      for d, t in zip(task.pool("test"), best, strict=True)]))
    assert oracle["nfe"] == pytest.approx(np.mean([by_hand(task, d, [t, t])[1]
                                                   for d, t in zip(task.pool("test"), best, strict=True)]))
    assert oracle["error"] == pytest.approx(np.mean([by_hand(task, d, [t, t])[2]
                                                     for d, t in zip(task.pool("test"), best, strict=True)]))
    errors = [by_hand(task, d, [t, t])[2] for d, t in zip(task.pool("test"), best, strict=True)]
    assert len(set(errors)) > 2 and np.mean(errors) != pytest.approx(np.median(errors))  # the two differ here
    assert oracle["error_median"] == pytest.approx(np.median(errors))
    assert B.oracle(table, "train")["log_tols"] == [max(GRID, key=lambda t, d=d: by_hand(task, d, [t, t])[0])
                                                    for d in task.pool("train")]


@pytest.mark.parametrize("start", [-7.0, -3.0])
def test_the_best_schedule_is_the_best_of_every_schedule_of_the_grid(task: AnalyticTask, start: float) -> None:
    """The task's reward is a sum over steps, so coordinate ascent from any start finds the best
    of all grid schedules in one sweep: the brute-force search over them is the reference."""
    grid = GRID
    schedule, reward = B.best_schedule(task, grid, start)

    def mean(candidate: tuple[float, ...]) -> float:
        return float(np.mean([by_hand(task, d, list(candidate))[0] for d in task.pool("train")]))

    best = max(itertools.product(grid, repeat=task.num_blocks), key=mean)
    assert schedule == list(best) and reward == pytest.approx(mean(best))
    assert schedule[0] != schedule[1]  # the steps' best tolerances differ: a real schedule
    test_schedule, _ = B.best_schedule(task, grid, start, split="test")
    assert test_schedule == list(max(itertools.product(grid, repeat=2), key=lambda c: float(np.mean(
        [by_hand(task, d, list(c))[0] for d in task.pool("test")]))))
    assert [float(a[0]) for a in B.schedule_policy(schedule)] == schedule


def test_the_best_first_step_is_the_best_of_its_grid() -> None:
    env = AnalyticTask(action_mode="tol_first_step", train=(1.0, 30.0))
    grid = [-3.0, -2.0, -1.0, 0.0]
    log_first, reward = B.best_first_step(env, -4.0, grid)
    expected = {f: np.mean([by_hand(env, d, [-4.0, -4.0], 10.0 ** f)[0] for d in (1.0, 30.0)]) for f in grid}
    assert log_first == max(expected, key=expected.get) == -1.0
    assert reward == pytest.approx(expected[-1.0])
    assert B.best_first_step(env, -4.0, [0.0, -2.0])[0] in (0.0, -2.0)
    with pytest.raises(ValueError, match="tol_first_step"):
        B.best_first_step(AnalyticTask(), -4.0, grid)


def test_the_contextual_regressor_maps_each_observation_to_its_oracle_tolerance() -> None:
    task = AnalyticTask(train=(0.1, 1.0, 30.0, 1000.0), test=(30.0, 0.1, 1000.0))
    table = B.grid_table(task, GRID)
    policy = B.fit_contextual(task, table, neighbours=1)
    oracle = dict(zip(task.pool("train"), B.oracle(table, "train")["log_tols"], strict=True))
    assert len(set(oracle.values())) == 4  # each difficulty has its own best tolerance
    for split in ("train", "test"):
        for e, d in enumerate(task.pool(split)):
            obs, _ = task.reset(options={"episode": e, "split": split})
            # the observation holds the difficulty: each episode gets its difficulty's oracle tolerance
            assert float(policy(obs, 0)[0]) == pytest.approx(oracle[d])


def test_the_contextual_policy_takes_its_neighbours_best_mean_reward_not_their_mean_pick() -> None:
    """With every training observation as a neighbour, the contextual policy plays the grid
    tolerance with the best mean reward over the training pool (the best constant), wherever
    it acts: two episodes whose oracle picks lie far apart are not averaged into a tolerance
    between them."""
    task = AnalyticTask(train=(0.1, 1000.0), test=(30.0, 0.1, 1000.0))
    table = B.grid_table(task, GRID)
    policy = B.fit_contextual(task, table, neighbours=2 * task.num_blocks)  # every observation
    best = GRID[B.best_constant(table, "train")]
    picks = B.oracle(table, "train")["log_tols"]
    assert abs(picks[0] - picks[1]) >= 2 and np.mean(picks) != pytest.approx(best)
    for split in ("train", "test"):
        for e in range(len(task.pool(split))):
            obs, _ = task.reset(options={"episode": e, "split": split})
            assert float(policy(obs, 0)[0]) == pytest.approx(best)


def test_gap_closed_and_the_saving_follow_their_definitions() -> None:
    assert B.gap_closed(-80.0, floor=-100.0, ceiling=-60.0) == pytest.approx(0.5)
    assert B.gap_closed(-110.0, floor=-100.0, ceiling=-60.0) == pytest.approx(-0.25)
    assert math.isnan(B.gap_closed(-80.0, floor=-60.0, ceiling=-60.0))
    assert math.isnan(B.gap_closed(-80.0, floor=-50.0, ceiling=-60.0))
    table = B.GridTable([-6.0, -5.0, -4.0], reward={},
                        nfe={"test": np.array([[100.0, 70.0, 50.0], [120.0, 90.0, 60.0]])},
                        error={"test": np.array([[1e-6, 1e-5, 1e-4], [3e-6, 3e-5, 3e-4]])})
    # constants' mean errors: 2e-6, 2e-5, 2e-4; mean NFE: 110, 80, 55; medians the same here
    assert B.saving_on_front(table, nfe=60.0, error=2e-5) == pytest.approx(1 - 60.0 / 80.0)
    between = 110.0 * (80.0 / 110.0) ** (math.log(1.9e-5 / 2e-6) / math.log(10.0))  # log-log, not the grid point
    assert B.saving_on_front(table, nfe=60.0, error=1.9e-5) == pytest.approx(1 - 60.0 / between)
    assert B.saving_on_front(table, nfe=60.0, error=1.0) == pytest.approx(1 - 60.0 / 55.0)
    assert B.saving_on_front(table, nfe=60.0, error=1e-6) is None
    assert B.saving_on_front(table, nfe=60.0, error=2e-5, statistic="median") == pytest.approx(1 - 60.0 / 80.0)
    assert B.saving_on_front(table, nfe=60.0, error=3e-5, episodes=[1]) == pytest.approx(1 - 60.0 / 90.0)
    # a front that is not monotone brackets the target twice: the cheapest reading counts
    nfe, error = [100.0, 50.0, 80.0, 40.0], [1e-6, 1e-4, 1e-5, 1e-3]
    assert B.front_nfe_at_error(nfe, error, 1e-5) == pytest.approx(math.sqrt(100.0 * 50.0))  # the other pairs read 80


class _Levelled(AnalyticTask):
    """The analytic task with one more observation feature: one of three levels over the
    episodes, times ``scale``."""

    scale = 1.0

    def _setup_spaces(self, task_features: int) -> None:
        super()._setup_spaces(task_features + 1)

    def _observe(self, play) -> np.ndarray:
        obs = super()._observe(play)
        return np.concatenate([obs, [self.scale * (play.index % 3)]]).astype(np.float32)


class _Stretched(_Levelled):
    scale = 1e4


def test_the_contextual_regressor_weighs_each_feature_by_its_own_spread() -> None:
    """Features are standardised one by one, so the regressor does not depend on a feature's
    units: the level feature in units ten thousand times smaller changes no prediction."""
    pools = dict(train=(0.1, 1.0, 30.0, 1000.0, 0.1, 1.0, 30.0, 1000.0, 0.1, 3.0), test=(30.0, 0.1, 1000.0, 3.0))
    predictions = []
    for kind in (_Levelled, _Stretched):
        task = kind(**pools)
        policy = B.fit_contextual(task, B.grid_table(task, GRID), neighbours=3)
        predictions.append([float(policy(task.reset(options={"episode": e, "split": split})[0], 0)[0])
                            for split in ("train", "test") for e in range(len(task.pool(split)))])
    assert predictions[0] == pytest.approx(predictions[1])


#: Where each public call that takes a pool reads by default: what chooses a setting (a
#: constant, a schedule, a first step, the contextual policy) reads the training pool; what scores one
#: reads the test pool (the benchmark's protocol, docs/environment.md).
SPLIT_DEFAULTS = {
    "baselines.best_constant": "train", "baselines.best_schedule": "train", "baselines.best_first_step": "train",
    "baselines.fit_contextual": "train", "baselines.oracle": "test", "baselines.column": "test",
    "baselines.method_oracle": "test", "baselines.saving_on_front": "test",
    "BenchmarkEnv.score": "test", "BenchmarkEnv.evaluate": "test", "BenchmarkVectorEnv.score": "test",
}


def test_what_chooses_a_setting_reads_the_training_pool_and_what_scores_it_the_test_pool() -> None:
    """Every public function or method of the benchmark whose ``split`` has a default defaults
    to the pool its role reads; a new one must be added to :data:`SPLIT_DEFAULTS`."""
    import inspect

    from infocnf_env import vector
    from infocnf_env.benchmark import BenchmarkEnv

    found = {}
    owners = [("baselines", B), ("BenchmarkEnv", BenchmarkEnv),
              *((name, cls) for name, cls in vars(vector).items()
                if inspect.isclass(cls) and cls.__module__ == vector.__name__)]
    for owner, holder in owners:
        for name, member in vars(holder).items():
            if callable(member) and not name.startswith("_") and member.__module__.startswith("infocnf_env"):
                param = inspect.signature(member).parameters.get("split")
                if param is not None and param.default is not param.empty:
                    found[f"{owner}.{name}"] = param.default
    assert found == SPLIT_DEFAULTS
