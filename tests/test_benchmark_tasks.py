"""The two benchmark tasks' own parts against computations by hand: the ODE task's observation and
warm start, both tasks' episode draws and seeding, and the baselines' grid cache."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from flowkit import TINY_FROZEN, TINY_ODE

from flows.ivp import FAMILIES, MAX_DIM, IVPDynamics, relative_error
from flows.ode import NFECounter, solve
from flows.toy_densities import TOY_DENSITIES
from infocnf_env import ODETaskEnv
from infocnf_env import baselines as B
from infocnf_env.benchmark import PoolConfig
from infocnf_env.frozen import FrozenConfig, FrozenFlowEnv, episode_pools
from infocnf_env.ode_env import ODEConfig, reference_solution


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("task-cache"))


@pytest.fixture(scope="module")
def ode(cache: str) -> ODETaskEnv:
    return ODETaskEnv(**TINY_ODE, cache=cache)


@pytest.fixture(scope="module")
def frozen(cache: str) -> FrozenFlowEnv:
    return gym.make("CNF-Frozen-Mixed-v0", **{**TINY_FROZEN, "densities": ("checkerboard", "8gaussians")},
                    num_blocks=2, cache=cache).unwrapped


def _segment(instance, y: torch.Tensor, k: int, segments: int, tol: float,
             first_step: float | None = None) -> tuple[torch.Tensor, NFECounter]:
    """Segment ``k`` of ``instance`` solved by hand from ``y``: dopri5 on the task's torchode backend,
    through the solve layer's one-problem path (NFE counted by the dynamics' own calls)."""
    times = torch.linspace(0.0, instance.t_end, segments + 1, dtype=torch.float64)[k:k + 2]
    func = IVPDynamics(instance)
    counter = func.counter = NFECounter()
    with torch.no_grad():
        (ys,) = solve(func, (y,), times, counter, tol=tol, first_step=first_step, backend="torchode")
    return ys[-1], counter


def _encoded(y: torch.Tensor) -> list[float]:
    values = [math.copysign(math.log1p(abs(v)), v) for v in y.tolist()]
    return values + [0.0] * (MAX_DIM - len(values))


# ---------------------------------------------------------------------------- the ODE task
def test_an_ode_observation_is_segment_family_parameter_state_and_feedback(ode: ODETaskEnv) -> None:
    K, F = TINY_ODE["segments"], len(TINY_ODE["families"])
    for split, index in (("train", 0), ("train", 1), ("test", 3)):
        instance = ode.pool(split)[index]
        obs, info = ode.reset(options={"episode": index, "split": split})
        low, high = FAMILIES[instance.family].param_range
        family = [float(name == instance.family) for name in TINY_ODE["families"]]
        expected = [1.0, 0.0] + family + [2 * (instance.param - low) / (high - low) - 1] + _encoded(instance.y0)
        assert obs.shape == (K + F + 1 + MAX_DIM + 4,)
        np.testing.assert_allclose(obs, expected + [0.0] * 4, rtol=1e-6, atol=1e-6)
        assert info["family"] == instance.family and info["param"] == instance.param
        obs, *_ = ode.step(np.array([-4.0]))
        y, counter = _segment(instance, instance.y0, 0, K, 1e-4)
        span = instance.t_end / K
        feedback = [math.log1p(counter.forward), math.log10(counter.last_step / span), math.log1p(counter.rejected),
                    -4.0]
        np.testing.assert_allclose(obs, [0.0, 1.0] + expected[K:K + F + 1] + _encoded(y) + feedback,
                                   rtol=1e-5, atol=1e-5)
        ode.step(np.array([-4.0]))
    assert ode.family_of("test", 3) == ode.pool("test")[3].family


def test_a_warm_start_carries_the_last_step_rescaled_to_the_next_tolerance(ode: ODETaskEnv) -> None:
    """Three segments at 1e-3, 1e-7, 1e-5, solved by hand: each segment after the first starts
    from the step the one before accepted last, times (new tol / its tol)^(1/5) (dopri5's order)."""
    env = ODETaskEnv(**{**TINY_ODE, "segments": 3}, cache=ode.config.cache)
    tols = [1e-3, 1e-7, 1e-5]
    for index in range(2):
        instance = env.pool("test")[index]
        span = instance.t_end / 3
        y, nfe, step, step_tol = instance.y0, 0, None, None
        for k, tol in enumerate(tols):
            first = None if step is None else min(step * (tol / step_tol) ** 0.2, span)
            y, counter = _segment(instance, y, k, 3, tol, first)
            nfe += counter.forward
            step, step_tol = counter.last_step, tol
        result = env.play("test", index, [np.array([math.log10(t)]) for t in tols])
        assert result["nfe"] == nfe
        error = relative_error(y, reference_solution(instance, "dopri8", TINY_ODE["reference_tol"]))
        # the batched solve divides by each row's tolerance in its norm, the one-problem path scales
        # the bound by it: the same steps, their sizes equal up to rounding, which the error feels
        assert result["error"] == pytest.approx(error, rel=1e-6)


def test_the_first_step_action_replaces_the_warm_start(ode: ODETaskEnv) -> None:
    env = ODETaskEnv(**TINY_ODE, action_mode="tol_first_step", cache=ode.config.cache)
    instance = env.pool("train")[2]
    span = instance.t_end / 2
    y, first = _segment(instance, instance.y0, 0, 2, 1e-5, 0.01 * span)
    y, second = _segment(instance, y, 1, 2, 1e-6, 0.1 * span)
    result = env.play("train", 2, [np.array([-5.0, -2.0]), np.array([-6.0, -1.0])])
    assert result["nfe"] == first.forward + second.forward
    reference = reference_solution(instance, "dopri8", TINY_ODE["reference_tol"])
    assert result["error"] == pytest.approx(relative_error(y, reference), rel=1e-9)


def test_the_references_are_tight_solves_of_each_pools_own_instances(ode: ODETaskEnv) -> None:
    for split in ("train", "test"):
        for index in (0, 3):
            reference = reference_solution(ode.pool(split)[index], "dopri8", TINY_ODE["reference_tol"])
            torch.testing.assert_close(ode.references[split][index], reference, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------- draws and seeds
@pytest.mark.parametrize("task", ["ode", "frozen"])
def test_reset_draws_every_training_episode(task: str, request: pytest.FixtureRequest) -> None:
    env = request.getfixturevalue(task)
    env.reset(seed=0)
    seen = {env.reset()[1]["index"] for _ in range(60)}
    assert seen == set(range(len(env.pool("train"))))


def test_unseeded_frozen_envs_draw_differently_and_seeded_ones_alike(frozen: FrozenFlowEnv, cache: str) -> None:
    kwargs = {**TINY_FROZEN, "densities": ("checkerboard", "8gaussians"), "num_blocks": 2, "cache": cache}

    def draws(**more: object) -> list[int]:
        env = gym.make("CNF-Frozen-Mixed-v0", **kwargs, **more).unwrapped
        return [env.reset()[1]["index"] for _ in range(16)]

    assert draws() != draws()
    assert draws(seed=4) == draws(seed=4) != draws(seed=5)


@pytest.mark.parametrize("tol", [1e-6, 1e-5, 0.0, -1e-9])
def test_an_ode_reference_must_be_tighter_than_every_action(tol: float) -> None:
    with pytest.raises(ValueError, match="reference_tol must be in"):
        ODEConfig(reference_tol=tol)
    ODEConfig(reference_tol=9e-7)


def test_unseeded_ode_envs_draw_differently_and_seeded_ones_alike(ode: ODETaskEnv) -> None:
    def draws(**more: object) -> list[int]:
        env = ODETaskEnv(**TINY_ODE, cache=ode.config.cache, **more)
        return [env.reset()[1]["index"] for _ in range(16)]

    assert draws() != draws()
    assert draws(seed=4) == draws(seed=4) != draws(seed=5)


def test_frozen_pools_take_densities_in_turn_and_variants_round_by_round(frozen: FrozenFlowEnv) -> None:
    densities, variants = frozen.config.densities, frozen.config.variants
    for split in ("train", "test"):
        pool = frozen.pool(split)
        assert [e.density for e in pool] == [densities[i % 2] for i in range(len(pool))]
        assert [e.variant for e in pool] == [variants[(i // 2) % len(variants)] for i in range(len(pool))]
        assert [e.index for e in pool] == list(range(len(pool)))
        for e in pool:
            assert e.x.shape == (TINY_FROZEN["batch_size"], 2) and (e.region >= 0) == (e.variant == "region")


@pytest.mark.parametrize("densities", [("2spirals",), ("rings", "2spirals")])
def test_region_episodes_take_the_regions_in_turn_and_no_point_serves_twice(densities: tuple[str, ...]) -> None:
    """More region episodes than regions: each density's regions come round in turn, and no point
    is in two episodes, within a pool or across the two."""
    config = FrozenConfig(densities=densities, variants=("region", "noise:0.5"), batch_size=32,
                          pools=PoolConfig(train_pool_size=12, test_pool_size=12))
    pools = episode_pools(config)
    for density in densities:
        regions = [e.region for split in ("train", "test") for e in pools[split]
                   if e.density == density and e.variant == "region"]
        count = TOY_DENSITIES[density][1]
        assert len(regions) > count and regions == [i % count for i in range(len(regions))]
    points = [tuple(p) for split in ("train", "test") for e in pools[split] if e.variant == "region"
              for p in e.x.tolist()]
    assert len(points) == len(set(points))


def test_the_scale_variant_scales_the_points(cache: str) -> None:
    """Points of a ``scale:S`` episode are the density's points times S: centred where the
    density is (the toy densities are centred at 0), spread S times as far."""
    config = FrozenConfig(densities=("8gaussians",), variants=("noise:0.01", "scale:3"), batch_size=64,
                          pools=PoolConfig(train_pool_size=8, test_pool_size=2))
    pools = episode_pools(config)
    plain = [e.x for e in pools["train"] if e.variant == "noise:0.01"]
    scaled = [e.x for e in pools["train"] if e.variant == "scale:3"]
    assert float(torch.cat(scaled).mean(0).norm()) < 1.0
    ratio = float(torch.cat(scaled).norm(dim=1).mean() / torch.cat(plain).norm(dim=1).mean())
    assert ratio == pytest.approx(3.0, rel=0.1)


def test_a_frozen_first_step_reaches_the_solver(frozen: FrozenFlowEnv, cache: str) -> None:
    env = gym.make("CNF-Frozen-Mixed-v0", **{**TINY_FROZEN, "densities": ("checkerboard", "8gaussians")},
                   num_blocks=2, cache=cache, action_mode="tol_first_step").unwrapped
    small = env.play("test", 0, [np.array([-5.0, -3.0])])
    whole = env.play("test", 0, [np.array([-5.0, 0.0])])
    assert small["nfe"] != whole["nfe"]
    state = env.models["checkerboard"].start(env.pool("test")[0].x)
    with torch.no_grad():
        for _ in range(2):
            state, stats = env.models["checkerboard"].advance(state, 1e-5, first_step=1e-3)
            small["nfe"] -= stats.nfe
    assert small["nfe"] == 0  # the env's solves are those of the blocks run by hand with that first step


def test_a_tasks_default_flow_is_its_first_densitys(frozen: FrozenFlowEnv) -> None:
    from infocnf_env.frozen import toy_flow

    flow = toy_flow(frozen.config, log=None)
    for a, b in zip(flow.state_dict().values(), frozen.models["checkerboard"].state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_a_frozen_observation_holds_the_block_and_the_density(frozen: FrozenFlowEnv) -> None:
    for index, density in ((0, "checkerboard"), (1, "8gaussians")):
        obs, info = frozen.reset(options={"episode": index, "split": "test"})
        assert info["density"] == density == frozen.family_of("test", index)
        assert obs[:2].tolist() == [1.0, 0.0] and obs[6:8].tolist() == [float(index == 0), float(index == 1)]
        assert not obs[8:].any()  # no feedback before the first block
        obs, _, _, _, step = frozen.step(np.array([-3.0]))
        assert obs[:2].tolist() == [0.0, 1.0] and obs[6:8].tolist() == [float(index == 0), float(index == 1)]
        assert obs[8] == pytest.approx(math.log1p(step["nfe"])) and obs[11] == pytest.approx(-3.0)
        *_, info = frozen.step(np.array([-3.0]))
        assert info["nfe_reference"] == frozen.reference_nfe["test"][index]


# ---------------------------------------------------------------------------- the grid's cache
GRID = [-6.0, -3.0]


@pytest.fixture(scope="module")
def ode_grid(ode: ODETaskEnv) -> B.GridTable:
    return B.grid_table(ode, GRID)


def _same(a: B.GridTable, b: B.GridTable) -> bool:
    return all(np.allclose(getattr(a, name)[s], getattr(b, name)[s], equal_nan=True)
               for name in ("reward", "nfe", "error") for s in ("train", "test"))


@pytest.mark.parametrize("change", [dict(alpha=2.0), dict(error_weight=3.0), dict(error_target=1e-2),
                                    dict(error_form="linear"), dict(segments=3), dict(warm_start=False),
                                    dict(method="tsit5")])
def test_the_cached_grid_is_the_grid_of_the_envs_own_settings(ode: ODETaskEnv, ode_grid: B.GridTable,
                                                              change: dict) -> None:
    assert _same(B.cached_grid_table(ode, GRID), ode_grid)
    other = ODETaskEnv(**{**TINY_ODE, **change}, cache=ode.config.cache)
    fresh = B.grid_table(other, GRID)
    assert not _same(fresh, ode_grid), change  # the setting matters
    assert _same(B.cached_grid_table(other, GRID), fresh), change


def test_the_cached_grid_follows_the_failure_penalty_and_ignores_the_seed(ode: ODETaskEnv, tmp_path) -> None:
    kwargs = {**TINY_ODE, "max_num_steps": 12, "cache": str(tmp_path)}  # the tight constant fails
    first = B.cached_grid_table(ODETaskEnv(**kwargs), GRID)
    assert np.isinf(first.error["test"][:, 0]).any()
    files = set(tmp_path.iterdir())
    again = B.cached_grid_table(ODETaskEnv(**kwargs, seed=3), GRID)
    assert set(tmp_path.iterdir()) == files and _same(first, again)  # the episode draws do not change a grid
    other = ODETaskEnv(**kwargs, failure_penalty=7.0)
    assert _same(B.cached_grid_table(other, GRID), B.grid_table(other, GRID))
    wider = B.cached_grid_table(ODETaskEnv(**kwargs), [-6.0, -4.5, -3.0])
    assert wider.log_tols == [-6.0, -4.5, -3.0] and wider.reward["test"].shape[1] == 3


def test_the_cached_frozen_grid_follows_the_reward(frozen: FrozenFlowEnv) -> None:
    B.cached_grid_table(frozen, GRID)
    other = gym.make("CNF-Frozen-Mixed-v0", **{**TINY_FROZEN, "densities": ("checkerboard", "8gaussians")},
                     num_blocks=2, cache=frozen.config.cache, error_weight=7.0).unwrapped
    assert _same(B.cached_grid_table(other, GRID), B.grid_table(other, GRID))
    assert _same(B.cached_grid_table(frozen, GRID), B.grid_table(frozen, GRID))
