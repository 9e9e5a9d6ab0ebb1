"""bench-env: the environment's overhead, a training iteration through the env vs the plain block loop.

``iterations`` training iterations of ``env`` at tolerance ``tol``, ``repeats`` times, with
``threads`` CPU threads (2: the setting of the committed figure), through the environment and
through a plain block loop. Both sides start from the same snapshot (flow, optimizer, data
order, noise generator), so they see the same batches, solve the same ODEs with the same NFE and
differ only in what the environment adds (observations, action checks, bookkeeping). Reported:
median wall time per iteration of each and their ratio (target <= 1.05), and whether both sides
took the same NFE.
"""

from __future__ import annotations

import copy
import math
import statistics
import time
from typing import Any

import gymnasium as gym
import numpy as np

from infocnf_env import TrainingStepEnv
from infocnf_env.threads import set_threads
from runs.format import sci
from runs.run_cache import Context
from runs.study import Page, Res, Study


def _env_iteration(env: gym.Env, action: np.ndarray) -> int:
    env.reset()
    done = False
    info: dict[str, Any] = {}
    while not done:
        _, _, terminated, truncated, info = env.step(action)
        done = terminated or truncated
    return info["nfe_forward"]


def _plain_iteration(core: TrainingStepEnv, tol: float) -> int:
    """The same training step without the environment: block loop, backward, Adam step."""
    x, y = core.task.next_batch()
    model = core.model
    state = model.start(x, y, generator=core._generator)
    for _ in range(model.num_blocks):
        state, _ = model.advance(state, tol)
    out = model.finish(state)
    core.optimizer.zero_grad(set_to_none=True)
    out.loss.backward()
    core.optimizer.step()
    return out.nfe_forward


def bench(env_id: str, iterations: int, tol: float, repeats: int, env_kwargs: dict, threads: int = 2) -> dict:
    set_threads(threads)
    env = gym.make(env_id, **env_kwargs)
    core = env.unwrapped
    assert isinstance(core, TrainingStepEnv)
    env.reset(seed=0)
    for _ in range(3):  # warm-up
        _env_iteration(env, np.array([math.log10(tol)], dtype=np.float32))
    snapshot = copy.deepcopy(core.state_dict())
    action = np.array([math.log10(tol)], dtype=np.float32)
    env_times, plain_times, env_nfe, plain_nfe = [], [], [], []
    for _ in range(repeats):
        core.load_state_dict(copy.deepcopy(snapshot))
        for _ in range(iterations):
            t0 = time.perf_counter()
            env_nfe.append(_env_iteration(env, action))
            env_times.append(time.perf_counter() - t0)
        core.load_state_dict(copy.deepcopy(snapshot))
        for _ in range(iterations):
            t0 = time.perf_counter()
            plain_nfe.append(_plain_iteration(core, tol))
            plain_times.append(time.perf_counter() - t0)
    env_med, plain_med = statistics.median(env_times), statistics.median(plain_times)
    return {
        "env_id": env_id, "tol": tol, "iterations": iterations * repeats,
        "env_s_per_iter": env_med, "plain_s_per_iter": plain_med, "ratio": env_med / plain_med,
        "same_nfe": env_nfe == plain_nfe, "nfe_per_iter": statistics.mean(env_nfe),
    }


CONFIG = {"env": "InfoCNF-Digits-v0", "iterations": 20, "repeats": 3, "tol": 1e-3, "threads": 2, "env_kwargs": {}}
QUICK = {"iterations": 2, "repeats": 1, "threads": 1, "env_kwargs": {"hidden": 4, "batch_size": 16}}


def run(ctx: Context) -> dict:
    cfg = ctx.config
    result = bench(cfg["env"], cfg["iterations"], cfg["tol"], cfg["repeats"], cfg["env_kwargs"], cfg["threads"])
    print(f"{'env':<20} {'tol':>7} {'NFE/iter':>9} {'env s/iter':>11} {'plain s/iter':>13} {'ratio':>6} same NFE")
    print(f"{result['env_id']:<20} {result['tol']:>7.0e} {result['nfe_per_iter']:>9.1f} "
          f"{result['env_s_per_iter']:>11.4f} {result['plain_s_per_iter']:>13.4f} {result['ratio']:>6.3f} "
          f"{result['same_nfe']}")
    return result


def section(res: Res) -> str:
    b = res["bench_env"]
    return f"""\
`python -m runs.reproduce bench-env` (`runs/results/bench_env.json`): a training iteration \
of `{b['env_id']}` at tolerance {sci(b['tol'])} through the environment takes {b['ratio']:.3f}x the time of the \
same iteration through a plain block loop ({b['env_s_per_iter']:.3f} s vs {b['plain_s_per_iter']:.3f} s, \
median of {b['iterations']}; same NFE on both sides: {'yes' if b['same_nfe'] else 'no'})."""


STUDY = Study(
    name="bench-env",
    summary="performance: a training iteration through the environment vs the plain block loop",
    config=CONFIG,
    quick=QUICK,
    run=run,
    page=Page("Performance: environment overhead", order=1030, render=section, needs=("bench_env",)),
    uses_digits_regimes=False,
    seeds=1,
    stem="bench_env",
)
