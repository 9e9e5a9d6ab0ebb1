"""The training step of a block model as a Gymnasium environment (docs/design.md, "The environment contracts")."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch

from flows import EVAL_TOL, SolverError
from infocnf_env import distributed
from infocnf_env.actions import action_space
from infocnf_env.checkpoint import CheckpointError, load_checkpoint, save_checkpoint, spec_differences
from infocnf_env.config import DEFAULT_MAX_NUM_STEPS, EnvConfig
from infocnf_env.episode import NUM_FEEDBACK, Feedback, Steps, nfe_cost
from infocnf_env.observation import ObservationEncoder
from infocnf_env.tasks import FlowTask, ShardableTask, TaskFactory

#: ``dataset`` name -> task class for model families other than the flows of ``FlowTask``;
#: filled by ``infocnf_env/__init__.py``.
TASKS: dict[str, TaskFactory] = {}

Observation = Any
StepResult = tuple[Observation, float, bool, bool, dict[str, Any]]


class TrainingStepEnv(gym.Env):
    """One episode is one training iteration of a block model on one mini-batch.

    ## Description
    The model's forward pass is a loop over N ODE blocks (:class:`flows.BlockModel`: the
    CNF / CCNF / InfoCNF flows, or the LatentODE with one block per time segment).
    ``reset()`` draws a mini-batch and runs the glue before block 0; each ``step(action)``
    solves the next block with error tolerance ``10 ** action``; the last step computes the
    loss J (Eq. 4) and, when ``train_flow`` is true, back-propagates it and steps the model's
    Adam optimizer (co-training). This is the paper's setting (Section 3) with the gate as the
    agent.

    ## Action Space
    ``Box(low, high, (1,), float32)`` holding log10 of the tolerance (atol = rtol), with
    ``(low, high) = tol_bounds`` (default ``(-8, -2)``). With ``action_mode="tol_first_step"``
    a ``Box((2,))``: also log10 of the solver's first step as a fraction of the block's time
    span, within ``first_step_bounds`` (:mod:`infocnf_env.actions`). Out-of-bounds actions are
    clipped; a non-finite or wrongly shaped action raises ``ValueError``. The default upper
    bound 1e-2 is deliberate: trained at 1e-1, a flow learns to exploit solver error (a
    better-looking training loss, a worse tight-tolerance test NLL), and the paper's reward
    would pay for that. Wider bounds need the accuracy term below.

    ## Observation Space
    ``obs_mode="vector"`` (default): ``Box((N + 4,), float32)``, the one-hot block index and
    statistics of the block's input; with ``feedback=True``, ``Box((N + 4 + 4,))``, followed by the
    solver's feedback from the previous block (its NFE, last accepted step, rejected steps and
    tolerance, as the benchmark tasks observe it; :class:`infocnf_env.episode.Feedback`).
    ``obs_mode="features"``: ``Dict(block=Discrete(N + 1), features=Box((k, C, S, S)))``, a
    fixed-size view of k examples of the block's input, for CNN gates. See :mod:`infocnf_env.observation`.

    ## Rewards
    Step i: ``-(alpha / N) * nfe_i`` (forward NFE of block i). The last step adds
    ``-loss_weight * loss`` and ``-(alpha / N) * nfe_backward`` (Eq. 6). A failed solve gives
    ``-failure_penalty``. The accuracy term (:class:`~infocnf_env.RewardConfig`): with
    ``gap_check_every = K > 0``, every K-th iteration also solves the same batch, with the
    same noise, at ``reference_tol`` (default 1e-5, no gradient) and the last step adds
    ``-gap_weight * max(0, loss_at_reference - loss)`` (``gap_sided="two"``: the absolute
    gap): a policy is not paid for a training loss that only looks good because of solver
    error. ``info["loss_gap"]`` reports the gap and ``info["nfe_reference"]`` the reference
    solve's NFE, which is not part of the NFE cost.

    ## Starting State
    A fresh mini-batch from the training stream; block 0's input. Seeding follows Gymnasium
    (:meth:`reset`): ``reset(seed=s)`` reproduces the data order and noise, unseeded instances
    differ; the initial weights come from the config's ``seed``.

    ## Episode End
    Terminated after the last block. Truncated when a solve fails (step-size underflow, the
    ``max_num_steps`` cap, a non-finite state); the model is left untouched then. A non-finite
    loss or gradient skips the model's update (``info["skipped_update"]``, counted in
    ``skipped_updates``).

    ## Multi-process training
    After :meth:`distribute` (under ``torch.distributed``) each rank trains on its share of the
    data, gradients are averaged over the ranks and all ranks update or skip together;
    ``info["failed_ranks"]`` counts the ranks whose solve failed in this episode.

    ## Arguments
    ``config``: an :class:`~infocnf_env.EnvConfig` (default ``EnvConfig()``: InfoCNF on the
    bundled digits), and any field of it by its plain name, which overrides the config
    (:meth:`EnvConfig.replace`): ``dataset``, ``head``, ``arch``, ``batch_size``, ``lr``,
    ``alpha``, ``tol_bounds``, ``obs_mode``, ``train_flow``, ``checkpoint``, ``seed``, ... and
    the model's options (``flows.FlowConfig`` fields such as ``hidden`` or ``beta``; the
    LatentODE's for ``dataset="spirals"``). Every solve is capped at ``max_num_steps`` steps
    (default 1000). A ``dataset`` named in ``TASKS`` selects that task instead of a flow.

    ## Version History
    * v0: initial version.
    """

    metadata = {"render_modes": []}

    def __init__(self, config: EnvConfig | None = None, **overrides: Any):
        super().__init__()
        self.config = config = (config or EnvConfig()).replace(**overrides)
        model_options = {"max_num_steps": DEFAULT_MAX_NUM_STEPS, **config.model}
        task_class: TaskFactory = TASKS.get(config.data.dataset, FlowTask)
        self.task = task_class(config.head, config.arch, config.data, model_options,
                                     device=config.device, seed=config.seed)
        self.model = self.task.model
        self.num_blocks = self.model.num_blocks
        self.train_flow = config.optim.train_flow
        self.spec_kwargs = dict(dataset=config.data.dataset, head=config.head, arch=config.arch)
        self.action_space = action_space(config.spaces.action_mode, config.spaces.tol_bounds,
                                         config.spaces.first_step_bounds)
        self.encoder = ObservationEncoder(config.spaces.obs_mode, self.num_blocks, self.model.block_input_shapes(),
                                          config.spaces.feature_samples, config.spaces.feature_size,
                                          extra=NUM_FEEDBACK if config.spaces.feedback else 0)
        self.observation_space = self.encoder.space
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.optim.lr)
        self.iteration = 0  # completed model updates (or frozen-model episodes)
        self.skipped_updates = 0
        self.solver_failures = 0
        self._generator = torch.Generator(device=self.task.device).manual_seed(config.seed)
        # whether reset() or a loaded state has set the data order and noise (see reset())
        self._stream_seeded = False
        self.rank, self.world_size = 0, 1  # see distribute()
        self._state: Any = None
        self._batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self._steps = Steps()  # this episode's solved blocks (infocnf_env.episode)
        if config.checkpoint is not None:
            self.load(config.checkpoint)
        self.model.train(self.train_flow)
        if not self.train_flow:
            self.model.requires_grad_(False)

    # ------------------------------------------------------------------ multi-process
    def distribute(self, rank: int, world_size: int) -> None:
        """Join multi-process training; ``torch.distributed`` must be initialised already.

        Rank r trains on its own share of every global batch (``task.shard``), draws its own
        Hutchinson noise and dropout masks (its generator is split off by rank; rank 0 keeps
        the single-process one), starts from rank 0's weights (broadcast), and averages the
        model's gradients over all ranks before each Adam step (the mean DistributedDataParallel
        computes). Whether to update is agreed by all ranks (:meth:`_count_ranks`): a failed
        solve or a non-finite loss or gradient on any rank skips the update on every rank, so
        the weights never differ between ranks.
        """
        if world_size == 1:
            return
        if not torch.distributed.is_available() or not torch.distributed.is_initialized():
            raise RuntimeError("distribute() needs an initialised torch.distributed process group")
        if not isinstance(self.task, ShardableTask):
            raise ValueError(f"the {self.spec_kwargs['dataset']!r} task does not support multi-process training")
        self.rank, self.world_size = int(rank), int(world_size)
        self.task.shard(self.rank, self.world_size)
        distributed.broadcast_module(self.model)
        self._split_generator()

    def _split_generator(self) -> None:
        """Ranks > 0 replace the (shared) seeded generator by one derived from it and the rank."""
        if self.rank:
            self._generator.manual_seed(distributed.rank_seed(self._generator, self.rank))

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
    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Observation, dict[str, Any]]:
        """A new episode: the next mini-batch of the training stream (Gymnasium's seeding).

        ``reset(seed=s)`` restarts the data order and the solver noise from ``s``: the same
        ``s`` gives the same episodes. The first ``reset()`` without a seed (and without a
        loaded state) starts them from fresh entropy, so unseeded instances (the sub-envs of
        ``gymnasium.make_vec``, two ``gymnasium.make``) differ. The initial weights come from
        the config's ``seed`` either way.
        """
        super().reset(seed=seed)
        if seed is not None or (not self._stream_seeded and self.world_size == 1):
            # np_random: seeded from `seed`, or from OS entropy when none was ever given
            self.task.reseed(int(self.np_random.integers(2**31 - 1)))
            self._generator.manual_seed(int(self.np_random.integers(2**31 - 1)))
            self._split_generator()
            self._stream_seeded = True
        self._set_lr()
        x, y = self.task.next_batch()
        self._batch = (x, y, self._generator.get_state())
        with torch.set_grad_enabled(self.train_flow):
            self._state = self.model.start(x, y, generator=self._generator)
        self._steps = Steps()
        return self._observe(), {"iteration": self.iteration, "epoch": self.epoch}

    def step(self, action: Any) -> StepResult:
        if self._state is None:
            raise RuntimeError("call reset() before step()")
        act, info = self._steps.read(action, self.config.spaces)
        try:
            with torch.set_grad_enabled(self.train_flow):
                self._state, stats = self.model.advance(self._state, act.tol, first_step=act.first_step)
        except SolverError as err:
            failed, _ = self._count_ranks(failed=True, nonfinite=False)  # the episode ends here on this rank
            return self._fail(str(err), act.tol, self._rank_info(failed))
        reward = self._steps.record(act, Feedback.of_block(stats), self.config.reward.alpha, self.num_blocks)
        info["nfe"] = stats.nfe
        if self._steps.block < self.num_blocks:
            return self._observe(), reward, False, False, info
        return self._finish(reward, info)

    # ------------------------------------------------------------------ episode end
    def _finish(self, reward: float, info: dict[str, Any]) -> StepResult:
        """The last step: loss, solver-error check, backward, agreement of the ranks, update, reward."""
        state, self._state = self._state, None
        with torch.set_grad_enabled(self.train_flow):
            out = self.model.finish(state)
        loss = float(out.loss.detach())
        reward -= self._solver_error_charge(loss, info)
        failure, finite = self._backward(out.loss) if self.train_flow and math.isfinite(loss) else (None, True)
        failed_ranks, nonfinite_ranks = self._count_ranks(failed=failure is not None,
                                                          nonfinite=not (math.isfinite(loss) and finite))
        info.update(self._rank_info(failed_ranks))
        if failure is not None:
            self.optimizer.zero_grad(set_to_none=True)
            return self._fail(failure, info["tol"], info)
        if failed_ranks or nonfinite_ranks:
            self._skip_update(info, counts=self.train_flow or not math.isfinite(loss))
        elif self.train_flow:
            self._update()
            info["skipped_update"] = False
        reward += self._loss_reward(loss, out.nfe_backward)
        if not failed_ranks:  # (multi-process) an iteration counts when every rank finished its episode
            self.iteration += 1
        info.update(
            loss=loss, **out.metrics(), **self._steps.summary(self.config.spaces), nfe_backward=out.nfe_backward,
            iteration=self.iteration, epoch=self.epoch,
            nfe_reference=info.get("nfe_reference", 0),
            lr=self.optimizer.param_groups[0]["lr"], skipped_updates=self.skipped_updates,
            solver_failures=self.solver_failures,
        )
        return self.encoder.terminal(), float(reward), True, False, info

    def _loss_reward(self, loss: float, nfe_backward: int) -> float:
        """Last-step reward: ``-loss_weight * loss`` minus the backward NFE cost (Eq. 6), or the
        failure penalty for a non-finite loss."""
        reward = self.config.reward
        if not math.isfinite(loss):
            return -reward.failure_penalty
        return -reward.loss_weight * loss - nfe_cost(nfe_backward, reward.alpha, self.num_blocks)

    def _solver_error_charge(self, loss: float, info: dict[str, Any]) -> float:
        """The accuracy term (:class:`RewardConfig`): every ``gap_check_every``-th iteration,
        ``gap_weight`` times the one- or two-sided loss gap; the gap and the reference solve's
        NFE go to ``info`` (``loss_gap``, ``nfe_reference``)."""
        reward = self.config.reward
        if not reward.gap_check_every or (self.iteration + 1) % reward.gap_check_every:
            return 0.0
        try:
            info["loss_gap"], info["nfe_reference"] = self._loss_gap(loss)
        except SolverError:  # the tight reference solve failed: no gap measured this time
            info["loss_gap"] = float("nan")
        gap = info["loss_gap"]
        if not math.isfinite(gap):
            return 0.0
        return reward.gap_weight * (abs(gap) if reward.gap_sided == "two" else max(0.0, gap))

    def _loss_gap(self, loss: float) -> tuple[float, int]:
        """Loss of the same batch at ``reference_tol`` minus the loss at the chosen actions, and
        the reference solve's forward NFE.

        The generator is replayed from the start of the episode, so the Hutchinson noise and
        dropout masks are the same as in the training pass: the gap is solver error alone.
        """
        assert self._batch is not None  # set by reset()
        x, y, generator_state = self._batch
        generator = torch.Generator(device=self.task.device)
        generator.set_state(generator_state)
        with torch.no_grad():
            tight = self.model(x, y, tol=self.config.reward.reference_tol, generator=generator)
        return float(tight.loss) - loss, tight.nfe_forward

    def _backward(self, loss: torch.Tensor) -> tuple[str | None, bool]:
        """Back-propagate the loss: (the adjoint solve's failure or ``None``, all gradients finite)."""
        self.optimizer.zero_grad(set_to_none=True)
        try:
            loss.backward()
        except AssertionError as err:  # torchdiffeq reports adjoint-solve failures by assertion
            return str(err)[:200], True
        except SolverError as err:
            return str(err), True
        return None, all(bool(torch.isfinite(p.grad).all()) for p in self._grad_params() if p.grad is not None)

    def _grad_params(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.grad is not None]

    def _update(self) -> None:
        """Average the gradients over the ranks (multi-process), clip, step Adam."""
        if self.world_size > 1:
            distributed.average_gradients(list(self.model.parameters()), self.world_size)
        params = self._grad_params()
        if self.config.optim.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, self.config.optim.max_grad_norm)
        self.optimizer.step()

    def _skip_update(self, info: dict[str, Any], *, counts: bool) -> None:
        """Drop the gradients; ``counts``: record the skip (a frozen model with a finite loss has none)."""
        self.optimizer.zero_grad(set_to_none=True)
        if counts:
            self.skipped_updates += 1
            info["skipped_update"] = True

    def _count_ranks(self, *, failed: bool, nonfinite: bool) -> tuple[int, int]:
        """How many ranks failed a solve / saw a non-finite loss or gradient this episode.

        One process: its own flags (0 or 1). Several: one collective that every rank makes
        exactly once per episode (at its end, whether it finished or failed a solve).
        """
        if self.world_size == 1:
            return int(failed), int(nonfinite)
        failed_ranks, nonfinite_ranks = distributed.count_ranks([failed, nonfinite], self.task.device)
        return failed_ranks, nonfinite_ranks

    def _rank_info(self, failed: int) -> dict[str, int]:
        """Multi-process only: ``info["failed_ranks"]``, the ranks whose solve failed this episode."""
        return {"failed_ranks": failed} if self.world_size > 1 else {}

    def _fail(self, message: str, tol: float, info: dict | None = None) -> StepResult:
        self._state = None
        self.solver_failures += 1
        info = dict(info or {})
        info.update(solver_error=message, tol=tol, nfe=0, solver_failures=self.solver_failures,
                    tols=[a.tol for a in self._steps.actions] + [tol])
        return self.encoder.terminal(), -self.config.reward.failure_penalty, False, True, info

    # ------------------------------------------------------------------ helpers
    def _observe(self) -> Observation:
        return self.encoder.encode(self._steps.block, self.model.features(self._state),
                                   self._steps.observed_feedback(self.config.spaces))

    @property
    def epoch(self) -> int:
        return self.iteration // max(1, self.task.batches_per_epoch)

    def _set_lr(self) -> None:
        lr = self.config.optim.lr
        for epoch, value in self.config.optim.lr_milestones:
            if self.epoch >= epoch:
                lr = value
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    # ------------------------------------------------------------------ evaluation & state
    def evaluate(self, split: str = "test", tol: float = EVAL_TOL, max_batches: int | None = None) -> dict[str, float]:
        """Metrics of the current model with every block solved at ``tol`` (Section 4.2)."""
        return self.task.evaluate(split, tol, max_batches)

    def state_dict(self) -> dict[str, Any]:
        return {
            "spec": {**self.spec_kwargs, "model": self.model.spec},
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "task": self.task.state_dict(),
            "generator": self._generator.get_state(),
            "solver": self.model.solver_state(),
            "counters": {"iteration": self.iteration, "skipped_updates": self.skipped_updates,
                         "solver_failures": self.solver_failures},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        mine = {**self.spec_kwargs, "model": self.model.spec}
        differences = spec_differences(state.get("spec"), mine)
        if differences:
            raise CheckpointError(f"checkpoint was written for another model: {differences}")
        self.model.load_state_dict(state["model"])
        self.model.load_solver_state(state.get("solver"))
        self.optimizer.load_state_dict(state["optimizer"])
        self.task.load_state_dict(state["task"])
        self._generator.set_state(state["generator"])
        self._stream_seeded = True
        counters = state["counters"]
        self.iteration = int(counters["iteration"])
        self.skipped_updates = int(counters["skipped_updates"])
        self.solver_failures = int(counters["solver_failures"])

    def save(self, path: str | Path) -> None:
        """Write model, optimizer, schedule position, data order, RNG state and counters."""
        save_checkpoint({"env": self.state_dict()}, path)

    def load(self, path: str | Path) -> None:
        self.load_state_dict(load_checkpoint(path, self.task.device)["env"])
