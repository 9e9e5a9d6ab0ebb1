"""Environment overhead: a training iteration through the env vs the plain block loop.

    python -m runs.bench_env [--env InfoCNF-Digits-v0] [--iterations 20] [--tol 1e-3]

Both sides start from the same snapshot (flow, optimizer, data order, noise generator), so
they see the same batches, solve the same ODEs with the same NFE and differ only in what the
environment adds (observations, action checks, bookkeeping). Reported: median wall time per
iteration of each and their ratio (target <= 1.05).
"""

from __future__ import annotations

import copy
import json
import math
import statistics
import time
from typing import Any

import gymnasium as gym
import numpy as np

from agents.cli import command_parser
from infocnf_env import TrainingStepEnv
from infocnf_env.threads import set_threads


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


def main(argv: list[str] | None = None) -> dict:
    parser = command_parser("runs.bench_env", __doc__)
    parser.add_argument("--env", default="InfoCNF-Digits-v0")
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tol", type=float, default=1e-3)
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    parser.add_argument("--threads", type=int, default=2,
                        help="CPU threads of both sides (default 2, the setting of the committed figure)")
    args = parser.parse_args(argv)
    result = bench(args.env, args.iterations, args.tol, args.repeats, {}, args.threads)
    print(f"{'env':<20} {'tol':>7} {'NFE/iter':>9} {'env s/iter':>11} {'plain s/iter':>13} {'ratio':>6} same NFE")
    print(f"{result['env_id']:<20} {result['tol']:>7.0e} {result['nfe_per_iter']:>9.1f} "
          f"{result['env_s_per_iter']:>11.4f} {result['plain_s_per_iter']:>13.4f} {result['ratio']:>6.3f} "
          f"{result['same_nfe']}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)
    return result


if __name__ == "__main__":
    main()
