"""The classical solver settings of the benchmark: scipy and torchode methods in the solve layer,
the ODE tasks' method choice and out-of-range pool, the baselines' choices on the training pool,
equal-error savings read off a front, and the cache keys of references and baseline grids."""

from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
import torch
from flowkit import TINY_ODE
from scipy.integrate import solve_ivp

import infocnf_env  # noqa: F401  (registers the ids)
from flows import ivp
from flows.ivp import FAMILIES, IVPDynamics, draw_instance, relative_error
from flows.ode import NFECounter, SolverError, check_backend_options, rescale_step, solve, solver_order
from infocnf_env import ODEConfig, ODETaskEnv
from infocnf_env import baselines as B
from infocnf_env.actions import parse_action


@pytest.fixture(scope="module")
def ode_cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("classical-cache"))


def _instance(family: str, seed: int = 0) -> ivp.Instance:
    return draw_instance(family, torch.Generator().manual_seed(seed))


def _scipy_rhs(instance: ivp.Instance):
    fam, param = FAMILIES[instance.family], torch.tensor(instance.param, dtype=torch.float64)
    return lambda t, y: fam.rhs(torch.tensor(t), torch.from_numpy(y), param).numpy()


# ---------------------------------------------------------------------------- the scipy backend
@pytest.mark.parametrize("method", ["RK23", "RK45", "DOP853"])
def test_the_scipy_backend_is_solve_ivp_with_the_same_nfe(method: str) -> None:
    instance = _instance("kepler")
    func = IVPDynamics(instance)
    func.counter = counter = NFECounter()
    t = torch.tensor([0.0, instance.t_end], dtype=torch.float64)
    with torch.no_grad():
        (ys,) = solve(func, (instance.y0,), t, counter, tol=1e-6, method=method, backend="scipy")
    ref = solve_ivp(_scipy_rhs(instance), (0.0, instance.t_end), instance.y0.numpy(), method=method,
                    rtol=1e-6, atol=1e-6)
    assert counter.forward == ref.nfev  # every evaluation counted by the dynamics, none missed
    np.testing.assert_array_equal(ys[-1].numpy(), ref.y[:, -1])
    stages = {"RK23": 3, "RK45": 6, "DOP853": 12}[method]
    assert ref.nfev == 2 + stages * (counter.accepted + counter.rejected)  # the start heuristic, then each attempt


def test_the_scipy_backend_honours_the_step_cap_and_refuses_what_it_cannot_do() -> None:
    instance = _instance("vdp")
    func = IVPDynamics(instance)
    t = torch.tensor([0.0, instance.t_end], dtype=torch.float64)
    with torch.no_grad(), pytest.raises(SolverError, match="max_num_steps"):
        solve(func, (instance.y0,), t, NFECounter(), tol=1e-9, method="RK45", backend="scipy", max_num_steps=3)
    y0 = instance.y0.clone().requires_grad_(True)
    with pytest.raises(ValueError, match="no gradient"):
        solve(func, (y0,), t, NFECounter(), tol=1e-6, method="RK45", backend="scipy")
    with torch.no_grad(), pytest.raises(ValueError, match="one interval"):
        solve(func, (instance.y0,), torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64), NFECounter(), tol=1e-6,
              method="RK45", backend="scipy")
    with pytest.raises(ValueError, match="supports methods RK23, RK45, DOP853"):
        check_backend_options("scipy", "dopri5", adjoint=False)
    with pytest.raises(ValueError, match="adjoint"):
        check_backend_options("scipy", "RK45", adjoint=True)


def test_tsit5_runs_on_torchode_and_every_methods_order_is_its_step_size_law() -> None:
    instance = _instance("lorenz")
    func = IVPDynamics(instance)
    func.counter = counter = NFECounter()
    t = torch.tensor([0.0, instance.t_end], dtype=torch.float64)
    with torch.no_grad():
        (ys,) = solve(func, (instance.y0,), t, counter, tol=1e-8, method="tsit5", backend="torchode")
    ref = solve_ivp(_scipy_rhs(instance), (0.0, instance.t_end), instance.y0.numpy(), method="DOP853",
                    rtol=1e-12, atol=1e-12)
    assert relative_error(ys[-1], torch.from_numpy(ref.y[:, -1])) < 1e-5 and counter.forward > 0
    expected = {("dopri5", "torchdiffeq"): 5, ("dopri8", "torchdiffeq"): 8, ("bosh3", "torchdiffeq"): 3,
                ("tsit5", "torchode"): 5, ("RK23", "scipy"): 3, ("RK45", "scipy"): 5, ("DOP853", "scipy"): 8}
    for (method, backend), order in expected.items():
        assert solver_order(method, backend) == order, (method, backend)


# ---------------------------------------------------------------------------- the ODE tasks' solvers
def test_the_whole_span_scipy_anchor_measures_the_error_as_the_env_does(ode_cache: str) -> None:
    env = ODETaskEnv(**{**TINY_ODE, "segments": 1}, cache=ode_cache, backend="scipy", method="DOP853")
    for index in range(2):
        played = env.play("test", index, env.constant_action(1e-7))
        instance = env.pool("test")[index]
        ref = solve_ivp(_scipy_rhs(instance), (0.0, instance.t_end), instance.y0.numpy(), method="DOP853",
                        rtol=1e-7, atol=1e-7)
        error = relative_error(torch.from_numpy(ref.y[:, -1]), env.references["test"][index])
        assert played["nfe"] == ref.nfev
        assert played["error"] == pytest.approx(error, rel=1e-12, abs=1e-300)


def test_a_method_change_between_segments_rescales_the_warm_step_by_the_new_methods_order(
        ode_cache: str, monkeypatch: pytest.MonkeyPatch) -> None:
    env = ODETaskEnv(**TINY_ODE, cache=ode_cache, action_mode="tol_method", backend="torchdiffeq")
    assert env.config.method_choices == ("bosh3", "dopri5", "dopri8")
    calls: list[dict] = []
    real = infocnf_env.ode_env.solve

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        calls.append({**kwargs, "last_step": args[3].last_step})
        return out

    monkeypatch.setattr(infocnf_env.ode_env, "solve", spy)
    env.reset(seed=0, options={"episode": 0})
    env.step(np.array([-5.0, 0.5]))  # dopri5 at 1e-5
    _, _, terminated, _, info = env.step(np.array([-7.0, 0.99]))  # dopri8 at 1e-7
    assert terminated and info["methods"] == ["dopri5", "dopri8"]
    assert [c["method"] for c in calls] == ["dopri5", "dopri8"]
    expected = rescale_step(calls[0]["last_step"], 1e-5, 1e-7, 8)
    assert calls[1]["first_step"] == pytest.approx(min(expected, env.pool("train")[0].t_end / 2), rel=1e-12)


@pytest.mark.parametrize("positions", [(0.0, 0.99), (0.99, 0.0)])
def test_the_batched_solver_solves_each_segment_with_its_chosen_method(ode_cache: str,
                                                                       positions: tuple[float, float]) -> None:
    """On the task's own (batched, torchode) solver, an episode whose segments choose different
    methods spends the NFE of the same segments solved by hand with those methods, one solve
    each, and ends with their error (no warm start, so the segments are independent)."""
    env = ODETaskEnv(**{**TINY_ODE, "warm_start": False}, cache=ode_cache, action_mode="tol_method")
    assert env.config.backend == "torchode" and env.config.method_choices == ("dopri5", "tsit5")
    actions = [np.array([-6.0, u]) for u in positions]
    methods = [env.config.method_choices[parse_action(a, "tol_method", env.spaces.tol_bounds).method_index(2)]
               for a in actions]
    assert methods[0] != methods[1]
    result = env.play("test", 1, actions)
    instance = env.pool("test")[1]
    times = torch.linspace(0.0, instance.t_end, TINY_ODE["segments"] + 1, dtype=torch.float64)
    y, nfe = instance.y0, 0
    for k, method in enumerate(methods):
        func = IVPDynamics(instance)
        (ys,) = solve(func, (y,), times[k:k + 2], func.counter, tol=1e-6, method=method, backend="torchode")
        y, nfe = ys[-1], nfe + func.counter.forward
    assert result["nfe"] == nfe
    assert result["error"] == pytest.approx(relative_error(y, env.references["test"][1]), rel=1e-9)


def test_the_method_position_picks_the_method_of_its_share_of_the_unit_interval() -> None:
    picks = [parse_action(np.array([-5.0, u]), "tol_method", (-9.0, -2.0)).method_index(3)
             for u in (-1.0, 0.0, 0.33, 0.34, 0.66, 0.67, 0.999, 1.0, 5.0)]
    assert picks == [0, 0, 0, 1, 1, 2, 2, 2, 2]
    assert parse_action(np.array([-5.0]), "tol", (-9.0, -2.0)).method_index(3) is None


@pytest.mark.parametrize("method", ["bosh3", "dopri5", "dopri8"])
def test_the_constant_action_of_a_method_choosing_env_plays_the_tasks_own_method(ode_cache: str, method: str) -> None:
    """constant_action's method position (own_method_position) lies inside the task's own
    method's share of [0, 1], whichever of the choices that method is."""
    env = ODETaskEnv(**TINY_ODE, cache=ode_cache, action_mode="tol_method", backend="torchdiffeq", method=method)
    (action,) = env.constant_action(1e-5)
    env.reset(seed=0, options={"episode": 0})
    terminated = truncated = False
    while not (terminated or truncated):
        _, _, terminated, truncated, info = env.step(action)
    assert terminated and info["methods"] == [method] * env.config.segments


@pytest.mark.parametrize("backend", ["torchdiffeq", "torchode"])
def test_the_periodic_check_of_a_method_choosing_env_solves_with_the_tasks_own_method(ode_cache: str,
                                                                                    backend: str) -> None:
    """``evaluate`` (every step at one tolerance) in the ``tol_method`` mode plays the task's own
    method: the same episodes as the ``tol`` mode."""
    chooser = ODETaskEnv(**TINY_ODE, cache=ode_cache, action_mode="tol_method", backend=backend)
    plain = ODETaskEnv(**TINY_ODE, cache=ode_cache, backend=backend)
    (action,) = chooser.constant_action(1e-4)
    picked = parse_action(action, "tol_method", chooser.spaces.tol_bounds).method_index(
        len(chooser.config.method_choices))
    assert chooser.config.method_choices[picked] == chooser.config.method
    assert chooser.evaluate("test", 1e-4) == plain.evaluate("test", 1e-4)


def test_the_fixed_agent_refuses_to_choose_a_method(ode_cache: str) -> None:
    from agents.fixed import make_fixed_agent

    env = gym.make("ODE-Mixed-v0", **TINY_ODE, cache=ode_cache, action_mode="tol_method")
    with pytest.raises(ValueError, match="the fixed agent chooses no method"):
        make_fixed_agent(env, 1e-5, [], None)


@pytest.mark.parametrize("env_id", ["InfoCNF-Toy1D-v0", "CNF-Frozen-Checkerboard-v0"])
def test_envs_with_one_solver_refuse_the_method_mode(env_id: str) -> None:
    with pytest.raises(ValueError, match="tol_method"):
        gym.make(env_id, action_mode="tol_method")


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(backend="scipy", method="dopri5"), "supports methods"),
    (dict(method="euler", backend="torchdiffeq"), "adaptive"),
    (dict(action_mode="tol_method", method_choices=("dopri5",)), "at least two"),
    (dict(action_mode="tol_method", method_choices=("dopri5", "dopri5")), "must not repeat"),
    (dict(ood_pool_size=-1), "ood_pool_size"),
])
def test_bad_solver_settings_get_one_clear_error(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ODEConfig(**{k: v for k, v in kwargs.items() if k != "action_mode"}).replace(
            **({"action_mode": kwargs["action_mode"]} if "action_mode" in kwargs else {}))


# ---------------------------------------------------------------------------- the out-of-range pool
def test_the_out_of_range_pool_lies_outside_every_training_range_and_shows_it(ode_cache: str) -> None:
    env = ODETaskEnv(families=("kepler", "vdp", "arenstorf", "lorenz"), segments=1, train_pool_size=4,
                     test_pool_size=4, ood_pool_size=8, reference_tol=1e-9, cache=ode_cache)
    ood = env.pool("ood")
    assert [i.family for i in ood] == ["kepler", "vdp", "arenstorf", "lorenz"] * 2
    for instance in ood:
        family = FAMILIES[instance.family]
        low, high = family.param_range
        assert not low <= instance.param <= high
        assert any(a <= instance.param <= b for a, b in family.ood_ranges)
        obs, _ = env.reset(options={"split": "ood", "episode": ood.index(instance)})
        param = obs[1 + len(env.config.families)]  # segment one-hot (1), family one-hot, then the parameter
        assert abs(param) > 1.0  # scaled by the training range: out-of-range instances fall outside [-1, 1]
    train = {round(i.param, 12) for i in env.pool("train") + env.pool("test")}
    assert not train & {round(i.param, 12) for i in ood}
    with pytest.raises(ValueError, match="valid pools: train, test, ood"):
        env.play("holdout", 0, env.constant_action(1e-6))


# ---------------------------------------------------------------------------- baselines
def _table(train: list[list[float]], test: list[list[float]], log_tols: list[float] | None = None) -> B.GridTable:
    tr, te = np.array(train, dtype=float), np.array(test, dtype=float)
    log_tols = log_tols or [-6.0 - i for i in range(tr.shape[1])]
    return B.GridTable(log_tols, reward={"train": tr, "test": te}, nfe={"train": -tr, "test": -te},
                       error={"train": np.full(tr.shape, 1e-6), "test": np.full(te.shape, 1e-6)})


def test_the_best_classical_setting_is_chosen_on_the_training_pool() -> None:
    from runs.studies.benchmark import choose_classical

    # on the training pool bosh3 at action 1 is best; on the test pool dopri5 at action 0 would be
    tables = {"dopri5": _table([[-10, -12]], [[-1, -12]]), "bosh3": _table([[-11, -9]], [[-11, -9]])}
    ctx = SimpleNamespace(config={"tasks": {"T": {"settings": ["dopri5", "bosh3"]}}})
    best = choose_classical(ctx, "T", tables)  # type: ignore[arg-type]
    assert best["name"] == "classical:bosh3" and best["rows"]["classical:bosh3"] == ("bosh3", 1, None)
    assert best["rows"]["classical:dopri5"] == ("dopri5", 0, None) and best["agent_setting"] == "bosh3"
    assert B.best_constant(tables["dopri5"], "train") == 0 and B.best_constant(_table([[-3, -1]], [[-1, -3]])) == 1


def test_the_method_oracle_is_each_episodes_best_pair_and_bounds_every_tables_oracle() -> None:
    a = _table([[0.0, 0.0]] * 3, [[-5, -1], [-2, -9], [-7, -8]])
    b = _table([[0.0, 0.0]] * 3, [[-4, -3], [-6, -3], [-1, -7]])
    both = B.method_oracle({"a": a, "b": b}, "test")
    assert both["picks"] == [("a", -7.0), ("a", -6.0), ("b", -6.0)]
    assert both["reward"] == pytest.approx(np.mean([-1, -2, -1]))
    assert both["reward"] >= max(B.oracle(a)["reward"], B.oracle(b)["reward"])


def test_the_front_is_read_by_log_log_interpolation() -> None:
    # a power-law front NFE = 10 * error^(-1/4): log-log linear, so any point of it is read exactly
    errors = [1e-2, 1e-4, 1e-6, 1e-8]
    nfe = [10 * e ** -0.25 for e in errors]
    for target in (3e-3, 1e-5, 2e-7):
        assert B.front_nfe_at_error(nfe, errors, target) == pytest.approx(10 * target ** -0.25, rel=1e-9)
    assert B.front_nfe_at_error(nfe, errors, 1e-9) is None  # no tolerance of the front is that accurate
    assert B.front_nfe_at_error(nfe, errors, 1.0) == pytest.approx(nfe[0])  # no extrapolation past the loosest
    # a front that is not monotone: three neighbouring pairs bracket 3e-5, the cheapest reading counts
    readings = [100 * (300 / 100) ** (math.log(3e-5 / 1e-3) / math.log(1e-5 / 1e-3)),
                300 * (200 / 300) ** (math.log(3e-5 / 1e-5) / math.log(1e-4 / 1e-5)),
                200 * (400 / 200) ** (math.log(3e-5 / 1e-4) / math.log(1e-6 / 1e-4))]
    assert B.front_nfe_at_error([100, 300, 200, 400], [1e-3, 1e-5, 1e-4, 1e-6], 3e-5) == pytest.approx(min(readings))
    table = B.GridTable([-4.0, -6.0], reward={}, nfe={"test": np.array([[100.0, 400.0], [100.0, 400.0]])},
                        error={"test": np.array([[1e-4, 1e-6], [1e-2, 1e-6]])})
    # the mean error front: (100, 5e-3), (400, 1e-6); the median front: (100, 5.05e-3), (400, 1e-6)
    assert B.saving_on_front(table, 200.0, 1e-6) == pytest.approx(0.5)
    assert B.saving_on_front(table, 100.0, 1e-4, episodes=[0]) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="statistic"):
        B.saving_on_front(table, 1.0, 1.0, statistic="mode")


def test_a_subset_of_the_pool_is_priced_against_the_front_of_those_episodes_alone() -> None:
    """A family's saving (``episodes=``) is the saving against a table that holds only its
    episodes: the front's NFE and its errors are both that subset's."""
    nfe = np.array([[100.0, 400.0], [1000.0, 4000.0]])  # the second episode is ten times dearer
    error = np.array([[1e-3, 1e-6], [1e-2, 1e-5]])
    table = B.GridTable([-4.0, -6.0], reward={}, nfe={"test": nfe}, error={"test": error})
    for e in range(2):
        alone = B.GridTable([-4.0, -6.0], reward={}, nfe={"test": nfe[[e]]}, error={"test": error[[e]]})
        for statistic in ("mean", "median"):
            assert B.saving_on_front(table, 200.0, 1e-5, statistic=statistic, episodes=[e]) == pytest.approx(
                B.saving_on_front(alone, 200.0, 1e-5, statistic=statistic), rel=1e-12)
    # episode 0's front at 1e-5, two thirds of the way (in log error) from (100, 1e-3) to (400, 1e-6)
    assert B.saving_on_front(table, 200.0, 1e-5, episodes=[0]) == pytest.approx(1 - 200 / (100 * 4 ** (2 / 3)))
    assert B.saving_on_front(table, 2000.0, 1e-5, episodes=[1]) == pytest.approx(1 - 2000 / 4000)


# ---------------------------------------------------------------------------- cache keys
def _family(**changes) -> dict:
    return {"kepler": dataclasses.replace(FAMILIES["kepler"], **changes)}


def test_every_part_of_a_family_definition_changes_the_reference_key(monkeypatch: pytest.MonkeyPatch) -> None:
    config = ODEConfig(families=("kepler",))
    base = config.pool_key()

    def other_rhs(t, y, e):
        return -ivp.kepler_rhs(t, y, e)

    def other_start(e, generator=None):
        return 2 * ivp.kepler_start(e, generator)

    for changes in (dict(param_range=(0.1, 0.8)), dict(t_end=3.0), dict(ood_ranges=((0.9, 0.95),)),
                    dict(rhs=other_rhs), dict(start=other_start), dict(dim=5)):
        with monkeypatch.context() as m:
            m.setattr(ivp, "FAMILIES", {**FAMILIES, **_family(**changes)})
            m.setattr(infocnf_env.ode_env, "FAMILIES", ivp.FAMILIES)
            assert config.pool_key() != base, changes
    arenstorf = ODEConfig(families=("arenstorf",)).pool_key()
    with monkeypatch.context() as m:  # a module constant the right-hand side reads
        m.setattr(ivp, "ARENSTORF_MU", 0.0123)
        assert ODEConfig(families=("arenstorf",)).pool_key() != arenstorf
    assert config.replace(ood_pool_size=4).pool_key() != base
    assert config.replace(backend="scipy", method="RK45").pool_key() == base  # the references do not depend on it


def test_the_version_of_the_batched_solve_is_in_the_grid_key(ode_cache: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A changed batched solve (a bumped ``solver_version``) must not reuse grids it did not compute."""
    env = ODETaskEnv(**TINY_ODE, cache=ode_cache)
    base = B.grid_key(env, [-6.0, -4.0])
    assert env.solver_version == 1
    monkeypatch.setattr(ODETaskEnv, "solver_version", property(lambda self: 2))
    assert B.grid_key(env, [-6.0, -4.0]) != base


def test_every_setting_of_the_task_changes_the_grid_key(ode_cache: str) -> None:
    env = ODETaskEnv(**TINY_ODE, cache=ode_cache)
    grid = [-6.0, -4.0]
    base = B.grid_key(env, grid)
    for overrides in (dict(alpha=2.0), dict(error_weight=50.0), dict(error_target=1e-3), dict(error_form="linear"),
                      dict(failure_penalty=7.0), dict(backend="scipy", method="RK45"), dict(method="tsit5"),
                      dict(backend="torchdiffeq"), dict(backend="torchode-pi"),
                      dict(segments=3), dict(warm_start=False), dict(tol_bounds=(-8.0, -2.0)),
                      dict(max_num_steps=500)):
        other = ODETaskEnv(**{**TINY_ODE, **overrides}, cache=ode_cache)
        assert B.grid_key(other, grid) != base, overrides
    assert B.grid_key(env, [-6.0, -5.0]) != base
    first_steps = {B.grid_key(env, grid, first_step=f) for f in (None, 0.1, 0.2)}  # the first-step grid's tables
    assert len(first_steps) == 3
    assert B.grid_key(ODETaskEnv(**TINY_ODE, cache=ode_cache, seed=3), grid) == base  # the draws' seed is not part
