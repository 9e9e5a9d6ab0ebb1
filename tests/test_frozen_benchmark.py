"""The frozen-flow benchmark ids (infocnf_env.frozen) and the baselines (infocnf_env.baselines) on them."""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np
import pytest
import torch
from flowkit import TINY_FROZEN, count_net_calls
from gymnasium.utils.env_checker import check_env

import infocnf_env
from flows.toy_densities import TOY_DENSITIES, sample_toy
from flows.train import Plateau
from infocnf_env import baselines as B
from infocnf_env.frozen import FrozenConfig, FrozenFlowEnv, episode_pools, toy_flow

TINY = TINY_FROZEN


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("frozen-cache"))


def _env(cache, **kwargs) -> FrozenFlowEnv:
    return gym.make("CNF-Frozen-Checkerboard-v0", **TINY, cache=cache, **kwargs).unwrapped


@pytest.mark.parametrize("env_id", sorted(infocnf_env.FROZEN_IDS))
def test_every_frozen_id_passes_both_env_checkers(env_id, cache):
    env = gym.make(env_id, hidden=4, train_iterations=3, train_pool_size=3, test_pool_size=2, batch_size=8,
                   cache=cache)  # passive checker
    check_env(env.unwrapped, skip_render_check=True)
    obs, info = env.reset(seed=1)
    assert env.observation_space.contains(obs) and info["variant"] in ("region", "scale:2", "noise:0.5")


def test_toy_densities_are_labelled_by_region():
    g = torch.Generator().manual_seed(0)
    for name, (_, regions) in TOY_DENSITIES.items():
        x, label = sample_toy(name, 2000, g)
        assert x.shape == (2000, 2) and torch.isfinite(x).all() and x.abs().max() < 6
        assert set(label.tolist()) == set(range(regions))
        if name == "rings":  # concentric: the regions differ in radius
            radii = torch.stack([x[label == r].norm(dim=1).mean() for r in range(regions)])
            assert (radii.diff() > 0.5).all()
        else:  # the regions lie apart
            centres = torch.stack([x[label == r].mean(0) for r in range(regions)])
            assert torch.cdist(centres, centres).add(torch.eye(regions) * 10).min() > 0.3


def _reference_logpx(model, x: torch.Tensor) -> torch.Tensor:
    """log p(x) solved as the references are: torchdiffeq's dopri5 at 1e-8 (the episodes' own
    solver, torchode's, left in place afterwards)."""
    backends = [block.backend for block in model.blocks]
    for block in model.blocks:
        block.backend = "torchdiffeq"
    try:
        return model(x, tol=1e-8).logpx
    finally:
        for block, backend in zip(model.blocks, backends, strict=True):
            block.backend = backend


def test_accuracy_error_is_against_an_independent_tight_solve(cache):
    env = _env(cache, error_weight=7.0, alpha=2.0)
    env.reset(options={"episode": 2})
    _, reward, terminated, _, info = env.step(np.array([-1.0]))
    x = env.pool("train")[2].x
    with torch.no_grad():
        loose = env.model(x, tol=1e-1).logpx
        calls = count_net_calls(env.model)
        tight = _reference_logpx(env.model, x)
    expected = float((loose - tight).abs().mean())
    assert terminated and info["error"] == pytest.approx(expected, rel=1e-4, abs=1e-7)
    assert info["error"] > 0
    assert reward == pytest.approx(-2.0 * info["nfe"] - 7.0 * info["error"], rel=1e-6)
    # the cached reference's cost is reported apart, and it is the NFE of a 1e-8 solve
    assert info["nfe_reference"] == calls["n"]


def test_flow_and_references_come_from_the_cache(cache):
    first = _env(cache)
    again = toy_flow(first.config)
    for a, b in zip(first.model.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    other = _env(cache, pool_seed=5)
    assert not torch.equal(other.pool("train")[0].x, first.pool("train")[0].x)
    pools = episode_pools(first.config)
    assert [e.variant for e in pools["test"]] == ["region", "scale:2", "noise:0.5", "region"]


def test_a_variants_amount_scales_its_points_or_its_noise():
    """``scale:S`` multiplies an episode's points by S and ``noise:S`` adds S times unit Gaussian
    noise: under one pool seed the same points and the same noise draw, so (x - points) / S is
    one array whatever S."""
    def first(variant: str) -> torch.Tensor:
        config = FrozenConfig().replace(densities=("checkerboard",), variants=(variant,), train_pool_size=1,
                                        test_pool_size=1)
        return episode_pools(config)["train"][0].x

    points = first("scale:1")
    torch.testing.assert_close(first("scale:2"), 2 * points)
    half, double = (first("noise:0.5") - points) / 0.5, (first("noise:2") - points) / 2
    torch.testing.assert_close(half, double)
    assert 0.5 < float(half.std()) < 2.0  # unit noise


def test_train_and_test_pools_share_no_point(cache):
    pools = episode_pools(_env(cache).config)
    train = {tuple(p) for e in pools["train"] if e.variant == "region" for p in e.x.tolist()}
    test = {tuple(p) for e in pools["test"] if e.variant == "region" for p in e.x.tolist()}
    assert train and test and not train & test


@pytest.mark.parametrize("variant", ["region", "scale:1", "noise:1e-30"])
def test_no_point_is_in_two_episodes_of_any_variant(variant):
    """Every variant draws its episodes' points from those no episode has taken yet, across both
    pools (``scale:1`` and a vanishing noise leave the drawn points as they are)."""
    config = FrozenConfig().replace(densities=("checkerboard", "8gaussians"), variants=(variant,),
                                    train_pool_size=12, test_pool_size=12)
    pools = episode_pools(config)
    rows = [tuple(p) for split in ("train", "test") for e in pools[split] for p in e.x.tolist()]
    assert len(rows) == 24 * config.batch_size and len(set(rows)) == len(rows)


def test_episodes_are_drawn_by_the_seed(cache):
    def draws(seed):
        env = _env(cache)
        env.reset(seed=seed)
        return [env.reset()[1]["index"] for _ in range(12)]

    assert draws(0) == draws(0) and draws(0) != draws(1)


def test_oracle_bounds_every_constant_and_the_table_matches_a_constant_policy(cache):
    env = _env(cache)
    table = B.grid_table(env, [-6.0, -3.0, 0.0])
    oracle = B.oracle(table, "test")
    for a in range(len(table.log_tols)):
        assert oracle["reward"] >= B.column(table, a, "test")["reward"] - 1e-9
    best = B.best_constant(table, "train")  # chosen on the training pool, scored on the test pool
    score = env.score(lambda obs, block: np.array([table.log_tols[best]]), "test")  # through the env itself
    assert score["reward"] == pytest.approx(B.column(table, best, "test")["reward"], rel=1e-6)


def test_best_first_step_is_the_best_of_its_grid_at_the_tolerance(cache):
    env = _env(cache, action_mode="tol_first_step")
    grid = [-2.0, -1.0, 0.0]
    log_first, reward = B.best_first_step(env, -3.0, grid)
    rewards = [env.score(lambda obs, block, f=f: np.array([-3.0, f]), "train")["reward"] for f in grid]
    assert log_first == grid[int(np.argmax(rewards))] and reward == pytest.approx(max(rewards), rel=1e-6)
    with pytest.raises(ValueError, match="tol_first_step"):
        B.best_first_step(_env(cache), -3.0, grid)


def test_make_vec_runs_frozen_envs(cache):
    envs = gym.make_vec("CNF-Frozen-Checkerboard-v0", num_envs=2, vectorization_mode="sync", **TINY, cache=cache)
    obs, info = envs.reset(seed=0, options={"episode": 1})  # the same episode in both
    assert obs.shape == (2, 1 + 4 + 4) and (obs[0] == obs[1]).all()  # block one-hot, statistics, feedback
    _, reward, terminated, _, info = envs.step(np.array([[-3.0], [-5.0]]))
    assert reward.shape == (2,) and terminated.all()
    assert info["nfe"][1] > info["nfe"][0]  # the tighter solve costs more NFE
    weights = FrozenConfig().reward  # the registered reward weights
    np.testing.assert_allclose(reward, -weights.alpha * info["nfe"] - weights.error_weight * info["error"], rtol=1e-6)
    envs.close()


@pytest.mark.parametrize("kwargs, message", [
    (dict(hiddn=8), r"unknown frozen-benchmark kwarg\(s\) \['hiddn'\]; valid: .*densities, "),
    (dict(variants=("shift:2",)), "unknown input variant 'shift:2'"),
    (dict(variants=("noise:-1",)), "needs a positive number"),
    (dict(densities="moons"), "unknown density 'moons'; valid densities: checkerboard"),
    (dict(densities=("rings", "rings")), "densities must not repeat"),
    (dict(densities=()), "densities must name at least one density"),
    (dict(plateau=100), "plateau must be a flows.train.Plateau or None"),
    (dict(test_pool_size=0), "test_pool_size must be a positive integer"),
    (dict(obs_mode="features"), "vector observations only"),
])
def test_bad_benchmark_kwargs_are_one_clear_error(kwargs, message, cache):
    with pytest.raises(ValueError, match=message):
        FrozenConfig().replace(**TINY, cache=cache).replace(**kwargs)


def test_bad_episode_index_is_one_clear_error(cache):
    with pytest.raises(ValueError, match=r"episode must be an index in \[0, 4\) of the train pool"):
        _env(cache).reset(options={"episode": 4})


def test_a_truncated_flow_file_is_retrained_with_a_message(tmp_path, capsys):
    first = _env(str(tmp_path))
    (flow,) = [p for p in tmp_path.glob("*.pt") if "-pool-" not in p.name]
    flow.write_bytes(flow.read_bytes()[:64])
    again = _env(str(tmp_path))
    assert "unreadable" in capsys.readouterr().err
    for a, b in zip(first.model.state_dict().values(), again.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)  # retrained from the same seed


def test_an_unwritable_cache_is_one_clear_error_before_training(tmp_path, capsys):
    from infocnf_env.cache import CacheError

    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(CacheError, match="not writable"):
        _env(str(blocker / "cache"))
    assert "training" not in capsys.readouterr().err


def test_a_stacked_flow_makes_one_decision_per_block(cache):
    env = _env(cache, num_blocks=3)
    assert env.num_blocks == 3 and env.observation_space.shape == (3 + 4 + 4,)
    check_env(env, skip_render_check=True)
    obs, _ = env.reset(seed=0)
    steps = []
    for block in range(3):
        assert obs[:3].argmax() == block
        obs, _, terminated, _, info = env.step(np.array([-2.0 - block]))
        steps.append(info["tol"])
    assert terminated and steps == pytest.approx([1e-2, 1e-3, 1e-4]) and len(info["nfe_blocks"]) == 3
    assert _flow_key(_env(cache).config) != _flow_key(env.config)


#: Every FrozenConfig field that decides the trained flow, and one other valid value of it.
FLOW_FIELDS = dict(densities="pinwheel", hidden=9, num_blocks=2, train_iterations=31, train_batch_size=128,
                   train_lr=2e-3, flow_seed=1, plateau=Plateau())
#: The fields that decide the pool and its cached references (besides the flow's).
POOL_FIELDS = dict(train_pool_size=5, test_pool_size=3, batch_size=17, variants=("region",), pool_seed=1,
                   reference_tol=1e-7, dtype="float32")
#: Fields that decide neither: the reward, the action, the step cap (a reference past it fails
#: rather than changes), the episode draws, where the cache lies, the episodes' solver backend
#: (training and references use torchdiffeq) and the observation's feedback.
OTHER_FIELDS = dict(alpha=2.0, error_weight=7.0, error_form="target", error_target=1e-3, failure_penalty=5.0,
                    tol_bounds=(-6.0, -1.0),
                    action_mode="tol_first_step", first_step_bounds=(-2.0, 0.0), max_num_steps=500, seed=3,
                    cache="elsewhere", backend="torchdiffeq", method="tsit5", feedback=False)


def _flow_key(config: FrozenConfig) -> str:
    return config.flow_key(config.densities[0])


def test_every_field_that_decides_a_cached_artefact_changes_its_key():
    base = FrozenConfig().replace(**TINY)
    for name, value in FLOW_FIELDS.items():
        other = base.replace(**{name: value})
        assert _flow_key(other) != _flow_key(base), name
        assert other.pool_key() != base.pool_key(), name  # the references are the flow's
    for name, value in POOL_FIELDS.items():
        other = base.replace(**{name: value})
        assert other.pool_key() != base.pool_key(), name
        assert _flow_key(other) == _flow_key(base), name  # one trained flow serves every pool
    for name, value in OTHER_FIELDS.items():
        other = base.replace(**{name: value})
        assert (_flow_key(other), other.pool_key()) == (_flow_key(base), base.pool_key()), name
    assert _flow_key(base.replace()) == _flow_key(base)  # a key is a function of the fields
    # every field, the groups' by their flat names, is classified here (obs_mode has a single valid
    # value; feature_samples and feature_size apply to feature observations only)
    groups = {"pools", "reward", "spaces"}
    fields = {f.name for f in dataclasses.fields(FrozenConfig) if f.name not in groups}
    for group in groups:
        fields |= {f.name for f in dataclasses.fields(getattr(base, group))}
    assert fields == {*FLOW_FIELDS, *POOL_FIELDS, *OTHER_FIELDS, "obs_mode", "feature_samples", "feature_size"}


def test_a_mixed_task_solves_each_episode_with_its_own_densitys_flow(cache):
    env = _env(cache, densities=("checkerboard", "8gaussians"))  # the env checkers run on the registered id
    assert env.observation_space.shape == (1 + 4 + 2 + 4,)  # block, statistics, density one-hot, feedback
    assert [e.density for e in env.pool("test")] == ["checkerboard", "8gaussians"] * 2
    assert [env.family_of("train", i) for i in range(4)] == ["checkerboard", "8gaussians"] * 2
    with pytest.raises(AttributeError, match="env.models"):
        env.model  # noqa: B018
    # the two flows differ, and each is the single-density task's flow of that density
    alone = _env(cache, densities="8gaussians")
    for a, b in zip(env.models["8gaussians"].state_dict().values(), alone.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    first, second = (m.state_dict() for m in env.models.values())
    assert any(not torch.equal(first[k], second[k]) for k in first)
    for index, density in ((0, "checkerboard"), (1, "8gaussians")):
        obs, info = env.reset(options={"episode": index, "split": "test"})
        assert info["density"] == density and obs[5:7].argmax() == index
        _, _, terminated, _, info = env.step(np.array([-2.0]))
        with torch.no_grad():  # an independent solve of the same points by that density's flow
            loose = env.models[density](env.pool("test")[index].x, tol=1e-2).logpx
            tight = _reference_logpx(env.models[density], env.pool("test")[index].x)
        assert terminated and info["error"] == pytest.approx(float((loose - tight).abs().mean()), rel=1e-4, abs=1e-7)


def test_the_mixed_benchmark_id_is_small_episodes_of_stacked_flows_trained_to_a_plateau():
    config = infocnf_env.FROZEN_IDS["CNF-Frozen-Mixed-v0"]
    assert set(config.densities) == set(TOY_DENSITIES) and config.num_blocks > 1
    assert config.batch_size <= 16 and config.plateau is not None
