"""The frozen-flow benchmark: tolerance learning in isolation, on flows where the solver's effort matters.

A :class:`FrozenFlowEnv` holds a trained CNF fixed and two fixed pools of episodes (train and
held-out test, :mod:`infocnf_env.benchmark`); each episode is one batch of inputs, and the
agent chooses how each ODE block is solved (tolerance, and in the ``tol_first_step`` action
mode the first step). Its reward weighs the solve's NFE against its accuracy error: the mean
absolute difference of log p(x) (nats) from a tight reference solve of the same batch
(``reference_tol``, 1e-8), which is computed once per episode and cached.

The flows: FFJORD's 2-D toy densities (:mod:`flows.toy_densities`), ``num_blocks`` stacked CNF
blocks with the exact divergence and MLP dynamics of ``hidden`` units, trained by maximum
likelihood at tolerance 1e-5 on first use (:func:`toy_flow`, :func:`flows.train.fit`) and cached
in the user cache directory (:func:`infocnf_env.cache.cache_dir`); nothing is downloaded or
committed. Training runs ``train_iterations`` iterations, or, with ``plateau`` set, until the
loss stops falling (:class:`flows.train.Plateau`) with ``train_iterations`` as the cap. A task
of several densities (``densities``, e.g. ``CNF-Frozen-Mixed-v0``) holds one flow per density.

The episodes: ``train_pool_size`` and ``test_pool_size`` batches of ``batch_size`` points,
drawn once from ``pool_seed`` (the test batches continue the same draw: disjoint points).
Episode i of a pool comes from density ``i mod D`` of the task's D densities, and from one
*variant* of the input, so that the right action differs between episodes and an agent that
reads its observation can beat every constant action:

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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from flows import FlowModel, SolverError, build_model
from flows.data import BatchStream, load_dataset
from flows.ode import BATCHED_BACKENDS, check_backend_options, is_adaptive
from flows.toy_densities import TOY_DENSITIES, sample_toy
from flows.train import Plateau, fit
from infocnf_env.actions import BlockAction
from infocnf_env.benchmark import (
    BenchmarkEnv,
    BenchmarkReward,
    Playthrough,
    PoolConfig,
    replace_grouped,
)
from infocnf_env.cache import cache_dir, cached, check_writable
from infocnf_env.checkpoint import atomic_save
from infocnf_env.config import FROZEN_MAX_NUM_STEPS, SpaceConfig, check_positive_int
from infocnf_env.episode import Feedback
from infocnf_env.observation import NUM_STATS, ObservationEncoder
from infocnf_env.progress import Progress, stderr

__all__ = ["FrozenConfig", "FrozenFlowEnv", "episode_pools", "toy_flow", "trained_toy_flow"]

#: Tolerance the frozen flows are trained at (the paper's evaluation tolerance).
TRAIN_TOL = 1e-5
#: The precisions of the episodes' solves (``FrozenConfig.dtype``).
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float64": torch.float64}
VARIANTS = ("region", "scale", "noise")
#: Bump when the flow's training changes, so that stale cached flows are not reused.
FLOW_CACHE_VERSION = 2
#: Bump when pool construction or the references change.
POOL_CACHE_VERSION = 3


@dataclass(frozen=True)
class FrozenConfig:
    """One frozen-flow benchmark task; a registered id is one of these.

    Attributes:
        densities: keys of ``flows.toy_densities.TOY_DENSITIES`` (a single name is one density);
            several make a mixed task: one flow per density, episodes from each in turn, and the
            observation carries the density's one-hot.
        hidden: width of the dynamics MLP (3 layers, concatsquash, softplus).
        num_blocks: CNF blocks stacked in the flow: the decisions of an episode, one per block,
            as the paper's gates make them.
        train_iterations, train_batch_size, train_lr: maximum-likelihood training of the flow
            (Adam, every solve at 1e-5); ``train_iterations`` is the cap when ``plateau`` is set.
        plateau: train until the loss stops falling (:class:`flows.train.Plateau`); ``None``: a
            fixed ``train_iterations``.
        flow_seed: seed of the flow's initial weights and training data order.
        batch_size: inputs per episode.
        variants: the input variants of the pools (module docstring), taken in turn.
        reference_tol: tolerance of the cached reference solves.
        backend, method: the episode solves' backend, a name in ``flows.ode.BACKENDS``
            (default ``"torchode"``, torchode's dopri5 with the integral step-size rule;
            ``"torchode-pi"``: a PI step-size controller; ``"torchdiffeq"``; ``"scipy"``:
            scipy's Runge-Kutta methods), and its adaptive method
            (``flows.ode.backend_methods``); training and references use torchdiffeq's dopri5.
            With ``dtype="float64"``, the torchode backends (``flows.ode.BATCHED_BACKENDS``)
            solve the blocks of many episodes in one batch (the vector env's; a single env is
            then a batch of one); otherwise episodes are solved one at a time.
        dtype: the precision of the episodes' solves and references: ``"float64"`` (default;
            the flows, trained in float32, cast) or ``"float32"``, the flows' own. The
            trade-off: in float32 the roundoff of these trained flows is of the size of the
            accuracy errors the reward prices (the same episode solved in a batch of another
            composition, whose matrix products add in another order, ends at another log p(x)
            and may take other steps: ``throughput``'s ``invariance`` in
            ``runs/results/throughput.json``), so float32 episodes are solved one at a time;
            in float64 a batched episode is the episode solved alone (the same ``invariance``
            measures it), which is what lets the vector env batch, at the price of float64
            arithmetic.
        max_num_steps: step cap of every solve (a solve past it ends the episode, truncated).
        pools: the train and test pools (``train_pool_size``, ``test_pool_size``, ``pool_seed``).
        reward: :class:`~infocnf_env.benchmark.BenchmarkReward` in its linear form: block i
            pays ``-(alpha / N) * nfe_i``, the last block ``-error_weight * error`` (nats). The
            default weight is 3000 (one NFE is worth 1/3000 nats); docs/environment.md argues it
            from ``runs/results/benchmark.json``.
        spaces: the action (default bounds ``(-8, 0)``; ``action_mode``, ``first_step_bounds``)
            and the observation (``vector`` only).
        cache: folder of the cached flow and references (``None``: ``infocnf_env.cache.cache_dir()``).
        seed: seeds the episode draws at construction; ``None`` (default): unseeded, as
            Gymnasium's envs; ``reset(seed=...)`` reseeds either way. The flow (``flow_seed``)
            and the pools (``pool_seed``) do not depend on it.
    """

    densities: tuple[str, ...] = ("checkerboard",)
    hidden: int = 64
    num_blocks: int = 1
    train_iterations: int = 1500
    train_batch_size: int = 256
    train_lr: float = 1e-3
    plateau: Plateau | None = None
    flow_seed: int = 0
    batch_size: int = 64
    variants: tuple[str, ...] = ("region", "scale:2", "noise:0.5")
    reference_tol: float = 1e-8
    backend: str = "torchode"
    method: str = "dopri5"
    dtype: str = "float64"
    max_num_steps: int = FROZEN_MAX_NUM_STEPS
    pools: PoolConfig = field(default_factory=lambda: PoolConfig(train_pool_size=32, test_pool_size=32))
    reward: BenchmarkReward = field(default_factory=BenchmarkReward)
    spaces: SpaceConfig = field(default_factory=lambda: SpaceConfig(tol_bounds=(-8.0, 0.0), feedback=True))
    cache: str | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "densities", (self.densities,) if isinstance(self.densities, str)
                           else tuple(self.densities))
        if not self.densities:
            raise ValueError("densities must name at least one density")
        for density in self.densities:
            if density not in TOY_DENSITIES:
                raise ValueError(f"unknown density {density!r}; valid densities: {', '.join(TOY_DENSITIES)}")
        if len(set(self.densities)) != len(self.densities):
            raise ValueError(f"densities must not repeat, got {self.densities!r}")
        check_backend_options(self.backend, self.method, adjoint=False)
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if not is_adaptive(self.method, self.backend):
            raise ValueError(f"method must be an adaptive solver (its tolerance is the action), got {self.method!r}")
        if self.spaces.action_mode == "tol_method":
            raise ValueError("action_mode 'tol_method' is the ODE tasks' (valid modes here: tol, tol_first_step)")
        if self.plateau is not None and not isinstance(self.plateau, Plateau):
            raise ValueError(f"plateau must be a flows.train.Plateau or None, got {self.plateau!r}")
        if self.spaces.obs_mode != "vector":
            raise ValueError("the frozen-flow tasks have vector observations only (obs_mode='vector')")
        for name in ("hidden", "num_blocks", "train_iterations", "train_batch_size", "batch_size", "max_num_steps"):
            check_positive_int(name, getattr(self, name))
        for name in ("train_lr", "reference_tol"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < value < math.inf):
                raise ValueError(f"{name} must be a positive finite number, got {value!r}")
        if self.seed is not None and (not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0):
            raise ValueError(f"seed must be an integer >= 0 or None, got {self.seed!r}")
        object.__setattr__(self, "variants", (self.variants,) if isinstance(self.variants, str)
                           else tuple(self.variants))
        if not self.variants:
            raise ValueError("variants must name at least one input variant")
        for variant in self.variants:
            parse_variant(variant)

    def replace(self, **overrides: Any) -> FrozenConfig:
        """A copy with fields overridden by plain name (``alpha=2``, ``test_pool_size=8``,
        ``action_mode="tol_first_step"``); unknown names are one ``ValueError`` naming the valid ones."""
        return replace_grouped(self, {"pools": PoolConfig, "reward": BenchmarkReward, "spaces": SpaceConfig},
                               "frozen-benchmark", **overrides)

    def flow_key(self, density: str) -> str:
        """Cache name of ``density``'s trained flow: everything that decides its weights."""
        plateau = None if self.plateau is None else dataclasses.asdict(self.plateau)
        spec = [FLOW_CACHE_VERSION, density, self.hidden, self.num_blocks, self.train_iterations,
                self.train_batch_size, self.train_lr, self.flow_seed, plateau]
        return f"{density}-h{self.hidden}-b{self.num_blocks}-it{self.train_iterations}-" + _digest(spec)

    def pool_key(self) -> str:
        """Cache name of the references: the flows, the pools, the reference tolerance and the precision."""
        flows = [self.flow_key(d) for d in self.densities]
        spec = [POOL_CACHE_VERSION, flows, dataclasses.asdict(self.pools), self.batch_size,
                list(self.variants), self.reference_tol] + ([] if self.dtype == "float32" else [self.dtype])
        return f"{'-'.join(self.densities)}-pool-" + _digest(spec)


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


def _build_flow(config: FrozenConfig, density: str) -> FlowModel:
    num_regions = TOY_DENSITIES[density][1]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.flow_seed)
        return build_model("cnf", (2,), num_regions, "mlp", hidden=config.hidden, num_blocks=config.num_blocks,
                           divergence="exact", logit_alpha=None, num_levels=None,
                           max_num_steps=config.max_num_steps)


def toy_flow(config: FrozenConfig, density: str | None = None, *,
             log: Callable[[str], None] | None = stderr) -> FlowModel:
    """The trained flow of ``density`` (:func:`trained_toy_flow` without its training length)."""
    return trained_toy_flow(config, density, log=log)[0]


def trained_toy_flow(config: FrozenConfig, density: str | None = None, *,
                     log: Callable[[str], None] | None = stderr) -> tuple[FlowModel, int]:
    """The trained flow of ``density`` (default: the task's first; eval mode, frozen): from the
    cache, else trained and cached; with the number of iterations it was trained for.

    Training: Adam steps of maximum likelihood on batches of the density, every solve at 1e-5,
    ``train_iterations`` of them or until the loss plateaus (``config.plateau``), reported to
    ``log`` (default: stderr) as it goes, with the time left (:mod:`infocnf_env.progress`). The
    cache folder is checked before the training starts; the file is written atomically, and a
    file that does not load is reported and the flow retrained.

    Resumable: every :data:`PARTIAL_EVERY` iterations the whole training state (weights, Adam,
    the data stream's position, the noise generator, the plateau windows) goes to
    ``<key>.partial.pt`` beside the cache entry (written atomically), so an interrupted
    training (Ctrl-C, a kill) goes on from there on the next use, to exactly the weights of an
    uninterrupted one (:func:`flows.train.fit`); the file is removed once the flow is cached.
    """
    density = config.densities[0] if density is None else density
    if density not in config.densities:
        raise ValueError(f"density {density!r} is not one of the task's densities {config.densities}")
    folder = cache_dir(config.cache)
    model = _build_flow(config, density)
    path = folder / f"{config.flow_key(density)}.pt"
    partial_path = path.with_name(path.stem + PARTIAL_SUFFIX)
    budget = (f"until its loss plateaus, at most {config.train_iterations} iterations" if config.plateau
              else f"{config.train_iterations} iterations")

    def train() -> dict[str, Any]:
        data = load_dataset(density, "train", seed=config.flow_seed)
        stream = BatchStream(data, config.train_batch_size, seed=config.flow_seed)
        partial = _load_partial(partial_path, log)
        done = 0 if partial is None else int(partial["step"])
        resumed = "" if partial is None else f", going on from iteration {done} of an interrupted training"
        progress = Progress(f"{density} flow", config.train_iterations, "iterations", done=done, log=log,
                            start=f"training the frozen {density} flow once ({budget}{resumed}); it is cached in "
                                  f"{folder}")
        result = fit(model, stream, config.train_iterations, tol=TRAIN_TOL, lr=config.train_lr,
                     generator=torch.Generator().manual_seed(config.flow_seed), until=config.plateau, log_every=1,
                     log=lambda step, loss, nfe: progress.update(step, f"loss {loss:.4f}, NFE {nfe}"),
                     resume=partial, checkpoint=lambda state: atomic_save(state, partial_path),
                     checkpoint_every=PARTIAL_EVERY)
        ending = ""
        if config.plateau is not None:
            ending = (f"the loss plateaued after {result.steps} iterations" if result.plateaued
                      else f"stopped at the cap of {result.steps} iterations before a plateau")
        progress.finish(ending)
        return {"state_dict": model.state_dict(), "trained_steps": result.steps}

    check_writable(folder)
    saved = cached(path, train, what="trained frozen flow", log=log)
    partial_path.unlink(missing_ok=True)
    model.load_state_dict(saved["state_dict"])
    model.eval().requires_grad_(False)
    return model, int(saved["trained_steps"])


#: Iterations between two partial checkpoints of a frozen flow's training.
PARTIAL_EVERY = 50
#: Suffix of a partial training's file beside the cache entry (``<key>.partial.pt``).
PARTIAL_SUFFIX = ".partial.pt"


def _load_partial(path: Any, log: Callable[[str], None] | None) -> dict[str, Any] | None:
    """The state of an interrupted training, ``None`` if there is none or it does not load."""
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or "step" not in state:
            raise ValueError("not a training state")
        return state
    except Exception as err:  # torch raises many types for truncated or foreign files
        if log is not None:
            log(f"partial training {str(path)!r} is unreadable ({type(err).__name__}); training from the start")
        path.unlink(missing_ok=True)
        return None


@dataclass(frozen=True)
class Episode:
    """One episode of a pool: its inputs and where they come from."""

    index: int
    density: str
    variant: str
    region: int  # the region of ``region`` episodes, -1 otherwise
    x: torch.Tensor


def episode_pools(config: FrozenConfig) -> dict[str, list[Episode]]:
    """The task's train and test pools, drawn from ``pool_seed`` (the same for every env of the
    task): episode i from density ``i mod D`` and variant ``(i div D) mod V``, the test pool
    continuing the training pool's draw (no point is in two episodes)."""
    sizes = {"train": config.pools.train_pool_size, "test": config.pools.test_pool_size}
    total = sum(sizes.values())
    generator = torch.Generator().manual_seed(10_000 + config.pools.pool_seed)
    samples = {}
    for name in config.densities:
        x_all, labels = sample_toy(name, 400 * TOY_DENSITIES[name][1] + total * config.batch_size, generator)
        samples[name] = (x_all, labels, torch.zeros(len(x_all), dtype=torch.bool))  # points already used
    region_turn = dict.fromkeys(config.densities, 0)
    pools: dict[str, list[Episode]] = {}
    for split, size in sizes.items():
        pool = []
        for i in range(size):
            name = config.densities[i % len(config.densities)]
            x_all, labels, used = samples[name]
            variant = config.variants[(i // len(config.densities)) % len(config.variants)]
            kind, amount = parse_variant(variant)
            region = -1
            if kind == "region":
                region = region_turn[name] % TOY_DENSITIES[name][1]
                region_turn[name] += 1
                members = torch.nonzero((labels == region) & ~used).flatten()
            else:
                members = torch.nonzero(~used).flatten()
            pick = members[torch.randperm(len(members), generator=generator)[: config.batch_size]]
            used[pick] = True
            x = x_all[pick]
            if kind == "scale":
                x = x * amount
            elif kind == "noise":
                x = x + amount * torch.randn(x.shape, generator=generator)
            pool.append(Episode(i, name, variant, region, x.contiguous()))
        pools[split] = pool
    return pools


def accuracy_error(logpx: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean absolute error of log p(x) (nats) against the reference solve; inf where not finite."""
    err = float((logpx - reference).abs().mean())
    return err if math.isfinite(err) else float("inf")


class FrozenFlowEnv(BenchmarkEnv[Episode]):
    """One episode is one batch of a pool, solved block by block by a frozen flow.

    ## Description
    Tolerance learning in isolation (the module docstring): the flow never changes; the agent
    chooses how each ODE block is solved, and is paid for few function evaluations and a
    small accuracy error against a cached tight reference of the same batch.

    ## Action Space
    ``action_mode="tol"``: ``Box(low, high, (1,))``, log10 of the tolerance (default bounds
    ``(-8, 0)``). ``"tol_first_step"``: ``Box((2,))``, also log10 of the first step as a
    fraction of the block's time span (:mod:`infocnf_env.actions`).

    ## Observation Space
    ``Box((N + 4 + D' + 4,), float32)``: the one-hot block index, four statistics of the block's
    input (:mod:`infocnf_env.observation`, ``vector`` mode), on a task of D > 1 densities the
    episode's density one-hot (D' = D; D' = 0 on a single density), and the solver's feedback
    from the previous block (``log1p(NFE)``, log10 of its last accepted step where the block
    records it, ``log1p(rejected steps)``, log10 of its tolerance; zeros before the first block).

    ## Rewards
    Block i: ``-(alpha / N) * nfe_i``. The last block adds ``-error_weight * error``, where
    ``error`` is the mean |log p(x) - log p_ref(x)| over the batch in nats (``info["error"]``).
    A failed solve (step cap, underflow, non-finite state): ``-failure_penalty``. The cached
    reference's NFE is in ``info["nfe_reference"]``, never in the reward.

    ## Starting State
    An episode of the training pool, drawn uniformly by ``np_random``;
    ``reset(options={"episode": i, "split": "test"})`` picks one of either pool.

    ## Episode End
    Terminated after the last block; truncated when a solve fails.

    ## Arguments
    ``config``: a :class:`FrozenConfig`, and any of its fields or its groups' fields by name
    (``alpha``, ``error_weight``, ``action_mode``, ``test_pool_size``, ``cache``, ...); an
    unknown name is one ``ValueError``.

    ## Version History
    * v0: initial version.
    """

    error_unit = "mean |log p(x) - reference| [nats]"

    def __init__(self, config: FrozenConfig | None = None, **overrides: Any):
        super().__init__()
        self.config = config = (config or FrozenConfig()).replace(**overrides)
        self.spaces, self.reward_config = config.spaces, config.reward
        self.models: dict[str, FlowModel] = {}
        #: iterations each density's flow was trained for (``train_iterations``, or fewer on a plateau)
        self.trained_steps: dict[str, int] = {}
        for density in config.densities:
            model, self.trained_steps[density] = trained_toy_flow(config, density)
            self.models[density] = model.to(DTYPES[config.dtype])
        first = self.models[config.densities[0]]
        self.num_blocks = first.num_blocks
        dtype = DTYPES[config.dtype]  # the episodes' batches in the solves' precision
        self.pools = {split: [dataclasses.replace(e, x=e.x.to(dtype)) for e in pool]
                      for split, pool in episode_pools(config).items()}
        self.references, self.reference_nfe = self._references()
        for model in self.models.values():  # the episodes' solves; training and references use the default
            for block in model.blocks:
                block.backend, block.solver = config.backend, config.method
        self.encoder = ObservationEncoder("vector", self.num_blocks, first.block_input_shapes())
        self._density_features = len(config.densities) if len(config.densities) > 1 else 0
        self._setup_spaces(self.num_blocks + NUM_STATS + self._density_features)
        if config.seed is not None:
            self.np_random, _ = gym.utils.seeding.np_random(config.seed)

    @property
    def model(self) -> FlowModel:
        """The flow of a single-density task (``models[density]`` on a mixed one)."""
        if len(self.models) != 1:
            raise AttributeError(f"a task of {len(self.models)} densities has one flow each: use env.models[density]")
        return next(iter(self.models.values()))

    def _references(self) -> tuple[dict[str, list[torch.Tensor]], dict[str, list[int]]]:
        """Per pool and episode: log p(x) solved at ``reference_tol`` and that solve's NFE (cached)."""
        config = self.config

        def build() -> dict[str, Any]:
            logpx: dict[str, list[torch.Tensor]] = {}
            nfe: dict[str, list[int]] = {}
            total = sum(len(pool) for pool in self.pools.values())
            progress = Progress("frozen-flow references", total, "episodes",
                                start=f"solving the references of {total} pool episodes at {config.reference_tol:g} "
                                      f"once; they are cached in {cache_dir(config.cache)}")
            for split, pool in self.pools.items():
                logpx[split], nfe[split] = [], []
                for episode in pool:
                    try:
                        with torch.no_grad():
                            ref = self.models[episode.density](episode.x, tol=config.reference_tol)  # its block loop
                    except SolverError as err:
                        raise SolverError(f"the reference solve of {split} episode {episode.index} failed at "
                                          f"{config.reference_tol:g} ({err}); raise max_num_steps") from err
                    logpx[split].append(ref.logpx.detach())
                    nfe[split].append(ref.nfe_forward)
                    progress.update()
            progress.finish()
            return {"logpx": logpx, "nfe": nfe}

        saved = cached(cache_dir(config.cache) / f"{config.pool_key()}.pt", build, what="frozen-flow references")
        return saved["logpx"], {split: [int(n) for n in v] for split, v in saved["nfe"].items()}

    # ------------------------------------------------------------------ the task's parts
    def _start(self, episode: Episode) -> Any:
        with torch.no_grad():
            return self.models[episode.density].start(episode.x)

    def _advance(self, play: Playthrough[Episode], action: BlockAction) -> tuple[Any, Feedback]:
        with torch.no_grad():
            state, stats = self.models[play.episode.density].advance(play.state, action.tol,
                                                                     first_step=action.first_step)
        return state, Feedback.of_block(stats)

    def _advance_many(self, plays: list[Playthrough[Episode]],
                      actions: list[BlockAction]) -> list[tuple[Any, Feedback] | SolverError]:
        """In float64 on torchode (``backend`` in ``flows.ode.BATCHED_BACKENDS``): the plays of one
        density at one block in one :meth:`flows.FlowModel.advance_batch`, each with its own
        tolerance, first step and step-size control (a single env is this at N = 1); otherwise
        each play is solved in turn (float32 roundoff would make a play's episode depend on the
        batch it is solved in: ``FrozenConfig.dtype``)."""
        if self.config.backend not in BATCHED_BACKENDS or self.config.dtype != "float64":
            return super()._advance_many(plays, actions)
        out: list[tuple[Any, Feedback] | SolverError] = [SolverError("not solved")] * len(plays)
        groups: dict[tuple[str, int], list[int]] = {}
        for k, play in enumerate(plays):
            groups.setdefault((play.episode.density, play.state.position), []).append(k)
        for (density, _), rows in groups.items():
            solved = self.models[density].advance_batch([plays[k].state for k in rows],
                                                        [actions[k].tol for k in rows],
                                                        [actions[k].first_step for k in rows])
            for k, result in zip(rows, solved, strict=True):
                out[k] = result if isinstance(result, SolverError) else (result[0], Feedback.of_block(result[1]))
        return out

    def _error(self, play: Playthrough[Episode]) -> float:
        with torch.no_grad():
            out = self.models[play.episode.density].finish(play.state)
        return accuracy_error(out.logpx, self.references[play.split][play.index])

    def _observe(self, play: Playthrough[Episode]) -> np.ndarray:
        features = self.models[play.episode.density].features(play.state)
        encoded = np.asarray(self.encoder.encode(play.steps.block, features), dtype=np.float32)
        density = np.zeros(self._density_features, dtype=np.float32)
        if self._density_features:
            density[self.config.densities.index(play.episode.density)] = 1.0
        return np.concatenate([encoded, density, self._feedback(play)])

    def _describe(self, play: Playthrough[Episode]) -> dict[str, Any]:
        return {"density": play.episode.density, "variant": play.episode.variant}

    def family_of(self, split: str, index: int) -> str:
        return self.pool(split)[index].density

    def _end_info(self, play: Playthrough[Episode]) -> dict[str, Any]:
        return {"nfe_reference": self.reference_nfe[play.split][play.index]}
