"""Plain maximum-likelihood training of a flow outside the environment, at one tolerance.

The environment trains its model step by step (``infocnf_env.TrainingStepEnv``); code that only
needs a trained flow (the frozen benchmark's toy flows, benchmarks) calls :func:`fit`, the one
gradient loop for that: Adam on the model's loss (Eq. 4-5), every ODE block solved at ``tol``,
for a fixed number of steps or until the loss stops falling (:class:`Plateau`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from flows.data import BatchStream
from flows.model import FlowModel


@dataclass(frozen=True)
class Plateau:
    """When a training run's loss has stopped falling.

    The training loss of one batch is noisy (Hutchinson noise aside, batches differ), so the
    criterion compares means over windows of ``window`` steps: training stops once ``patience``
    windows in a row have not brought the windowed mean loss ``min_improvement`` below the best
    window so far. The defaults ask for a 0.01 fall within 1000 steps: a windowed mean over 200
    steps is far steadier than one batch's loss, and a flow can sit on a plateau for a few
    hundred steps before its loss falls again, so a short patience stops it there. A
    smaller ``min_improvement`` or a larger ``patience`` trains longer: the flows get closer to
    convergence (and stiffer, so solves cost more NFE) at a higher one-off cost. ``fit``'s
    ``steps`` stays the cap.

    Attributes:
        window: steps per window.
        patience: windows without an improvement before training stops.
        min_improvement: what counts as an improvement (in the loss's units: nats per dimension
            for the flows' loss).
    """

    window: int = 200
    patience: int = 5
    min_improvement: float = 0.01

    def __post_init__(self) -> None:
        for name in ("window", "patience"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not (isinstance(self.min_improvement, (int, float)) and 0 <= self.min_improvement < math.inf):
            raise ValueError(f"min_improvement must be a finite number >= 0, got {self.min_improvement!r}")


@dataclass(frozen=True)
class FitResult:
    """What :func:`fit` did: the steps taken, the last batch's loss, and whether it stopped on a plateau."""

    steps: int
    loss: float
    plateaued: bool


class _PlateauTracker:
    def __init__(self, plateau: Plateau):
        self.plateau = plateau
        self.losses: list[float] = []
        self.best = math.inf
        self.stale = 0

    def add(self, loss: float) -> bool:
        """Record one step's loss; True once the loss has plateaued."""
        self.losses.append(loss)
        if len(self.losses) < self.plateau.window:
            return False
        mean = sum(self.losses) / len(self.losses)
        self.losses.clear()
        if mean < self.best - self.plateau.min_improvement:
            self.best, self.stale = mean, 0
        else:
            self.best, self.stale = min(self.best, mean), self.stale + 1
        return self.stale >= self.plateau.patience


def fit(model: FlowModel, stream: BatchStream, steps: int, *, tol: float, lr: float = 1e-3,
        generator: torch.Generator | None = None, log: Callable[[int, float, int], None] | None = None,
        log_every: int = 100, until: Plateau | None = None) -> FitResult:
    """Train ``model`` with Adam on batches of ``stream``, for ``steps`` steps or until a plateau.

    Args:
        model: the flow; batches are reshaped to its ``data_shape``.
        stream: the training batches.
        steps: optimizer steps (the cap, when ``until`` is given).
        tol: the tolerance of every block's solve.
        lr: Adam's learning rate.
        generator: the Hutchinson noise's generator (``None``: the global RNG).
        log: called with (step, loss, forward NFE) every ``log_every`` steps and after the last.
        log_every: steps between ``log`` calls.
        until: stop early once the loss has stopped falling (:class:`Plateau`).
    """
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    tracker = _PlateauTracker(until) if until is not None else None
    loss, nfe, step, plateaued = float("nan"), 0, 0, False
    for step in range(1, steps + 1):
        x, y = stream.next()
        out = model(x.reshape(x.shape[0], *model.data_shape), y, tol=tol, generator=generator)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()
        loss, nfe = float(out.loss.detach()), out.nfe_forward
        plateaued = tracker is not None and tracker.add(loss)
        if log is not None and step % log_every == 0 and not plateaued and step != steps:
            log(step, loss, nfe)
        if plateaued:
            break
    if log is not None and step > 0:
        log(step, loss, nfe)
    return FitResult(step, loss, plateaued)
