"""The agents: one entry per agent name, the only place that maps a name to its code.

An agent name (``fixed``, ``reinforce``, ``ppo``, ``a2c``, ``sac``, ``td3``) is what the
studies, the benchmark tasks' hyperparameter file (``agents/hyperparams/benchmark.json``) and
the figures call an agent. Its :class:`AgentEntry` says

* which CLI trains it (``python -m agents.<trainer>``) and the flags that select it there
  (``--algo ppo`` for the SB3 algorithms, which share ``agents.sb3``);
* the name its runs record as ``agent`` in their ``config.json`` (``sb3-ppo``), by which a
  finished run finds its entry again (:func:`of_run`);
* its :class:`agents.base.Agent` subclass in the trainer module, whose ``saved_policy`` reads a
  finished run's deterministic policy back (``agents.evaluate`` scores runs with it);
* its default flags on the benchmark tasks (each agent's defaults plus what rewards of any
  scale need: return or reward normalisation, TD3's exploration noise; REINFORCE's undiscounted
  return of Eq. 7, a learned baseline of the observation, gate lr 3e-3 and its initial mean in
  the middle of the ODE tasks' action bounds, -5.5 of (-9, -2)); a task's entry in the
  hyperparameter file replaces them (:func:`agent_flags`);
* the flag a learning-rate search varies and the value the default flags give (the ``tune``
  studies' grid), and its colour in the figures.

Adding an agent is its module (a trainer CLI and an ``Agent`` subclass) and one entry in
:data:`AGENTS`. This module imports no agent module: an entry names its code, which is imported
when it is used (:meth:`AgentEntry.agent_class`), so the registry stays light and acyclic.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agents.base import Agent

#: The benchmark tasks' tuned flags, per task and agent (RL Zoo style; written from the ``tune``
#: studies' choices, which a test checks).
HYPERPARAMS = Path(__file__).resolve().parent / "hyperparams" / "benchmark.json"


@dataclass(frozen=True)
class AgentEntry:
    """One agent: its code, its runs' name, its benchmark defaults and its colour.

    Attributes:
        name: the agent's name in the studies, the hyperparameter file and the figures.
        trainer: the module of ``agents`` whose CLI trains it (``python -m agents.<trainer>``).
        selector: the flags that select it on its trainer's CLI (``("--algo", "ppo")``).
        run_name: ``agent`` in the ``config.json`` of its runs.
        agent_class_name: its :class:`agents.base.Agent` subclass, defined in the trainer module.
        colour: its matplotlib colour in the figures.
        default_flags: its flags on a benchmark task without a tuned entry (the selector
            included); ``None`` for an agent that is no leaderboard entrant.
        lr_flag: the flag of its learning rate (what the ``tune`` studies vary); ``None``: none.
        default_lr: the learning rate its default flags give.
        study_flags: flags the studies' runs of it add unless the run's own flags set their
            first one (REINFORCE: the paper's Gaussian gates, which every committed study ran
            with, whatever the CLI's default): :func:`study_flags_for`.
    """

    name: str
    trainer: str
    selector: tuple[str, ...]
    run_name: str
    agent_class_name: str
    colour: str
    default_flags: tuple[str, ...] | None = None
    lr_flag: str | None = None
    default_lr: float | None = None
    study_flags: tuple[str, ...] = ()

    @property
    def module(self) -> str:
        """The trainer's module path (``agents.sb3``)."""
        return f"agents.{self.trainer}"

    def agent_class(self) -> type[Agent]:
        """The agent's :class:`agents.base.Agent` subclass, imported from its trainer module."""
        from agents.base import Agent

        cls = getattr(importlib.import_module(self.module), self.agent_class_name, None)
        if not (isinstance(cls, type) and issubclass(cls, Agent)):
            raise TypeError(f"agent {self.name!r}: {self.module} defines no Agent subclass {self.agent_class_name}")
        return cls


def _sb3(algo: str, colour: str, flags: tuple[str, ...], default_lr: float) -> AgentEntry:
    return AgentEntry(algo, "sb3", ("--algo", algo), f"sb3-{algo}", "SB3Agent", colour,
                      ("--algo", algo, *flags), "--policy-lr", default_lr)


#: Every agent, by name. The SB3 algorithms' default learning rates are SB3's own, PPO's is
#: ``agents.sb3``'s (``default_algo_kwargs``).
AGENTS: dict[str, AgentEntry] = {entry.name: entry for entry in (
    AgentEntry("fixed", "fixed", (), "fixed", "FixedAgent", "tab:blue"),
    AgentEntry("reinforce", "reinforce", (), "reinforce", "ReinforceAgent", "tab:red",
               ("--normalize-returns", "--value-baseline", "--gate-lr", "3e-3", "--gamma", "1.0", "--init-mean",
                "-5.5", "--init-std", "0.5"), "--gate-lr", 3e-3,
               study_flags=("--gate-dist", "gaussian")),
    _sb3("ppo", "tab:green", ("--normalize-reward", "--init-std", "0.5"), 3e-4),
    _sb3("a2c", "tab:orange", ("--normalize-reward", "--init-std", "0.5"), 7e-4),
    _sb3("sac", "tab:purple", ("--normalize-reward",), 3e-4),
    _sb3("td3", "tab:brown", ("--normalize-reward", "--action-noise", "0.1"), 1e-3),
)}


def get(name: str) -> AgentEntry:
    """The entry of agent ``name``; one ``ValueError`` naming the valid agents for any other."""
    if name not in AGENTS:
        raise ValueError(f"unknown agent {name!r}; valid: {', '.join(AGENTS)}")
    return AGENTS[name]


def of_run(run_name: str) -> AgentEntry:
    """The entry whose runs record ``agent`` as ``run_name`` (a run's ``config.json``)."""
    for entry in AGENTS.values():
        if entry.run_name == run_name:
            return entry
    raise ValueError(f"unknown agent {run_name!r} in a run's config.json; valid: "
                     f"{', '.join(e.run_name for e in AGENTS.values())}")


def of_command(trainer: str, flags: list[str] | tuple[str, ...]) -> AgentEntry | None:
    """The entry that ``python -m agents.<trainer> FLAGS`` trains: its trainer is ``trainer`` and its
    selector appears in ``flags`` (``--algo ppo``); ``None`` where no entry matches."""
    flags = list(flags)
    for entry in AGENTS.values():
        n = len(entry.selector)
        if entry.trainer == trainer and (not n or any(flags[i:i + n] == list(entry.selector)
                                                     for i in range(len(flags) - n + 1))):
            return entry
    return None


def study_flags_for(trainer: str, flags: list[str] | tuple[str, ...]) -> list[str]:
    """``flags`` of a study's ``agents.<trainer>`` run, with its agent's :attr:`AgentEntry.study_flags`
    in front unless ``flags`` already set the first of them."""
    entry = of_command(trainer, flags)
    own = entry.study_flags if entry is not None else ()
    return [*own, *flags] if own and own[0] not in flags else list(flags)


def trainer_of(run_name: str) -> str | None:
    """The trainer of the agent whose runs record ``agent`` as ``run_name``; ``None`` for none."""
    return next((e.trainer for e in AGENTS.values() if e.run_name == run_name), None)


def default_flags(agent: str) -> list[str]:
    """``agent``'s flags on a benchmark task without a tuned entry (what the ``tune`` studies vary)."""
    flags = get(agent).default_flags
    if flags is None:
        raise ValueError(f"agent {agent!r} has no benchmark flags; agents with them: "
                         f"{', '.join(n for n, e in AGENTS.items() if e.default_flags is not None)}")
    return list(flags)


def agent_flags(task: str, agent: str) -> list[str]:
    """The flags of ``agent`` on benchmark ``task``: the task's entry in :data:`HYPERPARAMS`, else
    the agent's :func:`default_flags`."""
    get(agent)
    tuned = json.loads(HYPERPARAMS.read_text()).get(task, {})
    return list(tuned[agent]) if agent in tuned else default_flags(agent)


def hyperparams() -> dict[str, dict[str, list[str]]]:
    """The hyperparameter file's entries, task -> agent -> flags (its comment left out)."""
    return {task: entry for task, entry in json.loads(HYPERPARAMS.read_text()).items() if not task.startswith("_")}
