"""stable-baselines3 algorithms as the tolerance policy.

    python -m agents.sb3 --algo ppo --env InfoCNF-Digits-v0
    python -m agents.sb3 --algo sac --env InfoCNF-Digits-v0 --env-kwargs alpha=0.1
    python -m agents.sb3 --algo a2c --env InfoCNF-Digits-v0 --algo-kwargs n_steps=24 ent_coef=0.01

The environment is wrapped only by gymnasium's ``RescaleAction``, so the algorithm acts in
[-1, 1] (SB3's recommendation) while the environment receives log10(tol) in its bounds.
SB3 drives the loop itself; a callback turns every finished episode into a line of
``metrics.jsonl`` and triggers evaluations and checkpoints. SB3 agents run in one process.

Checkpoints: ``checkpoint.pt`` holds the environment's state like every agent's, plus the SB3
model as SB3's own ``save`` writes it (and, for off-policy algorithms, its replay buffer) and
the random states SB3 samples from; ``sb3_model.zip`` beside it is the same model for SB3's
own tools. The SB3 parts are pickled formats that SB3 loads: resume only run directories you
trust.

Resume is not bit-exact for SB3 agents (``fixed`` and ``reinforce`` are): SB3's ``learn``
loop keeps state between episodes that its ``save`` does not hold, the on-policy algorithms'
partly collected rollout and the observation it will act on next, so a resumed run drops the
partial rollout and starts a new episode where the interrupted run had one pending. It goes
on from the saved policy, optimiser, replay buffer, counters and random states, with the
same environment stream, so it does not repeat the episodes it already ran.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.wrappers import RescaleAction
from stable_baselines3.common.logger import Logger
from tqdm import tqdm

from agents import distributed
from agents.cli import CommonArgs, arg, parse_args, parse_kwargs
from agents.runner import Agent, Run, resolve_args, run_cli

ALGOS = ("ppo", "sac", "a2c", "td3")
#: The latest checkpoint's SB3 model as SB3's own ``save`` writes it, beside ``checkpoint.pt``.
EXPORT = "sb3_model.zip"


def algo_class(name: str) -> Any:
    import stable_baselines3 as sb3

    classes = {"ppo": sb3.PPO, "sac": sb3.SAC, "a2c": sb3.A2C, "td3": sb3.TD3}
    if name not in classes:
        raise ValueError(f"unknown algorithm {name!r}; valid: {', '.join(ALGOS)}")
    return classes[name]


def default_algo_kwargs(name: str, num_blocks: int, log_std_init: float = 0.0) -> dict[str, Any]:
    """Hyperparameters sized for short episodes (N steps each) and a few hundred episodes.

    ``log_std_init`` is the on-policy algorithms' initial log std in the rescaled [-1, 1] action
    space (see :func:`on_policy_log_std`).
    """
    if name == "ppo":
        n_steps = max(8, 16 * num_blocks)
        return {"n_steps": n_steps, "batch_size": n_steps, "n_epochs": 5, "learning_rate": 3e-4,
                "policy_kwargs": {"log_std_init": log_std_init}}
    if name == "a2c":
        # 4 episodes per update with advantages normalised per update: single-episode updates on
        # raw returns (tens of NFE per episode) are too noisy to move the tolerance reliably.
        return {"n_steps": 4 * num_blocks, "normalize_advantage": True, "policy_kwargs": {"log_std_init": log_std_init}}
    return {"learning_starts": 4 * num_blocks, "batch_size": 64, "train_freq": 1, "gradient_steps": 1}


def on_policy_log_std(init_std: float, tol_bounds: tuple[float, float]) -> float:
    """SB3's ``log_std_init`` for a Gaussian policy whose spread is ``init_std`` decades of tolerance.

    The algorithm acts in [-1, 1], mapped linearly onto ``tol_bounds`` (log10 tol), so one unit
    of action is half the bounds' width. SB3's default, log std 0, is thus 3 decades over the
    default bounds (-8, -2): a third of the sampled actions are clipped to a bound, and the
    tight ones cost several times the NFE of the evaluation tolerance 1e-5.
    """
    if not init_std > 0:
        raise ValueError(f"init_std must be > 0 decades, got {init_std}")
    low, high = tol_bounds
    return math.log(init_std / ((high - low) / 2))


def algo_overrides(cls: Any, pairs: list[str]) -> dict[str, Any]:
    """``--algo-kwargs`` as constructor arguments of ``cls``, checked before any file is written."""
    import inspect

    overrides = parse_kwargs(pairs, "algo kwarg")
    # set by this CLI: policy and env, seed (--seed), device (the policies are small MLPs: CPU)
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "policy", "env", "seed", "device", "verbose"}
    unknown = sorted(set(overrides) - accepted)
    if unknown:
        raise ValueError(f"{cls.__name__} has no argument {', '.join(unknown)}; valid: {', '.join(sorted(accepted))}")
    if not isinstance(overrides.get("policy_kwargs", {}), dict):
        raise ValueError(f"policy_kwargs must be a dict literal, got {overrides['policy_kwargs']!r}")
    return overrides


class SB3Agent(Agent):
    """Wraps the SB3 model, which drives the env itself.

    Its checkpoint holds the algorithm as SB3 saves it (``model.save``: policy, optimiser,
    counters; the replay buffer for off-policy algorithms), as bytes, and the random states SB3
    samples from (torch, numpy, Python, the action space's), so a resumed run does not restart
    its sampling from the first seed. Not bit-exact: see :func:`main`.
    """

    def __init__(self, model: Any, off_policy: bool, export_dir: Path | None = None):
        self.model = model
        self.off_policy = off_policy
        self.export_dir = export_dir

    def state_dict(self) -> dict:
        model = _to_bytes(self.model.save)
        if self.export_dir is not None:  # the policy as SB3's own file, for SB3 tools and agents.evaluate
            tmp = self.export_dir / (EXPORT + ".tmp")
            tmp.write_bytes(model.numpy().tobytes())
            os.replace(tmp, self.export_dir / EXPORT)
        state = {"model": model, "num_timesteps": int(self.model.num_timesteps), "rng": _rng_state(self.model)}
        if self.off_policy:
            state["replay_buffer"] = _to_bytes(self.model.save_replay_buffer)
        return state

    def load_state_dict(self, state: dict) -> None:
        cls = type(self.model)
        env = self.model.get_env()
        logger = self.model.logger
        self.model = cls.load(io.BytesIO(state["model"].numpy().tobytes()), env=env, device="cpu")
        self.model.set_logger(logger)
        if self.off_policy:
            self.model.load_replay_buffer(io.BytesIO(state["replay_buffer"].numpy().tobytes()))
        _set_rng_state(self.model, state["rng"])


def _to_bytes(save: Callable[[io.BytesIO], None]) -> torch.Tensor:
    """What ``save`` writes, as a uint8 tensor (a checkpoint holds tensors, not pickled objects)."""
    buffer = io.BytesIO()
    save(buffer)
    return torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8)


def _rng_state(model: Any) -> dict:
    action_rng = model.action_space.np_random.bit_generator.state
    return {"torch": torch.get_rng_state(), "numpy": json.dumps(_jsonable(np.random.get_state())),
            "python": json.dumps(_jsonable(random.getstate())), "action_space": json.dumps(action_rng)}


def _set_rng_state(model: Any, state: dict) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = json.loads(state["numpy"])
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = json.loads(state["python"])
    random.setstate((version, tuple(internal), gauss_next))
    model.action_space.np_random.bit_generator.state = json.loads(state["action_space"])


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    return value


def _make_callback(run: Run, agent: SB3Agent, bar: Any) -> Any:
    from stable_baselines3.common.callbacks import BaseCallback

    class EpisodeLogger(BaseCallback):
        """Logs each finished episode through the shared :class:`Run` bookkeeping."""

        def __init__(self) -> None:
            super().__init__()
            self.episode_reward = 0.0

        def _on_step(self) -> bool:
            self.episode_reward += float(self.locals["rewards"][0])
            if self.locals["dones"][0]:
                info = self.locals["infos"][0]
                record = run.after_episode(self.episode_reward, info, agent, {})
                bar.update(1)
                bar.set_postfix(nfe=record.get("nfe_forward"))
                self.episode_reward = 0.0
                if run.should_stop():
                    return False
            return run.iteration < run.args.iterations

    return EpisodeLogger()


@dataclasses.dataclass
class Args(CommonArgs):
    algo: str = arg("ppo", "stable-baselines3 algorithm", choices=list(ALGOS))
    policy_lr: float | None = arg(None, "learning rate of the algorithm (omitted: 3e-4 for ppo, SB3's own for "
                                        "the others)")
    init_std: float | None = arg(None, "ppo/a2c: initial std of the policy in decades of tolerance "
                                       "(default 0.5, like the REINFORCE gates)")
    algo_kwargs: list[str] = arg([], "constructor arguments of the algorithm as key=value, over the sized "
                                     "defaults (e.g. n_steps=24 ent_coef=0.01)", nargs="*")


def main(argv: list[str] | None = None) -> dict:
    args = resolve_args(parse_args(Args, argv, description=__doc__), "sb3")
    if distributed.env_world_size() > 1:
        raise ValueError(f"agents.sb3 runs in one process (WORLD_SIZE={distributed.env_world_size()}); "
                         "run it without torchrun, or use agents.reinforce / agents.fixed for multi-process training")
    if args.init_std is not None and args.algo not in ("ppo", "a2c"):
        raise ValueError(f"--init-std applies to ppo and a2c only (state-independent Gaussian policies), "
                         f"not {args.algo}")
    if args.init_std is not None and not args.init_std > 0:
        raise ValueError(f"--init-std must be > 0 decades, got {args.init_std}")
    cls = algo_class(args.algo)
    overrides = algo_overrides(cls, args.algo_kwargs)
    run = Run(f"sb3-{args.algo}", args, {"algo": args.algo})
    env = run.env
    if isinstance(env.observation_space, gym.spaces.Dict):
        policy = "MultiInputPolicy"
    else:
        policy = "MlpPolicy"
    wrapped = RescaleAction(env, np.float32(-1.0), np.float32(1.0))  # float32 like the action space
    bounds = (float(env.action_space.low[0]), float(env.action_space.high[0]))
    log_std = on_policy_log_std(0.5 if args.init_std is None else args.init_std, bounds)
    kwargs = default_algo_kwargs(args.algo, env.unwrapped.num_blocks, log_std)
    if args.policy_lr is not None:
        kwargs["learning_rate"] = args.policy_lr
    policy_kwargs = {**kwargs.get("policy_kwargs", {}), **overrides.pop("policy_kwargs", {})}
    kwargs.update(overrides)
    if policy_kwargs:
        kwargs["policy_kwargs"] = policy_kwargs
    model = cls(policy, wrapped, seed=args.seed, verbose=0, device="cpu", **kwargs)
    # Our metrics go through Run; left without a logger, SB3 makes an empty folder in the temp
    # directory on every learn().
    model.set_logger(Logger(folder=None, output_formats=[]))
    agent = SB3Agent(model, off_policy=args.algo in ("sac", "td3"), export_dir=run.run_dir)
    try:
        run.open()
        run.restore(agent)
        remaining = args.iterations - run.iteration
        with tqdm(total=args.iterations, initial=run.iteration, disable=not args.progress, unit="it") as bar:
            if remaining > 0:
                steps = remaining * env.unwrapped.num_blocks * 4  # upper bound; the callback stops at --iterations
                agent.model.learn(total_timesteps=steps, callback=_make_callback(run, agent, bar),
                                  reset_num_timesteps=run.resumed is None, progress_bar=False)
        if run.stop_signal is not None:
            run.interrupt(agent)
        return run.finish(agent)
    finally:
        run.close()


if __name__ == "__main__":
    run_cli(main)
