"""leaderboard: tolerance agents on the benchmark tasks, scored on held-out episodes.

Per task (``tasks``: the classical ODE tasks of :mod:`infocnf_env.ode_env` here, the CNF task of
:mod:`infocnf_env.frozen` in the ``leaderboard-cnf`` study, which runs this code with its own
settings), on pools of ``train_pool_size`` and ``test_pool_size`` episodes, with the
``infocnf_env.baselines`` chosen on the training pool and every figure measured on the test pool:

* the constant grid (log10 tolerances every ``grid_step`` within the action bounds): each
  tolerance's mean NFE, error and reward (the front);
* ``best_constant``: the grid tolerance with the best training reward;
* ``best_schedule``: one grid tolerance per segment (``schedule_grid_step``), coordinate ascent
  from the best constant on the training pool (``schedule_sweeps`` sweeps);
* ``oracle``: each test instance's best grid tolerance in hindsight;
* ``contextual``: a nearest-neighbour regressor from the observation to the oracle's
  tolerance, fit on the training pool;
* ``pi_controller``: the episodes solved by torchode's Dormand-Prince with a PI step-size
  controller (backend ``torchode-pi``, ``flows.ode``) at its own best constant grid tolerance
  on the training pool (the integral controller's grid tolerance need not suit it);
* each agent (``agents``, flags from ``agents/hyperparams/benchmark.json``), trained for
  ``agent_episodes`` episodes of the training pool per seed, its deterministic policy scored
  by ``agents.evaluate.score_benchmark_run``'s scoring.

``gap_fraction = (oracle - best schedule) / |best schedule|`` is the room an input-adaptive
policy has; ``gap_closed = (row - best schedule) / (oracle - best schedule)`` (the targets
measure adaptivity against the best input-independent schedule, so that a per-segment constant
does not count); ``nfe_saving_at_equal_error = 1 - NFE / NFE_c`` against the cheapest constant
grid tolerance whose mean test error is no larger than the row's. ``per_family``: each row's
mean reward, NFE and error per problem family, next to the best constant's.

Cost (full): references and the grid of 128 instances (a few minutes), the schedule search
(~4 minutes), 5 agents x 3 seeds x ``agent_episodes`` episodes (0.1-0.5 s each, more at tight
tolerances): about an hour with ``--jobs 2``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from runs.aggregate import summarise
from runs.docs import Res, bullets, figure, pct
from runs.plots import COLOURS, _f, _pyplot, _save, _title
from runs.run_cache import Arm, Context, run_arms
from runs.studies.common import ratio
from runs.tables import cell, table

ROW_KEYS = ("task", "split", "agent", "reward_mean", "reward_std", "gap_closed", "nfe_mean", "nfe_std",
            "error_mean", "error_std", "nfe_saving_at_equal_error", "seeds")
#: Nullable: no gap to close; no constant as accurate as the row (no saving defined).
NULLABLE_KEYS = ("gap_closed", "gap_closed_vs_constant", "nfe_saving_at_equal_error", "best_agent", "best_gap_closed",
                 "best_no_worse_on_every_family", "best_nfe_saving_at_equal_error")

HYPERPARAMS = Path(__file__).resolve().parents[2] / "agents" / "hyperparams" / "benchmark.json"
MODULES = {"reinforce": "reinforce", "ppo": "sb3", "a2c": "sb3", "sac": "sb3", "td3": "sb3"}

CONFIG: dict[str, Any] = {
    "tasks": ["ODE-Mixed-v0"],
    "task_kwargs": {"train_pool_size": 64, "test_pool_size": 64},
    "grid_step": 0.5,
    "schedule_grid_step": 1.0,
    "schedule_sweeps": 1,
    "agents": ["reinforce", "ppo", "a2c", "sac", "td3"],
    "agent_episodes": 500,
    "contextual_neighbours": 5,
    "targets": {"gap_fraction": 0.25, "gap_closed": 0.6, "nfe_saving_at_equal_error": 0.2},
}
QUICK: dict[str, Any] = {
    "task_kwargs": {"families": ["vdp", "lorenz"], "segments": 2, "train_pool_size": 2, "test_pool_size": 2,
                    "reference_tol": 1e-9},
    "grid_step": 3.5,
    "schedule_grid_step": 3.5,
    "agents": ["reinforce", "ppo"],
    "agent_episodes": 4,
    "contextual_neighbours": 1,
}

USES_DIGITS_REGIMES = False


def agent_flags(task: str, agent: str) -> list[str]:
    """The committed flags of ``agent`` on ``task`` (the task's own entry, else ``default``)."""
    table = json.loads(HYPERPARAMS.read_text())
    return list(table.get(task, table["default"])[agent])


def default_flags(agent: str) -> list[str]:
    """The committed ``default`` flags of ``agent`` (what the ``tune`` study varies)."""
    return list(json.loads(HYPERPARAMS.read_text())["default"][agent])


def _task_kwargs(ctx: Context) -> dict[str, Any]:
    kwargs = dict(ctx.config["task_kwargs"])
    for name in ("families", "densities"):
        if name in kwargs:
            kwargs[name] = tuple(kwargs[name])
    if ctx.quick:
        kwargs["cache"] = str(ctx.workdir / "task-cache")
    return kwargs


def make_task(ctx: Context, task: str, **overrides: Any) -> Any:
    import gymnasium as gym

    import infocnf_env  # noqa: F401  (registers the ids)

    return gym.make(task, **{**_task_kwargs(ctx), **overrides}).unwrapped


def agent_arm(ctx: Context, task: str, agent: str, seed: int, flags: list[str] | None = None) -> Arm:
    """The run of ``agent`` on ``task``: its committed flags, or ``flags`` (the ``tune`` study's
    candidates, which share these runs: a candidate with the committed flags is the same run)."""
    flags = agent_flags(task, agent) if flags is None else flags
    return Arm(label=f"leaderboard-{task}-{agent}", module=MODULES[agent], env=task, seed=seed,
               iterations=ctx.config["agent_episodes"], eval_every=0, agent_args=tuple(flags),
               env_kwargs=tuple(sorted(_task_kwargs(ctx).items())))


def _episodes(env: Any, policy: Any) -> list[dict]:
    """Each test episode's reward, NFE, error and family under ``policy``."""
    return [{**env.play("test", e, policy), "family": env.family_of("test", e)} for e in range(len(env.pool("test")))]


def _per_family(episodes: list[dict]) -> dict[str, dict[str, float]]:
    out = {}
    for family in sorted({e["family"] for e in episodes}):
        mine = [e for e in episodes if e["family"] == family]
        out[family] = {k: float(np.mean([e[k] for e in mine])) for k in ("reward", "nfe", "error")}
    return out


def _means(episodes: list[dict]) -> dict[str, float]:
    return {k: float(np.mean([e[k] for e in episodes])) for k in ("reward", "nfe", "error")}


def task_result(ctx: Context, task: str, arms: dict) -> dict:
    from agents.evaluate import load_action_policy
    from infocnf_env import baselines as B

    cfg = ctx.config
    env = make_task(ctx, task)
    table = B.cached_grid_table(env, B.log_tol_grid(env, cfg["grid_step"]))
    best = B.best_constant(table, "train")
    oracle = B.oracle(table, "test")
    schedule, _ = B.best_schedule(env, B.log_tol_grid(env, cfg["schedule_grid_step"]), table.log_tols[best],
                                  sweeps=cfg["schedule_sweeps"])
    contextual = B.fit_contextual(env, table, neighbours=cfg["contextual_neighbours"])
    pi_env = make_task(ctx, task, backend="torchode-pi")
    pi_table = B.cached_grid_table(pi_env, B.log_tol_grid(pi_env, cfg["grid_step"]))
    pi_best = B.best_constant(pi_table, "train")
    constant_episodes = _episodes(env, env.constant_action(10.0 ** table.log_tols[best]))
    baselines = {
        "best_constant": constant_episodes,
        "best_schedule": _episodes(env, B.schedule_policy(schedule)),
        "contextual": _episodes(env, contextual),
        "pi_controller": _episodes(pi_env, pi_env.constant_action(10.0 ** pi_table.log_tols[pi_best])),
    }
    extras: dict[str, dict[str, Any]] = {"best_constant": {"log10_tol": table.log_tols[best]},
              "best_schedule": {"schedule": schedule},
              "pi_controller": {"log10_tol": pi_table.log_tols[pi_best]}}
    floor = _means(baselines["best_schedule"])["reward"]
    ceiling = oracle["reward"]

    def row(agent: str, per_seed: list[list[dict]], seeds: list[int], **extra: Any) -> dict:
        scores = [_means(eps) for eps in per_seed]
        stats = summarise(scores, ("reward", "nfe", "error"))
        return {"task": task, "split": "test", "agent": agent, **stats,
                "gap_closed": B.gap_closed(stats["reward_mean"], floor, ceiling),
                "gap_closed_vs_constant": B.gap_closed(stats["reward_mean"], _means(constant_episodes)["reward"],
                                                       ceiling),
                "nfe_saving_at_equal_error": B.saving_at_equal_error(table, stats["nfe_mean"], stats["error_mean"]),
                "per_family": _per_family([e for eps in per_seed for e in eps]), "seeds": seeds,
                "per_seed": scores, **extra}

    rows = [row(name, [eps], [], **extras.get(name, {})) for name, eps in baselines.items()]
    rows.append({"task": task, "split": "test", "agent": "oracle", "reward_mean": oracle["reward"], "reward_std": 0.0,
                 "gap_closed": 1.0 if ceiling > floor else None, "gap_closed_vs_constant": None,
                 "nfe_mean": oracle["nfe"], "nfe_std": 0.0, "error_mean": oracle["error"], "error_std": 0.0,
                 "nfe_saving_at_equal_error": B.saving_at_equal_error(table, oracle["nfe"], oracle["error"]),
                 "seeds": []})
    for agent in cfg["agents"]:
        dirs = [arms[(task, agent, s)].run_dir(ctx.runs_dir) for s in ctx.seeds]
        per_seed = [_episodes(env, load_action_policy(run_dir, env)) for run_dir in dirs]
        rows.append(row(agent, per_seed, list(ctx.seeds), run_dirs=[d.name for d in dirs],
                        flags=list(arms[(task, agent, ctx.seeds[0])].agent_args)))
    constant = _means(constant_episodes)
    front = [{"log10_tol": t, **B.column(table, a, "test")} for a, t in enumerate(table.log_tols)]
    return {
        "task": task, "split": "test", "pool_sizes": {s: len(env.pool(s)) for s in ("train", "test")},
        "families": list(dict.fromkeys(env.family_of("test", e) for e in range(len(env.pool("test"))))),
        "segments": env.num_blocks, "error_unit": env.error_unit,
        **({"trained_steps": env.trained_steps} if hasattr(env, "trained_steps") else {}),
        "reward": {"alpha": env.config.reward.alpha, "error_form": env.config.reward.error_form,
                   "error_weight": env.config.reward.error_weight, "error_target": env.config.reward.error_target},
        "best_constant_reward": constant["reward"], "best_constant_log10_tol": table.log_tols[best],
        "best_schedule_reward": floor, "best_schedule": schedule, "oracle_reward": ceiling,
        "gap_fraction": ratio(ceiling - floor, abs(floor)),
        "gap_fraction_vs_constant": ratio(ceiling - constant["reward"], abs(constant["reward"])),
        "best_constant_per_family": _per_family(constant_episodes), "front": front, "rows": rows,
    }


def run(ctx: Context) -> dict:
    cfg = ctx.config
    for task in cfg["tasks"]:
        make_task(ctx, task)  # references cached before the runs start
    arms = {(task, agent, s): agent_arm(ctx, task, agent, s)
            for task in cfg["tasks"] for agent in cfg["agents"] for s in ctx.seeds}
    run_arms(ctx, list(arms.values()))
    tasks = [task_result(ctx, task, arms) for task in cfg["tasks"]]
    t = cfg["targets"]
    verdicts = []
    for r in tasks:
        agents = [row for row in r["rows"] if row["agent"] in cfg["agents"]]
        best = max(agents, key=lambda a: a["reward_mean"]) if agents else None
        no_worse = None
        if best is not None:
            no_worse = all(best["per_family"][f]["reward"] >= r["best_constant_per_family"][f]["reward"]
                           for f in r["best_constant_per_family"])
        verdicts.append({
            "task": r["task"], "gap_fraction": r["gap_fraction"],
            "gap_met": bool(r["gap_fraction"] >= t["gap_fraction"]),
            "best_agent": best["agent"] if best else None,
            "best_gap_closed": best["gap_closed"] if best else None,
            "gap_closed_met": bool(best and best["gap_closed"] is not None and best["gap_closed"] >= t["gap_closed"]),
            "best_no_worse_on_every_family": no_worse,
            "best_nfe_saving_at_equal_error": best["nfe_saving_at_equal_error"] if best else None,
            "agents_beating_best_constant": [a["agent"] for a in agents
                                             if a["reward_mean"] > r["best_constant_reward"]],
        })
    rows = [row for r in tasks for row in r["rows"]]
    return {"rows": rows, "tasks": [{k: v for k, v in r.items() if k != "rows"} for r in tasks],
            "targets": {"thresholds": t, "tasks": verdicts}}


# ============================================================================ table, figure, results page
#: Columns of the study's table (:func:`runs.tables.table`): (header, row key or ``key_mean`` stem,
#: digits); a stem that has ``_mean`` / ``_std`` in the row prints as ``mean ± std``.
COLUMNS = [("task", "task", 0), ("agent", "agent", 0), ("reward", "reward", 2),
           ("gap closed", "gap_closed", 2), ("NFE / episode", "nfe", 1), ("error", "error", 6),
           ("NFE saving at equal error", "nfe_saving_at_equal_error", 2)]


def plot(result: dict, path: Path) -> None:
    """Per benchmark task, on the test pool: the constant-tolerance front (mean NFE vs mean error),
    the best constant, best schedule, contextual regressor, PI controller, oracle and each agent
    (mean over seeds)."""
    plt = _pyplot()
    tasks = result["tasks"]
    fig, axes = plt.subplots(1, max(1, len(tasks)), figsize=(max(7.0, 5.0 * len(tasks)), 4.5), squeeze=False)
    markers = {"best_constant": ("s", "black"), "best_schedule": ("D", "grey"), "contextual": ("P", "tab:cyan"),
               "pi_controller": ("X", "tab:brown"), "oracle": ("*", "gold")}
    for ax, task in zip(axes[0], tasks, strict=False):
        front = task["front"]
        ax.plot([f["nfe"] for f in front], [max(_f(f["error"]), 1e-12) for f in front], color="grey", marker=".",
                lw=0.8, label="constant tolerances")
        for row in (r for r in result["rows"] if r["task"] == task["task"]):
            marker, colour = markers.get(row["agent"], ("o", COLOURS.get(row["agent"])))
            ax.scatter([row["nfe_mean"]], [max(_f(row["error_mean"]), 1e-12)], marker=marker, color=colour,
                       s=70 if marker == "*" else 30, edgecolor="black" if marker == "*" else None, label=row["agent"],
                       zorder=3)
        if task["reward"]["error_form"] == "target":
            ax.axhline(task["reward"]["error_target"], color="red", ls=":", lw=0.8, label="error target")
        ax.set_yscale("log")
        ax.set_xlabel("NFE per episode (test pool)")
        ax.set_ylabel(task.get("error_unit", "mean error"))
        ax.set_title(task["task"], fontsize=9)
    axes[0][0].legend(fontsize=6)
    fig.suptitle(_title(result, "Tolerance agents and baselines on held-out episodes"))
    _save(fig, path)


#: The study's section of docs/results.md (:mod:`runs.docs`): its title, the result files it
#: needs (the section is left out without them) and its place on the page (ascending).
TITLE = "Tolerance learning with room: classical ODE tasks, held-out scoring"
NEEDS = ("leaderboard",)
PAGE_ORDER = 150


def section(res: Res) -> str:
    d = res["leaderboard"]
    t = d["tasks"][0]
    r = t["reward"]
    return _leaderboard(d, "leaderboard", res.get("tune"), f"""\
Classical ODE tasks (`ODE-*`, [environment](environment.md#the-classical-ode-tasks)): each episode one instance \
solved in {t['segments']} segments, reward -{r['alpha']:g}/{t['segments']} x the NFE of each segment - \
{r['error_weight']:g} per decade of relative error above {r['error_target']:g}.""")


def _tuned(d: dict, tune: dict | None) -> bool:
    """Whether every agent row of ``d`` ran with the flags the ``tune`` study chose for its task."""
    if tune is None:
        return False
    agents = [r for r in d["rows"] if r["agent"] in d["config"]["agents"]]
    chosen = [tune["chosen"].get(r["task"], {}).get(r["agent"], {}).get("flags") for r in agents]
    return bool(agents) and all(c is not None and r.get("flags") == c for r, c in zip(agents, chosen, strict=True))


def _leaderboard(d: dict, study: str, tune: dict | None, task_text: str) -> str:
    th = d["targets"]["thresholds"]
    cfg = d["config"]
    tuned = (f"learning rates tuned on the training pool, [{tune['study']}](#{tune['study']})"
             if tune is not None and _tuned(d, tune) else "not tuned")
    lines = ["| task | pools (train / test) | best constant (log10 tol): reward | best schedule | oracle | "
             "room over the schedule | room over the constant |", "|" + " --- |" * 7]
    for t in d["tasks"]:
        lines.append(f"| {t['task']} | {t['pool_sizes']['train']} / {t['pool_sizes']['test']} | "
                     f"{t['best_constant_log10_tol']:g}: {t['best_constant_reward']:.2f} | "
                     f"{t['best_schedule_reward']:.2f} ({', '.join(f'{s:g}' for s in t['best_schedule'])}) | "
                     f"{t['oracle_reward']:.2f} | {100 * t['gap_fraction']:.1f}% | "
                     f"{100 * t['gap_fraction_vs_constant']:.1f}% |")
    verdicts = []
    for v in d["targets"]["tasks"]:
        saving = v["best_nfe_saving_at_equal_error"]
        met_saving = saving is not None and saving >= th["nfe_saving_at_equal_error"]
        families = ("no worse than the best constant on every family" if v["best_no_worse_on_every_family"]
                    else "worse than the best constant on at least one family (table below)")
        verdicts.append(
            f"{v['task']}: room {100 * v['gap_fraction']:.1f}% of the best schedule's reward (target "
            f"{100 * th['gap_fraction']:.0f}%: {'met' if v['gap_met'] else 'not met'}); the best agent, "
            f"{v['best_agent']}, closes {cell(v, 'best_gap_closed', 2)} of it (target {th['gap_closed']}: "
            f"{'met' if v['gap_closed_met'] else 'not met'}), is {families}, and saves "
            f"{'n/a' if saving is None else pct(saving)} NFE against the cheapest constant at least as accurate "
            f"on average (target {100 * th['nfe_saving_at_equal_error']:.0f}%: {'met' if met_saving else 'not met'}). "
            f"Agents beating the best constant on the test pool: "
            f"{', '.join(v['agents_beating_best_constant']) or 'none'}.")
    per_family = []
    for t in d["tasks"]:
        names = sorted(t["best_constant_per_family"])
        per_family += [f"| {t['task']} | " + " | ".join(names) + " |", "|" + " --- |" * (len(names) + 1)]
        shown = [("best_constant", t["best_constant_per_family"])] + [
            (row["agent"], row["per_family"]) for row in d["rows"]
            if row["task"] == t["task"] and "per_family" in row and row["agent"] != "best_constant"]
        for name, fam in shown:
            per_family.append(f"| {name} | " + " | ".join(
                f"{fam[f]['reward']:.1f} ({fam[f]['nfe']:.0f} NFE, {fam[f]['error']:.1e})" for f in names) + " |")
    return "\n\n".join([figure(study), f"""{task_text} Baselines chosen on the training pool; every figure on the \
held-out test pool; `pi_controller` is torchode's Dormand-Prince with a PI step-size controller (PI.3.4) at its own \
best constant tolerance, where present. Agents: {', '.join(cfg['agents'])}, {len(d['seeds'])} seeds, \
{cfg['agent_episodes']} training episodes each, flags from `agents/hyperparams/benchmark.json` ({tuned}). gap \
closed = (row - best schedule) / (oracle - best schedule).""", "\n".join(lines), table(d, study), bullets(verdicts),
                         "Per family (density), on the test pool: mean reward (NFE per episode, mean error); "
                         "agents pooled over seeds.", "\n".join(per_family)])
