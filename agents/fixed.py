"""Fixed tolerances: the paper's baseline (every block at 1e-5) or a per-block schedule.

    python -m agents.fixed --env InfoCNF-Digits-v0 --tol 1e-5
    python -m agents.fixed --env InfoCNF-Digits-v0 --schedule 1e-3 1e-4 1e-5
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from agents.base import ActionPolicy, Agent
from agents.cli import CommonArgs, arg, parse_args
from agents.loop import run_agent, run_cli
from agents.run_dir import resolve_args
from flows import EVAL_TOL


class FixedAgent(Agent):
    """Returns log10 of a fixed tolerance, or of ``schedule[block]`` for each block; in the
    ``tol_first_step`` action mode also log10 of a fixed ``first_step`` (fraction of the span)."""

    def __init__(self, tol: float = EVAL_TOL, schedule: list[float] | None = None, num_blocks: int | None = None,
                 first_step: float | None = None):
        tols = list(schedule) if schedule else [tol]
        if any(not (t > 0 and math.isfinite(t)) for t in tols):
            got = " ".join(f"{t:g}" for t in tols)
            what = "--schedule must be positive finite tolerances" if schedule else \
                "--tol must be a positive finite tolerance"
            raise ValueError(f"{what}, got {got}")
        if schedule and num_blocks is not None and len(schedule) != num_blocks:
            raise ValueError(f"--schedule needs one tolerance per block ({num_blocks}), got {len(schedule)}")
        if first_step is not None and not 0 < first_step <= 1:
            raise ValueError(f"--first-step must be a fraction of the block's time span in (0, 1], got {first_step}")
        self.log_tols = [math.log10(t) for t in tols]
        self.log_first_step = None if first_step is None else math.log10(first_step)
        self._block = 0

    @classmethod
    def for_env(cls, env: Any, *, seed: int, tol: float) -> FixedAgent:
        return cls(tol=tol)

    def act(self, obs) -> np.ndarray:
        value = self.log_tols[min(self._block, len(self.log_tols) - 1)]
        self._block += 1
        if self.log_first_step is None:
            return np.array([value], dtype=np.float32)
        return np.array([value, self.log_first_step], dtype=np.float32)

    def end_episode(self) -> dict[str, float]:
        self._block = 0
        return {}

    def state_dict(self) -> dict:
        return {"log_tols": list(self.log_tols), "log_first_step": self.log_first_step}

    def load_state_dict(self, state: dict) -> None:
        self.log_tols = list(state["log_tols"])
        self.log_first_step = state.get("log_first_step")

    @classmethod
    def saved_policy(cls, run_dir: Path, env: Any) -> ActionPolicy:
        """The run's tolerance (or per-block schedule) and first step, from its ``config.json``."""
        config = json.loads((Path(run_dir) / "config.json").read_text())
        tols = config.get("schedule") or [config["tol"]]
        first_step = config.get("first_step")
        tail = [] if first_step is None else [math.log10(first_step)]
        return lambda obs, block: np.array([math.log10(tols[min(block, len(tols) - 1)]), *tail])


def make_fixed_agent(env: Any, tol: float, schedule: list[float], first_step: float | None) -> FixedAgent:
    """The fixed agent for ``env``: ``first_step`` is required exactly when the env's action
    holds a first step (``action_mode="tol_first_step"``)."""
    mode = getattr(getattr(env.unwrapped, "spaces", None), "action_mode", None)
    if mode == "tol_method":
        raise ValueError("the fixed agent chooses no method: a fixed tolerance with the task's own method is "
                         "action_mode=tol")
    wants_first_step = env.action_space.shape[0] == 2
    if wants_first_step and first_step is None:
        raise ValueError("this env's action holds a first step (action_mode=tol_first_step): pass --first-step")
    if first_step is not None and not wants_first_step:
        raise ValueError("--first-step needs an env with action_mode=tol_first_step")
    return FixedAgent(tol, schedule, env.unwrapped.num_blocks, first_step)


@dataclasses.dataclass
class Args(CommonArgs):
    tol: float = arg(1e-5, "tolerance of every block (the paper's fixed-tolerance arm uses 1e-5)")
    schedule: list[float] = arg([], "per-block tolerances, one per block (overrides --tol)", nargs="*")
    first_step: float | None = arg(None, "first step of every solve as a fraction of the block's time span, in "
                                   "(0, 1]; needed by (and only by) envs with action_mode=tol_first_step")


def main(argv: list[str] | None = None) -> dict:
    args = resolve_args(parse_args(Args, argv, description=__doc__), "fixed")
    return run_agent(
        "fixed", args,
        lambda env: make_fixed_agent(env, args.tol, args.schedule, args.first_step),
        {"tol": args.tol, "schedule": args.schedule, "first_step": args.first_step},
    )


if __name__ == "__main__":
    run_cli(main)
