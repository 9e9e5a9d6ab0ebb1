"""The loop of an agent CLI: episodes, the whole run, and the command-line entry with its clean exits."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import gymnasium as gym
import numpy as np

from agents import distributed
from agents.base import Agent
from agents.cli import CommonArgs
from agents.run_log import fmt
from agents.runner import Run, RunInterrupted, opened_run_dir
from infocnf_env.checkpoint import CheckpointError


def _until_done(run: Run, agent: Any) -> Iterator[Any]:
    """The progress bar, once per batch of episodes until ``--iterations`` are logged; a stop
    signal between batches ends the run with a checkpoint (:meth:`Run.interrupt`)."""
    from tqdm import tqdm

    show = run.args.progress and run.is_main_rank
    bar = tqdm(total=run.args.iterations, initial=run.iteration, disable=not show, unit="it")
    while run.iteration < run.args.iterations:
        if run.should_stop():
            bar.close()
            run.interrupt(agent)
        yield bar
    bar.close()


def run_episodes(run: Run, agent: Agent) -> dict:
    """The loop of episode-driven agents (fixed, REINFORCE): one episode per iteration."""
    env = run.env
    if distributed.is_distributed():
        agent.distribute(distributed.rank(), distributed.world_size())
    run.restore(agent)
    for bar in _until_done(run, agent):
        obs, _ = env.reset(seed=run.first_seed)
        total, done = 0.0, False
        info: dict[str, Any] = {}
        while not done:
            obs, step_reward, terminated, truncated, info = env.step(agent.act(obs))
            reward = float(step_reward)  # Gymnasium types it SupportsFloat
            agent.observe(reward)
            total += reward
            done = terminated or truncated
        record = run.after_episode(total, info, agent, agent.end_episode())
        bar.update(1)
        bar.set_postfix(nfe=record.get("nfe_forward"), loss=fmt(record.get("loss"), 3))
    return run.finish(agent)


def check_vector_run(env: gym.Env, env_id: str, num_envs: int) -> None:
    """Refuse ``--n-envs N > 1`` where episodes do not batch: a training env, or a run under torchrun."""
    from infocnf_env.benchmark import BenchmarkEnv

    if not isinstance(env.unwrapped, BenchmarkEnv):
        raise ValueError(f"--n-envs {num_envs} needs a benchmark task (ODE or frozen-flow id), whose episodes "
                         f"batch; {env_id} is a training env: use --n-envs 1")
    if distributed.env_world_size() > 1:
        raise ValueError(f"--n-envs {num_envs} runs in one process; under torchrun use --n-envs 1")


def run_vector_episodes(run: Run, agent: Any, num_envs: int) -> dict:
    """The loop of REINFORCE on a benchmark task's native vector env (``--n-envs N``): N episodes
    started together, each step of all N one batched solve, one update from the N episodes
    (``agent.end_episodes``), N iterations logged. ``agent`` acts and observes per sub-env
    (``act(obs, slot)``, ``observe(reward, slot)``). A sub-env whose episode a failed solve
    ended early waits for the others (its autoreset episode is not played for the update).
    Each batch starts with a reset of every sub-env, so a run resumed from a checkpoint (written
    only between batches, :meth:`Run.after_episodes`) draws the episodes the uninterrupted run
    draws; with ``--iterations`` not a multiple of N the last batch's surplus episodes update the
    agent but are not logged."""
    from infocnf_env.benchmark import BenchmarkEnv
    from infocnf_env.vector import BenchmarkVectorEnv, sub_env_info

    env, args = run.env, run.args
    check_vector_run(env, args.env, num_envs)
    task = env.unwrapped
    assert isinstance(task, BenchmarkEnv)  # check_vector_run refused every other env
    venv = BenchmarkVectorEnv.around(task, num_envs)
    agent.vector = venv  # its sub-envs' generators go into the agent's checkpoint
    run.restore(agent)
    space = venv.single_action_space
    assert isinstance(space, gym.spaces.Box)
    idle = (space.low + space.high) / 2  # the action of a sub-env whose episode ended early
    for bar in _until_done(run, agent):
        obs, _ = venv.reset(seed=run.first_seed)
        totals = np.zeros(num_envs)
        finals: list[dict[str, Any]] = [{} for _ in range(num_envs)]
        live = np.ones(num_envs, dtype=bool)
        while live.any():
            actions = np.stack([agent.act(obs[i], slot=i) if live[i] else idle for i in range(num_envs)])
            obs, rewards, terminated, truncated, infos = venv.step(actions)
            for i in np.flatnonzero(live):
                agent.observe(float(rewards[i]), slot=i)
                totals[i] += float(rewards[i])
            for i in np.flatnonzero(live & (terminated | truncated)):
                finals[i] = sub_env_info(infos["final_info"], int(i))
            live &= ~(terminated | truncated)
        stats = agent.end_episodes(range(num_envs))
        count = min(num_envs, args.iterations - run.iteration)
        records = run.after_episodes([float(t) for t in totals[:count]], finals[:count], agent, stats)
        bar.update(count)
        bar.set_postfix(nfe=records[-1].get("nfe_forward"))
    return run.finish(agent)


def run_agent(agent_name: str, args: CommonArgs, make_agent: Callable[[gym.Env], Agent], extra: dict) -> dict:
    """The whole CLI run of an episode-driven agent: run directory, agent, episodes, summary.

    ``args`` as :func:`resolve_args` gives them.
    """
    run = None
    try:
        run = Run(agent_name, args, extra)
        agent = make_agent(run.env)  # checks the agent's own arguments before anything is written
        num_envs = getattr(args, "n_envs", 1)
        if num_envs > 1:
            check_vector_run(run.env, args.env, num_envs)
        run.open()
        return run_vector_episodes(run, agent, num_envs) if num_envs > 1 else run_episodes(run, agent)
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
    except distributed.SingleProcessOnly as err:
        # one line, from rank 0 only, and the exit status of bad input: torchrun then adds its own
        # report of the failed workers (ChildFailedError), which a status of 0 would avoid only by
        # telling the caller that a refused run succeeded
        if rank == "0":
            print(f"error: {err}", file=sys.stderr)
        else:  # let rank 0 fail first: torchrun stops the other workers at the first failure
            time.sleep(10)
        sys.exit(2)
    except (CheckpointError, ValueError, FileNotFoundError) as err:
        print(f"error{prefix}: {err}", file=sys.stderr)
        sys.exit(2)
    except RunInterrupted as stop:
        if rank == "0":
            print(stop, file=sys.stderr)
        sys.exit(128 + stop.signum)
    except KeyboardInterrupt:
        if opened_run_dir() is None:
            print(f"interrupted{prefix} before the run started: no run directory was kept (an env's cached "
                  "first-use work is kept, and a frozen flow's training goes on from its last partial checkpoint)",
                  file=sys.stderr)
        else:
            print(f"interrupted{prefix}: stopped without a checkpoint of the current iteration; "
                  f"--resume {opened_run_dir()} continues from the last one", file=sys.stderr)
        sys.exit(130)
