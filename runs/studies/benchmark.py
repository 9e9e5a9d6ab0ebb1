"""benchmark: the tolerance-learning leaderboard on held-out episodes, and co-training with every lever.

Two parts.

**Leaderboard** (``tasks``: each benchmark task with its env kwargs and targets; the classical
ODE task ``ODE-Mixed-v0`` of :mod:`infocnf_env.ode_env` and the CNF task with room
``CNF-Frozen-Mixed-v0`` of :mod:`infocnf_env.frozen`). Per task, on pools of
``train_pool_size`` and ``test_pool_size`` episodes, with the ``infocnf_env.baselines`` chosen on
the training pool and every figure measured on the test pool:

* the constant grid (log10 tolerances every ``grid_step`` within the action bounds): each
  tolerance's mean NFE, error and reward (the front);
* ``best_constant``: the grid tolerance with the best training reward;
* ``best_constant_first_step``: the same tolerance with the best constant first step of
  ``first_step_grid`` (log10 of a fraction of each step's span; the ``tol_first_step`` mode);
* ``best_schedule``: one grid tolerance per segment or block (``schedule_grid_step``),
  coordinate ascent from the best constant on the training pool (``schedule_sweeps`` sweeps);
* ``oracle``: each test instance's best grid tolerance in hindsight;
* ``contextual``: a nearest-neighbour regressor from the observation to the oracle's
  tolerance, fit on the training pool;
* ``pi_controller``: the episodes solved by torchode's Dormand-Prince with a PI step-size
  controller (backend ``torchode-pi``, ``flows.ode``) at its own best constant grid tolerance
  on the training pool (the integral controller's grid tolerance need not suit it);
* each agent (``agents``, flags from ``agents/hyperparams/benchmark.json``, chosen by the
  ``tune`` and ``tune-cnf`` studies), trained for ``agent_episodes`` episodes of the training
  pool per seed, its deterministic policy scored as ``agents.evaluate`` scores a run;
* ``variants``: runs beside the leaderboard's, reported apart (same flags): an agent trained
  for more ``episodes`` (row ``AGENT-EPISODES``, e.g. ``sac-2000``: for the agents whose
  training reward still rises at the end, ``rising_at_end``: the last fifth of training above
  the fourth on every seed) or in the ``tol_first_step`` action mode (row ``AGENT-first-step``,
  scored in that mode).

``gap_fraction = (oracle - best schedule) / |best schedule|`` is the room an input-adaptive
policy has; ``gap_closed = (row - best schedule) / (oracle - best schedule)`` (the targets
measure adaptivity against the best input-independent schedule, so that a per-segment constant
does not count); ``nfe_saving_at_equal_error = 1 - NFE / NFE_c`` against the cheapest constant
grid tolerance whose mean test error is no larger than the row's. ``per_family``: each row's
mean reward, NFE and error per problem family (density), next to the best constant's.

**Co-training** (``cotrain``): InfoCNF on digits in the ``small`` regime (batch 128, 300
iterations), fixed 1e-5 against REINFORCE with wide bounds (``cotrain_tol_bounds``), the
first-step lever (``tol_first_step``) and the accuracy term (a reference solve at 1e-5 of
every batch, two-sided gap, weight ``cotrain_gap_weight``). ``nfe_ratio``: training NFE per
iteration (forward + backward, the reference solves not included) over fixed 1e-5's;
``reference_nfe_ratio``: the reference solves' NFE over the same; ``bpd_ratio``: test
bits/dim at 1e-5 over fixed 1e-5's. Means over seeds of per-seed ratios.

Cost (full): each task's references, flows (trained once and cached) and baselines' grids, the
schedule searches, every agent of ``agents`` on every task and seed for ``agent_episodes``
episodes, the ``variants`` and the co-training runs; the committed result's ``wall_s``
(``runs/results/benchmark.json``) is the time of the run that wrote it (runs found in the
workdir's cache are not retrained).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from runs.aggregate import read_jsonl, run_metrics, summarise
from runs.docs import Res, apct, bullets, figure, nums, pct
from runs.plots import COLOURS, _f, _pyplot, _save, _title
from runs.run_cache import Arm, Context, digits_arm, run_arms
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
    "tasks": {
        "ODE-Mixed-v0": {"task_kwargs": {"train_pool_size": 64, "test_pool_size": 64},
                         "targets": {"gap_fraction": 0.25, "gap_closed": 0.6, "nfe_saving_at_equal_error": 0.2}},
        "CNF-Frozen-Mixed-v0": {"task_kwargs": {},
                                "targets": {"gap_fraction": 0.15, "gap_closed": 0.5, "nfe_saving_at_equal_error": 0.2}},
    },
    "grid_step": 0.5,
    "first_step_grid": [-3, -2, -1, -0.5, 0],
    "schedule_grid_step": 1.0,
    "schedule_sweeps": 1,
    "agents": ["reinforce", "ppo", "a2c", "sac", "td3"],
    "agent_episodes": 500,
    "variants": {"ODE-Mixed-v0": [{"agent": "sac", "episodes": 2000}, {"agent": "td3", "episodes": 2000}],
                 "CNF-Frozen-Mixed-v0": [{"agent": "ppo", "action_mode": "tol_first_step"},
                                         {"agent": "a2c", "action_mode": "tol_first_step"}]},
    "contextual_neighbours": 5,
    "cotrain_regime": "small",
    "cotrain_tol_bounds": [-8.0, 0.0],
    "cotrain_gap_weight": 1000.0,
    "cotrain_gap_every": 1,
    "cotrain_targets": {"nfe_ratio": 0.45, "bpd_tol": 0.01},
}
QUICK: dict[str, Any] = {
    "tasks": {
        "ODE-Mixed-v0": {"task_kwargs": {"families": ["vdp", "lorenz"], "segments": 2, "train_pool_size": 2,
                                         "test_pool_size": 2, "reference_tol": 1e-9}},
        "CNF-Frozen-Mixed-v0": {"task_kwargs": {"densities": ["checkerboard", "8gaussians"], "hidden": 4,
                                                "train_iterations": 3, "train_pool_size": 2, "test_pool_size": 2}},
    },
    "grid_step": 3.5,
    "first_step_grid": [-2, 0],
    "schedule_grid_step": 3.5,
    "agents": ["reinforce", "ppo"],
    "agent_episodes": 4,
    "variants": {"ODE-Mixed-v0": [{"agent": "ppo", "episodes": 6}],
                 "CNF-Frozen-Mixed-v0": [{"agent": "ppo", "action_mode": "tol_first_step"}]},
    "contextual_neighbours": 1,
}

USES_DIGITS_REGIMES = True


# ============================================================================ leaderboard
def agent_flags(task: str, agent: str) -> list[str]:
    """The committed flags of ``agent`` on ``task`` (the task's own entry, else ``default``)."""
    flags = json.loads(HYPERPARAMS.read_text())
    return list(flags.get(task, flags["default"])[agent])


def default_flags(agent: str) -> list[str]:
    """The committed ``default`` flags of ``agent`` (what the ``tune`` study varies)."""
    return list(json.loads(HYPERPARAMS.read_text())["default"][agent])


def task_kwargs(ctx: Context, kwargs: dict[str, Any]) -> dict[str, Any]:
    """A task's env kwargs as ``gym.make`` takes them (lists as tuples); quick runs keep their
    tiny references and flows in the workdir."""
    out = dict(kwargs)
    for name in ("families", "densities"):
        if name in out:
            out[name] = tuple(out[name])
    if ctx.quick:
        out["cache"] = str(ctx.workdir / "task-cache")
    return out


def make_task(ctx: Context, task: str, kwargs: dict[str, Any], **overrides: Any) -> Any:
    """The unwrapped benchmark env of ``task`` with ``kwargs`` (:func:`task_kwargs`) and ``overrides``."""
    import gymnasium as gym

    import infocnf_env  # noqa: F401  (registers the ids)

    return gym.make(task, **{**task_kwargs(ctx, kwargs), **overrides}).unwrapped


def agent_arm(ctx: Context, task: str, kwargs: dict[str, Any], agent: str, seed: int,
              flags: list[str] | None = None, episodes: int | None = None, action_mode: str | None = None) -> Arm:
    """The run of ``agent`` on ``task`` for ``episodes`` (default ``agent_episodes``), in
    ``action_mode`` (default the task's): its committed flags, or ``flags`` (the ``tune``
    studies' candidates, which share these runs: a candidate with the committed flags is the
    same run)."""
    flags = agent_flags(task, agent) if flags is None else flags
    if action_mode is not None:
        kwargs = {**kwargs, "action_mode": action_mode}
    return Arm(label=f"leaderboard-{task}-{agent}", module=MODULES[agent], env=task, seed=seed,
               iterations=ctx.config["agent_episodes"] if episodes is None else episodes, eval_every=0,
               agent_args=tuple(flags), env_kwargs=tuple(sorted(task_kwargs(ctx, kwargs).items())))


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


def training_fifths(run_dir: Path) -> list[float]:
    """A run's mean training reward (its exploring policy, on the training pool) in each fifth of
    its episodes (as many parts as episodes under 5): whether it still rises at the end says
    whether ``agent_episodes`` was enough."""
    rewards = [r["reward"] for r in read_jsonl(run_dir / "metrics.jsonl") if "reward" in r]
    return [float(np.mean(part)) for part in np.array_split(np.array(rewards), max(1, min(5, len(rewards))))]


def task_result(ctx: Context, task: str, arms: dict) -> dict:
    """The baselines and agents of one task on its test pool: the task's summary with its ``rows``."""
    from agents.evaluate import load_action_policy
    from infocnf_env import baselines as B

    cfg = ctx.config
    kwargs = cfg["tasks"][task]["task_kwargs"]
    env = make_task(ctx, task, kwargs)
    table = B.cached_grid_table(env, B.log_tol_grid(env, cfg["grid_step"]))
    best = B.best_constant(table, "train")
    oracle = B.oracle(table, "test")
    schedule, _ = B.best_schedule(env, B.log_tol_grid(env, cfg["schedule_grid_step"]), table.log_tols[best],
                                  sweeps=cfg["schedule_sweeps"])
    contextual = B.fit_contextual(env, table, neighbours=cfg["contextual_neighbours"])
    first_env = make_task(ctx, task, kwargs, action_mode="tol_first_step")
    first_step, _ = B.best_first_step(first_env, table.log_tols[best], cfg["first_step_grid"])
    pi_env = make_task(ctx, task, kwargs, backend="torchode-pi")
    pi_table = B.cached_grid_table(pi_env, B.log_tol_grid(pi_env, cfg["grid_step"]))
    pi_best = B.best_constant(pi_table, "train")
    constant_episodes = _episodes(env, env.constant_action(10.0 ** table.log_tols[best]))
    baselines = {
        "best_constant": constant_episodes,
        "best_constant_first_step": _episodes(
            first_env, first_env.constant_action(10.0 ** table.log_tols[best], 10.0 ** first_step)),
        "best_schedule": _episodes(env, B.schedule_policy(schedule)),
        "contextual": _episodes(env, contextual),
        "pi_controller": _episodes(pi_env, pi_env.constant_action(10.0 ** pi_table.log_tols[pi_best])),
    }
    extras: dict[str, dict[str, Any]] = {
        "best_constant": {"log10_tol": table.log_tols[best]},
        "best_constant_first_step": {"log10_tol": table.log_tols[best], "log10_first_step": first_step},
        "best_schedule": {"schedule": schedule},
        "pi_controller": {"log10_tol": pi_table.log_tols[pi_best]}}
    floor = _means(baselines["best_schedule"])["reward"]
    ceiling = oracle["reward"]
    constant = _means(constant_episodes)

    def row(agent: str, per_seed: list[list[dict]], seeds: list[int], **extra: Any) -> dict:
        scores = [_means(eps) for eps in per_seed]
        stats = summarise(scores, ("reward", "nfe", "error"))
        return {"task": task, "split": "test", "agent": agent, **stats,
                "gap_closed": B.gap_closed(stats["reward_mean"], floor, ceiling),
                "gap_closed_vs_constant": B.gap_closed(stats["reward_mean"], constant["reward"], ceiling),
                "nfe_saving_at_equal_error": B.saving_at_equal_error(table, stats["nfe_mean"], stats["error_mean"]),
                "per_family": _per_family([e for eps in per_seed for e in eps]), "seeds": seeds,
                "per_seed": scores, **extra}

    rows = [row(name, [eps], [], **extras.get(name, {})) for name, eps in baselines.items()]
    rows.append({"task": task, "split": "test", "agent": "oracle", "reward_mean": oracle["reward"], "reward_std": 0.0,
                 "gap_closed": 1.0 if ceiling > floor else None, "gap_closed_vs_constant": None,
                 "nfe_mean": oracle["nfe"], "nfe_std": 0.0, "error_mean": oracle["error"], "error_std": 0.0,
                 "nfe_saving_at_equal_error": B.saving_at_equal_error(table, oracle["nfe"], oracle["error"]),
                 "seeds": []})
    for name in dict.fromkeys(n for t, n, _ in arms if t == task):
        runs = [arms[(task, name, s)] for s in ctx.seeds]
        dirs = [arm.run_dir(ctx.runs_dir) for arm in runs]
        mode = dict(runs[0].env_kwargs).get("action_mode", env.spaces.action_mode)
        played = first_env if mode == "tol_first_step" else env
        per_seed = [_episodes(played, load_action_policy(run_dir, played)) for run_dir in dirs]
        fifths = [training_fifths(run_dir) for run_dir in dirs]
        rows.append(row(name, per_seed, list(ctx.seeds), run_dirs=[d.name for d in dirs],
                        flags=list(runs[0].agent_args), episodes=runs[0].iterations, action_mode=mode,
                        train_reward_fifths=fifths, rising_at_end=all(len(f) > 1 and f[-1] > f[-2] for f in fifths)))
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


def task_verdict(result: dict, agents: list[str], thresholds: dict[str, float]) -> dict:
    """The task's targets against its best agent (by mean test reward) among ``agents`` (the
    leaderboard's; the ``variants`` rows are reported apart)."""
    rows = [row for row in result["rows"] if row["agent"] in agents]
    best = max(rows, key=lambda a: a["reward_mean"]) if rows else None
    no_worse = None
    if best is not None:
        no_worse = all(best["per_family"][f]["reward"] >= result["best_constant_per_family"][f]["reward"]
                       for f in result["best_constant_per_family"])
    return {
        "task": result["task"], "thresholds": thresholds, "gap_fraction": result["gap_fraction"],
        "gap_met": bool(result["gap_fraction"] >= thresholds["gap_fraction"]),
        "best_agent": best["agent"] if best else None,
        "best_gap_closed": best["gap_closed"] if best else None,
        "gap_closed_met": bool(best and best["gap_closed"] is not None
                               and best["gap_closed"] >= thresholds["gap_closed"]),
        "best_no_worse_on_every_family": no_worse,
        "best_nfe_saving_at_equal_error": best["nfe_saving_at_equal_error"] if best else None,
        "agents_beating_best_constant": [a["agent"] for a in rows if a["reward_mean"] > result["best_constant_reward"]],
        "agents_rising_at_end": [a["agent"] for a in rows if a["rising_at_end"]],
        "variants": [{"agent": r["agent"], "episodes": r["episodes"], "action_mode": r["action_mode"],
                      "reward_mean": r["reward_mean"], "gap_closed": r["gap_closed"],
                      "beats_best_constant": bool(r["reward_mean"] > result["best_constant_reward"]),
                      "rising_at_end": r["rising_at_end"]}
                     for r in result["rows"] if "episodes" in r and r["agent"] not in agents],
    }


# ============================================================================ co-training
def cotrain_arm(ctx: Context, name: str, seed: int) -> Arm:
    """``fixed``: every block at 1e-5; ``reinforce``: wide bounds, first-step lever, accuracy term."""
    cfg = ctx.config
    if name == "fixed":
        return digits_arm(ctx, "infocnf", "fixed", cfg["cotrain_regime"], seed, label="bench-cotrain-fixed",
                          eval_every=0)
    extra = {"tol_bounds": tuple(cfg["cotrain_tol_bounds"]), "action_mode": "tol_first_step",
             "gap_check_every": cfg["cotrain_gap_every"], "gap_weight": cfg["cotrain_gap_weight"],
             "gap_sided": "two"}
    return digits_arm(ctx, "infocnf", "reinforce", cfg["cotrain_regime"], seed, label="bench-cotrain-reinforce",
                      eval_every=0, extra_env=extra)


def cotrain_rows(ctx: Context) -> list[dict]:
    """One row per co-trained agent against fixed 1e-5 of the same seeds."""
    arms = {(name, s): cotrain_arm(ctx, name, s) for s in ctx.seeds for name in ("fixed", "reinforce")}
    summaries = run_arms(ctx, list(arms.values()))
    figures = {key: run_metrics(summaries[arm]) | {"nfe_reference": summaries[arm].get("train_nfe_reference_mean")}
               for key, arm in arms.items()}
    per_seed = []
    for s in ctx.seeds:
        mine, fixed = figures[("reinforce", s)], figures[("fixed", s)]
        tail = [r for r in read_jsonl(arms[("reinforce", s)].run_dir(ctx.runs_dir) / "metrics.jsonl")
                if "nfe_forward" in r]
        tail = tail[-max(1, len(tail) // 10):]  # the last 10% of training
        per_seed.append({"seed": s, "nfe_ratio": ratio(mine["nfe"], fixed["nfe"]),
                         "reference_nfe_ratio": ratio(mine["nfe_reference"] or 0.0, fixed["nfe"]),
                         "bpd_ratio": ratio(mine["bits_per_dim"], fixed["bits_per_dim"]),
                         "nfe": mine["nfe"], "fixed_nfe": fixed["nfe"], "bits_per_dim": mine["bits_per_dim"],
                         "fixed_bits_per_dim": fixed["bits_per_dim"],
                         "abs_loss_gap_last": float(np.mean([abs(r["loss_gap"]) for r in tail if "loss_gap" in r]
                                                            or [float("nan")])),
                         "log10_tol_last": float(np.mean([np.log10(r["tols"]).mean() for r in tail])),
                         "log10_first_step_last": float(np.mean([np.log10(r["first_steps"]).mean() for r in tail]))})
    mean = {k: float(np.mean([p[k] for p in per_seed])) for k in ("nfe_ratio", "reference_nfe_ratio", "bpd_ratio")}
    return [{"agent": "reinforce", **mean, "seeds": list(ctx.seeds), "per_seed": per_seed,
             "run_dirs": [arms[("reinforce", s)].run_dir(ctx.runs_dir).name for s in ctx.seeds]}]


def variant_name(variant: dict[str, Any]) -> str:
    """A variant run's row name: ``AGENT``, ``-EPISODES`` if set, ``-first-step`` in that mode."""
    return (variant["agent"] + (f"-{variant['episodes']}" if "episodes" in variant else "")
            + ("-first-step" if variant.get("action_mode") == "tol_first_step" else ""))


def run(ctx: Context) -> dict:
    cfg = ctx.config
    tasks = list(cfg["tasks"])
    for task in tasks:
        make_task(ctx, task, cfg["tasks"][task]["task_kwargs"])  # flows and references cached before the runs
    arms = {(task, agent, s): agent_arm(ctx, task, cfg["tasks"][task]["task_kwargs"], agent, s)
            for task in tasks for agent in cfg["agents"] for s in ctx.seeds}
    for task, variants in cfg["variants"].items():
        arms |= {(task, variant_name(v), s): agent_arm(ctx, task, cfg["tasks"][task]["task_kwargs"], v["agent"], s,
                                                       episodes=v.get("episodes"), action_mode=v.get("action_mode"))
                 for v in variants for s in ctx.seeds}
    run_arms(ctx, list(arms.values()))
    results = [task_result(ctx, task, arms) for task in tasks]
    cotrain = cotrain_rows(ctx)
    c, t = cotrain[0], cfg["cotrain_targets"]
    targets = {
        "tasks": [task_verdict(r, cfg["agents"], cfg["tasks"][r["task"]]["targets"]) for r in results],
        "cotrain": {"thresholds": t, "nfe_ratio": c["nfe_ratio"], "bpd_ratio": c["bpd_ratio"],
                    "met": bool(c["nfe_ratio"] <= t["nfe_ratio"] and abs(c["bpd_ratio"] - 1) <= t["bpd_tol"])},
    }
    return {"rows": [row for r in results for row in r["rows"]],
            "tasks": [{k: v for k, v in r.items() if k != "rows"} for r in results],
            "cotrain": cotrain, "targets": targets}


# ============================================================================ table, figure, results page
#: Columns of the study's table (:func:`runs.tables.table`): (header, row key or ``key_mean`` stem,
#: digits); a stem that has ``_mean`` / ``_std`` in the row prints as ``mean ± std``.
COLUMNS = [("task", "task", 0), ("agent", "agent", 0), ("reward", "reward", 2),
           ("gap closed", "gap_closed", 2), ("NFE / episode", "nfe", 1), ("error", "error", 6),
           ("NFE saving at equal error", "nfe_saving_at_equal_error", 2)]

#: Baselines' markers in the figure (agents are dots in their colours).
MARKERS = {"best_constant": ("s", "black"), "best_constant_first_step": ("v", "black"),
           "best_schedule": ("D", "grey"), "contextual": ("P", "tab:cyan"), "pi_controller": ("X", "tab:brown"),
           "oracle": ("*", "gold")}


def plot(result: dict, path: Path) -> None:
    """Per benchmark task, on the test pool: the constant-tolerance front (mean NFE vs mean error),
    every baseline and each agent (mean over seeds; triangles: the variant runs)."""
    plt = _pyplot()
    tasks = result["tasks"]
    fig, axes = plt.subplots(1, max(1, len(tasks)), figsize=(max(7.0, 5.0 * len(tasks)), 4.5), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=False):
        front = task["front"]
        ax.plot([f["nfe"] for f in front], [max(_f(f["error"]), 1e-12) for f in front], color="grey", marker=".",
                lw=0.8, label="constant tolerances")
        for row in (r for r in result["rows"] if r["task"] == task["task"]):
            variant = "episodes" in row and row["agent"] not in result["config"]["agents"]
            marker, colour = MARKERS.get(row["agent"], ("^" if variant else "o",
                                                        COLOURS.get(row["agent"].split("-")[0])))
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
TITLE = "The tolerance-learning benchmark: held-out leaderboard and co-training"
NEEDS = ("benchmark",)
PAGE_ORDER = 150

#: The tune studies, each choosing the flags of one task.
TUNE_STUDIES = ("tune", "tune-cnf")


def tuned_by(d: dict, res: Res, task: str) -> str | None:
    """The tune study whose chosen flags every agent row of ``task`` ran with, else ``None``."""
    agents = [r for r in d["rows"] if r["task"] == task and r["agent"] in d["config"]["agents"]]
    for study in TUNE_STUDIES:
        chosen = res.get(study, {}).get("chosen", {}).get(task)
        if chosen and agents and all(r.get("flags") == chosen.get(r["agent"], {}).get("flags") for r in agents):
            return study
    return None


def _task_text(t: dict) -> str:
    """What one task is: its episodes, reward and error."""
    r = t["reward"]
    if t["task"].startswith("ODE-"):
        return (f"**{t['task']}** (classical ODE problems, [environment](environment.md#the-classical-ode-tasks)): "
                f"each episode one instance of {', '.join(t['families'])} solved in {t['segments']} segments; reward "
                f"-{r['alpha']:g}/{t['segments']} x the NFE of each segment - {r['error_weight']:g} per decade of "
                f"relative error above {r['error_target']:g}.")
    cost = (f"{r['error_weight']:g} per decade of error above {r['error_target']:g} nats" if r["error_form"] == "target"
            else f"{r['error_weight']:g} x error (nats)")
    errors = [f["error"] for f in t["best_constant_per_family"].values()]
    spread = math.log10(max(errors) / min(errors)) if min(errors) > 0 else math.inf
    steps = ", ".join(f"{k} {v}" for k, v in t.get("trained_steps", {}).items())
    return (f"**{t['task']}** (frozen CNFs, [environment](environment.md#the-frozen-flow-benchmark)): each episode a "
            f"small batch from one of {len(t['families'])} toy densities, solved by that density's frozen flow of "
            f"{t['segments']} stacked blocks (one decision per block); error = mean |log p(x) - log p_ref(x)| against "
            f"a 1e-8 solve; reward -{r['alpha']:g}/{t['segments']} x the NFE of each block - {cost} (at the best "
            f"constant tolerance the densities' mean errors span {spread:.1f} decades). Flows trained until the loss "
            f"plateaus (iterations per density: {steps}; 3000 is the cap).")


def section(res: Res) -> str:
    d = res["benchmark"]
    cfg = d["config"]
    tuned = []
    for t in d["tasks"]:
        study = tuned_by(d, res, t["task"])
        tuned.append(f"{t['task']}: " + (f"learning rates tuned on the training pool, [{study}](#{study})" if study
                                         else "not tuned"))
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
        th = v["thresholds"]
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
            f"{', '.join(v['agents_beating_best_constant']) or 'none'}. Agents whose training reward rose "
            f"from the fourth to the last fifth of training on every seed (more episodes may help them): "
            f"{', '.join(v['agents_rising_at_end']) or 'none'}." + "".join(
                f" {r['agent']} ({r['episodes']} episodes, {r['action_mode']} mode) scores {r['reward_mean']:.2f}, "
                f"{'above' if r['beats_best_constant'] else 'below'} the best constant (gap closed "
                f"{cell(r, 'gap_closed', 2)}; its training reward "
                f"{'still rises' if r['rising_at_end'] else 'no longer rises on every seed'} at the end)."
                for r in v["variants"]))
    c, ct = d["cotrain"][0], d["targets"]["cotrain"]
    regime = d["regimes"][cfg["cotrain_regime"]]
    verdicts.append(
        f"Co-training InfoCNF on digits (batch {regime['batch_size']}, {regime['iterations']} iterations, "
        f"{len(c['seeds'])} seeds), REINFORCE with bounds {tuple(cfg['cotrain_tol_bounds'])}, the first-step lever "
        f"and the two-sided accuracy term (weight {cfg['cotrain_gap_weight']:g}, a 1e-5 reference every "
        f"{cfg['cotrain_gap_every']} iteration(s)): training NFE {c['nfe_ratio']:.3f}x fixed 1e-5 (the reference "
        f"solves, reported apart, cost another {c['reference_nfe_ratio']:.3f}x), test bits/dim "
        f"{pct(c['bpd_ratio'] - 1)} (target at most {ct['thresholds']['nfe_ratio']}x within "
        f"{apct(ct['thresholds']['bpd_tol'], 0)}: {'met' if ct['met'] else 'not met'}). Over the last 10% of training "
        f"the policy chose log10 tolerances of {nums([p['log10_tol_last'] for p in c['per_seed']])} and log10 "
        f"first steps of {nums([p['log10_first_step_last'] for p in c['per_seed']])} (per seed, means over blocks), "
        f"at a loss gap to the reference of {nums([p['abs_loss_gap_last'] for p in c['per_seed']], 4)} bits/dim.")
    per_family = []
    for t in d["tasks"]:
        names = sorted(t["best_constant_per_family"])
        lines_t = [f"| {t['task']} | " + " | ".join(names) + " |", "|" + " --- |" * (len(names) + 1)]
        shown = [("best_constant", t["best_constant_per_family"])] + [
            (row["agent"], row["per_family"]) for row in d["rows"]
            if row["task"] == t["task"] and "per_family" in row and row["agent"] != "best_constant"]
        lines_t += [f"| {name} | " + " | ".join(
            f"{fam[f]['reward']:.1f} ({fam[f]['nfe']:.0f} NFE, {fam[f]['error']:.1e})" for f in names) + " |"
            for name, fam in shown]
        per_family.append("\n".join(lines_t))
    return "\n\n".join([figure("benchmark"), "\n\n".join(_task_text(t) for t in d["tasks"]), f"""\
Baselines chosen on the training pool; every figure on the held-out test pool. `best_constant_first_step` is the best \
constant tolerance with the best constant first step of the grid (log10 fraction of the span: \
{', '.join(f'{f:g}' for f in cfg['first_step_grid'])}) at that tolerance; `pi_controller` is torchode's \
Dormand-Prince with a PI step-size controller (PI.3.4) at its own best constant tolerance. Agents: \
{', '.join(cfg['agents'])}, {len(d['seeds'])} seeds, {cfg['agent_episodes']} training episodes each (variant rows, \
reported apart with the same flags: `AGENT-N` trained for N episodes, `AGENT-first-step` in the first-step mode), \
flags from \
`agents/hyperparams/benchmark.json` ({'; '.join(tuned)}). gap closed = (row - best schedule) / (oracle - best \
schedule). Errors: relative error on the ODE task, nats of log-density on the CNF task.""", "\n".join(lines),
                         table(d, "benchmark"), bullets(verdicts),
                         "Per family (density), on the test pool: mean reward (NFE per episode, mean error); "
                         "agents pooled over seeds.", *per_family])


def readme_table(d: dict) -> str:
    """The README's leaderboard: per row (baseline or agent), each task's mean test reward
    (± std over seeds for agents) and gap closed against the best schedule."""
    tasks = [t["task"] for t in d["tasks"]]
    names = list(dict.fromkeys(r["agent"] for r in d["rows"]))
    by = {(r["task"], r["agent"]): r for r in d["rows"]}
    lines = ["| | " + " | ".join(f"{t}: reward (gap closed)" for t in tasks) + " |", "|" + " --- |" * (len(tasks) + 1)]
    for name in names:
        cells = []
        for task in tasks:
            r = by.get((task, name))
            std = f" ± {r['reward_std']:.2f}" if r and r["seeds"] else ""
            cells.append("—" if r is None else f"{r['reward_mean']:.2f}{std} ({cell(r, 'gap_closed', 2)})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("| room: oracle over the best schedule | "
                 + " | ".join(f"{100 * t['gap_fraction']:.1f}%" for t in d["tasks"]) + " |")
    return "\n".join(lines)


if __name__ == "__main__":  # print the README's table from the committed result
    print(readme_table(json.loads((Path(__file__).resolve().parents[2] / "runs" / "results" / "benchmark.json")
                                  .read_text())))
