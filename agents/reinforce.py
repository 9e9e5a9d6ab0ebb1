"""REINFORCE with one gate per ODE block: the paper's tolerance learning (Section 3, Eq. 6-7).

    python -m agents.reinforce --env InfoCNF-Digits-v0
    python -m agents.reinforce --env InfoCNF-CIFAR10-v0 --env-kwargs data_root=DATA download=True

The environment pays ``-(alpha / N) * NFE_i`` per block and ``-loss`` at the end, so the
return-to-go of block i, ``G_i = sum_{j >= i} gamma^(j - i) r_j``, is the paper's
``r_i = -[L - (alpha / N) sum_{j >= i} R_j]`` (for gamma = 1). The policy gradient is
``-sum_i grad log pi(g_i | x_i) (G_i - b_i)`` with an optional moving-average baseline b_i
per block (``baseline_momentum``). Rewards and returns are plain floats: nothing flows back
into the flow through them; the flow itself is trained by the environment (co-training).

Multi-process (``torchrun --nproc_per_node=K``): every rank runs its own episode on its share
of the data and samples its own tolerances from the same gates (per-rank tolerances: rank r's
sampling generator is split off by rank), so one update sees K episodes. The gates'
gradients are averaged over the ranks before the Adam step (as DistributedDataParallel
would), and the moving-average baseline of block i is updated with the mean return of the
ranks that reached block i, so gates, optimizer and baseline stay identical on every rank.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from agents.base import ActionPolicy, Agent, TolerancePolicy
from agents.cli import CommonArgs, arg, parse_args
from agents.gates import (
    DEFAULT_FIRST_STEP_INIT_MEAN,
    DEFAULT_INIT_MEAN,
    DEFAULT_INIT_STD,
    GATE_DISTS,
    CNNGate,
    InitMean,
    InitStd,
    MLPGate,
    SquashedGaussian,
)
from agents.loop import run_agent, run_cli
from agents.run_dir import resolve_args
from infocnf_env import PAPER_SIZED_IDS
from infocnf_env.checkpoint import load_checkpoint
from infocnf_env.distributed import average_gradients, broadcast_module, rank_seed


@dataclasses.dataclass
class _Episode:
    """What REINFORCE keeps of an episode under way: per step, the gate's input, the action's
    log-density and entropy, the gate's mean and spread, and the reward."""

    inputs: list[tuple[int, torch.Tensor]] = dataclasses.field(default_factory=list)
    log_probs: list[torch.Tensor] = dataclasses.field(default_factory=list)
    entropies: list[torch.Tensor] = dataclasses.field(default_factory=list)
    means: list[float] = dataclasses.field(default_factory=list)
    stds: list[float] = dataclasses.field(default_factory=list)
    rewards: list[float] = dataclasses.field(default_factory=list)


class ReinforceAgent(Agent):
    """Gaussian gates over log10(tol), trained by REINFORCE once per episode.

    ``gate_dist`` (:data:`agents.gates.GATE_DISTS`) decides how a gate's Gaussian becomes the
    action: ``"gaussian"`` (this class's default) is the paper's, clipped to the bounds by the
    env; ``"squashed"`` (the CLI's default) pushes it into ``action_bounds`` with a tanh and
    corrects the log-density (:class:`agents.gates.SquashedGaussian`), so no action and no
    deterministic action can leave the bounds.

    Args:
        observation_space: the env's space (``vector`` -> MLP gates, ``features`` -> CNN gates).
        num_blocks: N, one gate per block.
        gamma: discount of the return-to-go (Eq. 7 uses the undiscounted sum; default 0.99).
        lr: Adam learning rate of the gates.
        baseline_momentum: momentum of the per-block moving-average baseline of the returns
            (``None``: no baseline).
        entropy: weight of an entropy bonus (0: the paper's plain REINFORCE).
        init_mean: initial mean of log10(tol).
        action_dim: entries of the action: 1 (log10 tol) or 2 (``tol_first_step`` mode, whose
            first-step entry starts at ``DEFAULT_FIRST_STEP_INIT_MEAN``; ``tol_method`` mode,
            whose method position the squashed gates start in the middle of its bounds).
        init_std: initial standard deviation of log10(tol).
        hidden: width of the gates.
        seed: seed of the gates' initialisation and sampling.
        gate_dist: ``"gaussian"`` or ``"squashed"`` (above).
        action_bounds: ``(low, high)`` of the action, one value per entry (the env's
            ``action_space.low`` / ``high``); needed by ``"squashed"``.
    """

    def __init__(
        self, observation_space: Any, num_blocks: int, *, gamma: float = 0.99, lr: float = 1e-2,
        baseline_momentum: float | None = 0.9, entropy: float = 0.0, init_mean: float = DEFAULT_INIT_MEAN,
        init_std: float = DEFAULT_INIT_STD, hidden: int = 32, seed: int = 0, action_dim: int = 1,
        normalize_returns: bool = False, value_baseline: bool = False, gate_dist: str = "gaussian",
        action_bounds: tuple[Sequence[float], Sequence[float]] | None = None,
    ):
        # CNN gates read the feature maps of a Dict observation, MLP gates the vector one.
        self.cnn_gates = isinstance(observation_space, gym.spaces.Dict)
        if action_dim not in (1, 2):
            raise ValueError(f"action_dim must be 1 (log10 tol) or 2 (log10 tol, log10 first step), got {action_dim}")
        if not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"the gates' learning rate (--gate-lr) must be a positive number, got {lr}")
        if not 0 <= gamma <= 1:
            raise ValueError(f"the discount (--gamma) must be in [0, 1], got {gamma}")
        if gate_dist not in GATE_DISTS:
            raise ValueError(f"unknown gate distribution {gate_dist!r}; valid: {', '.join(GATE_DISTS)}")
        second = DEFAULT_FIRST_STEP_INIT_MEAN
        if gate_dist == "squashed" and action_dim == 2 and action_bounds is not None:
            low, high = action_bounds[0][1], action_bounds[1][1]
            if not low < second < high:  # an entry that is no first step (tol_method's method position)
                second = (low + high) / 2
        means: InitMean = init_mean if action_dim == 1 else [init_mean, second]
        stds: InitStd = init_std
        self.squashed: SquashedGaussian | None = None
        if gate_dist == "squashed":
            if action_bounds is None:
                raise ValueError("squashed gates need the action bounds (action_bounds=(low, high))")
            self.squashed = SquashedGaussian(*action_bounds)
            pre_means, pre_stds = self.squashed.initial(means, init_std)
            means, stds = (pre_means[0], pre_stds[0]) if action_dim == 1 else (pre_means, pre_stds)
        self.gate_dist = gate_dist
        with torch.random.fork_rng(devices=[]):  # initial weights from `seed`, not the global RNG state
            torch.manual_seed(seed)
            gates: list[CNNGate] | list[MLPGate]
            if self.cnn_gates:
                shape = observation_space["features"].shape
                gates = [CNNGate(shape, min(hidden, 16), means, stds) for _ in range(num_blocks)]
            else:
                dim = observation_space.shape[0]
                gates = [MLPGate(dim, hidden, means, stds) for _ in range(num_blocks)]
        self.gates = nn.ModuleList(gates)
        # A learned baseline of the observation, one small MLP per block: where episodes differ in
        # difficulty (benchmark tasks), a per-block average return mixes easy and hard episodes
        # and its advantages say more about the episode than about the action.
        self.critics: nn.ModuleList | None = None
        if value_baseline:
            if self.cnn_gates:
                raise ValueError("value_baseline needs vector observations (MLP gates)")
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed + 1)
                self.critics = nn.ModuleList(
                    nn.Sequential(nn.Linear(observation_space.shape[0], hidden), nn.Tanh(), nn.Linear(hidden, 1))
                    for _ in range(num_blocks))
            self.critic_optimizer = torch.optim.Adam(self.critics.parameters(), lr=lr)
        self.num_blocks = num_blocks
        self.gamma = gamma
        self.momentum = baseline_momentum
        self.entropy = entropy
        self.optimizer = torch.optim.Adam(self.gates.parameters(), lr=lr)
        self.generator = torch.Generator().manual_seed(seed)
        self.baseline = torch.zeros(num_blocks)
        self.baseline_ready = torch.zeros(num_blocks, dtype=torch.bool)
        self.normalize_returns = normalize_returns
        #: running second moment of the advantages (``normalize_returns``), and whether it is set
        self.advantage_scale = torch.zeros(())
        self.advantage_scale_ready = torch.zeros((), dtype=torch.bool)
        #: the episodes under way, by slot (one per sub-env of a vector env; slot 0 alone otherwise)
        self._episodes: dict[int, _Episode] = {}
        self.rank, self.world_size = 0, 1
        #: the native vector env of ``--n-envs N`` (``agents.loop.run_vector_episodes``); its
        #: sub-envs' generators are part of the checkpoint
        self.vector: Any = None

    def distribute(self, rank: int, world_size: int) -> None:
        """Join multi-process training (process group initialised): see the module docstring."""
        self.rank, self.world_size = int(rank), int(world_size)
        if self.world_size > 1:
            broadcast_module(self.gates)
            if self.critics is not None:
                broadcast_module(self.critics)
            self._split_generator()

    def modules(self) -> list[nn.Module]:
        return [self.gates] if self.critics is None else [self.gates, self.critics]

    def _split_generator(self) -> None:
        if self.rank:
            self.generator.manual_seed(rank_seed(self.generator, self.rank))

    def rank_state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_rank_state_dict(self, state: dict | None) -> None:
        if state is None:
            self._split_generator()
        else:
            self.generator.set_state(state["generator"])

    def _mean_returns(self, returns: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per block: the mean return over the episodes (of every rank) that reached it, and
        whether any did."""
        n = self.num_blocks
        stats = torch.zeros(2 * n)
        for episode_returns in returns:
            stats[: len(episode_returns)] += episode_returns
            stats[n: n + len(episode_returns)] += 1.0
        if self.world_size > 1:
            torch.distributed.all_reduce(stats)
        counts = stats[n:]
        return stats[:n] / counts.clamp(min=1.0), counts > 0

    def _block_and_input(self, obs: Any) -> tuple[int, torch.Tensor]:
        if self.cnn_gates:
            return int(obs["block"]), torch.as_tensor(obs["features"], dtype=torch.float32)
        vec = torch.as_tensor(obs, dtype=torch.float32)
        return int(vec[: self.num_blocks].argmax()), vec

    @classmethod
    def env_kwargs(cls, env_id: str) -> dict[str, Any]:
        return {"obs_mode": gate_obs_mode("auto", env_id)}

    @classmethod
    def for_env(cls, env: Any, *, seed: int, tol: float) -> ReinforceAgent:
        return cls(env.observation_space, env.unwrapped.num_blocks, seed=seed)

    def act(self, obs: Any, slot: int = 0) -> np.ndarray:
        """A sampled action for ``obs``, recorded in the episode of ``slot`` (the sub-env of a
        vector env whose observation it is; slot 0 for a single env)."""
        episode = self._episodes.setdefault(slot, _Episode())
        block, inp = self._block_and_input(obs)
        episode.inputs.append((block, inp))
        mean, log_std = self.gates[block](inp)
        std = log_std.exp()
        noise = torch.randn(mean.shape, generator=self.generator)
        if self.squashed is not None:
            return self._act_squashed(episode, mean.reshape(-1), std.reshape(-1), noise.reshape(-1))
        sample = (mean + std * noise).detach()
        dist = torch.distributions.Normal(mean, std)
        episode.log_probs.append(dist.log_prob(sample).sum())  # independent entries: the joint log-density
        episode.entropies.append(dist.entropy().sum())
        episode.means.append(float(mean.detach().reshape(-1)[0]))  # the log10 tolerance's
        episode.stds.append(float(std.detach().reshape(-1)[0]))
        return sample.reshape(-1).numpy().astype(np.float32)

    def _act_squashed(self, episode: _Episode, mean: torch.Tensor, std: torch.Tensor,
                      noise: torch.Tensor) -> np.ndarray:
        """A squashed gate's action; its log-density with the change of variables, its entropy
        estimated at the (reparameterised) sample (:class:`agents.gates.SquashedGaussian`)."""
        assert self.squashed is not None
        u = mean + std * noise
        pre = u.detach()
        episode.log_probs.append(self.squashed.log_prob(pre, mean, std).sum())
        episode.entropies.append((torch.distributions.Normal(mean, std).entropy() + self.squashed.log_det(u)).sum())
        action, spread = self.deterministic(mean.detach(), std.detach())
        episode.means.append(float(action[0]))  # the log10 tolerance's, in the env's units
        episode.stds.append(float(spread[0]))
        return self.squashed.squash(pre).numpy().astype(np.float32)

    def deterministic(self, mean: torch.Tensor, std: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A gate's deterministic action and its spread, in the env's units, entry by entry
        (``(k,)`` tensors): the Gaussian's mean and std, or the squashed Gaussian's median
        ``squash(mean)`` and local spread."""
        mean, std = mean.reshape(-1), std.reshape(-1)
        if self.squashed is None:
            return mean, std
        return self.squashed.squash(mean), self.squashed.spread(mean, std)

    @torch.no_grad()
    def policy(self, obs: Any, block: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The deterministic action and spread of ``block``'s gate on ``obs`` (:meth:`deterministic`)."""
        inp = torch.as_tensor(obs["features"] if isinstance(obs, dict) else obs, dtype=torch.float32)
        mean, log_std = self.gates[block](inp)
        return self.deterministic(mean, log_std.exp())

    def observe(self, reward: float, slot: int = 0) -> None:
        self._episodes.setdefault(slot, _Episode()).rewards.append(float(reward))

    def end_episode(self) -> dict[str, float]:
        """One REINFORCE update from the episode just finished (Eq. 7)."""
        return self.end_episodes([0])

    def end_episodes(self, slots: Sequence[int]) -> dict[str, float]:
        """One REINFORCE update from the episodes of ``slots``, just finished (Eq. 7, its
        gradient averaged over them: the paper's estimate with several episodes per update).
        The moving-average baseline moves once, towards each block's mean return over them."""
        episodes = [self._episodes.pop(slot) for slot in slots]
        returns = []
        for episode in episodes:
            backwards, running = [], 0.0
            for r in reversed(episode.rewards):
                running = r + self.gamma * running
                backwards.append(running)
            returns.append(torch.tensor(backwards[::-1], dtype=torch.float32))
        if self.momentum is not None:
            # a block's first returns are their own baseline: their mean (one episode: its own return)
            mean, reached = self._mean_returns(returns)
            start = torch.where(self.baseline_ready, self.baseline, mean)
            advantages = torch.cat([ret - start[: len(ret)] for ret in returns])
            update = torch.nonzero(reached).flatten()
            m = self.momentum
            self.baseline[update] = torch.where(self.baseline_ready[update],
                                                m * self.baseline[update] + (1 - m) * mean[update], mean[update])
            self.baseline_ready[update] = True
        else:
            advantages = torch.cat(returns)
        if self.normalize_returns:
            advantages = self._normalized(advantages)
        if self.critics is not None:
            advantages = self._critic_step(advantages, [inp for episode in episodes for inp in episode.inputs])
        log_probs = torch.stack([lp for episode in episodes for lp in episode.log_probs])
        entropies = torch.stack([e for episode in episodes for e in episode.entropies])
        loss = (-(log_probs * advantages).sum() - self.entropy * entropies.sum()) / len(episodes)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.world_size > 1:
            average_gradients(list(self.gates.parameters()), self.world_size)
        self.optimizer.step()
        return {"gate_mean": float(np.mean([v for episode in episodes for v in episode.means])),
                "gate_std": float(np.mean([v for episode in episodes for v in episode.stds])),
                "advantage": float(advantages.mean())}

    def _critic_step(self, advantages: torch.Tensor, inputs: list[tuple[int, torch.Tensor]]) -> torch.Tensor:
        """The advantages less each step's learned baseline; one Adam step of the baselines
        towards the advantages (squared error)."""
        assert self.critics is not None
        predicted = torch.stack([self.critics[block](inp).reshape(()) for block, inp in inputs])
        loss = ((predicted - advantages.detach()) ** 2).mean()
        self.critic_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.world_size > 1:
            average_gradients(list(self.critics.parameters()), self.world_size)
        self.critic_optimizer.step()
        return advantages - predicted.detach()

    def _normalized(self, advantages: torch.Tensor) -> torch.Tensor:
        """``advantages`` divided by the root of a moving average (momentum 0.99) of their square:
        a step size that does not depend on the reward's scale (rewards in the hundreds or in
        fractions give the same updates)."""
        second = (advantages ** 2).mean()
        if self.world_size > 1:
            torch.distributed.all_reduce(second)
            second = second / self.world_size
        if bool(self.advantage_scale_ready):
            self.advantage_scale = 0.99 * self.advantage_scale + 0.01 * second
        else:
            self.advantage_scale = second
            self.advantage_scale_ready = torch.ones((), dtype=torch.bool)
        return advantages / (self.advantage_scale.sqrt() + 1e-8)

    def state_dict(self) -> dict:
        return {"gates": self.gates.state_dict(), "optimizer": self.optimizer.state_dict(),
                "generator": self.generator.get_state(), "baseline": self.baseline.clone(),
                "baseline_ready": self.baseline_ready.clone(), "advantage_scale": self.advantage_scale.clone(),
                "advantage_scale_ready": self.advantage_scale_ready.clone(),
                **({} if self.critics is None else {"critics": self.critics.state_dict(),
                                                    "critic_optimizer": self.critic_optimizer.state_dict()}),
                **({} if self.vector is None else {"vector_rngs": json.dumps(self.vector.rng_states())})}

    def load_state_dict(self, state: dict) -> None:
        self.gates.load_state_dict(state["gates"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.baseline = state["baseline"].clone()
        self.baseline_ready = state["baseline_ready"].clone()
        if "advantage_scale" in state:  # checkpoints of runs without return normalisation may lack it
            self.advantage_scale = state["advantage_scale"].clone()
            self.advantage_scale_ready = state["advantage_scale_ready"].clone()
        if self.critics is not None:
            self.critics.load_state_dict(state["critics"])
            self.critic_optimizer.load_state_dict(state["critic_optimizer"])
        if self.vector is not None and "vector_rngs" in state:
            self.vector.load_rng_states(json.loads(state["vector_rngs"]))

    @classmethod
    def from_run(cls, run_dir: Path, env: Any) -> ReinforceAgent:
        """The trained gates of the finished run in ``run_dir`` (built as the run built them, then
        loaded from its checkpoint), for ``env`` (the run's task)."""
        args = {**ADDED_FLAGS, **json.loads((Path(run_dir) / "config.json").read_text())["args"]}
        with torch.random.fork_rng():  # the constructor seeds the global RNG
            gates = cls(env.observation_space, env.num_blocks, init_mean=args["init_mean"], init_std=args["init_std"],
                        seed=args["seed"], action_dim=env.action_space.shape[0], gate_dist=args["gate_dist"],
                        action_bounds=(env.action_space.low.tolist(), env.action_space.high.tolist()))
        gates.load_state_dict(load_checkpoint(Path(run_dir) / "checkpoint.pt")["agent"])
        return gates

    @classmethod
    def saved_policy(cls, run_dir: Path, env: Any) -> ActionPolicy:
        """Each gate's deterministic action (:meth:`policy`: the Gaussian's mean, a squashed gate's
        median inside the bounds): the run's choice for its block."""
        gates = cls.from_run(run_dir, env)

        @torch.no_grad()
        def reinforce_policy(obs: Any, block: int) -> np.ndarray:
            return gates.policy(obs, block)[0].reshape(-1).double().numpy()

        return reinforce_policy

    @classmethod
    def saved_tolerance_policy(cls, run_dir: Path, env: Any) -> TolerancePolicy:
        """Each gate's log10 tolerance (its deterministic action's first entry) and its std."""
        gates = cls.from_run(run_dir, env)

        def gate_policy(obs: Any, block: int) -> tuple[float, float]:
            action, spread = gates.policy(obs, block)
            return float(action[0]), float(spread[0])

        return gate_policy


@dataclasses.dataclass
class Args(CommonArgs):
    gamma: float = arg(0.99, "discount of the returns-to-go (1: the undiscounted sum of Eq. 7)")
    gate_lr: float = arg(1e-2, "Adam learning rate of the gates")
    baseline: float | None = arg(0.9, "momentum of the per-block moving-average baseline of the returns "
                                 "(--no-baseline: none)")
    no_baseline: bool = arg(False, "no moving-average baseline: the advantages are the raw returns-to-go "
                            "(overrides --baseline)")
    entropy: float = arg(0.0, "weight of an entropy bonus on the gates (0: the paper's plain REINFORCE)")
    value_baseline: bool = arg(False, "a learned baseline of the observation per block (a small MLP) on top of "
                                      "the moving average: for episodes that differ in difficulty")
    normalize_returns: bool = arg(False, "divide the advantages by a running RMS of them: updates that do not "
                                         "depend on the reward's scale (e.g. the benchmark tasks')")
    init_mean: float = arg(DEFAULT_INIT_MEAN, "initial mean of the gates' log10 tolerance")
    init_std: float = arg(DEFAULT_INIT_STD, "initial standard deviation of the gates' log10 tolerance")
    gate_dist: str = arg("squashed", "how a gate's Gaussian becomes the action: squashed (a tanh into the action "
                         "bounds, log-density corrected: no action and no gate mean can leave the bounds) or gaussian "
                         "(the paper's N(mu, sigma^2), clipped to the bounds by the env: on a reward that is flat "
                         "beyond a bound the mean can drift past it)", choices=list(GATE_DISTS))
    n_envs: int = arg(1, "episodes per update on a benchmark task (ODE or frozen-flow id): N episodes of the "
                         "task's native vector env, advanced by one batched solve per step, one REINFORCE update "
                         "from all N (Eq. 7 averaged over them); 1: one episode per update")
    gate: str = arg("auto", "gate type, set through the observation mode: cnn (CNN gates on the feature-map "
                    "observation, obs_mode=features), mlp (MLP gates on the vector observation: block one-hot and "
                    "4 batch statistics of the block input, obs_mode=vector) or auto (cnn for the CIFAR10 and "
                    "MNIST ids, as in the paper; mlp for every other id, digits included). An obs_mode in "
                    "--env-kwargs, or a resumed run's, decides instead", choices=["auto", "cnn", "mlp"])


def gate_obs_mode(gate: str, env_id: str) -> str:
    """The observation mode a gate type needs: ``cnn`` -> ``features``, ``mlp`` -> ``vector``;
    ``auto``: ``features`` (CNN gates) for the CIFAR10 and MNIST ids, ``vector`` (MLP gates on
    batch statistics) for every other id, digits included."""
    if gate == "auto":
        return "features" if env_id in PAPER_SIZED_IDS else "vector"
    return "features" if gate == "cnn" else "vector"


#: Flags added after runs were first written, with the value every run had before (a resumed
#: run whose config lacks one keeps that value).
ADDED_FLAGS = {"gate_dist": "gaussian", "n_envs": 1}


def main(argv: list[str] | None = None) -> dict:
    args = resolve_args(parse_args(Args, argv, description=__doc__), "reinforce", ADDED_FLAGS)
    if isinstance(args.n_envs, bool) or not isinstance(args.n_envs, int) or args.n_envs < 1:
        raise ValueError(f"--n-envs must be a positive integer, got {args.n_envs}")
    if not args.resume and not any(kv.startswith("obs_mode=") for kv in args.env_kwargs):
        args.env_kwargs = list(args.env_kwargs) + [f"obs_mode={gate_obs_mode(args.gate, args.env)}"]

    def make(env: Any) -> ReinforceAgent:
        return ReinforceAgent(
            env.observation_space, env.unwrapped.num_blocks, gamma=args.gamma, lr=args.gate_lr,
            baseline_momentum=None if args.no_baseline else args.baseline, entropy=args.entropy,
            init_mean=args.init_mean, init_std=args.init_std, seed=args.seed,
            action_dim=env.action_space.shape[0], normalize_returns=args.normalize_returns,
            value_baseline=args.value_baseline, gate_dist=args.gate_dist,
            action_bounds=(env.action_space.low.tolist(), env.action_space.high.tolist()),
        )

    return run_agent("reinforce", args, make, {})


if __name__ == "__main__":
    run_cli(main)
