"""benchmark: tolerance learning on frozen flows against its baselines, and co-training with every lever.

Two parts.

**Frozen-flow leaderboard** (``tasks``; ``baseline_only_tasks`` get the baselines, no agents):
on each frozen benchmark id (:mod:`infocnf_env.frozen`, FFJORD 2-D toy densities, a fixed pool of
episodes with cached 1e-8 references), in both action modes:

* the fixed-action front: mean NFE and mean accuracy error of every action of the grid
  (log10 tolerances ``grid_tols`` x first steps ``grid_first_steps``, ``None`` = the solver's
  own start) over the pool;
* ``best_constant_reward``: the grid action with the best mean reward (one action for every
  episode);
* ``oracle_reward``: each episode's best grid action in hindsight, averaged (an upper bound
  for a policy that adapts to its input, within the grid);
* each agent (REINFORCE with the paper's gates, SB3 PPO / SAC / TD3 / A2C) trained for
  ``agent_episodes`` episodes per seed and scored by the mean reward of its deterministic
  policy over the pool; ``gap_closed = (agent - best constant) / (oracle - best constant)``.

**Co-training** (``cotrain``): InfoCNF on digits in the ``small`` regime (batch 128, 300
iterations), fixed 1e-5 against REINFORCE with wide bounds (``cotrain_tol_bounds``), the
first-step lever (``tol_first_step``) and the accuracy term (a reference solve at 1e-5 of
every batch, two-sided gap, weight ``cotrain_gap_weight``). ``nfe_ratio``: training NFE per
iteration (forward + backward, the reference solves not included) over fixed 1e-5's;
``reference_nfe_ratio``: the reference solves' NFE over the same; ``bpd_ratio``: test
bits/dim at 1e-5 over fixed 1e-5's. Means over seeds of per-seed ratios.

Cost (full): the frozen flows (trained once, cached in the user cache directory, ~5 min each on
a core), the grids (a few minutes per task and mode), 5 agents x 2 modes x 3 seeds short runs
(1-5 min each; SAC and TD3 the slowest) and 6 digits runs of 300 iterations: about 1.5 hours
with ``--jobs 2``.
"""

from __future__ import annotations

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

ROW_KEYS = ("task", "action_mode", "agent", "reward_mean", "reward_std", "gap_closed", "seeds")
#: Keys that may be null: the fraction of a gap closed where the oracle does not beat the best
#: constant (no gap) or on a task without agents; an action's ``first_step`` (the solver's own start).
NULLABLE_KEYS = ("gap_closed", "best_gap_closed", "first_step")

#: Agent name -> (agent module, flags); SB3 flags as in the ``policies`` study.
AGENTS = {
    "reinforce": ("reinforce", []),
    "ppo": ("sb3", ["--algo", "ppo", "--init-std", "0.5"]),
    "sac": ("sb3", ["--algo", "sac"]),
    "td3": ("sb3", ["--algo", "td3"]),
    "a2c": ("sb3", ["--algo", "a2c", "--init-std", "0.5"]),
}

CONFIG: dict[str, Any] = {
    "tasks": ["CNF-Frozen-8Gaussians-v0"],
    "baseline_only_tasks": ["CNF-Frozen-Checkerboard-v0"],
    "task_kwargs": {},
    "modes": ["tol", "tol_first_step"],
    "agents": list(AGENTS),
    "agent_episodes": 600,
    "grid_tols": [-8, -7, -6, -5, -4, -3, -2, -1, 0],
    "grid_first_steps": [-3, -2, -1, -0.5, 0],
    "weight_sweep": [100.0, 1000.0, 3000.0, 10000.0, 30000.0],
    "cotrain_regime": "small",
    "cotrain_tol_bounds": [-8.0, 0.0],
    "cotrain_gap_weight": 1000.0,
    "cotrain_gap_every": 1,
    "targets": {"gap_fraction": 0.10, "gap_closed": 0.5, "cotrain_nfe_ratio": 0.45, "cotrain_bpd_tol": 0.01},
}
QUICK: dict[str, Any] = {
    "tasks": ["CNF-Frozen-Checkerboard-v0"],
    "baseline_only_tasks": [],
    "task_kwargs": {"hidden": 8, "train_iterations": 10, "train_pool_size": 4, "test_pool_size": 4,
                    "batch_size": 16},
    "agents": ["reinforce", "ppo"],
    "agent_episodes": 4,
    "grid_tols": [-6, -3, 0],
    "grid_first_steps": [-2, 0],
    "weight_sweep": [100.0, 3000.0],
}

USES_DIGITS_REGIMES = True


# ============================================================================ frozen-flow leaderboard
def _task_kwargs(ctx: Context, mode: str) -> dict[str, Any]:
    """Env kwargs of a task in ``mode``; quick runs keep their tiny flows in the workdir."""
    kwargs: dict[str, Any] = {**ctx.config["task_kwargs"], "action_mode": mode}
    if ctx.quick:
        kwargs["cache"] = str(ctx.workdir / "frozen-cache")
    return kwargs


def make_task(ctx: Context, task: str, mode: str) -> Any:
    """The unwrapped :class:`infocnf_env.FrozenFlowEnv` of ``task`` in ``mode``."""
    import gymnasium as gym

    import infocnf_env  # noqa: F401  (registers the ids)

    return gym.make(task, **_task_kwargs(ctx, mode)).unwrapped


def grid_actions(ctx: Context, mode: str) -> list[tuple[float, float | None]]:
    """The fixed actions of the front: every grid tolerance, with every grid first step in
    ``tol_first_step`` mode (``None``: the solver's own start, in ``tol`` mode)."""
    tols = [10.0 ** t for t in ctx.config["grid_tols"]]
    if mode == "tol":
        return [(t, None) for t in tols]
    return [(t, 10.0 ** f) for t in tols for f in ctx.config["grid_first_steps"]]


def _as_action(action: tuple[float, float | None]) -> list[np.ndarray]:
    tol, first_step = action
    return [np.array([math.log10(tol)] + ([] if first_step is None else [math.log10(first_step)]))]


def grid_table(env: Any, actions: list[tuple[float, float | None]]) -> list[list[dict[str, float]]]:
    """``table[e][a]``: reward, NFE and error of test-pool episode e solved with grid action a (every block)."""
    return [[env.play("test", e, _as_action(a)) for a in actions] for e in range(len(env.pool("test")))]


def reweighted(table: list[list[dict[str, float]]], alpha: float, error_weight: float,
               num_blocks: int) -> list[list[dict[str, float]]]:
    """The grid table with each cell's reward recomputed at other weights (NFE and error kept)."""
    return [[{**cell, "reward": -(alpha / num_blocks) * cell["nfe"] - error_weight * cell["error"]
              if math.isfinite(cell["error"]) else cell["reward"]} for cell in row] for row in table]


def baselines(table: list[list[dict[str, float]]], actions: list[tuple[float, float | None]]) -> dict[str, Any]:
    """The best constant (one grid action for every episode) and the hindsight oracle (each
    episode's best grid action), with the front: each action's mean NFE, error and reward."""
    rewards = np.array([[cell["reward"] for cell in row] for row in table])
    nfe = np.array([[cell["nfe"] for cell in row] for row in table])
    error = np.array([[cell["error"] for cell in row] for row in table])
    best = int(np.argmax(rewards.mean(axis=0)))
    picks = rewards.argmax(axis=1)
    rows = np.arange(len(table))
    front = [{"tol": t, "first_step": f, "nfe": float(nfe[:, a].mean()), "error": float(error[:, a].mean()),
              "reward": float(rewards[:, a].mean())} for a, (t, f) in enumerate(actions)]
    return {
        "best_constant_reward": float(rewards[:, best].mean()),
        "best_constant_action": {"tol": actions[best][0], "first_step": actions[best][1]},
        "best_constant_nfe": float(nfe[:, best].mean()), "best_constant_error": float(error[:, best].mean()),
        "oracle_reward": float(rewards[rows, picks].mean()),
        "oracle_nfe": float(nfe[rows, picks].mean()), "oracle_error": float(error[rows, picks].mean()),
        "oracle_actions": [{"tol": actions[p][0], "first_step": actions[p][1]} for p in picks],
        "front": front,
    }


def score_policy(env: Any, policy: Any) -> dict[str, float]:
    """Mean reward, NFE and error of a deterministic policy ``(obs, block) -> action`` over the test pool."""
    score = env.score(policy, "test")
    return {key: score[key] for key in ("reward", "nfe", "error")}


def agent_arm(ctx: Context, task: str, mode: str, agent: str, seed: int) -> Arm:
    module, flags = AGENTS[agent]
    kwargs = _task_kwargs(ctx, mode)
    return Arm(label=f"bench-{task}-{mode}-{agent}", module=module, env=task, seed=seed,
               iterations=ctx.config["agent_episodes"], eval_every=0, agent_args=tuple(flags),
               env_kwargs=tuple(sorted(kwargs.items())))


def task_results(ctx: Context) -> list[dict]:
    """Per task and action mode: the baselines, each agent's score and the gap it closes."""
    from agents.evaluate import load_action_policy

    cfg = ctx.config
    arms = {(task, mode, agent, s): agent_arm(ctx, task, mode, agent, s)
            for task in cfg["tasks"] for mode in cfg["modes"] for agent in cfg["agents"] for s in ctx.seeds}
    tasks = cfg["tasks"] + cfg["baseline_only_tasks"]
    for task in tasks:
        make_task(ctx, task, "tol")  # trains and caches the flow and references before the runs start
    run_arms(ctx, list(arms.values()))
    results = []
    for task in tasks:
        for mode in cfg["modes"]:
            env = make_task(ctx, task, mode)
            actions = grid_actions(ctx, mode)
            cells = grid_table(env, actions)
            base = baselines(cells, actions)
            sweep = []
            for w in cfg["weight_sweep"]:
                b = baselines(reweighted(cells, env.config.reward.alpha, w, env.num_blocks), actions)
                sweep.append({"error_weight": w, "best_constant_reward": b["best_constant_reward"],
                              "best_constant_action": b["best_constant_action"], "oracle_reward": b["oracle_reward"],
                              "gap_fraction": ratio(b["oracle_reward"] - b["best_constant_reward"],
                                                    abs(b["best_constant_reward"]))})
            gap = base["oracle_reward"] - base["best_constant_reward"]
            agents = []
            for agent in cfg["agents"] if task in cfg["tasks"] else []:
                dirs = [arms[(task, mode, agent, s)].run_dir(ctx.runs_dir) for s in ctx.seeds]
                scores = [score_policy(env, load_action_policy(d, env)) for d in dirs]
                stats = summarise(scores, ("reward", "nfe", "error"))
                agents.append({
                    "agent": agent, **stats,
                    "gap_closed": (stats["reward_mean"] - base["best_constant_reward"]) / gap if gap > 0
                    else float("nan"),
                    "seeds": list(ctx.seeds), "per_seed": scores,
                    "run_dirs": [d.name for d in dirs],
                })
            results.append({
                "task": task, "action_mode": mode, "alpha": env.config.reward.alpha,
                "error_weight": env.config.reward.error_weight,
                "nfe_per_block_at_1e-5": env.score(env.constant_action(1e-5), "test")["nfe"] / env.num_blocks,
                "reference_nfe_mean": float(np.mean(env.reference_nfe["test"])),
                "loosest_action": base["front"][-1],
                "gap_fraction": ratio(gap, abs(base["best_constant_reward"])),
                **base, "weight_sweep": sweep, "agents": agents,
            })
    return results


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


def run(ctx: Context) -> dict:
    tasks = task_results(ctx)
    cotrain = cotrain_rows(ctx)
    t = ctx.config["targets"]
    rows = [{"task": r["task"], "action_mode": r["action_mode"], **a} for r in tasks for a in r["agents"]]
    best = {(r["task"], r["action_mode"]): max((a["gap_closed"] for a in r["agents"]), default=float("nan"))
            for r in tasks}
    c = cotrain[0]
    targets = {
        "thresholds": t,
        "tasks": [{"task": r["task"], "action_mode": r["action_mode"], "gap_fraction": r["gap_fraction"],
                   "best_gap_closed": best[(r["task"], r["action_mode"])],
                   "gap_met": bool(r["gap_fraction"] >= t["gap_fraction"]),
                   "agent_met": bool(best[(r["task"], r["action_mode"])] >= t["gap_closed"])} for r in tasks],
        "cotrain": {"nfe_ratio": c["nfe_ratio"], "bpd_ratio": c["bpd_ratio"],
                    "met": bool(c["nfe_ratio"] <= t["cotrain_nfe_ratio"]
                                and abs(c["bpd_ratio"] - 1) <= t["cotrain_bpd_tol"])},
    }
    return {"rows": rows, "tasks": tasks, "cotrain": cotrain, "targets": targets}


# ============================================================================ table, figure, results page
#: Columns of the study's table (:func:`runs.tables.table`): (header, row key or ``key_mean`` stem,
#: digits); a stem that has ``_mean`` / ``_std`` in the row prints as ``mean ± std``.
COLUMNS = [("task", "task", 0), ("action", "action_mode", 0), ("agent", "agent", 0),
           ("reward", "reward", 2), ("gap closed", "gap_closed", 2), ("NFE / episode", "nfe", 1),
           ("error [nats]", "error", 4)]


def plot(result: dict, path: Path) -> None:
    """Per frozen task and action mode: the fixed-action front (mean NFE vs mean error), the
    best constant, the hindsight oracle and each agent (mean over seeds)."""
    plt = _pyplot()
    tasks = result["tasks"]
    fig, axes = plt.subplots(1, max(1, len(tasks)), figsize=(4.2 * max(1, len(tasks)), 3.8), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=False):
        front = task["front"]
        ax.scatter([f["nfe"] for f in front], [max(_f(f["error"]), 1e-7) for f in front], s=10, color="grey",
                   label="fixed actions")
        ax.scatter([task["best_constant_nfe"]], [max(_f(task["best_constant_error"]), 1e-7)], marker="s",
                   color="black", label="best constant")
        ax.scatter([task["oracle_nfe"]], [max(_f(task["oracle_error"]), 1e-7)], marker="*", s=80, color="gold",
                   edgecolor="black", label="oracle")
        for agent in task["agents"]:
            ax.scatter([agent["nfe_mean"]], [max(_f(agent["error_mean"]), 1e-7)], marker="o",
                       color=COLOURS.get(agent["agent"], None), label=agent["agent"])
        ax.set_yscale("log")
        ax.set_xlabel("NFE per episode")
        ax.set_ylabel("error of log p(x) [nats]")
        ax.set_title(f"{task['task'].replace('CNF-Frozen-', '').replace('-v0', '')}, {task['action_mode']}",
                     fontsize=9)
    axes[0][0].legend(fontsize=6)
    fig.suptitle(_title(result, "Frozen-flow benchmark: agents against the fixed-action front"))
    _save(fig, path)


#: The study's section of docs/results.md (:mod:`runs.docs`): its title, the result files it
#: needs (the section is left out without them) and its place on the page (ascending).
TITLE = "A tolerance benchmark worth learning: frozen flows and co-training"
NEEDS = ("benchmark",)
PAGE_ORDER = 140


def section(res: Res) -> str:
    d = res["benchmark"]
    th = d["targets"]["thresholds"]

    def action(a: dict) -> str:
        first = "solver's start" if a["first_step"] is None else f"first step {a['first_step']:.3g} of the span"
        return f"tol {a['tol']:.0e}, {first}"

    lines = ["| task | action | NFE / block @1e-5 | loosest action: NFE, error | best constant | its reward | "
             "oracle reward | gap / best |", "|" + " --- |" * 8]
    for t in d["tasks"]:
        loose = t["loosest_action"]
        lines.append(f"| {t['task']} | {t['action_mode']} | {t['nfe_per_block_at_1e-5']:.1f} | "
                     f"{loose['nfe']:.1f}, {loose['error']:.4f} | {action(t['best_constant_action'])} | "
                     f"{t['best_constant_reward']:.2f} | {t['oracle_reward']:.2f} | {100 * t['gap_fraction']:.1f}% |")
    with_agents = {(t["task"], t["action_mode"]) for t in d["tasks"] if t["agents"]}
    verdicts = [f"{t['task']}, {t['action_mode']}: oracle over best constant {100 * t['gap_fraction']:.1f}% of its "
                f"reward (target {100 * th['gap_fraction']:.0f}%: {'met' if t['gap_met'] else 'not met'}); "
                + (f"best agent closes {cell(t, 'best_gap_closed', 2)} of the gap (target {th['gap_closed']}: "
                   f"{'met' if t['agent_met'] else 'not met'})." if (t["task"], t["action_mode"]) in with_agents
                   else "baselines only, no agents run on it.") for t in d["targets"]["tasks"]]
    for t in d["tasks"]:
        sweep = ", ".join(f"{w['error_weight']:g}: {100 * w['gap_fraction']:.1f}%" for w in t["weight_sweep"])
        verdicts.append(f"{t['task']}, {t['action_mode']}: the oracle's gain over the best constant at other error "
                        f"weights (same grid; weight: gain) {sweep}.")
    c = d["cotrain"][0]
    ct = d["targets"]["cotrain"]
    cfg = d["config"]
    regime = d["regimes"][cfg["cotrain_regime"]]
    verdicts.append(
        f"Co-training InfoCNF on digits (batch {regime['batch_size']}, {regime['iterations']} iterations, "
        f"{len(c['seeds'])} seeds), REINFORCE with bounds {tuple(cfg['cotrain_tol_bounds'])}, the first-step lever "
        f"and the two-sided accuracy term (weight {cfg['cotrain_gap_weight']:g}, a 1e-5 reference every "
        f"{cfg['cotrain_gap_every']} iteration(s)): training NFE {c['nfe_ratio']:.3f}x fixed 1e-5 (the reference "
        f"solves, reported apart, cost another {c['reference_nfe_ratio']:.3f}x), test bits/dim "
        f"{pct(c['bpd_ratio'] - 1)} (target at most {th['cotrain_nfe_ratio']}x within "
        f"{apct(th['cotrain_bpd_tol'], 0)}: {'met' if ct['met'] else 'not met'}). Over the last 10% of training "
        f"the policy chose log10 tolerances of {nums([p['log10_tol_last'] for p in c['per_seed']])} and log10 "
        f"first steps of {nums([p['log10_first_step_last'] for p in c['per_seed']])} (per seed, means over blocks), "
        f"at a loss gap to the reference of {nums([p['abs_loss_gap_last'] for p in c['per_seed']], 4)} bits/dim.")
    w = d["tasks"][0]
    return "\n\n".join([figure("benchmark"), f"""\
Frozen flows (`CNF-Frozen-*`), {len(d['seeds'])} seeds per agent, each agent trained for {cfg['agent_episodes']} \
episodes and scored by its deterministic policy over the task's pool of {len(w['oracle_actions'])} episodes. Reward \
per episode: -{w['alpha']:g} x NFE - {w['error_weight']:g} x error (nats, against a cached 1e-8 solve). The best \
constant is the best single grid action, the oracle each episode's best grid action in hindsight; gap closed = \
(agent - best constant) / (oracle - best constant), above 1 where an agent's continuous action beats the grid.""",
                         "\n".join(lines), table(d, "benchmark"), bullets(verdicts)])
