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
* **contextual policy**: per observation, the grid tolerance with the best mean reward over the
  training episodes of its nearest neighbours (observations along each training episode played
  at its oracle action): how much of the room the observation makes reachable without
  reinforcement learning;
* **the best classical setting**: the same task solved by every method and step-size
  controller the solve layer offers (a :class:`GridTable` each), each at its own best constant
  tolerance on the training pool, and the best of those;
* **method oracle**: each test episode's best (method, tolerance) pair in hindsight over
  several methods' tables (:func:`method_oracle`).

The room an input-adaptive policy has is ``oracle - best schedule``; an agent's
``gap_closed = (agent - best schedule) / (oracle - best schedule)`` on the test pool. Savings
at equal error are read off a baseline's tolerance front by log-log interpolation
(:func:`front_nfe_at_error`), so that they do not move with where the grid's points fall.
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


def grid_table(env: BenchmarkEnv, log_tols: Sequence[float], splits: Sequence[str] | None = None,
               first_step: float | None = None, *, log: Callable[[str], None] | None = stderr) -> GridTable:
    """Play every episode of ``splits`` (default: every pool of ``env``) at every constant
    tolerance of ``log_tols`` (and, in the ``tol_first_step`` mode, the constant ``first_step``:
    a fraction of each step's span, default the whole span); progress with the time left goes
    to ``log`` (:mod:`infocnf_env.progress`)."""
    reward, nfe, error = {}, {}, {}
    splits = tuple(env.pools) if splits is None else tuple(splits)
    episodes = sum(len(env.pool(split)) for split in splits)
    progress = Progress("baseline grid", episodes * len(log_tols), "plays", log=log,
                        start=f"the baselines' grid: {episodes} episodes ({', '.join(splits)}) x {len(log_tols)} "
                              "constant tolerances")

    def column(split: str, t: float) -> list[dict]:  # every episode of the pool at once (BenchmarkEnv.play_many)
        cells = env.play_many(split, list(range(len(env.pool(split)))), env.constant_action(10.0 ** t, first_step))
        progress.update(progress.done + len(cells))
        return cells

    for split in splits:
        columns = [column(split, t) for t in log_tols]
        reward[split] = np.array([[c["reward"] for c in col] for col in columns]).T
        nfe[split] = np.array([[c["nfe"] for c in col] for col in columns]).T
        error[split] = np.array([[c["error"] for c in col] for col in columns]).T
    progress.finish()
    return GridTable(list(log_tols), reward, nfe, error)


def grid_key(env: BenchmarkEnv, log_tols: Sequence[float], first_step: float | None = None) -> str:
    """The cache name of ``env``'s grid table over ``log_tols`` (at ``first_step``): the task's
    pool key (its episodes and references), every other setting of the task (solver, reward,
    spaces, pools; not the seed of its episode draws or its cache folder), the version of the
    task's own solve code where it has one (``BenchmarkEnv.solver_version``) and the grid."""
    import dataclasses
    import hashlib
    import json

    config = env.config
    settings = {k: v for k, v in dataclasses.asdict(config).items() if k not in ("seed", "cache")}
    spec = [config.pool_key(), settings, [float(t) for t in log_tols]]
    if first_step is not None:
        spec.append(float(first_step))
    if env.solver_version:
        spec.append(f"solver-{env.solver_version}")
    digest = hashlib.sha1(json.dumps(spec, default=str).encode()).hexdigest()[:12]
    return f"{config.pool_key()}-grid-{digest}"


def cached_grid_table(env: BenchmarkEnv, log_tols: Sequence[float], first_step: float | None = None) -> GridTable:
    """:func:`grid_table` of every pool, cached beside the task's references (:func:`grid_key`),
    so the leaderboard and ``agents.evaluate`` pay for it once."""
    path = cache_dir(env.config.cache) / f"{grid_key(env, log_tols, first_step)}.pt"

    def build() -> dict:
        table = grid_table(env, log_tols, first_step=first_step)
        return {"log_tols": table.log_tols, **{name: {k: torch.from_numpy(v) for k, v in getattr(table, name).items()}
                                               for name in ("reward", "nfe", "error")}}

    saved = cached(path, build, what="baseline grid")
    return GridTable(list(saved["log_tols"]), *(
        {k: v.numpy() for k, v in saved[name].items()} for name in ("reward", "nfe", "error")))


def best_constant(table: GridTable, split: str = "train") -> int:
    """Index of the grid action with the best mean reward on ``split``."""
    return int(np.argmax(table.reward[split].mean(axis=0)))


def oracle(table: GridTable, split: str = "test") -> dict[str, Any]:
    """Each episode's best grid action in hindsight: mean reward, NFE, error, median error and the picks."""
    picks = table.reward[split].argmax(axis=1)
    rows = np.arange(len(picks))
    return {"reward": float(table.reward[split][rows, picks].mean()),
            "nfe": float(table.nfe[split][rows, picks].mean()),
            "error": float(table.error[split][rows, picks].mean()),
            "error_median": float(np.median(table.error[split][rows, picks])),
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
        return float(np.mean([r["reward"] for r in env.play_many(split, list(range(len(env.pool(split)))), actions)]))

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
    """A k-nearest-neighbour contextual policy: at an observation, the grid tolerance with the
    best mean reward over the ``split`` episodes of its ``neighbours`` nearest observations.

    Fit on every observation of the ``split`` episodes played at their oracle action; the
    features are standardised on that data. The neighbours' rewards are averaged per grid
    tolerance rather than their oracle picks averaged: where the picks are bimodal (an episode
    whose error happens to be small at the loosest tolerance beside ones best decades tighter),
    a mean pick lands between the modes, where every neighbour's error is large. Returns a
    policy (observation -> action).
    """
    from sklearn.neighbors import NearestNeighbors

    picks = oracle(table, split)["log_tols"]
    features, owners = [], []
    for e, log_tol in enumerate(picks):
        seen: list[np.ndarray] = []
        action = env.constant_action(10.0 ** log_tol)[0]

        def record(obs: np.ndarray, step: int, seen: list[np.ndarray] = seen,
                   action: np.ndarray = action) -> np.ndarray:
            seen.append(np.asarray(obs, dtype=np.float64))
            return action

        env.play(split, e, record)
        features += seen
        owners += [e] * len(seen)
    x = np.stack(features)
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-8
    index = NearestNeighbors(n_neighbors=min(neighbours, len(x))).fit((x - mean) / std)
    episode_of, rewards = np.array(owners), table.reward[split]

    def policy(obs: np.ndarray, step: int) -> np.ndarray:
        z = (np.asarray(obs, dtype=np.float64) - mean) / std
        _, near = index.kneighbors(z[None])
        best = int(rewards[episode_of[near[0]]].mean(axis=0).argmax())
        return np.array([table.log_tols[best]], dtype=np.float32)

    return policy


def gap_closed(score: float, floor: float, ceiling: float) -> float:
    """``(score - floor) / (ceiling - floor)``; NaN where there is no gap."""
    gap = ceiling - floor
    return (score - floor) / gap if gap > 0 else math.nan


def method_oracle(tables: dict[str, GridTable], split: str = "test") -> dict[str, Any]:
    """Each episode's best (setting, grid action) in hindsight over several settings' tables of
    the same pool (e.g. every method the ``tol_method`` mode chooses among): the upper bound of a
    policy that picks one method and one tolerance per episode. Mean reward, NFE, error, median
    error and the picks."""
    names = list(tables)
    stacked = {k: np.stack([getattr(tables[n], k)[split] for n in names], axis=1) for k in ("reward", "nfe", "error")}
    episodes, _, actions = stacked["reward"].shape
    flat = stacked["reward"].reshape(episodes, -1).argmax(axis=1)
    which, action = np.divmod(flat, actions)
    rows = np.arange(episodes)
    return {"reward": float(stacked["reward"][rows, which, action].mean()),
            "nfe": float(stacked["nfe"][rows, which, action].mean()),
            "error": float(stacked["error"][rows, which, action].mean()),
            "error_median": float(np.median(stacked["error"][rows, which, action])),
            "picks": [(names[w], tables[names[w]].log_tols[a]) for w, a in zip(which, action, strict=True)]}


#: Errors below this count as this (a log-log front needs positive errors).
ERROR_FLOOR = 1e-16


def front_nfe_at_error(nfe: Sequence[float], error: Sequence[float], target: float) -> float | None:
    """The NFE a tolerance front spends for an error of ``target``, read off the front by log-log
    interpolation: ``nfe[i]`` and ``error[i]`` are one constant tolerance's figures (any order).

    Between two neighbouring tolerances of the front (in the order given, e.g. the grid's) whose
    errors bracket ``target``, log NFE is linear in log error; where several pairs bracket it
    (a front that is not monotone), the cheapest reading counts. A target no tolerance reaches
    (below every error) gives ``None``; a target above every error gives the front's cheapest
    point (no extrapolation beyond the loosest tolerance).
    """
    log_nfe = np.log(np.asarray(nfe, dtype=float))
    log_err = np.log(np.maximum(np.asarray(error, dtype=float), ERROR_FLOOR))
    goal = math.log(max(target, ERROR_FLOOR))
    if not np.isfinite(goal) or not np.any(log_err <= goal):
        return None
    readings = []
    for i in range(len(log_nfe) - 1):
        (e0, e1), (n0, n1) = log_err[i: i + 2], log_nfe[i: i + 2]
        if min(e0, e1) <= goal <= max(e0, e1) and e0 != e1:
            readings.append(float(n0 + (goal - e0) * (n1 - n0) / (e1 - e0)))
    if not readings:  # the target lies above every error of the front: its cheapest point
        readings = [float(log_nfe[log_err <= goal].min())]
    return float(math.exp(min(readings)))


def saving_on_front(table: GridTable, nfe: float, error: float, split: str = "test", statistic: str = "mean",
                    episodes: Sequence[int] | None = None) -> float | None:
    """``1 - nfe / NFE_front(error)``: the NFE saved against ``table``'s constant-tolerance front at
    equal error, the front read by :func:`front_nfe_at_error`. ``statistic``: ``"mean"`` or
    ``"median"`` of the episodes' errors (the front's and ``error`` alike; NFE are means);
    ``episodes``: a subset of the pool (e.g. one family). ``None`` where no tolerance is that
    accurate."""
    if statistic not in ("mean", "median"):
        raise ValueError(f"statistic must be 'mean' or 'median', got {statistic!r}")
    rows = slice(None) if episodes is None else list(episodes)
    errors = table.error[split][rows]
    front_error = errors.mean(axis=0) if statistic == "mean" else np.median(errors, axis=0)
    at = front_nfe_at_error(table.nfe[split][rows].mean(axis=0), front_error, error)
    return None if at is None else float(1.0 - nfe / at)
