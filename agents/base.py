"""The agent base class: what the run loop asks of a tolerance policy."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

#: A run's deterministic policy as a benchmark env plays it: (observation, block) -> the whole action.
ActionPolicy = Callable[[Any, int], np.ndarray]
#: A tolerance policy for analysis: (observation, block) -> (log10 tol, the policy's std in log10 units).
TolerancePolicy = Callable[[Any, int], tuple[float, float]]


class Agent:
    """A tolerance policy as the runner drives it; every agent of ``agents/`` subclasses it.

    Episode-driven agents (fixed, REINFORCE) implement :meth:`act`, :meth:`observe` and
    :meth:`end_episode`, which :func:`run_episodes` calls; an agent that drives the env itself
    (SB3) implements only the state methods. The multi-process hooks default to "nothing
    differs between ranks"; an agent with its own randomness or weights overrides them.
    :meth:`saved_policy` reads a finished run's deterministic policy back from its files.
    """

    @classmethod
    def saved_policy(cls, run_dir: Path, env: Any) -> ActionPolicy:
        """The deterministic policy of the finished run in ``run_dir``, read back from its
        ``config.json`` and checkpoint, returning ``env``'s whole action: what a run's summary
        scores on a benchmark task, and what ``agents.evaluate.load_action_policy`` returns."""
        raise NotImplementedError(f"{cls.__name__} has no deterministic policy to read back")

    @classmethod
    def saved_tolerance_policy(cls, run_dir: Path, env: Any) -> TolerancePolicy:
        """:meth:`saved_policy`'s log10 tolerance (the action's first entry), with the policy's
        std in log10 units (0 here: a deterministic agent; a stochastic one overrides it)."""
        action = cls.saved_policy(run_dir, env)
        return lambda obs, block: (float(action(obs, block)[0]), 0.0)

    @classmethod
    def env_kwargs(cls, env_id: str) -> dict[str, Any]:
        """The env settings the agent's trainer adds to ``env_id``'s by default (REINFORCE: the
        observation its gates read)."""
        return {}

    @classmethod
    def for_env(cls, env: Any, *, seed: int, tol: float) -> Agent:
        """The agent with its trainer's defaults for ``env``, to be driven episode by episode
        (``tol``: the tolerance of an agent that keeps one fixed). An agent that drives the env
        itself (SB3) has none."""
        raise NotImplementedError(f"{cls.__name__} drives the env itself; it cannot be played episode by episode")

    @classmethod
    def plays_episodes(cls) -> bool:
        """Whether :meth:`for_env` builds it (a subclass between it and :class:`Agent` defines one)."""
        return any("for_env" in vars(k) for k in cls.__mro__[: cls.__mro__.index(Agent)])

    def act(self, obs: Any) -> np.ndarray:
        """log10 of the tolerance for the block whose observation is ``obs``."""
        raise NotImplementedError(f"{type(self).__name__} does not act episode by episode")

    def observe(self, reward: float) -> None:
        """The reward of the last action."""

    def end_episode(self) -> dict[str, float]:
        """Learn from the finished episode; statistics for ``metrics.jsonl``."""
        return {}

    def state_dict(self) -> dict:
        raise NotImplementedError

    def load_state_dict(self, state: dict) -> None:
        raise NotImplementedError

    def modules(self) -> list[torch.nn.Module]:
        """The agent's weights, checked equal on every rank of a multi-process run."""
        return []

    def distribute(self, rank: int, world_size: int) -> None:
        """Join multi-process training (the process group is initialised)."""

    def rank_state_dict(self) -> dict | None:
        """What differs between ranks (saved per rank); ``None``: nothing."""
        return None

    def load_rank_state_dict(self, state: dict | None) -> None:
        """Restore :meth:`rank_state_dict`; ``None`` when the checkpoint holds none for this rank."""
