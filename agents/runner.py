"""What every agent CLI shares: run directory, logging, evaluation, checkpoints, resume, signals.

A run directory holds ``config.json`` (the arguments), ``metrics.jsonl`` (one line per flow
training iteration), ``eval.jsonl`` (periodic test metrics at tol 1e-5), TensorBoard event
files, ``checkpoint.pt`` (+ ``checkpoint.pt.prev``) and, at the end, ``summary.json``; the
rules that keep it (no overwrite, one writer, exact resume) are in :mod:`agents.run_dir`.

Under ``torchrun`` (``WORLD_SIZE > 1``, see :mod:`agents.distributed`) every rank runs the same
loop on its share of the data; rank 0 alone writes the run directory and evaluates, the
checkpoint also holds each rank's random state, and every checkpoint verifies that all ranks
hold bit-identical weights.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import gymnasium as gym
import numpy as np
import torch

import infocnf_env  # noqa: F401  (registers the ids)
from agents import distributed
from agents.cli import CommonArgs, parse_env_kwargs
from agents.run_dir import (
    CHECKPOINT,
    CONFIG,
    EVALS,
    METRICS,
    SUMMARY,
    DirLock,
    RunDirError,
    check_metrics,
    check_new_run_dir,
    latest_checkpoint,
    read_config,
    truncate_jsonl,
    write_json,
)
from flows import EVAL_TOL, SolverError
from infocnf_env.benchmark import BenchmarkEnv
from infocnf_env.checkpoint import CheckpointError, save_checkpoint
from infocnf_env.config import check_device

A = TypeVar("A", bound=CommonArgs)

#: Keys of an episode's final ``info`` copied to ``metrics.jsonl``.
METRIC_KEYS = ("loss", "bits_per_dim", "xent", "error", "nfe_forward", "nfe_backward", "nfe_reference", "loss_gap",
               "tols", "first_steps", "nfe_blocks", "epoch", "lr", "skipped_update", "solver_error", "recon_mse", "kl",
               "failed_ranks")


class Agent:
    """A tolerance policy as the runner drives it; every agent of ``agents/`` subclasses it.

    Episode-driven agents (fixed, REINFORCE) implement :meth:`act`, :meth:`observe` and
    :meth:`end_episode`, which :func:`run_episodes` calls; an agent that drives the env itself
    (SB3) implements only the state methods. The multi-process hooks default to "nothing
    differs between ranks"; an agent with its own randomness or weights overrides them.
    """

    def act(self, obs: Any) -> np.ndarray:
        """log10 of the tolerance for the block whose observation is ``obs``."""
        raise NotImplementedError(f"{type(self).__name__} does not act episode by episode")

    def observe(self, reward: float) -> None:
        """The reward of the last action."""

    def end_episode(self) -> dict[str, float]:
        """Learn from the finished episode; statistics for ``metrics.jsonl``."""
        return {}

    def state_dict(self) -> dict:
        raise NotImplementedError

    def load_state_dict(self, state: dict) -> None:
        raise NotImplementedError

    def modules(self) -> list[torch.nn.Module]:
        """The agent's weights, checked equal on every rank of a multi-process run."""
        return []

    def distribute(self, rank: int, world_size: int) -> None:
        """Join multi-process training (the process group is initialised)."""

    def rank_state_dict(self) -> dict | None:
        """What differs between ranks (saved per rank); ``None``: nothing."""
        return None

    def load_rank_state_dict(self, state: dict | None) -> None:
        """Restore :meth:`rank_state_dict`; ``None`` when the checkpoint holds none for this rank."""


#: ``gymnasium.make``'s module prefix of the ids (``"infocnf_env:InfoCNF-Digits-v0"``).
ID_PREFIX = "infocnf_env:"


def env_id(name: str) -> str:
    """A registered id as the CLIs take it, with or without the ``infocnf_env:`` prefix."""
    return name.removeprefix(ID_PREFIX)


def make_env(env_id: str, env_kwargs: dict[str, Any]) -> gym.Env:
    """``gymnasium.make`` with one clear error for an unknown id or keyword."""
    env_id = env_id.removeprefix(ID_PREFIX)
    if env_id not in gym.registry:
        ids = [*infocnf_env.ENV_IDS, *infocnf_env.FROZEN_IDS, *infocnf_env.ODE_IDS]
        raise ValueError(f"unknown env id {env_id!r}; registered ids: {', '.join(compact_ids(ids))}")
    try:
        return gym.make(env_id, **env_kwargs)
    except TypeError as err:
        if "unexpected keyword" in str(err):
            raise ValueError(f"unknown env kwarg for {env_id}: {err}") from None
        raise


def compact_ids(ids: list[str]) -> list[str]:
    """Ids that differ in one dash-separated part, written once: ``{InfoCNF,CCNF}-Digits-v0``,
    ``ODE-{Kepler,Lorenz}-v0``."""
    out: list[str] = []
    pending = list(ids)
    while pending:
        parts = pending[0].split("-")
        best: list[str] = [pending[0]]
        best_at = 0
        for at in range(len(parts)):
            same = [i for i in pending if len(i.split("-")) == len(parts)
                    and i.split("-")[:at] + i.split("-")[at + 1:] == parts[:at] + parts[at + 1:]]
            if len(same) > len(best):
                best, best_at = same, at
        if len(best) == 1:
            out.append(best[0])
        else:
            choices = "{" + ",".join(i.split("-")[best_at] for i in best) + "}"
            out.append("-".join(parts[:best_at] + [choices] + parts[best_at + 1:]))
        pending = [i for i in pending if i not in best]
    return out


def env_has_device(name: str) -> bool:
    """Whether the registered config of id ``name`` takes a ``device`` (``False`` for an unknown id)."""
    name = env_id(name)
    return name in gym.registry and hasattr(gym.spec(name).kwargs.get("config"), "device")


class RunLogger:
    """metrics.jsonl, eval.jsonl and TensorBoard scalars of one run.

    ``first_step``: the first iteration this process logs; TensorBoard events of a previous
    process at or after it (written after the checkpoint the run resumes from) are purged, so
    no step appears twice.
    """

    def __init__(self, run_dir: Path, tensorboard: bool, enabled: bool = True, first_step: int = 1):
        self.run_dir = run_dir
        self.enabled = enabled  # False on ranks > 0 of a multi-process run: they write nothing
        self.writer = None
        if tensorboard and enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir), purge_step=first_step if first_step > 1 else None)

    def _append(self, name: str, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.run_dir / name, "a") as fh:
            fh.write(json.dumps(record, sort_keys=True) + "\n")

    def _scalars(self, prefix: str, record: dict, step: int) -> None:
        if self.writer is None:
            return
        for key, value in record.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                self.writer.add_scalar(f"{prefix}/{key}", value, step)
        for block, tol in enumerate(record.get("tols") or []):
            if tol > 0:
                self.writer.add_scalar(f"{prefix}/log10_tol/block{block}", math.log10(tol), step)
        for block, nfe in enumerate(record.get("nfe_blocks") or []):
            self.writer.add_scalar(f"{prefix}/nfe/block{block}", nfe, step)

    def iteration(self, record: dict) -> None:
        self._append(METRICS, record)
        self._scalars("train", record, record["iteration"])

    def evaluation(self, record: dict) -> None:
        self._append(EVALS, record)
        self._scalars("test", record, record["iteration"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def episode_record(iteration: int, reward: float, info: dict, agent_stats: dict, wall_time: float) -> dict:
    record = {"iteration": iteration, "reward": reward, "wall_time": round(wall_time, 3)}
    record.update({k: info[k] for k in METRIC_KEYS if k in info})
    record.update(agent_stats)
    return record


#: The run directory this process has opened (``None``: none yet), for the message of an interrupt.
_OPENED_RUN_DIR: Path | None = None

#: Flags a resumed run may change (recorded in its ``config.json``); every other flag is fixed
#: by the run's own ``config.json``.
CHANGEABLE_ON_RESUME = frozenset({"iterations", "progress", "resume", "device"})


def resolve_device(flag: str | None, env_kwarg: Any = None) -> str:
    """The device of a run: ``--device``, else ``--env-kwargs device=...``, else CUDA when
    available, else CPU; one ``ValueError`` for an unknown or unavailable device."""
    if flag is not None and env_kwarg is not None and str(env_kwarg) != flag:
        raise ValueError(f"--device {flag} and --env-kwargs device={env_kwarg!r} disagree: give one of them")
    requested = flag if flag is not None else env_kwarg
    if requested is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    return check_device(requested)


class RunInterrupted(Exception):
    """SIGINT or SIGTERM stopped a run after a checkpoint; ``run_cli`` exits with 128 + signal."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum


def check_common_args(args: CommonArgs) -> None:
    """Refuse bad values of the shared flags before anything is created."""
    for name in ("iterations", "eval_every", "checkpoint_every"):
        value = getattr(args, name)
        if value < 0:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 0, got {value}")
    if args.eval_batches is not None and args.eval_batches <= 0:
        raise ValueError(f"--eval-batches must be positive, got {args.eval_batches}")
    if args.resume and args.out:
        raise ValueError("--out names a new run and --resume an existing one: give one of them")
    if not 0 <= args.seed < 2**32:
        raise ValueError(f"--seed must be an integer in [0, 2**32), got {args.seed}")


def resolve_args(args: A, family: str) -> A:
    """The arguments to run with: ``args`` itself, or for ``--resume`` the run's own.

    A resumed run takes its arguments from its ``config.json``. A flag given on this command
    line must equal the run's value, except those in :data:`CHANGEABLE_ON_RESUME` (recorded in
    the config when they change); anything else would silently change the run, so it is
    refused. ``family`` is the CLI (``fixed``, ``reinforce``, ``sb3``): a run of another CLI
    is refused.
    """
    args = dataclasses.replace(args, env=env_id(args.env))
    if not args.resume:
        return args
    saved = read_config(Path(args.resume))
    where, given = repr(args.resume), args.explicit
    if saved["agent"].split("-")[0] != family or ("env" in given and saved["env"] != args.env):
        env = args.env if "env" in given else saved["env"]
        raise CheckpointError(f"--resume {where} is a run of {saved['agent']} on {saved['env']}, "
                              f"not {family} on {env}")
    fields = {f.name for f in dataclasses.fields(args)}
    own = {k: v for k, v in saved["args"].items() if k in fields and k != "explicit"}
    for name in sorted(given - CHANGEABLE_ON_RESUME):
        if name in own and _as_saved(getattr(args, name)) != own[name]:
            flag = "--" + name.replace("_", "-")
            raise CheckpointError(f"--resume {where}: {flag} {_show(getattr(args, name))} differs from the run's "
                                  f"{_show(own[name])}; a resumed run keeps its settings (only --iterations and "
                                  "--progress may change)")
    keep = {name: getattr(args, name) for name in CHANGEABLE_ON_RESUME & given}
    return dataclasses.replace(args, **{**own, **keep, "resume": args.resume, "out": None, "explicit": given})


def _as_saved(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _show(value: Any) -> str:
    return " ".join(map(str, value)) if isinstance(value, list) else str(value)


class Run:
    """Run directory, evaluation and checkpoint policy shared by every agent CLI.

    Constructing a ``Run`` checks every argument, reads a resumed run and builds the env, but
    writes nothing; :meth:`open` (after the agent is built, so its arguments are checked too)
    locks the directory and writes ``config.json``. See :mod:`agents.run_dir` for the rules.
    """

    def __init__(self, agent_name: str, args: CommonArgs, extra_config: dict | None = None):
        check_common_args(args)
        args = dataclasses.replace(args, env=env_id(args.env))
        self.agent_name = agent_name
        self.extra_config = dict(extra_config or {})
        self.resumed: dict | None = None
        self.saved_config: dict | None = None
        self.notes: list[str] = []
        if args.resume:  # ``args`` as resolve_args() gives them
            self.run_dir = Path(args.resume)
            self.saved_config = read_config(self.run_dir)
            if self.saved_config["agent"] != agent_name:
                raise CheckpointError(f"--resume {args.resume!r} is a run of {self.saved_config['agent']}, "
                                      f"not {agent_name}")
            self.env_kwargs = self.saved_config["env_kwargs"]
        else:
            self.env_kwargs = parse_env_kwargs(args.env_kwargs)
            self.env_kwargs.setdefault("seed", args.seed)  # --seed also seeds the flow's initial weights
        self.args = args
        # the device of the env's model and an SB3 policy: --device, else the env kwargs' (which a
        # resumed run's --device replaces), else CUDA when available
        saved_device = None if args.resume and args.device is not None else self.env_kwargs.get("device")
        self.device = device = resolve_device(args.device, saved_device)
        # an env whose config has no device (the frozen benchmark) runs on the CPU
        takes_device = env_has_device(args.env)
        self.env_device = device if takes_device else "cpu"
        on_device = {"device": distributed.local_device(device)} if takes_device else {}
        # validates id and kwargs before any file is written (and before joining a process group)
        self.env = make_env(args.env, {**self.env_kwargs, **on_device})
        if distributed.init_from_env(device):
            self.env.unwrapped.distribute(distributed.rank(), distributed.world_size())
        self.is_main_rank = distributed.is_main()
        if args.resume:
            self.resumed, note = latest_checkpoint(self.run_dir)
            self.notes += [note] if note else []
            done = int(self.resumed["run"]["iteration"]) if self.resumed else 0
            _on_every_rank(lambda: check_metrics(self.run_dir, done), self.is_main_rank)
            if done > args.iterations:
                raise ValueError(f"--resume {args.resume!r}: the run is at iteration {done}; "
                                 f"--iterations {args.iterations} would end it before that")
            if done == args.iterations and (self.run_dir / SUMMARY).exists():
                raise ValueError(f"--resume {args.resume!r}: the run has finished its {done} iterations; "
                                 "pass a larger --iterations to train it further")
        else:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            name = args.out or f"runs/{args.env}__{agent_name}__{args.seed}__{stamp}"
            self.run_dir = Path(distributed.broadcast_object(name))  # rank 0's name (its clock)
            _on_every_rank(lambda: check_new_run_dir(self.run_dir), self.is_main_rank)
        self.iteration = int(self.resumed["run"]["iteration"]) if self.resumed else 0
        self.wall_offset = float(self.resumed["run"]["wall_time"]) if self.resumed else 0.0
        self.logger = RunLogger(self.run_dir, tensorboard=False, enabled=False)  # until open()
        self.lock: DirLock | None = None
        self.stop_signal: int | None = None
        self._previous_handlers: dict[int, Any] = {}
        self._start = time.perf_counter()

    # -------------------------------------------------------------- the run directory
    def open(self) -> None:
        """Lock the run directory and record the run: the first change on disk."""
        _on_every_rank(self._open_dir, self.is_main_rank)
        if self.is_main_rank:
            for note in self.notes:
                print(note, file=sys.stderr)
            verb = "resuming run directory" if self.saved_config is not None else "run directory"
            print(f"{verb}: {self.run_dir} ({self.args.env}, {self.agent_name}, device {self.env_device})",
                  file=sys.stderr, flush=True)
        self.logger = RunLogger(self.run_dir, self.args.tensorboard, enabled=self.is_main_rank,
                                first_step=self.iteration + 1)
        self._handle_signals()
        self._start = time.perf_counter()

    def _open_dir(self) -> None:
        global _OPENED_RUN_DIR
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            _OPENED_RUN_DIR = self.run_dir
        except OSError as err:
            raise RunDirError(f"cannot create run directory {str(self.run_dir)!r}: {err.strerror or err}") from None
        self.lock = DirLock(self.run_dir)
        self.lock.acquire()
        if self.saved_config is None:
            if any(self.run_dir.iterdir()):  # another process wrote here between the check and the lock
                self.lock.release()
                check_new_run_dir(self.run_dir)
            config = {"env": self.args.env, "agent": self.agent_name, "env_kwargs": self.env_kwargs,
                      "args": self._args_record(), "world_size": distributed.world_size(), **self.extra_config}
        else:
            config = dict(self.saved_config)
            if config["args"].get("iterations") != self.args.iterations:
                config.setdefault("resumes", []).append({"at_iteration": self.iteration,
                                                         "iterations": self.args.iterations})
            config["args"] = {**config["args"], "iterations": self.args.iterations}
            for name in (METRICS, EVALS):
                truncate_jsonl(self.run_dir / name, self.iteration)
        write_json(self.run_dir / CONFIG, config)

    def _args_record(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self.args).items() if k != "explicit"}

    def close(self) -> None:
        """Close the logs, release the lock and the signal handlers (idempotent)."""
        self.logger.close()
        if self.lock is not None:
            self.lock.release()
            self.lock = None
        self._restore_signals()

    # -------------------------------------------------------------- signals
    def _handle_signals(self) -> None:
        """SIGINT / SIGTERM finish the current iteration, then the run stops with a checkpoint."""
        if threading.current_thread() is not threading.main_thread():
            return

        def handler(signum: int, frame: Any) -> None:
            if self.stop_signal is not None:  # a second signal: stop now, from the last checkpoint
                raise KeyboardInterrupt
            self.stop_signal = signum
            if self.is_main_rank:
                print(f"\n{signal.Signals(signum).name}: stopping after this iteration "
                      "(again to stop at once, from the last checkpoint)", file=sys.stderr)

        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous_handlers[signum] = signal.signal(signum, handler)

    def _restore_signals(self) -> None:
        for signum, previous in self._previous_handlers.items():
            signal.signal(signum, previous)
        self._previous_handlers = {}

    def should_stop(self) -> bool:
        """Whether a signal asked the run to stop (agreed by all ranks of a multi-process run)."""
        return distributed.any_rank(self.stop_signal is not None)

    def interrupt(self, agent: Agent) -> None:
        """Checkpoint the iterations done so far and raise :class:`RunInterrupted`."""
        signum = self.stop_signal or signal.SIGINT
        self.checkpoint(agent)
        self.close()
        script = f"agents.{self.agent_name.split('-')[0]}"
        raise RunInterrupted(signum, f"stopped at iteration {self.iteration} by {signal.Signals(signum).name}; "
                                     f"continue with: python -m {script} --resume {self.run_dir}")

    # -------------------------------------------------------------- state
    def restore(self, agent: Agent) -> None:
        """Load env and agent from the checkpoint of a resumed run (no-op otherwise)."""
        if self.resumed is None:
            return
        self.env.unwrapped.load_state_dict(self.resumed["env"])
        agent.load_state_dict(self.resumed["agent"])
        if distributed.is_distributed():
            # Each rank's own random state, if the checkpoint was written by as many ranks
            # (otherwise ranks > 0 split theirs off rank 0's again: the run goes on, not bit-exactly).
            ranks = self.resumed.get("ranks") or []
            mine = ranks[distributed.rank()] if len(ranks) == distributed.world_size() else {}
            self.env.unwrapped.load_rank_state_dict(mine.get("env"))
            agent.load_rank_state_dict(mine.get("agent"))

    def checkpoint(self, agent: Agent) -> None:
        state = {"env": self.env.unwrapped.state_dict(), "agent": agent.state_dict(),
                 "run": {"iteration": self.iteration, "wall_time": self.wall_time, "env_id": self.args.env,
                         "agent": self.agent_name, "world_size": distributed.world_size()}}
        if distributed.is_distributed():
            state["ranks"] = self._check_ranks_in_sync(agent)
        if self.is_main_rank:
            save_checkpoint(state, self.run_dir / CHECKPOINT)

    def _check_ranks_in_sync(self, agent: Agent) -> list[dict]:
        """Gather every rank's random state and weight checksum; raise if the weights differ."""
        mine = {"env": self.env.unwrapped.rank_state_dict(), "checksum": self.checksum(agent)}
        agent_state = agent.rank_state_dict()
        if agent_state is not None:
            mine["agent"] = agent_state
        ranks = distributed.gather_objects(mine)
        self.rank_checksums = [r.pop("checksum") for r in ranks]
        if len(set(self.rank_checksums)) != 1:
            raise RuntimeError(f"ranks hold different weights at iteration {self.iteration}: {self.rank_checksums}")
        return ranks

    def checksum(self, agent: Agent) -> str:
        """SHA-256 of the model's and the agent's parameters and buffers."""
        return distributed.checksum(self.env.unwrapped.model, *agent.modules())

    @property
    def wall_time(self) -> float:
        return self.wall_offset + time.perf_counter() - self._start

    @property
    def first_seed(self) -> int | None:
        """Seed for the very first reset of a fresh run; resumed runs keep their RNG state."""
        return self.args.seed if (self.iteration == 0 and self.resumed is None) else None

    # -------------------------------------------------------------- bookkeeping after an episode
    def after_episode(self, reward: float, info: dict, agent: Agent, agent_stats: dict) -> dict:
        self.iteration += 1
        record = episode_record(self.iteration, reward, info, agent_stats, self.wall_time)
        self.logger.iteration(record)
        args = self.args
        if (args.eval_every and self.iteration % args.eval_every == 0 and self.iteration < args.iterations
                and self.is_main_rank):
            self.evaluate(args.eval_batches)
        if args.checkpoint_every and self.iteration % args.checkpoint_every == 0:
            self.checkpoint(agent)
        return record

    def evaluate(self, max_batches: int | None) -> dict:
        """Test metrics at tol 1e-5; a failed solve is recorded (``solver_error``), not fatal."""
        try:
            metrics = self.env.unwrapped.evaluate(split="test", tol=EVAL_TOL, max_batches=max_batches)
        except SolverError as err:
            metrics = {"solver_error": str(err)}
        self.logger.evaluation({"iteration": self.iteration, **metrics})
        return metrics

    def finish(self, agent: Agent) -> dict:
        """Final test metrics, checkpoint and summary.json (rank 0).

        Training envs: a full test evaluation at tol 1e-5. Benchmark envs (tolerance learning in
        isolation): the run's own deterministic policy, read back from the checkpoint as
        ``agents.evaluate`` reads it, scored on the task's held-out test pool.
        """
        benchmark = isinstance(self.env.unwrapped, BenchmarkEnv)
        if self.is_main_rank and self.args.progress:
            what = "the run's policy on the test pool" if benchmark else f"test evaluation at tol {EVAL_TOL:g}"
            print(f"final {what} ({self.iteration} iterations done)", file=sys.stderr, flush=True)
        test = self.evaluate(None) if self.is_main_rank and not benchmark else None
        self.checkpoint(agent)
        if benchmark:
            from agents.evaluate import load_action_policy  # agents.evaluate builds on this module

            test = {"policy": "own, test pool",
                    **self.env.unwrapped.score(load_action_policy(self.run_dir, self.env.unwrapped), "test")}
        if not self.is_main_rank:
            self.close()
            return {"rank": distributed.rank(), "iterations": self.iteration, "checksum": self.checksum(agent)}
        metrics = self.run_dir / METRICS
        records = [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.exists() else []
        done = [r for r in records if "nfe_forward" in r]
        summary = {
            "env": self.args.env, "agent": self.agent_name, "seed": self.args.seed, "iterations": self.iteration,
            "test": test,
            "train_nfe_forward_mean": _mean(r["nfe_forward"] for r in done),
            "train_nfe_backward_mean": _mean(r["nfe_backward"] for r in done),
            "train_nfe_mean": _mean(r["nfe_forward"] + r["nfe_backward"] for r in done),
            # the accuracy term's reference solves: reported apart, not part of train_nfe_mean
            "train_nfe_reference_mean": _mean(r.get("nfe_reference", 0) for r in done),
            "train_loss_last": done[-1].get("loss") if done else None,
            "mean_log10_tol_last": _mean(np.log10(r["tols"]).mean() for r in done[-max(1, len(done) // 10):]),
            "solver_failures": sum(1 for r in records if "solver_error" in r),
            "skipped_updates": sum(1 for r in records if r.get("skipped_update") is True),
            "wall_s": round(self.wall_time, 2),
            "device": self.device, "env_device": self.env_device, "run_dir": str(self.run_dir),
        }
        if distributed.is_distributed():  # checked equal by the final checkpoint
            summary.update(world_size=distributed.world_size(), rank_checksums=self.rank_checksums)
        write_json(self.run_dir / SUMMARY, summary)
        self.close()
        print_summary(summary)
        return summary


def _on_every_rank(check: Callable[[], None], is_main_rank: bool) -> None:
    """Run ``check`` on rank 0 and raise its error on every rank (so no rank waits for the others)."""
    problem: tuple[type, str] | None = None
    if is_main_rank:
        try:
            check()
        except (ValueError, CheckpointError) as err:
            problem = (type(err), str(err))
    problem = distributed.broadcast_object(problem)
    if problem is not None:
        raise problem[0](problem[1])


def _mean(values: Any) -> float | None:
    values = [float(v) for v in values]
    return float(np.mean(values)) if values else None


def print_summary(summary: dict) -> None:
    test = summary["test"]
    names = {"bits_per_dim": "test bits/dim @1e-5", "marginal_bits_per_dim": "test marginal bits/dim",
             "error": "test error", "nfe": "test NFE / episode" if "policy" in test else "test NFE / batch",
             "policy": "test scored with"}
    rows = [("env", summary["env"]), ("agent", summary["agent"]), ("iterations", summary["iterations"])]
    for key, value in test.items():
        if key == "num_samples":
            continue
        shown = (f"{value:.1f}" if key == "nfe" else f"{value:.5g}") if isinstance(value, float) else value
        rows.append((names.get(key, f"test {key}"), shown))
    rows += [
        ("train NFE fwd / iter", _fmt(summary["train_nfe_forward_mean"])),
        ("train NFE bwd / iter", _fmt(summary["train_nfe_backward_mean"])),
        ("reference NFE / iter (apart)", _fmt(summary.get("train_nfe_reference_mean"))),
        ("mean log10 tol (last 10%)", _fmt(summary["mean_log10_tol_last"], 2)),
        ("wall time [s]", summary["wall_s"]),
        ("device", _device_row(summary)),
        ("run directory", summary.get("run_dir", "n/a")),
    ]
    width = max(len(k) for k, _ in rows)
    print("\n" + "\n".join(f"{k:<{width}}  {v}" for k, v in rows))


def _device_row(summary: dict) -> str:
    device, env_device = summary.get("device", "n/a"), summary.get("env_device")
    return device if env_device in (None, device) else f"{device} (environment: {env_device})"


def _fmt(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def run_episodes(run: Run, agent: Agent) -> dict:
    """The loop of episode-driven agents (fixed, REINFORCE): one episode per iteration."""
    from tqdm import tqdm

    env, args = run.env, run.args
    if distributed.is_distributed():
        agent.distribute(distributed.rank(), distributed.world_size())
    run.restore(agent)
    show = args.progress and run.is_main_rank
    bar = tqdm(total=args.iterations, initial=run.iteration, disable=not show, unit="it")
    while run.iteration < args.iterations:
        if run.should_stop():
            bar.close()
            run.interrupt(agent)
        obs, _ = env.reset(seed=run.first_seed)
        total, done = 0.0, False
        info: dict[str, Any] = {}
        while not done:
            obs, reward, terminated, truncated, info = env.step(agent.act(obs))
            agent.observe(reward)
            total += reward
            done = terminated or truncated
        record = run.after_episode(total, info, agent, agent.end_episode())
        bar.update(1)
        bar.set_postfix(nfe=record.get("nfe_forward"), loss=_fmt(record.get("loss"), 3))
    bar.close()
    return run.finish(agent)


def run_agent(agent_name: str, args: CommonArgs, make_agent: Callable[[gym.Env], Agent], extra: dict) -> dict:
    """The whole CLI run of an episode-driven agent: run directory, agent, episodes, summary.

    ``args`` as :func:`resolve_args` gives them.
    """
    run = None
    try:
        run = Run(agent_name, args, extra)
        agent = make_agent(run.env)  # checks the agent's own arguments before anything is written
        run.open()
        return run_episodes(run, agent)
    finally:
        if run is not None:
            run.close()
        distributed.shutdown()


def run_cli(main: Callable[[], Any]) -> None:
    """Run an agent's ``main``; bad input or a bad checkpoint ends with one clear line, exit 2.

    Under torchrun each rank that fails prints its line (ranks > 0 name themselves). A run
    stopped by SIGINT / SIGTERM (:class:`RunInterrupted`) prints how to resume and exits with
    130 / 143; a second Ctrl-C stops at once (exit 130), the last checkpoint intact.
    """
    rank = os.environ.get("RANK", "0") if os.environ.get("WORLD_SIZE", "1") != "1" else "0"
    prefix = f" (rank {rank})" if rank != "0" else ""
    try:
        main()
    except (CheckpointError, ValueError, FileNotFoundError) as err:
        print(f"error{prefix}: {err}", file=sys.stderr)
        sys.exit(2)
    except RunInterrupted as stop:
        if rank == "0":
            print(stop, file=sys.stderr)
        sys.exit(128 + stop.signum)
    except KeyboardInterrupt:
        if _OPENED_RUN_DIR is None:
            print(f"interrupted{prefix} before the run started: no run directory was written", file=sys.stderr)
        else:
            print(f"interrupted{prefix}: stopped without a checkpoint of the current iteration; "
                  f"--resume {_OPENED_RUN_DIR} continues from the last one", file=sys.stderr)
        sys.exit(130)
