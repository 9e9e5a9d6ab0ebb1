"""Classical initial value problems, in torch, for studying solver tolerances outside the flows.

Four families of standard non-stiff test problems, each with one parameter that sets how hard
an instance is to integrate:

==========  =========================================  ==============  ======================
family      right-hand side                            parameter       time span
==========  =========================================  ==============  ======================
kepler      two-body orbit (DETEST D1-D5)              eccentricity e  one period, ``2 pi``
vdp         Van der Pol oscillator (DETEST E2 at mu=1) mu              ``[0, 5]``
arenstorf   restricted three-body orbit (HNW I.16)     delta v_y0      half a period, 8.53...
lorenz      Lorenz attractor (HNW I.16)                initial state   ``[0, 1]``
==========  =========================================  ==============  ======================

Kepler: ``x'' = -x / r^3`` from the pericentre ``(1 - e, 0)`` with speed
``sqrt((1 + e) / (1 - e))`` (semi-major axis 1, period ``2 pi``; DETEST integrates to 20).
Van der Pol: ``y1' = y2``, ``y2' = mu (1 - y1^2) y2 - y1`` from ``(2, 0)`` (DETEST E2 is mu = 1).
Arenstorf: the periodic orbit of Hairer, Norsett and Wanner (Solving ODEs I, Section II.0) with
its initial velocity ``v_y0`` moved by ``delta``, which breaks the periodicity and changes how
close the orbit passes the moon. Lorenz: sigma 10, rho 28, beta 8/3 from an initial state drawn
in a box around the attractor (the parameter is the first coordinate, the others are drawn
with it).

Each family also names parameter ranges beyond its training range (``ood_ranges``: Kepler
e in [0.90, 0.97], Van der Pol mu in [10, 20], Arenstorf |delta| in [0.02, 0.05], Lorenz
|x0| in [15, 25]): harder or unseen instances for the benchmark's out-of-range pool.

Every right-hand side is batched over leading dimensions (``y``: ``(..., dim)``, the parameter
``(...)``) and differentiable. :class:`IVPDynamics` wraps one for :func:`flows.ode.solve`, which
counts its evaluations and its accepted and rejected steps.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from flows.ode import NFECounter

#: Arenstorf's orbit (HNW Section II.0): the moon's mass ratio, the initial velocity and the period.
ARENSTORF_MU = 0.012277471
ARENSTORF_VY0 = -2.00158510637908252240537862224
ARENSTORF_PERIOD = 17.0652165601579625588917206249
LORENZ_SIGMA, LORENZ_RHO, LORENZ_BETA = 10.0, 28.0, 8.0 / 3.0
#: The box Lorenz initial states are drawn from (x, y, z).
LORENZ_BOX = ((-15.0, 15.0), (-20.0, 20.0), (10.0, 40.0))


def kepler_rhs(t: torch.Tensor, y: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    x, yy, vx, vy = y.unbind(-1)
    r3 = (x * x + yy * yy) ** 1.5
    return torch.stack([vx, vy, -x / r3, -yy / r3], dim=-1)


def kepler_start(e: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    zero = torch.zeros_like(e)
    return torch.stack([1 - e, zero, zero, torch.sqrt((1 + e) / (1 - e))], dim=-1)


def vdp_rhs(t: torch.Tensor, y: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    y1, y2 = y.unbind(-1)
    return torch.stack([y2, mu * (1 - y1 * y1) * y2 - y1], dim=-1)


def vdp_start(mu: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    return torch.stack([torch.full_like(mu, 2.0), torch.zeros_like(mu)], dim=-1)


def arenstorf_rhs(t: torch.Tensor, y: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    y1, y2, v1, v2 = y.unbind(-1)
    mu = ARENSTORF_MU
    mu_ = 1 - mu
    d1 = ((y1 + mu) ** 2 + y2 * y2) ** 1.5
    d2 = ((y1 - mu_) ** 2 + y2 * y2) ** 1.5
    a1 = y1 + 2 * v2 - mu_ * (y1 + mu) / d1 - mu * (y1 - mu_) / d2
    a2 = y2 - 2 * v1 - mu_ * y2 / d1 - mu * y2 / d2
    return torch.stack([v1, v2, a1, a2], dim=-1)


def arenstorf_start(delta: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    zero = torch.zeros_like(delta)
    return torch.stack([torch.full_like(delta, 0.994), zero, zero, ARENSTORF_VY0 + delta], dim=-1)


def lorenz_rhs(t: torch.Tensor, y: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    x, yy, z = y.unbind(-1)
    return torch.stack([LORENZ_SIGMA * (yy - x), x * (LORENZ_RHO - z) - yy, x * yy - LORENZ_BETA * z], dim=-1)


def lorenz_start(x0: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """``(x0, y0, z0)``: ``x0`` is the parameter; ``y0`` and ``z0`` are drawn uniformly in :data:`LORENZ_BOX`."""
    (_, _), (ylo, yhi), (zlo, zhi) = LORENZ_BOX
    u = torch.rand((*x0.shape, 2), generator=generator, dtype=x0.dtype)
    return torch.stack([x0, ylo + (yhi - ylo) * u[..., 0], zlo + (zhi - zlo) * u[..., 1]], dim=-1)


@dataclass(frozen=True)
class Family:
    """One family of problems: its right-hand side, initial state, parameter range and time span.

    Attributes:
        name: the family's key in :data:`FAMILIES`.
        dim: dimension of the state.
        rhs: ``f(t, y, param) -> dy/dt``, batched over leading dimensions.
        start: ``y0(param, generator)``; a family may draw more of its initial state from
            ``generator`` (Lorenz).
        param_name: what the parameter is.
        param_range: ``(low, high)`` the parameter is drawn from, uniformly.
        t_end: the end of the time span ``[0, t_end]``.
        ood_ranges: parameter ranges outside ``param_range`` (out-of-range instances are drawn
            uniformly from their union).
    """

    name: str
    dim: int
    rhs: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
    start: Callable[[torch.Tensor, torch.Generator | None], torch.Tensor]
    param_name: str
    param_range: tuple[float, float]
    t_end: float
    ood_ranges: tuple[tuple[float, float], ...] = ()

    def definition(self) -> dict[str, Any]:
        """Everything that decides the family's instances and solutions, for cache keys: the
        ranges, span and dimension, the source code of ``rhs`` and ``start`` and the values of
        the module constants they read (a changed constant or formula gives another key)."""

        def code(fn: Callable) -> dict[str, Any]:
            constants = {name: fn.__globals__[name] for name in fn.__code__.co_names
                         if isinstance(fn.__globals__.get(name), (int, float, tuple))}
            return {"source": inspect.getsource(fn), "constants": constants}

        return {"name": self.name, "dim": self.dim, "param_range": list(self.param_range), "t_end": self.t_end,
                "ood_ranges": [list(r) for r in self.ood_ranges], "rhs": code(self.rhs), "start": code(self.start)}


FAMILIES: dict[str, Family] = {
    "kepler": Family("kepler", 4, kepler_rhs, kepler_start, "eccentricity", (0.1, 0.9), 2 * math.pi,
                     ood_ranges=((0.90, 0.97),)),
    "vdp": Family("vdp", 2, vdp_rhs, vdp_start, "mu", (0.5, 10.0), 5.0, ood_ranges=((10.0, 20.0),)),
    "arenstorf": Family("arenstorf", 4, arenstorf_rhs, arenstorf_start, "delta_vy0", (-0.02, 0.02),
                        ARENSTORF_PERIOD / 2, ood_ranges=((-0.05, -0.02), (0.02, 0.05))),
    "lorenz": Family("lorenz", 3, lorenz_rhs, lorenz_start, "x0", LORENZ_BOX[0], 1.0,
                     ood_ranges=((-25.0, -15.0), (15.0, 25.0))),
}
#: The largest state dimension of any family (observations pad states to it).
MAX_DIM = max(f.dim for f in FAMILIES.values())


def check_family(name: str) -> Family:
    if name not in FAMILIES:
        raise ValueError(f"unknown problem family {name!r}; valid families: {', '.join(FAMILIES)}")
    return FAMILIES[name]


@dataclass(frozen=True)
class Instance:
    """One problem of a family: its parameter and initial state (float64)."""

    family: str
    param: float
    y0: torch.Tensor

    @property
    def t_end(self) -> float:
        return FAMILIES[self.family].t_end


def draw_instance(family: str, generator: torch.Generator, out_of_range: bool = False) -> Instance:
    """An instance of ``family`` with its parameter drawn uniformly from the family's range
    (``out_of_range``: from the union of its ``ood_ranges``)."""
    fam = check_family(family)
    u = float(torch.rand((), generator=generator, dtype=torch.float64))
    if not out_of_range:
        low, high = fam.param_range
        param = low + (high - low) * u
    else:
        if not fam.ood_ranges:
            raise ValueError(f"family {family!r} has no out-of-range parameters")
        position = u * sum(high - low for low, high in fam.ood_ranges)  # uniform over the union
        for low, high in fam.ood_ranges:
            param = low + min(position, high - low)
            if position <= high - low:
                break
            position -= high - low
    y0 = fam.start(torch.tensor(param, dtype=torch.float64), generator)
    return Instance(family, param, y0)


class IVPDynamics(nn.Module):
    """An instance's right-hand side as :func:`flows.ode.solve` takes it (a one-tensor state).

    Counts every evaluation and forwards torchdiffeq's accepted / rejected step callbacks to
    the counter (``counter`` is replaced before each solve).
    """

    def __init__(self, instance: Instance):
        super().__init__()
        self.family = FAMILIES[instance.family]
        self.param = torch.tensor(instance.param, dtype=torch.float64)
        self.counter = NFECounter()

    def forward(self, t: torch.Tensor, state: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor]:
        (y,) = state
        dy = self.family.rhs(t, y, self.param)
        self.counter.record_call(dy)
        return (dy,)

    def callback_accept_step(self, t0: torch.Tensor, y0: tuple[torch.Tensor, ...], dt: torch.Tensor) -> None:
        self.counter.accept_step(dt)

    def callback_reject_step(self, t0: torch.Tensor, y0: tuple[torch.Tensor, ...], dt: torch.Tensor) -> None:
        self.counter.reject_step(dt)


class BatchDynamics:
    """The right-hand sides of several instances as one ``(N, MAX_DIM)`` system, for
    :func:`flows.ode.solve_batch`: row i is instance i's state, zero-padded past its family's
    dimension (the padding stays zero: its derivative is zero); ``weights`` marks each row's own
    features, which its error norm measures. Row i's derivative depends on row i only.

    The instances must come grouped by family (each family's rows contiguous), so that each
    family's right-hand side runs once per evaluation on a slice of the batch."""

    def __init__(self, instances: list[Instance]):
        self.dims = [FAMILIES[inst.family].dim for inst in instances]
        self.params = torch.tensor([inst.param for inst in instances], dtype=torch.float64)
        self.weights = torch.zeros(len(instances), MAX_DIM, dtype=torch.float64)
        for row, dim in enumerate(self.dims):
            self.weights[row, :dim] = 1.0
        self.groups: list[tuple[Family, int, int]] = []  # (family, first row, end row)
        for row, inst in enumerate(instances):
            if self.groups and self.groups[-1][0].name == inst.family:
                family, start, _ = self.groups[-1]
                self.groups[-1] = (family, start, row + 1)
            else:
                if any(family.name == inst.family for family, _, _ in self.groups):
                    raise ValueError("BatchDynamics needs the instances grouped by family")
                self.groups.append((FAMILIES[inst.family], row, row + 1))

    def pad(self, states: list[torch.Tensor]) -> torch.Tensor:
        """The rows' states as one zero-padded ``(N, MAX_DIM)`` tensor."""
        out = torch.zeros(len(states), MAX_DIM, dtype=torch.float64)
        for row, y in enumerate(states):
            out[row, : len(y)] = y
        return out

    def __call__(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        pieces = []
        for family, start, end in self.groups:
            dy = family.rhs(t[start:end], y[start:end, : family.dim], self.params[start:end])
            pieces.append(torch.nn.functional.pad(dy, (0, MAX_DIM - family.dim)))
        return torch.cat(pieces)


def relative_error(y: torch.Tensor, reference: torch.Tensor) -> float:
    """``max |y - y_ref| / max(1, max |y_ref|)``: the solver's mixed absolute / relative scale."""
    err = float((y - reference).abs().max() / reference.abs().max().clamp(min=1.0))
    return err if math.isfinite(err) else float("inf")
