"""What the tests share: tiny configs of the registered ids, small digits flows, an NFE count
kept apart from the library's, one episode loop, and the run-directory helpers of the CLI tests.

Every test module imports from here (``from flowkit import ...``; pytest puts ``tests/`` on the
path), so that a size is chosen once and a helper has one definition.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

from flows import BatchStream, SolverError, build_model, load_dataset
from infocnf_env.actions import BlockAction
from infocnf_env.benchmark import BenchmarkEnv, BenchmarkReward, Playthrough, replace_grouped
from infocnf_env.config import SpaceConfig
from infocnf_env.episode import Feedback

REPO = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------------- tiny configs
DIGITS_ID = "InfoCNF-Digits-v0"
#: The digits ids at unit-test size: 3 ODE blocks (2 scales x 1 flow) of width 4 on batches of 8,
#: evaluation batches of 64 (the env kwargs of most environment and CLI tests).
TINY = dict(batch_size=8, hidden=4, eval_batch_size=64)
#: The CIFAR10 and MNIST ids at unit-test size (fake data under ``data_root``): 2 scales x 1 flow
#: = 3 blocks (with one block the only step would also be the training step, and gymnasium's
#: step-determinism check would see the flow updated between its two trials).
TINY_IMAGE = dict(hidden=4, flows_per_scale=1, num_scales=2, batch_size=8, adjoint=False, eval_batch_size=16)
#: The vector-data ids (toy1d) at unit-test size.
TINY_VECTOR = dict(hidden=4, batch_size=8, eval_batch_size=16)
#: The spirals ids: 32 training / 16 test spirals of 20 observed + 10 continuation steps on a
#: coarse grid (length 100: the window spans 3.6 time units, so the tolerance moves the NFE).
TINY_SPIRALS = dict(num_train=32, num_test=16, length=100, window=20, extrap=10, batch_size=8, eval_batch_size=8,
                    rnn_hidden=8, dyn_hidden=8, dec_hidden=8)
#: The frozen-flow benchmark ids: a narrow flow trained 30 iterations, a pool of 4 episodes.
TINY_FROZEN = dict(hidden=8, train_iterations=30, train_pool_size=4, test_pool_size=4, batch_size=16)
#: A cheap classical-ODE task (infocnf_env.ode_env): two families, small pools, short references.
TINY_ODE = dict(families=("vdp", "lorenz"), segments=2, train_pool_size=4, test_pool_size=4, ood_pool_size=0,
                reference_tol=1e-10)


def env_kwargs(kwargs: dict[str, object]) -> list[str]:
    """``kwargs`` as the agents' ``--env-kwargs key=value ...`` flags."""
    return ["--env-kwargs", *(f"{k}={v}" for k, v in kwargs.items())]


def run_episode(env: gym.Env, actions: tuple[float, ...], seed: int | None = None) -> list[tuple]:
    """Reset, then step with ``actions`` (one log10 tolerance per block) until the episode ends.

    Returns:
        ``[(obs, reward, terminated, truncated, info), ...]`` with the reset's ``(obs, info)``
        as the first entry.
    """
    obs, info = env.reset(seed=seed)
    trace: list[tuple] = [(obs, info)]
    for action in actions:
        step = env.step(np.array([action], dtype=np.float32))
        trace.append(step)
        if step[2] or step[3]:
            break
    return trace


# ---------------------------------------------------------------------- an analytic benchmark task
@dataclass(frozen=True)
class AnalyticConfig:
    """An :class:`AnalyticTask`: its pools, per-step costs, reward and spaces (no ODE solve).

    Step k of an episode of difficulty ``c`` solved at ``tol`` (first step ``f``, a fraction of
    the step) costs ``round(s * costs[k] * tol ** -0.2)`` NFE (``s`` 1, times 0.8 with
    ``backend="torchode-pi"``, times 1.5 with ``method="bosh3"``), plus ``round(10 * |log10 f + 1|)``
    when the action holds a first step (best at ``f = 0.1``); its error is ``c * weights[k] * tol``,
    summed over the steps. A step fails (``SolverError``) where ``tol`` is below ``fail_below``. Episodes of difficulty
    below 10 are of the family ``easy``, the others ``hard``.
    """

    train: tuple[float, ...] = (1.0, 30.0, 1.0, 30.0)
    test: tuple[float, ...] = (1.0, 30.0, 1.0, 30.0)
    costs: tuple[float, ...] = (10.0, 40.0)
    weights: tuple[float, ...] = (3e4, 1e3)
    fail_below: float = 0.0
    backend: str = "torchdiffeq"
    method: str = "dopri5"
    reward: BenchmarkReward = field(default_factory=lambda: BenchmarkReward(error_weight=1.0))
    spaces: SpaceConfig = field(default_factory=lambda: SpaceConfig(tol_bounds=(-8.0, -1.0), feedback=True))
    cache: str | None = None
    seed: int | None = None

    def pool_key(self) -> str:
        return "analytic-" + hashlib.sha1(json.dumps([self.train, self.test]).encode()).hexdigest()[:10]


class AnalyticTask(BenchmarkEnv[float]):
    """A :class:`~infocnf_env.benchmark.BenchmarkEnv` whose solves are formulas
    (:class:`AnalyticConfig`): every figure of an episode can be computed by hand, and thousands
    of episodes cost a second. Observation: the step one-hot, log10 of the difficulty, feedback."""

    error_unit = "summed error"

    def __init__(self, config: AnalyticConfig | None = None, **overrides: object):
        super().__init__()
        self.config = config = replace_grouped(config or AnalyticConfig(), {"reward": BenchmarkReward,
                                                                             "spaces": SpaceConfig},
                                               "analytic-task", **overrides)
        self.spaces, self.reward_config = config.spaces, config.reward
        self.num_blocks = len(config.costs)
        self.pools = {"train": list(config.train), "test": list(config.test)}
        self._setup_spaces(self.num_blocks + 1)
        if config.seed is not None:
            self.np_random, _ = gym.utils.seeding.np_random(config.seed)

    def step_nfe(self, step: int, tol: float, first_step: float | None = None) -> int:
        """The NFE of step ``step`` at ``tol`` (and ``first_step``), by the formula."""
        extra = 0 if first_step is None else round(10 * abs(math.log10(first_step) + 1))
        scale = (0.8 if self.config.backend == "torchode-pi" else 1.0) * (1.5 if self.config.method == "bosh3" else 1.0)
        return round(scale * self.config.costs[step] * tol ** -0.2) + extra

    def by_hand(self, difficulty: float, log_tols: list[float],
                first_step: float | None = None) -> tuple[float, float, float]:
        """(reward, NFE, error) of an episode of ``difficulty`` played with one log10 tolerance per
        step (and one first step), from the formulas, not through the env's step."""
        reward = self.config.reward
        tols = [10.0 ** t for t in log_tols]
        nfes = [self.step_nfe(k, tol, first_step) for k, tol in enumerate(tols)]
        error = sum(difficulty * w * tol for w, tol in zip(self.config.weights, tols, strict=True))
        total = -sum(reward.alpha / len(tols) * n for n in nfes) - reward.error_weight * error
        return total, float(sum(nfes)), error

    def _start(self, episode: float) -> float:
        return 0.0

    def _advance(self, play: Playthrough[float], action: BlockAction) -> tuple[float, Feedback]:
        if action.tol < self.config.fail_below:
            raise SolverError(f"tolerance {action.tol:g} below {self.config.fail_below:g}")
        step = play.steps.block
        nfe = self.step_nfe(step, action.tol, action.first_step)
        return play.state + play.episode * self.config.weights[step] * action.tol, Feedback(nfe, 0.5, 3, 1, action.tol)

    def _error(self, play: Playthrough[float]) -> float:
        return float(play.state)

    def _observe(self, play: Playthrough[float]) -> np.ndarray:
        block = np.zeros(self.num_blocks, dtype=np.float32)
        block[play.steps.block] = 1.0
        return np.concatenate([block, [math.log10(play.episode)], self._feedback(play)]).astype(np.float32)

    def family_of(self, split: str, index: int) -> str:
        return "easy" if self.pool(split)[index] < 10 else "hard"


# ---------------------------------------------------------------------- digits flows
#: A 3-block InfoCNF on the 8x8 digits, narrow enough for unit tests.
DIGITS = dict(hidden=8, num_scales=2, flows_per_scale=1, num_levels=17)


def digits_batch(size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """One dequantised training batch of digits (seed 0)."""
    return BatchStream(load_dataset("digits", "train"), size, seed=0).next()


def digits_flow(**options: object) -> nn.Module:
    """The :data:`DIGITS` InfoCNF (seed 0 weights), with ``options`` over its settings."""
    torch.manual_seed(0)
    return build_model("infocnf", (1, 8, 8), 10, **{**DIGITS, **options})


def count_net_calls(model: nn.Module) -> dict[str, int]:
    """``{"n": calls}`` of the model's dynamics networks, counted by forward hooks (reset it by hand)."""
    calls = {"n": 0}

    def count(module: nn.Module, inputs: object, output: object) -> None:
        calls["n"] += 1

    for block in model.blocks:
        block.net.register_forward_hook(count)
    return calls


def perturb(module: nn.Module, std: float, seed: int = 0) -> None:
    """Random conv/linear weights of scale ``std``: dynamics far from the identity map, stiff
    enough for large ``std`` that the solver rejects steps."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g, dtype=m.weight.dtype) * std)


# ---------------------------------------------------------------------- run directories
#: CLI flags of a quiet run: no progress bar, no TensorBoard, one evaluation batch.
QUIET = ["--no-progress", "--no-tensorboard", "--eval-batches", "1"]


def cli(out: Path, *extra: str, iterations: int = 2) -> list[str]:
    """The argv of a quiet :data:`TINY` digits run of ``iterations`` into ``out``."""
    return ["--iterations", str(iterations), "--out", str(out), *QUIET, *extra, *env_kwargs(TINY)]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def without_wall_time(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "wall_time"} for r in records]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def subprocess_env() -> dict[str, str]:
    """The environment of a CLI run in a child process: one thread, this checkout first on the
    path, no ``torchrun`` variables inherited."""
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""))
    return env


def killed_after(monkeypatch: pytest.MonkeyPatch, main, argv: list[str], iteration: int) -> None:
    """Run ``main(argv)`` and kill it (as SIGKILL would) right after ``iteration`` is logged,
    before that iteration's checkpoint."""
    from agents.run_log import episode_record
    from agents.runner import Run

    original = Run.after_episode

    def after_episode(self, *args, **kwargs):
        if self.iteration + 1 == iteration:
            self.iteration += 1
            self.logger.iteration(episode_record(self.iteration, args[0], args[1], args[3], self.wall_time))
            raise SystemExit("killed")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Run, "after_episode", after_episode)
    with pytest.raises(SystemExit):
        main(argv)
    monkeypatch.undo()
