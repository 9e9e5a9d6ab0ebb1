"""One adaptive ODE solve with exact NFE accounting and uniform failure reporting.

Every ODE solve in the project (CNF blocks, the LatentODE) goes through :func:`solve`, so
forward and backward NFE are counted one way and a failed solve always surfaces as
:class:`SolverError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torchdiffeq import odeint, odeint_adjoint
from torchdiffeq._impl.odeint import SOLVERS as _TORCHDIFFEQ_SOLVERS
from torchdiffeq._impl.solvers import AdaptiveStepsizeODESolver

#: Solver names accepted everywhere a ``method`` is configured (torchdiffeq's registry).
SOLVER_NAMES: tuple[str, ...] = tuple(sorted(_TORCHDIFFEQ_SOLVERS))


class SolverError(RuntimeError):
    """An ODE solve failed: step-size underflow, step cap exceeded or a non-finite state."""


@dataclass
class NFECounter:
    """Counts function evaluations of one solve, split into forward and backward passes.

    ``forward`` counts evaluations made while the forward solve runs. ``backward`` counts
    evaluations the backward pass costs: with the adjoint method the evaluations made by the
    adjoint solve; with direct back-propagation every recorded evaluation that the gradient
    flows through (counted by a tensor hook, so it is exact, not assumed).
    """

    forward: int = 0
    backward: int = 0
    #: Size of the last step the forward solve accepted (``None`` until one is; adaptive solvers).
    last_step: float | None = None
    _forward_done: bool = field(default=False, repr=False)

    def record_call(self, output: torch.Tensor) -> None:
        if self._forward_done:
            self.backward += 1
            return
        self.forward += 1
        if output.requires_grad and torch.is_grad_enabled():
            output.register_hook(self._on_backward)

    def _on_backward(self, grad: torch.Tensor) -> None:
        self.backward += 1

    def close_forward(self) -> None:
        self._forward_done = True

    def accept_step(self, dt: torch.Tensor) -> None:
        """Record an accepted step of the forward solve (torchdiffeq's ``callback_accept_step``)."""
        if not self._forward_done:
            self.last_step = abs(float(dt.detach()))


def check_tolerance(tol: float) -> float:
    """Return ``tol`` as a float or raise ``ValueError`` if it is not finite and positive."""
    try:
        value = float(tol)
    except (TypeError, ValueError):
        raise ValueError(f"tolerance must be a positive finite number, got {tol!r}") from None
    if not (value > 0.0 and value < float("inf")):
        raise ValueError(f"tolerance must be a positive finite number, got {tol!r}")
    return value


def check_method(method: str) -> str:
    if method not in _TORCHDIFFEQ_SOLVERS:
        raise ValueError(f"unknown solver {method!r}; valid solvers: {', '.join(SOLVER_NAMES)}")
    return method


def is_adaptive(method: str) -> bool:
    return issubclass(_TORCHDIFFEQ_SOLVERS[method], AdaptiveStepsizeODESolver)


def solver_order(method: str) -> int:
    """The order of an adaptive method's error estimate (dopri5: 5; 1 where the solver has none)."""
    return int(getattr(_TORCHDIFFEQ_SOLVERS[method], "order", 1))


def rescale_step(step: float, from_tol: float, to_tol: float, order: int) -> float:
    """A step accepted at ``from_tol``, scaled for ``to_tol``: the local error of an order-``p``
    method grows like ``h^p``, so an equally accurate step changes by ``(to / from)^(1 / p)``."""
    return step * (to_tol / from_tol) ** (1.0 / order)


def solve(
    func: nn.Module,
    y0: tuple[torch.Tensor, ...],
    t: torch.Tensor,
    counter: NFECounter,
    *,
    tol: float,
    method: str = "dopri5",
    adjoint: bool = False,
    max_num_steps: int | None = None,
    first_step: float | None = None,
    options: dict[str, Any] | None = None,
) -> tuple[torch.Tensor, ...]:
    """Integrate ``func`` from ``t[0]`` over ``t`` with ``atol = rtol = tol``.

    Args:
        func: dynamics ``f(t, y) -> dy/dt`` over a tuple state; it must call
            ``counter.record_call`` once per evaluation.
        y0: initial state, a tuple of tensors.
        t: 1-D tensor of output times (increasing or decreasing).
        counter: receives the NFE counts; closed for the forward pass on return.
        tol: absolute and relative error tolerance (the paper uses one value for both).
        method: any torchdiffeq solver name.
        adjoint: solve the backward pass with the adjoint method (FFJORD's choice).
        max_num_steps: step cap for adaptive solvers; exceeding it raises ``SolverError``.
        first_step: the adaptive solver's first step instead of its initial-step heuristic
            (which costs one evaluation and often starts far smaller than needed).

    Returns:
        The state at every time in ``t`` (each tensor has a leading time dimension).

    Raises:
        SolverError: the solver failed (underflow in dt, step cap, non-finite state).
    """
    tol = check_tolerance(tol)
    check_method(method)
    opts = dict(options or {})
    if max_num_steps is not None and is_adaptive(method):
        opts["max_num_steps"] = int(max_num_steps)
    if first_step is not None and is_adaptive(method):
        if not (first_step > 0 and first_step < float("inf")):
            raise ValueError(f"first_step must be positive and finite, got {first_step!r}")
        opts["first_step"] = float(first_step)
    kwargs: dict[str, Any] = dict(rtol=tol, atol=tol, method=method, options=opts)
    try:
        if adjoint:
            out = odeint_adjoint(func, y0, t, adjoint_params=tuple(func.parameters()), **kwargs)
        else:
            out = odeint(func, y0, t, **kwargs)
    except AssertionError as err:  # torchdiffeq reports solver failures by assertion
        raise SolverError(str(err).split(":")[0][:200]) from err
    finally:
        counter.close_forward()
    if not all(torch.isfinite(o[-1]).all() for o in out):
        raise SolverError("non-finite values in the solution")
    return out


@dataclass
class BlockStats:
    """What one ODE block reports after its forward solve.

    ``nfe`` is the forward NFE of the block. ``nfe_backward`` is read after the loss has been
    back-propagated (it is 0 before, and stays 0 when no backward pass runs).
    """

    nfe: int
    tol: float
    counter: NFECounter = field(repr=False)

    @property
    def nfe_backward(self) -> int:
        return self.counter.backward


class NFETotals:
    """Forward and backward NFE of a whole pass, for output dataclasses with ``stats``."""

    stats: tuple[BlockStats, ...]

    @property
    def nfe_forward(self) -> int:
        return sum(s.nfe for s in self.stats)

    @property
    def nfe_backward(self) -> int:
        """Read after the loss has been back-propagated (0 before)."""
        return sum(s.nfe_backward for s in self.stats)
