"""Cheap, exact glue between ODE blocks (Appendix B's multiscale architecture).

Each transform maps a :class:`FlowState` forward (data to latent) and back, and adds its
log-determinant to ``state.logdet``. ``out_shape`` lets a model trace shapes at build time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import nn


@dataclass(frozen=True)
class FlowState:
    """Where a forward pass through a flow stands.

    Attributes:
        z: ``(B, ...)`` the current (not yet factored-out) tensor.
        logdet: ``(B,)`` accumulated ``log|det d(latent so far)/dx|``.
        factored: tensors factored out so far, in order, each ``(B, ...)``.
        regularization: ``(B, 2)`` accumulated kinetic / Jacobian-Frobenius integrals.
        position: index of the next op in the model's op list.
        y: labels ``(B,)`` or ``None``.
        generator: source of Hutchinson noise and dropout for this pass, or ``None``.
        stats: the ``BlockStats`` of the blocks solved so far.
        error_regularization: ``(B,)`` accumulated error-probe penalties of the blocks solved
            so far (``None`` while no probe has run, see ``flows.error_reg``).
    """

    z: torch.Tensor
    logdet: torch.Tensor
    factored: tuple[torch.Tensor, ...] = ()
    regularization: torch.Tensor | None = None
    position: int = 0
    y: torch.Tensor | None = None
    generator: torch.Generator | None = None
    stats: tuple = ()
    error_regularization: torch.Tensor | None = None


class Transform(nn.Module):
    def forward(self, state: FlowState) -> FlowState:  # pragma: no cover - interface
        raise NotImplementedError

    def inverse(self, state: FlowState) -> FlowState:  # pragma: no cover - interface
        raise NotImplementedError

    def out_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return shape


class LogitTransform(Transform):
    """x in [0, 1] -> logit(alpha + (1 - 2 alpha) x) (FFJORD / RealNVP preprocessing)."""

    def __init__(self, alpha: float = 1e-6):
        super().__init__()
        if not 0 <= alpha < 0.5:
            raise ValueError(f"logit alpha must be in [0, 0.5), got {alpha}")
        self.alpha = alpha

    def forward(self, state: FlowState) -> FlowState:
        s = self.alpha + (1 - 2 * self.alpha) * state.z
        z = torch.log(s) - torch.log1p(-s)
        log_jac = math.log(1 - 2 * self.alpha) - torch.log(s) - torch.log1p(-s)
        return replace(state, z=z, logdet=state.logdet + log_jac.reshape(z.shape[0], -1).sum(1))

    def inverse(self, state: FlowState) -> FlowState:
        x = (torch.sigmoid(state.z) - self.alpha) / (1 - 2 * self.alpha)
        return replace(state, z=x)


class Squeeze(Transform):
    """(B, C, H, W) -> (B, 4C, H/2, W/2), volume preserving."""

    def forward(self, state: FlowState) -> FlowState:
        b, c, h, w = state.z.shape
        z = state.z.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
        return replace(state, z=z.reshape(b, c * 4, h // 2, w // 2))

    def inverse(self, state: FlowState) -> FlowState:
        b, c, h, w = state.z.shape
        z = state.z.reshape(b, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)
        return replace(state, z=z.reshape(b, c // 4, h * 2, w * 2))

    def out_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        c, h, w = shape
        if h % 2 or w % 2:
            raise ValueError(f"cannot squeeze spatial size {h}x{w}: it must be even")
        return (c * 4, h // 2, w // 2)


class FactorOut(Transform):
    """Keep the first half of the channels; set the second half aside as part of z."""

    def forward(self, state: FlowState) -> FlowState:
        keep = state.z.shape[1] // 2
        return replace(state, z=state.z[:, :keep], factored=state.factored + (state.z[:, keep:],))

    def inverse(self, state: FlowState) -> FlowState:
        out = state.factored[-1]
        return replace(state, z=torch.cat([state.z, out], dim=1), factored=state.factored[:-1])

    def out_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return (shape[0] // 2,) + tuple(shape[1:])

    def factored_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return (shape[0] - shape[0] // 2,) + tuple(shape[1:])
