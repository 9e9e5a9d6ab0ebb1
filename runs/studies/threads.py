"""threads: how many CPU threads the README's main job should use, measured on this machine.

The README's main job (``python -m agents.reinforce --env InfoCNF-Digits-v0``: InfoCNF on the
bundled digits, REINFORCE gates, 300 iterations) trained at each thread count of ``threads``,
with the machine otherwise idle and beside a busy process that this study starts itself
(``load``: a loop of single-threaded 256x256 matrix products, the stand-in for another job on
a shared machine), all in one run so that the conditions are the same:

* ``rate`` rows: training iterations per second, timed from the run's own ``metrics.jsonl``
  (its ``wall_time`` per iteration) over ``iterations`` iterations after ``warmup`` ones, each
  run a fresh ``agents.reinforce`` process with ``--threads T``;
* the ``main job`` row: the README's command itself (default threads, its 300 iterations,
  TensorBoard on) beside the busy process, timed from start to exit (start-up, training and
  the final test pass: what a user waits for). ``targets``: under ``main_job_target_s`` (6
  minutes).

The thread rule the CLIs follow (``infocnf_env.default_threads``: one thread for the
bundled ids) is what the rows test: ``rule`` names the fastest thread count idle and busy.
Every child process gets its thread count from ``--threads`` alone (``OMP_NUM_THREADS`` and
the BLAS variables are removed from its environment).

Cost (full): 4 rate runs of 12 iterations (the 2-thread run beside the busy process is the
slow one: up to 25 s per iteration on a 2-core machine) and the 300-iteration main job:
10-15 minutes. Run it on a machine with nothing else running: the busy process is the load.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from runs import figures
from runs.aggregate import summarise
from runs.format import bullets, figure, row, verdict
from runs.run_cache import REPO, Context
from runs.study import Page, Res, Study

ROW_KEYS = ("case", "load", "threads", "iterations", "seeds", "it_per_s_mean", "it_per_s_std", "wall_s_mean",
            "wall_s_std")

CONFIG: dict[str, Any] = {
    "env": "InfoCNF-Digits-v0",
    "threads": [1, 2],
    "loads": ["idle", "busy"],
    "warmup": 2,
    "iterations": 10,
    "env_kwargs": {},
    "main_job": {"iterations": 300, "env_kwargs": {}, "load": "busy"},
    "busy_size": 256,
    "main_job_target_s": 360.0,
}
#: ``--quick``: one thread and the main job at unit-test size, on an idle machine (the busy
#: neighbour would only slow the smoke test; ``tests/test_reproduce.py`` starts and stops it).
QUICK: dict[str, Any] = {
    "threads": [1],
    "loads": ["idle"],
    "warmup": 1,
    "iterations": 2,
    "env_kwargs": {"hidden": 4, "batch_size": 16},
    "main_job": {"iterations": 2, "env_kwargs": {"hidden": 4, "batch_size": 16}, "load": "idle"},
}

#: The busy neighbour: one thread of matrix products until it is stopped.
BUSY = ("import sys, torch\ntorch.set_num_threads(1)\na = torch.randn({n}, {n})\nprint('busy', flush=True)\n"
        "while True:\n    a = torch.tanh(a @ a / {n} ** 0.5)\n")
#: Environment variables that would decide a child's threads behind ``--threads``.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def _child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES + ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@contextlib.contextmanager
def load(kind: str, size: int) -> Iterator[subprocess.Popen | None]:
    """The machine's load for the block: ``idle`` (nothing), or ``busy`` (a process of one busy
    thread, started here, yielded, and stopped after the block)."""
    if kind == "idle":
        yield None
        return
    if kind != "busy":
        raise ValueError(f"unknown load {kind!r}; valid: idle, busy")
    proc = subprocess.Popen([sys.executable, "-c", BUSY.format(n=size)], env=_child_env(), stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "busy"
        yield proc
    finally:
        proc.terminate()
        proc.wait()


def _agent(ctx: Context, name: str, flags: list[str]) -> tuple[float, Path]:
    """``agents.reinforce`` with ``flags`` in a fresh process; its wall time and run directory."""
    run_dir = ctx.workdir / "threads" / name
    if run_dir.exists():
        shutil.rmtree(run_dir)
    log = ctx.workdir / "logs" / f"threads-{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.run([sys.executable, "-m", "agents.reinforce", "--out", str(run_dir), *flags], cwd=REPO,
                              env=_child_env(), stdout=fh, stderr=subprocess.STDOUT, check=False)
    wall = time.perf_counter() - start
    if proc.returncode:
        raise RuntimeError(f"agents.reinforce failed (exit {proc.returncode}); see {log}")
    return wall, run_dir


def _rate(run_dir: Path, warmup: int) -> float:
    """Training iterations per second after ``warmup`` iterations, from the run's wall times."""
    walls = [json.loads(line)["wall_time"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return (len(walls) - warmup) / (walls[-1] - walls[warmup - 1])


def _env_flags(kwargs: dict) -> list[str]:
    return ["--env-kwargs", *(f"{k}={v!r}" for k, v in kwargs.items())] if kwargs else []


def run(ctx: Context) -> dict:
    cfg = ctx.config
    per: dict[tuple[str, int], list[dict]] = {}
    main: list[dict] = []
    machine = {"cpus": os.cpu_count(), "torch": torch.__version__, "load_average_before": os.getloadavg()[0]}
    for seed in ctx.seeds:
        for kind in cfg["loads"]:
            with load(kind, cfg["busy_size"]):
                for threads in cfg["threads"]:
                    flags = ["--env", cfg["env"], "--seed", str(seed), "--threads", str(threads),
                             "--iterations", str(cfg["warmup"] + cfg["iterations"]), "--eval-every", "0",
                             "--checkpoint-every", "0", "--no-progress", "--no-tensorboard",
                             *_env_flags(cfg["env_kwargs"])]
                    wall, run_dir = _agent(ctx, f"rate-{kind}-t{threads}-s{seed}", flags)
                    per.setdefault((kind, threads), []).append({"it_per_s": _rate(run_dir, cfg["warmup"]),
                                                                "wall_s": wall})
        job = cfg["main_job"]
        with load(job["load"], cfg["busy_size"]):  # the README's command, beside another job
            flags = ["--env", cfg["env"], "--seed", str(seed), "--iterations", str(job["iterations"]),
                     "--no-progress", *_env_flags(job["env_kwargs"])]
            wall, run_dir = _agent(ctx, f"main-job-s{seed}", flags)
        summary = json.loads((run_dir / "summary.json").read_text())
        main.append({"it_per_s": job["iterations"] / _train_wall(run_dir), "wall_s": wall,
                     "threads": summary["threads"]})
    rows = [{"case": "rate", "load": kind, "threads": threads, "iterations": cfg["iterations"],
             "seeds": list(ctx.seeds), **summarise(records, ("it_per_s", "wall_s"))}
            for (kind, threads), records in per.items()]
    default = main[0]["threads"]
    job = cfg["main_job"]
    rows.append({"case": "main job", "load": job["load"], "threads": default, "iterations": job["iterations"],
                 "seeds": list(ctx.seeds), **summarise(main, ("it_per_s", "wall_s"))})
    fastest = {kind: max((r for r in rows if r["case"] == "rate" and r["load"] == kind),
                         key=lambda r: r["it_per_s_mean"])["threads"] for kind in cfg["loads"]}
    job_wall = rows[-1]["wall_s_mean"]
    return {"rows": rows, "machine": machine,
            "rule": {"default_threads": default, "fastest": fastest,
                     "default_is_fastest": all(t == default for t in fastest.values())},
            "targets": {"main_job_wall_s": job_wall, "threshold_s": cfg["main_job_target_s"],
                        "met": bool(job_wall < cfg["main_job_target_s"] and job["load"] == "busy")}}


def _train_wall(run_dir: Path) -> float:
    """The training iterations' wall time (the last iteration's ``wall_time``)."""
    return float(json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])["wall_time"])


# ============================================================================ table, figure, results page
COLUMNS = [("case", "case", 0), ("load", "load", 0), ("threads", "threads", 0), ("iterations", "iterations", 0),
           ("iterations / s", "it_per_s", 2), ("process wall [s]", "wall_s", 1)]


def plot(result: dict, path: Path) -> None:
    plt = figures.pyplot()
    rates = [r for r in result["rows"] if r["case"] == "rate"]
    loads = list(dict.fromkeys(r["load"] for r in rates))
    threads = sorted({r["threads"] for r in rates})
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    width = 0.8 / max(1, len(threads))
    for i, t in enumerate(threads):
        xs = [j + (i - (len(threads) - 1) / 2) * width for j in range(len(loads))]
        picked = [row(rates, load=kind, threads=t) for kind in loads]
        ax.bar(xs, [r["it_per_s_mean"] for r in picked], width, yerr=[r["it_per_s_std"] for r in picked],
               capsize=3, label=f"{t} thread{'s' if t != 1 else ''}")
    ax.set_xticks(range(len(loads)), [f"{kind} machine" for kind in loads])
    ax.set_ylabel("training iterations / s")
    ax.legend(fontsize=8)
    job = row(result["rows"], case="main job")
    ax.set_title(figures.title(result, f"{result['config']['env']}, REINFORCE; main job beside a busy process: "
                                f"{job['wall_s_mean']:.0f} s"), fontsize=9)
    figures.save(fig, path)


def section(res: Res) -> str:
    d = res["threads"]
    rates = [r for r in d["rows"] if r["case"] == "rate"]
    job = row(d["rows"], case="main job")
    lines = ["| load | threads | iterations / s | process wall [s] |", "|" + " --- |" * 4]
    lines += [f"| {r['load']} | {r['threads']} | {r['it_per_s_mean']:.2f} | {r['wall_s_mean']:.1f} |" for r in rates]
    rule, t = d["rule"], d["targets"]
    ratio = {kind: row(rates, load=kind, threads=max(r["threads"] for r in rates))["it_per_s_mean"]
             / row(rates, load=kind, threads=min(r["threads"] for r in rates))["it_per_s_mean"]
             for kind in dict.fromkeys(r["load"] for r in rates)}
    items = [f"Fastest thread count: {', '.join(f'{k} {v}' for k, v in rule['fastest'].items())}; the CLIs' default "
             f"for the bundled ids is {rule['default_threads']} (`infocnf_env.default_threads`). The most threads "
             f"against one: {', '.join(f'{k} {v:.2f}x' for k, v in ratio.items())} the iterations per second.",
             f"The README's main job ({job['iterations']} iterations, {job['threads']} thread"
             f"{'s' if job['threads'] != 1 else ''}, TensorBoard on) "
             f"{'beside the busy process' if job['load'] == 'busy' else 'on the idle machine'}, start to exit: "
             f"{job['wall_s_mean']:.0f} s (target, beside the busy process: under "
             f"{t['threshold_s']:.0f} s): {verdict(t['met'])}."]
    m = d["machine"]
    return "\n\n".join([figure("threads"), f"""\
`{d['config']['env']}` with REINFORCE gates, {d['config']['iterations']} timed iterations after \
{d['config']['warmup']} per thread count, each a fresh `agents.reinforce` process with `--threads T`, with the \
machine idle and beside a process of one busy thread ({m['cpus']} CPUs, torch {m['torch']}; \
`python -m runs.reproduce threads`).""", "\n".join(lines), bullets(items)])


STUDY = Study(
    name="threads",
    summary="the README's main job at 1 and 2 CPU threads, idle and beside a busy process",
    config=CONFIG,
    quick=QUICK,
    row_keys=ROW_KEYS,
    run=run,
    columns=COLUMNS,
    plot=plot,
    page=Page("Threads: the main job on a shared machine", order=160, render=section, needs=("threads",)),
    seeds=1,
    uses_digits_regimes=False,
)
