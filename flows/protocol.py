"""The block protocol: what every model driven one ODE block at a time provides.

A model is an ordered sequence of ``num_blocks`` ODE solves with exact glue between them
(docs/design.md). Training, evaluation, the policy trainers and the Gymnasium environment all
drive it with the same loop::

    state = model.start(x, y, generator=generator)
    for _ in range(model.num_blocks):
        tol = policy(model.features(state))        # what a tolerance gate sees (Section 3)
        state, stats = model.advance(state, tol)    # one ODE solve, NFE counted
    out = model.finish(state)                       # loss (Eq. 4), metrics, NFE totals

:class:`flows.FlowModel` (CNF / CCNF / InfoCNF flows) and :class:`flows.latent_ode.LatentODE`
(one block per time segment) satisfy it; ``tests/test_protocol.py`` checks both.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Protocol, TypeVar, runtime_checkable

import torch
from torch import nn

from flows.ode import EVAL_TOL, BlockStats

State = TypeVar("State")


@runtime_checkable
class PassOutput(Protocol):
    """What ``finish`` returns: the loss to minimise, per-block stats and scalar metrics."""

    loss: torch.Tensor
    stats: tuple[BlockStats, ...]

    @property
    def nfe_forward(self) -> int: ...

    @property
    def nfe_backward(self) -> int: ...

    def metrics(self) -> dict[str, float]: ...


@runtime_checkable
class BlockModel(Protocol[State]):
    """A model whose forward pass is a loop over ODE blocks (see the module docstring).

    Attributes:
        spec: the arguments that built the model, kept with checkpoints.
    """

    spec: dict[str, Any]

    @property
    def num_blocks(self) -> int: ...

    def start(
        self, x: torch.Tensor, y: torch.Tensor | None = None, *, generator: torch.Generator | None = None
    ) -> State:
        """Check the inputs and run the glue before block 0."""
        ...

    def features(self, state: State) -> torch.Tensor:
        """The input of the next block, ``(B, ...)``: what a tolerance gate sees."""
        ...

    def block_index(self, state: State) -> int:
        """Index of the block the next ``advance`` solves."""
        ...

    def advance(
        self, state: State, tol: float = EVAL_TOL, *, first_step: float | None = None
    ) -> tuple[State, BlockStats]:
        """Solve the next block at tolerance ``tol`` (atol = rtol) and run the glue after it.

        ``first_step``: the solver's first step as a fraction of the block's time span, in
        (0, 1] (``None``: the solver's initial-step heuristic, or the block's warm start).
        """
        ...

    def finish(self, state: State) -> PassOutput:
        """The loss and metrics once every block is solved."""
        ...

    def block_input_shapes(self) -> list[tuple[int, ...]]:
        """Per-sample input shape of every block, in order (sizes the observation space)."""
        ...

    def solver_state(self) -> dict[str, Any]:
        """What the solves carry from one pass to the next (warm-start steps); saved with checkpoints."""
        ...

    def load_solver_state(self, state: dict[str, Any] | None) -> None:
        """Restore :meth:`solver_state`; ``None`` (or a state that does not fit) starts afresh."""
        ...

    # The ``torch.nn.Module`` methods a trainer of the model uses.
    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]: ...

    def buffers(self, recurse: bool = True) -> Iterator[torch.Tensor]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> Any: ...

    def train(self, mode: bool = True) -> Any: ...

    def requires_grad_(self, requires_grad: bool = True) -> Any: ...
