"""throughput: environment steps per second of the benchmark tasks, single env and vectorised.

For each task of ``tasks`` (``ODE-Mixed-v0``, ``CNF-Frozen-Mixed-v0``), every way of stepping it
that ``modes`` lists, all in one process (one thread each, the machine otherwise idle), each
measured in ``rounds`` rounds that visit every way in turn (so a slow spell of a shared machine
touches them all alike), each time for at least ``seconds`` of stepping after one warm-up
step; a row reports the median round:

* ``single``: ``gymnasium.make(id)``, one episode after another (``reset`` when one ends);
* ``single-torchdiffeq``: the same with ``backend="torchdiffeq"``, the solver the tasks ran on
  before their batched torchode backend;
* ``sync``: gymnasium's ``SyncVectorEnv`` of ``sync_envs`` single envs (one process);
* ``async``: gymnasium's ``AsyncVectorEnv`` of ``async_envs`` single envs (one worker process each);
* ``native``: the task's native vector env (:mod:`infocnf_env.vector`) at each N of ``native_envs``.

Every env plays the training pool with one constant action, the middle of the task's action
bounds (log10 tolerance -5.5 on the ODE tasks, -4 on the frozen flows): the cost of a typical
solve, not of the extremes a random policy reaches. Steps per second count sub-env steps (a
vector step of N sub-envs is N steps). ``ratio``: steps/s over the ``single`` row of the same
task. ``targets``: the native env at N = 256 at least ``ode_ratio`` (100) times the single env
on the ODE task and ``cnf_ratio`` (20) times on the frozen-flow task. The frozen-flow task runs
in its batched configuration (:data:`CNF_BATCHED`: torchode in float64, the task's default),
every mode alike.

``invariance``: why the frozen flows batch in float64 only: per precision, the test pool solved
at ``invariance_log_tol`` with each episode alone and with the other episodes of its density
(:func:`invariance`).

On a GPU (``--set device=cuda``) nothing here moves: the envs' solves run on the CPU (the
batched ODE solve builds its tensors there), so this study has no GPU variant yet.
"""

from __future__ import annotations

import time
from typing import Any

import gymnasium as gym
import numpy as np
import torch

import infocnf_env  # noqa: F401  (registers the ids)
from flows import SolverError
from infocnf_env.frozen import FrozenFlowEnv, accuracy_error
from infocnf_env.threads import set_threads
from runs.format import bullets, verdict
from runs.run_cache import Context
from runs.study import Finding, Page, Res, Study

ROW_KEYS = ("task", "mode", "num_envs", "steps", "seconds", "steps_per_s", "ratio")

#: The frozen-flow task's batched solver (``FrozenConfig``: torchode in float64).
CNF_BATCHED = {"backend": "torchode", "dtype": "float64"}

CONFIG: dict[str, Any] = {
    "tasks": {"ODE-Mixed-v0": {}, "CNF-Frozen-Mixed-v0": CNF_BATCHED},
    "modes": ["single", "single-torchdiffeq", "sync", "async", "native"],
    "sync_envs": 16,
    "async_envs": 2,
    "native_envs": [1, 16, 64, 256],
    "seconds": 6.0,
    "rounds": 3,
    "targets": {"ode_ratio": 100.0, "cnf_ratio": 20.0, "at_envs": 256},
    #: the batch-invariance check: the frozen-flow task's test pool at this log10 tolerance
    "invariance_log_tol": -4.0,
}
QUICK: dict[str, Any] = {
    "tasks": {"ODE-Mixed-v0": {"families": ["vdp", "lorenz"], "segments": 2, "train_pool_size": 4,
                               "test_pool_size": 2, "ood_pool_size": 0, "reference_tol": 1e-9},
              "CNF-Frozen-Mixed-v0": {"densities": ["checkerboard", "8gaussians"], "hidden": 4,
                                      "train_iterations": 3, "train_pool_size": 2, "test_pool_size": 2,
                                      **CNF_BATCHED}},
    "modes": ["single", "single-torchdiffeq", "sync", "native"],
    "sync_envs": 2,
    "native_envs": [1, 4],
    "seconds": 0.2,
    "rounds": 1,
    "targets": {"at_envs": 4},
}


def _action(space: gym.spaces.Box) -> np.ndarray:
    """The constant action of every env: the middle of the bounds."""
    return ((space.low + space.high) / 2).astype(np.float32)


def _time_single(env: gym.Env, seconds: float) -> tuple[int, float]:
    assert isinstance(env.action_space, gym.spaces.Box)
    action = _action(env.action_space)
    env.reset(seed=0)
    env.step(action)  # warm-up
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        _, _, terminated, truncated, _ = env.step(action)
        steps += 1
        if terminated or truncated:
            env.reset()
    return steps, time.perf_counter() - start


def _time_vector(envs: gym.vector.VectorEnv, seconds: float) -> tuple[int, float, float | None]:
    """Sub-env steps, seconds and :func:`nfe_share` over the timed steps (``None`` where the
    steps' infos hold no NFE); gymnasium's vector envs autoreset by themselves (any mode)."""
    assert isinstance(envs.single_action_space, gym.spaces.Box)
    actions = np.tile(_action(envs.single_action_space), (envs.num_envs, 1))
    envs.reset(seed=0)
    envs.step(actions)  # warm-up
    steps, shares, start = 0, [], time.perf_counter()
    while time.perf_counter() - start < seconds:
        *_, info = envs.step(actions)
        steps += envs.num_envs
        shares.append(nfe_share(info))
    elapsed = time.perf_counter() - start
    envs.close()
    known = [s for s in shares if s is not None]
    return steps, elapsed, float(np.mean(known)) if known else None


def nfe_share(info: dict[str, Any]) -> float | None:
    """Of one vector step's infos: the sub-envs' mean NFE over their largest. A batched solve
    loops until its slowest row is done, so this is the share of the loop's iterations a row
    uses on average (``None`` without per-sub-env NFE)."""
    if "nfe" not in info:
        return None
    nfe = np.asarray(info["nfe"], dtype=float)[np.asarray(info.get("_nfe", np.ones(len(info["nfe"]))), dtype=bool)]
    return float(nfe.mean() / nfe.max()) if len(nfe) and nfe.max() > 0 else None


def _measure(task: str, kwargs: dict[str, Any], mode: str, num_envs: int, seconds: float) -> dict[str, Any]:
    """One timing of one way of stepping ``task``; a native row also has its ``nfe_share``."""
    share = None
    if mode == "single":
        steps, elapsed = _time_single(gym.make(task, **kwargs), seconds)
    elif mode == "single-torchdiffeq":
        steps, elapsed = _time_single(gym.make(task, **{**kwargs, "backend": "torchdiffeq"}), seconds)
    elif mode in ("sync", "async", "native"):
        vectorization = {"native": "vector_entry_point"}.get(mode, mode)
        steps, elapsed, share = _time_vector(gym.make_vec(task, num_envs=num_envs, vectorization_mode=vectorization,
                                                          **kwargs), seconds)
    else:
        raise ValueError(f"unknown mode {mode!r}; valid: single, single-torchdiffeq, sync, async, native")
    return {"task": task, "mode": mode, "num_envs": num_envs, "steps": steps, "seconds": round(elapsed, 3),
            "steps_per_s": steps / elapsed, **({"nfe_share": share} if mode == "native" else {})}


def invariance(task: str, kwargs: dict[str, Any], log_tol: float) -> list[dict[str, Any]]:
    """Per precision, how much a frozen-flow episode depends on the batch it is solved in: the
    test pool's episodes solved block by block each alone (a batch of one) and all of a density
    together (:meth:`flows.FlowModel.advance_batch`), at one tolerance: the number of episodes
    whose NFE differs, and the largest difference of their final log p(x) and of their error
    against the reference (nats)."""
    out = []
    for dtype in ("float32", "float64"):
        env = gym.make(task, **{**kwargs, "dtype": dtype}).unwrapped
        assert isinstance(env, FrozenFlowEnv)
        pool, tol = env.pool("test"), 10.0 ** log_tol
        nfe_differs, logp_gap, error_gap = 0, 0.0, 0.0
        for density in env.config.densities:
            indices = [i for i, e in enumerate(pool) if e.density == density]
            model = env.models[density]
            with torch.no_grad():
                together = [model.start(pool[i].x) for i in indices]
                alone = [model.start(pool[i].x) for i in indices]
                nfe = [[0, 0] for _ in indices]
                for _ in range(env.num_blocks):
                    batch = model.advance_batch(together, [tol] * len(indices), [None] * len(indices))
                    singles = [model.advance_batch([s], [tol], [None])[0] for s in alone]
                    for k, (b, a) in enumerate(zip(batch, singles, strict=True)):
                        assert not isinstance(a, SolverError) and not isinstance(b, SolverError)
                        together[k], alone[k] = b[0], a[0]
                        nfe[k][0] += b[1].nfe
                        nfe[k][1] += a[1].nfe
                for k, i in enumerate(indices):
                    ours, its = model.finish(together[k]).logpx, model.finish(alone[k]).logpx
                    reference = env.references["test"][i]
                    nfe_differs += nfe[k][0] != nfe[k][1]
                    logp_gap = max(logp_gap, float((ours - its).abs().max()))
                    error_gap = max(error_gap, abs(accuracy_error(ours, reference) - accuracy_error(its, reference)))
        out.append({"dtype": dtype, "episodes": len(pool), "nfe_differs": nfe_differs,
                    "max_logp_gap": logp_gap, "max_error_gap": error_gap})
    return out


def median_round(measured: list[dict[str, Any]]) -> dict[str, Any]:
    """The round of median steps/s (of an even number of rounds, the faster middle one)."""
    return sorted(measured, key=lambda r: r["steps_per_s"])[len(measured) // 2]


def run(ctx: Context) -> dict[str, Any]:
    cfg = ctx.config
    set_threads(1)
    plan: list[tuple[str, str, int]] = []
    for task, kwargs in cfg["tasks"].items():
        gym.make(task, **kwargs)  # first use (flows, references) before any clock starts
        for mode in cfg["modes"]:
            counts = {"sync": [cfg["sync_envs"]], "async": [cfg["async_envs"]],
                      "native": cfg["native_envs"]}.get(mode, [1])
            plan += [(task, mode, n) for n in counts]
    rounds: dict[tuple[str, str, int], list[dict[str, Any]]] = {key: [] for key in plan}
    for k in range(cfg["rounds"]):
        for task, mode, num_envs in plan:
            row = _measure(task, cfg["tasks"][task], mode, num_envs, cfg["seconds"])
            print(f"round {k}: {task:<22} {mode:<19} N={num_envs:<4} {row['steps_per_s']:10.1f} steps/s", flush=True)
            rounds[(task, mode, num_envs)].append(row)
    rows: list[dict[str, Any]] = []
    for key in plan:
        rows.append({**median_round(rounds[key]), "rounds": [r["steps_per_s"] for r in rounds[key]]})
    for row in rows:
        single = next(r for r in rows if r["task"] == row["task"] and r["mode"] == "single")
        row["ratio"] = row["steps_per_s"] / single["steps_per_s"]
    targets = cfg["targets"]
    at = targets["at_envs"]

    def native_ratio(prefix: str) -> float | None:
        found = [r["ratio"] for r in rows if r["task"].startswith(prefix) and r["mode"] == "native"
                 and r["num_envs"] == at]
        return found[0] if found else None

    ode, cnf = native_ratio("ODE-"), native_ratio("CNF-")
    ode_share = next((r.get("nfe_share") for r in rows if r["task"].startswith("ODE-") and r["mode"] == "native"
                      and r["num_envs"] == at), None)
    frozen = next(task for task in cfg["tasks"] if task.startswith("CNF-"))
    return {"rows": rows, "native_ratio_ode": ode, "native_ratio_cnf": cnf,
            # the ODE task's one solve per step loops until its slowest row is done: at equal cost
            # per loop iteration, N rows would run N x nfe_share times the single env, no more
            "native_bound_ode": None if ode_share is None else at * ode_share,
            "invariance": invariance(frozen, cfg["tasks"][frozen], cfg["invariance_log_tol"]),
            "ode_target_met": None if ode is None else ode >= targets.get("ode_ratio", 100.0),
            "cnf_target_met": None if cnf is None else cnf >= targets.get("cnf_ratio", 20.0)}


def section(res: Res) -> str:
    t = res["throughput"]
    targets = t["config"]["targets"]
    lines = ["| task | mode | N | steps/s | x single |", "|---|---|---:|---:|---:|"]
    for r in t["rows"]:
        lines.append(f"| `{r['task']}` | {r['mode']} | {r['num_envs']} | {r['steps_per_s']:.1f} | {r['ratio']:.2f} |")
    ode, cnf = t["native_ratio_ode"], t["native_ratio_cnf"]
    frozen_kwargs = {k: v for task, kwargs in t["config"]["tasks"].items() if task.startswith("CNF-")
                     for k, v in kwargs.items() if k in ("backend", "dtype")}
    facts = [
        f"ODE task, native vector env at N = {targets['at_envs']}: {ode:.1f}x the single env's steps/s "
        f"(target {targets['ode_ratio']:.0f}x: {verdict(t['ode_target_met'])})" if ode is not None else "",
        f"frozen-flow task ({', '.join(f'{k}={v}' for k, v in frozen_kwargs.items())}), native vector env at "
        f"N = {targets['at_envs']}: {cnf:.1f}x "
        f"(target {targets['cnf_ratio']:.0f}x: {verdict(t['cnf_target_met'])}); one batched solve per density "
        "and block" if cnf is not None else "",
    ]
    bound = t.get("native_bound_ode")
    if bound is not None:
        share = bound / targets["at_envs"]
        facts.append(f"Why the ODE task's ratio stays below N: its batched solve loops until the slowest of its "
                     f"{targets['at_envs']} rows is done, and a row uses on average {share:.0%} of those loop "
                     f"iterations (the sub-envs' mean NFE over their largest, per step). Even if one iteration "
                     f"over {targets['at_envs']} rows cost what one row's step costs alone, the native env would "
                     f"run at most {bound:.0f}x the single env"
                     + (f"; it runs {ode / bound:.0%} of that, so an iteration over {targets['at_envs']} rows costs "
                        f"about {bound / ode:.1f}x one row's." if ode else "."))
    for inv in t.get("invariance", []):
        facts.append(f"Batch invariance of the frozen-flow episodes in {inv['dtype']} (test pool, log10 tolerance "
                     f"{t['config']['invariance_log_tol']:g}, each episode solved alone and with the others of its "
                     f"density): NFE differs on {inv['nfe_differs']} of {inv['episodes']} episodes; final log p(x) "
                     f"differs by up to {inv['max_logp_gap']:.1e} nats, the error against the reference by up to "
                     f"{inv['max_error_gap']:.1e} nats.")
    spread = max((max(r["rounds"]) / min(r["rounds"]) for r in t["rows"] if r.get("rounds") and min(r["rounds"]) > 0),
                 default=1.0)
    facts.append(f"The rounds of one row differ by up to {spread:.2f}x (the JSON's `rounds`): on this shared "
                 "2-core machine read the ratios to one significant figure.")
    return f"""\
`python -m runs.reproduce throughput` (`runs/results/throughput.json`; one run, one thread, a constant action \
at the middle of the bounds; each row the median of {t['config']['rounds']} rounds of at least \
{t['config']['seconds']:g} s that visit every row in turn): environment steps per second.

{chr(10).join(lines)}

{bullets([f for f in facts if f])}"""


def finding_answer(res: Res) -> str:
    """The README's findings row: the native vector env's ratio over the single env, per task."""
    d = res["throughput"]
    targets = d["config"]["targets"]
    settings = {task[:3]: ", ".join(f"{k}={v}" for k, v in kwargs.items() if k in ("backend", "dtype"))
                for task, kwargs in d["config"]["tasks"].items()}
    parts = [f"the {what} task's native vector env" + (f" ({settings[what]})" if settings.get(what) else "")
             + f" at N = {targets['at_envs']} runs {f'{ratio:.0f}' if ratio >= 10 else f'{ratio:.2g}'}x the single "
             f"env's steps/s (target {targets[key]:.0f}x)"
             for what, ratio, key in (("ODE", d["native_ratio_ode"], "ode_ratio"),
                                      ("CNF", d["native_ratio_cnf"], "cnf_ratio")) if ratio is not None]
    return "; ".join(parts)


STUDY = Study(
    name="throughput",
    summary="performance: env steps/s of the single env, gymnasium's vector envs and the native vector env",
    config=CONFIG,
    quick=QUICK,
    run=run,
    page=Page("Performance: benchmark env throughput", order=1035, render=section, needs=("throughput",)),
    row_keys=ROW_KEYS,
    columns=(("task", "task", 0), ("mode", "mode", 0), ("N", "num_envs", 0), ("steps/s", "steps_per_s", 1),
             ("x single", "ratio", 2)),
    seeds=1,
    nullable_keys=("native_ratio_ode", "native_ratio_cnf", "ode_target_met", "cnf_target_met"),
    uses_digits_regimes=False,
    finding=Finding("Is the benchmark fast enough for RL?", order=70,
                    answer=finding_answer),
)
