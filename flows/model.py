"""A flow as an ordered sequence of ODE blocks with exact glue between them.

This is the one forward loop of the project (docs/design.md). Training, evaluation, the
REINFORCE trainer and the Gymnasium environment all drive it the same way::

    state = model.start(x, y)
    for i in range(model.num_blocks):
        feats = model.features(state)            # what a tolerance gate sees
        state, stats = model.advance(state, tol)  # one ODE solve
    out = model.finish(state)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from flows.cnf_block import BlockOutput, CNFBlock
from flows.heads import LatentHead
from flows.ode import EVAL_TOL, BlockStats, NFETotals, SolverError, check_tolerance
from flows.transforms import FactorOut, FlowState, LogitTransform, Transform

#: A tolerance for every block, or a function of the state before each block (see ``forward``).
Tolerance = float | Callable[[FlowState], float]


@dataclass
class FlowOutput(NFETotals):
    """What :meth:`FlowModel.finish` returns.

    Attributes:
        loss: scalar J = bits/dim + beta * cross-entropy (+ regularization), Eq. 4; with an
            ``error_weight``, also ``error_weight * error_regularization.mean()``.
        bits_per_dim: scalar mean conditional (or, for ``cnf``, plain) bits per dimension.
        xent: scalar cross-entropy of the classifier, ``None`` for ``cnf``.
        logits: ``(B, K)`` classifier logits, ``None`` for ``cnf``.
        z: ``(B, D)`` flattened latent code.
        logpx: ``(B,)`` log-density of the input x in nats (log p(x | y) for conditional heads).
        marginal_logpx: ``(B,)`` log p(x) = logsumexp_k log p(x | k) - log K (Appendix G);
            equals ``logpx`` for ``cnf``.
        regularization: ``(B, 2)`` kinetic-energy and Jacobian-Frobenius integrals.
        stats: per-block ``BlockStats`` of this pass.
        y: the labels of the pass (``None`` for ``cnf``).
        error_regularization: ``(B,)`` error-probe penalties summed over the blocks
            (:mod:`flows.error_reg`); ``None`` when no probe ran (``error_weight`` 0, or
            evaluation mode).
    """

    loss: torch.Tensor
    bits_per_dim: torch.Tensor
    xent: torch.Tensor | None
    logits: torch.Tensor | None
    z: torch.Tensor
    logpx: torch.Tensor
    marginal_logpx: torch.Tensor
    regularization: torch.Tensor
    stats: tuple[BlockStats, ...]
    y: torch.Tensor | None = None
    error_regularization: torch.Tensor | None = None

    def predictions(self) -> torch.Tensor | None:
        return None if self.logits is None else self.logits.argmax(dim=1)

    def metrics(self) -> dict[str, float]:
        """Scalar training metrics of this pass: bits/dim, and xent and error when conditional."""
        out = {"bits_per_dim": float(self.bits_per_dim.detach())}
        if self.xent is not None:
            preds = self.predictions()
            assert preds is not None and self.y is not None  # finish() sets xent, logits and y together
            out["xent"] = float(self.xent.detach())
            out["error"] = float((preds != self.y).float().mean())
        return out


class FlowModel(nn.Module):
    """Ops (transforms and CNF blocks) from data to latent, plus a latent head.

    Args:
        ops: the flow from data to latent; ``CNFBlock`` entries are the ODE blocks.
        head: prior and classifier on the flattened latent.
        data_shape: shape of one input, e.g. ``(3, 32, 32)`` or ``(64,)``.
        beta: weight of the cross-entropy in the loss (Eq. 4).
        num_levels: quantisation levels of the data for bits/dim (256 for 8-bit images,
            17 for the 8x8 digits); ``None`` for continuous data.
        regularization: weights of the kinetic-energy and Jacobian-Frobenius terms.
        error_weight: weight of the error-probe penalty (blocks built with ``error_probe``).
        spec: the ``build_model`` arguments that made this model (kept with checkpoints).
    """

    def __init__(
        self,
        ops: Sequence[nn.Module],
        head: LatentHead,
        data_shape: tuple[int, ...],
        *,
        beta: float = 1.0,
        num_levels: int | None = None,
        regularization: tuple[float, float] = (0.0, 0.0),
        error_weight: float = 0.0,
        spec: dict | None = None,
    ):
        super().__init__()
        self.ops = nn.ModuleList(ops)
        self.head = head
        self.data_shape = tuple(data_shape)
        self.beta = beta
        self.num_levels = num_levels
        self.regularization_weights = tuple(regularization)
        self.error_weight = float(error_weight)
        self.spec = dict(spec or {})
        self._block_positions = [i for i, op in enumerate(self.ops) if isinstance(op, CNFBlock)]
        self._latent_shapes = self._trace_latent_shapes()

    # ------------------------------------------------------------------ block loop
    @property
    def num_blocks(self) -> int:
        return len(self._block_positions)

    @property
    def blocks(self) -> list[CNFBlock]:
        return [op for op in self.ops if isinstance(op, CNFBlock)]  # the ops at _block_positions

    def start(
        self, x: torch.Tensor, y: torch.Tensor | None = None, *, generator: torch.Generator | None = None
    ) -> FlowState:
        """Check the inputs and run the glue that precedes the first ODE block.

        Args:
            x: ``(B, *data_shape)`` dequantised data in [0, 1] (or real-valued for toy data).
                A flow with a logit transform (``logit_alpha`` set, the default) rejects data
                outside [0, 1] with a ``ValueError``.
            y: ``(B,)`` integer labels; required by conditional heads, ignored by ``cnf``.
            generator: source of Hutchinson noise and dropout for this pass.
        """
        self._check_inputs(x, y)
        batch = x.shape[0]
        state = FlowState(
            z=x, logdet=x.new_zeros(batch), regularization=x.new_zeros(batch, 2),
            y=y.long() if y is not None and self.head.conditional else None, generator=generator,
        )
        return self._run_glue(state)

    def features(self, state: FlowState) -> torch.Tensor:
        """The input tensor of the next ODE block, ``(B, ...)``: what a tolerance gate sees."""
        if state.position >= len(self.ops):
            raise RuntimeError("all blocks have been solved; call finish()")
        return state.z

    def block_index(self, state: FlowState) -> int:
        """Index (0 .. num_blocks-1) of the block that the next ``advance`` solves."""
        return len(state.stats)

    def advance(
        self, state: FlowState, tol: float = EVAL_TOL, *, first_step: float | None = None
    ) -> tuple[FlowState, BlockStats]:
        """Solve the next ODE block at tolerance ``tol`` and run the glue after it.

        ``first_step``: the solver's first step as a fraction of the block's time span
        (``None``: the block's own choice, see :class:`flows.CNFBlock`).
        """
        tol = check_tolerance(tol)
        if state.position >= len(self.ops):
            raise RuntimeError("all blocks have been solved; call finish()")
        block = self.ops[state.position]
        return self._after_block(state, block(state.z, tol=tol, generator=state.generator, first_step=first_step))

    def advance_batch(
        self, states: Sequence[FlowState], tols: Sequence[float], first_steps: Sequence[float | None],
    ) -> list[tuple[FlowState, BlockStats] | SolverError]:
        """:meth:`advance` of N states at the same block, in one batched solve of it
        (:meth:`flows.CNFBlock.forward_batch`: a frozen block, evaluation only, each state with
        its own tolerance, first step and step-size control); per state what :meth:`advance`
        returns, or the ``SolverError`` of its failed solve."""
        if len({s.position for s in states}) != 1 or len({s.z.shape for s in states}) != 1:
            raise ValueError("advance_batch needs states at the same block, of the same shape")
        position = states[0].position
        if position >= len(self.ops):
            raise RuntimeError("all blocks have been solved; call finish()")
        block = self.ops[position]
        if not isinstance(block, CNFBlock):
            raise TypeError(f"op {position} is {type(block).__name__}, not a CNFBlock")
        outs = block.forward_batch(torch.stack([s.z for s in states]), tols, first_steps)
        return [out if isinstance(out, SolverError) else self._after_block(state, out)
                for state, out in zip(states, outs, strict=True)]

    def _after_block(self, state: FlowState, out: BlockOutput) -> tuple[FlowState, BlockStats]:
        """The state after the block ``out`` solved (its sums updated, the glue after it run)."""
        if state.logdet is None or state.regularization is None:
            raise ValueError("advance() needs a state from start(): this one has no log-determinant sums")
        error = state.error_regularization
        if out.error is not None:
            error = out.error if error is None else error + out.error
        state = replace(
            state, z=out.z, logdet=state.logdet + out.logdet,
            regularization=state.regularization + out.regularization,
            position=state.position + 1, stats=state.stats + (out.stats,), error_regularization=error,
        )
        return self._run_glue(state), out.stats

    def finish(self, state: FlowState) -> FlowOutput:
        """Prior log-probability, bits/dim, classifier and loss (Eq. 4-5)."""
        if state.position < len(self.ops):
            raise RuntimeError(f"finish() called after {len(state.stats)} of {self.num_blocks} blocks")
        z = self._flatten(state)
        head = self.head
        logpx = head.log_prior(z, state.y) + state.logdet
        bpd = self.bits_per_dim(logpx).mean()
        logits = xent = None
        marginal = logpx
        loss = bpd
        if head.conditional:
            if state.y is None:  # states from start() always carry the labels of a conditional head
                raise ValueError("a conditional head (ccnf, infocnf) needs labels y")
            assert head.num_classes is not None  # LatentHead: a conditional head has num_classes
            log_prior_all = head.log_prior_all_classes(z)
            marginal = torch.logsumexp(log_prior_all, dim=1) - math.log(head.num_classes) + state.logdet
            logits = head.logits(z, state.generator)
            xent = F.cross_entropy(logits, state.y)
            loss = loss + self.beta * xent
        kinetic_w, jacobian_w = self.regularization_weights
        if state.regularization is None:
            raise ValueError("finish() needs a state from start(): this one has no regularization integrals")
        if kinetic_w or jacobian_w:
            reg = state.regularization.mean(0)
            loss = loss + kinetic_w * reg[0] + jacobian_w * reg[1]
        if self.error_weight and state.error_regularization is not None:
            loss = loss + self.error_weight * state.error_regularization.mean()
        return FlowOutput(
            loss=loss, bits_per_dim=bpd, xent=xent, logits=logits, z=z, logpx=logpx,
            marginal_logpx=marginal, regularization=state.regularization, stats=state.stats, y=state.y,
            error_regularization=state.error_regularization,
        )

    def forward(
        self, x: torch.Tensor, y: torch.Tensor | None = None, *, tol: Tolerance = EVAL_TOL,
        generator: torch.Generator | None = None,
    ) -> FlowOutput:
        """The block loop: every block at ``tol``, or at ``tol(state)`` when it is a function.

        A function is called before each block with the state the block will start from
        (``block_index(state)``, ``features(state)``) and returns that block's tolerance: a
        gating policy at test time (Section 3.2), e.g. ``agents.evaluate.policy_tolerance``.
        """
        state = self.start(x, y, generator=generator)
        for _ in range(self.num_blocks):
            state, _ = self.advance(state, tol(state) if callable(tol) else tol)
        return self.finish(state)

    # ------------------------------------------------------------------ metrics
    @property
    def dim(self) -> int:
        return math.prod(self.data_shape)

    def bits_per_dim(self, logpx: torch.Tensor) -> torch.Tensor:
        """Convert a log-density of x in [0, 1]^D to bits per dimension of the discrete data.

        For data quantised to ``num_levels`` levels and scaled to [0, 1], the discrete
        log-likelihood is log p(x) - D log(num_levels) (FFJORD's convention).
        """
        nats = -logpx / self.dim
        if self.num_levels is not None:
            nats = nats + math.log(self.num_levels)
        return nats / math.log(2)

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def sample(
        self, y: torch.Tensor | None = None, *, num: int | None = None, tol: float = EVAL_TOL,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Class-conditional samples: z_y ~ p(z_y | y), z_u ~ N(0, I), integrated back to x.

        Args:
            y: ``(B,)`` labels (conditional heads); for ``cnf`` pass ``num`` instead.
            num: number of samples when ``y`` is ``None``.
        """
        if self.head.conditional:
            if y is None:
                raise ValueError("a conditional head needs labels y to sample")
            self._check_labels(y)
            num = y.shape[0]
        elif num is None:
            num = 1 if y is None else y.shape[0]
        reference = next(iter(list(self.parameters()) + list(self.buffers())), torch.empty(0))
        z = self.head.sample_latent(y, num, reference.device, generator, dtype=reference.dtype)
        return self.decode(z, tol=tol)

    @torch.no_grad()
    def decode(self, z: torch.Tensor, *, tol: float = EVAL_TOL) -> torch.Tensor:
        """Invert the flow: flattened latent ``(B, D)`` to data ``(B, *data_shape)``."""
        tol = check_tolerance(tol)
        state = self._unflatten(z)
        for op in reversed(self.ops):
            if isinstance(op, CNFBlock):
                state = replace(state, z=op(state.z, tol=tol, reverse=True, with_logdet=False).z)
            else:
                assert isinstance(op, Transform)  # ops are CNF blocks and transforms (class docstring)
                state = op.inverse(state)
        return state.z

    # ------------------------------------------------------------------ solver state
    def solver_state(self) -> dict[str, Any]:
        """What the solves carry between passes: each block's warm-start ``[step, tol]`` of its
        forward solve (``last_steps``) and of its adjoint solve (``backward_steps``); ``None``:
        none yet."""
        return {"last_steps": [None if b.last_step is None else list(b.last_step) for b in self.blocks],
                "backward_steps": [None if b.last_backward_step is None else list(b.last_backward_step)
                                   for b in self.blocks]}

    def load_solver_state(self, state: dict[str, Any] | None) -> None:
        """Restore :meth:`solver_state`; ``None``, a missing entry or a state of another block
        count starts afresh."""
        for key, attr in (("last_steps", "last_step"), ("backward_steps", "last_backward_step")):
            steps = (state or {}).get(key)
            if steps is None or len(steps) != self.num_blocks:
                steps = [None] * self.num_blocks
            for block, step in zip(self.blocks, steps, strict=True):
                setattr(block, attr, None if step is None else (float(step[0]), float(step[1])))

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        """Load weights; the solver state of other weights no longer applies, so it is reset."""
        result = super().load_state_dict(state_dict, strict=strict, assign=assign)
        self.load_solver_state(None)
        return result

    @property
    def device(self) -> torch.device:
        """Device of the model's parameters (CPU for a model without any)."""
        for tensor in list(self.parameters()) + list(self.buffers()):
            return tensor.device
        return torch.device("cpu")

    # ------------------------------------------------------------------ internals
    def _run_glue(self, state: FlowState) -> FlowState:
        while state.position < len(self.ops) and not isinstance(self.ops[state.position], CNFBlock):
            state = replace(self.ops[state.position](state), position=state.position + 1)
        return state

    def _flatten(self, state: FlowState) -> torch.Tensor:
        parts = list(state.factored) + [state.z]
        return torch.cat([p.reshape(p.shape[0], -1) for p in parts], dim=1)

    def _unflatten(self, z: torch.Tensor) -> FlowState:
        pieces, offset = [], 0
        for shape in self._latent_shapes:
            size = math.prod(shape)
            pieces.append(z[:, offset : offset + size].reshape(z.shape[0], *shape))
            offset += size
        return FlowState(z=pieces[-1], logdet=z.new_zeros(z.shape[0]), factored=tuple(pieces[:-1]),
                         position=len(self.ops))

    def block_input_shapes(self) -> list[tuple[int, ...]]:
        """Per-sample input shape of every ODE block, in order."""
        shape, shapes = self.data_shape, []
        for op in self.ops:
            if isinstance(op, CNFBlock):
                shapes.append(shape)
            else:
                assert isinstance(op, Transform)  # ops are CNF blocks and transforms (class docstring)
                shape = op.out_shape(shape)
        return shapes

    def _trace_latent_shapes(self) -> list[tuple[int, ...]]:
        shape, factored = self.data_shape, []
        for op in self.ops:
            if isinstance(op, FactorOut):
                factored.append(op.factored_shape(shape))
            if isinstance(op, Transform):
                shape = op.out_shape(shape)
        return factored + [shape]

    def _check_labels(self, y: torch.Tensor) -> None:
        if y.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
            raise ValueError(f"labels must be integers, got {y.dtype}")
        num_classes = self.head.num_classes
        assert num_classes is not None  # only called for conditional heads, which have num_classes
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
            raise ValueError(
                f"labels out of range: got values in [{int(y.min())}, {int(y.max())}], "
                f"valid range is [0, {num_classes - 1}]"
            )

    def _check_inputs(self, x: torch.Tensor, y: torch.Tensor | None) -> None:
        if tuple(x.shape[1:]) != self.data_shape:
            raise ValueError(
                f"wrong data shape: expected (batch, {', '.join(map(str, self.data_shape))}), "
                f"got {tuple(x.shape)}"
            )
        if self.ops and isinstance(self.ops[0], LogitTransform) and x.numel():
            # Outside [0, 1] the logit is NaN or infinite, and the first solve fails deep inside
            # the ODE solver ("underflow in dt"); one min/max over the batch catches it here.
            low, high = torch.stack(torch.aminmax(x.detach())).tolist()
            if low < 0 or high > 1:
                raise ValueError(
                    f"the logit transform needs data in [0, 1], got values in [{low:.4g}, {high:.4g}]; "
                    "for real-valued data turn it off with logit_alpha=None (a build_model / env option)"
                )
        if self.head.conditional:
            if y is None:
                raise ValueError("a conditional head (ccnf, infocnf) needs labels y")
            if y.shape != (x.shape[0],):
                raise ValueError(f"labels must have shape ({x.shape[0]},), got {tuple(y.shape)}")
            self._check_labels(y)
