"""stable-baselines3 algorithms as the tolerance policy.

    python -m agents.sb3 --algo ppo --env InfoCNF-Digits-v0
    python -m agents.sb3 --algo sac --env InfoCNF-Digits-v0 --env-kwargs alpha=0.1
    python -m agents.sb3 --algo a2c --env InfoCNF-Digits-v0 --algo-kwargs n_steps=24 ent_coef=0.01
    python -m agents.sb3 --algo ppo --env InfoCNF-Digits-v0 --n-envs 4

The environment is wrapped only by gymnasium's ``RescaleAction``, so the algorithm acts in
[-1, 1] (SB3's recommendation) while the environment receives log10(tol) in its bounds.
SB3 drives the loop itself; a callback turns every finished episode into a line of
``metrics.jsonl`` and triggers evaluations and checkpoints. SB3 agents run in one process.

Several environments (``--n-envs K``) on a benchmark task (ODE and frozen-flow ids): SB3
trains on :class:`NativeVecEnv`, the task's native vector env (:mod:`infocnf_env.vector`): K
episodes of the one task env, advanced by one batched solve per step, sub-env i's first reset
seeded with ``--seed + i``; every finished episode is one of ``--iterations``. On the training
envs (the flows): SB3 trains on a ``DummyVecEnv`` of K environments,
stepped one after the other in this process. Each is built as the runner builds its single
environment (same id, same env kwargs, so every flow starts from the same weights); SB3 seeds
environment i's first reset with ``--seed + i``, so each draws its own batches and noise and
trains its own flow. Every finished episode of any environment is one iteration: one line of
``metrics.jsonl`` (with ``env_index``, the environment it came from), counted towards
``--iterations``. Episodes that end in the same step are logged in environment order; those
past ``--iterations`` are not logged. Evaluations, the summary's test metrics and
``agents.evaluate`` use environment 0's flow, whose state is the checkpoint's ``env`` as for
every agent; the checkpoint's agent part holds the states of environments 1..K-1. The
algorithm's hyperparameters are per environment as SB3 defines them (a PPO rollout of
``n_steps`` holds ``n_steps * K`` steps).

Checkpoints: ``checkpoint.pt`` holds the environment's state like every agent's, plus the SB3
model as SB3's own ``save`` writes it (and, for off-policy algorithms, its replay buffer) and
the random states SB3 samples from; ``sb3_model.zip`` beside it is the same model for SB3's
own tools. That model acts in [-1, 1], not in log10(tol): on a plain ``gymnasium.make`` env
it needs ``RescaleAction(env, -1, 1)``, or :func:`load_policy` (actions in the env's own
units). The file says so itself: ``PPO.load(...).action_rescale`` (also in the zip's
``data`` entry) holds the wrapper and the env's bounds. The SB3 parts are pickled formats that
SB3 loads: resume only run directories you trust.

Resume is not bit-exact for SB3 agents (``fixed`` and ``reinforce`` are): SB3's ``learn``
loop keeps state between episodes that its ``save`` does not hold, the on-policy algorithms'
partly collected rollout and the observation it will act on next, so a resumed run drops the
partial rollout and starts a new episode where the interrupted run had one pending. It goes
on from the saved policy, optimiser, replay buffer, counters and random states, with the
same environment stream, so it does not repeat the episodes it already ran. The saved replay
buffer lacks one transition, the step whose episode end wrote the checkpoint: SB3 stores a
step's transition after the callbacks that log its episode. With K
environments, a checkpoint written while episodes that ended in the same step are still to be
logged holds their flows' updates but not their lines, which the resumed run drops.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.wrappers import RescaleAction
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecMonitor, VecNormalize
from tqdm import tqdm

from agents import distributed, registry
from agents.base import ActionPolicy, Agent
from agents.cli import CommonArgs, arg, parse_args, parse_kwargs
from agents.envs import make_env
from agents.loop import run_cli
from agents.run_dir import resolve_args
from agents.runner import Run
from infocnf_env.benchmark import BenchmarkEnv
from infocnf_env.checkpoint import CheckpointError, atomic_write
from infocnf_env.vector import BenchmarkVectorEnv, sub_env_info

ALGOS = ("ppo", "sac", "a2c", "td3")
#: The latest checkpoint's SB3 model as SB3's own ``save`` writes it, beside ``checkpoint.pt``.
EXPORT = "sb3_model.zip"
#: Attribute of the SB3 model (saved in the zip's ``data``, restored by ``ALGO.load``) that
#: states the action scaling the model was trained with (:func:`action_rescale`).
RESCALE_ATTR = "action_rescale"


def action_rescale(env: gym.Env) -> dict[str, Any]:
    """What an SB3 model trained here needs to act on ``env``: its actions lie in [-1, 1] and
    ``gymnasium.wrappers.RescaleAction(env, -1.0, 1.0)`` maps them linearly onto the env's
    bounds (log10 tol, and log10 first step in the ``tol_first_step`` mode)."""
    return {"wrapper": "gymnasium.wrappers.RescaleAction", "min_action": -1.0, "max_action": 1.0,
            "env_low": [float(v) for v in env.action_space.low], "env_high": [float(v) for v in env.action_space.high],
            "note": "the model acts in [-1, 1]; wrap the env in RescaleAction(env, -1.0, 1.0) or use "
                    "agents.sb3.load_policy(run_dir), whose actions are in the env's units"}


class EnvUnitsPolicy:
    """A saved SB3 model whose actions are in the env's own units (log10 tol), as the env takes them.

    ``predict`` has SB3's signature; the model's action in [-1, 1] is clipped and mapped
    linearly onto ``[env_low, env_high]``, as ``RescaleAction`` does in training.
    """

    def __init__(self, model: Any, low: Any, high: Any):
        self.model = model
        self.low = np.asarray(low, dtype=np.float64)
        self.high = np.asarray(high, dtype=np.float64)

    def predict(self, observation: Any, deterministic: bool = True) -> tuple[np.ndarray, Any]:
        action, state = self.model.predict(observation, deterministic=deterministic)
        return self.to_env_units(action).astype(np.float32), state

    def to_env_units(self, action: Any) -> np.ndarray:
        """A model action in [-1, 1], clipped and mapped onto ``[env_low, env_high]`` (float64)."""
        unit = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        return self.low + (unit + 1.0) * (self.high - self.low) / 2.0

    def __call__(self, observation: Any) -> np.ndarray:
        """The deterministic action in the env's units."""
        return self.predict(observation, deterministic=True)[0]


def load_policy(run_dir: str | Path, device: str = "cpu") -> EnvUnitsPolicy:
    """The SB3 policy of a run directory (``sb3_model.zip``), acting in the env's own units.

    The bounds come from the file's ``action_rescale``; a file written without it takes them
    from the run's env (its ``config.json``).
    """
    run_dir = Path(run_dir)
    config_path, export = run_dir / "config.json", run_dir / EXPORT
    for path in (config_path, export):
        if not path.exists():
            raise FileNotFoundError(f"{run_dir} is not a run directory of agents.sb3: {path.name} is missing")
    config = json.loads(config_path.read_text())
    if registry.trainer_of(str(config.get("agent", ""))) != "sb3":
        raise ValueError(f"{run_dir} is a run of {config.get('agent')!r}, not of agents.sb3")
    model = algo_class(config["algo"]).load(export, device=device)
    rescale = getattr(model, RESCALE_ATTR, None)
    if rescale is None:
        env = make_env(config["env"], {k: v for k, v in config["env_kwargs"].items() if k != "device"})
        rescale = action_rescale(env)
        env.close()
    return EnvUnitsPolicy(model, rescale["env_low"], rescale["env_high"])


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
    for name, flag in (("device", "--device"), ("seed", "--seed")):
        if name in overrides:
            raise ValueError(f"{name} is set by {flag}, not --algo-kwargs")
    # set by this CLI: policy and env, seed (--seed), device (--device)
    accepted = {name for name in inspect.signature(cls.__init__).parameters if not name.startswith("_")}
    accepted -= {"self", "policy", "env", "seed", "device", "verbose"}
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

    ``other_envs``: environments 1..K-1 of a run with ``--n-envs K`` (the runner saves and
    restores environment 0, as for every agent); their states are saved under ``other_envs``,
    a key that runs of one environment do not have. ``vector``: on a benchmark task, the
    native vector env the K episodes run in (it shares environment 0's task); its sub-envs'
    generators are saved under ``native_envs``.
    """

    def __init__(self, model: Any, off_policy: bool, export_dir: Path | None = None,
                 other_envs: list[gym.Env] | None = None, device: str = "cpu",
                 vector: BenchmarkVectorEnv | None = None):
        self.model = model
        self.device = device
        self.off_policy = off_policy
        self.export_dir = export_dir
        self.other_envs = list(other_envs or [])
        self.vector = vector

    def state_dict(self) -> dict:
        model = _to_bytes(self.model.save)
        if self.export_dir is not None:  # the policy as SB3's own file, for SB3 tools and agents.evaluate
            atomic_write(self.export_dir / EXPORT, lambda fh: fh.write(model.numpy().tobytes()))
        state = {"model": model, "num_timesteps": int(self.model.num_timesteps), "rng": _rng_state(self.model)}
        if self.off_policy:
            state["replay_buffer"] = _to_bytes(self.model.save_replay_buffer)
        if self.other_envs:
            state["other_envs"] = [env.unwrapped.state_dict() for env in self.other_envs]
        if self.vector is not None:
            state["native_envs"] = {"num_envs": self.vector.num_envs, "rngs": json.dumps(self.vector.rng_states())}
        normalizer = self.model.get_vec_normalize_env()
        if normalizer is not None:
            rms = normalizer.ret_rms
            state["return_rms"] = {"mean": float(rms.mean), "var": float(rms.var), "count": float(rms.count)}
        return state

    def load_state_dict(self, state: dict) -> None:
        cls = type(self.model)
        env = self.model.get_env()
        logger = self.model.logger
        rescale = getattr(self.model, RESCALE_ATTR, None)
        self.model = cls.load(io.BytesIO(state["model"].numpy().tobytes()), env=env, device=self.device)
        if rescale is not None:  # (a checkpoint written without it)
            setattr(self.model, RESCALE_ATTR, rescale)
        self.model.set_logger(logger)
        if self.off_policy:
            self.model.load_replay_buffer(io.BytesIO(state["replay_buffer"].numpy().tobytes()))
        _set_rng_state(self.model, state["rng"])
        saved = state.get("other_envs", [])
        if len(saved) != len(self.other_envs):
            raise CheckpointError(f"the checkpoint holds {1 + len(saved)} environment(s), the run has "
                                  f"{1 + len(self.other_envs)}")
        for env, env_state in zip(self.other_envs, saved, strict=True):
            env.unwrapped.load_state_dict(env_state)
        native = state.get("native_envs")
        if (native is None) != (self.vector is None) or (
                native is not None and self.vector is not None and native["num_envs"] != self.vector.num_envs):
            raise CheckpointError("the checkpoint's native vector env does not match the run's --n-envs")
        if native is not None and self.vector is not None:
            self.vector.load_rng_states(json.loads(native["rngs"]))
        normalizer = self.model.get_vec_normalize_env()
        if normalizer is not None and "return_rms" in state:
            rms = state["return_rms"]
            normalizer.ret_rms.mean, normalizer.ret_rms.var = np.float64(rms["mean"]), np.float64(rms["var"])
            normalizer.ret_rms.count = rms["count"]

    @classmethod
    def saved_policy(cls, run_dir: Path, env: Any) -> ActionPolicy:
        """``predict(deterministic=True)`` of the exported model, rescaled entry by entry from
        [-1, 1] to the action bounds, as ``RescaleAction`` does during training (:func:`load_policy`)."""
        sb3 = load_policy(run_dir)

        def sb3_policy(obs: Any, block: int) -> np.ndarray:
            action, _ = sb3.model.predict(obs, deterministic=True)
            return sb3.to_env_units(np.asarray(action).reshape(-1))

        return sb3_policy


def saved_n_envs(checkpoint: dict) -> int:
    """How many environments wrote ``checkpoint`` (``--n-envs``; 1 for every other agent's)."""
    native = checkpoint["agent"].get("native_envs")
    return int(native["num_envs"]) if native else 1 + len(checkpoint["agent"].get("other_envs", []))


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


def training_envs(envs: list[gym.Env] | BenchmarkVectorEnv, normalize_reward: bool = False,
                  gamma: float = 0.99) -> VecEnv:
    """The vectorised environment SB3 trains on: each env rescaled to actions in [-1, 1].

    A list of envs: each is wrapped in SB3's ``Monitor`` as SB3 wraps a single env itself, so one
    env gives the algorithm exactly what passing that env to it would, and stepped in turn
    (``DummyVecEnv``). A benchmark task's native vector env: :class:`NativeVecEnv` over it, one
    batched solve per step (``VecMonitor`` keeps the episode statistics ``Monitor`` keeps).
    ``normalize_reward``: SB3's ``VecNormalize`` divides the rewards by a running std of the
    discounted return (observations are left as they are, so the saved policy acts on the env's
    own observations).
    """
    def rescaled(env: gym.Env) -> Callable[[], gym.Env]:
        return lambda: Monitor(RescaleAction(env, np.float32(-1.0), np.float32(1.0)))  # float32 like the space

    if isinstance(envs, BenchmarkVectorEnv):
        venv: VecEnv = VecMonitor(NativeVecEnv(envs))
    else:
        venv = DummyVecEnv([rescaled(env) for env in envs])
    return VecNormalize(venv, norm_obs=False, norm_reward=True, gamma=gamma) if normalize_reward else venv


class NativeVecEnv(VecEnv):
    """SB3's ``VecEnv`` over a benchmark task's native vector env (:mod:`infocnf_env.vector`).

    SB3 acts in [-1, 1]; the actions are rescaled to the env's bounds entry by entry, as
    ``RescaleAction`` does for a single env. SB3's contract: a sub-env whose episode ended is
    reset in the same step (the native env's ``SAME_STEP`` autoreset), its last observation in
    ``info["terminal_observation"]``, its ended episode's info as the single env's last step
    gives it, and ``info["TimeLimit.truncated"]`` where a failed solve truncated it. SB3's
    ``seed(s)`` seeds sub-env i's next reset with ``s + i``, as ``DummyVecEnv`` does.
    """

    def __init__(self, venv: BenchmarkVectorEnv):
        self.venv = venv
        space = venv.single_action_space
        self.low, self.high = space.low.astype(np.float64), space.high.astype(np.float64)
        unit = gym.spaces.Box(-1.0, 1.0, space.shape, np.float32)
        super().__init__(venv.num_envs, venv.single_observation_space, unit)
        self._actions: np.ndarray | None = None

    def reset(self) -> np.ndarray:
        seeds = None if all(s is None for s in self._seeds) else list(self._seeds)
        obs, _ = self.venv.reset(seed=seeds)
        self._reset_seeds()
        self._reset_options()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions, dtype=np.float64).reshape(self.num_envs, -1)

    def step_wait(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict]]:
        assert self._actions is not None, "step_async() before step_wait()"
        actions = self.low + (self._actions + 1.0) * 0.5 * (self.high - self.low)
        obs, rewards, terminated, truncated, infos = self.venv.step(actions.astype(np.float32))
        ended = terminated | truncated
        step_infos = {k: v for k, v in infos.items() if k not in ("final_info", "final_obs")}
        out = [sub_env_info(step_infos, i) for i in range(self.num_envs)]
        for i in np.flatnonzero(ended):
            out[i] = {**sub_env_info(infos["final_info"], i), "terminal_observation": infos["final_obs"][i],
                      "TimeLimit.truncated": bool(truncated[i] and not terminated[i])}
        return obs, rewards.astype(np.float32), ended, out

    def close(self) -> None:
        self.venv.close()

    def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
        return [getattr(self.venv.task, attr_name) for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
        setattr(self.venv.task, attr_name, value)

    def env_method(self, method_name: str, *args: Any, indices: Any = None, **kwargs: Any) -> list[Any]:
        return [getattr(self.venv.task, method_name)(*args, **kwargs) for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class: Any, indices: Any = None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]


def _make_callback(run: Run, agent: SB3Agent, bar: Any, n_envs: int) -> Any:
    from stable_baselines3.common.callbacks import BaseCallback

    class EpisodeLogger(BaseCallback):
        """Logs each finished episode of any env through the shared :class:`Run` bookkeeping.

        Episodes that end in the same step are logged in env order, up to ``--iterations``;
        a stop signal is honoured once the step's finished episodes are logged.
        """

        def __init__(self) -> None:
            super().__init__()
            self.episode_rewards = [0.0] * n_envs

        def _on_step(self) -> bool:
            logged = False
            normalizer = self.model.get_vec_normalize_env()  # the env's own rewards, not the normalised ones
            rewards = self.locals["rewards"] if normalizer is None else normalizer.get_original_reward()
            for i, (reward, done) in enumerate(zip(rewards, self.locals["dones"], strict=True)):
                self.episode_rewards[i] += float(reward)
                if not done:
                    continue
                if run.iteration < run.args.iterations:
                    stats = {"env_index": i} if n_envs > 1 else {}
                    record = run.after_episode(self.episode_rewards[i], self.locals["infos"][i], agent, stats)
                    bar.update(1)
                    bar.set_postfix(nfe=record.get("nfe_forward"))
                    logged = True
                self.episode_rewards[i] = 0.0
            if logged and run.should_stop():
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
    n_envs: int = arg(1, "environments trained on at once; env i's first reset is seeded with --seed + i; every "
                         "finished episode of any env is one of --iterations. Benchmark tasks: K episodes of the "
                         "task's native vector env, one batched solve per step; training envs: SB3's DummyVecEnv "
                         "of K envs built like the single one, each training its own flow on its own batches "
                         "(evaluations use env 0's flow)")
    normalize_reward: bool = arg(False, "divide rewards by a running std of the return (SB3's VecNormalize, "
                                        "rewards only): for rewards of any scale, e.g. the benchmark tasks'")
    action_noise: float = arg(0.0, "td3: std of Gaussian exploration noise on the action in the rescaled "
                                   "[-1, 1] units (0: none, deterministic actions)")


def main(argv: list[str] | None = None) -> dict:
    args = resolve_args(parse_args(Args, argv, description=__doc__), "sb3")
    if distributed.env_world_size() > 1:
        raise distributed.SingleProcessOnly(
            f"agents.sb3 runs in one process (WORLD_SIZE={distributed.env_world_size()}); run it without torchrun, "
            "or use agents.reinforce / agents.fixed for multi-process training")
    if args.init_std is not None and args.algo not in ("ppo", "a2c"):
        raise ValueError(f"--init-std applies to ppo and a2c only (state-independent Gaussian policies), "
                         f"not {args.algo}")
    if args.init_std is not None and not args.init_std > 0:
        raise ValueError(f"--init-std must be > 0 decades, got {args.init_std}")
    if args.n_envs < 1:
        raise ValueError(f"--n-envs must be a positive integer, got {args.n_envs}")
    if args.action_noise and args.algo != "td3":
        raise ValueError(f"--action-noise applies to td3 only (its actions are deterministic), not {args.algo}")
    if not (math.isfinite(args.action_noise) and args.action_noise >= 0):
        raise ValueError(f"--action-noise must be a finite std >= 0, got {args.action_noise}")
    if args.policy_lr is not None and not (math.isfinite(args.policy_lr) and args.policy_lr > 0):
        raise ValueError(f"--policy-lr must be a positive number, got {args.policy_lr}")
    cls = algo_class(args.algo)
    overrides = algo_overrides(cls, args.algo_kwargs)
    run = Run(registry.get(args.algo).run_name, args, {"algo": args.algo})
    try:
        return _train(run, args, cls, overrides)
    finally:
        run.close()


def _train(run: Run, args: Args, cls: Any, overrides: dict[str, Any]) -> dict:
    """The SB3 model on the run's env(s), trained to ``--iterations`` episodes, and the summary."""
    if run.resumed is not None and saved_n_envs(run.resumed) != args.n_envs:
        raise CheckpointError(f"--resume {args.resume!r}: its checkpoint holds {saved_n_envs(run.resumed)} "
                              f"environment(s), not --n-envs {args.n_envs}")
    env = run.env
    if isinstance(env.observation_space, gym.spaces.Dict):
        policy = "MultiInputPolicy"
    else:
        policy = "MlpPolicy"
    native = args.n_envs > 1 and isinstance(env.unwrapped, BenchmarkEnv)
    vector = BenchmarkVectorEnv.around(env.unwrapped, args.n_envs) if native else None
    other_envs = [] if native else [make_env(args.env, run.env_kwargs) for _ in range(args.n_envs - 1)]
    bounds = (float(env.action_space.low[0]), float(env.action_space.high[0]))
    log_std = on_policy_log_std(0.5 if args.init_std is None else args.init_std, bounds)
    kwargs = default_algo_kwargs(args.algo, env.unwrapped.num_blocks, log_std)
    if args.policy_lr is not None:
        kwargs["learning_rate"] = args.policy_lr
    policy_kwargs = {**kwargs.get("policy_kwargs", {}), **overrides.pop("policy_kwargs", {})}
    kwargs.update(overrides)
    if policy_kwargs:
        kwargs["policy_kwargs"] = policy_kwargs
    if args.action_noise:
        from stable_baselines3.common.noise import NormalActionNoise

        dim = env.action_space.shape[0]
        kwargs["action_noise"] = NormalActionNoise(np.zeros(dim), np.full(dim, args.action_noise))
    venv = training_envs(vector if vector is not None else [env, *other_envs], args.normalize_reward,
                         kwargs.get("gamma", 0.99))
    # SB3 seeds env i's first reset with seed + i (VecEnv.seed)
    model = cls(policy, venv, seed=args.seed, verbose=0, device=run.device, **kwargs)
    setattr(model, RESCALE_ATTR, action_rescale(env))  # saved with the model: it acts in [-1, 1]
    # Our metrics go through Run; left without a logger, SB3 makes an empty folder in the temp
    # directory on every learn().
    model.set_logger(Logger(folder=None, output_formats=[]))
    agent = SB3Agent(model, off_policy=args.algo in ("sac", "td3"), export_dir=run.run_dir, other_envs=other_envs,
                     device=run.device, vector=vector)
    run.open()
    run.restore(agent)
    remaining = args.iterations - run.iteration
    with tqdm(total=args.iterations, initial=run.iteration, disable=not args.progress, unit="it") as bar:
        if remaining > 0:
            # upper bound on the steps of all envs together; the callback stops at --iterations
            per_env = math.ceil(remaining / args.n_envs)
            steps = per_env * args.n_envs * env.unwrapped.num_blocks * 4
            agent.model.learn(total_timesteps=steps, callback=_make_callback(run, agent, bar, args.n_envs),
                              reset_num_timesteps=run.resumed is None, progress_bar=False)
    if run.stop_signal is not None:
        run.interrupt(agent)
    return run.finish(agent)


if __name__ == "__main__":
    run_cli(main)
