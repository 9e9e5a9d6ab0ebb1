"""Plain maximum-likelihood training of a flow outside the environment, at one tolerance.

The environment trains its model step by step (``infocnf_env.TrainingStepEnv``); code that only
needs a trained flow (the frozen benchmark's toy flows, benchmarks) calls :func:`fit`, the one
gradient loop for that: Adam on the model's loss (Eq. 4-5), every ODE block solved at ``tol``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from flows.data import BatchStream
from flows.model import FlowModel


def fit(model: FlowModel, stream: BatchStream, steps: int, *, tol: float, lr: float = 1e-3,
        generator: torch.Generator | None = None, log: Callable[[int, float, int], None] | None = None,
        log_every: int = 100) -> float:
    """Train ``model`` for ``steps`` Adam steps on batches of ``stream``; return the last loss.

    Args:
        model: the flow; batches are reshaped to its ``data_shape``.
        stream: the training batches.
        steps: optimizer steps.
        tol: the tolerance of every block's solve.
        lr: Adam's learning rate.
        generator: the Hutchinson noise's generator (``None``: the global RNG).
        log: called with (step, loss, forward NFE) every ``log_every`` steps and after the last.
    """
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loss = float("nan")
    for step in range(steps):
        x, y = stream.next()
        out = model(x.reshape(x.shape[0], *model.data_shape), y, tol=tol, generator=generator)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()
        loss = float(out.loss.detach())
        if log is not None and ((step + 1) % log_every == 0 or step + 1 == steps):
            log(step + 1, loss, out.nfe_forward)
    return loss
