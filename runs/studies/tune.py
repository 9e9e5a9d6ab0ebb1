"""tune: each leaderboard agent's learning rate, chosen on the training pool of a benchmark task.

For each agent of the ``benchmark`` study's leaderboard on ``task`` (``ODE-Mixed-v0``), the
candidates of ``grid`` (its learning rate: REINFORCE's ``--gate-lr``, the SB3 algorithms'
``--policy-lr``, around the value its default flags give, :mod:`agents.registry`), each
trained for the leaderboard's ``agent_episodes`` episodes per seed, its deterministic policy
scored by its mean reward on the *training* pool (the test pool is never looked at).
``chosen``: per agent, the candidate with the best mean training reward over seeds, and its
flags, which are the task's entry in ``agents/hyperparams/benchmark.json`` (RL Zoo's way: the
study finds them, the committed file holds them, and a test checks the two agree).

The candidates' runs are the leaderboard's runs (same labels, flags and settings): a
candidate with the default flags is the leaderboard's run of the default flags, and the chosen
candidate's runs on the tuning seeds are reused by the leaderboard.

Rows: ``task``, ``agent``, ``flag``, ``value``, ``is_default``, ``train_reward_mean`` / ``_std``
(over seeds), ``chosen``, ``seeds``, ``per_seed``, ``run_dirs``.

Run as ``python -m runs.reproduce tune --jobs 2``, on ``SEEDS`` seeds (a candidate's scores vary
between seeds, ``per_seed`` in the result: one seed would choose on noise). Cost (full): a run
per agent, candidate and seed, the default candidates' runs shared with the leaderboard; the
committed result's ``wall_s`` (``runs/results/tune.json``) is the time of the run that wrote it
(runs found in the workdir's cache are not retrained).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from agents import registry
from agents.registry import default_flags
from runs import figures
from runs.format import bullets, figure
from runs.run_cache import Context, run_arms
from runs.studies.benchmark import CONFIG as BENCHMARK
from runs.studies.benchmark import QUICK as BENCHMARK_QUICK
from runs.studies.benchmark import agent_arm, make_task
from runs.study import Page, Res, Study

ROW_KEYS = ("task", "agent", "flag", "value", "is_default", "train_reward_mean", "train_reward_std", "chosen",
            "seeds")

#: Per agent, the candidate learning rates: a factor of about 3 either side of the value its
#: default flags give.
VALUES: dict[str, list[float]] = {
    "reinforce": [1e-3, 3e-3, 1e-2],
    "ppo": [1e-4, 3e-4, 1e-3],
    "a2c": [2e-4, 7e-4, 2e-3],
    "sac": [1e-4, 3e-4, 1e-3],
    "td3": [3e-4, 1e-3, 3e-3],
}
#: Per agent: the flag tuned and the value the default flags give (the agent's ``lr_flag`` and
#: ``default_lr``, :mod:`agents.registry`: REINFORCE's ``--gate-lr``; SB3's own learning rates,
#: or 3e-4 for PPO as ``agents.sb3`` sizes it), and the candidates.
GRID: dict[str, dict[str, Any]] = {
    agent: {"flag": registry.get(agent).lr_flag, "default": registry.get(agent).default_lr, "values": values}
    for agent, values in VALUES.items()
}

CONFIG: dict[str, Any] = {
    "task": "ODE-Mixed-v0",
    "task_kwargs": BENCHMARK["tasks"]["ODE-Mixed-v0"]["task_kwargs"],
    "agent_episodes": BENCHMARK["agent_episodes"],
    "agents": list(GRID),
    "grid": GRID,
    "base_overrides": {},
}
QUICK: dict[str, Any] = {
    "task_kwargs": BENCHMARK_QUICK["tasks"]["ODE-Mixed-v0"]["task_kwargs"],
    "agent_episodes": BENCHMARK_QUICK["agent_episodes"],
    "agents": ["reinforce", "ppo"],
    "grid": {"reinforce": {**GRID["reinforce"], "values": [3e-3, 1e-2]},
             "ppo": {**GRID["ppo"], "values": [3e-4, 1e-3]}},
}


def _set(flags: list[str], flag: str, value: str) -> list[str]:
    flags = list(flags)
    if flag in flags:
        flags[flags.index(flag) + 1] = value
        return flags
    return [*flags, flag, value]


def base_flags(agent: str, overrides: dict[str, dict[str, str]] | None = None) -> list[str]:
    """``agent``'s committed default flags with the task's ``overrides`` (flag -> value) set: the
    flags every candidate starts from."""
    flags = default_flags(agent)
    for flag, value in (overrides or {}).get(agent, {}).items():
        flags = _set(flags, flag, value)
    return flags


def candidate_flags(agent: str, flag: str, value: float, default: float,
                    overrides: dict[str, dict[str, str]] | None = None) -> list[str]:
    """:func:`base_flags` with ``flag`` set to ``value``; the base flags themselves (the very
    same run as the leaderboard's untuned one) when ``value`` is the default."""
    flags = base_flags(agent, overrides)
    if math.isclose(value, default, rel_tol=1e-9):
        return flags
    return _set(flags, flag, f"{value:g}")


def run(ctx: Context) -> dict:
    from agents.evaluate import load_action_policy

    cfg, task = ctx.config, ctx.config["task"]
    env = make_task(ctx, task, cfg["task_kwargs"])  # references cached before the runs start
    candidates = [(agent, value, candidate_flags(agent, cfg["grid"][agent]["flag"], value,
                                                 cfg["grid"][agent]["default"], cfg["base_overrides"]))
                  for agent in cfg["agents"] for value in cfg["grid"][agent]["values"]]
    arms = {(agent, value, s): agent_arm(ctx, task, cfg["task_kwargs"], agent, s, flags)
            for agent, value, flags in candidates for s in ctx.seeds}
    run_arms(ctx, list(arms.values()))
    rows = []
    for agent, value, flags in candidates:
        dirs = [arms[(agent, value, s)].run_dir(ctx.runs_dir) for s in ctx.seeds]
        scores = [env.score(load_action_policy(d, env), "train")["reward"] for d in dirs]
        rows.append({"task": task, "agent": agent, "flag": cfg["grid"][agent]["flag"], "value": value,
                     "is_default": flags == base_flags(agent, cfg["base_overrides"]),
                     "train_reward_mean": float(np.mean(scores)),
                     "train_reward_std": float(np.std(scores, ddof=1)) if len(scores) > 1 else 0.0,
                     "chosen": False, "seeds": list(ctx.seeds), "per_seed": scores, "flags": flags,
                     "run_dirs": [d.name for d in dirs]})
    chosen: dict[str, dict[str, Any]] = {}
    for agent in cfg["agents"]:
        best = max((r for r in rows if r["agent"] == agent), key=lambda r: r["train_reward_mean"])
        best["chosen"] = True
        chosen[agent] = {"value": best["value"], "flags": best["flags"]}
    return {"rows": rows, "chosen": {task: chosen}}


# ============================================================================ table, figure, results page
COLUMNS = [("agent", "agent", 0), ("flag", "flag", 0), ("value", "value", 4), ("default", "is_default", 0),
           ("training-pool reward", "train_reward", 2), ("chosen", "chosen", 0)]


def plot(result: dict, path: Path) -> None:
    """Mean training-pool reward (± std over seeds) against each candidate's factor of the default value."""
    plt = figures.pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.0))
    grid = result["config"]["grid"]
    for agent in result["config"]["agents"]:
        rows = [r for r in result["rows"] if r["agent"] == agent]
        x = [r["value"] / grid[agent]["default"] for r in rows]
        ax.errorbar(x, [r["train_reward_mean"] for r in rows], yerr=[r["train_reward_std"] for r in rows],
                    marker="o", capsize=3, color=figures.COLOURS.get(agent), label=agent)
        for r in rows:
            if r["chosen"]:
                ax.scatter([r["value"] / grid[agent]["default"]], [r["train_reward_mean"]], s=120,
                           facecolor="none", edgecolor="black", zorder=3)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate / the default's")
    ax.set_ylabel("mean reward, training pool")
    ax.legend(fontsize=7)
    fig.suptitle(figures.title(result, f"Learning rates on {result['config']['task']} (circled: chosen)"))
    figures.save(fig, path)


def section(res: Res) -> str:
    return tune_section(res["tune"], "tune", "benchmark")


def tune_section(d: dict, study: str, board: str) -> str:
    """The results-page section of a tune result ``d`` (this study's or ``tune-cnf``'s), whose
    leaderboard is the section ``board``."""
    cfg = d["config"]
    lines = ["| agent | flag | candidates: mean training-pool reward ± std over seeds | chosen |",
             "| --- | --- | --- | --- |"]
    for agent in cfg["agents"]:
        rows = [r for r in d["rows"] if r["agent"] == agent]
        cells = ", ".join(f"{r['value']:g}{' (default)' if r['is_default'] else ''}: "
                          f"{r['train_reward_mean']:.2f} ± {r['train_reward_std']:.2f}" for r in rows)
        lines.append(f"| {agent} | `{rows[0]['flag']}` | {cells} | {d['chosen'][cfg['task']][agent]['value']:g} |")
    changed = [r["agent"] for r in d["rows"] if r["chosen"] and not r["is_default"]]
    edge = [r["agent"] for r in d["rows"] if r["chosen"]
            and r["value"] in (min(cfg["grid"][r["agent"]]["values"]), max(cfg["grid"][r["agent"]]["values"]))]
    return "\n\n".join([figure(study), f"""\
Each agent's learning rate on {cfg['task']}, {len(d['seeds'])} seeds, {cfg['agent_episodes']} training episodes \
each, every candidate scored by its deterministic policy's mean reward on the training pool only (the test pool, \
where the [leaderboard](#{board}) reports, is not looked at). The chosen flags are the task's entry in \
`agents/hyperparams/benchmark.json`.""", "\n".join(lines), bullets([
        f"Changed from the defaults: {', '.join(changed) or 'none'}; the others keep their defaults.",
        f"Chosen at an edge of the grid (a wider grid may choose better): {', '.join(edge) or 'none'}."])])


STUDY = Study(
    name="tune",
    summary="the leaderboard agents' learning rates, chosen on the training pool of ODE-Mixed-v0",
    config=CONFIG,
    quick=QUICK,
    row_keys=ROW_KEYS,
    run=run,
    columns=COLUMNS,
    plot=plot,
    page=Page("Agent learning rates, tuned on the training pool", order=148, render=section, needs=("tune",)),
    seeds=2,
    uses_digits_regimes=False,
)
