"""tune-cnf: the ``tune`` study on the CNF task with room, ``CNF-Frozen-Mixed-v0``.

The same code as ``tune`` (:mod:`runs.studies.tune`: each leaderboard agent's learning rate
chosen by its deterministic policy's mean reward on the training pool, the candidates' runs
shared with the ``benchmark`` study's leaderboard), from the flags the task's untuned entry
held: the default flags with REINFORCE's initial mean in the middle of the task's bounds (-4
of (-8, 0)).

Run as ``python -m runs.reproduce tune-cnf --jobs 2`` (``SEEDS`` seeds). Cost (full): the runs
of the candidates the leaderboard does not share; the committed result's ``wall_s``
(``runs/results/tune-cnf.json``) is the time of the run that wrote it (runs found in the
workdir's cache are not retrained).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from runs.studies.benchmark import CONFIG as BENCHMARK
from runs.studies.benchmark import QUICK as BENCHMARK_QUICK
from runs.studies.tune import CONFIG as ODE_CONFIG
from runs.studies.tune import GRID, tune_section
from runs.studies.tune import STUDY as TUNE
from runs.study import Page, Res

CONFIG: dict[str, Any] = {
    **ODE_CONFIG,
    "task": "CNF-Frozen-Mixed-v0",
    "task_kwargs": BENCHMARK["tasks"]["CNF-Frozen-Mixed-v0"]["task_kwargs"],
    "agent_episodes": BENCHMARK["agent_episodes"],
    "base_overrides": {"reinforce": {"--init-mean": "-4.0"}},
}
QUICK: dict[str, Any] = {
    "task_kwargs": BENCHMARK_QUICK["tasks"]["CNF-Frozen-Mixed-v0"]["task_kwargs"],
    "agent_episodes": BENCHMARK_QUICK["agent_episodes"],
    "agents": ["reinforce"],
    "grid": {"reinforce": {**GRID["reinforce"], "values": [3e-3, 1e-2]}},
}


def section(res: Res) -> str:
    return tune_section(res["tune-cnf"], "tune-cnf", "benchmark")


#: ``tune`` with this task's settings: its code, table, figure and seeds, this study's section.
STUDY = dataclasses.replace(
    TUNE, name="tune-cnf", stem="tune-cnf", summary="the same on CNF-Frozen-Mixed-v0", config=CONFIG, quick=QUICK,
    page=Page("Agent learning rates on the CNF task, tuned on the training pool", order=149, render=section,
              needs=("tune-cnf",)),
)
