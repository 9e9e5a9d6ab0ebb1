"""What every env's step shares: the action read, the solver's feedback and the record of an episode.

An episode of any env here (a training iteration of :class:`~infocnf_env.TrainingStepEnv`, an
episode of a benchmark task, :class:`~infocnf_env.benchmark.BenchmarkEnv`) is ``N`` steps, each
solving one ODE block or segment at the agent's action. :class:`Steps` is that episode's record:
it reads the action (:func:`~infocnf_env.actions.parse_action`), starts the step's ``info``,
keeps each solved step's NFE, action and :class:`Feedback`, prices the step's NFE (Eq. 6:
``(alpha / N) * nfe``) and writes the episode's summary into the last step's ``info``. The envs
compose it; each adds only what is its own (the loss and update of a training iteration, the
error against a reference of a benchmark episode).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from flows.ode import BlockStats
from infocnf_env.actions import BlockAction, parse_action
from infocnf_env.config import SpaceConfig

#: Features of the solver's feedback from the previous step (``spaces.feedback``).
NUM_FEEDBACK = 4


@dataclass(frozen=True)
class Feedback:
    """What the solver reports after one step of an episode (observed before the next).

    ``last_step`` is the last accepted step as a fraction of the step's time span (``None``:
    a solver without step control, or no step accepted).
    """

    nfe: int
    last_step: float | None
    accepted: int
    rejected: int
    tol: float

    @classmethod
    def of_block(cls, stats: BlockStats) -> Feedback:
        """The feedback of a flow's ODE block (its forward solve's counts, the step as a fraction of its span)."""
        counter = stats.counter
        last = None if counter.last_step is None else counter.last_step / stats.span
        return cls(stats.nfe, last, counter.accepted, counter.rejected, stats.tol)

    def features(self) -> np.ndarray:
        """``log1p(nfe)``, ``log10(last_step)``, ``log1p(rejected)``, ``log10(tol)`` as float32."""
        step = math.log10(self.last_step) if self.last_step and self.last_step > 0 else 0.0
        return np.array([math.log1p(self.nfe), step, math.log1p(self.rejected), math.log10(self.tol)],
                        dtype=np.float32)


def no_feedback() -> np.ndarray:
    """The feedback features before the first step of an episode."""
    return np.zeros(NUM_FEEDBACK, dtype=np.float32)


@dataclass
class Steps:
    """The record of one episode's solved steps (module docstring)."""

    nfe: list[int] = dataclasses.field(default_factory=list)
    actions: list[BlockAction] = dataclasses.field(default_factory=list)
    feedback: Feedback | None = None  # the last solved step's

    @property
    def block(self) -> int:
        """The index of the next step (the number solved so far)."""
        return len(self.nfe)

    def read(self, action: Any, spaces: SpaceConfig) -> tuple[BlockAction, dict[str, Any]]:
        """The step's action, read within ``spaces``' bounds (one ``ValueError`` for a malformed
        one), and the step's ``info`` so far: ``block``, ``tol`` and ``first_step`` when chosen."""
        act = parse_action(action, spaces.action_mode, spaces.tol_bounds, spaces.first_step_bounds)
        info: dict[str, Any] = {"block": self.block, "tol": act.tol}
        if act.first_step is not None:
            info["first_step"] = act.first_step
        return act, info

    def record(self, act: BlockAction, feedback: Feedback, alpha: float, num_blocks: int) -> float:
        """Keep a solved step; its reward, the NFE term of Eq. 6: ``-(alpha / N) * nfe``."""
        self.nfe.append(feedback.nfe)
        self.actions.append(act)
        self.feedback = feedback
        return -nfe_cost(feedback.nfe, alpha, num_blocks)

    def observed_feedback(self, spaces: SpaceConfig) -> np.ndarray:
        """The feedback part of an observation: the last step's features (zeros before the first),
        empty with ``spaces.feedback`` off."""
        if not spaces.feedback:
            return np.zeros(0, dtype=np.float32)
        return self.feedback.features() if self.feedback is not None else no_feedback()

    def summary(self, spaces: SpaceConfig) -> dict[str, Any]:
        """The last step's ``info`` about the whole episode: ``nfe_forward``, ``nfe_blocks``,
        ``tols`` and, in the ``tol_first_step`` mode, ``first_steps``."""
        out: dict[str, Any] = {"nfe_forward": sum(self.nfe), "nfe_blocks": list(self.nfe),
                               "tols": [a.tol for a in self.actions]}
        if spaces.action_mode == "tol_first_step":
            out["first_steps"] = [a.first_step for a in self.actions]
        return out


def nfe_cost(nfe: int, alpha: float, num_blocks: int) -> float:
    """The NFE term of Eq. 6 for one block's (or the backward pass's) evaluations: ``(alpha / N) * nfe``."""
    return (alpha / num_blocks) * nfe
