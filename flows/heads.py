"""Priors and classifiers on the latent code (paper Section 2.2, Eq. 3-5).

One mechanism covers the three heads. The flattened latent z is split as
``z = [z_y, z_u]`` with ``z_y = z[:, :sup_dim]``:

* ``cnf``: ``sup_dim = 0``; prior N(0, I), no classifier.
* ``ccnf``: ``sup_dim = dim``; class-conditional Gaussian N(mu(y), sigma(y)^2) on all of z
  from a linear condition encoder q_phi(y), and a linear classifier q_theta(z).
* ``infocnf``: ``sup_dim = round(sup_ratio * dim)``; the conditional prior and the classifier
  act on z_y only and z_u ~ N(0, I).

q_phi and q_theta are zero-initialised (Section 4.1), so at initialisation the prior is
N(0, I) and the classifier is uniform (cross-entropy ln K). Dropout (rate 0.5 in the paper)
is applied to the classifier's input.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

HEADS = ("cnf", "ccnf", "infocnf")
_LOG_2PI = math.log(2 * math.pi)


def supervised_dim(head: str, dim: int, sup_ratio: float) -> int:
    """Size of z_y for ``head`` on a ``dim``-dimensional latent."""
    if head not in HEADS:
        raise ValueError(f"unknown head {head!r}; valid heads: {', '.join(HEADS)}")
    if head == "cnf":
        return 0
    if head == "ccnf":
        return dim
    if not 0 < sup_ratio <= 1:
        raise ValueError(f"sup_ratio must be in (0, 1], got {sup_ratio}")
    return max(1, int(round(sup_ratio * dim)))


def standard_normal_logprob(z: torch.Tensor) -> torch.Tensor:
    """Per-sample log N(z; 0, I) of a ``(B, d)`` tensor."""
    return -0.5 * (z.pow(2) + _LOG_2PI).sum(dim=1)


class LatentHead(nn.Module):
    """Conditional prior q_phi and classifier q_theta on the first ``sup_dim`` latents.

    Args:
        dim: size of the flattened latent z.
        sup_dim: size of z_y (0 for an unconditional model).
        num_classes: number of labels K (ignored when ``sup_dim == 0``).
        dropout: dropout rate on the classifier input.
    """

    def __init__(self, dim: int, sup_dim: int, num_classes: int | None, dropout: float = 0.5):
        super().__init__()
        if sup_dim and not num_classes:
            raise ValueError("a conditional head needs num_classes >= 2")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.dim = dim
        self.sup_dim = sup_dim
        self.num_classes = num_classes if sup_dim else None
        self.dropout = dropout
        if sup_dim:
            assert num_classes is not None  # checked above: a conditional head has num_classes
            self.condition = nn.Linear(num_classes, 2 * sup_dim)  # q_phi(y) -> (mu, log sigma)
            self.classifier = nn.Linear(sup_dim, num_classes)  # q_theta(z_y) -> logits
            for layer in (self.condition, self.classifier):
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)

    @property
    def conditional(self) -> bool:
        return self.sup_dim > 0

    def prior_params(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-std of p(z_y | y), each ``(B, sup_dim)``."""
        if self.num_classes is None:
            raise RuntimeError("an unconditional head has no class-conditional prior")
        onehot = F.one_hot(y, self.num_classes).to(self.condition.weight.dtype)
        mean, log_std = self.condition(onehot).chunk(2, dim=1)
        return mean, log_std

    def log_prior(self, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """Per-sample log p(z | y) = log p(z_y | y) + log p(z_u) (Eq. 5), ``(B,)``."""
        if not self.conditional:
            return standard_normal_logprob(z)
        if y is None:
            raise ValueError("a conditional head needs labels y")
        z_y, z_u = z[:, : self.sup_dim], z[:, self.sup_dim :]
        mean, log_std = self.prior_params(y)
        log_p_y = -0.5 * (((z_y - mean) * torch.exp(-log_std)).pow(2) + 2 * log_std + _LOG_2PI).sum(1)
        return log_p_y + standard_normal_logprob(z_u)

    def log_prior_all_classes(self, z: torch.Tensor) -> torch.Tensor:
        """``(B, K)`` log p(z | y = k) for every class k."""
        if self.num_classes is None:
            raise RuntimeError("an unconditional head has no classes")
        labels = torch.arange(self.num_classes, device=z.device)
        return torch.stack([self.log_prior(z, labels[k].expand(z.shape[0])) for k in labels], dim=1)

    def logits(self, z: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Classifier logits q_theta(z_y), ``(B, K)``; dropout only in training mode."""
        z_y = z[:, : self.sup_dim]
        if self.training and self.dropout > 0:
            keep = torch.rand(z_y.shape, generator=generator, device=z.device) >= self.dropout
            z_y = z_y * keep.to(z_y.dtype) / (1 - self.dropout)
        return self.classifier(z_y)

    def sample_latent(
        self, y: torch.Tensor | None, num: int, device: torch.device, generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        """Draw z: z_y from the class prior, z_u from N(0, I); ``(num, dim)`` in ``dtype``."""
        eps = torch.randn(num, self.dim, generator=generator, device=device, dtype=dtype)
        if not self.conditional:
            return eps
        if y is None:
            raise ValueError("a conditional head needs labels y to sample")
        mean, log_std = self.prior_params(y)
        z_y = mean + torch.exp(log_std) * eps[:, : self.sup_dim]
        return torch.cat([z_y, eps[:, self.sup_dim :]], dim=1)
