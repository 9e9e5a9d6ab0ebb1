"""Fixed tolerances: the paper's baseline (every block at 1e-5) or a per-block schedule.

    python -m agents.fixed --env InfoCNF-Digits-v0 --tol 1e-5
    python -m agents.fixed --env InfoCNF-Digits-v0 --schedule 1e-3 1e-4 1e-5
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from agents.cli import CommonArgs, arg, parse_args
from agents.runner import Agent, resolve_args, run_agent, run_cli


class FixedAgent(Agent):
    """Returns log10 of a fixed tolerance, or of ``schedule[block]`` for each block."""

    def __init__(self, tol: float = 1e-5, schedule: list[float] | None = None, num_blocks: int | None = None):
        tols = list(schedule) if schedule else [tol]
        if any(not (t > 0 and math.isfinite(t)) for t in tols):
            raise ValueError(f"tolerances must be positive and finite, got {tols}")
        if schedule and num_blocks is not None and len(schedule) != num_blocks:
            raise ValueError(f"--schedule needs one tolerance per block ({num_blocks}), got {len(schedule)}")
        self.log_tols = [math.log10(t) for t in tols]
        self._block = 0

    def act(self, obs) -> np.ndarray:
        value = self.log_tols[min(self._block, len(self.log_tols) - 1)]
        self._block += 1
        return np.array([value], dtype=np.float32)

    def end_episode(self) -> dict[str, float]:
        self._block = 0
        return {}

    def state_dict(self) -> dict:
        return {"log_tols": list(self.log_tols)}

    def load_state_dict(self, state: dict) -> None:
        self.log_tols = list(state["log_tols"])


@dataclasses.dataclass
class Args(CommonArgs):
    tol: float = arg(1e-5, "tolerance of every block (the paper's fixed-tolerance arm uses 1e-5)")
    schedule: list[float] = arg([], "per-block tolerances, one per block (overrides --tol)", nargs="*")


def main(argv: list[str] | None = None) -> dict:
    args = resolve_args(parse_args(Args, argv, description=__doc__), "fixed")
    return run_agent(
        "fixed", args,
        lambda env: FixedAgent(args.tol, args.schedule, env.unwrapped.num_blocks),
        {"tol": args.tol, "schedule": args.schedule},
    )


if __name__ == "__main__":
    run_cli(main)
