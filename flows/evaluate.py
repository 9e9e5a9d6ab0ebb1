"""Test-time evaluation at a tight tolerance (paper Section 4.2).

Solver error can leak into the likelihood, so reported numbers always come from solves at
tolerance 1e-5 (or tighter), whatever tolerances training used.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from flows.model import FlowModel, Tolerance
from flows.ode import EVAL_TOL


@torch.no_grad()
def evaluate(
    model: FlowModel,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    tol: Tolerance = EVAL_TOL,
    *,
    seed: int = 0,
) -> dict[str, float]:
    """Average test metrics over ``loader`` with every block solved at ``tol``.

    ``tol`` may also be a function of the state before each block (``FlowModel.forward``):
    that evaluates a model with a tolerance policy's choices instead of 1e-5.

    Runs the same block loop as training. Hutchinson noise comes from a generator seeded
    with ``seed`` so repeated evaluations agree exactly.

    Returns:
        ``bits_per_dim`` (conditional for conditional heads), ``marginal_bits_per_dim``,
        ``error`` (classification error rate; NaN for ``cnf``), ``nfe`` (mean forward NFE per
        batch, all blocks summed) and ``num_samples``.
    """
    was_training = model.training
    model.eval()
    generator = torch.Generator(device=model.device).manual_seed(seed)
    total = cond = marg = wrong = nfe = 0.0
    batches = 0
    try:
        for x, y in loader:
            out = model(x, y, tol=tol, generator=generator)
            n = x.shape[0]
            total += n
            cond += model.bits_per_dim(out.logpx).sum().item()
            marg += model.bits_per_dim(out.marginal_logpx).sum().item()
            if out.logits is not None:
                wrong += (out.predictions() != y).sum().item()
            nfe += out.nfe_forward
            batches += 1
    finally:
        model.train(was_training)
    if not total:
        raise ValueError("evaluate() got an empty loader")
    return {
        "bits_per_dim": cond / total,
        "marginal_bits_per_dim": marg / total,
        "error": wrong / total if model.head.conditional else float("nan"),
        "nfe": nfe / batches,
        "num_samples": int(total),
    }
