"""The benchmark tasks' native vector envs (``gymnasium.make_vec`` -> infocnf_env.vector) and the
batched solves under them (flows.ode.solve_batch, flows.CNFBlock.forward_batch): the same
episodes as the single env, NFE against an independent count, Gymnasium's autoreset and seeding
contract, failures kept to their own episode, and one clear error for a bad ``num_envs``."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from flowkit import TINY_FROZEN, TINY_ODE, count_net_calls, perturb

import infocnf_env  # noqa: F401  (registers the ids)
from flows import SolverError, build_model
from flows.ivp import FAMILIES, BatchDynamics, IVPDynamics, draw_instance
from flows.nets import ConcatConv2d, ConcatLinear, ConcatSquashLinear
from flows.ode import NFECounter, solve, solve_batch
from infocnf_env.vector import BenchmarkVectorEnv, FrozenVectorEnv, ODEVectorEnv, sub_env_info

POOL = dict(train_pool_size=6, test_pool_size=6)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("vector-cache"))


def _ode(cache: str, num_envs: int, **kwargs) -> BenchmarkVectorEnv:
    return gym.make_vec("ODE-Mixed-v0", num_envs=num_envs, **{**TINY_ODE, **POOL, **kwargs}, cache=cache)


def _frozen(cache: str, num_envs: int, **kwargs) -> BenchmarkVectorEnv:
    return gym.make_vec("CNF-Frozen-Mixed-v0", num_envs=num_envs, **{**TINY_FROZEN, **POOL, **kwargs},
                        densities=("checkerboard", "8gaussians"), num_blocks=2, cache=cache)


def _instances(count: int, seed: int = 0) -> list:
    generator = torch.Generator().manual_seed(seed)
    names = ["vdp", "lorenz", "kepler", "arenstorf"]
    return sorted((draw_instance(names[i % 4], generator) for i in range(count)), key=lambda inst: inst.family)


def _row_solve(instances: list, tols: list[float], first_step: list[float] | None = None, max_num_steps=None):
    dynamics = BatchDynamics(instances)
    t1 = torch.tensor([FAMILIES[inst.family].t_end / 4 for inst in instances], dtype=torch.float64)
    return solve_batch(dynamics, dynamics.pad([inst.y0 for inst in instances]), torch.zeros_like(t1), t1,
                       torch.tensor(tols, dtype=torch.float64), weights=dynamics.weights,
                       first_step=None if first_step is None else torch.tensor(first_step, dtype=torch.float64),
                       max_num_steps=max_num_steps)


# ---------------------------------------------------------------------------- the batched solve
@pytest.mark.parametrize("first_step", [None, 0.01])
def test_a_rows_nfe_is_the_number_of_calls_its_own_solve_makes(first_step) -> None:
    """Alone in the batch, a row's NFE is counted independently: by the dynamics' own calls."""
    for inst in _instances(4):
        calls = [0]
        dynamics = BatchDynamics([inst])

        def counted(t, y, dynamics=dynamics, calls=calls):
            calls[0] += 1
            return dynamics(t, y)

        t_end = torch.tensor([FAMILIES[inst.family].t_end / 4], dtype=torch.float64)
        out = solve_batch(counted, dynamics.pad([inst.y0]), torch.zeros(1, dtype=torch.float64), t_end,
                          torch.tensor([1e-6], dtype=torch.float64), weights=dynamics.weights,
                          first_step=None if first_step is None else torch.tensor([first_step], dtype=torch.float64))
        assert out.errors == [None] and out.nfe[0] == calls[0]
        assert out.accepted[0] + out.rejected[0] == (calls[0] - (1 if first_step else 2)) // 6


def test_each_row_is_solved_as_if_alone_with_its_own_tolerance_and_first_step() -> None:
    instances = _instances(8)
    tols = [10.0 ** -k for k in (3, 5, 7, 4, 6, 8, 3, 9)]
    firsts = [math.nan, 0.01, math.nan, 0.1, 0.001, math.nan, 0.05, math.nan]
    together = _row_solve(instances, tols, firsts)
    for row, inst in enumerate(instances):
        alone = _row_solve([inst], [tols[row]], [firsts[row]])
        assert together.nfe[row] == alone.nfe[0] and together.accepted[row] == alone.accepted[0]
        assert together.rejected[row] == alone.rejected[0]
        # equal up to rounding: a batch's stage sums may round otherwise than a single row's
        assert together.last_step[row] == pytest.approx(alone.last_step[0], rel=1e-12)
        torch.testing.assert_close(together.y[row], alone.y[0], rtol=1e-12, atol=1e-14)


def test_a_row_matches_the_solve_layers_one_problem_torchode_solve() -> None:
    """An independent path: torchode through ``flows.ode.solve`` (atol and rtol in the bound, NFE
    counted by the dynamics, steps reported by callbacks) takes the same steps."""
    for inst in _instances(4, seed=1):
        out = _row_solve([inst], [1e-6])
        func = IVPDynamics(inst)
        counter = func.counter = NFECounter()
        t = torch.tensor([0.0, FAMILIES[inst.family].t_end / 4], dtype=torch.float64)
        (ys,) = solve(func, (inst.y0,), t, counter, tol=1e-6, backend="torchode")
        assert (out.nfe[0], out.accepted[0], out.rejected[0]) == (counter.forward, counter.accepted, counter.rejected)
        # the bound's tolerance enters in another order (the norm divides by it): equal up to rounding
        assert out.last_step[0] == pytest.approx(counter.last_step, rel=1e-6)
        torch.testing.assert_close(out.y[0, : len(inst.y0)], ys[-1], rtol=1e-8, atol=1e-10)


def test_a_failed_row_fails_alone() -> None:
    instances = _instances(4)
    tols = [1e-3, 1e-12, 1e-3, 1e-3]  # row 1 runs past the step cap
    together = _row_solve(instances, tols, max_num_steps=40)
    assert together.errors[1] is not None and "max steps" in together.errors[1]
    assert [e is None for e in together.errors] == [True, False, True, True]
    for row in (0, 2, 3):
        alone = _row_solve([instances[row]], [tols[row]], max_num_steps=40)
        assert together.nfe[row] == alone.nfe[0]
        torch.testing.assert_close(together.y[row], alone.y[0], rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(together.y[1], BatchDynamics(instances).pad([instances[1].y0])[0])  # left as it was


def test_batch_dynamics_need_the_instances_grouped_by_family() -> None:
    generator = torch.Generator().manual_seed(0)
    vdp, lorenz = (draw_instance(name, generator) for name in ("vdp", "lorenz"))
    BatchDynamics([vdp, vdp, lorenz])
    with pytest.raises(ValueError, match="grouped by family"):
        BatchDynamics([vdp, lorenz, vdp])


# ---------------------------------------------------------------------------- vector == single
ODE_MODES = [dict(action_mode="tol"), dict(action_mode="tol_first_step"), dict(action_mode="tol_method"),
             dict(backend="torchode-pi")]


def _actions(space: gym.spaces.Box, count: int, steps: int, seed: int) -> np.ndarray:
    """``(steps, count, dim)`` actions spread over the space (every method, loose and tight)."""
    rng = np.random.default_rng(seed)
    return rng.uniform(space.low, space.high, size=(steps, count, *space.shape)).astype(np.float32)


def _vector_episodes(venv: BenchmarkVectorEnv, split: str, actions: np.ndarray) -> tuple[np.ndarray, list[dict]]:
    """One episode per sub-env (episode i of ``split`` in sub-env i): total rewards and last infos."""
    venv.reset(options={"split": split, "episode": list(range(venv.num_envs))})
    totals = np.zeros(venv.num_envs)
    finals: list[dict] = [{} for _ in range(venv.num_envs)]
    done = np.zeros(venv.num_envs, dtype=bool)
    for step_actions in actions:
        _, rewards, terminated, truncated, infos = venv.step(step_actions)
        totals += np.where(done, 0.0, rewards)
        for i in np.flatnonzero((terminated | truncated) & ~done):
            finals[i] = {key: value[i] for key, value in infos["final_info"].items() if not key.startswith("_")}
        done |= terminated | truncated
    assert done.all()
    return totals, finals


# ---------------------------------------------------------------------- the flows' batched block solve
@pytest.mark.parametrize("layer", [ConcatLinear(3, 5), ConcatSquashLinear(3, 5)], ids=["concat", "concatsquash"])
def test_a_layer_given_one_time_per_sample_gives_each_sample_its_own_times_output(layer) -> None:
    h, t = torch.randn(4, 3), torch.tensor([0.0, 0.3, 0.3, 1.0])
    alone = torch.cat([layer(t[i], h[i: i + 1]) for i in range(4)])
    assert torch.allclose(layer(t, h), alone, atol=1e-6)
    conv = ConcatConv2d(2, 3)
    x = torch.randn(4, 2, 5, 5)
    assert torch.allclose(conv(t, x), torch.cat([conv(t[i], x[i: i + 1]) for i in range(4)]), atol=1e-6)


def _toy_flow(backend: str = "torchode", blocks: int = 1, seed: int = 0):
    torch.manual_seed(seed)
    model = build_model("cnf", (2,), 4, "mlp", hidden=16, num_blocks=blocks, divergence="exact", logit_alpha=None,
                        num_levels=None, max_num_steps=500).double().eval()
    perturb(model, 0.8, seed)  # dynamics that need several steps and reject some
    for block in model.blocks:
        block.backend = backend
        block.sqrt_end_time.fill_(2.0 ** 0.5)  # a span of 2: a first step is a fraction of it
    return model


@pytest.mark.parametrize("backend", ["torchode", "torchode-pi"])
@pytest.mark.parametrize("first_step", [None, 0.05])
def test_a_batched_block_solve_is_each_rows_own_solve(backend: str, first_step) -> None:
    """Each row of a batch gets what it gets solved alone (float64: to amplified roundoff), and the steps
    and NFE of the block's one-problem solve (``forward``), whose controller holds its absolute
    tolerance in float32 (torchode's buffer): z and log-determinant agree to that rounding."""
    model = _toy_flow(backend)
    block = model.blocks[0]
    z = torch.randn(5, 6, 2, dtype=torch.float64) * torch.tensor([0.3, 1.0, 2.0, 3.0, 4.0]).reshape(5, 1, 1).double()
    tols = [1e-2, 1e-6, 1e-4, 1e-3, 1e-5]
    batch = block.forward_batch(z, tols, [first_step] * 5)
    for row, out in enumerate(batch):
        (own,) = block.forward_batch(z[row: row + 1], tols[row: row + 1], [first_step])
        assert not isinstance(out, SolverError) and not isinstance(own, SolverError)
        assert out.stats.nfe == own.stats.nfe and out.stats.counter.last_step == pytest.approx(
            own.stats.counter.last_step, rel=1e-8)
        for mine, its in ((out.z, own.z), (out.logdet, own.logdet)):
            assert torch.allclose(mine, its, rtol=1e-9, atol=1e-9)
        with torch.no_grad():
            alone = block(z[row], tol=tols[row], first_step=first_step)
        assert out.stats.nfe == alone.stats.nfe
        assert (out.stats.counter.accepted, out.stats.counter.rejected) == (
            alone.stats.counter.accepted, alone.stats.counter.rejected)
        assert torch.allclose(out.logdet, alone.logdet, rtol=1e-6, atol=1e-8)
    assert len({out.stats.nfe for out in batch}) > 1  # the rows' own tolerances decided their steps


def test_a_first_step_is_a_fraction_of_the_blocks_span_alone_and_batched(monkeypatch) -> None:
    """``first_step`` is a fraction of the block's time span (here 2): both solves start there."""
    import flows.cnf_block as cnf_block

    block = _toy_flow().blocks[0]
    seen: list = []
    solve_alone, solve_rows = cnf_block.solve, cnf_block.solve_batch
    monkeypatch.setattr(cnf_block, "solve", lambda *a, **k: seen.append(k["first_step"]) or solve_alone(*a, **k))
    monkeypatch.setattr(cnf_block, "solve_batch",
                        lambda *a, **k: seen.append(k["first_step"].tolist()) or solve_rows(*a, **k))
    z = torch.randn(2, 4, 2, dtype=torch.float64)
    with torch.no_grad():
        block(z[0], tol=1e-3, first_step=0.25)
    block.forward_batch(z, [1e-3, 1e-3], [0.25, None])
    assert seen[0] == pytest.approx(0.5) and seen[1][0] == pytest.approx(0.5) and math.isnan(seen[1][1])


def test_a_batched_block_rows_nfe_is_the_number_of_calls_its_solve_makes() -> None:
    model = _toy_flow()
    calls = count_net_calls(model)
    (out,) = model.blocks[0].forward_batch(torch.randn(1, 6, 2, dtype=torch.float64), [1e-5], [None])
    assert not isinstance(out, SolverError) and out.stats.nfe == calls["n"] > 0


def test_a_flows_batched_advance_is_its_advance_block_by_block() -> None:
    model = _toy_flow(blocks=2)
    xs = [torch.randn(6, 2, dtype=torch.float64) * scale for scale in (0.5, 2.0, 3.0)]
    states = [model.start(x) for x in xs]
    alone = [model.start(x) for x in xs]
    for tol in (1e-3, 1e-5):
        batch = model.advance_batch(states, [tol, tol * 10, tol / 10], [None, 0.1, None])
        for k, result in enumerate(batch):
            assert not isinstance(result, SolverError)
            with torch.no_grad():
                alone[k], stats = model.advance(alone[k], [tol, tol * 10, tol / 10][k], first_step=[None, 0.1, None][k])
            assert result[1].nfe == stats.nfe and result[0].position == alone[k].position
            assert torch.allclose(result[0].logdet, alone[k].logdet, rtol=1e-6, atol=1e-8)
        states = [result[0] for result in batch]
    with pytest.raises(ValueError, match="same block"):
        model.advance_batch([model.start(xs[0]), states[0]], [1e-3, 1e-3], [None, None])


def test_a_failed_row_of_a_batched_block_fails_alone() -> None:
    block = _toy_flow().blocks[0]
    z = torch.randn(3, 6, 2, dtype=torch.float64)
    z[1, 0, 0] = float("nan")
    out = block.forward_batch(z, [1e-4] * 3, [None] * 3)
    assert isinstance(out[1], SolverError)
    for row in (0, 2):
        with torch.no_grad():
            alone = block(z[row], tol=1e-4)
        assert not isinstance(out[row], SolverError) and out[row].stats.nfe == alone.stats.nfe


def test_a_batched_block_solve_refuses_what_it_cannot_batch() -> None:
    model = _toy_flow()
    block = model.blocks[0]
    z = torch.randn(2, 4, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="one tolerance and one first step per row"):
        block.forward_batch(z, [1e-3], [None, None])
    block.train()
    with pytest.raises(ValueError, match="evaluation mode with the exact divergence"):
        block.forward_batch(z, [1e-3] * 2, [None] * 2)
    block.eval()
    block.backend = "torchdiffeq"
    with pytest.raises(ValueError, match="needs a backend in torchode, torchode-pi"):
        block.forward_batch(z, [1e-3] * 2, [None] * 2)


@pytest.mark.parametrize("mode", ODE_MODES, ids=lambda m: "-".join(map(str, m.values())))
def test_a_sub_envs_ode_episode_is_the_single_envs(cache: str, mode: dict) -> None:
    venv = _ode(cache, 6, **mode)
    single = gym.make("ODE-Mixed-v0", **{**TINY_ODE, **POOL, **mode}, cache=cache).unwrapped
    actions = _actions(single.action_space, 6, single.num_blocks, seed=3)
    totals, finals = _vector_episodes(venv, "test", actions)
    for i in range(6):
        played = single.play("test", i, list(actions[:, i]))
        assert finals[i]["nfe_forward"] == played["nfe"]
        assert totals[i] == pytest.approx(played["reward"], rel=1e-9)
        assert finals[i]["error"] == pytest.approx(played["error"], rel=1e-9)


#: The frozen flows' solvers: batched (the default: torchode, float64), one episode at a time.
FROZEN_SOLVERS = {"in-turn": {"backend": "torchdiffeq", "dtype": "float32"}, "batched": {},
                  "batched-pi": {"backend": "torchode-pi", "dtype": "float64"}}


@pytest.mark.parametrize("solver", list(FROZEN_SOLVERS))
@pytest.mark.parametrize("mode", ["tol", "tol_first_step"])
def test_a_sub_envs_frozen_episode_is_the_single_envs(cache: str, mode: str, solver: str) -> None:
    venv = _frozen(cache, 3, action_mode=mode, **FROZEN_SOLVERS[solver])
    single = venv.task
    actions = _actions(single.action_space, 3, single.num_blocks, seed=4)
    totals, finals = _vector_episodes(venv, "train", actions)
    for i in range(3):
        played = single.play("train", i, list(actions[:, i]))
        assert finals[i]["nfe_forward"] == played["nfe"]
        assert totals[i] == pytest.approx(played["reward"], rel=1e-9)
        # the error is a difference of nearby log-densities: its rounding is absolute
        assert finals[i]["error"] == pytest.approx(played["error"], rel=1e-9, abs=1e-10)


@pytest.mark.parametrize("solver", [*FROZEN_SOLVERS, "torchode-float32"])
def test_the_frozen_vector_env_batches_each_density_and_block_in_float64_on_torchode(cache: str, solver: str,
                                                                                    monkeypatch) -> None:
    from flows import FlowModel

    calls: list[int] = []
    batched = FlowModel.advance_batch

    def counted(self, states, tols, first_steps):
        calls.append(len(states))
        return batched(self, states, tols, first_steps)

    monkeypatch.setattr(FlowModel, "advance_batch", counted)
    venv = _frozen(cache, 4, **FROZEN_SOLVERS.get(solver, {"dtype": "float32"}))
    venv.reset(seed=0, options={"episode": [0, 1, 2, 3]})  # two episodes of each of the two densities
    venv.step(np.full((4, 1), -3.0, dtype=np.float32))
    assert calls == ([2, 2] if solver.startswith("batched") else [])  # float32 solves in turn


def test_scoring_a_pool_in_one_batch_gives_each_episodes_own_score(cache: str) -> None:
    venv = _ode(cache, 2)
    action = venv.task.constant_action(1e-5)
    batched = venv.play_many("test", list(range(6)), action)
    for i, played in enumerate(batched):
        alone = venv.task.play("test", i, action)
        assert played["nfe"] == alone["nfe"] and played["failed"] == alone["failed"]
        assert played["reward"] == pytest.approx(alone["reward"], rel=1e-9)
        assert played["error"] == pytest.approx(alone["error"], rel=1e-9)


def test_a_pools_score_is_the_mean_of_its_own_episodes(cache: str) -> None:
    """score(policy, split) of the vector env and of its task: reward, NFE and error are means
    over the episodes of the pool asked for (six episodes of two families: the pools differ, and
    a median is not their mean)."""
    venv = _ode(cache, 2)
    action = venv.task.constant_action(1e-5)
    played = {split: venv.task.play_many(split, list(range(6)), action) for split in ("train", "test")}
    nfe = {split: [r["nfe"] for r in results] for split, results in played.items()}
    assert np.mean(nfe["train"]) != pytest.approx(np.mean(nfe["test"]))
    assert any(np.median(v) != pytest.approx(np.mean(v)) for v in nfe.values())
    for split, results in played.items():
        for score in (venv.score(action, split), venv.task.score(action, split)):
            assert score["episodes"] == 6 and score["failures"] == 0
            for key in ("reward", "nfe", "error"):
                assert score[key] == pytest.approx(np.mean([r[key] for r in results]), rel=1e-12), (split, key)


# ---------------------------------------------------------------------------- Gymnasium's contract
def test_make_vec_gives_the_native_env_with_batched_spaces(cache: str) -> None:
    venv = _ode(cache, 3)
    assert isinstance(venv, ODEVectorEnv) and isinstance(_frozen(cache, 1), FrozenVectorEnv)
    assert venv.metadata["autoreset_mode"] == gym.vector.AutoresetMode.SAME_STEP
    assert venv.action_space.shape == (3, 1)
    assert venv.observation_space.shape == (3, *venv.single_observation_space.shape)
    obs, info = venv.reset(seed=0)
    assert obs.shape == venv.observation_space.shape and info["_index"].all() and info["index"].shape == (3,)


def test_an_ended_episode_autoresets_in_the_same_step_with_its_final_observation(cache: str) -> None:
    venv = _ode(cache, 2)
    venv.reset(seed=1)
    blocks = venv.task.num_blocks
    for _ in range(blocks - 1):
        _, _, terminated, truncated, infos = venv.step(np.full((2, 1), -5.0, np.float32))
        assert not terminated.any() and "final_obs" not in infos
    obs, rewards, terminated, truncated, infos = venv.step(np.full((2, 1), -5.0, np.float32))
    assert terminated.all() and not truncated.any() and infos["_final_obs"].all()
    assert infos["final_info"]["error"].shape == (2,) and np.isfinite(infos["final_info"]["error"]).all()
    np.testing.assert_array_equal(infos["final_obs"][0], venv.task._terminal())
    # the returned observation starts the next episode: its segment one-hot is segment 0
    np.testing.assert_array_equal(obs[:, :blocks], np.eye(blocks, dtype=np.float32)[[0, 0]])
    assert venv.iteration == 2


def test_seeded_sub_envs_draw_the_single_envs_episodes_and_unseeded_ones_differ(cache: str) -> None:
    def draws(venv: BenchmarkVectorEnv, seed=None, resets: int = 6) -> list[list[int]]:
        out = [list(venv.reset(seed=seed)[1]["index"])]
        for _ in range(resets - 1):
            out.append(list(venv.reset()[1]["index"]))
        return out

    seeded = draws(_ode(cache, 3), seed=7)
    assert seeded == draws(_ode(cache, 3), seed=7)
    for i in range(3):
        single = gym.make("ODE-Mixed-v0", **{**TINY_ODE, **POOL}, cache=cache)
        indices = [single.reset(seed=7 + i)[1]["index"]] + [single.reset()[1]["index"] for _ in range(5)]
        assert [row[i] for row in seeded] == indices
    assert draws(_ode(cache, 3)) != draws(_ode(cache, 3))  # 6^18 equally likely draws


def test_a_vector_env_seeded_at_construction_seeds_sub_env_i_with_seed_plus_i(cache: str) -> None:
    """``make_vec(..., seed=s)`` (the task's ``seed``) seeds sub-env i as ``reset(seed=s)`` does:
    with ``s + i``, so its draws are those of the single env made with ``seed=s + i``."""
    venv = _ode(cache, 3, seed=7)
    draws = [list(venv.reset()[1]["index"]) for _ in range(6)]
    for i in range(3):
        single = gym.make("ODE-Mixed-v0", **{**TINY_ODE, **POOL}, seed=7 + i, cache=cache)
        assert [row[i] for row in draws] == [single.reset()[1]["index"] for _ in range(6)]


def test_a_failed_solve_truncates_only_its_own_episode(cache: str) -> None:
    venv = _ode(cache, 3, max_num_steps=30)
    venv.reset(options={"episode": [0, 1, 2]})
    _, rewards, terminated, truncated, infos = venv.step(np.array([[-3.0], [-9.0], [-3.0]], np.float32))
    assert list(truncated) == [False, True, False] and not terminated.any()
    assert "solver_error" in infos["final_info"] and rewards[1] == -venv.task.reward_config.failure_penalty
    assert venv.solver_failures == 1 and venv.iteration == 0  # a truncated episode is no finished iteration
    # one sub-env's entries, as the single env gives them: only what its own info holds
    assert "solver_error" in sub_env_info(infos["final_info"], 1) and sub_env_info(infos["final_info"], 0) == {}
    assert "nfe" not in sub_env_info(infos, 1) and sub_env_info(infos, 0)["nfe"] > 0  # 1 is on its next episode
    single = gym.make("ODE-Mixed-v0", **{**TINY_ODE, **POOL}, max_num_steps=30, cache=cache).unwrapped
    single.reset(options={"episode": 2})
    _, reward, *_ = single.step(np.array([-3.0], np.float32))
    assert rewards[2] == pytest.approx(reward, rel=1e-12)


def test_a_batched_frozen_sub_env_that_failed_goes_on_from_its_first_block_beside_the_others(cache: str) -> None:
    """After a failed solve one sub-env is at block 0 while the others are at block 1: each
    block is solved with its own episodes, and every sub-env's steps are the single env's."""
    one_density = {**TINY_FROZEN, **POOL, **FROZEN_SOLVERS["batched"], "densities": ("checkerboard",),
                   "num_blocks": 2, "cache": cache}  # so that every block shares one flow
    venv = gym.make_vec("CNF-Frozen-Mixed-v0", num_envs=3, **one_density)
    venv.task.pool("train")[1].x[0, 0] = float("nan")  # episode 1's solve fails (non-finite)
    venv.reset(seed=0, options={"episode": [0, 1, 2]})
    first = np.full((3, 1), -1.0, np.float32)
    _, _, _, truncated, infos = venv.step(first)
    assert list(truncated) == [False, True, False]
    index = int(infos["index"][1])  # sub-env 1's next episode, drawn by its seeded generator
    assert index != 1
    then = np.array([[-2.0], [-1.0], [-2.0]], np.float32)
    _, rewards, terminated, _, infos = venv.step(then)
    assert list(terminated) == [True, False, True]  # 0 and 2 finished their second block, 1 its first
    single = gym.make("CNF-Frozen-Mixed-v0", **one_density).unwrapped
    for i in (0, 2):
        played = single.play("train", i, [first[i], then[i]])
        assert infos["final_info"]["nfe_forward"][i] == played["nfe"]
    single.reset(options={"episode": index})
    _, reward, *_ = single.step(then[1])
    assert rewards[1] == pytest.approx(reward, rel=1e-9)


@pytest.mark.parametrize("num_envs", [0, -2, 1.5, "4", True])
def test_a_bad_num_envs_is_one_clear_error(cache: str, num_envs) -> None:
    with pytest.raises(ValueError, match="num_envs must be an integer >= 1") as err:
        _ode(cache, num_envs)
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------------------- agents on it
def test_sb3s_vecenv_view_flags_a_failed_solve_as_a_truncation_and_keeps_the_last_observation(cache: str) -> None:
    from agents.sb3 import NativeVecEnv

    venv = NativeVecEnv(_ode(cache, 3, max_num_steps=30))
    venv.seed(5)
    venv.reset()
    # [-1, 1] -> the bounds (-9, -2): sub-env 1 asks for 1e-9 and fails at the step cap
    _, rewards, dones, infos = venv.step(np.array([[1.0], [-1.0], [1.0]], np.float32))
    assert list(dones) == [False, True, False] and infos[1]["TimeLimit.truncated"] is True
    assert "solver_error" in infos[1] and infos[1]["terminal_observation"].shape == venv.observation_space.shape
    assert "TimeLimit.truncated" not in infos[0] and rewards.dtype == np.float32
    _, _, dones, infos = venv.step(np.ones((3, 1), np.float32))
    assert list(dones) == [True, False, True]  # 0 and 2 end their two segments; 1 is one segment in
    assert infos[0]["TimeLimit.truncated"] is False and np.isfinite(infos[0]["error"])


def test_sb3_n_envs_on_a_benchmark_id_trains_on_the_native_vector_env(cache: str, tmp_path, monkeypatch,
                                                                      capsys) -> None:
    from flowkit import env_kwargs, read_jsonl

    from agents import sb3
    from agents.loop import run_cli
    from infocnf_env.checkpoint import load_checkpoint

    seen: list[int] = []
    real = BenchmarkVectorEnv.step

    def spy(self, actions):
        seen.append(len(actions))
        return real(self, actions)

    monkeypatch.setattr(BenchmarkVectorEnv, "step", spy)
    run_dir = tmp_path / "run"
    argv = ["--env", "ODE-Mixed-v0", "--algo", "ppo", "--eval-every", "0", "--n-envs", "4", "--iterations", "10",
            "--out", str(run_dir), "--no-progress", "--no-tensorboard", "--algo-kwargs", "n_steps=4", "batch_size=8",
            "--env-kwargs", *env_kwargs({**TINY_ODE, **POOL, "cache": cache})]
    summary = sb3.main(argv)
    assert seen and set(seen) == {4}  # every step advanced the 4 episodes together
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    assert [m["iteration"] for m in metrics] == list(range(1, 11)) and summary["iterations"] == 10
    assert all(np.isfinite(m["error"]) and m["nfe_forward"] > 0 for m in metrics)
    assert load_checkpoint(run_dir / "checkpoint.pt")["agent"]["native_envs"]["num_envs"] == 4
    with pytest.raises(SystemExit):
        run_cli(lambda: sb3.main(["--resume", str(run_dir), "--n-envs", "2", "--iterations", "12"]))
    assert "--n-envs 2 differs from the run's 4" in capsys.readouterr().err


def _reinforce_argv(run_dir, cache: str, *extra: str, iterations: int = 8) -> list[str]:
    from flowkit import env_kwargs

    return ["--env", "ODE-Mixed-v0", "--eval-every", "0", "--iterations", str(iterations), "--out", str(run_dir),
            "--no-progress", "--no-tensorboard", *extra, "--env-kwargs", *env_kwargs({**TINY_ODE, **POOL,
                                                                                     "cache": cache})]


def test_reinforce_n_envs_makes_one_update_from_each_batch_of_episodes(cache: str, tmp_path, monkeypatch) -> None:
    from flowkit import read_jsonl

    from agents import reinforce

    updates: list[list[int]] = []
    real = reinforce.ReinforceAgent.end_episodes

    def spy(self, slots):
        slots = list(slots)
        assert all(len(self._episodes[s].rewards) == TINY_ODE["segments"] for s in slots)  # whole episodes
        updates.append(slots)
        return real(self, slots)

    monkeypatch.setattr(reinforce.ReinforceAgent, "end_episodes", spy)
    summary = reinforce.main(_reinforce_argv(tmp_path / "run", cache, "--n-envs", "4", iterations=10))
    assert updates == [[0, 1, 2, 3]] * 3 and summary["iterations"] == 10  # the last batch: 2 of its 4 logged
    metrics = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [m["iteration"] for m in metrics] == list(range(1, 11))
    assert len({m["gate_mean"] for m in metrics[:4]}) == 1 and metrics[3]["gate_mean"] != metrics[4]["gate_mean"]
    for m in metrics:  # each line: its own episode's end (final_info), not the next episode's reset info
        assert math.isfinite(m["error"]) and m["nfe_forward"] == sum(m["nfe_blocks"]) > 0
        assert len(m["tols"]) == TINY_ODE["segments"]


def test_a_sub_env_ended_early_by_a_failed_solve_waits_and_its_next_episode_is_not_learned_from(
        cache: str, tmp_path, monkeypatch) -> None:
    """agents.loop.run_vector_episodes: sub-env 0's first segment fails in every batch; its episode
    is one step (one action, one reward: the failure penalty), and the steps its autoreset episode
    takes while the others finish are neither observed by the agent nor added to its return."""
    from flowkit import read_jsonl

    from agents import reinforce
    from flows.ode import SolverError
    from infocnf_env.ode_env import ODETaskEnv

    real_advance = ODETaskEnv._advance_many
    calls: list[int] = []

    def first_fails(self, plays, actions):
        calls.append(len(plays))
        # two batches of `segments` steps each: a loop that kept a failed sub-env live would
        # go on for ever, each of its autoreset episodes failing again
        assert len(calls) <= 10 * TINY_ODE["segments"], "the batch never ended"
        out = real_advance(self, plays, actions)
        if len(plays) == 3 and plays[0].steps.block == 0:  # the vector env's steps: sub-env 0 comes first
            out[0] = SolverError("forced failure")
        return out

    real_end = reinforce.ReinforceAgent.end_episodes
    seen: list[list[tuple[int, int]]] = []

    def spy(self, slots):
        slots = list(slots)
        seen.append([(len(self._episodes[s].log_probs), len(self._episodes[s].rewards)) for s in slots])
        return real_end(self, slots)

    monkeypatch.setattr(ODETaskEnv, "_advance_many", first_fails)
    monkeypatch.setattr(reinforce.ReinforceAgent, "end_episodes", spy)
    reinforce.main(_reinforce_argv(tmp_path / "run", cache, "--n-envs", "3", iterations=6))
    segments = TINY_ODE["segments"]
    assert seen == [[(1, 1), (segments, segments), (segments, segments)]] * 2  # an action, a reward, each step
    metrics = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    penalty = ODETaskEnv(**{**TINY_ODE, **POOL}, cache=cache).reward_config.failure_penalty
    assert [m["reward"] for m in metrics[::3]] == [-penalty, -penalty]  # sub-env 0's episodes: the penalty alone


def test_one_update_from_several_episodes_averages_their_gradients() -> None:
    """Eq. 7 over a batch (no baseline: the advantages are the returns): the gradient of one update
    from N episodes is the mean over them of each episode's -log pi(a) * return gradient."""
    from agents.reinforce import ReinforceAgent

    space = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)
    agent = ReinforceAgent(space, 1, baseline_momentum=None, seed=0)
    returns = [-1.0, -4.0, -2.5]
    for i, x in enumerate((0.5, -1.0, 2.0)):
        agent.act(np.array([1.0, 0.0, x], np.float32), slot=i)
        agent.observe(returns[i], slot=i)
    params = list(agent.gates.parameters())
    log_probs = [agent._episodes[i].log_probs[0] for i in range(3)]
    expected = torch.autograd.grad(-sum(lp * r for lp, r in zip(log_probs, returns, strict=True)) / 3, params,
                                   retain_graph=True)
    agent.optimizer.step = lambda: None  # keep the gradient, skip the step
    agent.end_episodes([0, 1, 2])
    for p, g in zip(params, expected, strict=True):
        torch.testing.assert_close(p.grad, g)
    assert not agent._episodes  # the batch's episodes are consumed


def test_a_batch_moves_the_baseline_once_to_its_mean_return_and_measures_advantages_from_it() -> None:
    from agents.reinforce import ReinforceAgent

    space = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)
    agent = ReinforceAgent(space, 1, baseline_momentum=0.9, seed=0)
    returns = [-1.0, -4.0, -2.5, -0.5]
    for i, r in enumerate(returns):
        agent.act(np.array([1.0, 0.0, float(i)], np.float32), slot=i)
        agent.observe(r, slot=i)
    stats = agent.end_episodes(range(4))
    assert float(agent.baseline[0]) == pytest.approx(np.mean(returns)) and bool(agent.baseline_ready[0])
    assert stats["advantage"] == pytest.approx(0.0, abs=1e-6)  # each return less the batch's mean
    for i, r in enumerate(returns[:2]):
        agent.act(np.array([1.0, 0.0, float(i)], np.float32), slot=i)
        agent.observe(r, slot=i)
    agent.end_episodes(range(2))
    assert float(agent.baseline[0]) == pytest.approx(0.9 * np.mean(returns) + 0.1 * np.mean(returns[:2]))


def test_reinforce_n_envs_resumes_exactly_from_a_batch_boundary(cache: str, tmp_path) -> None:
    from flowkit import read_jsonl, without_wall_time

    from agents import reinforce

    common = ["--n-envs", "2", "--checkpoint-every", "3"]  # checkpoints fall between batches (after 4)
    reinforce.main(_reinforce_argv(tmp_path / "straight", cache, *common, iterations=8))
    reinforce.main(_reinforce_argv(tmp_path / "split", cache, *common, iterations=4))
    reinforce.main(["--resume", str(tmp_path / "split"), "--iterations", "8", "--no-progress", "--no-tensorboard"])
    straight = read_jsonl(tmp_path / "straight" / "metrics.jsonl")
    split = read_jsonl(tmp_path / "split" / "metrics.jsonl")
    assert without_wall_time(split) == without_wall_time(straight)


def test_reinforce_n_envs_checkpoints_after_the_batch_that_reaches_the_cadence(cache: str, tmp_path,
                                                                             monkeypatch) -> None:
    """Batches of 2 with --checkpoint-every 3: checkpoints after the batches that reach 3 and 6 (at
    4 and 6), never inside a batch, and the final one at 8."""
    from agents import reinforce
    from agents.runner import Run

    written: list[int] = []
    real = Run.checkpoint

    def spy(self, agent):
        written.append(self.iteration)
        return real(self, agent)

    monkeypatch.setattr(Run, "checkpoint", spy)
    reinforce.main(_reinforce_argv(tmp_path / "run", cache, "--n-envs", "2", "--checkpoint-every", "3"))
    assert written == [4, 6, 8]


def test_reinforce_n_envs_on_a_training_env_is_one_clear_error(tmp_path) -> None:
    from flowkit import cli

    from agents import reinforce

    with pytest.raises(ValueError, match="needs a benchmark task"):
        reinforce.main(cli(tmp_path / "run", "--n-envs", "2"))
    assert not (tmp_path / "run").exists()  # refused before anything is written
