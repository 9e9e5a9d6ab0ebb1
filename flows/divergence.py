"""Divergence of the dynamics, tr(df/dz), for the instantaneous change of variables (Eq. 2).

Hutchinson's estimator (FFJORD, Grathwohl et al. 2019): tr(A) = E[e^T A e] for noise with
E[e e^T] = I. The noise is drawn once per ODE solve and held fixed during it, as FFJORD does,
so the integrand is a smooth function of t and the adaptive solver sees one ODE.
"""

from __future__ import annotations

import torch

NOISE_TYPES = ("rademacher", "gaussian")
DIVERGENCES = ("hutchinson", "exact")


def sample_noise(like: torch.Tensor, kind: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """Noise e with E[e e^T] = I, shaped like ``like``."""
    if kind == "gaussian":
        return torch.randn(like.shape, generator=generator, dtype=like.dtype, device=like.device)
    if kind == "rademacher":
        bits = torch.randint(0, 2, like.shape, generator=generator, device=like.device)
        return bits.to(like.dtype) * 2 - 1
    raise ValueError(f"unknown noise {kind!r}; valid: {', '.join(NOISE_TYPES)}")


def hutchinson_divergence(
    dz: torch.Tensor, z: torch.Tensor, noise: torch.Tensor, create_graph: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample estimate e^T (df/dz) e, and the vector-Jacobian product e^T df/dz.

    Returns:
        ``(div, e_dfdz)`` of shapes ``(B,)`` and ``z.shape``.
    """
    (e_dfdz,) = torch.autograd.grad(dz, z, noise, create_graph=create_graph)
    div = (e_dfdz * noise).reshape(z.shape[0], -1).sum(dim=1)
    return div, e_dfdz


def exact_divergence(dz: torch.Tensor, z: torch.Tensor, create_graph: bool) -> torch.Tensor:
    """Per-sample exact trace, one backward pass per dimension (low dimension only)."""
    flat = dz.reshape(dz.shape[0], -1)
    div = torch.zeros(dz.shape[0], dtype=dz.dtype, device=dz.device)
    for i in range(flat.shape[1]):
        (grad,) = torch.autograd.grad(flat[:, i].sum(), z, create_graph=create_graph, retain_graph=True)
        div = div + grad.reshape(dz.shape[0], -1)[:, i]
    return div
