"""Gating networks: one per ODE block, each a Gaussian policy over log10(tolerance).

Section 3: g_i ~ N(mu_i, sigma_i^2) with [mu_i, sigma_i] = G_i(x_i), the gate reading the
block's input features. The last layer is zero-initialised, so every gate starts at
``N(init_mean, init_std^2)``; both the mean and the spread receive gradient.

In the ``tol_first_step`` action mode (:mod:`infocnf_env.actions`) a gate is a diagonal
Gaussian over two numbers, log10 of the tolerance and log10 of the first-step fraction; its
``init_mean`` is then one value per action entry. With one entry the outputs are scalars.

How a gate's Gaussian becomes the action (``GATE_DISTS``):

* ``"gaussian"``: the paper's, the sample itself; the env clips it to the action bounds.
  Beyond a bound every sample earns the same reward, so nothing holds the mean inside: on
  digits, where looser is always cheaper, the mean drifts past the upper bound while the
  actions stay clipped there, and the spread the gate learns no longer means anything.
* ``"squashed"`` (:class:`SquashedGaussian`): the sample ``u`` mapped into the bounds by
  ``low + (high - low) (tanh(u) + 1) / 2``, its log-density corrected by the change of
  variables. Every action, and the deterministic one, lies inside the bounds.
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
InitStd = float | Sequence[float]
#: How a gate's Gaussian becomes the action (module docstring).
GATE_DISTS = ("squashed", "gaussian")


class SquashedGaussian:
    """A Gaussian over ``u`` pushed into the box ``[low, high]`` by ``a = low + (high - low)
    (tanh(u) + 1) / 2``, entry by entry: the REINFORCE gates' default action distribution.

    Why this one: the policy's support is the action space, so no sample is clipped and the
    reward is never flat in the policy's parameters: the gradient that drives a Gaussian's
    mean past a bound (where the reward stops changing) does not exist here, and the
    deterministic action ``squash(mean)`` (the distribution's median) is always inside the
    bounds. It keeps the paper's gate (a mean and a spread per block, Section 3) and its
    initialisation: :meth:`initial` starts the gate at the pre-image of ``init_mean`` with the
    spread that makes the action's local spread ``init_std`` decades, so the squashed gate
    starts where the Gaussian one starts; far from the bounds the two are the same
    distribution. A Beta policy also lives in the box, but its two concentrations couple the
    mean and the spread, it has no reparameterised sample for an entropy estimate, and with a
    concentration below 1 its density piles up at a bound; SAC bounds its actions the same way
    (Haarnoja et al. 2018, Appendix C).

    The log-density (change of variables): ``log p(a) = log N(u; mean, std) - log |da/du|`` with
    ``log |da/du| = log((high - low) / 2) + log(1 - tanh(u)^2)``, and ``log(1 - tanh(u)^2) =
    2 (log 2 - u - softplus(-2u))``, which stays finite where ``tanh(u)`` rounds to +-1. The
    entropy is that of ``u`` plus ``E[log |da/du|]``, estimated at the sampled ``u``.
    """

    def __init__(self, low: Sequence[float], high: Sequence[float]):
        self.low = torch.as_tensor(list(low), dtype=torch.float32)
        self.high = torch.as_tensor(list(high), dtype=torch.float32)
        if not (torch.isfinite(self.low).all() and torch.isfinite(self.high).all() and (self.low < self.high).all()):
            raise ValueError(f"the squashed gates need finite bounds with low < high, got {low} and {high}")
        self.half = (self.high - self.low) / 2

    def squash(self, u: torch.Tensor) -> torch.Tensor:
        """The action of pre-image ``u`` (shape ``(..., k)``: one entry per action entry)."""
        return self.low + self.half * (torch.tanh(u) + 1)

    def unsquash(self, a: torch.Tensor) -> torch.Tensor:
        """The pre-image of an action strictly inside the bounds."""
        return torch.atanh((a - self.low) / self.half - 1)

    def log_det(self, u: torch.Tensor) -> torch.Tensor:
        """``log |da/du|`` entry by entry."""
        return torch.log(self.half) + 2 * (math.log(2.0) - u - F.softplus(-2 * u))

    def log_prob(self, u: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        """``log p(squash(u))`` entry by entry, for a pre-image ``u`` drawn from ``N(mean, std^2)``."""
        return torch.distributions.Normal(mean, std).log_prob(u) - self.log_det(u)

    def spread(self, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        """The action's local spread at the deterministic action: ``std * |da/du|`` at ``mean``."""
        return std * self.log_det(mean).exp()

    def initial(self, init_mean: InitMean, init_std: float) -> tuple[list[float], list[float]]:
        """The pre-squash mean and std that start a gate at ``init_mean`` with a local spread of
        ``init_std`` (in the action's units) per entry; ``init_mean`` must lie inside the bounds."""
        means = [float(init_mean)] if isinstance(init_mean, (int, float)) else [float(m) for m in init_mean]
        if len(means) != len(self.low):
            raise ValueError(f"{len(means)} initial means for an action of {len(self.low)} entries")
        for m, lo, hi in zip(means, self.low.tolist(), self.high.tolist(), strict=True):
            if not lo < m < hi:
                raise ValueError(f"the squashed gates start inside the action bounds: initial mean {m:g} is not "
                                 f"in ({lo:g}, {hi:g}) (--init-mean)")
        u = self.unsquash(torch.tensor(means, dtype=torch.float32))
        return u.tolist(), (init_std / self.log_det(u).exp()).tolist()


class _GateHead(nn.Module):
    """Final linear layer to (mean, log-std) around the initial values.

    One action entry (a float ``init_mean``): scalar mean and log-std. k entries (a sequence):
    ``(k,)`` means and log-stds.
    """

    def __init__(self, in_features: int, init_mean: InitMean, init_std: InitStd):
        super().__init__()
        self.scalar = isinstance(init_mean, (int, float))
        means = [float(init_mean)] if isinstance(init_mean, (int, float)) else [float(m) for m in init_mean]
        self.action_dim = len(means)
        self.linear = nn.Linear(in_features, 2 * self.action_dim)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        self.register_buffer("init_mean", torch.tensor(means), persistent=False)
        self.init_log_std: float | torch.Tensor
        if isinstance(init_std, (int, float)):
            self.init_log_std = math.log(init_std)
        else:  # one per entry (squashed gates)
            self.register_buffer("init_log_std", torch.tensor([math.log(v) for v in init_std]), persistent=False)

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
                 init_std: InitStd = DEFAULT_INIT_STD):
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
                 init_std: InitStd = DEFAULT_INIT_STD):
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
