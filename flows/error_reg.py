"""A regularizer of the adaptive solver's local error estimate (Pal et al. 2021).

Pal, Ma, Shah and Rackauckas, "Opening the blackbox: accelerating neural differential
equations by regularizing internal solver heuristics" (ICML 2021), Sec. 3, add to the loss the
local error estimates ``E_j`` that the adaptive solver computes at its steps: dynamics whose
embedded error estimates are small let the step-size controller take fewer, longer steps.

torchdiffeq does not expose its error estimates (they live in its private step code, and the
stage evaluations of an accepted step can only be told apart by relying on its internal call
order), so this module computes one itself: a *probe* step. For each CNF block in a training
pass, one Dormand-Prince 5(4) step (the ``dopri5`` tableau, written out below from the
published coefficients) of size ``h`` from the block's input ``z0`` on the dynamics
``f(t, z)`` alone (no divergence, no regularization integrals) gives the embedded estimate

    err = h * sum_i (b_i - b*_i) k_i  =  y5(h) - y4(h),

the quantity an adaptive dopri5 solve compares with ``atol + rtol |z|``. The penalty of a
sample is ``||err||^2 / dim`` (mean square over the block's dimensions).

Choices (see ``CNFBlock``):

* ``h = T``, the block's time span, taken as a constant (no gradient to a learned ``T``):
  the probe measures how hard the dynamics are to integrate, not how long the span is.
  The warm-start step (``CNFBlock.last_step``) is *not* used: it is picked by the controller
  so that the error at it is about the tolerance, whatever the dynamics, so the penalty at
  it would be of order ``tol^2`` and say little; and it moves between passes and with the
  tolerance.
* The absolute mean square, not torchdiffeq's error ratio ``err / (atol + rtol |z|)``: the
  ratio depends on the tolerance of the solve. The loss J enters the environment's reward
  and its tight-tolerance gap check, and with learned tolerances a tolerance-dependent term
  would pay a policy for loose tolerances (a smaller ratio) rather than for fewer steps, and
  would show up as a spurious gap between the loss at 1e-5 and at the chosen tolerance. The
  absolute error of a fixed step is a property of the dynamics and the block input alone.
  The number of steps a dopri5 solve of the block needs grows like ``(||err|| / tol)^(1/5)``
  when the error behaves like the leading ``h^5`` term, so shrinking it is what makes the
  solve cheaper at every tolerance.
* Squared, so that the penalty is smooth at zero and, summed over samples, is the mean square
  error per dimension that the RMS norm of the solver squares as well.

Cost: the probe evaluates the network 7 times per block (stages ``k1 .. k7``; ``k7``, the
first-same-as-last stage at ``y5``, carries the ``-1/60`` weight of the error). The solve
cannot share ``k1 = f(0, z0)`` with the probe: its first evaluation also carries the divergence,
and the probe's evaluations must be recorded before ``solve`` closes the counter's forward pass. They are real
evaluations and are recorded in the block's ``NFECounter`` as forward evaluations, so they
appear in ``BlockStats.nfe`` and every NFE figure, and in the backward count when the loss is
back-propagated through them. The probe only runs in training mode, so evaluation (e.g.
``flows.evaluate``) is unaffected.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

#: Dormand-Prince 5(4): nodes c_i, the stage matrix a_ij (row i: the weights of k_1 .. k_i that
#: give the input of stage i + 1), the 5th-order weights b (the solution) and the 4th-order
#: embedded weights b*. The last row of ``DOPRI5_A`` equals ``DOPRI5_B``: stage 7 is evaluated
#: at the 5th-order solution (first same as last). b* is Shampine's (1986, "Some practical
#: Runge-Kutta formulas", Math. Comp. 46) 4th-order embedding, the one torchdiffeq's ``dopri5``
#: estimates its error with (error weight of k7: -1/60), rather than Dormand and Prince's
#: original (5179/57600, ..., 1/40): the probe's estimate is then exactly the one a torchdiffeq
#: dopri5 step of size h from z0 is accepted or rejected by (see tests/test_error_reg.py).
DOPRI5_C: tuple[float, ...] = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
DOPRI5_A: tuple[tuple[float, ...], ...] = (
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
DOPRI5_B: tuple[float, ...] = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0)
DOPRI5_B_STAR: tuple[float, ...] = (
    1951 / 21600, 0.0, 22642 / 50085, 451 / 720, -12231 / 42400, 649 / 6300, 1 / 60,
)

Dynamics = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class ProbeStep(NamedTuple):
    """One embedded Runge-Kutta step.

    Attributes:
        solution: the 5th-order solution ``y5(t0 + h)``, shaped like ``z0``.
        error: the embedded local error estimate ``y5 - y4``, shaped like ``z0``.
        evaluations: how many times the dynamics was called (7).
    """

    solution: torch.Tensor
    error: torch.Tensor
    evaluations: int


def _combine(z0: torch.Tensor, h: torch.Tensor, weights: tuple[float, ...], ks: list[torch.Tensor]) -> torch.Tensor:
    """``z0 + h * sum_j w_j k_j`` over the nonzero weights (``z0`` alone for none)."""
    terms = [w * k for w, k in zip(weights, ks, strict=False) if w != 0.0]
    return z0 + h * torch.stack(terms).sum(0) if terms else z0


def dopri5_probe(f: Dynamics, t0: torch.Tensor, z0: torch.Tensor, h: torch.Tensor) -> ProbeStep:
    """One Dormand-Prince 5(4) step of size ``h`` of ``dz/dt = f(t, z)`` from ``(t0, z0)``.

    Differentiable with respect to everything ``f`` depends on. ``t0`` and ``h`` are 0-d tensors.
    """
    ks = [f(t0, z0)]
    for c, row in zip(DOPRI5_C[1:], DOPRI5_A, strict=True):
        ks.append(f(t0 + c * h, _combine(z0, h, row, ks)))
    solution = _combine(z0, h, DOPRI5_B, ks)
    diff = tuple(b - bs for b, bs in zip(DOPRI5_B, DOPRI5_B_STAR, strict=True))
    error = _combine(torch.zeros_like(z0), h, diff, ks)
    return ProbeStep(solution, error, len(ks))


def error_penalty(error: torch.Tensor) -> torch.Tensor:
    """Per-sample penalty ``||err||^2 / dim`` of a ``(B, ...)`` error estimate, shaped ``(B,)``."""
    return error.reshape(error.shape[0], -1).pow(2).mean(1)
