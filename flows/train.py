"""Plain training of a block model outside the environment, at one tolerance.

The environment trains its model step by step (``infocnf_env.TrainingStepEnv``); code that only
needs a trained model (the frozen benchmark's toy flows, the benchmarks, the spirals study's
LatentODEs) calls :func:`fit`, the one gradient loop for that: Adam on the model's loss (Eq. 4-5
for a flow, the ELBO and supervised term for a LatentODE), every ODE block solved at ``tol``,
for a fixed number of steps or until the loss stops falling (:class:`Plateau`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from flows.model import FlowModel
from flows.ode import SolverError
from flows.protocol import BlockModel


class Batches(Protocol):
    """An endless source of training batches ``(x, y)`` (e.g. :class:`flows.data.BatchStream`)."""

    def next(self) -> tuple[torch.Tensor, torch.Tensor]: ...


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
    """What :func:`fit` did: the steps taken (batches drawn), the last update's loss, whether it
    stopped on a plateau, and how many batches were skipped because a solve failed."""

    steps: int
    loss: float
    plateaued: bool
    failures: int = 0


class _PlateauTracker:
    def __init__(self, plateau: Plateau):
        self.plateau = plateau
        self.losses: list[float] = []
        self.best = math.inf
        self.stale = 0

    def state_dict(self) -> dict[str, Any]:
        return {"losses": list(self.losses), "best": self.best, "stale": self.stale}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.losses, self.best, self.stale = list(state["losses"]), float(state["best"]), int(state["stale"])

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


def fit(model: BlockModel, batches: Batches, steps: int, *, tol: float, lr: float = 1e-3,
        generator: torch.Generator | None = None, log: Callable[[int, float, int], None] | None = None,
        log_every: int = 100, until: Plateau | None = None, skip_failures: bool = False,
        on_update: Callable[[Any], None] | None = None, resume: dict[str, Any] | None = None,
        checkpoint: Callable[[dict[str, Any]], None] | None = None, checkpoint_every: int = 0) -> FitResult:
    """Train ``model`` with Adam on ``batches``, for ``steps`` steps or until a plateau.

    Resumable: every ``checkpoint_every`` steps (before the last) ``checkpoint`` receives the
    whole training state after that step (the model's weights, Adam's state, the position and
    generator of ``batches``, the noise ``generator``, the plateau criterion's windows, the
    step); ``fit(..., resume=that_state)`` goes on from it and ends with exactly the weights
    of a training that was never interrupted. Taking a checkpoint changes nothing in the
    training. ``batches`` must then have ``state_dict`` / ``load_state_dict``
    (:class:`flows.data.BatchStream` has).

    Args:
        model: the block model (a flow: its batches are reshaped to its ``data_shape``; a LatentODE).
        batches: the training batches, one ``batches.next()`` per step.
        steps: batches to train on (the cap, when ``until`` is given).
        tol: the tolerance of every block's solve.
        lr: Adam's learning rate.
        generator: the model's noise generator (Hutchinson noise, the LatentODE's posterior
            sample; ``None``: the global RNG).
        log: called with (step, loss, forward NFE) every ``log_every`` steps and after the last.
        log_every: steps between ``log`` calls.
        until: stop early once the loss has stopped falling (:class:`Plateau`).
        skip_failures: a batch whose solve fails (``SolverError``) is skipped without an update
            and counted in ``FitResult.failures``; otherwise the error propagates.
        on_update: called with the model's output after each update (for metrics of its own).
        resume: a state ``checkpoint`` received: training goes on after its step.
        checkpoint: called with the training state every ``checkpoint_every`` steps.
        checkpoint_every: steps between checkpoints (0: none).
    """
    if (checkpoint is not None or resume is not None) and not hasattr(batches, "state_dict"):
        raise TypeError("a resumable fit needs batches with state_dict / load_state_dict (flows.data.BatchStream)")
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    tracker = _PlateauTracker(until) if until is not None else None
    loss, nfe, step, plateaued, failures = float("nan"), 0, 0, False, 0
    first = 1
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        batches.load_state_dict(resume["batches"])  # type: ignore[attr-defined]
        if generator is not None:
            generator.set_state(resume["generator"])
        if tracker is not None:
            tracker.load_state_dict(resume["tracker"])
        step, loss, nfe, failures = int(resume["step"]), float(resume["loss"]), int(resume["nfe"]), \
            int(resume["failures"])
        first = step + 1
    for step in range(first, steps + 1):
        x, y = batches.next()
        if isinstance(model, FlowModel):  # flat batches of a flow's data, shaped as its input
            x = x.reshape(x.shape[0], *model.data_shape)
        try:
            out = model(x, y, tol=tol, generator=generator)
        except SolverError:
            if not skip_failures:
                raise
            failures += 1
        else:
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            optimizer.step()
            loss, nfe = float(out.loss.detach()), out.nfe_forward
            if on_update is not None:
                on_update(out)
            plateaued = tracker is not None and tracker.add(loss)
            if log is not None and step % log_every == 0 and not plateaued and step != steps:
                log(step, loss, nfe)
            if plateaued:
                break
        if checkpoint is not None and checkpoint_every and step % checkpoint_every == 0 and step != steps:
            checkpoint({"step": step, "loss": loss, "nfe": nfe, "failures": failures,
                        "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "batches": batches.state_dict(),  # type: ignore[attr-defined]
                        "generator": None if generator is None else generator.get_state(),
                        "tracker": None if tracker is None else tracker.state_dict()})
    if log is not None and step > 0:
        log(step, loss, nfe)
    return FitResult(step, loss, plateaued, failures)
