"""Baselines of the benchmark envs, what a numerical analyst would bring before any agent.

Each is chosen on the training pool and scored on the test pool (:class:`GridTable` holds both):

* **best constant**: the grid action with the best mean training reward, one for every
  episode and step; with the first-step lever (the ``tol_first_step`` mode), the best constant
  first step at that tolerance (:func:`best_first_step`);
* **best schedule**: one grid action per step (block or segment), the same for every episode:
  what per-block gates can learn without reading their input. Found by coordinate ascent
  from the best constant (each step in turn, ``sweeps`` times), so it is a lower bound on the
  best schedule of the grid;
* **hindsight oracle**: each test episode's best constant grid action, chosen after seeing
  its reward (an upper bound for a policy that adapts per episode, within the grid);
* **contextual regressor**: a small regressor from the observation to the oracle's log10
  tolerance, fit on the training pool (observations along each episode played at its oracle
  action): how much of the room the observation makes reachable without reinforcement learning.

The room an input-adaptive policy has is ``oracle - best schedule``; an agent's
``gap_closed = (agent - best schedule) / (oracle - best schedule)`` on the test pool.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from infocnf_env.benchmark import BenchmarkEnv, Policy
from infocnf_env.cache import cache_dir, cached
from infocnf_env.progress import Progress, stderr


@dataclass
class GridTable:
    """``reward / nfe / error[split][e, a]``: pool episode e played with constant grid action a."""

    log_tols: list[float]
    reward: dict[str, np.ndarray]
    nfe: dict[str, np.ndarray]
    error: dict[str, np.ndarray]


def log_tol_grid(env: BenchmarkEnv, step: float = 0.5) -> list[float]:
    """The baselines' grid: log10 tolerances from the action's lower bound to its upper one, every ``step``."""
    low, high = (float(b) for b in env.spaces.tol_bounds)
    count = int(math.floor((high - low) / step + 1e-9)) + 1
    return [low + step * i for i in range(count)]


def grid_table(env: BenchmarkEnv, log_tols: Sequence[float], splits: Sequence[str] = ("train", "test"), *,
               log: Callable[[str], None] | None = stderr) -> GridTable:
    """Play every episode of ``splits`` at every constant tolerance of ``log_tols``; progress
    with the time left goes to ``log`` (:mod:`infocnf_env.progress`)."""
    reward, nfe, error = {}, {}, {}
    episodes = sum(len(env.pool(split)) for split in splits)
    progress = Progress("baseline grid", episodes * len(log_tols), "plays", log=log,
                        start=f"the baselines' grid: {episodes} episodes ({', '.join(splits)}) x {len(log_tols)} "
                              "constant tolerances")

    def play(split: str, e: int, t: float) -> dict:
        cell = env.play(split, e, env.constant_action(10.0 ** t))
        progress.update()
        return cell

    for split in splits:
        cells = [[play(split, e, t) for t in log_tols] for e in range(len(env.pool(split)))]
        reward[split] = np.array([[c["reward"] for c in row] for row in cells])
        nfe[split] = np.array([[c["nfe"] for c in row] for row in cells])
        error[split] = np.array([[c["error"] for c in row] for row in cells])
    progress.finish()
    return GridTable(list(log_tols), reward, nfe, error)


def cached_grid_table(env: BenchmarkEnv, log_tols: Sequence[float]) -> GridTable:
    """:func:`grid_table` of both pools, cached beside the task's references (keyed by the task's
    pool key, every reward setting and the grid), so the leaderboard and ``agents.evaluate``
    pay for it once."""
    import dataclasses
    import hashlib
    import json

    config = env.config
    settings = {k: v for k, v in dataclasses.asdict(config).items() if k not in ("seed", "cache")}
    spec = [config.pool_key(), settings, [float(t) for t in log_tols]]
    digest = hashlib.sha1(json.dumps(spec, default=str).encode()).hexdigest()[:12]
    path = cache_dir(config.cache) / f"{config.pool_key()}-grid-{digest}.pt"

    def build() -> dict:
        table = grid_table(env, log_tols)
        return {"log_tols": table.log_tols, **{name: {k: torch.from_numpy(v) for k, v in getattr(table, name).items()}
                                               for name in ("reward", "nfe", "error")}}

    saved = cached(path, build, what="baseline grid")
    return GridTable(list(saved["log_tols"]), *(
        {k: v.numpy() for k, v in saved[name].items()} for name in ("reward", "nfe", "error")))


def best_constant(table: GridTable, split: str = "train") -> int:
    """Index of the grid action with the best mean reward on ``split``."""
    return int(np.argmax(table.reward[split].mean(axis=0)))


def oracle(table: GridTable, split: str = "test") -> dict[str, Any]:
    """Each episode's best grid action in hindsight: mean reward, NFE, error and the picks."""
    picks = table.reward[split].argmax(axis=1)
    rows = np.arange(len(picks))
    return {"reward": float(table.reward[split][rows, picks].mean()),
            "nfe": float(table.nfe[split][rows, picks].mean()),
            "error": float(table.error[split][rows, picks].mean()),
            "log_tols": [table.log_tols[p] for p in picks]}


def column(table: GridTable, action: int, split: str = "test") -> dict[str, float]:
    """Mean reward, NFE and error of constant grid action ``action`` on ``split``."""
    return {"reward": float(table.reward[split][:, action].mean()), "nfe": float(table.nfe[split][:, action].mean()),
            "error": float(table.error[split][:, action].mean())}


def best_schedule(env: BenchmarkEnv, log_tols: Sequence[float], start: float, sweeps: int = 1,
                  split: str = "train") -> tuple[list[float], float]:
    """Coordinate ascent over per-step grid tolerances from the constant ``start`` on ``split``:
    the schedule (log10 tolerance per step) and its mean reward there."""
    schedule = [float(start)] * env.num_blocks

    def mean_reward(candidate: list[float]) -> float:
        actions = [np.array([t], dtype=np.float32) for t in candidate]
        return float(np.mean([env.play(split, e, actions)["reward"] for e in range(len(env.pool(split)))]))

    best = mean_reward(schedule)
    for _ in range(sweeps):
        for step in range(env.num_blocks):
            for t in log_tols:
                if t == schedule[step]:
                    continue
                candidate = schedule[:step] + [float(t)] + schedule[step + 1:]
                value = mean_reward(candidate)
                if value > best:
                    best, schedule = value, candidate
    return schedule, best


def best_first_step(env: BenchmarkEnv, log_tol: float, log_first_steps: Sequence[float],
                    split: str = "train") -> tuple[float, float]:
    """The constant first step (log10, a fraction of each step's span) with the best mean reward
    on ``split`` when every step is solved at ``log_tol``, and that reward; ``env`` in the
    ``tol_first_step`` mode. Searched at one tolerance (the best constant's), not over the
    tolerance x first-step grid: one pass over the pool per first step."""
    if env.spaces.action_mode != "tol_first_step":
        raise ValueError(f"best_first_step needs an env in the 'tol_first_step' mode, not {env.spaces.action_mode!r}")
    rewards = [env.score(env.constant_action(10.0 ** log_tol, 10.0 ** f), split)["reward"] for f in log_first_steps]
    best = int(np.argmax(rewards))
    return float(log_first_steps[best]), float(rewards[best])


def schedule_policy(schedule: Sequence[float]) -> list[np.ndarray]:
    """A per-step schedule of log10 tolerances as :meth:`BenchmarkEnv.play` takes it."""
    return [np.array([t], dtype=np.float32) for t in schedule]


def fit_contextual(env: BenchmarkEnv, table: GridTable, split: str = "train", neighbours: int = 5) -> Policy:
    """A k-nearest-neighbour regressor from the observation to the oracle's log10 tolerance.

    Fit on every observation of the ``split`` episodes played at their oracle action; the
    features are standardised on that data. Returns a policy (observation -> action).
    """
    from sklearn.neighbors import KNeighborsRegressor

    picks = oracle(table, split)["log_tols"]
    features, targets = [], []
    for e, log_tol in enumerate(picks):
        seen: list[np.ndarray] = []
        action = env.constant_action(10.0 ** log_tol)[0]

        def record(obs: np.ndarray, step: int, seen: list[np.ndarray] = seen,
                   action: np.ndarray = action) -> np.ndarray:
            seen.append(np.asarray(obs, dtype=np.float64))
            return action

        env.play(split, e, record)
        features += seen
        targets += [log_tol] * len(seen)
    x = np.stack(features)
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-8
    model = KNeighborsRegressor(n_neighbors=min(neighbours, len(x))).fit((x - mean) / std, np.array(targets))

    def policy(obs: np.ndarray, step: int) -> np.ndarray:
        z = (np.asarray(obs, dtype=np.float64) - mean) / std
        return np.array([float(model.predict(z[None])[0])], dtype=np.float32)

    return policy


def gap_closed(score: float, floor: float, ceiling: float) -> float:
    """``(score - floor) / (ceiling - floor)``; NaN where there is no gap."""
    gap = ceiling - floor
    return (score - floor) / gap if gap > 0 else math.nan


def saving_at_equal_error(table: GridTable, nfe: float, error: float, split: str = "test") -> float | None:
    """``1 - nfe / nfe_c`` against the cheapest constant grid tolerance whose mean error on
    ``split`` is no larger than ``error`` (``None`` if no constant is that accurate)."""
    errors = table.error[split].mean(axis=0)
    costs = table.nfe[split].mean(axis=0)
    ok = [a for a in range(len(table.log_tols)) if errors[a] <= error]
    if not ok:
        return None
    cheapest = min(costs[a] for a in ok)
    return float(1.0 - nfe / cheapest)
