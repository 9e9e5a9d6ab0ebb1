"""Networks that parameterise the CNF dynamics f(z, t).

Appendix B: each flow's dynamics is a stack of 3x3 convolutions with 64 filters, softplus
between layers, with time concatenated to every layer's input (FFJORD's ``ConcatConv2d``).
Vectors use an MLP with concatenated time or FFJORD's concat-squash layer.

Every layer takes the time ``t`` as a scalar (one time for the whole batch, as the ODE solvers
pass it) or as one time per sample, shape ``(B,)`` (rows of a batched solve at different times,
:meth:`flows.CNFBlock.forward_batch`); a sample's output depends on its own time only.

``num_layers`` counts every layer of the network, the output layer included:
``num_layers - 1`` hidden layers of ``hidden`` units, ``c -> h -> ... -> h -> c``. The
authors' runs (FFJORD's ``--dims 64,64,64``: three hidden layers of 64 filters) are
``num_layers=4``, c -> 64 -> 64 -> 64 -> c; ``num_layers=3`` is c -> h -> h -> c.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import nn


class ConcatConv2d(nn.Module):
    """3x3 convolution whose input gets one extra channel holding the time t."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(in_channels + 1, out_channels, kernel_size, padding=kernel_size // 2)

    def forward(self, t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        tt = t.to(h).reshape(-1, 1, 1, 1).expand(h.shape[0], 1, h.shape[2], h.shape[3])
        return self.conv(torch.cat([tt, h], dim=1))


class ConcatLinear(nn.Module):
    """Linear layer whose input gets one extra feature holding the time t."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.linear = nn.Linear(in_features + 1, out_features)

    def forward(self, t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        tt = t.to(h).reshape(-1, 1).expand(h.shape[0], 1)
        return self.linear(torch.cat([tt, h], dim=1))


class ConcatSquashLinear(nn.Module):
    """FFJORD's concat-squash layer: ``(W h + b) * sigmoid(a t + c) + d t``."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)
        self.gate = nn.Linear(1, out_features)
        self.shift = nn.Linear(1, out_features, bias=False)

    def forward(self, t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        tt = t.to(h).reshape(-1, 1)  # (1, 1), or (B, 1): one time per sample
        return self.linear(h) * torch.sigmoid(self.gate(tt)) + self.shift(tt)


LAYER_TYPES = {"concat": ConcatLinear, "concatsquash": ConcatSquashLinear}


class ODENet(nn.Module):
    """A stack of time-conditioned layers with softplus between them: f(t, z) -> dz/dt."""

    def __init__(self, layers: Sequence[nn.Module]):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        h = z
        for i, layer in enumerate(self.layers):
            h = layer(t, h)
            if i < len(self.layers) - 1:
                h = F.softplus(h)
        return h


def layer_dims(width: int, hidden: int, num_layers: int) -> list[int]:
    """Sizes ``[width, hidden, ..., hidden, width]`` of a ``num_layers``-layer network."""
    if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1:
        raise ValueError(f"num_layers must be an integer >= 1, got {num_layers!r}")
    return [width] + [hidden] * (num_layers - 1) + [width]


def conv_net(channels: int, hidden: int = 64, num_layers: int = 3) -> ODENet:
    """Appendix B dynamics: ``num_layers`` 3x3 ConcatConv2d layers in all, the first
    ``num_layers - 1`` with ``hidden`` filters, the last back to ``channels``
    (``num_layers=4``: c -> h -> h -> h -> c, the authors' ``--dims 64,64,64``)."""
    return ODENet([ConcatConv2d(a, b) for a, b in pairwise(layer_dims(channels, hidden, num_layers))])


def mlp_net(dim: int, hidden: int = 64, num_layers: int = 3, layer_type: str = "concatsquash") -> ODENet:
    """MLP dynamics for vector data, ``layer_type`` in :data:`LAYER_TYPES`; ``num_layers``
    layers in all, as :func:`conv_net` (``num_layers - 1`` hidden layers of ``hidden`` units)."""
    if layer_type not in LAYER_TYPES:
        raise ValueError(f"unknown layer_type {layer_type!r}; valid: {', '.join(LAYER_TYPES)}")
    dims = layer_dims(dim, hidden, num_layers)
    return ODENet([LAYER_TYPES[layer_type](a, b) for a, b in pairwise(dims)])
