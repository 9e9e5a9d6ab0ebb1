"""What every agent CLI shares: run directory, logging, evaluation, checkpoints, resume.

A run directory holds ``config.json`` (the arguments), ``metrics.jsonl`` (one line per flow
training iteration), ``eval.jsonl`` (periodic test metrics at tol 1e-5), TensorBoard event
files, ``checkpoint.pt`` (+ ``checkpoint.pt.prev``) and, at the end, ``summary.json``.

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
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

import infocnf_env  # noqa: F401  (registers the ids)
from agents import distributed
from agents.cli import CommonArgs, parse_env_kwargs
from flows import SolverError
from infocnf_env.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

#: Keys of an episode's final ``info`` copied to ``metrics.jsonl``.
METRIC_KEYS = ("loss", "bits_per_dim", "xent", "error", "nfe_forward", "nfe_backward", "tols", "nfe_blocks",
               "epoch", "lr", "skipped_update", "solver_error", "recon_mse", "kl", "failed_ranks")


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


def make_env(env_id: str, env_kwargs: dict[str, Any]) -> gym.Env:
    """``gymnasium.make`` with one clear error for an unknown id or keyword."""
    if env_id not in gym.registry:
        known = ", ".join(sorted(k for k in gym.registry if k in infocnf_env.ENV_IDS))
        raise ValueError(f"unknown env id {env_id!r}; registered ids: {known}")
    try:
        return gym.make(env_id, **env_kwargs)
    except TypeError as err:
        if "unexpected keyword" in str(err):
            raise ValueError(f"unknown env kwarg for {env_id}: {err}") from None
        raise


class RunLogger:
    """metrics.jsonl, eval.jsonl and TensorBoard scalars of one run."""

    def __init__(self, run_dir: Path, tensorboard: bool, enabled: bool = True):
        self.run_dir = run_dir
        self.enabled = enabled  # False on ranks > 0 of a multi-process run: they write nothing
        self.writer = None
        if tensorboard and enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir))

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

    def iteration(self, record: dict) -> None:
        self._append("metrics.jsonl", record)
        self._scalars("train", record, record["iteration"])

    def evaluation(self, record: dict) -> None:
        self._append("eval.jsonl", record)
        self._scalars("test", record, record["iteration"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def episode_record(iteration: int, reward: float, info: dict, agent_stats: dict, wall_time: float) -> dict:
    record = {"iteration": iteration, "reward": reward, "wall_time": round(wall_time, 3)}
    record.update({k: info[k] for k in METRIC_KEYS if k in info})
    record.update(agent_stats)
    return record


def _iteration_of(line: str) -> int | None:
    try:
        return int(json.loads(line)["iteration"])
    except (ValueError, KeyError, TypeError):  # a line cut short by a killed process
        return None


def _truncate_jsonl(path: Path, last_iteration: int) -> None:
    """Drop lines written after the checkpoint (and a partial last line), so a resumed run
    rewrites them identically."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        iteration = _iteration_of(line)
        if iteration is not None and iteration <= last_iteration:
            keep.append(line)
    tmp = path.with_name(path.name + ".tmp")  # atomic, like the checkpoints: a kill here loses nothing
    tmp.write_text("".join(line + "\n" for line in keep))
    os.replace(tmp, path)


class Run:
    """Run directory, evaluation and checkpoint policy shared by every agent CLI."""

    def __init__(self, agent_name: str, args: CommonArgs, extra_config: dict | None = None):
        if args.iterations < 0:
            raise ValueError(f"--iterations must be >= 0, got {args.iterations}")
        self.agent_name = agent_name
        self.args = args
        self.resumed: dict | None = None
        if args.resume:
            self.run_dir = Path(args.resume)
            config_path = self.run_dir / "config.json"
            if not config_path.exists():
                raise CheckpointError(f"--resume {args.resume!r}: no config.json, not a run directory")
            saved = json.loads(config_path.read_text())
            if saved["env"] != args.env or saved["agent"] != agent_name:
                raise CheckpointError(
                    f"--resume {args.resume!r} is a run of {saved['agent']} on {saved['env']}, "
                    f"not {agent_name} on {args.env}"
                )
            self.env_kwargs = saved["env_kwargs"]
            self.resumed = load_checkpoint(self.run_dir / "checkpoint.pt")
        else:
            self.env_kwargs = parse_env_kwargs(args.env_kwargs)
            self.env_kwargs.setdefault("seed", args.seed)  # --seed also seeds the flow's initial weights
        device = str(self.env_kwargs.get("device", "cpu"))
        # validates id and kwargs before any file is written (and before joining a process group)
        self.env = make_env(args.env, {**self.env_kwargs, **({"device": distributed.local_device(device)}
                                                              if "device" in self.env_kwargs else {})})
        if distributed.init_from_env(device):
            self.env.unwrapped.distribute(distributed.rank(), distributed.world_size())
        self.is_main_rank = distributed.is_main()
        if not args.resume:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            run_dir = args.out or f"runs/{args.env}__{agent_name}__{args.seed}__{stamp}"
            self.run_dir = Path(distributed.broadcast_object(run_dir))  # rank 0's name (its clock)
            if self.is_main_rank:
                self.run_dir.mkdir(parents=True, exist_ok=True)
                config = {"env": args.env, "agent": agent_name, "env_kwargs": self.env_kwargs,
                          "args": dataclasses.asdict(args), "world_size": distributed.world_size(),
                          **(extra_config or {})}
                (self.run_dir / "config.json").write_text(json.dumps(config, indent=2, default=str))
        self.logger = RunLogger(self.run_dir, args.tensorboard, enabled=self.is_main_rank)
        self.iteration = 0
        self.wall_offset = 0.0
        self._start = time.perf_counter()

    # -------------------------------------------------------------- state
    def restore(self, agent: Agent) -> None:
        """Load env and agent from the checkpoint of a resumed run (no-op otherwise)."""
        if self.resumed is None:
            return
        self.env.unwrapped.load_state_dict(self.resumed["env"])
        agent.load_state_dict(self.resumed["agent"])
        run = self.resumed["run"]
        self.iteration = int(run["iteration"])
        self.wall_offset = float(run["wall_time"])
        if distributed.is_distributed():
            # Each rank's own random state, if the checkpoint was written by as many ranks
            # (otherwise ranks > 0 split theirs off rank 0's again: the run goes on, not bit-exactly).
            ranks = self.resumed.get("ranks") or []
            mine = ranks[distributed.rank()] if len(ranks) == distributed.world_size() else {}
            self.env.unwrapped.load_rank_state_dict(mine.get("env"))
            agent.load_rank_state_dict(mine.get("agent"))
        if self.is_main_rank:
            for name in ("metrics.jsonl", "eval.jsonl"):
                _truncate_jsonl(self.run_dir / name, self.iteration)

    def checkpoint(self, agent: Agent) -> None:
        state = {"env": self.env.unwrapped.state_dict(), "agent": agent.state_dict(),
                 "run": {"iteration": self.iteration, "wall_time": self.wall_time, "env_id": self.args.env,
                         "agent": self.agent_name, "world_size": distributed.world_size()}}
        if distributed.is_distributed():
            state["ranks"] = self._check_ranks_in_sync(agent)
        if self.is_main_rank:
            save_checkpoint(state, self.run_dir / "checkpoint.pt")

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
            metrics = self.env.unwrapped.evaluate(split="test", tol=1e-5, max_batches=max_batches)
        except SolverError as err:
            metrics = {"solver_error": str(err)}
        self.logger.evaluation({"iteration": self.iteration, **metrics})
        return metrics

    def finish(self, agent: Agent) -> dict:
        """Final full test evaluation at tol 1e-5, checkpoint and summary.json (rank 0)."""
        test = self.evaluate(None) if self.is_main_rank else None
        self.checkpoint(agent)
        if not self.is_main_rank:
            return {"rank": distributed.rank(), "iterations": self.iteration, "checksum": self.checksum(agent)}
        records = [json.loads(line) for line in (self.run_dir / "metrics.jsonl").read_text().splitlines()] \
            if (self.run_dir / "metrics.jsonl").exists() else []
        done = [r for r in records if "nfe_forward" in r]
        summary = {
            "env": self.args.env, "agent": self.agent_name, "seed": self.args.seed, "iterations": self.iteration,
            "test": test,
            "train_nfe_forward_mean": _mean(r["nfe_forward"] for r in done),
            "train_nfe_backward_mean": _mean(r["nfe_backward"] for r in done),
            "train_nfe_mean": _mean(r["nfe_forward"] + r["nfe_backward"] for r in done),
            "train_loss_last": done[-1]["loss"] if done else None,
            "mean_log10_tol_last": _mean(np.log10(r["tols"]).mean() for r in done[-max(1, len(done) // 10):]),
            "solver_failures": sum(1 for r in records if "solver_error" in r),
            "skipped_updates": sum(1 for r in records if r.get("skipped_update") is True),
            "wall_s": round(self.wall_time, 2),
        }
        if distributed.is_distributed():  # checked equal by the final checkpoint
            summary.update(world_size=distributed.world_size(), rank_checksums=self.rank_checksums)
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        self.logger.close()
        print_summary(summary)
        return summary


def _mean(values: Any) -> float | None:
    values = [float(v) for v in values]
    return float(np.mean(values)) if values else None


def print_summary(summary: dict) -> None:
    test = summary["test"]
    names = {"bits_per_dim": "test bits/dim @1e-5", "marginal_bits_per_dim": "test marginal bits/dim",
             "error": "test error", "nfe": "test NFE / batch"}
    rows = [("env", summary["env"]), ("agent", summary["agent"]), ("iterations", summary["iterations"])]
    for key, value in test.items():
        if key == "num_samples":
            continue
        shown = f"{value:.{1 if key == 'nfe' else 4}f}" if isinstance(value, float) else value
        rows.append((names.get(key, f"test {key}"), shown))
    rows += [
        ("train NFE fwd / iter", _fmt(summary["train_nfe_forward_mean"])),
        ("train NFE bwd / iter", _fmt(summary["train_nfe_backward_mean"])),
        ("mean log10 tol (last 10%)", _fmt(summary["mean_log10_tol_last"], 2)),
        ("wall time [s]", summary["wall_s"]),
    ]
    width = max(len(k) for k, _ in rows)
    print("\n" + "\n".join(f"{k:<{width}}  {v}" for k, v in rows))


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
        obs, _ = env.reset(seed=run.first_seed)
        total, done, info = 0.0, False, {}
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
    """The whole CLI run of an episode-driven agent: run directory, agent, episodes, summary."""
    try:
        run = Run(agent_name, args, extra)
        return run_episodes(run, make_agent(run.env))
    finally:
        distributed.shutdown()


def run_cli(main: Callable[[], Any]) -> None:
    """Run an agent's ``main``; bad input or a bad checkpoint ends with one clear line, exit 2.

    Under torchrun each rank that fails prints its line (ranks > 0 name themselves).
    """
    try:
        main()
    except (CheckpointError, ValueError, FileNotFoundError) as err:
        rank = os.environ.get("RANK", "0") if os.environ.get("WORLD_SIZE", "1") != "1" else "0"
        print(f"error{f' (rank {rank})' if rank != '0' else ''}: {err}", file=sys.stderr)
        sys.exit(2)
