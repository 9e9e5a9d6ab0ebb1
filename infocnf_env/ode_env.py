"""Classical ODE tasks: tolerance learning in isolation on problems whose difficulty varies.

Each episode is one instance of a family of :mod:`flows.ivp` (Kepler orbits, Van der Pol,
Arenstorf, Lorenz) with its parameter drawn from the family's range; its time span is cut into
``segments`` equal segments, and each step solves one segment with the agent's action: on the
default torchode backends through :func:`flows.ode.solve_batch`, which solves the segments of
many episodes at once, each with its own tolerance and step-size control (the native vector
env, :mod:`infocnf_env.vector`; a single env is one row of it), on the others through
:func:`flows.ode.solve`, the same solve as the flows'. With ``warm_start`` (default) a segment
starts from the step the previous one accepted last, rescaled to the new tolerance
(:func:`flows.ode.rescale_step`): the episode is then one integration whose tolerance changes
at the segment ends, as a numerical analyst would run it, instead of restarting the solver's
initial-step heuristic every segment.

Besides the ``train`` and held-out ``test`` pools of instances from the families' parameter
ranges, a task has an ``ood`` pool: instances whose parameter lies beyond the training range
(:attr:`flows.ivp.Family.ood_ranges`; its scaled parameter in the observation then lies
outside [-1, 1]).

The solver is any adaptive method of any backend of :func:`flows.ode.solve` (``method``,
``backend``: torchdiffeq's integral controller, torchode's integral or PI controller, scipy's
``RK45`` / ``DOP853``); in the ``tol_method`` action mode the agent also chooses each segment's
method among ``method_choices``.

The error is measured at the end of the episode, ``max |y(T) - y_ref(T)| / max(1, max |y_ref(T)|)``,
against a reference solve of the same instance (``reference_method`` at ``reference_tol``,
cached). The reward is :class:`~infocnf_env.benchmark.BenchmarkReward` in its ``target`` form
by default: ``-(alpha / K) * nfe`` per segment and ``-error_weight`` per decade of error above
``error_target`` (why a target and not a linear weight: that class's docstring).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from flows.ivp import (
    FAMILIES,
    MAX_DIM,
    BatchDynamics,
    Instance,
    IVPDynamics,
    check_family,
    draw_instance,
    relative_error,
)
from flows.ode import (
    BATCHED_BACKENDS,
    NFECounter,
    SolverError,
    backend_methods,
    check_backend_options,
    check_method,
    is_adaptive,
    rescale_step,
    solve,
    solve_batch,
    solver_order,
)
from infocnf_env.actions import BlockAction
from infocnf_env.benchmark import (
    BenchmarkEnv,
    BenchmarkReward,
    Playthrough,
    PoolConfig,
    replace_grouped,
)
from infocnf_env.cache import cache_dir, cached
from infocnf_env.config import ODE_MAX_NUM_STEPS, SpaceConfig, check_positive_int
from infocnf_env.episode import Feedback
from infocnf_env.progress import Progress

#: Bump when instances, references or their cache layout change, so stale files are not reused.
CACHE_VERSION = 2
#: The methods the ``tol_method`` mode chooses among when ``method_choices`` is not given: each
#: backend's low, middle and high order.
DEFAULT_METHOD_CHOICES = {"torchdiffeq": ("bosh3", "dopri5", "dopri8"), "torchode": ("dopri5", "tsit5"),
                          "torchode-pi": ("dopri5", "tsit5"), "scipy": ("RK23", "RK45", "DOP853")}


@dataclass(frozen=True)
class ODEConfig:
    """One classical-ODE benchmark task; a registered id is one of these.

    Attributes:
        families: the families episodes are drawn from (in turn, so each pool holds them in
            equal shares), keys of ``flows.ivp.FAMILIES``.
        segments: K, the steps of an episode (equal time segments of the family's span).
        warm_start: a segment starts from the previous segment's last accepted step,
            rescaled to its tolerance (module docstring); ``False``: the solver's heuristic.
        method: the adaptive solver, a method of ``backend`` (``flows.ode.backend_methods``).
        backend: the episode solves' backend, a name in ``flows.ode.BACKENDS``. The default,
            ``"torchode"`` (torchdiffeq's integral step-size rule) and ``"torchode-pi"`` (a PI
            controller) solve the segments of many episodes in one batched solve
            (``flows.ode.BATCHED_BACKENDS``, the vector env's); ``"torchdiffeq"`` and ``"scipy"``
            (``RK23`` / ``RK45`` / ``DOP853``) solve one episode at a time. The references always
            use torchdiffeq.
        method_choices: the methods of ``backend`` the ``tol_method`` action mode chooses among
            (empty: :data:`DEFAULT_METHOD_CHOICES` of the backend); other modes use ``method``.
        reference_method, reference_tol: the cached reference solve of each instance.
        max_num_steps: step cap of every segment's solve (past it the episode is truncated).
        pools: the train and test pools (:class:`~infocnf_env.benchmark.PoolConfig`).
        ood_pool_size: instances of the ``ood`` pool, parameters beyond the training ranges
            (families in turn, from ``pool_seed``; 0: no such pool).
        reward: the reward (target form, 1e-4 target, 100 per decade by default).
        spaces: the action (default bounds ``(-9, -2)``) and observation (vector only).
        cache: folder of the cached references (``None``: ``infocnf_env.cache.cache_dir()``).
        seed: seeds the episode draws at construction; ``None`` (default): unseeded, as
            Gymnasium's envs; ``reset(seed=...)`` reseeds either way. The pools do not depend on it.
    """

    families: tuple[str, ...] = ("kepler",)
    segments: int = 4
    warm_start: bool = True
    method: str = "dopri5"
    backend: str = "torchode"
    method_choices: tuple[str, ...] = ()
    reference_method: str = "dopri8"
    reference_tol: float = 1e-12
    max_num_steps: int = ODE_MAX_NUM_STEPS
    pools: PoolConfig = field(default_factory=PoolConfig)
    ood_pool_size: int = 32
    reward: BenchmarkReward = field(default_factory=lambda: BenchmarkReward(
        error_form="target", error_weight=100.0, error_target=1e-4))
    spaces: SpaceConfig = field(default_factory=lambda: SpaceConfig(tol_bounds=(-9.0, -2.0), feedback=True))
    cache: str | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        families = (self.families,) if isinstance(self.families, str) else tuple(self.families)
        if not families:
            raise ValueError("families must name at least one problem family")
        for name in families:
            check_family(name)
        if len(set(families)) != len(families):
            raise ValueError(f"families must not repeat, got {list(families)}")
        object.__setattr__(self, "families", families)
        check_positive_int("segments", self.segments)
        check_positive_int("max_num_steps", self.max_num_steps)
        if isinstance(self.ood_pool_size, bool) or not isinstance(self.ood_pool_size, int) or self.ood_pool_size < 0:
            raise ValueError(f"ood_pool_size must be an integer >= 0, got {self.ood_pool_size!r}")
        check_method(self.reference_method)
        check_backend_options(self.backend, self.method, adjoint=False)
        choices = (self.method_choices,) if isinstance(self.method_choices, str) else tuple(self.method_choices)
        if not choices and self.spaces.action_mode == "tol_method":
            choices = DEFAULT_METHOD_CHOICES[self.backend]
        object.__setattr__(self, "method_choices", choices)
        for method in (self.method, *choices):
            check_backend_options(self.backend, method, adjoint=False)
            if not is_adaptive(method, self.backend):
                raise ValueError(f"method must be an adaptive solver (its tolerance is the action), got {method!r}")
        if len(set(choices)) != len(choices):
            raise ValueError(f"method_choices must not repeat, got {list(choices)}")
        if self.spaces.action_mode == "tol_method" and len(choices) < 2:
            raise ValueError(f"action_mode 'tol_method' needs at least two method_choices, got {list(choices)} "
                             f"(methods of backend {self.backend!r}: {', '.join(backend_methods(self.backend))})")
        if not (isinstance(self.reference_tol, (int, float)) and 0 < self.reference_tol < 1e-6):
            raise ValueError(f"reference_tol must be in (0, 1e-6), got {self.reference_tol!r}")
        if not isinstance(self.warm_start, bool):
            raise ValueError(f"warm_start must be True or False, got {self.warm_start!r}")
        if self.spaces.obs_mode != "vector":
            raise ValueError("the ODE tasks have vector observations only (obs_mode='vector')")
        if self.seed is not None and (not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0):
            raise ValueError(f"seed must be an integer >= 0 or None, got {self.seed!r}")

    def replace(self, **overrides: Any) -> ODEConfig:
        """A copy with fields overridden by plain name (``segments=8``, ``alpha=2``,
        ``tol_bounds=(-10, -1)``, ``test_pool_size=16``); unknown names are one ``ValueError``."""
        return replace_grouped(self, {"pools": PoolConfig, "reward": BenchmarkReward, "spaces": SpaceConfig},
                               "ODE-task", **overrides)

    def pool_key(self) -> str:
        """Cache name of the references: every field that decides the instances or their
        references, the families' definitions included (ranges, span, the right-hand side's and
        initial state's code: :meth:`flows.ivp.Family.definition`)."""
        spec = [CACHE_VERSION, [FAMILIES[f].definition() for f in self.families], asdict(self.pools),
                self.ood_pool_size, self.reference_method, self.reference_tol]
        digest = hashlib.sha1(json.dumps(spec).encode()).hexdigest()[:12]
        return f"ode-{'-'.join(self.families)}-{digest}"


def ode_pools(config: ODEConfig) -> dict[str, list[Instance]]:
    """The train, test and ood instances, drawn from ``pool_seed``: families in turn, parameters
    uniform in each family's range; the test pool continues the training pool's draw (disjoint
    instances); the ood pool is drawn apart, from the families' out-of-range parameters."""
    generator = torch.Generator().manual_seed(20_000 + config.pools.pool_seed)
    sizes = {"train": config.pools.train_pool_size, "test": config.pools.test_pool_size}
    pools: dict[str, list[Instance]] = {}
    for split, size in sizes.items():
        pools[split] = [draw_instance(config.families[i % len(config.families)], generator) for i in range(size)]
    if config.ood_pool_size:
        generator = torch.Generator().manual_seed(30_000 + config.pools.pool_seed)
        pools["ood"] = [draw_instance(config.families[i % len(config.families)], generator, out_of_range=True)
                        for i in range(config.ood_pool_size)]
    return pools


def _segment_times(instance: Instance, segments: int) -> torch.Tensor:
    return torch.linspace(0.0, instance.t_end, segments + 1, dtype=torch.float64)


def reference_solution(instance: Instance, method: str, tol: float, max_num_steps: int = 1_000_000) -> torch.Tensor:
    """``y(T)`` of ``instance`` solved in one piece with ``method`` at ``tol`` (rtol = atol)."""
    func = IVPDynamics(instance)
    t = torch.tensor([0.0, instance.t_end], dtype=torch.float64)
    (ys,) = solve(func, (instance.y0,), t, func.counter, tol=tol, method=method, max_num_steps=max_num_steps)
    return ys[-1].detach()


@dataclass(frozen=True)
class _Segment:
    """How one segment is solved: its two times, its length, the method and the first step."""

    times: torch.Tensor
    span: float
    method: str
    first_step: float | None


@dataclass
class _SegmentState:
    y: torch.Tensor
    step: float | None = None  # last accepted step (absolute time units)
    step_tol: float | None = None  # the tolerance it was accepted at
    methods: tuple[str, ...] = ()  # the method of every segment solved so far


class ODETaskEnv(BenchmarkEnv[Instance]):
    """One episode is one ODE instance, solved segment by segment at the agent's tolerances.

    ## Description
    Tolerance learning in isolation on classical test problems (module docstring): the agent
    chooses how each of the K time segments of an instance is solved, and is paid for few
    function evaluations and for meeting an accuracy target at the end.

    ## Action Space
    ``action_mode="tol"``: ``Box(low, high, (1,))``, log10 of the tolerance (rtol = atol;
    default bounds ``(-9, -2)``). ``"tol_first_step"``: ``Box((2,))``, also log10 of the first
    step as a fraction of the segment's span (it replaces the warm start). ``"tol_method"``:
    ``Box((2,))``, also the segment's method as a position in [0, 1] among ``method_choices``
    (:mod:`infocnf_env.actions`; the warm step is rescaled by the chosen method's order).

    ## Observation Space
    ``Box((K + F + 1 + 4 + 4,), float32)``: the one-hot segment index (K), the one-hot family
    (F families of the task), the instance's parameter scaled to [-1, 1] in its family's range,
    the state at the segment start (padded to 4, ``sign(y) log1p(|y|)``), and the solver's
    feedback from the previous segment (``log1p(NFE)``, log10 of its last accepted step as a
    fraction of a segment, ``log1p(rejected steps)``, log10 of its tolerance; zeros before the
    first).

    ## Rewards
    Segment i: ``-(alpha / K) * nfe_i``. The last segment adds ``-error_weight *
    max(0, log10(error / error_target))`` (``error_form="target"``, the default) or
    ``-error_weight * error`` (``"linear"``), ``error`` in ``info["error"]``. A failed solve:
    ``-failure_penalty``.

    ## Starting State
    An instance of the training pool drawn by ``np_random``; ``reset(options={"episode": i,
    "split": "test"})`` picks one of any pool (``train``, ``test``, ``ood``).

    ## Episode End
    Terminated after the last segment; truncated when a solve fails.

    ## Arguments
    ``config``: an :class:`ODEConfig`, and any of its fields or its groups' fields by name
    (``segments``, ``families``, ``alpha``, ``error_target``, ``tol_bounds``,
    ``test_pool_size``, ...); an unknown name is one ``ValueError``.

    ## Version History
    * v0: initial version; the ``ood`` pool, the scipy and torchode methods and the ``tol_method``
      mode added since (the reference cache key covers the family definitions); the default
      backend is torchode's batched solve (was torchdiffeq: its dopri5 steps past a segment's end
      and interpolates, torchode's ends its last step there, so their NFE differ;
      ``backend="torchdiffeq"`` gives the earlier episodes).
    """

    error_unit = "mean relative error at T"

    @property
    def solver_version(self) -> int:  # type: ignore[override]
        """1 on the batched backends (``flows.ode.BATCHED_BACKENDS``); bump when their solve changes."""
        return 1 if self.config.backend in BATCHED_BACKENDS else 0

    def __init__(self, config: ODEConfig | None = None, **overrides: Any):
        super().__init__()
        self.config = config = (config or ODEConfig()).replace(**overrides)
        self.spaces, self.reward_config = config.spaces, config.reward
        self.num_blocks = config.segments
        self.pools = ode_pools(config)
        self.references = self._references()
        self._setup_spaces(config.segments + len(config.families) + 1 + MAX_DIM)
        if config.seed is not None:
            self.np_random, _ = gym.utils.seeding.np_random(config.seed)

    def _references(self) -> dict[str, list[torch.Tensor]]:
        config = self.config

        path = cache_dir(config.cache) / f"{config.pool_key()}.pt"

        def build() -> dict[str, list[torch.Tensor]]:
            total = sum(len(episodes) for episodes in self.pools.values())
            progress = Progress("ODE references", total, "instances",
                                start=f"solving the references of {total} ODE instances ({config.reference_method} at "
                                      f"{config.reference_tol:g}) once; they are cached in {path.parent}")
            out: dict[str, list[torch.Tensor]] = {}
            for split, episodes in self.pools.items():
                out[split] = []
                for inst in episodes:
                    out[split].append(reference_solution(inst, config.reference_method, config.reference_tol))
                    progress.update()
            progress.finish()
            return out

        return cached(path, build, what="ODE references")

    # ------------------------------------------------------------------ the task's parts
    def _start(self, episode: Instance) -> _SegmentState:
        return _SegmentState(episode.y0)

    def method_of(self, action: BlockAction) -> str:
        """The method ``action`` solves its segment with: its pick among ``method_choices`` in the
        ``tol_method`` mode, else the task's ``method``."""
        index = action.method_index(len(self.config.method_choices))
        return self.config.method if index is None else self.config.method_choices[index]

    def own_method_position(self) -> float:
        """The middle of the task's own ``method``'s share of [0, 1] among ``method_choices``
        (the first choice's where the task's method is not one of them)."""
        choices = self.config.method_choices
        index = choices.index(self.config.method) if self.config.method in choices else 0
        return (index + 0.5) / len(choices)

    def _plan(self, play: Playthrough[Instance], action: BlockAction) -> _Segment:
        """What the next segment of ``play`` is solved over and with."""
        config, state = self.config, play.state
        segment = play.steps.block
        times = _segment_times(play.episode, config.segments)[segment: segment + 2]
        span = float(times[1] - times[0])
        method = self.method_of(action)
        first_step = None
        if action.first_step is not None:
            first_step = action.first_step * span
        elif config.warm_start and state.step is not None:
            # the previous segment's last step, rescaled for this tolerance by the error law of the
            # method that takes it (a changed method keeps the step's size, not its accuracy)
            order = solver_order(method, config.backend)
            first_step = min(rescale_step(state.step, state.step_tol, action.tol, order), span)
        return _Segment(times, span, method, first_step)

    def _after(self, play: Playthrough[Instance], action: BlockAction, plan: _Segment, y: torch.Tensor, nfe: int,
               last: float | None, accepted: int, rejected: int) -> tuple[_SegmentState, Feedback]:
        """The state after a solved segment and the solver's report of it."""
        state = play.state
        feedback = Feedback(nfe, None if last is None else last / plan.span, accepted, rejected, action.tol)
        return _SegmentState(y, last if last is not None else state.step,
                             action.tol if last is not None else state.step_tol,
                             state.methods + (plan.method,)), feedback

    def _advance(self, play: Playthrough[Instance], action: BlockAction) -> tuple[_SegmentState, Feedback]:
        """One segment through :func:`flows.ode.solve` (the backends that do not batch)."""
        plan = self._plan(play, action)
        func = IVPDynamics(play.episode)
        func.counter = counter = NFECounter()
        with torch.no_grad():
            (ys,) = solve(func, (play.state.y,), plan.times, counter, tol=action.tol, method=plan.method,
                          max_num_steps=self.config.max_num_steps, first_step=plan.first_step,
                          backend=self.config.backend)
        return self._after(play, action, plan, ys[-1], counter.forward, counter.last_step, counter.accepted,
                           counter.rejected)

    def _advance_many(self, plays: list[Playthrough[Instance]],
                      actions: list[BlockAction]) -> list[tuple[Any, Feedback] | SolverError]:
        """On torchode (``backend`` in ``flows.ode.BATCHED_BACKENDS``): every play's segment in one
        :func:`flows.ode.solve_batch` per method, each with its own span, tolerance, first step
        and step-size control (a single env is this at N = 1); other backends solve in turn."""
        controller = BATCHED_BACKENDS.get(self.config.backend)
        if controller is None:
            return super()._advance_many(plays, actions)
        plans = [self._plan(play, action) for play, action in zip(plays, actions, strict=True)]
        out: list[tuple[Any, Feedback] | SolverError] = [SolverError("not solved")] * len(plays)
        for method in dict.fromkeys(plan.method for plan in plans):
            # grouped by family, so that each family's right-hand side runs on one slice (BatchDynamics)
            rows = sorted((k for k, plan in enumerate(plans) if plan.method == method),
                          key=lambda k: plays[k].episode.family)
            dynamics = BatchDynamics([plays[k].episode for k in rows])
            first = [plans[k].first_step for k in rows]
            solution = solve_batch(
                dynamics, dynamics.pad([plays[k].state.y for k in rows]),
                torch.stack([plans[k].times[0] for k in rows]), torch.stack([plans[k].times[1] for k in rows]),
                torch.tensor([actions[k].tol for k in rows], dtype=torch.float64), method=method,
                controller=controller, max_num_steps=self.config.max_num_steps, weights=dynamics.weights,
                first_step=None if all(f is None for f in first) else torch.tensor(
                    [float("nan") if f is None else f for f in first], dtype=torch.float64))
            for position, k in enumerate(rows):
                error = solution.errors[position]
                if error is not None:
                    out[k] = SolverError(error)
                    continue
                y = solution.y[position, : dynamics.dims[position]]
                out[k] = self._after(plays[k], actions[k], plans[k], y, solution.nfe[position],
                                     solution.last_step[position], solution.accepted[position],
                                     solution.rejected[position])
        return out

    def _end_info(self, play: Playthrough[Instance]) -> dict[str, Any]:
        return {"methods": list(play.state.methods)} if self.spaces.action_mode == "tol_method" else {}

    def _error(self, play: Playthrough[Instance]) -> float:
        return relative_error(play.state.y, self.references[play.split][play.index])

    def _observe(self, play: Playthrough[Instance]) -> np.ndarray:
        config, instance = self.config, play.episode
        segment = np.zeros(config.segments, dtype=np.float32)
        segment[play.steps.block] = 1.0
        family = np.zeros(len(config.families), dtype=np.float32)
        family[config.families.index(instance.family)] = 1.0
        low, high = FAMILIES[instance.family].param_range
        param = np.array([2.0 * (instance.param - low) / (high - low) - 1.0], dtype=np.float32)
        y = play.state.y.detach().numpy().astype(np.float32)
        padded = np.zeros(MAX_DIM, dtype=np.float32)
        padded[: len(y)] = np.sign(y) * np.log1p(np.abs(y))
        return np.concatenate([segment, family, param, padded, self._feedback(play)])

    def _describe(self, play: Playthrough[Instance]) -> dict[str, Any]:
        return {"family": play.episode.family, "param": play.episode.param}

    def family_of(self, split: str, index: int) -> str:
        return self.pool(split)[index].family
