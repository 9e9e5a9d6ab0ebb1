"""Native vector envs of the benchmark tasks: N episodes advanced together, one batched solve per step.

``gymnasium.make_vec(id, num_envs=N)`` on an ODE or frozen-flow id (``vectorization_mode``
``"vector_entry_point"``, the default for these ids) returns a :class:`BenchmarkVectorEnv`. It
holds one task env (its pools, references and solver) and N playthroughs, and steps them all
through the task's :meth:`~infocnf_env.benchmark.BenchmarkEnv._take_many`: the very step code
of the single env, which is ``_take_many`` of one playthrough. On the ODE tasks' torchode
backends (their default) that is one :func:`flows.ode.solve_batch` per step (per method in the
``tol_method`` mode), and on the frozen-flow tasks in float64 on torchode one per density and
block (:meth:`flows.FlowModel.advance_batch`), each episode with its own tolerance, first step
and step-size control, so a sub-env's episode equals the single env's episode of the same
instance and actions (NFE exactly). Otherwise the N episodes are solved in turn.

Gymnasium 1.x semantics:

* autoreset ``SAME_STEP`` (``metadata["autoreset_mode"]``): a sub-env whose episode ends
  returns the first observation of its next episode; the last observation and info of the
  ended one are in ``info["final_obs"]`` and ``info["final_info"]`` (masks ``info["_final_obs"]``);
* ``info`` is a dict of arrays, each key with its mask ``info["_key"]``;
* seeding per sub-env: ``reset(seed=s)`` seeds sub-env i with ``s + i`` (a list gives each its
  own), so sub-env i draws the episodes the single env reset with ``s + i`` draws; unseeded
  sub-envs draw independently;
* ``reset(options={"split": "test"})`` plays a held-out pool; :meth:`BenchmarkVectorEnv.score`
  scores a policy over a pool in batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from infocnf_env.benchmark import BenchmarkEnv, Playthrough, Policy
from infocnf_env.frozen import FrozenFlowEnv
from infocnf_env.ode_env import ODETaskEnv


def check_num_envs(num_envs: Any) -> int:
    """``num_envs`` as an int, or one ``ValueError`` unless it is an integer >= 1."""
    if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
        raise ValueError(f"num_envs must be an integer >= 1, got {num_envs!r}")
    return int(num_envs)


def sub_env_info(infos: dict[str, Any], i: int) -> dict[str, Any]:
    """Sub-env ``i``'s entries of a Gymnasium vector ``info`` (a dict of arrays with ``_key``
    masks), as the single env gives them: numpy scalars as Python numbers, nested dicts too."""
    def entry(value: Any) -> Any:
        if isinstance(value, dict):
            return sub_env_info(value, i)
        item = value[i]
        return item.item() if isinstance(item, np.generic) else item

    return {key: entry(value) for key, value in infos.items()
            if not key.startswith("_") and (f"_{key}" not in infos or infos[f"_{key}"][i])}


class BenchmarkVectorEnv(gym.vector.VectorEnv):
    """N sub-envs of one benchmark task stepped together (module docstring).

    ``task_class`` is the task's single env; ``config`` and ``overrides`` are its arguments.
    """

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}
    task_class: type[BenchmarkEnv]

    def __init__(self, num_envs: int = 1, config: Any = None, **overrides: Any):
        num_envs = check_num_envs(num_envs)
        self._setup(self.task_class(config, **overrides), num_envs)  # type: ignore[call-arg]

    @classmethod
    def around(cls, task: BenchmarkEnv, num_envs: int) -> BenchmarkVectorEnv:
        """A vector env of ``num_envs`` sub-envs over an existing task env (its pools, references
        and solver are shared, not built again): how an agent that already holds the task's env
        steps it in batches."""
        venv = cls.__new__(cls)
        venv._setup(task, check_num_envs(num_envs))
        return venv

    def _setup(self, task: BenchmarkEnv, num_envs: int) -> None:
        self.num_envs = num_envs
        self.task = task
        self.single_action_space = self.task.action_space
        self.single_observation_space = self.task.observation_space
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self._plays: list[Playthrough | None] = [None] * self.num_envs
        self._split = "train"
        seed = getattr(getattr(task, "config", None), "seed", None)
        self._rngs = [gym.utils.seeding.np_random(None if seed is None else seed + i)[0]
                      for i in range(self.num_envs)]
        self.iteration = 0  # finished episodes, all sub-envs together
        self.solver_failures = 0

    # ------------------------------------------------------------------ gym.vector API
    def reset(self, *, seed: int | Sequence[int | None] | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode in every sub-env (module docstring for ``seed``); ``options``:
        ``{"split": name}`` draws from another pool, ``{"episode": [i_0, ..., i_{N-1}]}`` picks them."""
        if seed is not None:
            seeds = [seed + i for i in range(self.num_envs)] if isinstance(seed, (int, np.integer)) else list(seed)
            if len(seeds) != self.num_envs:
                raise ValueError(f"reset(seed=...) needs one seed or {self.num_envs}, got {len(seeds)}")
            self._rngs = [gym.utils.seeding.np_random(s)[0] for s in seeds]
        options = dict(options or {})
        self._split = options.pop("split", "train")
        episodes = options.pop("episode", None)
        if options:
            raise ValueError(f"unknown reset option(s) {sorted(options)}; valid: episode, split")
        if episodes is not None and len(episodes) != self.num_envs:
            raise ValueError(f"reset(options={{'episode': ...}}) needs {self.num_envs} indices, got {len(episodes)}")
        self.task.pool(self._split)  # one error for an unknown pool
        observations: list[np.ndarray] = []
        infos: dict[str, Any] = {}
        for i in range(self.num_envs):
            obs, info = self._start(i, None if episodes is None else episodes[i])
            observations.append(obs)
            infos = self._add_info(infos, info, i)
        return np.stack(observations), infos

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        if any(play is None for play in self._plays):
            raise RuntimeError("call reset() before step()")
        actions = np.asarray(actions)
        if len(actions) != self.num_envs:
            raise ValueError(f"step() needs one action per sub-env ({self.num_envs}), got {len(actions)}")
        plays: list[Playthrough] = list(self._plays)  # type: ignore[arg-type]
        results = self.task._take_many(plays, list(actions))
        observations = []
        rewards = np.zeros(self.num_envs)
        terminated = np.zeros(self.num_envs, dtype=bool)
        truncated = np.zeros(self.num_envs, dtype=bool)
        infos: dict[str, Any] = {}
        for i, (play, (reward, term, trunc, info)) in enumerate(zip(plays, results, strict=True)):
            rewards[i], terminated[i], truncated[i] = reward, term, trunc
            if term or trunc:
                self.iteration += int(term)
                self.solver_failures += int(trunc)
                infos = self._add_info(infos, {"final_obs": self.task._terminal(), "final_info": info}, i)
                obs, info = self._start(i, None)
            else:
                obs = self.task._observe(play)
            observations.append(obs)
            infos = self._add_info(infos, info, i)
        return np.stack(observations), rewards, terminated, truncated, infos

    # ------------------------------------------------------------------ scoring
    def score(self, policy: Policy | list[Any], split: str = "test",
              max_episodes: int | None = None) -> dict[str, float]:
        """:meth:`BenchmarkEnv.score <infocnf_env.benchmark.BenchmarkEnv.score>`: the pool's
        episodes played together."""
        return self.task.score(policy, split, max_episodes)

    def play_many(self, split: str, indices: list[int], policy: Policy | list[Any]) -> list[dict[str, Any]]:
        return self.task.play_many(split, indices, policy)

    def rng_states(self) -> list[Any]:
        """The sub-envs' generators' states (for a checkpoint)."""
        return [rng.bit_generator.state for rng in self._rngs]

    def load_rng_states(self, states: list[Any]) -> None:
        if len(states) != self.num_envs:
            raise ValueError(f"{len(states)} generator states for {self.num_envs} sub-envs")
        for rng, state in zip(self._rngs, states, strict=True):
            rng.bit_generator.state = state

    # ------------------------------------------------------------------ helpers
    def _start(self, i: int, index: int | None) -> tuple[np.ndarray, dict[str, Any]]:
        """A new episode in sub-env ``i``: drawn by its generator unless ``index`` is given."""
        if index is None:
            index = int(self._rngs[i].integers(len(self.task.pool(self._split))))
        play = self._plays[i] = self.task._begin(self._split, index)
        return self.task._observe(play), {"index": play.index, "split": self._split, **self.task._describe(play)}


class ODEVectorEnv(BenchmarkVectorEnv):
    """The native vector env of the ODE tasks (``gymnasium.make_vec("ODE-Mixed-v0", num_envs=N)``)."""

    task_class = ODETaskEnv


class FrozenVectorEnv(BenchmarkVectorEnv):
    """The native vector env of the frozen-flow tasks (``gymnasium.make_vec("CNF-Frozen-Mixed-v0", num_envs=N)``)."""

    task_class = FrozenFlowEnv
