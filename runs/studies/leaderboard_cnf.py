"""leaderboard-cnf: the leaderboard study on the CNF task with room, ``CNF-Frozen-Mixed-v0``.

The same code as ``leaderboard`` (:mod:`runs.studies.leaderboard`: the baselines chosen on the
training pool, every agent and baseline scored on the held-out test pool), on the frozen-flow
task whose episodes differ in difficulty: small batches from five toy densities, each solved by
its density's flow of two stacked blocks (:mod:`infocnf_env.frozen`). Its targets: the oracle's
room over the best schedule at least 15%, the best agent closing at least half of it.

Cost (full): the five flows, trained once until their loss plateaus and cached (~10 minutes
each on a core), references and grids of 128 episodes (a few minutes), 5 agents x 3 seeds x
``agent_episodes`` episodes of two blocks (~0.05-0.2 s each): under an hour with ``--jobs 2``.
"""

from __future__ import annotations

from typing import Any

from runs.studies.leaderboard import CONFIG as ODE_CONFIG
from runs.studies.leaderboard import NULLABLE_KEYS, ROW_KEYS, run

__all__ = ["CONFIG", "NULLABLE_KEYS", "QUICK", "ROW_KEYS", "USES_DIGITS_REGIMES", "run"]

CONFIG: dict[str, Any] = {
    **ODE_CONFIG,
    "tasks": ["CNF-Frozen-Mixed-v0"],
    "task_kwargs": {},
    "targets": {"gap_fraction": 0.15, "gap_closed": 0.5, "nfe_saving_at_equal_error": 0.2},
}
QUICK: dict[str, Any] = {
    "task_kwargs": {"densities": ["checkerboard", "8gaussians"], "hidden": 4, "train_iterations": 3,
                    "train_pool_size": 2, "test_pool_size": 2},
    "grid_step": 4.0,
    "schedule_grid_step": 4.0,
    "agents": ["reinforce", "ppo"],
    "agent_episodes": 4,
    "contextual_neighbours": 1,
}

USES_DIGITS_REGIMES = False
