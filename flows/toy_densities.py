"""FFJORD's 2-D toy densities, generated (no download), each point labelled by its region.

The five densities of FFJORD's toy experiments (Grathwohl et al. 2019, Fig. 2): points of
``checkerboard``, ``pinwheel``, ``rings``, ``2spirals`` and ``8gaussians``, each within about
[-4, 4]^2. The label of a point is the region it was drawn from (checkerboard square,
pinwheel arm, ring, spiral arm, Gaussian component), so a batch of one label is a batch from
one region of the density.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

Sampler = Callable[[int, torch.Generator], tuple[torch.Tensor, torch.Tensor]]


def _uniform(n: int, g: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=g)


def checkerboard(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniform on the 8 dark squares (side 2) of a 4 x 4 board over [-4, 4]^2."""
    col = torch.randint(0, 4, (n,), generator=g)
    row = 2 * torch.randint(0, 2, (n,), generator=g) + (col % 2)
    x = torch.stack([col + _uniform(n, g), row + _uniform(n, g)], dim=1) * 2.0 - 4.0
    label = col * 2 + row // 2
    return x, label


def pinwheel(n: int, g: torch.Generator, arms: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """``arms`` curved arms: a radial spread of 0.3 and a tangential one of 0.05, bent by the radius."""
    label = torch.randint(0, arms, (n,), generator=g)
    radial = 1.0 + 0.3 * torch.randn(n, generator=g)
    tangential = 0.05 * torch.randn(n, generator=g)
    angle = label * (2 * math.pi / arms) + 0.25 * torch.exp(radial)
    cos, sin = torch.cos(angle), torch.sin(angle)
    x = torch.stack([cos * radial - sin * tangential, sin * radial + cos * tangential], dim=1)
    return 2.0 * x, label


def rings(n: int, g: torch.Generator, count: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` concentric rings of radii 0.9, 1.8, ...; points spread by 0.08 around them."""
    label = torch.randint(0, count, (n,), generator=g)
    radius = 0.9 * (label + 1).float() + 0.08 * torch.randn(n, generator=g)
    angle = 2 * math.pi * _uniform(n, g)
    return torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=1), label


def two_spirals(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Two interleaved spiral arms of one and a half turns, spread by 0.1."""
    turn = torch.sqrt(_uniform(n, g)) * 3 * math.pi
    label = torch.randint(0, 2, (n,), generator=g)
    sign = 1.0 - 2.0 * label.float()
    x = torch.stack([-torch.cos(turn) * turn, torch.sin(turn) * turn], dim=1) * sign[:, None] / 3.0
    return x + 0.1 * torch.randn(n, 2, generator=g), label


def eight_gaussians(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Eight Gaussians of std 0.35 on a circle of radius 2.8."""
    label = torch.randint(0, 8, (n,), generator=g)
    angle = label.float() * (math.pi / 4)
    centre = 2.8 * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
    return centre + 0.35 * torch.randn(n, 2, generator=g), label


#: name -> (sampler, number of regions).
TOY_DENSITIES: dict[str, tuple[Sampler, int]] = {
    "checkerboard": (checkerboard, 8),
    "pinwheel": (pinwheel, 5),
    "rings": (rings, 4),
    "2spirals": (two_spirals, 2),
    "8gaussians": (eight_gaussians, 8),
}


def sample_toy(name: str, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` points ``(n, 2)`` of density ``name`` and their region labels ``(n,)``."""
    if name not in TOY_DENSITIES:
        raise ValueError(f"unknown toy density {name!r}; valid densities: {', '.join(TOY_DENSITIES)}")
    x, label = TOY_DENSITIES[name][0](n, generator)
    return x.float(), label.long()
