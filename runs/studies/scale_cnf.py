"""leaderboard-scale-cnf: the ``leaderboard-scale`` study on the CNF task, ``CNF-Frozen-Mixed-v0``.

The same code as ``leaderboard-scale`` (:mod:`runs.studies.scale`: each agent searched by
Optuna on the training pool, then trained ten times the leaderboard's episodes on 5 seeds on
the task's native vector env, scored on the test pool against the task's best constant
tolerance and its best classical setting), from the task's committed flags
(``agents/hyperparams/benchmark.json``, chosen by ``tune-cnf``). The frozen flows have no
out-of-range pool, so the rows' ``ood`` figures are empty.

Run as ``python -m runs.reproduce leaderboard-scale-cnf --jobs 2``; the committed result's
``wall_s`` is the time of the run that wrote it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from runs.studies.benchmark import QUICK as BENCHMARK_QUICK
from runs.studies.scale import CONFIG as ODE_CONFIG
from runs.studies.scale import QUICK as ODE_QUICK
from runs.studies.scale import SPACES, finding_answer, scale_section
from runs.studies.scale import STUDY as SCALE
from runs.study import Finding, Page, Res

TASK = "CNF-Frozen-Mixed-v0"

#: The ODE task's spaces, but SAC's learning starts stop at 2048: a trial of 1,250 episodes of
#: this task's 2 blocks takes 2,500 environment steps, so a later start would learn nothing.
CNF_SPACES: dict[str, dict[str, tuple]] = {
    **SPACES, "sac": {**SPACES["sac"], "learning_starts": ("cat", [64, 256, 1024, 2048])},
}

CONFIG: dict[str, Any] = {**ODE_CONFIG, "task": TASK, "task_kwargs": {}, "spaces": CNF_SPACES}
QUICK: dict[str, Any] = {**ODE_QUICK, "task_kwargs": BENCHMARK_QUICK["tasks"][TASK]["task_kwargs"]}

STEM = "leaderboard-scale-cnf"


def section(res: Res) -> str:
    return scale_section(res, STEM)


#: ``leaderboard-scale`` with this task's settings: its code, table, figure and seeds.
STUDY = dataclasses.replace(
    SCALE, name=STEM, stem=STEM, config=CONFIG, quick=QUICK,
    summary="the leaderboard's agents searched by Optuna, trained 10x longer on the CNF task's vector env",
    page=Page("Leaderboard at scale on the CNF task", order=152, render=section, needs=(STEM,)),
    finding=Finding("... and on the CNF task?", order=61, answer=lambda res: finding_answer(res, STEM)),
)
