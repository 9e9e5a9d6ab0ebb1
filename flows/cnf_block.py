"""One CNF block: an ODE solve of (z, log-det) over [0, T] with a per-call tolerance.

Implements the instantaneous change of variables (paper Eq. 2) in FFJORD's direction: the
block maps its input (data side, t = 0) to its output (latent side, t = T) and returns the
accumulated ``int_0^T tr(df/dz) dt``, so that ``log p(input) = log p(output) + logdet``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from flows.divergence import DIVERGENCES, NOISE_TYPES, exact_divergence, hutchinson_divergence, sample_noise
from flows.error_reg import dopri5_probe, error_penalty
from flows.ode import (
    BATCHED_BACKENDS,
    BlockStats,
    NFECounter,
    SolverError,
    check_adjoint_norm,
    check_backend,
    check_method,
    check_tolerance,
    is_adaptive,
    rescale_step,
    solve,
    solve_batch,
    solver_order,
)


class BlockOutput(NamedTuple):
    """Result of one block solve.

    Attributes:
        z: the block's output, shaped like its input.
        logdet: ``(B,)`` accumulated divergence, ``log|det dz_out/dz_in|`` (zeros when the
            log-determinant is not tracked, e.g. while sampling).
        regularization: ``(B, 2)`` integrals of the kinetic energy ``||f||^2`` and of the
            Jacobian Frobenius estimate ``||e^T df/dz||^2`` (Finlay et al. 2020), integrated
            along the solve but left out of its error control; zeros when the block was built
            with ``regularize=False`` and in evaluation mode (they are training-loss terms).
        stats: NFE accounting of the solve (and of the error probe, when it ran).
        error: ``(B,)`` penalty ``||err||^2 / dim`` of the probe step's local error estimate
            (see :mod:`flows.error_reg`); ``None`` when the probe did not run.
    """

    z: torch.Tensor
    logdet: torch.Tensor
    regularization: torch.Tensor
    stats: BlockStats
    error: torch.Tensor | None = None


class _Dynamics(nn.Module):
    """The augmented ODE of one solve; built per solve so the noise is not module state."""

    def __init__(
        self,
        net: nn.Module,
        counter: NFECounter,
        noise: torch.Tensor | None,
        divergence: str | None,
        regularize: bool,
    ):
        super().__init__()
        self.net = net
        self.counter = counter
        self.noise = noise
        self.divergence = divergence
        self.regularize = regularize

    def forward(self, t: torch.Tensor, states: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        create_graph = torch.is_grad_enabled()
        z = states[0]
        with torch.enable_grad():
            if not (create_graph and z.requires_grad):
                # Outside a differentiable solve the state is a leaf for the local VJP only.
                z = z.detach().requires_grad_(True)
            dz = self.net(t, z)
            if self.divergence is None:
                self.counter.record_call(dz)
                return (dz if create_graph else dz.detach(),)
            e_dfdz = None
            if self.divergence == "exact":
                div = exact_divergence(dz, z, create_graph)
            else:
                assert self.noise is not None  # CNFBlock.forward samples noise for every Hutchinson solve
                div, e_dfdz = hutchinson_divergence(dz, z, self.noise, create_graph)
            out = [dz, div]
            if self.regularize:
                if e_dfdz is None:
                    (e_dfdz,) = torch.autograd.grad(dz, z, self.noise, create_graph=create_graph, retain_graph=True)
                batch = z.shape[0]
                out.append(dz.reshape(batch, -1).pow(2).sum(1))
                out.append(e_dfdz.reshape(batch, -1).pow(2).sum(1))
        # Registered after the divergence's own vector-Jacobian products, so that the
        # backward-NFE hook only fires in the real backward pass.
        self.counter.record_call(dz)
        if not create_graph:
            out = [o.detach() for o in out]
        return tuple(out)


class _SteppedDynamics(_Dynamics):
    """The dynamics of an adaptive solve: also records the steps the solver accepts and rejects
    in the forward solve (the warm start and the benchmark's solver feedback read them) and the
    steps it accepts in the adjoint solve.

    A separate class because torchdiffeq warns, on every solve, when a fixed-step method
    meets a dynamics that defines step callbacks.
    """

    def callback_accept_step(self, t0: torch.Tensor, y0: tuple[torch.Tensor, ...], dt: torch.Tensor) -> None:
        self.counter.accept_step(dt)

    def callback_reject_step(self, t0: torch.Tensor, y0: tuple[torch.Tensor, ...], dt: torch.Tensor) -> None:
        self.counter.reject_step(dt)

    def callback_accept_step_adjoint(self, t0: torch.Tensor, y0: tuple[torch.Tensor, ...], dt: torch.Tensor) -> None:
        self.counter.accept_backward_step(dt)


class CNFBlock(nn.Module):
    """A continuous normalizing flow block (FFJORD) solved with torchdiffeq.

    Args:
        net: dynamics ``f(t, z)``; see :mod:`flows.nets`.
        time_length: integration end time T (paper: t0 = 0, t1 = 1).
        train_time: learn T (kept positive as the square of a parameter, as FFJORD does).
        solver: any torchdiffeq method name (default ``dopri5``).
        adjoint: back-propagate with the adjoint method (FFJORD's default).
        adjoint_norm: the adjoint solve's error norm, ``"seminorm"`` (default; without the
            parameter-gradient channels, Kidger et al. 2021) or ``"full"`` (see
            :data:`flows.ode.ADJOINT_NORMS`).
        divergence: ``"hutchinson"`` (default) or ``"exact"`` (brute force, low dimension).
        noise: Hutchinson noise, ``"rademacher"`` (default) or ``"gaussian"``.
        max_num_steps: step cap per solve; exceeding it raises ``SolverError``.
        regularize: also integrate the kinetic-energy and Jacobian-Frobenius terms.
        warm_start: start each forward solve from the step this block last accepted in a
            training pass (train mode, gradients on), rescaled to the new tolerance (see
            :func:`flows.ode.rescale_step`), instead of the solver's initial-step heuristic;
            ``last_step`` holds it (``FlowModel.solver_state``). With the adjoint method the
            adjoint solve is warm-started the same way from its own last accepted step
            (``last_backward_step``, at the tolerance of its solve); until it has one, and
            always without the warm start, it starts from the initial-step heuristic. A first
            step chosen for the forward solve (``first_step`` of ``forward``) is never passed
            to the adjoint solve, which starts at T on the augmented system.
        error_probe: in training mode, before each forward solve with the log-determinant,
            take one Dormand-Prince 5(4) probe step of size T from the input and return the
            penalty of its local error estimate (:mod:`flows.error_reg`, Pal et al. 2021).
            Its 7 network evaluations are counted in the block's NFE.
        backend: ODE backend of :func:`flows.ode.solve` (default ``"torchdiffeq"``).
    """

    def __init__(
        self,
        net: nn.Module,
        *,
        time_length: float = 1.0,
        train_time: bool = False,
        solver: str = "dopri5",
        adjoint: bool = False,
        adjoint_norm: str = "seminorm",
        divergence: str = "hutchinson",
        noise: str = "rademacher",
        max_num_steps: int | None = None,
        regularize: bool = False,
        warm_start: bool = False,
        error_probe: bool = False,
        backend: str = "torchdiffeq",
    ):
        super().__init__()
        if divergence not in DIVERGENCES:
            raise ValueError(f"unknown divergence {divergence!r}; valid: {', '.join(DIVERGENCES)}")
        if noise not in NOISE_TYPES:
            raise ValueError(f"unknown noise {noise!r}; valid: {', '.join(NOISE_TYPES)}")
        if not time_length > 0:
            raise ValueError(f"time_length must be positive, got {time_length}")
        self.net = net
        self.backend = check_backend(backend)
        self.solver = check_method(solver, self.backend)
        self.adjoint = adjoint
        self.adjoint_norm = check_adjoint_norm(adjoint_norm)
        self.divergence = divergence
        self.noise = noise
        self.max_num_steps = max_num_steps
        self.regularize = regularize
        self.warm_start = warm_start and is_adaptive(self.solver, self.backend)
        self.error_probe = error_probe
        #: ``(step, tol)``: the last step a training solve of this block accepted, at ``tol``.
        self.last_step: tuple[float, float] | None = None
        #: ``(step, tol)``: the last step an adjoint solve of a training pass accepted, at ``tol``
        #: (kept as the solve goes, so an adjoint solve that fails leaves the last step it
        #: accepted: a step that met the tolerance, which only sets where the next one starts).
        self.last_backward_step: tuple[float, float] | None = None
        sqrt_t = torch.tensor(float(time_length) ** 0.5)
        if train_time:
            self.sqrt_end_time = nn.Parameter(sqrt_t)
        else:
            self.register_buffer("sqrt_end_time", sqrt_t)

    @property
    def end_time(self) -> torch.Tensor:
        return self.sqrt_end_time * self.sqrt_end_time

    def forward(
        self,
        z: torch.Tensor,
        *,
        tol: float,
        reverse: bool = False,
        with_logdet: bool = True,
        generator: torch.Generator | None = None,
        first_step: float | None = None,
    ) -> BlockOutput:
        """Solve the block from t = 0 to T (``reverse=True``: from T to 0).

        Args:
            z: ``(B, ...)`` block input.
            tol: absolute and relative tolerance of the solve.
            reverse: integrate backwards (latent to data), used for sampling.
            with_logdet: also integrate the divergence (and regularization terms).
            generator: source of the Hutchinson noise, drawn once for this solve.
            first_step: the solver's first step as a fraction of the time span T, in (0, 1]
                (``None``: the warm start where on, else the solver's initial-step heuristic).
        """
        tol = check_tolerance(tol)
        counter = NFECounter()
        batch = z.shape[0]
        zeros = z.new_zeros(batch)
        divergence = self.divergence if with_logdet else None
        noise = None
        if divergence == "hutchinson" or (with_logdet and self.regularize):
            noise = sample_noise(z, self.noise, generator)
        regularize = self.regularize and with_logdet and self.training  # a training-loss term only
        warm = self.warm_start and not reverse and with_logdet
        stepped = _SteppedDynamics if is_adaptive(self.solver, self.backend) else _Dynamics
        dynamics = stepped(self.net, counter, noise, divergence, regularize)
        y0: tuple[torch.Tensor, ...] = (z,)
        if divergence is not None:
            y0 = y0 + (zeros,) + ((zeros, zeros) if regularize else ())
        t = torch.stack([self.end_time.new_zeros(()), self.end_time]).to(z)
        if reverse:
            t = t.flip(0)
        error = None
        if self.error_probe and self.training and with_logdet and not reverse:
            # Before the solve: the counter takes forward evaluations until solve() closes it.
            error = self._probe_error(z, counter)
        first_step = self._first_step(first_step, tol, warm)
        keep = warm and self.training and torch.is_grad_enabled()  # a training pass: keep its steps
        adjoint_first_step = None
        if warm and self.adjoint and self.last_backward_step is not None:
            adjoint_first_step = self._rescaled(self.last_backward_step, tol)
        if keep and self.adjoint:
            counter.on_backward_step = lambda step: self._keep_backward_step(step, tol)
        states = solve(
            dynamics, y0, t, counter,
            tol=tol, method=self.solver, adjoint=self.adjoint, max_num_steps=self.max_num_steps,
            first_step=first_step, backend=self.backend,
            controlled=2 if regularize else None,  # z and log-det; the regularizers' integrals ride along
            adjoint_norm=self.adjoint_norm, adjoint_first_step=adjoint_first_step,
        )
        if keep and counter.last_step is not None:
            self.last_step = (counter.last_step, tol)
        z_out = states[0][-1]
        logdet = states[1][-1] if divergence is not None else zeros
        if regularize:
            reg = torch.stack([states[2][-1], states[3][-1]], dim=1)
        else:
            reg = z.new_zeros(batch, 2)
        stats = BlockStats(nfe=counter.forward, tol=tol, counter=counter, span=float(self.end_time.detach()))
        return BlockOutput(z_out, logdet, reg, stats, error)

    def forward_batch(
        self, z: torch.Tensor, tols: Sequence[float], first_steps: Sequence[float | None],
    ) -> list[BlockOutput | SolverError]:
        """N forward solves of the block in one loop, each row with its own tolerance, first step
        and step-size control (:func:`flows.ode.solve_batch`); what :meth:`forward` gives for
        each row solved alone, for the frozen flows of the benchmark's vector envs.

        Args:
            z: ``(N, B, ...)``: N block inputs of B samples each.
            tols: N tolerances.
            first_steps: N first steps as fractions of the time span, ``None`` where the row
                takes the block's own choice (:meth:`forward`'s ``first_step``).

        Returns:
            Per row its :class:`BlockOutput` (no regularization integrals, no probe), or the
            :class:`flows.ode.SolverError` of its failed solve (the other rows are unaffected).

        Evaluation only, with the exact divergence (a Hutchinson estimate would need each row's
        noise drawn as its own solve draws it) and a backend of
        :data:`flows.ode.BATCHED_BACKENDS`; no gradient is taken. Each row's error is the largest
        RMS over its ``z`` and its log-determinant, the norm of :meth:`forward`'s solve.
        """
        if self.backend not in BATCHED_BACKENDS:
            raise ValueError(f"forward_batch needs a backend in {', '.join(BATCHED_BACKENDS)}, got {self.backend!r}")
        if self.divergence != "exact" or self.training:
            raise ValueError("forward_batch solves frozen blocks: evaluation mode with the exact divergence")
        count, batch = z.shape[0], z.shape[1]
        if not (len(tols) == len(first_steps) == count):
            raise ValueError(f"forward_batch needs one tolerance and one first step per row ({count}), "
                             f"got {len(tols)} and {len(first_steps)}")
        sample_shape, width = z.shape[2:], z[0, 0].numel()
        span = float(self.end_time.detach())
        starts = [float("nan") if step is None else step  # NaN: the initial-step heuristic
                  for step in (self._first_step(first, check_tolerance(tol), self.warm_start)
                               for tol, first in zip(tols, first_steps, strict=True))]

        def dynamics(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            with torch.enable_grad():
                zz = y[:, : batch * width].reshape(count * batch, *sample_shape).detach().requires_grad_(True)
                dz = self.net(t.repeat_interleave(batch), zz)  # each sample at its row's time
                div = exact_divergence(dz, zz, False)
            return torch.cat([dz.reshape(count, -1), div.reshape(count, batch)], dim=1).detach()

        y0 = torch.cat([z.reshape(count, -1), z.new_zeros(count, batch)], dim=1)
        with torch.no_grad():
            solution = solve_batch(
                dynamics, y0, z.new_zeros(count), z.new_full((count,), span), z.new_tensor(list(tols)),
                method=self.solver, controller=BATCHED_BACKENDS[self.backend],
                first_step=None if all(math.isnan(f) for f in starts) else z.new_tensor(starts),
                max_num_steps=self.max_num_steps, groups=[(0, batch * width), (batch * width, batch * (width + 1))])
        out: list[BlockOutput | SolverError] = []
        for row in range(count):
            if solution.errors[row] is not None:
                out.append(SolverError(str(solution.errors[row])))
                continue
            counter = NFECounter(forward=solution.nfe[row], last_step=solution.last_step[row],
                                 accepted=solution.accepted[row], rejected=solution.rejected[row])
            counter.close_forward()
            y = solution.y[row]
            stats = BlockStats(solution.nfe[row], float(tols[row]), counter, span)
            out.append(BlockOutput(y[: batch * width].reshape(batch, *sample_shape), y[batch * width:],
                                   z.new_zeros(batch, 2), stats))
        return out

    def _first_step(self, first_step: float | None, tol: float, warm: bool) -> float | None:
        """A solve's first step in time units: ``first_step`` (a fraction of the span), else with
        ``warm`` the kept last step rescaled to ``tol``, else ``None`` (the solver's heuristic)."""
        if first_step is not None:
            if not 0 < first_step <= 1:
                raise ValueError(f"first_step must be a fraction of the time span in (0, 1], got {first_step!r}")
            return first_step * float(self.end_time)
        if warm and self.last_step is not None:
            return self._rescaled(self.last_step, tol)
        return None

    def _rescaled(self, kept: tuple[float, float], tol: float) -> float:
        """A kept ``(step, at_tol)`` rescaled to ``tol``, at most the time span T."""
        step, at_tol = kept
        return min(rescale_step(step, at_tol, tol, solver_order(self.solver, self.backend)),
                   float(self.end_time.detach()))

    def _keep_backward_step(self, step: float, tol: float) -> None:
        if 0 < step < float("inf"):
            self.last_backward_step = (step, tol)

    def _probe_error(self, z: torch.Tensor, counter: NFECounter) -> torch.Tensor:
        """``(B,)`` penalty of the error estimate of one dopri5 step of size T from ``z``."""

        def f(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            dz = self.net(t, y)
            counter.record_call(dz)
            return dz

        h = self.end_time.detach().to(z)
        probe = dopri5_probe(f, h.new_zeros(()), z, h)
        return error_penalty(probe.error)
