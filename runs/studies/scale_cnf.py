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

#: The ODE task's spaces for the on-policy agents. SAC's and TD3's are sized to this task's
#: episodes of 2 blocks: a trial of 1,250 episodes takes 2,500 environment steps, so learning
#: starts stop at 2048 (a later start would learn nothing), and a final run of 5,000 episodes
#: takes 10,000, so a buffer of 10,000 already holds every transition (larger ones are the
#: same buffer). Both also search ``gradient_steps``, the updates per training call: with 16
#: sub-envs a ``train_freq`` of 1 trains once per 16 transitions, and only ``gradient_steps``
#: can train more often than that.
_OFF_POLICY: dict[str, tuple] = {
    "buffer_size": ("cat", [500, 1000, 2000, 10000]),
    "learning_starts": ("cat", [64, 256, 1024, 2048]),
    "train_freq": ("cat", [1, 4, 16, 64, 256]),
    "gradient_steps": ("cat", [1, 4, 16]),
}
CNF_SPACES: dict[str, dict[str, tuple]] = {
    **SPACES,
    "sac": {"--policy-lr": SPACES["sac"]["--policy-lr"], **_OFF_POLICY},
    "td3": {"--policy-lr": SPACES["td3"]["--policy-lr"], **_OFF_POLICY},
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
