"""The flow training step as a Gymnasium environment (DESIGN.md, "The environment contract")."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.distributed as dist
from gymnasium import spaces

from flows import SolverError
from infocnf_env.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from infocnf_env.observation import ObservationEncoder
from infocnf_env.tasks import FlowTask

DEFAULT_TOL_BOUNDS = (-8.0, -2.0)
#: Step cap per ODE solve that the env enforces unless told otherwise: a runaway solve
#: truncates the episode instead of stalling the run.
DEFAULT_MAX_NUM_STEPS = 1000
#: ``dataset`` name -> task class for model families other than the flows of ``FlowTask``
#: (same constructor keywords and methods as ``FlowTask``); filled by ``infocnf_env/__init__.py``.
TASKS: dict[str, Any] = {}


class FlowTrainingEnv(gym.Env):
    """One episode is one training iteration of a flow on one mini-batch.

    ## Description
    The flow's forward pass is a loop over N ODE blocks (``flows.FlowModel``). ``reset()``
    draws a mini-batch and runs the glue before block 0; each ``step(action)`` solves the next
    block with error tolerance ``10 ** action``; the last step computes the loss J (Eq. 4) and,
    when ``train_flow`` is true, back-propagates it and steps the flow's Adam optimizer
    (co-training). This is the paper's setting (Section 3) with the gate as the agent.

    ## Action Space
    ``Box(low, high, (1,), float32)`` holding log10 of the tolerance (atol = rtol), with
    ``(low, high) = tol_bounds`` (default ``(-8, -2)``). Out-of-bounds actions are clipped;
    a non-finite or wrongly shaped action raises ``ValueError``. The upper bound 1e-2 is
    deliberate: trained at 1e-1, a flow learns to exploit solver error (a better-looking
    training loss, a worse tight-tolerance test NLL), and the paper's reward would pay for that.

    ## Observation Space
    ``obs_mode="vector"`` (default): ``Box((N + 4,), float32)``, the one-hot block index and
    statistics of the block's input. ``obs_mode="features"``: ``Dict(block=Discrete(N + 1),
    features=Box((k, C, S, S)))``, a fixed-size view of k examples of the block's input, for
    CNN gates. See :mod:`infocnf_env.observation`.

    ## Rewards
    Step i: ``-(alpha / N) * nfe_i`` (forward NFE of block i). The last step adds
    ``-loss_weight * loss`` and ``-(alpha / N) * nfe_backward`` (Eq. 6). A failed solve gives
    ``-failure_penalty``. With ``gap_check_every = K > 0``, every K-th iteration also solves
    the same batch at tolerance 1e-5 (no gradient) and the last step adds
    ``-gap_weight * max(0, loss_at_1e-5 - loss)``: a policy is not paid for a training loss
    that only looks good because of solver error (``info["loss_gap"]`` reports the gap).

    ## Starting State
    A fresh mini-batch from the seeded training stream; block 0's input.

    ## Episode End
    Terminated after the last block. Truncated when a solve fails (step-size underflow, the
    ``max_num_steps`` cap, a non-finite state); the flow is left untouched then. A non-finite
    loss or gradient skips the flow's update (``info["skipped_update"]``, counted in
    ``skipped_updates``).

    ## Multi-process training
    After :meth:`distribute` (under ``torch.distributed``) each rank trains on its share of the
    data, gradients are averaged over the ranks and all ranks update or skip together;
    ``info["failed_ranks"]`` counts the ranks whose solve failed in this episode.

    ## Arguments
    dataset, head, arch: what to train (see ``flows``). batch_size, lr, lr_milestones
    (``((epoch, lr), ...)``: the learning rate from that epoch on), max_grad_norm: the flow's
    optimizer. alpha, loss_weight, failure_penalty: the reward. tol_bounds, obs_mode,
    feature_samples, feature_size: the spaces. train_flow (False freezes the flow: only the
    policy learns), checkpoint (a file from :meth:`save` to start from), device, data_root,
    download, seed, eval_batch_size, epochs (the nominal training length of the recipe,
    for reference). Any other keyword is a ``flows.FlowConfig`` field (hidden,
    flows_per_scale, num_scales, sup_ratio, beta, kinetic_weight, jacobian_weight, adjoint,
    solver, max_num_steps (default 1000 steps per solve), ...). A ``dataset`` named in ``TASKS``
    selects that task instead of a flow (``"spirals"``: the LatentODE, ``infocnf_env.spiral_task``).

    ## Version History
    * v0: initial version.
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        dataset: str = "digits",
        head: str = "infocnf",
        arch: str = "multiscale",
        *,
        batch_size: int = 128,
        lr: float = 1e-3,
        lr_milestones: tuple = (),
        max_grad_norm: float | None = None,
        alpha: float = 1.0,
        loss_weight: float = 1.0,
        failure_penalty: float = 10.0,
        gap_check_every: int = 0,
        gap_weight: float = 1.0,
        tol_bounds: tuple[float, float] = DEFAULT_TOL_BOUNDS,
        obs_mode: str = "vector",
        feature_samples: int = 8,
        feature_size: int | None = None,
        train_flow: bool = True,
        checkpoint: str | None = None,
        device: str = "cpu",
        data_root: str | None = None,
        download: bool = False,
        seed: int = 0,
        eval_batch_size: int | None = None,
        epochs: int | None = None,
        **flow_options: Any,
    ):
        super().__init__()
        flow_options.setdefault("max_num_steps", DEFAULT_MAX_NUM_STEPS)
        low, high = (float(b) for b in tol_bounds)
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise ValueError(f"tol_bounds must be finite log10 values with low < high, got {tol_bounds}")
        if lr <= 0:
            raise ValueError(f"lr must be positive, got {lr}")
        self.task = self._make_task(
            dataset=dataset, head=head, arch=arch, batch_size=batch_size, data_root=data_root,
            download=download, device=device, seed=seed, eval_batch_size=eval_batch_size, **flow_options,
        )
        self.model = self.task.model
        self.num_blocks = self.model.num_blocks
        self.alpha = float(alpha)
        self.loss_weight = float(loss_weight)
        self.failure_penalty = float(failure_penalty)
        self.gap_check_every = int(gap_check_every)
        self.gap_weight = float(gap_weight)
        self.train_flow = bool(train_flow)
        self.base_lr = float(lr)
        self.lr_milestones = tuple((int(e), float(v)) for e, v in lr_milestones)
        self.max_grad_norm = max_grad_norm
        self.epochs = epochs
        self.spec_kwargs = dict(dataset=dataset, head=head, arch=arch)
        self.action_space = spaces.Box(low, high, (1,), np.float32)
        self.encoder = ObservationEncoder(
            obs_mode, self.num_blocks, self.model.block_input_shapes(), feature_samples, feature_size
        )
        self.observation_space = self.encoder.space
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.base_lr)
        self.iteration = 0  # completed flow updates (or frozen-flow episodes)
        self.skipped_updates = 0
        self.solver_failures = 0
        self._generator = torch.Generator(device=self.task.device).manual_seed(seed)
        self.rank, self.world_size = 0, 1  # see distribute()
        self._state = None
        self._batch = None
        self._nfe: list[int] = []
        self._tols: list[float] = []
        if checkpoint is not None:
            self.load(checkpoint)
        self.model.train(self.train_flow)
        if not self.train_flow:
            self.model.requires_grad_(False)

    # ------------------------------------------------------------------ construction
    def _make_task(self, **kwargs: Any) -> FlowTask:
        return TASKS.get(kwargs["dataset"], FlowTask)(**kwargs)

    # ------------------------------------------------------------------ multi-process
    def distribute(self, rank: int, world_size: int) -> None:
        """Join multi-process training; ``torch.distributed`` must be initialised already.

        Rank r trains on its own share of every global batch (``task.shard``), draws its own
        Hutchinson noise and dropout masks (its generator is split off by rank; rank 0 keeps
        the single-process one), starts from rank 0's weights (broadcast), and averages the
        flow's gradients over all ranks before each Adam step (``average_gradients``: the
        mean DistributedDataParallel computes). Whether to update is agreed by all ranks
        (``_vote``): a failed solve or a non-finite loss or gradient on any rank skips the
        update on every rank, so the weights never differ between ranks.
        """
        if world_size == 1:
            return
        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError("distribute() needs an initialised torch.distributed process group")
        if not hasattr(self.task, "shard"):
            raise ValueError(f"the {self.spec_kwargs['dataset']!r} task does not support multi-process training")
        self.rank, self.world_size = int(rank), int(world_size)
        self.task.shard(self.rank, self.world_size)
        broadcast_module(self.model)
        self._split_generator()

    def _split_generator(self) -> None:
        """Ranks > 0 replace the (shared) seeded generator by one derived from it and the rank."""
        if self.rank:
            self._generator.manual_seed(rank_seed(self._generator, self.rank))

    def rank_state_dict(self) -> dict[str, Any]:
        """What differs between ranks (the noise generator); saved per rank by the runner."""
        return {"generator": self._generator.get_state()}

    def load_rank_state_dict(self, state: dict[str, Any] | None) -> None:
        """Restore this rank's state; ``None`` (none saved for this rank) splits rank 0's anew."""
        if state is None:
            self._split_generator()
        else:
            self._generator.set_state(state["generator"])

    # ------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self.task.reseed(int(self.np_random.integers(2**31 - 1)))
            self._generator.manual_seed(int(self.np_random.integers(2**31 - 1)))
            self._split_generator()
        self._set_lr()
        x, y = self.task.next_batch()
        self._batch = (x, y, self._generator.get_state())
        with torch.set_grad_enabled(self.train_flow):
            self._state = self.model.start(x, y, generator=self._generator)
        self._nfe, self._tols = [], []
        return self._observe(), {"iteration": self.iteration, "epoch": self.epoch}

    def step(self, action):
        if self._state is None:
            raise RuntimeError("call reset() before step()")
        tol = self._tolerance(action)
        block = len(self._nfe)
        try:
            with torch.set_grad_enabled(self.train_flow):
                self._state, stats = self.model.advance(self._state, tol)
        except SolverError as err:
            failed, _ = self._vote(failed=True, nonfinite=False)  # the episode ends here on this rank
            return self._fail(str(err), tol, self._rank_info(failed))
        self._nfe.append(stats.nfe)
        self._tols.append(tol)
        reward = -(self.alpha / self.num_blocks) * stats.nfe
        info: dict[str, Any] = {"nfe": stats.nfe, "tol": tol, "block": block}
        if block + 1 < self.num_blocks:
            return self._observe(), reward, False, False, info
        return self._finish(reward, info)

    # ------------------------------------------------------------------ episode end
    def _finish(self, reward: float, info: dict[str, Any]):
        state, self._state = self._state, None
        with torch.set_grad_enabled(self.train_flow):
            out = self.model.finish(state)
        loss = out.loss
        if self.gap_check_every and (self.iteration + 1) % self.gap_check_every == 0:
            try:
                info["loss_gap"] = self._loss_gap(float(loss.detach()))
            except SolverError:  # the tight reference solve failed: no gap measured this time
                info["loss_gap"] = float("nan")
            if math.isfinite(info["loss_gap"]):
                reward -= self.gap_weight * max(0.0, info["loss_gap"])
        finite_loss = bool(torch.isfinite(loss))
        failure, finite_grads = None, True
        if finite_loss and self.train_flow:
            self.optimizer.zero_grad(set_to_none=True)
            try:
                self._backward(loss)
            except SolverError as err:  # the adjoint solve of the backward pass failed
                failure = str(err)
            else:
                finite_grads = all(torch.isfinite(p.grad).all() for p in self._grad_params())
        # Multi-process: every rank learns whether any rank failed a solve or saw a non-finite
        # loss or gradient, so all ranks update (or skip) together and the weights stay identical.
        any_failed, any_nonfinite = self._vote(failed=failure is not None,
                                               nonfinite=not (finite_loss and finite_grads))
        info.update(self._rank_info(any_failed))
        if failure is not None:
            self.optimizer.zero_grad(set_to_none=True)
            return self._fail(failure, info["tol"], info)
        if any_failed or any_nonfinite:
            self.optimizer.zero_grad(set_to_none=True)
            if self.train_flow or not finite_loss:
                self.skipped_updates += 1
                info["skipped_update"] = True
        elif self.train_flow:
            self._step()
            info["skipped_update"] = False
        nfe_backward = out.nfe_backward
        loss_value = float(loss.detach())
        if math.isfinite(loss_value):
            reward += -self.loss_weight * loss_value - (self.alpha / self.num_blocks) * nfe_backward
        else:
            reward -= self.failure_penalty
        if not any_failed:  # (multi-process) an iteration counts when every rank finished its episode
            self.iteration += 1
        info.update(
            loss=loss_value, **out.metrics(), nfe_forward=sum(self._nfe), nfe_backward=nfe_backward,
            tols=list(self._tols), nfe_blocks=list(self._nfe), iteration=self.iteration, epoch=self.epoch,
            lr=self.optimizer.param_groups[0]["lr"], skipped_updates=self.skipped_updates,
            solver_failures=self.solver_failures,
        )
        return self.encoder.terminal(), float(reward), True, False, info

    def _loss_gap(self, loss: float) -> float:
        """Loss of the same batch at tolerance 1e-5 minus the loss at the chosen tolerances.

        The generator is replayed from the start of the episode, so the Hutchinson noise and
        dropout masks are the same as in the training pass: the gap is solver error alone.
        """
        x, y, generator_state = self._batch
        generator = torch.Generator(device=self.task.device)
        generator.set_state(generator_state)
        with torch.no_grad():
            tight = self.model(x, y, tol=1e-5, generator=generator)
        return float(tight.loss) - loss

    def _grad_params(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.grad is not None]

    def _backward(self, loss: torch.Tensor) -> None:
        try:
            loss.backward()
        except AssertionError as err:  # torchdiffeq reports adjoint-solve failures by assertion
            raise SolverError(str(err)[:200]) from err

    def _step(self) -> None:
        """Average the gradients over the ranks (multi-process), clip, step Adam."""
        if self.world_size > 1:
            average_gradients(list(self.model.parameters()), self.world_size)
        params = self._grad_params()
        if self.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, self.max_grad_norm)
        self.optimizer.step()

    def _vote(self, *, failed: bool, nonfinite: bool) -> tuple[int, int]:
        """How many ranks failed a solve / saw a non-finite loss or gradient this episode.

        One process: its own flags (0 or 1). Several: one ``all_reduce`` that every rank makes
        exactly once per episode (at its end, whether it finished or failed a solve).
        """
        if self.world_size == 1:
            return int(failed), int(nonfinite)
        flags = torch.tensor([float(failed), float(nonfinite)], device=self.task.device)
        dist.all_reduce(flags)
        return int(flags[0]), int(flags[1])

    def _rank_info(self, failed: int) -> dict[str, int]:
        """Multi-process only: ``info["failed_ranks"]``, the ranks whose solve failed this episode."""
        return {"failed_ranks": failed} if self.world_size > 1 else {}

    def _fail(self, message: str, tol: float, info: dict | None = None):
        self._state = None
        self.solver_failures += 1
        info = dict(info or {})
        info.update(solver_error=message, tol=tol, nfe=0, solver_failures=self.solver_failures,
                    tols=list(self._tols) + [tol])
        return self.encoder.terminal(), -self.failure_penalty, False, True, info

    # ------------------------------------------------------------------ helpers
    def _tolerance(self, action) -> float:
        arr = np.asarray(action, dtype=np.float64)
        if arr.size != 1:
            raise ValueError(f"action must hold one log10 tolerance (shape (1,)), got shape {arr.shape}")
        value = float(arr.reshape(()))
        if not math.isfinite(value):
            raise ValueError(f"action must be finite, got {value}")
        low, high = float(self.action_space.low[0]), float(self.action_space.high[0])
        return 10.0 ** min(max(value, low), high)

    def _observe(self):
        block = len(self._nfe)
        return self.encoder.encode(block, self.model.features(self._state))

    @property
    def epoch(self) -> int:
        return self.iteration // max(1, self.task.batches_per_epoch)

    def _set_lr(self) -> None:
        lr = self.base_lr
        for epoch, value in self.lr_milestones:
            if self.epoch >= epoch:
                lr = value
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    # ------------------------------------------------------------------ evaluation & state
    def evaluate(self, split: str = "test", tol: float = 1e-5, max_batches: int | None = None) -> dict[str, float]:
        """Metrics of the current flow with every block solved at ``tol`` (Section 4.2)."""
        return self.task.evaluate(split, tol, max_batches)

    def state_dict(self) -> dict[str, Any]:
        return {
            "spec": {**self.spec_kwargs, "model": self.model.spec},
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "task": self.task.state_dict(),
            "generator": self._generator.get_state(),
            "counters": {"iteration": self.iteration, "skipped_updates": self.skipped_updates,
                         "solver_failures": self.solver_failures},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        mine = {**self.spec_kwargs, "model": self.model.spec}
        differences = spec_differences(state.get("spec"), mine)
        if differences:
            raise CheckpointError(f"checkpoint was written for another model: {differences}")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.task.load_state_dict(state["task"])
        self._generator.set_state(state["generator"])
        counters = state["counters"]
        self.iteration = int(counters["iteration"])
        self.skipped_updates = int(counters["skipped_updates"])
        self.solver_failures = int(counters["solver_failures"])

    def save(self, path: str | Path) -> None:
        """Write flow, optimizer, schedule position, data order, RNG state and counters."""
        save_checkpoint({"env": self.state_dict()}, path)

    def load(self, path: str | Path) -> None:
        self.load_state_dict(load_checkpoint(path, self.task.device)["env"])


#: Options of a model's spec that change how it is trained or solved, not its weights: a
#: checkpoint loads into a model that differs from it only in these.
NON_WEIGHT_OPTIONS = frozenset({
    "solver", "adjoint", "max_num_steps", "divergence", "noise", "dropout", "beta", "kinetic_weight",
    "jacobian_weight", "segments",
})


def _flatten(spec: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(spec, dict):
        return {prefix or "spec": spec}
    out: dict[str, Any] = {}
    for key, value in spec.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        out.update(_flatten(value, name) if isinstance(value, dict) else {name: value})
    return out


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def spec_differences(theirs: Any, mine: dict[str, Any]) -> str:
    """The spec fields in which a checkpoint's model differs from this one ("" if none).

    Options in :data:`NON_WEIGHT_OPTIONS` are ignored. One line, e.g.
    ``model.config.hidden: 8 in the checkpoint, 4 here``.
    """
    if not isinstance(theirs, dict):
        return "the checkpoint holds no model spec"
    a, b = _flatten(theirs), _flatten(mine)
    missing = object()

    def duplicate(key: str) -> bool:  # model.head repeats the env's head, etc.
        top = key.split(".", 1)[-1]
        return key.startswith("model.") and top in a and top in b and \
            a.get(key, missing) == a[top] and b.get(key, missing) == b[top]

    keys = [k for k in sorted(set(a) | set(b)) if k.rsplit(".", 1)[-1] not in NON_WEIGHT_OPTIONS and not duplicate(k)]
    diffs = [(k, a.get(k, missing), b.get(k, missing)) for k in keys if a.get(k, missing) != b.get(k, missing)]
    shown = 4
    parts = [f"{k}: {'(absent)' if x is missing else _short(x)} in the checkpoint, "
             f"{'(absent)' if y is missing else _short(y)} here" for k, x, y in diffs[:shown]]
    if len(diffs) > shown:
        parts.append(f"and {len(diffs) - shown} more")
    return "; ".join(parts)


def rank_seed(generator: torch.Generator, rank: int) -> int:
    """A seed for rank ``rank`` derived from a draw of ``generator`` (deterministic, rank-distinct)."""
    draw = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
    return int(np.random.SeedSequence([draw, rank]).generate_state(1, np.uint64)[0] >> 1)


def broadcast_module(module: torch.nn.Module, src: int = 0) -> None:
    """Copy ``src``'s parameters and buffers into every rank's ``module`` (in place)."""
    with torch.no_grad():
        for tensor in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(tensor.data, src)


def average_gradients(params: list[torch.nn.Parameter], world_size: int) -> None:
    """Replace each gradient by its mean over the ranks, as DistributedDataParallel does.

    One ``all_reduce`` over a flat buffer of every parameter's gradient (zeros where this rank
    has none) plus one "has a gradient" count per parameter; the sum is divided by the world
    size (a rank without a gradient contributes zero, like an unused parameter under DDP).
    A parameter no rank has a gradient for keeps ``grad = None``, so Adam leaves it alone as in
    one process. Every rank must call this with the same parameters in the same order.
    """
    if not params:
        return
    device = params[0].device
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).to(device)
                      for p in params] + [torch.tensor([float(p.grad is not None) for p in params], device=device)])
    dist.all_reduce(flat)
    flat[: flat.numel() - len(params)] /= world_size
    counts = flat[flat.numel() - len(params):]
    offset = 0
    for p, count in zip(params, counts.tolist()):
        n = p.numel()
        p.grad = flat[offset: offset + n].view_as(p).to(p.dtype).clone() if count > 0 else None
        offset += n
