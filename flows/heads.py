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

Two kinds of zero-initialised layer (``init``, :data:`HEAD_INITS`):

* ``"zeros"``: a plain linear layer with zero weight and bias.
* ``"linear_zeros"``: the authors' code (Glow's ``LinearZeros``): the same layer followed by a
  learned per-output log-scale ``logs`` (initialised to 0), output ``(W x + b) * exp(3 logs)``.
  It starts at the same zero output; ``logs`` gets no gradient while ``W x + b`` is zero,
  i.e. from the second update on.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

HEADS = ("cnf", "ccnf", "infocnf")
#: Kinds of zero-initialised q_phi / q_theta layer (see the module docstring).
HEAD_INITS = ("zeros", "linear_zeros")
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


class LinearZeros(nn.Linear):
    """Glow's zero-initialised linear layer with a learned log-scale: ``(W x + b) * exp(f * logs)``.

    Weight, bias and ``logs`` (one per output) start at zero, so the output starts at zero;
    ``logscale_factor`` f is 3, as in Glow and the authors' InfoCNF code.
    """

    def __init__(self, in_features: int, out_features: int, logscale_factor: float = 3.0):
        super().__init__(in_features, out_features)
        self.logscale_factor = logscale_factor
        self.logs = nn.Parameter(torch.zeros(out_features))
        nn.init.zeros_(self.weight)
        nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * torch.exp(self.logs * self.logscale_factor)


def zero_linear(in_features: int, out_features: int, init: str = "zeros") -> nn.Linear:
    """A zero-initialised linear layer of kind ``init`` (:data:`HEAD_INITS`)."""
    if init == "linear_zeros":
        return LinearZeros(in_features, out_features)
    if init != "zeros":
        raise ValueError(f"unknown head_init {init!r}; valid: {', '.join(HEAD_INITS)}")
    layer = nn.Linear(in_features, out_features)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class LatentHead(nn.Module):
    """Conditional prior q_phi and classifier q_theta on the first ``sup_dim`` latents.

    Args:
        dim: size of the flattened latent z.
        sup_dim: size of z_y (0 for an unconditional model).
        num_classes: number of labels K (ignored when ``sup_dim == 0``).
        dropout: dropout rate on the classifier input.
        init: kind of zero-initialised q_phi / q_theta layer, ``"zeros"`` (plain linear) or
            ``"linear_zeros"`` (with Glow's learned log-scale, as the authors' code).
    """

    def __init__(self, dim: int, sup_dim: int, num_classes: int | None, dropout: float = 0.5,
                 init: str = "zeros"):
        super().__init__()
        if init not in HEAD_INITS:
            raise ValueError(f"unknown head_init {init!r}; valid: {', '.join(HEAD_INITS)}")
        if sup_dim and not num_classes:
            raise ValueError("a conditional head needs num_classes >= 2")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.dim = dim
        self.sup_dim = sup_dim
        self.num_classes = num_classes if sup_dim else None
        self.dropout = dropout
        self.init = init
        if sup_dim:
            assert num_classes is not None  # checked above: a conditional head has num_classes
            self.condition = zero_linear(num_classes, 2 * sup_dim, init)  # q_phi(y) -> (mu, log sigma)
            self.classifier = zero_linear(sup_dim, num_classes, init)  # q_theta(z_y) -> logits

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
