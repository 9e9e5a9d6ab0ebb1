"""Gating networks: one per ODE block, each a Gaussian policy over log10(tolerance).

Section 3: g_i ~ N(mu_i, sigma_i^2) with [mu_i, sigma_i] = G_i(x_i), the gate reading the
block's input features. The last layer is zero-initialised, so every gate starts at
``N(init_mean, init_std^2)``; both the mean and the spread receive gradient.

In the ``tol_first_step`` action mode (:mod:`infocnf_env.actions`) a gate is a diagonal
Gaussian over two numbers, log10 of the tolerance and log10 of the first-step fraction; its
``init_mean`` is then one value per action entry. With one entry the outputs are scalars.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

#: Initial mean of every gate's log10 tolerance: between the evaluation tolerance 1e-5 and the
#: upper action bound 1e-2.
DEFAULT_INIT_MEAN = -3.0
#: Initial standard deviation of every gate's log10 tolerance, in decades.
DEFAULT_INIT_STD = 0.5
#: Initial mean of a gate's log10 first-step fraction (``tol_first_step`` mode): a tenth of the
#: block's time span.
DEFAULT_FIRST_STEP_INIT_MEAN = -1.0

InitMean = float | Sequence[float]


class _GateHead(nn.Module):
    """Final linear layer to (mean, log-std) around the initial values.

    One action entry (a float ``init_mean``): scalar mean and log-std. k entries (a sequence):
    ``(k,)`` means and log-stds.
    """

    def __init__(self, in_features: int, init_mean: InitMean, init_std: float):
        super().__init__()
        self.scalar = isinstance(init_mean, (int, float))
        means = [float(init_mean)] if isinstance(init_mean, (int, float)) else [float(m) for m in init_mean]
        self.action_dim = len(means)
        self.linear = nn.Linear(in_features, 2 * self.action_dim)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        self.register_buffer("init_mean", torch.tensor(means), persistent=False)
        self.init_log_std = math.log(init_std)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.linear(h)
        k = self.action_dim
        mean, log_std = self.init_mean + out[..., :k], (self.init_log_std + out[..., k:]).clamp(-5.0, 2.0)
        if self.scalar:
            return mean[..., 0], log_std[..., 0]
        return mean, log_std


class MLPGate(nn.Module):
    """Gate on the compact observation vector (one-hot block + feature statistics)."""

    def __init__(self, obs_dim: int, hidden: int = 32, init_mean: InitMean = DEFAULT_INIT_MEAN,
                 init_std: float = DEFAULT_INIT_STD):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(obs_dim, hidden), nn.Tanh())
        self.head = _GateHead(hidden, init_mean, init_std)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(self.body(obs))


class CNNGate(nn.Module):
    """The paper's CNN gate (Fig. 1): convolutions over the block's feature maps.

    Reads ``(k, C, S, S)`` maps of k examples of the batch (or ``(k, D)`` vectors through an
    MLP), pools each example to a vector and averages over the examples: one tolerance per
    batch, as the paper computes it (Appendix D).
    """

    def __init__(self, feature_shape: tuple[int, ...], hidden: int = 16, init_mean: InitMean = DEFAULT_INIT_MEAN,
                 init_std: float = DEFAULT_INIT_STD):
        super().__init__()
        self.images = len(feature_shape) == 4
        if self.images:
            channels = feature_shape[1]
            self.body = nn.Sequential(
                nn.Conv2d(channels, hidden, 3, padding=1), nn.ReLU(),
                nn.Conv2d(hidden, hidden, 3, stride=2, padding=1), nn.ReLU(),
            )
        else:
            self.body = nn.Sequential(nn.Linear(feature_shape[1], hidden), nn.ReLU())
        self.head = _GateHead(hidden, init_mean, init_std)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(features)
        if self.images:
            h = F.adaptive_avg_pool2d(h, 1).flatten(1)
        return self.head(h.mean(dim=0))
