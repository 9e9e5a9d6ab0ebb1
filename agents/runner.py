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
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, cast, runtime_checkable

import numpy as np

import infocnf_env  # noqa: F401  (registers the ids)
from agents import distributed
from agents.base import Agent
from agents.cli import RUNS_ROOT, CommonArgs, parse_env_kwargs
from agents.envs import check_env_id, env_has_device, make_env, resolve_device
from agents.run_dir import (
    CHECKPOINT,
    CONFIG,
    EVALS,
    METRICS,
    SUMMARY,
    DirLock,
    RunDirError,
    check_common_args,
    check_metrics,
    check_new_run_dir,
    latest_checkpoint,
    read_config,
    truncate_jsonl,
    write_json,
)
from agents.run_log import RunLogger, episode_record, mean_or_none, print_summary
from flows import EVAL_TOL, SolverError
from infocnf_env import default_threads
from infocnf_env.benchmark import BenchmarkEnv
from infocnf_env.cache import on_first_use
from infocnf_env.checkpoint import CheckpointError, save_checkpoint
from infocnf_env.threads import set_threads

#: The run directory this process has opened (``None``: none yet), for the message of an interrupt.
_OPENED_RUN_DIR: Path | None = None


def opened_run_dir() -> Path | None:
    """The run directory this process has opened, if any (what an interrupt may point to)."""
    return _OPENED_RUN_DIR

@runtime_checkable
class RunnableEnv(Protocol):
    """What a run needs from ``env.unwrapped`` (docs/design.md, "The environment contracts"):
    the training-step env and the benchmark envs provide it."""

    num_blocks: int

    def evaluate(self, split: str = ..., tol: float = ..., max_batches: int | None = ...) -> dict[str, Any]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def rank_state_dict(self) -> dict[str, Any] | None: ...

    def load_rank_state_dict(self, state: dict[str, Any] | None) -> None: ...

    def distribute(self, rank: int, world_size: int) -> None: ...


class RunInterrupted(Exception):
    """SIGINT or SIGTERM stopped a run after a checkpoint; ``run_cli`` exits with 128 + signal."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum


class Run:
    """Run directory, evaluation and checkpoint policy shared by every agent CLI.

    Constructing a ``Run`` checks every argument, sets the CPU threads (``--threads``), reads
    a resumed run and builds the env; :meth:`open` (after the agent is built, so its arguments
    are checked too) locks the directory and writes ``config.json``. Nothing is written for
    bad arguments: they fail before the env's first-use work.

    An env that has first-use work to do (a benchmark env building its cache: frozen flows,
    reference solves; ``infocnf_env.cache.on_first_use``) opens a new run's directory first,
    single process, so that the user sees where the run goes before minutes of work; if the
    run then fails or is interrupted before it starts, the directory is removed again
    (:meth:`close`), and the cached work is kept. See :mod:`agents.run_dir` for the rules.
    """

    def __init__(self, agent_name: str, args: CommonArgs, extra_config: dict | None = None):
        check_common_args(args)
        args = dataclasses.replace(args, env=check_env_id(args.env))
        self.agent_name = agent_name
        self.extra_config = dict(extra_config or {})
        self.resumed: dict | None = None
        self.saved_config: dict | None = None
        self.notes: list[str] = []
        self.lock: DirLock | None = None
        self.logger = RunLogger(Path("."), tensorboard=False, enabled=False)  # until open()
        self._opened = self._started = self._announced = False
        self._created: list[Path] = []  # folders this run created (removed if it never starts)
        self.stop_signal: int | None = None
        self._previous_handlers: dict[int, Any] = {}
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
        # the device of the env's model and an SB3 policy: --device, else the env kwargs' (which a
        # resumed run's --device replaces), else CUDA when available
        saved_device = None if args.resume and args.device is not None else self.env_kwargs.get("device")
        self.device = device = resolve_device(args.device, saved_device)
        # the CPU threads, set before anything is built (infocnf_env.threads: the rule and why)
        self.threads = args.threads or default_threads(args.env)
        self.args = args = dataclasses.replace(args, threads=self.threads)
        set_threads(self.threads)
        # an env whose config has no device (the frozen benchmark) runs on the CPU
        takes_device = env_has_device(args.env)
        self.env_device = device if takes_device else "cpu"
        on_device = {"device": distributed.local_device(device)} if takes_device else {}
        self.single_process = distributed.env_world_size() <= 1
        if not args.resume and self.single_process:  # the name is rank 0's under torchrun (below)
            self.run_dir = Path(args.out or self._default_name())
            check_new_run_dir(self.run_dir)
        try:
            # validates id and kwargs before any file is written (and before joining a process group)
            with on_first_use(self._before_first_use):
                self.env = make_env(args.env, {**self.env_kwargs, **on_device})
            self._set_up(device)
        except BaseException:
            self.close()
            raise
        self._start = time.perf_counter()

    def _default_name(self) -> str:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        return f"{RUNS_ROOT}/{self.args.env}__{self.agent_name}__{self.args.seed}__{stamp}"

    def _set_up(self, device: str) -> None:
        """After the env is built: the process group, a resumed run's checkpoint, a new run's name."""
        args = self.args
        if not isinstance(self.env.unwrapped, RunnableEnv):
            raise ValueError(f"{args.env} is not an environment of this project: its env lacks what a run needs "
                             "(evaluate, state_dict, load_state_dict, distribute, ...; docs/design.md)")
        if distributed.init_from_env(device):
            self.task_env.distribute(distributed.rank(), distributed.world_size())
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
        elif not self.single_process:
            name = args.out or self._default_name()
            self.run_dir = Path(distributed.broadcast_object(name))  # rank 0's name (its clock)
            _on_every_rank(lambda: check_new_run_dir(self.run_dir), self.is_main_rank)
        self.iteration = int(self.resumed["run"]["iteration"]) if self.resumed else 0
        self.wall_offset = float(self.resumed["run"]["wall_time"]) if self.resumed else 0.0

    def _before_first_use(self) -> None:
        """The env is about to build a cache entry (minutes, maybe): a new run's directory is
        opened now and a resumed one named, so the user sees where the run goes."""
        if self._announced or not self.single_process:
            return
        self._announced = True
        if self.saved_config is None:
            self._open_dir()
        self._announce()
        print("first use of this env: building its cached artefacts first (progress below)", file=sys.stderr,
              flush=True)

    def _announce(self) -> None:
        verb = "resuming run directory" if self.saved_config is not None else "run directory"
        threads = f"{self.threads} thread{'s' if self.threads != 1 else ''}"
        print(f"{verb}: {self.run_dir} ({self.args.env}, {self.agent_name}, device {self.env_device}, {threads})",
              file=sys.stderr, flush=True)

    # -------------------------------------------------------------- the run directory
    def open(self) -> None:
        """Lock the run directory and record the run (unless the env's first use did it already)."""
        if self.saved_config is not None or not self._opened:
            _on_every_rank(self._open_dir, self.is_main_rank)
        if self.is_main_rank:
            for note in self.notes:
                print(note, file=sys.stderr)
            if not self._announced:
                self._announce()
        self._started = True
        self.logger = RunLogger(self.run_dir, self.args.tensorboard, enabled=self.is_main_rank,
                                first_step=self.iteration + 1)
        self._handle_signals()
        self._start = time.perf_counter()

    def _open_dir(self) -> None:
        global _OPENED_RUN_DIR
        if self.saved_config is None and not self._opened:
            ancestor = self.run_dir
            while not ancestor.exists():
                self._created.append(ancestor)
                ancestor = ancestor.parent
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            _OPENED_RUN_DIR = self.run_dir
        except OSError as err:
            raise RunDirError(f"cannot create run directory {str(self.run_dir)!r}: {err.strerror or err}") from None
        self.lock = DirLock(self.run_dir)
        self.lock.acquire()
        self._opened = True
        if self.saved_config is None:
            if any(self.run_dir.iterdir()):
                # another process wrote here between the check and the lock
                self.lock.release()
                self.lock = None
                check_new_run_dir(self.run_dir)
            config = {"env": self.args.env, "agent": self.agent_name, "env_kwargs": self.env_kwargs,
                      "args": self._args_record(), "world_size": distributed.world_size(), **self.extra_config}
        else:
            config = dict(self.saved_config)
            if config["args"].get("iterations") != self.args.iterations:
                config.setdefault("resumes", []).append({"at_iteration": self.iteration,
                                                         "iterations": self.args.iterations})
            config["args"] = {**config["args"], "iterations": self.args.iterations, "threads": self.threads}
            for name in (METRICS, EVALS):
                truncate_jsonl(self.run_dir / name, self.iteration)
        write_json(self.run_dir / CONFIG, config)

    def _discard(self) -> None:
        """Remove what a new run wrote before it started (its config.json and the folders it made)."""
        global _OPENED_RUN_DIR
        if not self._opened or self._started or self.saved_config is not None:
            return
        (self.run_dir / CONFIG).unlink(missing_ok=True)
        for folder in self._created:  # innermost first
            try:
                folder.rmdir()
            except OSError:  # not empty: something else is there now, keep it
                break
        self._opened = False
        if _OPENED_RUN_DIR == self.run_dir:
            _OPENED_RUN_DIR = None

    def _args_record(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self.args).items() if k != "explicit"}

    def close(self) -> None:
        """Close the logs, release the lock and the signal handlers (idempotent); a new run
        directory opened before the run started (first use) is removed again."""
        self.logger.close()
        self._discard()
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
        self.task_env.load_state_dict(self.resumed["env"])
        agent.load_state_dict(self.resumed["agent"])
        if distributed.is_distributed():
            # Each rank's own random state, if the checkpoint was written by as many ranks
            # (otherwise ranks > 0 split theirs off rank 0's again: the run goes on, not bit-exactly).
            ranks = self.resumed.get("ranks") or []
            mine = ranks[distributed.rank()] if len(ranks) == distributed.world_size() else {}
            self.task_env.load_rank_state_dict(mine.get("env"))
            agent.load_rank_state_dict(mine.get("agent"))

    def checkpoint(self, agent: Agent) -> None:
        state: dict[str, Any] = {"env": self.task_env.state_dict(), "agent": agent.state_dict(),
                                 "run": {"iteration": self.iteration, "wall_time": self.wall_time,
                                         "env_id": self.args.env, "agent": self.agent_name,
                                         "world_size": distributed.world_size()}}
        if distributed.is_distributed():
            state["ranks"] = self._check_ranks_in_sync(agent)
        if self.is_main_rank:
            save_checkpoint(state, self.run_dir / CHECKPOINT)

    def _check_ranks_in_sync(self, agent: Agent) -> list[dict]:
        """Gather every rank's random state and weight checksum; raise if the weights differ."""
        mine = {"env": self.task_env.rank_state_dict(), "checksum": self.checksum(agent)}
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
        model = getattr(self.task_env, "model", None)  # a trained model, where the env holds one
        return distributed.checksum(*([model] if model is not None else []), *agent.modules())

    @property
    def task_env(self) -> RunnableEnv:
        """The unwrapped env, as a run uses it."""
        return cast(RunnableEnv, self.env.unwrapped)

    @property
    def wall_time(self) -> float:
        return self.wall_offset + time.perf_counter() - self._start

    @property
    def first_seed(self) -> int | None:
        """Seed for the very first reset of a fresh run; resumed runs keep their RNG state."""
        return self.args.seed if (self.iteration == 0 and self.resumed is None) else None

    # -------------------------------------------------------------- bookkeeping after an episode
    def after_episode(self, reward: float, info: dict, agent: Agent, agent_stats: dict) -> dict:
        """Log a finished episode (one iteration); evaluate and checkpoint on their schedules."""
        return self.after_episodes([reward], [info], agent, agent_stats)[0]

    def after_episodes(self, rewards: list[float], infos: list[dict], agent: Agent, agent_stats: dict) -> list[dict]:
        """Log episodes that ended together (one agent update from all of them), one iteration
        each; then evaluate and checkpoint once if the batch reached a multiple of
        ``--eval-every`` / ``--checkpoint-every``, so a checkpoint never splits a batch."""
        args, start = self.args, self.iteration
        records = []
        for reward, info in zip(rewards, infos, strict=True):
            self.iteration += 1
            records.append(episode_record(self.iteration, reward, info, agent_stats, self.wall_time))
            self.logger.iteration(records[-1])

        def reached(every: int) -> bool:
            return bool(every) and self.iteration // every > start // every

        if reached(args.eval_every) and self.iteration < args.iterations and self.is_main_rank:
            self.evaluate(args.eval_batches)
        if reached(args.checkpoint_every):
            self.checkpoint(agent)
        return records

    def evaluate(self, max_batches: int | None) -> dict:
        """Test metrics at tol 1e-5; a failed solve is recorded (``solver_error``), not fatal."""
        try:
            metrics = self.task_env.evaluate(split="test", tol=EVAL_TOL, max_batches=max_batches)
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
        env = self.env.unwrapped
        benchmark = isinstance(env, BenchmarkEnv)
        if self.is_main_rank and self.args.progress:
            what = "the run's policy on the test pool" if benchmark else f"test evaluation at tol {EVAL_TOL:g}"
            print(f"final {what} ({self.iteration} iterations done)", file=sys.stderr, flush=True)
        test = self.evaluate(None) if self.is_main_rank and not benchmark else None
        self.checkpoint(agent)
        if isinstance(env, BenchmarkEnv):
            test = {"policy": "own, test pool", **env.score(type(agent).saved_policy(self.run_dir, env), "test")}
        if not self.is_main_rank:
            self.close()
            return {"rank": distributed.rank(), "iterations": self.iteration, "checksum": self.checksum(agent)}
        metrics = self.run_dir / METRICS
        records = [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.exists() else []
        done = [r for r in records if "nfe_forward" in r]
        summary = {
            "env": self.args.env, "agent": self.agent_name, "seed": self.args.seed, "iterations": self.iteration,
            "test": test,
            "train_nfe_forward_mean": mean_or_none(r["nfe_forward"] for r in done),
            # an iteration without a backward pass (a benchmark episode) may not record one
            "train_nfe_backward_mean": mean_or_none(r.get("nfe_backward", 0) for r in done),
            "train_nfe_mean": mean_or_none(r["nfe_forward"] + r.get("nfe_backward", 0) for r in done),
            # the accuracy term's reference solves: reported apart, not part of train_nfe_mean
            "train_nfe_reference_mean": mean_or_none(r.get("nfe_reference", 0) for r in done),
            "train_loss_last": done[-1].get("loss") if done else None,
            # over the last tenth of the iterations that solved every block (a failed one has no tols)
            "mean_log10_tol_last": mean_or_none(np.log10(r["tols"]).mean()
                                                for r in done[-max(1, len(done) // 10):] if r.get("tols")),
            "solver_failures": sum(1 for r in records if "solver_error" in r),
            "skipped_updates": sum(1 for r in records if r.get("skipped_update") is True),
            "wall_s": round(self.wall_time, 2),
            "device": self.device, "env_device": self.env_device, "threads": self.threads,
            "run_dir": str(self.run_dir),
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
