"""The frozen-flow benchmark: tolerance learning in isolation, on flows where the solver's effort matters.

A :class:`FrozenFlowEnv` holds a trained CNF fixed and a fixed pool of episodes; each episode
is one batch of inputs, and the agent chooses how each ODE block is solved (tolerance, and in
the ``tol_first_step`` action mode the first step). Its reward weighs the solve's NFE against
its accuracy error: the mean absolute difference of log p(x) (nats) from a tight reference
solve of the same batch (``reference_tol``, 1e-8), which is computed once per episode and
cached.

The flows: FFJORD's 2-D toy densities (:mod:`flows.toy_densities`), one CNF block with the
exact divergence and MLP dynamics of ``hidden`` units, trained by maximum likelihood at
tolerance 1e-5 for ``train_iterations`` iterations on first use (:func:`toy_flow`) and cached
in the user cache directory (:func:`cache_dir`); nothing is downloaded or committed. The
default 1500 iterations do not reach convergence; how stiff each flow gets (NFE at 1e-5, the
error of a single step) is measured by the ``benchmark`` study.

The episodes: ``pool_size`` batches of ``batch_size`` points, drawn once from ``pool_seed``.
Each comes from one *variant* of the input, so that the right action differs between
episodes and an agent that reads its observation can beat every constant action:

* ``region``: points of one region of the density (a checkerboard square, a pinwheel arm,
  ...), the regions taken in turn;
* ``scale:S``: points of the density scaled by S (off the training distribution);
* ``noise:S``: points of the density plus Gaussian noise of std S.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from flows import FlowModel, SolverError, build_model
from flows.data import BatchStream, load_dataset
from flows.toy_densities import TOY_DENSITIES, sample_toy
from infocnf_env.actions import ACTION_MODES, DEFAULT_FIRST_STEP_BOUNDS, action_space, check_bounds, parse_action
from infocnf_env.observation import ObservationEncoder
from infocnf_env.tasks import check_choice

#: Tolerance the frozen flows are trained at (the paper's evaluation tolerance).
TRAIN_TOL = 1e-5
VARIANTS = ("region", "scale", "noise")
#: Bump when training or pool construction changes, so that stale cache files are not reused.
CACHE_VERSION = 1


def cache_dir() -> Path:
    """Where trained frozen flows and their references live: ``$INFOCNF_CACHE``, else
    ``$XDG_CACHE_HOME/infocnf-gym``, else ``~/.cache/infocnf-gym``."""
    if os.environ.get("INFOCNF_CACHE"):
        return Path(os.environ["INFOCNF_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "infocnf-gym"


@dataclass(frozen=True)
class FrozenConfig:
    """One frozen-flow benchmark task; a registered id is one of these.

    Attributes:
        density: a key of ``flows.toy_densities.TOY_DENSITIES``.
        hidden: width of the dynamics MLP (3 layers, concatsquash, softplus).
        train_iterations, train_batch_size, train_lr: maximum-likelihood training of the flow
            (Adam, every solve at 1e-5).
        flow_seed: seed of the flow's initial weights and training data order.
        pool_size: episodes in the pool.
        batch_size: inputs per episode.
        variants: the input variants of the pool (module docstring), taken in turn.
        pool_seed: seed of the pool's points.
        reference_tol: tolerance of the cached reference solves.
        alpha: weight of the NFE cost; block i pays ``-(alpha / N) * nfe_i``.
        error_weight: the last step pays ``-error_weight * error`` (error in nats). The default,
            3000 (one NFE is worth 3.3e-4 nats), is where the measured grids of the
            checkerboard and 8 Gaussians tasks leave an input-adaptive policy room: there the
            hindsight oracle beats the best constant first-step action by more than 10%
            (``runs/results/benchmark.json``, ``weight_sweep``).
        tol_bounds, action_mode, first_step_bounds: the action (:mod:`infocnf_env.actions`).
        max_num_steps: step cap of every solve (a solve past it ends the episode, truncated).
        failure_penalty: paid (negated) when a solve fails.
        cache: folder of the cached flow and references (``None``: :func:`cache_dir`).
        obs_mode: ``"vector"`` only (the gates of ``agents.reinforce`` set it).
        seed: seed of the episode draws until ``reset(seed=...)`` reseeds them; the flow
            (``flow_seed``) and the pool (``pool_seed``) are the same for every ``seed``.
    """

    density: str = "checkerboard"
    hidden: int = 64
    train_iterations: int = 1500
    train_batch_size: int = 256
    train_lr: float = 1e-3
    flow_seed: int = 0
    pool_size: int = 32
    batch_size: int = 64
    variants: tuple[str, ...] = ("region", "scale:2", "noise:0.5")
    pool_seed: int = 0
    reference_tol: float = 1e-8
    alpha: float = 1.0
    error_weight: float = 3000.0
    tol_bounds: tuple[float, float] = (-8.0, 0.0)
    action_mode: str = "tol"
    first_step_bounds: tuple[float, float] = DEFAULT_FIRST_STEP_BOUNDS
    max_num_steps: int = 2000
    failure_penalty: float = 100.0
    cache: str | None = None
    obs_mode: str = "vector"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.density not in TOY_DENSITIES:
            raise ValueError(f"unknown density {self.density!r}; valid densities: {', '.join(TOY_DENSITIES)}")
        check_choice("action_mode", self.action_mode, ACTION_MODES)
        check_choice("obs_mode", self.obs_mode, ("vector",))
        for name in ("hidden", "train_iterations", "train_batch_size", "pool_size", "batch_size", "max_num_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("train_lr", "reference_tol", "alpha", "error_weight", "failure_penalty"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if not self.reference_tol > 0 or not self.train_lr > 0:
            raise ValueError("reference_tol and train_lr must be positive")
        object.__setattr__(self, "tol_bounds", check_bounds("tol_bounds", self.tol_bounds))
        object.__setattr__(self, "first_step_bounds", check_bounds("first_step_bounds", self.first_step_bounds))
        object.__setattr__(self, "variants", tuple(self.variants))
        if not self.variants:
            raise ValueError("variants must name at least one input variant")
        for variant in self.variants:
            parse_variant(variant)

    def replace(self, **overrides: Any) -> FrozenConfig:
        """A copy with fields overridden; one ``ValueError`` naming unknown fields and the valid ones."""
        valid = [f.name for f in dataclasses.fields(self)]
        unknown = sorted(set(overrides) - set(valid))
        if unknown:
            raise ValueError(f"unknown frozen-benchmark kwarg(s) {unknown}; valid: {', '.join(valid)}")
        return dataclasses.replace(self, **overrides)

    def flow_key(self) -> str:
        """Cache name of the trained flow: everything that decides its weights."""
        spec = [CACHE_VERSION, self.density, self.hidden, self.train_iterations, self.train_batch_size,
                self.train_lr, self.flow_seed]
        return f"{self.density}-h{self.hidden}-it{self.train_iterations}-" + _digest(spec)

    def pool_key(self) -> str:
        """Cache name of the references: the flow, the pool and the reference tolerance."""
        spec = [self.flow_key(), self.pool_size, self.batch_size, list(self.variants), self.pool_seed,
                self.reference_tol]
        return f"{self.flow_key()}-pool-" + _digest(spec)


def _digest(spec: list) -> str:
    return hashlib.sha1(json.dumps(spec).encode()).hexdigest()[:10]


def parse_variant(variant: str) -> tuple[str, float]:
    """``"region"`` -> ``("region", 0)``; ``"scale:2"`` -> ``("scale", 2.0)``; one error otherwise."""
    kind, _, value = variant.partition(":")
    if kind not in VARIANTS or (kind == "region") != (value == ""):
        raise ValueError(f"unknown input variant {variant!r}; valid: 'region', 'scale:S', 'noise:S'")
    if kind == "region":
        return kind, 0.0
    try:
        amount = float(value)
    except ValueError:
        raise ValueError(f"input variant {variant!r} needs a number after ':'") from None
    if not (math.isfinite(amount) and amount > 0):
        raise ValueError(f"input variant {variant!r} needs a positive number after ':'")
    return kind, amount


def _build_flow(config: FrozenConfig) -> FlowModel:
    num_regions = TOY_DENSITIES[config.density][1]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.flow_seed)
        return build_model("cnf", (2,), num_regions, "mlp", hidden=config.hidden, num_blocks=1,
                           divergence="exact", logit_alpha=None, num_levels=None,
                           max_num_steps=config.max_num_steps)


def toy_flow(config: FrozenConfig, *, log: Any = None) -> FlowModel:
    """The task's trained flow (eval mode, frozen): from the cache, else trained and cached.

    Training: ``train_iterations`` Adam steps of maximum likelihood on batches of the
    density, every solve at 1e-5. The file is written atomically, so an interrupted training
    leaves no partial cache entry.
    """
    folder = Path(config.cache) if config.cache else cache_dir()
    path = folder / f"{config.flow_key()}.pt"
    model = _build_flow(config)
    if path.exists():
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    else:
        data = load_dataset(config.density, "train", seed=config.flow_seed)
        stream = BatchStream(data, config.train_batch_size, seed=config.flow_seed)
        optimizer = torch.optim.Adam(model.parameters(), lr=config.train_lr)
        generator = torch.Generator().manual_seed(config.flow_seed)
        for it in range(config.train_iterations):
            x, y = stream.next()
            out = model(x, y, tol=TRAIN_TOL, generator=generator)
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            optimizer.step()
            if log is not None and (it % 200 == 0 or it + 1 == config.train_iterations):
                log(f"{config.density}: iteration {it + 1}/{config.train_iterations}, "
                    f"loss {float(out.loss.detach()):.4f}, NFE {out.nfe_forward}")
        _atomic_save(model.state_dict(), path)
    model.eval().requires_grad_(False)
    return model


def _atomic_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


@dataclass(frozen=True)
class Episode:
    """One episode of the pool: its inputs and where they come from."""

    index: int
    variant: str
    region: int  # the region of ``region`` episodes, -1 otherwise
    x: torch.Tensor


def episode_pool(config: FrozenConfig) -> list[Episode]:
    """The task's pool, drawn from ``pool_seed`` (the same for every env of the task)."""
    name = config.density
    regions = TOY_DENSITIES[name][1]
    generator = torch.Generator().manual_seed(10_000 + config.pool_seed)
    x_all, labels = sample_toy(name, 400 * regions + config.pool_size * config.batch_size, generator)
    pool, region_turn = [], 0
    for i in range(config.pool_size):
        variant = config.variants[i % len(config.variants)]
        kind, amount = parse_variant(variant)
        region = -1
        if kind == "region":
            region = region_turn % regions
            region_turn += 1
            members = torch.nonzero(labels == region).flatten()
            pick = members[torch.randperm(len(members), generator=generator)[: config.batch_size]]
            x = x_all[pick]
        else:
            x = x_all[torch.randint(0, len(x_all), (config.batch_size,), generator=generator)]
            if kind == "scale":
                x = x * amount
            else:
                x = x + amount * torch.randn(x.shape, generator=generator)
        pool.append(Episode(i, variant, region, x.contiguous()))
    return pool


@dataclass(frozen=True)
class Solve:
    """One pass of an episode: per-example log p(x) (nats; ``None``: a solve failed) and each block's NFE."""

    logpx: torch.Tensor | None
    nfe: tuple[int, ...]


def solve_episode(model: FlowModel, x: torch.Tensor, actions: list[tuple[float, float | None]]) -> Solve:
    """Run the block loop with ``(tol, first_step)`` per block (the last one repeats)."""
    nfe: list[int] = []
    try:
        with torch.no_grad():
            state = model.start(x)
            for block in range(model.num_blocks):
                tol, first_step = actions[min(block, len(actions) - 1)]
                state, stats = model.advance(state, tol, first_step=first_step)
                nfe.append(stats.nfe)
            out = model.finish(state)
    except SolverError:
        return Solve(None, tuple(nfe))
    return Solve(out.logpx.detach(), tuple(nfe))


def accuracy_error(logpx: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean absolute error of log p(x) (nats) against the reference solve; inf where not finite."""
    err = float((logpx - reference).abs().mean())
    return err if math.isfinite(err) else float("inf")


class FrozenFlowEnv(gym.Env):
    """One episode is one batch of the pool, solved block by block by a frozen flow.

    ## Description
    Tolerance learning in isolation (the module docstring): the flow never changes; the agent
    chooses how each ODE block is solved, and is paid for few function evaluations and a
    small accuracy error against a cached tight reference of the same batch.

    ## Action Space
    ``action_mode="tol"``: ``Box(low, high, (1,))``, log10 of the tolerance (default bounds
    ``(-8, 0)``). ``"tol_first_step"``: ``Box((2,))``, also log10 of the first step as a
    fraction of the block's time span (:mod:`infocnf_env.actions`).

    ## Observation Space
    ``Box((N + 4,), float32)``: the one-hot block index and four statistics of the block's
    input (:mod:`infocnf_env.observation`, ``vector`` mode).

    ## Rewards
    Block i: ``-(alpha / N) * nfe_i``. The last block adds ``-error_weight * error``, where
    ``error`` is the mean |log p(x) - log p_ref(x)| over the batch in nats (``info["error"]``).
    A failed solve (step cap, underflow, non-finite state): ``-failure_penalty``. The cached
    reference's NFE is in ``info["nfe_reference"]``, never in the reward.

    ## Starting State
    An episode of the pool, drawn uniformly by ``np_random`` (``reset(options={"episode": i})``
    picks one).

    ## Episode End
    Terminated after the last block; truncated when a solve fails.

    ## Arguments
    ``config``: a :class:`FrozenConfig`, and any of its fields by name (``alpha``,
    ``error_weight``, ``action_mode``, ``cache``, ...); an unknown name is one ``ValueError``.

    ## Version History
    * v0: initial version.
    """

    metadata = {"render_modes": []}

    def __init__(self, config: FrozenConfig | None = None, **overrides: Any):
        super().__init__()
        self.config = config = (config or FrozenConfig()).replace(**overrides)
        self.model = toy_flow(config)
        self.num_blocks = self.model.num_blocks
        self.pool = episode_pool(config)
        self.references, self.reference_nfe = self._references()
        self.action_space = action_space(config.action_mode, config.tol_bounds, config.first_step_bounds)
        self.encoder = ObservationEncoder("vector", self.num_blocks, self.model.block_input_shapes())
        self.observation_space = self.encoder.space
        self.iteration = 0  # finished episodes
        self.solver_failures = 0
        self._np_random, _ = gym.utils.seeding.np_random(config.seed)
        self._episode: Episode | None = None
        self._state: Any = None
        self._nfe: list[int] = []
        self._actions: list[tuple[float, float | None]] = []

    def _references(self) -> tuple[list[torch.Tensor], list[int]]:
        """Per episode: log p(x) solved at ``reference_tol``, and that solve's NFE (cached on disk)."""
        config = self.config
        path = (Path(config.cache) if config.cache else cache_dir()) / f"{config.pool_key()}.pt"
        if path.exists():
            saved = torch.load(path, map_location="cpu", weights_only=True)
            return list(saved["logpx"]), [int(n) for n in saved["nfe"]]
        logpx, nfe = [], []
        for episode in self.pool:
            ref = solve_episode(self.model, episode.x, [(config.reference_tol, None)])
            if ref.logpx is None:
                raise SolverError(f"the reference solve of episode {episode.index} failed at "
                                  f"{config.reference_tol:g}; raise max_num_steps")
            logpx.append(ref.logpx)
            nfe.append(sum(ref.nfe))
        _atomic_save({"logpx": logpx, "nfe": nfe}, path)
        return logpx, nfe

    # ------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        index = (options or {}).get("episode")
        if index is None:
            index = int(self.np_random.integers(len(self.pool)))
        if not isinstance(index, (int, np.integer)) or not 0 <= index < len(self.pool):
            raise ValueError(f"options['episode'] must be an episode index in [0, {len(self.pool)}), got {index!r}")
        self._episode = self.pool[int(index)]
        with torch.no_grad():
            self._state = self.model.start(self._episode.x)
        self._nfe, self._actions = [], []
        return self._observe(), {"episode": self._episode.index, "variant": self._episode.variant}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._state is None or self._episode is None:
            raise RuntimeError("call reset() before step()")
        config = self.config
        act = parse_action(action, config.action_mode, config.tol_bounds, config.first_step_bounds)
        block = len(self._nfe)
        info: dict[str, Any] = {"block": block, "tol": act.tol, "episode": self._episode.index,
                                "variant": self._episode.variant}
        if act.first_step is not None:
            info["first_step"] = act.first_step
        try:
            with torch.no_grad():
                self._state, stats = self.model.advance(self._state, act.tol, first_step=act.first_step)
        except SolverError as err:
            self._state = None
            self.solver_failures += 1
            info.update(solver_error=str(err), nfe=0)
            return self._terminal(), -config.failure_penalty, False, True, info
        self._nfe.append(stats.nfe)
        self._actions.append((act.tol, act.first_step))
        reward = -(config.alpha / self.num_blocks) * stats.nfe
        info["nfe"] = stats.nfe
        if block + 1 < self.num_blocks:
            return self._observe(), reward, False, False, info
        with torch.no_grad():
            out = self.model.finish(self._state)
        self._state = None
        error = accuracy_error(out.logpx, self.references[self._episode.index])
        reward -= config.error_weight * error
        self.iteration += 1
        info.update(error=error, loss=float(out.loss), nfe_forward=sum(self._nfe), nfe_backward=0,
                    nfe_blocks=list(self._nfe), tols=[a[0] for a in self._actions],
                    nfe_reference=self.reference_nfe[self._episode.index])
        if config.action_mode == "tol_first_step":
            info["first_steps"] = [a[1] for a in self._actions]
        return self._terminal(), float(reward), True, False, info

    def _terminal(self) -> np.ndarray:
        return np.asarray(self.encoder.terminal(), dtype=np.float32)

    def _observe(self) -> np.ndarray:
        features = self.model.features(self._state)
        return np.asarray(self.encoder.encode(len(self._nfe), features), dtype=np.float32)

    # ------------------------------------------------------------------ scoring
    def reward_of(self, episode: int, actions: list[tuple[float, float | None]]) -> dict[str, float]:
        """Reward, NFE and error of solving pool episode ``episode`` with ``(tol, first_step)``
        per block: what an episode with those actions pays, without touching the env's state."""
        config = self.config
        result = solve_episode(self.model, self.pool[episode].x, actions)
        if result.logpx is None:
            return {"reward": -config.failure_penalty, "nfe": float(sum(result.nfe)), "error": float("inf")}
        error = accuracy_error(result.logpx, self.references[episode])
        nfe = float(sum(result.nfe))
        return {"reward": -(config.alpha / self.num_blocks) * nfe - config.error_weight * error, "nfe": nfe,
                "error": error}

    # ------------------------------------------------------------------ runner interface
    def evaluate(self, split: str = "test", tol: float = 1e-5, max_batches: int | None = None) -> dict[str, float]:
        """Mean NFE, accuracy error and reward over the pool (its first ``max_batches``
        episodes) with every block at ``tol`` (``split`` is accepted for the runner; there is one pool)."""
        episodes = range(len(self.pool) if max_batches is None else min(max_batches, len(self.pool)))
        results = [self.reward_of(i, [(tol, None)]) for i in episodes]
        return {key: float(np.mean([r[key] for r in results])) for key in ("reward", "nfe", "error")}

    def state_dict(self) -> dict[str, Any]:
        return {"config": dataclasses.asdict(self.config), "iteration": self.iteration,
                "solver_failures": self.solver_failures, "np_random": self.np_random.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        mine = dataclasses.asdict(self.config)
        if state.get("config") != mine:
            raise ValueError("checkpoint was written for another frozen-benchmark task")
        self.iteration = int(state["iteration"])
        self.solver_failures = int(state["solver_failures"])
        self.np_random.bit_generator.state = state["np_random"]

    def rank_state_dict(self) -> dict[str, Any]:
        return {}

    def load_rank_state_dict(self, state: dict[str, Any] | None) -> None:
        """Nothing differs between ranks."""

    def distribute(self, rank: int, world_size: int) -> None:
        if world_size > 1:
            raise ValueError("the frozen-flow benchmark runs in one process")
