"""leaderboard-scale: the leaderboard's agents at ten times its budget on the native vector env, searched with Optuna.

On ``task`` (``ODE-Mixed-v0``), for each agent of ``agents``:

1. **Search** (RL Zoo's way): ``trials`` trials of Optuna's TPE sampler (seeded with
   ``sampler_seed``) over the agent's ``SPACES`` (at least two hyperparameters each: the
   learning rate, and REINFORCE's initial spread, PPO's and A2C's rollout length and entropy
   weight, SAC's and TD3's replay buffer, learning starts and train frequency), each trial one
   run of ``trial_episodes`` episodes with ``--n-envs n_envs`` (the task's native vector env)
   from the agent's committed flags (``agents/hyperparams/benchmark.json``), scored by its
   deterministic policy's mean reward on the *training* pool. Each round asks the sampler for
   ``parallel_trials`` trials, trains them (``--jobs`` at a time) and tells it their scores, so
   the search does not depend on ``--jobs``. Every trial is in the result.
2. **Final**: the best trial's flags, ``final_episodes`` episodes (ten times the leaderboard's
   ``agent_episodes``), one run per seed (5), scored on the test and ``ood`` pools against
   the task's best constant tolerance (chosen on the training pool, its grid table cached) and
   the best classical setting of ``runs/results/benchmark.json``.

Rows: one per agent (final runs, mean ± std over seeds). ``trials``: every trial with its
values and training-pool reward. ``edges``: per agent, the hyperparameters whose chosen
value lies at an edge of its range (a wider range might choose better). ``curves``: each
agent's training reward (a moving average over ``curve_window`` episodes, mean over seeds)
against environment steps, drawn in the figure with the two baselines. ``targets``: every
agent beats the best constant on the test pool.

Training runs are cached in the workdir as every study's (a rerun replays the same trials: the
sampler is seeded and the trials' runs are found).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from agents.registry import agent_flags
from runs import figures
from runs.aggregate import mean_std
from runs.format import bullets, figure, verdict
from runs.run_cache import REPO, Context, run_arms
from runs.studies.benchmark import CONFIG as BENCHMARK
from runs.studies.benchmark import QUICK as BENCHMARK_QUICK
from runs.studies.benchmark import agent_arm, make_task
from runs.study import Finding, Page, Res, Study

ROW_KEYS = ("task", "agent", "test_reward_mean", "test_reward_std", "ood_reward_mean", "ood_reward_std",
            "nfe_mean", "nfe_std", "vs_constant", "beats_constant", "seeds")

#: Per agent, its search space: name -> ("log", low, high) | ("float", low, high) | ("cat", choices).
#: A name with dashes is a CLI flag of the agent; one without is an SB3 constructor argument
#: (``--algo-kwargs``). PPO's and A2C's ``n_steps`` are per sub-env (a rollout holds ``n_steps``
#: times ``n_envs`` steps); SAC's and TD3's ``learning_starts`` count environment steps over all
#: sub-envs (a trial of ``trial_episodes`` episodes of 4 segments takes 5,000, so 4096 is the
#: latest start that learns within a trial). SAC also searches ``gradient_steps``, the updates
#: per training call: with 16 sub-envs a ``train_freq`` of 1 trains once per 16 transitions, and
#: only ``gradient_steps`` trains more often. A value chosen at an edge of its range (``edges``)
#: asks for the range to be widened on that side and the search run again.
SPACES: dict[str, dict[str, tuple]] = {
    "reinforce": {"--gate-lr": ("log", 1e-4, 3e-2), "--init-std": ("log", 0.03, 1.5)},
    "ppo": {"--policy-lr": ("log", 3e-5, 3e-3), "n_steps": ("cat", [4, 8, 16, 32]), "ent_coef": ("log", 1e-5, 1e-1)},
    "a2c": {"--policy-lr": ("log", 1e-4, 1e-2), "n_steps": ("cat", [2, 4, 8, 16, 32]), "ent_coef": ("log", 1e-5, 1e-1)},
    "sac": {"--policy-lr": ("log", 3e-5, 3e-3), "buffer_size": ("cat", [2000, 10000, 50000]),
            "learning_starts": ("cat", [64, 256, 1024, 2048, 4096]), "train_freq": ("cat", [1, 4, 16]),
            "gradient_steps": ("cat", [1, 4, 16])},
    "td3": {"--policy-lr": ("log", 3e-6, 3e-3), "buffer_size": ("cat", [2000, 10000, 50000, 200000]),
            "learning_starts": ("cat", [64, 256, 1024]), "train_freq": ("cat", [1, 4, 16, 64])},
}
#: Constructor arguments every SB3 trial of an algorithm gets beside its search (PPO: minibatches
#: of 64 whatever the rollout length).
FIXED_ALGO_KWARGS: dict[str, dict[str, Any]] = {"ppo": {"batch_size": 64}}

CONFIG: dict[str, Any] = {
    "task": "ODE-Mixed-v0",
    "task_kwargs": BENCHMARK["tasks"]["ODE-Mixed-v0"]["task_kwargs"],
    "agents": ["reinforce", "ppo", "a2c", "sac", "td3"],
    #: the agents trained at scale after their search (``None``: every agent of ``agents``)
    "final_agents": None,
    "spaces": SPACES,
    "n_envs": 16,
    "trials": 16,
    "parallel_trials": 2,
    "trial_episodes": 1250,
    "final_episodes": 10 * BENCHMARK["agent_episodes"],
    "sampler_seed": 0,
    "trial_seed": 0,
    "grid_step": BENCHMARK["grid_step"],
    "curve_window": 200,
}
QUICK: dict[str, Any] = {
    "task_kwargs": BENCHMARK_QUICK["tasks"]["ODE-Mixed-v0"]["task_kwargs"],
    "agents": ["reinforce", "ppo"],
    "n_envs": 2,
    "trials": 2,
    "trial_episodes": 4,
    "final_episodes": 6,
    "grid_step": BENCHMARK_QUICK["grid_step"],
    "curve_window": 2,
}


def _distribution(spec: tuple) -> Any:
    import optuna

    kind = spec[0]
    if kind == "log":
        return optuna.distributions.FloatDistribution(spec[1], spec[2], log=True)
    if kind == "float":
        return optuna.distributions.FloatDistribution(spec[1], spec[2])
    if kind == "cat":
        return optuna.distributions.CategoricalDistribution(list(spec[1]))
    raise ValueError(f"unknown search space kind {kind!r}; valid: log, float, cat")


def trial_flags(task: str, agent: str, values: dict[str, Any], n_envs: int) -> list[str]:
    """The agent's committed flags on ``task`` with a trial's ``values`` set (flags replaced,
    SB3 arguments as ``--algo-kwargs``) and ``--n-envs``."""
    flags = list(agent_flags(task, agent))
    algo_kwargs = dict(FIXED_ALGO_KWARGS.get(agent, {}))
    for name, value in values.items():
        if not name.startswith("--"):
            algo_kwargs[name] = value
            continue
        text = f"{value:.4g}" if isinstance(value, float) else str(value)
        if name in flags:
            flags[flags.index(name) + 1] = text
        else:
            flags += [name, text]
    flags += ["--n-envs", str(n_envs)]
    if algo_kwargs:
        flags += ["--algo-kwargs", *(f"{k}={v}" for k, v in sorted(algo_kwargs.items()))]
    return flags


#: SB3 arguments no range can take below 1. With both searched, the number of updates per
#: environment step has room on either side of a 1 (a larger ``train_freq`` gives fewer, a
#: larger ``gradient_steps`` more), so a 1 chosen for either is not an edge of the search.
UPDATE_RATIO = ("train_freq", "gradient_steps")


def at_edge(spec: tuple, value: Any, floor: Any = None) -> bool:
    """Whether ``value`` lies at an edge of its range: the first or last choice, or within 5% of
    the range (in log10 for a log range) of a bound. A value equal to ``floor``, the least the
    parameter can take, is not an edge: no wider range reaches below it."""
    if floor is not None and value == floor:
        return False
    if spec[0] == "cat":
        return value in (spec[1][0], spec[1][-1])
    low, high = (math.log10(spec[1]), math.log10(spec[2])) if spec[0] == "log" else (spec[1], spec[2])
    x = math.log10(value) if spec[0] == "log" else value
    return min(x - low, high - x) <= 0.05 * (high - low)


def edge_names(space: dict[str, tuple], params: dict[str, Any]) -> list[str]:
    """The hyperparameters of ``space`` whose chosen value in ``params`` lies at an edge of its
    range; a 1 for a :data:`UPDATE_RATIO` argument counts only when the other is not searched."""
    both = all(name in space for name in UPDATE_RATIO)
    return [name for name, spec in space.items()
            if at_edge(tuple(spec), params[name], floor=1 if both and name in UPDATE_RATIO else None)]


def _curve(run_dir: Path, window: int, blocks: int) -> tuple[list[int], list[float]]:
    """A run's training reward, a moving average over ``window`` episodes, against env steps."""
    rewards = [json.loads(line)["reward"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
               if line.strip()]
    if len(rewards) < window:
        return [], []
    smooth = np.convolve(rewards, np.ones(window) / window, mode="valid")
    steps = [(window + i) * blocks for i in range(len(smooth))]
    picks = np.unique(np.linspace(0, len(smooth) - 1, 50).astype(int))
    return [steps[i] for i in picks], [float(smooth[i]) for i in picks]


def _best_classical(task: str) -> dict[str, Any] | None:
    path = REPO / "runs" / "results" / "benchmark.json"
    if not path.exists():
        return None
    result = json.loads(path.read_text())
    rows = [r for r in result["rows"] if r["task"] == task and r["agent"] == "best_classical" and r["split"] == "test"]
    return {"reward": rows[0]["reward_mean"], "setting": rows[0].get("setting")} if rows else None


def run(ctx: Context) -> dict[str, Any]:
    import optuna

    from agents.evaluate import load_action_policy
    from infocnf_env import baselines as B

    cfg, task = ctx.config, ctx.config["task"]
    env = make_task(ctx, task, cfg["task_kwargs"])
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trials: list[dict[str, Any]] = []
    chosen: dict[str, dict[str, Any]] = {}
    for agent in cfg["agents"]:
        space = {name: _distribution(tuple(spec)) for name, spec in cfg["spaces"][agent].items()}
        sampler = optuna.samplers.TPESampler(seed=cfg["sampler_seed"], n_startup_trials=max(1, cfg["trials"] // 2))
        search = optuna.create_study(direction="maximize", sampler=sampler)
        done = 0
        while done < cfg["trials"]:
            asked = [search.ask(space) for _ in range(min(cfg["parallel_trials"], cfg["trials"] - done))]
            arms = [agent_arm(ctx, task, cfg["task_kwargs"], agent, cfg["trial_seed"],
                              trial_flags(task, agent, t.params, cfg["n_envs"]), episodes=cfg["trial_episodes"],
                              label=f"scale-{task}-{agent}-trial") for t in asked]
            run_arms(ctx, arms)
            for t, arm in zip(asked, arms, strict=True):
                score = env.score(load_action_policy(arm.run_dir(ctx.runs_dir), env), "train")["reward"]
                search.tell(t, score)
                trials.append({"agent": agent, "trial": t.number, "params": t.params, "train_reward": score,
                               "run_dir": arm.run_dir(ctx.runs_dir).name})
            done += len(asked)
        best = search.best_trial
        chosen[agent] = {"params": best.params, "train_reward": best.value,
                         "flags": trial_flags(task, agent, best.params, cfg["n_envs"])}
    table = B.cached_grid_table(env, B.log_tol_grid(env, cfg["grid_step"]))
    constant = B.best_constant(table, "train")
    constant_test = float(table.reward["test"][:, constant].mean())
    classical = None if ctx.quick else _best_classical(task)
    rows, curves = [], {}
    edges = {agent: edge_names(cfg["spaces"][agent], chosen[agent]["params"]) for agent in cfg["agents"]}
    for agent in cfg["final_agents"] or cfg["agents"]:
        arms = [agent_arm(ctx, task, cfg["task_kwargs"], agent, s, chosen[agent]["flags"],
                          episodes=cfg["final_episodes"], label=f"scale-{task}-{agent}") for s in ctx.seeds]
        run_arms(ctx, arms)
        dirs = [a.run_dir(ctx.runs_dir) for a in arms]
        scored = {split: [env.score(load_action_policy(d, env), split) for d in dirs]
                  for split in ("test", *(["ood"] if "ood" in env.pools else []))}

        def stat(split: str, key: str, scored: dict = scored) -> tuple[float, float]:
            values = [s[key] for s in scored.get(split, [])]
            return mean_std(values) if values else (math.nan, math.nan)

        test, ood, nfe = stat("test", "reward"), stat("ood", "reward"), stat("test", "nfe")
        rows.append({"task": task, "agent": agent, "test_reward_mean": test[0], "test_reward_std": test[1],
                     "ood_reward_mean": ood[0], "ood_reward_std": ood[1], "nfe_mean": nfe[0], "nfe_std": nfe[1],
                     "vs_constant": test[0] - constant_test,
                     "beats_constant": all(s["reward"] > constant_test for s in scored["test"]),
                     "seeds": list(ctx.seeds), "per_seed": [s["reward"] for s in scored["test"]],
                     "run_dirs": [d.name for d in dirs]})
        per_seed = [_curve(d, cfg["curve_window"], env.num_blocks) for d in dirs]
        if all(steps for steps, _ in per_seed):
            length = min(len(steps) for steps, _ in per_seed)
            curves[agent] = {"env_steps": per_seed[0][0][:length],
                             "reward": [float(np.mean([c[1][i] for c in per_seed])) for i in range(length)]}
    return {"rows": rows, "trials": trials, "chosen": chosen, "edges": edges, "curves": curves,
            "best_constant": {"log10_tol": table.log_tols[constant], "test_reward": constant_test},
            "best_classical": classical,
            "not_trained_at_scale": [a for a in cfg["agents"] if a not in (cfg["final_agents"] or cfg["agents"])],
            "targets": {"every_agent_beats_constant": all(r["beats_constant"] for r in rows)}}


def plot(result: dict[str, Any], path: Path) -> None:
    """Each agent's training reward against environment steps (moving average, mean over seeds),
    with the best constant's and the best classical setting's test rewards."""
    plt = figures.pyplot()
    fig, ax = plt.subplots(figsize=(7.0, 4.2))
    for agent, curve in result["curves"].items():
        ax.plot(curve["env_steps"], curve["reward"], color=figures.COLOURS.get(agent), label=agent)
    ax.axhline(result["best_constant"]["test_reward"], color="grey", ls="--", lw=1, label="best constant (test)")
    if result.get("best_classical"):
        ax.axhline(result["best_classical"]["reward"], color="tab:brown", ls=":", lw=1,
                   label=f"best classical: {result['best_classical']['setting'] or ''} (test)")
    ax.set_xlabel("environment steps")
    ax.set_ylabel(f"training reward, {result['config']['curve_window']}-episode mean")
    ax.legend(fontsize=7)
    fig.suptitle(figures.title(result, f"Agents at scale on {result['config']['task']} "
                                       f"({result['config']['n_envs']} sub-envs)"))
    figures.save(fig, path)


def section(res: Res) -> str:
    return scale_section(res, "leaderboard-scale")


def scale_section(res: Res, stem: str) -> str:
    """The page section of the result ``res[stem]`` (``leaderboard-scale`` or a variant on another task)."""
    d = res[stem]
    cfg = d["config"]
    lines = ["| agent | test reward | vs best constant | beats it every seed | ood reward | NFE | chosen |",
             "| --- | ---: | ---: | --- | ---: | ---: | --- |"]
    for r in d["rows"]:
        params = ", ".join(f"{k.lstrip('-')}={v:.3g}" if isinstance(v, float) else f"{k.lstrip('-')}={v}"
                           for k, v in d["chosen"][r["agent"]]["params"].items())
        lines.append(f"| {r['agent']} | {r['test_reward_mean']:.2f} ± {r['test_reward_std']:.2f} | "
                     f"{r['vs_constant']:+.2f} | {'yes' if r['beats_constant'] else 'no'} | "
                     f"{_pm(r['ood_reward_mean'], r['ood_reward_std'])} | {r['nfe_mean']:.0f} | {params} |")
    classical = d.get("best_classical")
    edges = [f"{agent}: {', '.join(names)}" for agent, names in d["edges"].items() if names]
    curves = []  # why an agent below the best constant is there: where its training reward went
    for r in d["rows"]:
        c = d["curves"].get(r["agent"])
        if not r["beats_constant"] and c:
            k = int(np.argmax(c["reward"]))
            curves.append(f"{r['agent']}'s training reward ({cfg['curve_window']}-episode mean) peaks at "
                          f"{c['reward'][k]:.1f} after {c['env_steps'][k]} env steps and ends at {c['reward'][-1]:.1f}")
    command = f"python -m runs.reproduce {d['study']} --jobs 2" + (
        f" --set \"final_agents={cfg['final_agents']!r}\"" if cfg.get("final_agents") else "")
    return "\n\n".join([figure(stem), f"""\
`{command}` (`runs/results/{stem}.json`): on {cfg['task']}, \
each agent searched by Optuna's TPE sampler ({cfg['trials']} trials of {cfg['trial_episodes']} episodes, one seed, \
scored on the training pool), then trained with the best trial's flags for {cfg['final_episodes']} episodes \
(ten times the leaderboard's) on {len(d['seeds'])} seeds, every run on the task's native vector env with \
{cfg['n_envs']} sub-envs. Best constant tolerance: {d['best_constant']['test_reward']:.2f} on the test pool \
(10^{d['best_constant']['log10_tol']:g}, chosen on the training pool)""" + (
        f"; best classical setting ({classical['setting']}): {classical['reward']:.2f}." if classical else "."),
        "\n".join(lines), bullets([
            f"Every agent trained at scale beats the best constant on every seed: "
            f"{verdict(d['targets']['every_agent_beats_constant'])}.",
            f"Searched but not trained at scale: {', '.join(d['not_trained_at_scale'])} "
            f"({'their' if len(d['not_trained_at_scale']) > 1 else 'its'} chosen flags are in the JSON's `chosen`)."
            if d.get("not_trained_at_scale") else "",
            f"Below the best constant: {'; '.join(curves)}." if curves else "",
            f"Chosen at an edge of its range (a wider range might choose better): {'; '.join(edges) or 'none'}.",
            f"All {len(d['trials'])} trials, with their values and training-pool rewards, are in the JSON's "
            "`trials`."])])


def _pm(mean: float | None, std: float | None) -> str:
    """``mean ± std``, or a dash for a pool the task does not have (``ood`` on the frozen flows)."""
    return "—" if mean is None or std is None or math.isnan(mean) else f"{mean:.2f} ± {std:.2f}"


def finding_answer(res: Res, stem: str = "leaderboard-scale") -> str:
    """The README's findings row: who beats the best constant, and the best classical setting."""
    d = res[stem]
    rows, constant = d["rows"], d["best_constant"]["test_reward"]

    def agents(beat: bool) -> str:
        named = [f"{r['agent'].upper()} ({r['test_reward_mean']:.1f})" for r in rows if r["beats_constant"] == beat]
        return " and ".join([", ".join(named[:-1]), named[-1]] if len(named) > 1 else named)

    text = f"on {d['config']['task']}'s own solver " + (
        f"{agents(True)} beat its best constant ({constant:.1f}) on every seed" if agents(True) else
        f"no agent beats its best constant ({constant:.1f}) on every seed")
    if agents(False):
        below = sum(not r["beats_constant"] for r in rows)
        text += f"; {agents(False)} {'do' if below > 1 else 'does'} not (the page says why)"
    if d.get("best_classical"):
        c = d["best_classical"]
        beaten = [r["agent"].upper() for r in rows if r["test_reward_mean"] > c["reward"]]
        text += (f"; {c['setting']} ({c['reward']:.1f}) " +
                 (f"is beaten by {', '.join(beaten)}" if beaten else "still beats them all"))
    missing = d.get("not_trained_at_scale") or []
    return text + f" ({len(d['seeds'])} seeds" + (f"; {', '.join(a.upper() for a in missing)} searched only)"
                                                  if missing else ")")


STUDY = Study(
    name="leaderboard-scale",
    summary="the leaderboard's agents searched by Optuna, trained 10x longer on the ODE task's vector env",
    config=CONFIG,
    quick=QUICK,
    run=run,
    plot=plot,
    page=Page("Leaderboard at scale", order=151, render=section, needs=("leaderboard-scale",)),
    row_keys=ROW_KEYS,
    columns=(("agent", "agent", 0), ("test reward", "test_reward", 2), ("vs constant", "vs_constant", 2),
             ("beats constant", "beats_constant", 0), ("ood reward", "ood_reward", 2), ("NFE", "nfe", 0)),
    seeds=5,
    nullable_keys=("best_classical", "ood_reward_mean", "ood_reward_std", "final_agents"),
    uses_digits_regimes=False,
    finding=Finding("Which agents learn tolerance control at ten times the budget?", order=60,
                    answer=finding_answer),
)
