"""benchmark: the tolerance-learning leaderboard on held-out episodes, against the strongest classical solver settings.

Three parts.

**Classical baselines** (per task of ``tasks``: the classical ODE task ``ODE-Mixed-v0`` of
:mod:`infocnf_env.ode_env` and the CNF task ``CNF-Frozen-Mixed-v0`` of :mod:`infocnf_env.frozen`):
what a numerical analyst would bring before any learning, each chosen on the training pool and
scored on the test pool.

* ``settings``: every adaptive method and step-size controller of the solve layer
  (:func:`flows.ode.solve`: the task's own dopri5, torchdiffeq's dopri5 / bosh3 / dopri8 with
  the integral controller, torchode's tsit5 and its PI controller, scipy's RK23, RK45 and
  DOP853; :data:`SETTINGS`), each as the task's solver
  with one grid tolerance for every step; row ``classical:SETTING`` is the setting at its own
  best constant tolerance on the training pool. ``whole_span`` adds scipy's methods over each
  instance's whole span in one solve (an external anchor: no segment ends, NFE = scipy's
  ``nfev``, priced at the task's NFE price, error measured by the same env code).
  ``first_step_settings``: the setting at its best constant tolerance with the best constant
  first step of ``first_step_grid`` (row ``classical:SETTING+first-step``).
* ``best_classical``: the best of those rows on the training pool: the task's best classical
  configuration, which the agents' verdicts use.
* On the task's own solver (dopri5 with the integral controller, torchode's, batched; in
  float64 on the CNF task): ``best_constant``,
  ``best_constant_first_step``, ``best_schedule`` (one grid tolerance per step, coordinate ascent
  from the best constant), ``oracle`` (each test episode's best grid tolerance in hindsight),
  ``contextual`` (per observation, the grid tolerance best on average over its nearest training
  episodes),
  as :mod:`infocnf_env.baselines` defines them; per setting, its own oracle (``settings`` in the
  task summary); on the ODE task ``method_oracle``: each episode's best (method, tolerance) over
  the methods the ``tol_method`` mode chooses among; for each of ``first_step_oracle_settings``
  (the CNF task's PI controller) ``oracle:SETTING+first-step``: each episode's best (tolerance,
  first step) over the grid and ``first_step_grid``.

**Agents** (``agents``, flags from ``agents/hyperparams/benchmark.json``, chosen by the ``tune``
and ``tune-cnf`` studies), trained for ``agent_episodes`` episodes of the training pool per seed
and scored by their deterministic policy as ``agents.evaluate`` scores a run, in ``agent_sets``:
on the task's own solver (row ``AGENT``); on the solver of the best classical configuration
that an agent can act on (the best per-step setting, in its action mode: row
``AGENT@SETTING``); and the task's extra modes on that solver (``AGENT@SETTING+method``: the
``tol_method`` mode, method and tolerance per segment; ``AGENT@SETTING+first-step``).

Figures. ``gap_fraction = (oracle - best schedule) / |best schedule|`` (the room of an
input-adaptive policy on the task's own solver) and ``gap_closed = (row - best schedule) /
(oracle - best schedule)``. ``savings``: NFE saved at equal error against a setting's
constant-tolerance front (the task's own solver and the best classical configuration), read
off the front by log-log interpolation (:func:`infocnf_env.baselines.saving_on_front`) at equal
mean and at equal median error, over the pool and per family; NFE are means, errors pooled over
seeds. ``vs_classical = (row - best classical) / |best classical|``. Every row is scored on the
test pool and, on the ODE task, on the out-of-range pool (``split: "ood"``, parameters beyond the
training ranges; baselines keep their training-pool choices). ``per_family``: each row's mean
reward, NFE and error per family (density).

**Co-training** (``cotrain``): InfoCNF on digits in the ``small`` regime (batch 128, 300
iterations), fixed 1e-5 against REINFORCE with wide bounds (``cotrain_tol_bounds``), the
first-step lever (``tol_first_step``) and the accuracy term (a reference solve at 1e-5 of
every batch, two-sided gap, weight ``cotrain_gap_weight``). ``nfe_ratio``: training NFE per
iteration (forward + backward, the reference solves not included) over fixed 1e-5's;
``reference_nfe_ratio``: the reference solves' NFE over the same; ``bpd_ratio``: test
bits/dim at 1e-5 over fixed 1e-5's. Means over seeds of per-seed ratios.

The grids, schedule searches, scoring passes and training runs go to ``--jobs`` processes; the
result's ``wall_s`` says what the whole study took.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from agents import registry
from agents.registry import agent_flags
from runs import figures
from runs.aggregate import read_jsonl, run_metrics, summarise
from runs.format import apct, bullets, figure, nums, pct
from runs.run_cache import Arm, Context, digits_arm, run_arms
from runs.studies.common import ratio
from runs.study import Page, Res, Study
from runs.tables import cell, table

ROW_KEYS = ("task", "split", "agent", "reward_mean", "reward_std", "gap_closed", "nfe_mean", "nfe_std",
            "error_mean", "error_std", "error_median", "vs_classical", "savings", "seeds")
#: Nullable: no gap to close; no constant as accurate as the row (no saving defined).
NULLABLE_KEYS = ("gap_closed", "gap_closed_vs_constant", "nfe_saving_at_equal_error", "best_agent", "best_gap_closed",
                 "best_no_worse_on_every_family", "best_nfe_saving_at_equal_error", "mean", "median",
                 "nfe_saving_vs_classical_median", "best_on_classical", "best_on_classical_vs_classical",
                 "ood_no_worse_on_every_family", "vs_classical", "savings",
                 "ood_no_worse_per_family", "nfe_saving_vs_classical_met")


#: The solve layer's methods and step-size controllers (env overrides by setting name; no
#: ``backend``: torchdiffeq's); a task's ``settings`` name those it is scored with, the first being
#: the task's own solver: ``dopri5``, Dormand-Prince 5(4) with torchdiffeq's integral step-size
#: rule on the task's own backend (torchode's, batched across episodes; the frozen-flow tasks'
#: in float64).
SETTINGS: dict[str, dict[str, str]] = {
    "dopri5": {},
    "dopri5-torchdiffeq": {"backend": "torchdiffeq"},
    "bosh3": {"method": "bosh3"},
    "dopri8": {"method": "dopri8"},
    "tsit5": {"backend": "torchode", "method": "tsit5"},
    "dopri5-pi": {"backend": "torchode-pi", "method": "dopri5"},
    "tsit5-pi": {"backend": "torchode-pi", "method": "tsit5"},
    "scipy-RK23": {"backend": "scipy", "method": "RK23"},
    "scipy-RK45": {"backend": "scipy", "method": "RK45"},
    "scipy-DOP853": {"backend": "scipy", "method": "DOP853"},
}

CONFIG: dict[str, Any] = {
    "tasks": {
        "ODE-Mixed-v0": {"task_kwargs": {"train_pool_size": 64, "test_pool_size": 64},
                         "settings": list(SETTINGS), "whole_span": ["RK45", "DOP853"],
                         "first_step_settings": ["dopri5"], "extra_modes": ["tol_method"],
                         "targets": {"gap_fraction": 0.25, "gap_closed": 0.6, "nfe_saving_at_equal_error": 0.2,
                                     "vs_classical": 0.10, "nfe_saving_vs_classical_median": 0.2}},
        "CNF-Frozen-Mixed-v0": {"task_kwargs": {}, "settings": list(SETTINGS),
                                "whole_span": [],
                                "first_step_settings": ["dopri5", "dopri5-pi"], "extra_modes": ["tol_first_step"],
                                "first_step_oracle_settings": ["dopri5-pi"],
                                "targets": {"gap_fraction": 0.15, "gap_closed": 0.5, "nfe_saving_at_equal_error": 0.2,
                                            "vs_classical": 0.05}},
    },
    "grid_step": 0.5,
    "first_step_grid": [-3, -2, -1, -0.5, 0],
    "schedule_grid_step": 1.0,
    "schedule_sweeps": 1,
    "agents": ["reinforce", "ppo", "a2c", "sac", "td3"],
    #: the agents of the extra modes (``extra_modes``) on the best classical setting
    "extra_mode_agents": ["reinforce", "ppo", "a2c"],
    "agent_episodes": 500,
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
                                         "test_pool_size": 2, "ood_pool_size": 2, "reference_tol": 1e-9},
                         "settings": ["dopri5", "tsit5", "scipy-DOP853"],
                         "whole_span": ["DOP853"]},
        "CNF-Frozen-Mixed-v0": {"task_kwargs": {"densities": ["checkerboard", "8gaussians"], "hidden": 4,
                                                "train_iterations": 3, "train_pool_size": 2, "test_pool_size": 2},
                                "settings": ["dopri5", "dopri5-pi"], "first_step_settings": ["dopri5-pi"]},
    },
    "grid_step": 3.5,
    "first_step_grid": [-2, 0],
    "schedule_grid_step": 3.5,
    "agents": ["reinforce", "ppo"],
    "extra_mode_agents": ["ppo"],
    "agent_episodes": 4,
    "contextual_neighbours": 1,
}


# ============================================================================ settings and envs
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
    return _make(task, {**task_kwargs(ctx, kwargs), **overrides})


def _make(task: str, kwargs: dict[str, Any]) -> Any:
    import gymnasium as gym

    import infocnf_env  # noqa: F401  (registers the ids)

    return gym.make(task, **kwargs).unwrapped


def setting_overrides(task_cfg: dict[str, Any], name: str, env: Any) -> dict[str, Any]:
    """The env overrides of classical setting ``name`` of a task (``env``: the task's own env).

    ``NAME`` is a key of the task's ``settings``; ``scipy-METHOD-whole`` is scipy's METHOD over each
    instance's whole span in one solve, its NFE priced as the task prices them (``alpha / K`` per
    evaluation, K the task's segments); ``SETTING+first-step`` is the setting in the
    ``tol_first_step`` mode."""
    if name.endswith("+first-step"):
        return {**setting_overrides(task_cfg, name[: -len("+first-step")], env), "action_mode": "tol_first_step"}
    if name.endswith("-whole"):
        method = name[len("scipy-"): -len("-whole")]
        segments = env.num_blocks
        return {"backend": "scipy", "method": method, "segments": 1, "alpha": env.reward_config.alpha / segments}
    spec = SETTINGS[name]
    return {"backend": spec.get("backend", "torchdiffeq"), **spec} if spec else {}


def setting_names(task_cfg: dict[str, Any]) -> list[str]:
    """Every constant-tolerance setting of a task: its ``settings``, then its whole-span anchors."""
    return [*task_cfg["settings"], *(f"scipy-{m}-whole" for m in task_cfg.get("whole_span", []))]


def agent_arm(ctx: Context, task: str, kwargs: dict[str, Any], agent: str, seed: int,
              flags: list[str] | None = None, episodes: int | None = None, action_mode: str | None = None,
              setting: dict[str, Any] | None = None, label: str | None = None) -> Arm:
    """The run of ``agent`` on ``task`` for ``episodes`` (default ``agent_episodes``), in
    ``action_mode`` (default the task's), on the solver ``setting`` (env overrides; default the
    task's): its committed flags, or ``flags`` (the ``tune`` studies' candidates, which share
    these runs: a candidate with the committed flags is the same run)."""
    flags = agent_flags(task, agent) if flags is None else flags
    kwargs = {**kwargs, **(setting or {})}
    if action_mode is not None:
        kwargs = {**kwargs, "action_mode": action_mode}
    kwargs = task_kwargs(ctx, kwargs)
    return Arm(label=label or f"leaderboard-{task}-{agent}", module=registry.get(agent).trainer, env=task, seed=seed,
               iterations=ctx.config["agent_episodes"] if episodes is None else episodes, eval_every=0,
               agent_args=tuple(flags), env_kwargs=tuple(sorted(kwargs.items())),
               task_key=task_definition(task, kwargs))


def task_definition(task: str, kwargs: dict[str, Any]) -> str:
    """What decides ``task``'s episodes and solves beyond its kwargs, as a cache name: the
    registered config with ``kwargs`` applied, its ``pool_key()`` (the frozen flows' training,
    the ODE families' definitions, the pools and the references) and a digest of its every
    other field (solver, reward, spaces; not its seed or cache folder); empty for another id."""
    import hashlib
    import json
    from dataclasses import asdict

    import infocnf_env

    configs: dict[str, infocnf_env.FrozenConfig | infocnf_env.ODEConfig] = {**infocnf_env.FROZEN_IDS,
                                                                          **infocnf_env.ODE_IDS}
    if task not in configs:
        return ""
    config = configs[task].replace(**kwargs)
    fields = {k: v for k, v in asdict(config).items() if k not in ("seed", "cache")}
    return f"{config.pool_key()}-{hashlib.sha1(json.dumps(fields, default=str).encode()).hexdigest()[:10]}"


def _parallel(ctx: Context, fn: Callable[..., Any], jobs: list[tuple]) -> list[Any]:
    """``[fn(*job) for job in jobs]``, in ``ctx.jobs`` spawned processes when more than one."""
    if ctx.jobs > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(min(ctx.jobs, len(jobs)), mp_context=get_context("spawn")) as pool:
            return list(pool.map(fn, *zip(*jobs, strict=True)))
    return [fn(*job) for job in jobs]


def _table(task: str, kwargs: dict[str, Any], grid_step: float, first_step: float | None) -> Any:
    """The cached grid table of ``task`` with env ``kwargs`` (at a constant ``first_step`` in the
    ``tol_first_step`` mode): a worker's job."""
    from infocnf_env import baselines as B

    env = _make(task, kwargs)
    return B.cached_grid_table(env, B.log_tol_grid(env, grid_step), first_step)


def table_jobs(ctx: Context, task: str, env: Any) -> dict[str, tuple]:
    """The grid tables a task needs, name -> :func:`_table` job: one per constant-tolerance
    setting (:func:`setting_names`) and, for each of ``first_step_oracle_settings``, one per
    first step of ``first_step_grid`` (named ``SETTING+first-step:LOG10``)."""
    cfg, task_cfg = ctx.config, ctx.config["tasks"][task]
    base = task_kwargs(ctx, task_cfg["task_kwargs"])
    jobs = {name: (task, {**base, **setting_overrides(task_cfg, name, env)}, cfg["grid_step"], None)
            for name in setting_names(task_cfg)}
    for setting in task_cfg.get("first_step_oracle_settings", []):
        overrides = setting_overrides(task_cfg, setting + "+first-step", env)
        for f in cfg["first_step_grid"]:
            jobs[f"{setting}+first-step:{f:g}"] = (task, {**base, **overrides}, cfg["grid_step"], 10.0 ** f)
    return jobs


def _episodes(env: Any, policy: Any, split: str = "test") -> list[dict]:
    """Each episode's reward, NFE, error and family under ``policy`` on pool ``split``."""
    indices = list(range(len(env.pool(split))))
    return [{**played, "family": env.family_of(split, e)}
            for e, played in zip(indices, env.play_many(split, indices, policy), strict=True)]


def _run_episodes(task: str, kwargs: dict[str, Any], run_dir: str, splits: tuple[str, ...]) -> dict[str, list[dict]]:
    """A finished run's deterministic policy played on ``splits`` of ``task`` (a worker's job)."""
    from agents.evaluate import load_action_policy

    env = _make(task, kwargs)
    policy = load_action_policy(Path(run_dir), env)
    return {split: _episodes(env, policy, split) for split in splits}


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


# ============================================================================ leaderboard
def savings(tables: dict[str, Any], fronts: Iterable[str], episodes: list[dict], split: str,
            pool_families: list[str]) -> dict[str, Any]:
    """NFE saved by ``episodes`` (pooled over seeds) against each front of ``fronts`` (setting
    names of ``tables``) at equal mean and at equal median error, on the pool and per family
    (``pool_families``: the family of each episode of pool ``split``)."""
    from infocnf_env import baselines as B

    def at(table: Any, mine: list[dict], index: list[int] | None) -> dict[str, float | None]:
        nfe = float(np.mean([e["nfe"] for e in mine]))
        errors = [e["error"] for e in mine]
        return {stat: B.saving_on_front(table, nfe, float(f(errors)), split, stat, index)
                for stat, f in (("mean", np.mean), ("median", np.median))}

    out: dict[str, Any] = {}
    for name in dict.fromkeys(fronts):
        entry: dict[str, Any] = at(tables[name], episodes, None)
        entry["per_family"] = {
            family: at(tables[name], [e for e in episodes if e["family"] == family],
                       [i for i, f in enumerate(pool_families) if f == family])
            for family in dict.fromkeys(pool_families)}
        out[name] = entry
    return out


def task_result(ctx: Context, task: str, arms: dict, tables: dict[str, Any], best: dict[str, Any]) -> dict:
    """The baselines and agents of one task: the task's summary with its ``rows`` (test pool, and
    the ``ood`` pool where the task has one)."""
    from infocnf_env import baselines as B

    cfg = ctx.config
    task_cfg = cfg["tasks"][task]
    kwargs = task_cfg["task_kwargs"]
    env = make_task(ctx, task, kwargs)
    splits = tuple(s for s in ("test", "ood") if s in env.pools)
    own = task_cfg["settings"][0]  # the task's own solver
    table = tables[own]
    constant = B.best_constant(table, "train")
    schedule, _ = B.best_schedule(env, B.log_tol_grid(env, cfg["schedule_grid_step"]), table.log_tols[constant],
                                  sweeps=cfg["schedule_sweeps"])
    contextual = B.fit_contextual(env, table, neighbours=cfg["contextual_neighbours"])

    # -------------------------------------------------------------- baselines, as episodes per split
    played: dict[str, dict[str, list[dict]]] = {}  # row name -> split -> episodes
    extras: dict[str, dict[str, Any]] = {}
    envs: dict[str, Any] = {}

    def setting_env(name: str) -> Any:
        if name not in envs:
            envs[name] = make_task(ctx, task, kwargs, **setting_overrides(task_cfg, name, env))
        return envs[name]

    for name, (setting, action, log_first_step) in best["rows"].items():
        senv = setting_env(setting)
        log_tol = tables[_base(setting)].log_tols[action]
        policy = senv.constant_action(10.0 ** log_tol, None if log_first_step is None else 10.0 ** log_first_step)
        played[name] = {s: _episodes(senv, policy, s) for s in splits}
        extras[name] = {"setting": setting, "log10_tol": log_tol,
                        **({"log10_first_step": log_first_step} if log_first_step is not None else {}),
                        "train_reward": best["train"][name]}
    played["best_constant"] = played[f"classical:{own}"]
    extras["best_constant"] = extras[f"classical:{own}"]
    if f"classical:{own}+first-step" in played:
        played["best_constant_first_step"] = played[f"classical:{own}+first-step"]
        extras["best_constant_first_step"] = extras[f"classical:{own}+first-step"]
    played["best_schedule"] = {s: _episodes(env, B.schedule_policy(schedule), s) for s in splits}
    extras["best_schedule"] = {"schedule": schedule}
    played["contextual"] = {s: _episodes(env, contextual, s) for s in splits}
    classical = best["name"]
    played["best_classical"] = played[classical]
    extras["best_classical"] = {**extras[classical], "row": classical}

    oracle = {s: B.oracle(table, s) for s in splits}
    # oracles of the richer actions: each episode's best (method, tolerance), (tolerance, first step)
    oracles: dict[str, dict[str, dict[str, Any]]] = {}
    if "tol_method" in task_cfg.get("extra_modes", []):
        method_tables = {m: tables[m] for m in _method_choices(task, best["agent_setting"], task_cfg)}
        oracles["method_oracle"] = {s: B.method_oracle(method_tables, s) for s in splits}
    for setting in task_cfg.get("first_step_oracle_settings", []):
        first_tables = {n: t for n, t in tables.items() if n.startswith(f"{setting}+first-step:")}
        oracles[f"oracle:{setting}+first-step"] = {s: B.method_oracle(first_tables, s) for s in splits}

    # -------------------------------------------------------------- agents
    agent_runs = [(name, [arms[key] for key in sorted(k for k in arms if k[0] == task and k[1] == name)])
                  for name in dict.fromkeys(n for t, n, _ in arms if t == task)]
    jobs = [(task, dict(runs[0].env_kwargs), str(arm.run_dir(ctx.runs_dir)), splits)
            for _, runs in agent_runs for arm in runs]
    scored = iter(_parallel(ctx, _run_episodes, jobs))
    agent_played: dict[str, list[dict[str, list[dict]]]] = {name: [next(scored) for _ in runs]
                                                           for name, runs in agent_runs}

    # -------------------------------------------------------------- rows
    pool_families = {s: [env.family_of(s, e) for e in range(len(env.pool(s)))] for s in splits}
    families = list(dict.fromkeys(pool_families["test"]))
    fronts = [own, _base(classical)]
    floor = {s: _means(played["best_schedule"][s])["reward"] for s in splits}
    const = {s: _means(played["best_constant"][s])["reward"] for s in splits}
    classical_reward = {s: _means(played["best_classical"][s])["reward"] for s in splits}

    def row(agent: str, split: str, per_seed: list[list[dict]], seeds: list[int], **extra: Any) -> dict:
        scores = [_means(eps) for eps in per_seed]
        pooled = [e for eps in per_seed for e in eps]
        stats = summarise(scores, ("reward", "nfe", "error"))
        reward = stats["reward_mean"]
        return {"task": task, "split": split, "agent": agent, **stats,
                "error_median": float(np.median([e["error"] for e in pooled])),
                "gap_closed": B.gap_closed(reward, floor[split], oracle[split]["reward"]),
                "gap_closed_vs_constant": B.gap_closed(reward, const[split], oracle[split]["reward"]),
                "vs_classical": ratio(reward - classical_reward[split], abs(classical_reward[split])),
                "nfe_saving_at_equal_error": B.saving_on_front(table, stats["nfe_mean"], stats["error_mean"], split),
                "savings": savings(tables, fronts, pooled, split, pool_families[split]),
                "per_family": _per_family(pooled), "seeds": seeds, "per_seed": scores, **extra}

    rows = []
    for split in splits:
        for name, by_split in played.items():
            rows.append(row(name, split, [by_split[split]], [], **extras.get(name, {})))
        for name, oracle_split in (("oracle", oracle), *oracles.items()):
            o = oracle_split[split]
            rows.append({"task": task, "split": split, "agent": name, "reward_mean": o["reward"], "reward_std": 0.0,
                         "nfe_mean": o["nfe"], "nfe_std": 0.0, "error_mean": o["error"], "error_std": 0.0,
                         "error_median": o["error_median"],
                         "gap_closed": (None if name == "oracle" and not oracle[split]["reward"] > floor[split]
                                        else B.gap_closed(o["reward"], floor[split], oracle[split]["reward"])),
                         "gap_closed_vs_constant": None,
                         "vs_classical": ratio(o["reward"] - classical_reward[split], abs(classical_reward[split])),
                         "nfe_saving_at_equal_error": B.saving_on_front(table, o["nfe"], o["error"], split),
                         "savings": None, "seeds": []})
        for name, runs in agent_runs:
            dirs = [arm.run_dir(ctx.runs_dir) for arm in runs]
            fifths = [training_fifths(d) for d in dirs]
            mode = dict(runs[0].env_kwargs).get("action_mode", env.spaces.action_mode)
            rows.append(row(name, split, [p[split] for p in agent_played[name]], [a.seed for a in runs],
                            run_dirs=[d.name for d in dirs], flags=list(runs[0].agent_args),
                            episodes=runs[0].iterations, action_mode=mode,
                            solver={k: v for k, v in dict(runs[0].env_kwargs).items() if k in ("backend", "method")},
                            train_reward_fifths=fifths,
                            rising_at_end=all(len(f) > 1 and f[-1] > f[-2] for f in fifths)))
    front = [{"log10_tol": t, **B.column(table, a, "test")} for a, t in enumerate(table.log_tols)]
    fronts_by_setting = {name: [{"log10_tol": t, **B.column(tables[name], a, "test")}
                                for a, t in enumerate(tables[name].log_tols)] for name in setting_names(task_cfg)}
    setting_rows = []
    for name in setting_names(task_cfg):
        t = tables[name]
        a = B.best_constant(t, "train")
        setting_rows.append({"setting": name, "log10_tol": t.log_tols[a],
                             "train_reward": float(t.reward["train"][:, a].mean()),
                             "test_reward": float(t.reward["test"][:, a].mean()),
                             "oracle_reward": B.oracle(t, "test")["reward"],
                             "nfe": float(t.nfe["test"][:, a].mean()), "error": float(t.error["test"][:, a].mean())})
    constant_episodes = played["best_constant"]["test"]
    return {
        "task": task, "split": "test", "pool_sizes": {s: len(env.pool(s)) for s in env.pools},
        "families": families, "segments": env.num_blocks, "error_unit": env.error_unit,
        **({"trained_steps": env.trained_steps} if hasattr(env, "trained_steps") else {}),
        "reward": {"alpha": env.config.reward.alpha, "error_form": env.config.reward.error_form,
                   "error_weight": env.config.reward.error_weight, "error_target": env.config.reward.error_target},
        "own_setting": own, "best_classical": classical, "best_classical_setting": _base(classical),
        "agent_setting": best["agent_setting"], "agent_setting_mode": best["agent_mode"],
        "best_classical_reward": classical_reward["test"],
        "best_constant_reward": const["test"], "best_constant_log10_tol": table.log_tols[constant],
        "best_schedule_reward": floor["test"], "best_schedule": schedule, "oracle_reward": oracle["test"]["reward"],
        "oracles": {name: o["test"]["reward"] for name, o in oracles.items()},
        "gap_fraction": ratio(oracle["test"]["reward"] - floor["test"], abs(floor["test"])),
        "gap_fraction_vs_constant": ratio(oracle["test"]["reward"] - const["test"], abs(const["test"])),
        "best_constant_per_family": _per_family(constant_episodes),
        "best_classical_per_family": {s: _per_family(played["best_classical"][s]) for s in splits},
        "settings": setting_rows, "front": front, "fronts": fronts_by_setting, "rows": rows,
    }


def _base(name: str) -> str:
    """The setting of a classical row name (``classical:dopri5+first-step`` -> ``dopri5``)."""
    return name.removeprefix("classical:").removesuffix("+first-step")


def setting_solver(task: str, setting: str) -> tuple[str, str]:
    """``(backend, method)`` of ``setting`` on ``task`` (``dopri5`` is the task's own backend)."""
    import infocnf_env

    configs: dict[str, infocnf_env.FrozenConfig | infocnf_env.ODEConfig] = {**infocnf_env.FROZEN_IDS,
                                                                          **infocnf_env.ODE_IDS}
    own = configs.get(task)
    spec = SETTINGS[setting]
    if not spec:  # the task's own solver
        return (own.backend, own.method) if own is not None else ("torchdiffeq", "dopri5")
    return spec.get("backend", "torchdiffeq"), spec.get("method", "dopri5")


def _method_choices(task: str, setting: str, task_cfg: dict[str, Any]) -> list[str]:
    """The settings of the methods the ``tol_method`` mode chooses among on ``setting``'s backend."""
    from infocnf_env.ode_env import DEFAULT_METHOD_CHOICES

    backend = setting_solver(task, setting)[0]
    return [n for n in task_cfg["settings"] if setting_solver(task, n)[0] == backend
            and setting_solver(task, n)[1] in DEFAULT_METHOD_CHOICES[backend]]


def choose_classical(ctx: Context, task: str, tables: dict[str, Any]) -> dict[str, Any]:
    """The classical rows of a task, each setting at its best constant tolerance on the training
    pool (and the first-step rows at their best constant first step), and the best of them:
    ``{"rows": name -> (setting, grid action, log10 first step), "train": name -> training
    reward, "name": the best row, "agent_setting": the best per-step setting, "agent_mode"}``."""
    from infocnf_env import baselines as B

    cfg = ctx.config
    task_cfg = cfg["tasks"][task]
    rows: dict[str, tuple[str, int, float | None]] = {}
    train: dict[str, float] = {}
    for name in setting_names(task_cfg):
        action = B.best_constant(tables[name], "train")
        rows[f"classical:{name}"] = (name, action, None)
        train[f"classical:{name}"] = float(tables[name].reward["train"][:, action].mean())
    for name in task_cfg.get("first_step_settings", []):
        env = make_task(ctx, task, task_cfg["task_kwargs"])
        first_env = make_task(ctx, task, task_cfg["task_kwargs"],
                              **setting_overrides(task_cfg, name + "+first-step", env))
        action = B.best_constant(tables[name], "train")
        first_step, reward = B.best_first_step(first_env, tables[name].log_tols[action], cfg["first_step_grid"])
        rows[f"classical:{name}+first-step"] = (name + "+first-step", action, first_step)
        train[f"classical:{name}+first-step"] = reward
    best = max(train, key=lambda n: train[n])
    per_step = [n for n in train if not _base(n).endswith("-whole")]
    agent_row = max(per_step, key=lambda n: train[n])
    return {"rows": rows, "train": train, "name": best, "agent_setting": _base(agent_row),
            "agent_mode": "tol_first_step" if agent_row.endswith("+first-step") else "tol"}


def task_verdict(result: dict, agents: list[str], thresholds: dict[str, float]) -> dict:
    """The task's targets against its best agent by mean test reward (among the leaderboard's
    ``agents``, on every solver and mode) and its best agent on the best classical setting."""
    rows = [r for r in result["rows"] if r["split"] == "test" and r["agent"].split("@")[0] in agents]
    best = max(rows, key=lambda a: a["reward_mean"]) if rows else None
    on_classical = [r for r in rows if "@" in r["agent"]]
    best_on = max(on_classical, key=lambda a: a["reward_mean"]) if on_classical else None
    no_worse = None
    if best is not None:
        no_worse = all(best["per_family"][f]["reward"] >= result["best_constant_per_family"][f]["reward"]
                       for f in result["best_constant_per_family"])
    ood_no_worse = None
    if best is not None and "ood" in result["best_classical_per_family"]:
        ood = next(r for r in result["rows"] if r["split"] == "ood" and r["agent"] == best["agent"])
        reference = result["best_classical_per_family"]["ood"]
        ood_no_worse = {f: bool(ood["per_family"][f]["reward"] >= reference[f]["reward"]) for f in reference}
    classical_front = result["best_classical_setting"]
    saving = None if best is None or best["savings"] is None else best["savings"][classical_front]["median"]
    return {
        "task": result["task"], "thresholds": thresholds, "gap_fraction": result["gap_fraction"],
        "gap_met": bool(result["gap_fraction"] >= thresholds["gap_fraction"]),
        "best_agent": best["agent"] if best else None,
        "best_gap_closed": best["gap_closed"] if best else None,
        "gap_closed_met": bool(best and best["gap_closed"] is not None
                               and best["gap_closed"] >= thresholds["gap_closed"]),
        "best_no_worse_on_every_family": no_worse,
        "best_nfe_saving_at_equal_error": best["nfe_saving_at_equal_error"] if best else None,
        "best_classical": result["best_classical"], "best_classical_reward": result["best_classical_reward"],
        "best_vs_classical": best["vs_classical"] if best else None,
        "vs_classical_met": bool(best and best["vs_classical"] is not None
                                 and best["vs_classical"] >= thresholds["vs_classical"]),
        "best_on_classical": best_on["agent"] if best_on else None,
        "best_on_classical_vs_classical": best_on["vs_classical"] if best_on else None,
        "nfe_saving_vs_classical_median": saving,
        "nfe_saving_vs_classical_met": (None if "nfe_saving_vs_classical_median" not in thresholds else bool(
            saving is not None and saving >= thresholds["nfe_saving_vs_classical_median"])),
        "ood_no_worse_on_every_family": None if ood_no_worse is None else all(ood_no_worse.values()),
        "ood_no_worse_per_family": ood_no_worse,
        "agents_beating_best_constant": [a["agent"] for a in rows if a["reward_mean"] > result["best_constant_reward"]],
        "agents_beating_best_classical": [a["agent"] for a in rows
                                          if a["reward_mean"] > result["best_classical_reward"]],
        "agents_rising_at_end": [a["agent"] for a in rows if a["rising_at_end"]],
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


# ============================================================================ the study
AGENT_SUFFIX = {"tol": "", "tol_first_step": "+first-step", "tol_method": "+method"}


AgentSet = tuple[str, "str | None", "str | None", list[str]]


def agent_sets(ctx: Context, task: str, best: dict[str, Any]) -> list[AgentSet]:
    """A task's agent sets: ``(row suffix, setting name or None for the task's own solver, action
    mode or None, agents)``: the task's own solver, the best per-step classical setting in its
    mode, and the task's extra modes on that setting."""
    cfg, task_cfg = ctx.config, ctx.config["tasks"][task]
    own = task_cfg["settings"][0]
    setting, mode = best["agent_setting"], best["agent_mode"]
    sets: list[AgentSet] = [("", None, None, cfg["agents"])]
    if (setting, mode) != (own, "tol"):
        sets.append((f"@{setting}{AGENT_SUFFIX[mode]}", setting, mode, cfg["agents"]))
    for extra in task_cfg.get("extra_modes", []):
        if extra != mode:
            sets.append((f"@{setting}{AGENT_SUFFIX[extra]}", setting, extra, cfg["extra_mode_agents"]))
    return sets


def run(ctx: Context) -> dict:
    cfg = ctx.config
    tasks = list(cfg["tasks"])
    envs = {task: make_task(ctx, task, cfg["tasks"][task]["task_kwargs"]) for task in tasks}  # flows, references
    jobs = {task: table_jobs(ctx, task, envs[task]) for task in tasks}
    computed = iter(_parallel(ctx, _table, [job for task in tasks for job in jobs[task].values()]))
    tables = {task: {name: next(computed) for name in jobs[task]} for task in tasks}
    best = {task: choose_classical(ctx, task, tables[task]) for task in tasks}
    arms: dict[tuple[str, str, int], Arm] = {}
    for task in tasks:
        task_cfg = cfg["tasks"][task]
        for suffix, setting, mode, agents in agent_sets(ctx, task, best[task]):
            overrides = None if setting is None else setting_overrides(task_cfg, setting, envs[task])
            for agent in agents:
                for s in ctx.seeds:
                    arms[(task, agent + suffix, s)] = agent_arm(
                        ctx, task, task_cfg["task_kwargs"], agent, s, action_mode=mode, setting=overrides,
                        label=f"leaderboard-{task}-{agent}{suffix}")
    run_arms(ctx, list(arms.values()))
    results = [task_result(ctx, task, arms, tables[task], best[task]) for task in tasks]
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
COLUMNS = [("task", "task", 0), ("split", "split", 0), ("agent", "agent", 0), ("reward", "reward", 2),
           ("vs best classical", "vs_classical", 3), ("gap closed", "gap_closed", 2), ("NFE / episode", "nfe", 1),
           ("mean error", "error", 6), ("median error", "error_median", 8)]

#: Baselines' markers in the figure (agents are dots in their colours).
MARKERS = {"best_constant": ("s", "black"), "best_constant_first_step": ("v", "black"),
           "best_schedule": ("D", "grey"), "contextual": ("P", "tab:cyan"), "best_classical": ("X", "tab:brown"),
           "oracle": ("*", "gold"), "method_oracle": ("*", "tab:orange")}
#: Agent sets' markers: the task's own solver, the best classical setting, its extra modes.
SET_MARKERS = {"": "o", "@": "^", "+method": "P", "+first-step": "v"}


def _set_marker(agent: str) -> str:
    if "@" not in agent:
        return SET_MARKERS[""]
    return next((m for suffix, m in SET_MARKERS.items() if suffix.startswith("+") and agent.endswith(suffix)),
                SET_MARKERS["@"])


def plot(result: dict, path: Path) -> None:
    """Per benchmark task, on the test pool: the constant-tolerance front of every classical
    setting (top; dashed: scipy over the whole span) and the agents and baselines against the
    fronts of the task's own solver and of the best classical setting (bottom)."""
    plt = figures.pyplot()
    tasks = result["tasks"]
    fig, axes = plt.subplots(2, max(1, len(tasks)), figsize=(max(7.0, 6.0 * len(tasks)), 9.0), squeeze=False)
    cmap = plt.get_cmap("tab10")
    for col, task in enumerate(tasks):
        top, bottom = axes[0][col], axes[1][col]
        for i, (name, front) in enumerate(task["fronts"].items()):
            style = "--" if name.endswith("-whole") else "-"
            width = 2.0 if name == task["best_classical_setting"] else 0.9
            top.plot([f["nfe"] for f in front], [max(figures.num(f["error"]), 1e-16) for f in front], style, marker=".",
                     color=cmap(i % 10), lw=width, label=name)
        for name in (task["own_setting"], task["best_classical_setting"]):
            front = task["fronts"][name]
            bottom.plot([f["nfe"] for f in front], [max(figures.num(f["error"]), 1e-16) for f in front], marker=".",
                        color="grey" if name == task["own_setting"] else "tab:brown", lw=0.8, label=f"{name} front")
        for row in (r for r in result["rows"] if r["task"] == task["task"] and r["split"] == "test"):
            if row["agent"].startswith("classical:"):
                continue
            base = row["agent"].split("@")[0]
            own = ("*", "tab:orange") if row["agent"].startswith("oracle:") else (_set_marker(row["agent"]),
                                                                                   figures.COLOURS.get(base))
            marker, colour = MARKERS.get(row["agent"], own)
            bottom.scatter([row["nfe_mean"]], [max(figures.num(row["error_mean"]), 1e-16)], marker=marker, color=colour,
                           s=70 if marker == "*" else 30, edgecolor="black" if marker == "*" else None,
                           label=row["agent"], zorder=3)
        for ax in (top, bottom):
            if task["reward"]["error_form"] == "target":
                ax.axhline(task["reward"]["error_target"], color="red", ls=":", lw=0.8)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("NFE per episode (test pool)")
            ax.set_ylabel(task.get("error_unit", "mean error"))
            ax.legend(fontsize=5, ncol=2)
        top.set_title(f"{task['task']}: classical settings (bold: the best, {task['best_classical']})", fontsize=8)
        bottom.set_title(f"{task['task']}: agents (dots: own solver; triangles: on {task['agent_setting']})",
                         fontsize=8)
    fig.suptitle(figures.title(result, "Tolerance agents against classical solver settings on held-out episodes"))
    figures.save(fig, path)


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
                f"relative error above {r['error_target']:g}. Pools: "
                + ", ".join(f"{k} {v}" for k, v in t["pool_sizes"].items())
                + " (ood: parameters beyond the training ranges).")
    cost = (f"{r['error_weight']:g} per decade of error above {r['error_target']:g} nats" if r["error_form"] == "target"
            else f"{r['error_weight']:g} x error (nats)")
    steps = ", ".join(f"{k} {v}" for k, v in t.get("trained_steps", {}).items())
    return (f"**{t['task']}** (frozen CNFs, [environment](environment.md#the-frozen-flow-benchmark)): each episode a "
            f"small batch from one of {len(t['families'])} toy densities, solved by that density's frozen flow of "
            f"{t['segments']} stacked blocks (one decision per block); error = mean |log p(x) - log p_ref(x)| against "
            f"a 1e-8 solve; reward -{r['alpha']:g}/{t['segments']} x the NFE of each block - {cost}. Flows trained "
            f"for {steps} iterations.")


def _row(d: dict, task: str, agent: str, split: str = "test") -> dict | None:
    return next((r for r in d["rows"] if r["task"] == task and r["agent"] == agent and r["split"] == split), None)


def learned_vs_classical(d: dict, task: str) -> list[dict]:
    """The lines of a task's "learned vs the best classical setting" table: the best classical
    configuration, the task's own best constant and oracle, and each agent set's best agent."""
    t = next(x for x in d["tasks"] if x["task"] == task)
    agents = d["config"]["agents"]
    rows = [r for r in d["rows"] if r["task"] == task and r["split"] == "test"]
    picks = [("best classical: " + t["best_classical"].removeprefix("classical:"), _row(d, task, "best_classical")),
             (f"{t['own_setting']}, best constant", _row(d, task, "best_constant")),
             (f"{t['own_setting']}, oracle", _row(d, task, "oracle"))]
    for name in t["oracles"]:
        what = (f"{t['agent_setting']} backend, method oracle" if name == "method_oracle"
                else f"{name.removeprefix('oracle:')}, oracle of tolerance and first step")
        picks.append((what, _row(d, task, name)))
    groups: dict[str, list[dict]] = {}
    for r in rows:
        base, _, on = r["agent"].partition("@")
        if base in agents:
            groups.setdefault(on, []).append(r)
    for on, members in groups.items():
        top = max(members, key=lambda r: r["reward_mean"])
        where = f"on {on}" if on else f"on {t['own_setting']}"
        picks.append((f"best agent {where}: {top['agent'].split('@')[0]}", top))
    return [{"name": name, "row": r} for name, r in picks if r is not None]


def _saving(r: dict, front: str, stat: str) -> str:
    value = (r.get("savings") or {}).get(front, {}).get(stat)
    return "—" if value is None else pct(value, 0)


def classical_table(d: dict, task: str) -> str:
    """A task's "learned vs the best classical setting" table (README and results page)."""
    t = next(x for x in d["tasks"] if x["task"] == task)
    front = t["best_classical_setting"]
    ood = any(r["split"] == "ood" for r in d["rows"] if r["task"] == task)
    head = ["", "test reward", "vs best classical", "NFE", "mean error", "median error",
            f"NFE saved vs {front} front (equal median error)"] + (["out-of-range reward"] if ood else [])
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for item in learned_vs_classical(d, task):
        r = item["row"]
        std = f" ± {r['reward_std']:.2f}" if r["seeds"] else ""
        median = "—" if r.get("error_median") is None else f"{r['error_median']:.1e}"
        cells = [item["name"], f"{r['reward_mean']:.2f}{std}", cell(r, "vs_classical", 3), f"{r['nfe_mean']:.0f}",
                 f"{r['error_mean']:.1e}", median, _saving(r, front, "median")]
        if ood:
            o = _row(d, task, r["agent"], "ood")
            cells.append("—" if o is None else f"{o['reward_mean']:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def section(res: Res) -> str:
    d = res["benchmark"]
    cfg = d["config"]
    tuned = []
    for t in d["tasks"]:
        study = tuned_by(d, res, t["task"])
        tuned.append(f"{t['task']}: " + (f"learning rates tuned on the training pool, [{study}](#{study})" if study
                                         else "not tuned"))
    settings_tables = []
    for t in d["tasks"]:
        lines = [f"| {t['task']}: setting | best constant (log10 tol, chosen on train) | test reward | NFE | "
                 "mean error | its oracle | room over its constant |", "|" + " --- |" * 7]
        for s in t["settings"]:
            lines.append(f"| {s['setting']} | {s['log10_tol']:g} | {s['test_reward']:.2f} | {s['nfe']:.0f} | "
                         f"{s['error']:.1e} | {s['oracle_reward']:.2f} | "
                         f"{pct(ratio(s['oracle_reward'] - s['test_reward'], abs(s['test_reward'])), 1)} |")
        settings_tables.append("\n".join(lines))
    verdicts = []
    for v in d["targets"]["tasks"]:
        th = v["thresholds"]
        saving = v["nfe_saving_vs_classical_median"]
        text = (f"{v['task']}: the best classical configuration is {v['best_classical'].removeprefix('classical:')} "
                f"({v['best_classical_reward']:.2f}). The best agent, {v['best_agent']}, scores "
                f"{cell(v, 'best_vs_classical', 3)} of its reward above it (target {th['vs_classical']}: "
                f"{'met' if v['vs_classical_met'] else 'not met'}); the best agent acting on that setting's solver, "
                f"{v['best_on_classical'] or 'none'}, {cell(v, 'best_on_classical_vs_classical', 3)}.")
        if v["nfe_saving_vs_classical_met"] is not None:
            text += (f" At equal median error the best agent saves "
                     f"{'n/a' if saving is None else pct(saving)} NFE against the best classical front (target "
                     f"{100 * th['nfe_saving_vs_classical_median']:.0f}%: "
                     f"{'met' if v['nfe_saving_vs_classical_met'] else 'not met'}).")
        if v["ood_no_worse_per_family"] is not None:
            worse = [f for f, ok in v["ood_no_worse_per_family"].items() if not ok]
            text += (" On the out-of-range pool it is " + ("no worse than the best classical configuration on "
                     "every family (target met)." if not worse else f"worse than the best classical configuration "
                     f"on {', '.join(worse)} (target: no worse on any family, not met)."))
        text += (f" Room on the task's own solver: {100 * v['gap_fraction']:.1f}% of the best schedule's reward "
                 f"(target {100 * th['gap_fraction']:.0f}%: {'met' if v['gap_met'] else 'not met'}); the best agent "
                 f"closes {cell(v, 'best_gap_closed', 2)} of it. Agents above the best classical configuration: "
                 f"{', '.join(v['agents_beating_best_classical']) or 'none'}; above the own solver's best constant: "
                 f"{', '.join(v['agents_beating_best_constant']) or 'none'}. Training reward still rising at the "
                 f"end on every seed: {', '.join(v['agents_rising_at_end']) or 'none'}.")
        verdicts.append(text)
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
        for split in [s for s in ("test", "ood") if s in t["best_classical_per_family"]]:
            names = sorted(t["best_classical_per_family"][split])
            lines_t = [f"| {t['task']} ({split}) | " + " | ".join(names) + " |", "|" + " --- |" * (len(names) + 1)]
            shown = [r for r in d["rows"] if r["task"] == t["task"] and r["split"] == split and "per_family" in r
                     and not r["agent"].startswith("classical:")]
            lines_t += [f"| {r['agent']} | " + " | ".join(
                f"{r['per_family'][f]['reward']:.1f} ({r['per_family'][f]['nfe']:.0f} NFE, "
                f"{r['per_family'][f]['error']:.1e})" for f in names) + " |" for r in shown]
            per_family.append("\n".join(lines_t))
    comparisons = "\n\n".join(f"**{t['task']}: learned vs the best classical setting** (test pool)\n\n"
                               + classical_table(d, t["task"]) for t in d["tasks"])
    return "\n\n".join([figure("benchmark"), "\n\n".join(_task_text(t) for t in d["tasks"]), f"""\
Every classical setting at its own best constant tolerance, chosen on the training pool, and the best of them (the \
task's best classical configuration); every figure on the held-out test pool (and, on the ODE task, the out-of-range \
pool). `classical:scipy-METHOD-whole` is scipy's `solve_ivp` METHOD over each instance's whole span in one solve \
(NFE = `nfev`, priced as the task prices them); `+first-step`: the best constant first step of the grid (log10 \
fraction of the span: {', '.join(f'{f:g}' for f in cfg['first_step_grid'])}) at that tolerance. Agents: \
{', '.join(cfg['agents'])}, {len(d['seeds'])} seeds, {cfg['agent_episodes']} training episodes each, on the task's own \
solver (`AGENT`), on the best classical setting's solver (`AGENT@SETTING`), and in the task's extra mode there \
(`+method`: method and tolerance per segment; `+first-step`: tolerance and first step); flags from \
`agents/hyperparams/benchmark.json` ({'; '.join(tuned)}). NFE saved at equal error: read off a constant-tolerance \
front by log-log interpolation. gap closed = (row - best schedule) / (oracle - best schedule), on the task's own \
solver.""", comparisons, bullets(verdicts), "Each classical setting on the test pool:", *settings_tables,
                         table(d, "benchmark"),
                         "Per family (density): mean reward (NFE per episode, mean error); agents pooled over seeds.",
                         *per_family])


def readme_summary(d: dict) -> str:
    """Per task, where learning pays: the agents above the best classical setting (their reward
    above it, as a share of its reward), the targets, and the oracles that leave room."""
    bullets_ = []
    for v in d["targets"]["tasks"]:
        task, th = v["task"], v["thresholds"]
        above = [(a, _row(d, task, a)) for a in v["agents_beating_best_classical"]]
        text = (f"**{task}**: the best classical setting, {v['best_classical'].removeprefix('classical:')}, scores "
                f"{v['best_classical_reward']:.2f}. Agents above it: "
                + (", ".join(f"{a} ({pct(r['vs_classical'], 1)})" for a, r in above if r) or "none")
                + f" (target {pct(th['vs_classical'], 0)}: {'met' if v['vs_classical_met'] else 'not met'}).")
        saving = v["nfe_saving_vs_classical_median"]
        if saving is not None:
            text += f" The best agent's NFE saved against its front at equal median error: {pct(saving, 0)}."
        if v["ood_no_worse_per_family"]:
            worse = [f for f, ok in v["ood_no_worse_per_family"].items() if not ok]
            text += (f" Out of range it is worse than that setting on {len(worse)} of "
                     f"{len(v['ood_no_worse_per_family'])} families." if worse else
                     " Out of range it is no worse on any family.")
        oracles = [i for i in learned_vs_classical(d, task)
                   if "oracle" in i["name"] and (i["row"].get("vs_classical") or 0) > 0]
        if oracles:
            text += " Hindsight oracles above it: " + ", ".join(
                f"{i['name']} ({pct(i['row']['vs_classical'], 1)})" for i in oracles) + "."
        bullets_.append(text)
    seeds = max((len(r["seeds"]) for r in d["rows"] if r.get("seeds")), default=0)
    return f"Where learning pays, and where it does not ({seeds} seeds):\n\n" + bullets(bullets_)


def readme_table(d: dict) -> str:
    """The README's block: per task, learned tolerances against the best classical setting, and
    :func:`readme_summary`."""
    return "\n\n".join([*(f"{t['task']} (test pool):\n\n" + classical_table(d, t["task"]) for t in d["tasks"]),
                         readme_summary(d)])


STUDY = Study(
    name="benchmark",
    summary="the leaderboard: agents vs every classical solver setting and the oracles, ODE and CNF tasks",
    config=CONFIG,
    quick=QUICK,
    row_keys=ROW_KEYS,
    run=run,
    columns=COLUMNS,
    plot=plot,
    page=Page("The tolerance-learning benchmark: learned tolerances against the best classical settings",
              order=150, render=section, needs=("benchmark",)),
    nullable_keys=NULLABLE_KEYS,
    readme=readme_table,
)
