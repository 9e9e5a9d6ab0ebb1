"""Training runs of :mod:`runs.reproduce`, cached by configuration.

A run is an :class:`Arm`: an agent CLI (``agents.fixed``, ``agents.reinforce``,
``agents.sb3``) on an environment id with fixed flags. Its directory under
``WORKDIR/runs/`` ends with a hash of everything that affects training, so a finished run is
reused by every study that needs it and an interrupted one is resumed from its checkpoint.
The hash covers the flags, not the code: after changing an agent's defaults, pass the new
value as a flag (or delete the run directories) to retrain. Where a default changed after the
committed results were made, the old value is passed as a flag to every run (REINFORCE's
Gaussian gates: :func:`runs.matrix.with_paper_gates`), so those runs and their cache keys
stay what they were.

A run uses ``ctx.threads`` CPU threads in this process, one in a subprocess (``--jobs N``):
``--threads`` is passed to the agent CLI (a resumed run may change it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runs.matrix import DIGITS_TRAIN_SIZE, ENVS, policy_agent_args, with_paper_gates

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Context:
    """Settings of one study's run (:func:`runs.reproduce.run_study`).

    ``out`` is the results folder; ``result_path`` the file the driver writes the result to
    (a study that rewrites its JSON while it runs writes there too), ``None`` outside the driver.
    """

    study: str
    quick: bool
    seeds: tuple[int, ...]
    jobs: int
    threads: int
    workdir: Path
    out: Path
    config: dict
    regimes: dict
    result_path: Path | None = None

    @property
    def runs_dir(self) -> Path:
        return self.workdir / "runs"


@dataclass(frozen=True)
class Arm:
    """One training run: an agent CLI on an environment id with fixed flags.

    ``label`` only names the directory; everything else goes into the cache key. ``task_key``
    names what decides the task's episodes beyond its argv (a benchmark task's trained flows,
    pools and references: its config's ``pool_key()``), so a run trained against other flows or
    other problem definitions is not reused; empty for tasks whose argv decides everything.
    """

    label: str
    module: str
    env: str
    seed: int
    iterations: int
    eval_every: int = 0
    agent_args: tuple[str, ...] = ()
    env_kwargs: tuple[tuple[str, Any], ...] = ()
    task_key: str = ""

    @property
    def key(self) -> str:
        fields = [self.module, self.env, self.seed, self.iterations, self.eval_every,
                  list(self.agent_args), [[k, v] for k, v in self.env_kwargs]]
        if self.task_key:  # only the benchmark arms carry one; the others hash their argv alone
            fields.append(self.task_key)
        return hashlib.sha1(json.dumps(fields, default=str).encode()).hexdigest()[:10]

    def run_dir(self, runs_dir: Path) -> Path:
        return runs_dir / f"{self.label}__s{self.seed}__{self.key}"

    def argv(self, run_dir: Path, resume: bool = False, threads: int = 1) -> list[str]:
        argv = ["--env", self.env, "--seed", str(self.seed), "--iterations", str(self.iterations),
                "--eval-every", str(self.eval_every), "--checkpoint-every", "50", "--no-progress", "--no-tensorboard",
                "--device", "cpu",  # the studies are CPU-sized and their committed figures were measured there
                "--threads", str(threads), *with_paper_gates(self.module, self.agent_args)]
        argv += ["--resume", str(run_dir)] if resume else ["--out", str(run_dir)]
        if self.env_kwargs and not resume:
            argv += ["--env-kwargs", *(f"{k}={v!r}" for k, v in self.env_kwargs)]
        return argv


def _lr_milestones(regime: dict) -> tuple:
    """The regime's one learning-rate drop as ``((epoch, lr),)``, or ``()`` if under an epoch."""
    per_epoch = max(1, DIGITS_TRAIN_SIZE // regime["batch_size"])
    epoch = round(regime["lr_decay_at"] * regime["iterations"] / per_epoch)
    if epoch < 1 or epoch * per_epoch >= regime["iterations"]:
        return ()
    return ((epoch, regime["lr"] * regime["lr_decay"]),)


def digits_arm(ctx: Context, model: str, policy: str, regime: str, seed: int, *, label: str | None = None,
               iterations: int | None = None, eval_every: int | None = None,
               extra_env: dict | None = None, flags: list[str] | None = None) -> Arm:
    """A digits training run of ``model`` with ``policy`` in one of the digits regimes (:mod:`runs.matrix`).

    ``flags`` replace the policy's own flags (the agent's selector, ``--algo`` of an SB3 policy,
    stays); ``extra_env`` adds environment kwargs.
    """
    r = ctx.regimes[regime]
    module, flags = policy_agent_args(policy, flags)
    kwargs = {"batch_size": r["batch_size"], "lr": r["lr"], **r["env_kwargs"]}
    milestones = _lr_milestones(r)
    if milestones:
        kwargs["lr_milestones"] = milestones
    kwargs.update(extra_env or {})
    return Arm(
        label=label or f"{model}-{policy}-{regime}", module=module, env=ENVS[model], seed=seed,
        iterations=r["iterations"] if iterations is None else iterations,
        eval_every=r["eval_every"] if eval_every is None else eval_every,
        agent_args=tuple(flags), env_kwargs=tuple(sorted(kwargs.items())),
    )


def _finished(arm: Arm, runs_dir: Path) -> bool:
    path = arm.run_dir(runs_dir) / "summary.json"
    return path.exists() and json.loads(path.read_text()).get("iterations") == arm.iterations


def _train(arm: Arm, ctx: Context, in_subprocess: bool) -> None:
    run_dir = arm.run_dir(ctx.runs_dir)
    resume = (run_dir / "checkpoint.pt").exists() and (run_dir / "config.json").exists()
    if run_dir.exists() and not resume:
        shutil.rmtree(run_dir)  # a run that died before its first checkpoint: start over
    argv = arm.argv(run_dir, resume, threads=1 if in_subprocess else ctx.threads)
    log = ctx.workdir / "logs" / f"{run_dir.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    print(f"  {'resume' if resume else 'train '} {run_dir.name} ({arm.iterations} it)", flush=True)
    with open(log, "a") as fh:
        if in_subprocess:
            env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
            proc = subprocess.run([sys.executable, "-m", f"agents.{arm.module}", *argv], check=False, cwd=REPO, env=env,
                                  stdout=fh, stderr=subprocess.STDOUT)
            if proc.returncode:
                raise RuntimeError(f"run {run_dir.name} failed (exit {proc.returncode}); see {log}")
        else:
            module = importlib.import_module(f"agents.{arm.module}")
            with contextlib.redirect_stdout(fh):
                module.main(argv)
    (run_dir / "arm.json").write_text(json.dumps(dataclasses.asdict(arm), indent=2, default=str))
    print(f"  done   {run_dir.name} in {time.perf_counter() - start:.0f}s", flush=True)


def run_arms(ctx: Context, arms: Iterable[Arm]) -> dict[Arm, dict]:
    """Train every arm not yet finished in the workdir; return each arm's ``summary.json``."""
    unique = list(dict.fromkeys(arms))
    todo = [a for a in unique if not _finished(a, ctx.runs_dir)]
    print(f"[{ctx.study}] {len(unique)} runs: {len(unique) - len(todo)} cached, {len(todo)} to train", flush=True)
    if ctx.jobs > 1 and len(todo) > 1:
        with ThreadPoolExecutor(ctx.jobs) as pool:
            list(pool.map(lambda a: _train(a, ctx, True), todo))
    else:
        for arm in todo:
            _train(arm, ctx, False)
    return {a: json.loads((a.run_dir(ctx.runs_dir) / "summary.json").read_text()) for a in unique}
