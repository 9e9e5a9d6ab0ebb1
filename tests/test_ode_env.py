"""The classical ODE tasks: right-hand sides against DETEST, references against scipy, pools,
baselines, seeding, caching and bad input."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from flowkit import TINY_ODE
from gymnasium.utils.env_checker import check_env
from scipy.integrate import solve_ivp

import infocnf_env
from flows.ivp import (
    ARENSTORF_PERIOD,
    FAMILIES,
    Instance,
    IVPDynamics,
    arenstorf_start,
    draw_instance,
    kepler_start,
    relative_error,
)
from flows.ode import NFECounter, solve
from infocnf_env import ODEConfig, ODETaskEnv
from infocnf_env import baselines as B
from infocnf_env.cache import CacheError
from infocnf_env.ode_env import ode_pools, reference_solution

TINY = TINY_ODE


@pytest.fixture(scope="module")
def ode_cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("ode-cache"))


@pytest.fixture(scope="module")
def tiny_env(ode_cache: str) -> ODETaskEnv:
    return ODETaskEnv(**TINY, cache=ode_cache)


# ---------------------------------------------------------------------------- right-hand sides
@pytest.mark.parametrize("key", ["D1", "D2", "D3", "D4", "D5"])
def test_kepler_matches_detest_d(key: str) -> None:
    from nodepy.ivp import detest

    problem = detest(key)
    e = {"D1": 0.1, "D2": 0.3, "D3": 0.5, "D4": 0.7, "D5": 0.9}[key]
    start = kepler_start(torch.tensor(e, dtype=torch.float64))
    np.testing.assert_allclose(start.numpy(), problem.u0, rtol=1e-12)
    rng = np.random.default_rng(0)
    for _ in range(5):
        u = rng.uniform(-1.5, 1.5, 4)
        ours = FAMILIES["kepler"].rhs(torch.tensor(0.0), torch.tensor(u), torch.tensor(e)).numpy()
        np.testing.assert_allclose(ours, problem.rhs(0.0, u), rtol=1e-12)


def test_van_der_pol_at_mu_one_is_detest_e2() -> None:
    from nodepy.ivp import detest

    problem = detest("E2")
    rng = np.random.default_rng(1)
    start = FAMILIES["vdp"].start(torch.tensor(1.0, dtype=torch.float64), None)
    np.testing.assert_allclose(start.numpy(), problem.u0)
    for _ in range(5):
        u = rng.uniform(-3, 3, 2)
        ours = FAMILIES["vdp"].rhs(torch.tensor(0.0), torch.tensor(u), torch.tensor(1.0)).numpy()
        np.testing.assert_allclose(ours, problem.rhs(0.0, u), rtol=1e-12)


def test_unperturbed_arenstorf_orbit_closes_after_one_period() -> None:
    """HNW's orbit is periodic: a tight solve over one period returns to its start."""
    instance = Instance("arenstorf", 0.0, arenstorf_start(torch.tensor(0.0, dtype=torch.float64)))
    func = IVPDynamics(instance)
    t = torch.tensor([0.0, ARENSTORF_PERIOD], dtype=torch.float64)
    (ys,) = solve(func, (instance.y0,), t, func.counter, tol=1e-11, method="dopri8", max_num_steps=100_000)
    assert float((ys[-1] - instance.y0).abs().max()) < 1e-5


def test_lorenz_field_has_constant_divergence() -> None:
    """div f = -(sigma + 1 + beta) everywhere: checks every diagonal term of the Jacobian."""
    rhs = FAMILIES["lorenz"].rhs
    for y in torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 10:
        jac = torch.autograd.functional.jacobian(lambda v: rhs(torch.tensor(0.0), v, torch.tensor(0.0)), y)
        assert float(torch.trace(jac)) == pytest.approx(-(10.0 + 1.0 + 8.0 / 3.0), rel=1e-12)


def test_right_hand_sides_are_batched() -> None:
    generator = torch.Generator().manual_seed(0)
    for family in FAMILIES.values():
        instances = [draw_instance(family.name, generator) for _ in range(3)]
        y = torch.stack([i.y0 for i in instances])
        params = torch.tensor([i.param for i in instances], dtype=torch.float64)
        batched = family.rhs(torch.tensor(0.0), y, params)
        one_by_one = torch.stack([family.rhs(torch.tensor(0.0), i.y0, torch.tensor(i.param)) for i in instances])
        torch.testing.assert_close(batched, one_by_one)


# ---------------------------------------------------------------------------- references and solves
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_reference_agrees_with_scipy_dop853(family: str) -> None:
    instance = draw_instance(family, torch.Generator().manual_seed(3))
    ours = reference_solution(instance, "dopri8", 1e-12)
    fam = FAMILIES[family]

    def f(t: float, u: np.ndarray) -> np.ndarray:
        return fam.rhs(torch.tensor(t), torch.tensor(u), torch.tensor(instance.param, dtype=torch.float64)).numpy()

    theirs = solve_ivp(f, (0.0, instance.t_end), instance.y0.numpy(), method="DOP853", rtol=1e-13, atol=1e-13)
    assert theirs.success
    # Two tight solvers agree far below the errors the actions make at the tightest bound (1e-9);
    # the Arenstorf orbit's close approaches amplify round-off the most.
    assert relative_error(ours, torch.tensor(theirs.y[:, -1])) < 1e-7


def test_nfe_and_step_counts_match_an_independent_count() -> None:
    instance = draw_instance("vdp", torch.Generator().manual_seed(0))
    calls = []
    func = IVPDynamics(instance)
    func.register_forward_hook(lambda *args: calls.append(1))
    counter = func.counter = NFECounter()
    t = torch.tensor([0.0, instance.t_end], dtype=torch.float64)
    solve(func, (instance.y0,), t, counter, tol=1e-6)
    assert counter.forward == len(calls)
    # dopri5 (FSAL): one evaluation for the initial-step heuristic's probe and the first
    # derivative, then six per attempted step.
    assert counter.forward == 2 + 6 * (counter.accepted + counter.rejected)


def test_episode_nfe_and_error_match_a_solve_by_hand(tiny_env: ODETaskEnv) -> None:
    """Segments without warm start at one tolerance: the env's NFE and error are those of the
    same solves run by hand, segment by segment, through the solve layer's own torchode backend
    (one solve per segment, NFE counted by the dynamics, not the batched solve's bookkeeping)."""
    env = ODETaskEnv(**{**TINY, "warm_start": False}, cache=tiny_env.config.cache)
    result = env.play("test", 1, env.constant_action(1e-5))
    instance = env.pool("test")[1]
    y, nfe = instance.y0, 0
    times = torch.linspace(0.0, instance.t_end, TINY["segments"] + 1, dtype=torch.float64)
    for k in range(TINY["segments"]):
        func = IVPDynamics(instance)
        (ys,) = solve(func, (y,), times[k:k + 2], func.counter, tol=1e-5, backend=env.config.backend)
        y, nfe = ys[-1], nfe + func.counter.forward
    assert env.config.backend == "torchode"
    reference = reference_solution(instance, "dopri8", TINY["reference_tol"])
    assert result["nfe"] == nfe
    assert result["error"] == pytest.approx(relative_error(y, reference), rel=1e-9)


def test_warm_start_saves_the_heuristic_of_later_segments(tiny_env: ODETaskEnv) -> None:
    """Over the pool (per episode the margin can be a few NFE), a warm start costs less: each cold
    segment pays the initial-step heuristic and a small first step."""
    cold = ODETaskEnv(**{**TINY, "warm_start": False}, cache=tiny_env.config.cache)
    warm_nfe = tiny_env.score(tiny_env.constant_action(1e-6), "train")["nfe"]
    cold_nfe = cold.score(cold.constant_action(1e-6), "train")["nfe"]
    assert warm_nfe < cold_nfe


# ---------------------------------------------------------------------------- the env
@pytest.mark.parametrize("env_id", sorted(infocnf_env.ODE_IDS))
def test_every_ode_id_passes_the_checkers(env_id: str, ode_cache: str) -> None:
    env = gym.make(env_id, train_pool_size=2, test_pool_size=1, ood_pool_size=1, segments=2, reference_tol=1e-9,
                   cache=ode_cache)
    check_env(env.unwrapped, skip_render_check=True)
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    assert info["split"] == "train"


def test_make_vec_runs_an_ode_task(ode_cache: str) -> None:
    envs = gym.make_vec("ODE-Lorenz-v0", num_envs=2, vectorization_mode="sync", train_pool_size=2,
                        test_pool_size=1, ood_pool_size=0, segments=2, reference_tol=1e-9, cache=ode_cache)
    envs.reset(seed=0)
    for _ in range(2):
        _, rewards, _, _, _ = envs.step(np.full((2, 1), -4.0, dtype=np.float32))
        assert np.all(rewards < 0)
    envs.close()


def test_reward_is_nfe_per_segment_and_decades_above_the_target(tiny_env: ODETaskEnv) -> None:
    obs, _ = tiny_env.reset(options={"episode": 0})
    rewards, info = [], {}
    for _ in range(TINY["segments"]):
        obs, reward, terminated, truncated, info = tiny_env.step(np.array([-3.0]))
        rewards.append(reward)
    assert terminated and not truncated
    cfg = tiny_env.config.reward
    nfe_part = [-(cfg.alpha / TINY["segments"]) * n for n in info["nfe_blocks"]]
    excess = max(0.0, math.log10(info["error"] / cfg.error_target))
    assert rewards[0] == pytest.approx(nfe_part[0])
    assert rewards[1] == pytest.approx(nfe_part[1] - cfg.error_weight * excess)


def test_pools_are_disjoint_reproducible_and_follow_pool_seed() -> None:
    config = ODEConfig().replace(families=("kepler", "vdp"), train_pool_size=6, test_pool_size=6)
    pools = ode_pools(config)
    train = {(i.family, i.param) for i in pools["train"]}
    test = {(i.family, i.param) for i in pools["test"]}
    assert not train & test
    assert [i.family for i in pools["test"]] == ["kepler", "vdp"] * 3  # families in equal shares
    assert [i.param for i in ode_pools(config)["test"]] == [i.param for i in pools["test"]]
    other = ode_pools(config.replace(pool_seed=1))
    assert [i.param for i in other["test"]] != [i.param for i in pools["test"]]


def test_every_field_that_decides_the_references_changes_the_cache_key() -> None:
    base = ODEConfig()
    deciding = dict(families=("vdp",), train_pool_size=3, test_pool_size=3, pool_seed=2,
                    reference_method="dopri5", reference_tol=1e-11)
    for name, value in deciding.items():
        assert base.replace(**{name: value}).pool_key() != base.pool_key(), name
    for name, value in dict(alpha=2.0, segments=8, error_target=1e-3, tol_bounds=(-8, -3), seed=1).items():
        assert base.replace(**{name: value}).pool_key() == base.pool_key(), name


def test_unseeded_envs_differ_and_a_seeded_reset_reproduces(tiny_env: ODETaskEnv) -> None:
    def episodes(env: ODETaskEnv, seed: int | None) -> list[int]:
        first = env.reset(seed=seed)[1]["index"]
        return [first] + [env.reset()[1]["index"] for _ in range(15)]

    fresh = [ODETaskEnv(**TINY, cache=tiny_env.config.cache) for _ in range(2)]
    assert episodes(fresh[0], None) != episodes(fresh[1], None)
    assert episodes(fresh[0], 7) == episodes(fresh[1], 7)


def test_reset_can_play_the_test_pool(tiny_env: ODETaskEnv) -> None:
    _, info = tiny_env.reset(options={"split": "test", "episode": 3})
    assert (info["split"], info["index"]) == ("test", 3)
    with pytest.raises(ValueError, match="index in \\[0, 4\\) of the test pool"):
        tiny_env.reset(options={"split": "test", "episode": 4})
    with pytest.raises(ValueError, match="unknown pool"):
        tiny_env.reset(options={"split": "valid"})


def test_a_failed_solve_truncates_with_the_penalty(tiny_env: ODETaskEnv) -> None:
    env = ODETaskEnv(**{**TINY, "max_num_steps": 2}, cache=tiny_env.config.cache)
    env.reset(options={"episode": 0})
    _, reward, terminated, truncated, info = env.step(np.array([-9.0]))
    assert (terminated, truncated) == (False, True)
    assert reward == -env.config.reward.failure_penalty and "solver_error" in info
    assert env.solver_failures == 1


@pytest.mark.parametrize("kwargs, message", [
    (dict(segments=0), "segments must be a positive integer"),
    (dict(families=("kepler", "pendulum")), "unknown problem family 'pendulum'"),
    (dict(families=()), "at least one problem family"),
    (dict(error_form="quadratic"), "unknown error_form"),
    (dict(error_target=0.0), "error_target must be positive"),
    (dict(tol_bounds=(-2, -9)), "low < high"),
    (dict(method="euler", backend="torchdiffeq"), "adaptive solver"),
    (dict(reference_tol=1e-3), "reference_tol must be in"),
    (dict(train_pool_size=0), "train_pool_size must be a positive integer"),
    (dict(obs_mode="features"), "vector observations only"),
    (dict(horizon=3), "unknown ODE-task kwarg"),
])
def test_bad_config_values_get_one_clear_error(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ODEConfig().replace(**kwargs)


# ---------------------------------------------------------------------------- cache
def test_a_truncated_reference_file_is_rebuilt(tmp_path, capsys) -> None:
    one = {**TINY, "train_pool_size": 1, "test_pool_size": 1}
    env = ODETaskEnv(**one, cache=str(tmp_path))
    (path,) = list(tmp_path.glob("ode-*.pt"))
    path.write_bytes(path.read_bytes()[:100])
    again = ODETaskEnv(**one, cache=str(tmp_path))
    assert "unreadable" in capsys.readouterr().err
    for split in ("train", "test"):
        for a, b in zip(env.references[split], again.references[split], strict=True):
            torch.testing.assert_close(a, b)


def test_an_unwritable_cache_fails_before_any_solve(tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(CacheError, match="not writable.*INFOCNF_CACHE"):
        ODETaskEnv(**TINY, cache=str(blocker / "cache"))


def test_the_cache_folder_is_the_argument_then_infocnf_cache_then_xdg_cache_home(tmp_path, monkeypatch) -> None:
    from infocnf_env.cache import cache_dir

    monkeypatch.delenv("INFOCNF_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "infocnf-gym"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "infocnf-gym"
    monkeypatch.setenv("INFOCNF_CACHE", str(tmp_path / "own"))
    assert cache_dir() == tmp_path / "own"
    assert cache_dir(tmp_path / "given") == tmp_path / "given"


# ---------------------------------------------------------------------------- baselines
GRID = [-8.0, -5.0, -2.0]


@pytest.fixture(scope="module")
def table(tiny_env: ODETaskEnv) -> B.GridTable:
    return B.grid_table(tiny_env, GRID)


def test_oracle_is_at_least_every_constant_and_schedules_start_from_the_best(tiny_env: ODETaskEnv,
                                                                             table: B.GridTable) -> None:
    grid = GRID
    best = B.best_constant(table, "train")
    oracle = B.oracle(table, "test")
    for a in range(len(grid)):
        assert oracle["reward"] >= B.column(table, a, "test")["reward"] - 1e-9
    schedule, reward = B.best_schedule(tiny_env, grid, grid[best])
    assert reward >= table.reward["train"][:, best].mean() - 1e-9  # ascent never ends below its start
    assert len(schedule) == TINY["segments"]
    played = tiny_env.score(B.schedule_policy(schedule), "train")["reward"]
    assert played == pytest.approx(reward)


def test_the_contextual_regressor_recovers_the_oracle_on_its_training_pool(tiny_env: ODETaskEnv,
                                                                            table: B.GridTable) -> None:
    policy = B.fit_contextual(tiny_env, table, neighbours=1)
    picks = B.oracle(table, "train")["log_tols"]
    for e, log_tol in enumerate(picks):
        obs, _ = tiny_env.reset(options={"episode": e})
        assert float(policy(obs, 0)[0]) == pytest.approx(log_tol)
