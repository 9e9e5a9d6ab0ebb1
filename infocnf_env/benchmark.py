"""The skeleton of the benchmark envs: tolerance learning in isolation, scored on held-out episodes.

A benchmark env holds a fixed *problem* (a frozen flow, a family of classical ODEs) and two
fixed pools of episodes drawn from the same distribution: ``train`` (what ``reset()`` draws
from, what agents learn on and what the best constant is chosen on) and ``test`` (where every
score, oracle and gap closed is reported). An episode is solved in ``N`` steps (ODE blocks of a
flow, time segments of an ODE); each step solves one with the agent's action (log10 tolerance,
and in the ``tol_first_step`` mode the first step, :mod:`infocnf_env.actions`). The reward
trades the NFE against the accuracy error of the whole episode against a cached tight
reference (:class:`BenchmarkReward`).

:class:`BenchmarkEnv` writes reset, step, failure handling, info, scoring and state once; a
task subclasses it with the problem-specific parts (:meth:`BenchmarkEnv._start`,
:meth:`~BenchmarkEnv._advance`, :meth:`~BenchmarkEnv._error`, :meth:`~BenchmarkEnv._observe`).
:meth:`BenchmarkEnv.play` runs an episode of either pool with given actions, or a policy, with
the very code that :meth:`~BenchmarkEnv.step` runs, without touching the env's state; the
baselines (:mod:`infocnf_env.baselines`) and ``agents.evaluate`` score through it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import gymnasium as gym
import numpy as np

from flows import EVAL_TOL, SolverError
from infocnf_env.actions import BlockAction, action_space
from infocnf_env.config import SpaceConfig, check_finite_number, check_positive_int
from infocnf_env.episode import NUM_FEEDBACK, Feedback, Steps

#: The pools every benchmark task has; a task may add more (the ODE tasks' out-of-range ``ood``).
SPLITS = ("train", "test")
ERROR_FORMS = ("linear", "target")


@dataclass(frozen=True)
class PoolConfig:
    """The two pools of a benchmark task.

    Attributes:
        train_pool_size: episodes agents learn on (``reset()`` draws from them).
        test_pool_size: held-out episodes of the same distribution, where scores are reported.
        pool_seed: seed of both pools' draws (the same for every env of the task).
    """

    train_pool_size: int = 64
    test_pool_size: int = 64
    pool_seed: int = 0

    def __post_init__(self) -> None:
        check_positive_int("train_pool_size", self.train_pool_size)
        check_positive_int("test_pool_size", self.test_pool_size)
        if not isinstance(self.pool_seed, int) or isinstance(self.pool_seed, bool) or self.pool_seed < 0:
            raise ValueError(f"pool_seed must be an integer >= 0, got {self.pool_seed!r}")


@dataclass(frozen=True)
class BenchmarkReward:
    """How a benchmark episode is paid (Eq. 6 with an accuracy term in place of the loss).

    Step i pays ``-(alpha / N) * nfe_i`` (N steps). The last step adds the error cost:

    * ``error_form="linear"``: ``-error_weight * error``;
    * ``error_form="target"``: ``-error_weight * max(0, log10(error / error_target))``: nothing
      below the target, ``error_weight`` per decade above it.

    The linear form suits a task whose errors share one scale (the frozen flows: nats of
    log-density). Where errors span decades between episodes (the ODE families), a linear
    weight lets the episodes with the largest errors decide everything and makes an error of
    1e-3 as bad as a thousand of 1e-6; the target form asks what a user of a solver asks (the
    cheapest solve that meets an accuracy) and is smooth in log10 tolerance, which policy
    gradients need.

    Attributes:
        alpha: weight of the NFE cost.
        error_form: ``"linear"`` or ``"target"``.
        error_weight: weight of the error cost (per nat, or per decade above the target).
        error_target: the accuracy target of the ``"target"`` form.
        failure_penalty: paid (negated) when a solve fails (step cap, underflow, non-finite).
    """

    alpha: float = 1.0
    error_form: str = "linear"
    error_weight: float = 3000.0
    error_target: float = 1e-4
    failure_penalty: float = 100.0

    def __post_init__(self) -> None:
        if self.error_form not in ERROR_FORMS:
            raise ValueError(f"unknown error_form {self.error_form!r}; valid forms: {', '.join(ERROR_FORMS)}")
        for name in ("alpha", "error_weight", "failure_penalty"):
            check_finite_number(name, getattr(self, name), minimum=0.0)
        check_finite_number("error_target", self.error_target)
        if not self.error_target > 0:
            raise ValueError(f"error_target must be positive, got {self.error_target!r}")

    def error_cost(self, error: float) -> float:
        """What an episode's accuracy error costs (a positive number, subtracted from the reward)."""
        if not math.isfinite(error):
            return self.failure_penalty
        if self.error_form == "linear":
            return self.error_weight * error
        return self.error_weight * max(0.0, math.log10(max(error, 1e-300) / self.error_target))


C = TypeVar("C")


def replace_grouped(config: C, groups: Mapping[str, type], what: str, **overrides: Any) -> C:
    """A copy of a frozen config dataclass with fields overridden by plain name.

    A field of ``config`` replaces that field; a field of one of its ``groups`` (attribute name
    -> dataclass) replaces it inside the group. An unknown name is one ``ValueError`` listing
    the valid ones; so is a group given whole together with one of its fields.
    """
    top = {f.name for f in dataclasses.fields(config)}  # type: ignore[arg-type]
    by_group = {name: {f.name for f in dataclasses.fields(kind)} for name, kind in groups.items()}
    changes: dict[str, Any] = {}
    grouped: dict[str, dict[str, Any]] = {name: {} for name in groups}
    unknown = []
    for key, value in overrides.items():
        group = next((name for name, fields in by_group.items() if key in fields), None)
        if key in top:
            changes[key] = value
        elif group is not None:
            grouped[group][key] = value
        else:
            unknown.append(key)
    if unknown:
        valid = sorted(top - set(groups) | set().union(*by_group.values()))
        raise ValueError(f"unknown {what} kwarg(s) {sorted(unknown)}; valid: {', '.join(valid)}")
    for name, fields_ in grouped.items():
        if fields_ and name in changes:
            raise ValueError(f"give {name}= or its fields ({', '.join(sorted(fields_))}), not both")
        if fields_:
            changes[name] = dataclasses.replace(getattr(config, name), **fields_)
    return dataclasses.replace(config, **changes)  # type: ignore[type-var]


E = TypeVar("E")  # an episode of the pool
#: A deterministic policy as :meth:`BenchmarkEnv.play` calls it: (observation, step) -> action.
Policy = Callable[[np.ndarray, int], Any]


@dataclass
class Playthrough(Generic[E]):
    """One episode being solved: which one, where it is, and the record of its steps."""

    split: str
    index: int
    episode: E
    state: Any
    steps: Steps = dataclasses.field(default_factory=Steps)


class BenchmarkEnv(gym.Env, Generic[E]):
    """The shared env logic of the benchmark tasks (module docstring); subclasses set, in
    ``__init__`` and before :meth:`_setup_spaces`: ``self.spaces`` (a ``SpaceConfig``),
    ``self.reward_config`` (a :class:`BenchmarkReward`), ``self.num_blocks`` and
    ``self.pools`` (``{"train": [...], "test": [...]}``)."""

    metadata = {"render_modes": []}
    config: Any  # the task's frozen config dataclass (its fields are the env's keyword arguments)
    spaces: SpaceConfig
    reward_config: BenchmarkReward
    num_blocks: int
    pools: dict[str, list[E]]
    #: What an episode's accuracy error measures (for tables and plots).
    error_unit: str = "mean error"
    #: Version of a task's own solve code, in the cache keys of results computed with it (0: the
    #: solve layer's :func:`flows.ode.solve`, whose settings the task's config names whole).
    solver_version: int = 0

    # ------------------------------------------------------------------ the task's parts
    def _start(self, episode: E) -> Any:
        """The state before the first step of ``episode``."""
        raise NotImplementedError

    def _advance(self, play: Playthrough[E], action: BlockAction) -> tuple[Any, Feedback]:
        """Solve step ``play.steps.block`` of ``play`` with ``action``: the new state and the solver's
        report. Raises ``SolverError`` when the solve fails."""
        raise NotImplementedError

    def _error(self, play: Playthrough[E]) -> float:
        """The accuracy error of the finished ``play`` against its reference (inf if not finite)."""
        raise NotImplementedError

    def _observe(self, play: Playthrough[E]) -> np.ndarray:
        """The observation before step ``play.steps.block`` of ``play``."""
        raise NotImplementedError

    def _describe(self, play: Playthrough[E]) -> dict[str, Any]:
        """What ``info`` says of the episode (its variant, family, ...)."""
        return {}

    def family_of(self, split: str, index: int) -> str:
        """The group episode ``index`` of pool ``split`` belongs to (an ODE family, a density), for
        per-group scores."""
        raise NotImplementedError

    # ------------------------------------------------------------------ shared
    def _setup_spaces(self, task_features: int) -> None:
        """The spaces, for observations of ``task_features`` values before the solver's feedback."""
        spaces = self.spaces
        self.action_space = action_space(spaces.action_mode, spaces.tol_bounds, spaces.first_step_bounds)
        size = task_features + (NUM_FEEDBACK if spaces.feedback else 0)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (size,), np.float32)
        self.iteration = 0  # finished episodes
        self.solver_failures = 0
        self._play: Playthrough[E] | None = None

    def _feedback(self, play: Playthrough[E]) -> np.ndarray:
        """The feedback part of an observation (empty with ``feedback=False``)."""
        return play.steps.observed_feedback(self.spaces)

    def pool(self, split: str) -> list[E]:
        if split not in self.pools:
            raise ValueError(f"unknown pool {split!r}; valid pools: {', '.join(self.pools)}")
        return self.pools[split]

    def _begin(self, split: str, index: int) -> Playthrough[E]:
        episodes = self.pool(split)
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < len(episodes):
            raise ValueError(f"episode must be an index in [0, {len(episodes)}) of the {split} pool, got {index!r}")
        episode = episodes[int(index)]
        return Playthrough(split, int(index), episode, self._start(episode))

    def _advance_many(self, plays: list[Playthrough[E]],
                      actions: list[BlockAction]) -> list[tuple[Any, Feedback] | SolverError]:
        """Solve the next step of every play at once: per play, its new state and report, or the
        ``SolverError`` of its failed solve. A task whose solves batch (the ODE tasks on torchode)
        overrides this with one batched solve; here each play is solved in turn."""
        out: list[tuple[Any, Feedback] | SolverError] = []
        for play, action in zip(plays, actions, strict=True):
            try:
                out.append(self._advance(play, action))
            except SolverError as err:
                out.append(err)
        return out

    def _end_info(self, play: Playthrough[E]) -> dict[str, Any]:
        """What the last step's ``info`` adds about the finished ``play`` (task-specific)."""
        return {}

    def _take_many(self, plays: list[Playthrough[E]], actions: list[Any]) -> list[tuple[float, bool, bool, dict]]:
        """One step of every play: (reward, terminated, truncated, info) each. The step logic of
        :meth:`step`, :meth:`play` and the vector env (:mod:`infocnf_env.vector`) alike."""
        spaces, reward_config = self.spaces, self.reward_config
        reads = [play.steps.read(action, spaces) for play, action in zip(plays, actions, strict=True)]
        outcomes = self._advance_many(plays, [act for act, _ in reads])
        results = []
        for play, (act, info), outcome in zip(plays, reads, outcomes, strict=True):
            steps = play.steps
            # the pool index is "index", not "episode": SB3's Monitor owns info["episode"]
            info.update(index=play.index, split=play.split, **self._describe(play))
            if isinstance(outcome, SolverError):
                info.update(solver_error=str(outcome), nfe=0, nfe_forward=sum(steps.nfe), nfe_backward=0,
                            error=math.inf)
                results.append((-reward_config.failure_penalty, False, True, info))
                continue
            play.state, feedback = outcome
            reward = steps.record(act, feedback, reward_config.alpha, self.num_blocks)
            info.update(nfe=feedback.nfe, rejected=feedback.rejected)
            if steps.block < self.num_blocks:
                results.append((reward, False, False, info))
                continue
            error = self._error(play)
            reward -= reward_config.error_cost(error)
            info.update(error=error, nfe_backward=0, **steps.summary(spaces), **self._end_info(play))
            results.append((float(reward), True, False, info))
        return results

    def _take(self, play: Playthrough[E], action: Any) -> tuple[float, bool, bool, dict[str, Any]]:
        """One step of ``play`` (:meth:`_take_many` of one)."""
        return self._take_many([play], [action])[0]

    def _terminal(self) -> np.ndarray:
        return np.zeros(self.observation_space.shape or (), dtype=np.float32)

    # ------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode of the training pool drawn by ``np_random``; ``options={"episode": i}``
        picks one, ``options={"split": "test"}`` plays the held-out pool."""
        super().reset(seed=seed)
        options = dict(options or {})
        split = options.pop("split", "train")
        index = options.pop("episode", None)
        if options:
            raise ValueError(f"unknown reset option(s) {sorted(options)}; valid: episode, split")
        if index is None:
            index = int(self.np_random.integers(len(self.pool(split))))
        self._play = self._begin(split, index)
        return self._observe(self._play), {"index": self._play.index, "split": split, **self._describe(self._play)}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._play is None:
            raise RuntimeError("call reset() before step()")
        reward, terminated, truncated, info = self._take(self._play, action)
        if terminated or truncated:
            self._play = None
            self.iteration += int(terminated)
            self.solver_failures += int(truncated)
            return self._terminal(), reward, terminated, truncated, info
        return self._observe(self._play), reward, False, False, info

    # ------------------------------------------------------------------ scoring
    def play(self, split: str, index: int, policy: Policy | list[Any]) -> dict[str, Any]:
        """Play episode ``index`` of pool ``split`` without touching the env's state.

        ``policy``: a function ``(observation, step) -> action``, or a list of actions, one per
        step (the last repeats). Returns the episode's ``reward``, ``nfe``, ``error`` and ``failed``.
        """
        return self.play_many(split, [index], policy)[0]

    def play_many(self, split: str, indices: list[int], policy: Policy | list[Any]) -> list[dict[str, Any]]:
        """:meth:`play` of several episodes of pool ``split`` at once: their steps are taken
        together (:meth:`_take_many`: one batched solve per step where the task batches)."""
        plays = [self._begin(split, index) for index in indices]
        totals = [0.0] * len(plays)
        infos: list[dict[str, Any]] = [{} for _ in plays]
        active = list(range(len(plays)))
        while active:
            actions = []
            for k in active:
                step = plays[k].steps.block
                if isinstance(policy, list):
                    actions.append(policy[min(step, len(policy) - 1)])
                else:
                    actions.append(policy(self._observe(plays[k]), step))
            results = self._take_many([plays[k] for k in active], actions)
            still = []
            for k, (reward, terminated, truncated, info) in zip(active, results, strict=True):
                totals[k] += reward
                infos[k] = info
                if not (terminated or truncated):
                    still.append(k)
            active = still
        return [{"reward": float(total), "nfe": float(info.get("nfe_forward", sum(play.steps.nfe))),
                 "error": float(info.get("error", math.inf)), "failed": "solver_error" in info}
                for total, info, play in zip(totals, infos, plays, strict=True)]

    def score(self, policy: Policy | list[Any], split: str = "test",
              max_episodes: int | None = None) -> dict[str, float]:
        """Mean reward, NFE and error of ``policy`` over a pool (its first ``max_episodes``),
        its episodes played together (:meth:`play_many`)."""
        count = len(self.pool(split)) if max_episodes is None else min(max_episodes, len(self.pool(split)))
        results = self.play_many(split, list(range(count)), policy)
        return {"reward": float(np.mean([r["reward"] for r in results])),
                "nfe": float(np.mean([r["nfe"] for r in results])),
                "error": float(np.mean([r["error"] for r in results])),
                "failures": float(sum(r["failed"] for r in results)), "episodes": float(count)}

    def constant_action(self, tol: float, first_step: float | None = None) -> list[np.ndarray]:
        """The action that solves every step at ``tol`` (and ``first_step``; in the ``tol_method``
        mode with the task's own method), as :meth:`play` takes it."""
        values = [math.log10(tol)]
        if self.spaces.action_mode == "tol_first_step":
            values.append(math.log10(first_step) if first_step else self.spaces.first_step_bounds[1])
        elif self.spaces.action_mode == "tol_method":
            values.append(self.own_method_position())
        return [np.array(values, dtype=np.float32)]

    def own_method_position(self) -> float:
        """The ``tol_method`` action's method position that picks the task's own method."""
        raise ValueError(f"{type(self).__name__} has no tol_method action mode")

    # ------------------------------------------------------------------ runner interface
    def evaluate(self, split: str = "test", tol: float = EVAL_TOL, max_batches: int | None = None) -> dict[str, float]:
        """Mean reward, NFE and error over pool ``split`` with every step at ``tol`` (the
        runner's periodic check; a run's own policy is scored with :meth:`score`)."""
        return self.score(self.constant_action(tol), split, max_batches)

    def state_dict(self) -> dict[str, Any]:
        return {"config": dataclasses.asdict(self.config), "iteration": self.iteration,
                "solver_failures": self.solver_failures, "np_random": self.np_random.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("config") != dataclasses.asdict(self.config):
            raise ValueError(f"checkpoint was written for another {type(self).__name__} task")
        self.iteration = int(state["iteration"])
        self.solver_failures = int(state["solver_failures"])
        self.np_random.bit_generator.state = state["np_random"]

    def rank_state_dict(self) -> dict[str, Any]:
        return {}

    def load_rank_state_dict(self, state: dict[str, Any] | None) -> None:
        """Nothing differs between ranks."""

    def distribute(self, rank: int, world_size: int) -> None:
        if world_size > 1:
            raise ValueError(f"{type(self).__name__} runs in one process")
