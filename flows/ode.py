"""One adaptive ODE solve with exact NFE accounting and uniform failure reporting.

Every ODE solve of the flows (CNF blocks, the LatentODE) goes through :func:`solve`, so
forward and backward NFE are counted one way and a failed solve always surfaces as
:class:`SolverError`. :func:`solve_batch` solves many independent problems at once, each with
its own tolerance and step-size control (the ODE benchmark tasks' batched episodes), and reports
each row's NFE and failure apart.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import torch
from torch import nn
from torchdiffeq import odeint, odeint_adjoint

# torchdiffeq's public API is odeint / odeint_adjoint / odeint_event only: the solver registry
# (the valid method names) and the adaptive base class (which methods take ``first_step`` and
# ``max_num_steps``, and their ``order``) are private. They are imported here and nowhere else;
# tests/test_ode_backend.py fails with a clear message if a torchdiffeq release moves them.
try:
    from torchdiffeq._impl.odeint import SOLVERS as _TORCHDIFFEQ_SOLVERS
    from torchdiffeq._impl.solvers import AdaptiveStepsizeODESolver
except ImportError as err:  # pragma: no cover - only with a torchdiffeq that reorganised its internals
    raise ImportError(
        f"flows.ode imports torchdiffeq's private SOLVERS and AdaptiveStepsizeODESolver, which this torchdiffeq "
        f"does not have where expected ({err}); pin torchdiffeq>=0.2.4,<0.3 or update flows/ode.py"
    ) from err

#: The evaluation tolerance (Section 4.2): every reported figure comes from solves at 1e-5 (or
#: tighter), whatever tolerances training used, since solver error leaks into the likelihood.
#: It is also the default tolerance of a solve that is given none.
EVAL_TOL = 1e-5

#: Solver names accepted everywhere a ``method`` is configured (torchdiffeq's registry).
SOLVER_NAMES: tuple[str, ...] = tuple(sorted(_TORCHDIFFEQ_SOLVERS))


class SolverError(RuntimeError):
    """An ODE solve failed: step-size underflow, step cap exceeded or a non-finite state."""


@dataclass
class NFECounter:
    """Counts function evaluations of one solve, split into forward and backward passes.

    ``forward`` counts evaluations made while the forward solve runs. ``backward`` counts
    evaluations the backward pass costs: with the adjoint method the evaluations made by the
    adjoint solve; with direct back-propagation every recorded evaluation that the gradient
    flows through (counted by a tensor hook, so it is exact, not assumed).
    """

    forward: int = 0
    backward: int = 0
    #: Size of the last step the forward solve accepted (``None`` until one is; adaptive solvers).
    last_step: float | None = None
    #: Steps the forward solve accepted and rejected (adaptive solvers whose dynamics forward
    #: torchdiffeq's ``callback_accept_step`` / ``callback_reject_step`` here).
    accepted: int = 0
    rejected: int = 0
    #: Size of the last step the adjoint solve accepted (``None`` until one is; adjoint only).
    last_backward_step: float | None = None
    #: Called with the size of each step the adjoint solve accepts (e.g. to keep it for a warm start).
    on_backward_step: Callable[[float], None] | None = field(default=None, repr=False)
    _forward_done: bool = field(default=False, repr=False)

    def record_call(self, output: torch.Tensor) -> None:
        if self._forward_done:
            self.backward += 1
            return
        self.forward += 1
        if output.requires_grad and torch.is_grad_enabled():
            output.register_hook(self._on_backward)

    def _on_backward(self, grad: torch.Tensor) -> None:
        self.backward += 1

    def close_forward(self) -> None:
        self._forward_done = True

    def accept_step(self, dt: torch.Tensor) -> None:
        """Record an accepted step of the forward solve (torchdiffeq's ``callback_accept_step``)."""
        if not self._forward_done:
            self.last_step = abs(float(dt.detach()))
            self.accepted += 1

    def reject_step(self, dt: torch.Tensor) -> None:
        """Record a rejected step of the forward solve (torchdiffeq's ``callback_reject_step``)."""
        if not self._forward_done:
            self.rejected += 1

    def accept_backward_step(self, dt: torch.Tensor) -> None:
        """Record an accepted step of the adjoint solve (``callback_accept_step_adjoint``)."""
        self.last_backward_step = abs(float(dt.detach()))
        if self.on_backward_step is not None:
            self.on_backward_step(self.last_backward_step)


def check_tolerance(tol: float) -> float:
    """Return ``tol`` as a float or raise ``ValueError`` if it is not finite and positive."""
    try:
        value = float(tol)
    except (TypeError, ValueError):
        raise ValueError(f"tolerance must be a positive finite number, got {tol!r}") from None
    if not (value > 0.0 and value < float("inf")):
        raise ValueError(f"tolerance must be a positive finite number, got {tol!r}")
    return value


#: Error norms of the adjoint solve. ``"full"``: torchdiffeq's default, the largest RMS over every
#: channel of the augmented state (the time gradient, the state, its adjoint and the parameter
#: gradients). ``"seminorm"``: the same without the parameter-gradient channels (Kidger, Chen and
#: Lyons 2021, "Hey, that's not an ODE", Sec. 3): those channels are integrals that feed back into
#: no other channel, so the steps need not resolve them; the step-size control then measures the
#: state, its adjoint and the time gradient (torchdiffeq's ``norm="seminorm"``), and the backward
#: pass takes fewer steps where the parameter gradients are what limits them.
ADJOINT_NORMS: tuple[str, ...] = ("full", "seminorm")


def check_adjoint_norm(norm: str) -> str:
    if norm not in ADJOINT_NORMS:
        raise ValueError(f"unknown adjoint norm {norm!r}; valid: {', '.join(ADJOINT_NORMS)}")
    return norm


def backend_methods(backend: str) -> tuple[str, ...]:
    """The method names ``backend`` solves with (torchdiffeq's registry for ``"torchdiffeq"``)."""
    check_backend(backend)
    if backend == "torchdiffeq":
        return SOLVER_NAMES
    return tuple(SCIPY_METHODS if backend == "scipy" else TORCHODE_METHODS)


def check_method(method: str, backend: str = "torchdiffeq") -> str:
    """``method`` if ``backend`` has it; one ``ValueError`` naming the valid ones otherwise."""
    valid = backend_methods(backend)
    if method not in valid:
        where = "" if backend == "torchdiffeq" else f" of backend {backend!r}"
        raise ValueError(f"unknown solver {method!r}{where}; valid solvers: {', '.join(valid)}")
    return method


def is_adaptive(method: str, backend: str = "torchdiffeq") -> bool:
    """Whether ``method`` chooses its steps by an error estimate (every torchode and scipy method does)."""
    if backend != "torchdiffeq":
        return True
    return issubclass(_TORCHDIFFEQ_SOLVERS[method], AdaptiveStepsizeODESolver)


def solver_order(method: str, backend: str = "torchdiffeq") -> int:
    """``p`` of an adaptive method's step-size law, ``h_new = h * (1 / error_ratio)^(1 / p)``: one more
    than the order of its error estimate (dopri5 and tsit5: 5, dopri8 and DOP853: 8, bosh3 and
    RK23: 3); 1 where the solver has none."""
    if backend == "scipy":
        return SCIPY_METHODS[method]
    if backend.startswith("torchode"):
        return TORCHODE_METHODS[method]
    return int(getattr(_TORCHDIFFEQ_SOLVERS[method], "order", 1))


def rescale_step(step: float, from_tol: float, to_tol: float, order: int) -> float:
    """A step accepted at ``from_tol``, scaled for ``to_tol``: the local error of an order-``p``
    method grows like ``h^p``, so an equally accurate step changes by ``(to / from)^(1 / p)``."""
    return step * (to_tol / from_tol) ** (1.0 / order)


def _check_first_step(first_step: float | None) -> float | None:
    if first_step is None:
        return None
    if not (first_step > 0 and first_step < float("inf")):
        raise ValueError(f"first_step must be positive and finite, got {first_step!r}")
    return float(first_step)


def _solve_torchdiffeq(
    func: nn.Module,
    y0: tuple[torch.Tensor, ...],
    t: torch.Tensor,
    *,
    tol: float,
    method: str,
    adjoint: bool,
    max_num_steps: int | None,
    first_step: float | None,
    controlled: int,
    options: dict[str, Any],
    adjoint_norm: str = "seminorm",
    adjoint_first_step: float | None = None,
) -> tuple[torch.Tensor, ...]:
    adaptive = is_adaptive(method)
    opts = dict(options)
    if controlled < len(y0) and adaptive:
        opts["norm"] = _leading_norm(controlled)
    if max_num_steps is not None and adaptive:
        opts["max_num_steps"] = int(max_num_steps)
    # The adjoint solve takes the same options, except the forward's norm (torchdiffeq builds the
    # adjoint's norm from it) and the forward's first step (see ``solve``).
    adjoint_opts = {k: v for k, v in opts.items() if k != "norm"}
    if first_step is not None and adaptive:
        opts["first_step"] = first_step
    if adjoint_first_step is not None and adaptive:
        adjoint_opts["first_step"] = adjoint_first_step
    if adjoint_norm == "seminorm" and adaptive:
        adjoint_opts["norm"] = "seminorm"
    kwargs: dict[str, Any] = dict(rtol=tol, atol=tol, method=method, options=opts)
    try:
        if adjoint:
            return odeint_adjoint(func, y0, t, adjoint_params=tuple(func.parameters()), adjoint_options=adjoint_opts,
                                  **kwargs)
        return odeint(func, y0, t, **kwargs)
    except AssertionError as err:  # torchdiffeq reports solver failures by assertion
        raise SolverError(str(err).split(":")[0][:200]) from err


#: torchode's methods, name -> ``p`` of their step-size law (:func:`solver_order`): Dormand-Prince
#: 5(4), the tableau of torchdiffeq's ``dopri5``, and Tsitouras 5(4).
TORCHODE_METHODS: dict[str, int] = {"dopri5": 5, "tsit5": 5}
#: scipy's explicit Runge-Kutta methods (``scipy.integrate``), name -> ``p`` of their step-size law:
#: Bogacki-Shampine 3(2), Dormand-Prince 5(4), Dormand-Prince 8(5,3).
SCIPY_METHODS: dict[str, int] = {"RK23": 3, "RK45": 5, "DOP853": 8}
#: Step-size controllers of the torchode backends (``_solve_torchode``'s docstring).
CONTROLLERS: tuple[str, ...] = ("integral", "pi")


def _import_torchode() -> Any:
    try:
        import torchode
    except ImportError:
        raise ImportError("backend 'torchode' needs torchode (a dependency of infocnf-gym): "
                          "pip install 'torchode>=1.0.1,<2'") from None
    return torchode


def _controller_gains(controller: str) -> dict[str, float]:
    """The PID gains of ``controller`` (PI.3.4, in units of 1 / order; none for the integral one)."""
    if controller not in CONTROLLERS:
        raise ValueError(f"unknown step-size controller {controller!r}; valid: {', '.join(CONTROLLERS)}")
    return {"pcoeff": 0.4, "icoeff": 0.3, "dcoeff": 0.0} if controller == "pi" else {}


def _torchode_controller(controller: str) -> type:
    """torchode's step-size controller class for ``controller`` (``_solve_torchode``'s docstring):
    the integral one with torchdiffeq's rule that an accepted step never shrinks the next."""
    torchode = _import_torchode()
    _controller_gains(controller)
    if controller == "pi":
        return torchode.PIDController

    class Integral(torchode.IntegralController):  # type: ignore[name-defined]
        def dt_factor(self, state, error_ratio):
            factor = super().dt_factor(state, error_ratio)
            return torch.where(error_ratio < 1.0, factor.clamp(min=1.0), factor)

    return Integral


@dataclass
class BatchSolution:
    """What :func:`solve_batch` reports, row by row.

    ``y``: each row's state at its ``t_end`` (a failed row keeps its initial state). ``nfe``:
    the evaluations each row's own solve needs (the batch evaluates every row at every stage
    while any row runs; a row is charged only while it runs). ``accepted`` / ``rejected``:
    its steps. ``last_step``: its last accepted step, at the size the controller proposed
    where the span's end cut it (as torchdiffeq reports it); ``None`` if none was accepted.
    ``errors``: why a row's solve failed (``None`` where it succeeded).
    """

    y: torch.Tensor
    nfe: list[int]
    accepted: list[int]
    rejected: list[int]
    last_step: list[float | None]
    errors: list[str | None]


def solve_batch(
    func: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    y0: torch.Tensor,
    t_start: torch.Tensor,
    t_end: torch.Tensor,
    tol: torch.Tensor,
    *,
    method: str = "dopri5",
    controller: str = "integral",
    first_step: torch.Tensor | None = None,
    max_num_steps: int | None = None,
    weights: torch.Tensor | None = None,
    groups: Sequence[tuple[int, int]] | None = None,
) -> BatchSolution:
    """Solve N independent initial value problems in one loop, each with its own time span,
    tolerance, first step and step-size control (torchode's per-row control).

    The solves of the benchmark's vector envs: one call advances N episodes. A row's result
    does not depend on the other rows: the same row solved alone gives the same steps and NFE
    (tests/test_native_vector_env.py), which is what lets a single env be this solve at N = 1.

    Args:
        func: ``f(t, y) -> dy/dt`` with ``t`` of shape ``(N,)`` and ``y`` of ``(N, F)``; row i of the
            output may depend on row i of the input only. No gradient is taken.
        y0: ``(N, F)`` initial states (rows of fewer features are zero-padded, see ``weights``).
        t_start, t_end: ``(N,)`` each row's span (``t_end > t_start``).
        tol: ``(N,)`` each row's tolerance (atol = rtol, as :func:`solve`). The error ratio is
            ``RMS(error / (tol * (1 + max(|y0|, |y1|))))`` over the row's features, which is
            torchode's (and torchdiffeq's) ``atol + rtol * max(|y0|, |y1|)`` bound with a
            tolerance per row: torchode takes scalar tolerances, so the division by ``tol``
            happens in the norm.
        method: ``"dopri5"`` or ``"tsit5"`` (:data:`TORCHODE_METHODS`).
        controller: ``"integral"`` or ``"pi"`` (``_solve_torchode``'s docstring).
        first_step: ``(N,)`` each row's first step; NaN (or ``None`` for every row): the
            initial-step heuristic (Hairer, Norsett and Wanner, Sec. II.4), one evaluation more.
        max_num_steps: cap on each row's step attempts; a row past it fails alone.
        weights: ``(N, F)`` 0/1, the features of each row its error norm measures (``None``: all);
            the RMS is over the measured ones, so padding does not change a row's steps.
        groups: feature ranges ``(start, stop)``; where given, a row's error is the largest RMS
            over them, torchdiffeq's norm of a tuple state (one range per tensor: a flow's
            ``z`` and its log-density), instead of one RMS; not with ``weights``.

    Returns:
        A :class:`BatchSolution`. A row that fails (step cap, step-size underflow, non-finite
        values) fails alone: torchode stops the whole loop at the first failure, so the rows
        still running are solved again without it (their solves do not depend on it).
    """
    torchode = _import_torchode()
    if method not in TORCHODE_METHODS:
        raise ValueError(f"solve_batch supports methods {', '.join(TORCHODE_METHODS)}, got {method!r}")
    if groups is not None and weights is not None:
        raise ValueError("solve_batch takes weights or groups, not both")
    y0 = y0.detach()
    count, features = y0.shape
    weights = torch.ones_like(y0) if weights is None else weights.to(y0.dtype)
    heuristic = torch.ones(count, dtype=torch.bool) if first_step is None else torch.isnan(first_step)
    nfe, accepted, rejected = [0] * count, [0] * count, [0] * count
    last_step: list[float | None] = [None] * count
    errors: list[str | None] = [None] * count
    y_end = y0.clone()
    failed = torch.zeros(count, dtype=torch.bool)
    while True:
        # the rows still running; a failed row leaves the problem (torchode would stop at it again)
        # and is held at its initial state and time for the dynamics, which see every row
        rows = (~failed).nonzero().flatten()
        if len(rows) == 0:
            break
        run_func = func if len(rows) == count else _rows_only(func, rows, y0, t_start)
        status, y1, steps, taken, last = _solve_rows(
            torchode, run_func, y0[rows], t_start[rows], t_end[rows], tol[rows], method, controller,
            None if first_step is None else first_step[rows], max_num_steps, weights[rows], groups)
        new = status != torchode.status_codes.SUCCESS
        if bool(new.any()):  # the loop stopped at these rows' failure: report them, solve the rest again
            for position in new.nonzero().flatten().tolist():
                name = torchode.Status(int(status[position])).name.lower().replace("_", " ")
                row = int(rows[position])
                errors[row], failed[row] = f"torchode: {name}", True
            continue
        finite = torch.isfinite(y1).all(dim=1)
        for position, row in enumerate(rows.tolist()):
            nfe[row] = 1 + int(heuristic[row]) + _TORCHODE_STAGES[method] * int(steps[position])
            accepted[row] = int(taken[position])
            rejected[row] = int(steps[position] - taken[position])
            last_step[row] = None if torch.isnan(last[position]) else float(last[position])
            if bool(finite[position]):
                y_end[row] = y1[position]
            else:
                errors[row] = "non-finite values in the solution"
        break
    return BatchSolution(y_end, nfe, accepted, rejected, last_step, errors)


def _rows_only(func: Callable, rows: torch.Tensor, y0: torch.Tensor, t0: torch.Tensor) -> Callable:
    """``func`` on a subset ``rows`` of its N rows: the others held at ``y0`` and ``t0``, their
    derivatives dropped (a row's derivative depends on its own row only)."""
    def sub(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        t_all, y_all = t0.clone(), y0.clone()
        t_all[rows], y_all[rows] = t, y
        return func(t_all, y_all)[rows]

    return sub


#: Evaluations per step attempt of torchode's methods (7 stages, the first the last one of the
#: previous step: first same as last).
_TORCHODE_STAGES: dict[str, int] = {"dopri5": 6, "tsit5": 6}


def _solve_rows(torchode: Any, func: Callable, y0: torch.Tensor, t_start: torch.Tensor, t_end: torch.Tensor,
                tol: torch.Tensor, method: str, controller: str, first_step: torch.Tensor | None,
                max_num_steps: int | None, weights: torch.Tensor,
                groups: Sequence[tuple[int, int]] | None = None) -> tuple[torch.Tensor, ...]:
    """One torchode loop over the rows: (status, end state, step attempts, accepted steps, last step)."""
    count = len(y0)
    measured = weights.sum(dim=1).clamp(min=1.0)
    last = torch.full((count,), float("nan"), dtype=t_start.dtype)
    proposed = torch.zeros(count, dtype=t_start.dtype)
    dt_min = torch.finfo(t_start.dtype).eps * (t_end - t_start).abs().clamp(min=1.0)

    def norm(scaled: torch.Tensor) -> torch.Tensor:  # the RMS over a row's measured features, over its tol
        if groups is not None:  # the largest RMS over the groups (a tuple state's tensors)
            return torch.stack([scaled[:, a:b].pow(2).mean(dim=1).sqrt() for a, b in groups]).amax(0) / tol
        return (scaled.pow(2).mul(weights).sum(dim=1) / measured).sqrt() / tol

    class Controller(_torchode_controller(controller)):  # type: ignore[misc]
        def init(self, term, problem, method_order, dt0, *, stats, args):
            if dt0 is not None and bool(torch.isnan(dt0).any()):  # some rows want the heuristic
                guess, f0 = self._select_initial_step(term, problem.t_start, problem.y0, problem.time_direction,
                                                      (problem.t_end - problem.t_start).abs(), method_order,
                                                      stats, args)
                _, state, _ = super().init(term, problem, method_order, guess, stats=stats, args=args)
                return torch.where(torch.isnan(dt0), guess, dt0), state, f0
            return super().init(term, problem, method_order, dt0, stats=stats, args=args)

        def adapt_step_size(self, t0, dt, y0_, step_result, state, stats):
            state.dt_min = dt_min  # a minimum step per row (torchode's controllers take one for all)
            out = super().adapt_step_size(t0, dt, y0_, step_result, state, stats)
            done = out[0] & (dt != 0)  # a finished row steps by 0 until the loop ends
            taken = torch.where(proposed.abs() > dt.abs(), proposed, dt).abs()
            last.copy_(torch.where(done, taken, last))
            proposed.copy_(torch.where(dt != 0, out[1].detach(), proposed))
            # a row that has reached its end steps by 0 (below dt_min) until the loop ends: not a failure
            status = out[3] if out[3] is None else torch.where(dt == 0, torchode.status_codes.SUCCESS, out[3])
            return out[0], out[1], out[2], status

    term = torchode.ODETerm(lambda t, y: func(t, y).detach(), with_stats=False)
    step_control = Controller(atol=1.0, rtol=1.0, term=term, norm=norm, **_controller_gains(controller))
    stepper = {"dopri5": torchode.Dopri5, "tsit5": torchode.Tsit5}[method]
    solver = torchode.AutoDiffAdjoint(stepper(term=term), step_control, max_steps=max_num_steps,
                                      backprop_through_step_size_control=False)
    problem = torchode.InitialValueProblem(y0=y0, t_start=t_start, t_end=t_end)
    dt0 = None if first_step is None else first_step.to(t_start.dtype)
    with torch.no_grad():
        solution = solver.solve(problem, dt0=dt0)
    stats = solution.stats
    return solution.status, solution.ys[:, -1], stats["n_steps"], stats["n_accepted"], last


def _solve_torchode(
    func: nn.Module,
    y0: tuple[torch.Tensor, ...],
    t: torch.Tensor,
    *,
    tol: float,
    method: str,
    adjoint: bool,
    max_num_steps: int | None,
    first_step: float | None,
    controlled: int,
    options: dict[str, Any],
    adjoint_norm: str = "seminorm",
    adjoint_first_step: float | None = None,
    controller: str = "integral",
) -> tuple[torch.Tensor, ...]:
    """The same solve with torchode's loop, Dormand-Prince or Tsitouras.

    torchode controls the step of every row of a flat ``(batch, features)`` state on its own and
    passes a time per row. The dynamics here take one scalar time for the whole state (the
    networks of :mod:`flows.nets` do), so the whole tuple state is flattened into ONE row: one
    step size for the batch, as torchdiffeq takes, with torchdiffeq's error norm (the largest
    RMS over the tuple's tensors), and no gradient through the step-size control, as torchdiffeq.
    Direct back-propagation only (so the ``adjoint_*`` arguments are unused); ``first_step``,
    ``max_num_steps`` and the dynamics' ``callback_accept_step`` behave as with torchdiffeq.

    ``controller``: ``"integral"``, torchdiffeq's step-size control (the next step scales with
    ``error_ratio ** (-1/order)``, and an accepted step never shrinks the next); ``"pi"``, a
    proportional-integral controller, Söderlind's PI.3.4 (Söderlind 2003, "Digital Filters in
    Adaptive Time-Stepping", ACM TOMS 29; the default of DifferentialEquations.jl's
    Dormand-Prince methods): ``error_ratio ** (-0.7/order) * previous_error_ratio ** (0.4/order)``,
    which damps the step-size oscillation of the integral controller where stability, not
    accuracy, limits the step, at the price of reacting more slowly.
    """
    torchode = _import_torchode()
    check_backend_options("torchode", method, adjoint)
    if options:
        raise ValueError(f"backend 'torchode' takes no solver options, got {sorted(options)}")
    shapes = [y.shape for y in y0]
    sizes = [y.numel() for y in y0]
    bounds = [0]
    for size in sizes:
        bounds.append(bounds[-1] + size)

    def unflatten(flat: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(p.reshape(s) for p, s in zip(flat.split(sizes, dim=-1), shapes, strict=True))

    def flatten(states: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return torch.cat([s.reshape(1, -1) for s in states], dim=1)

    def f(tt: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
        return flatten(func(tt[0], unflatten(flat[0])))

    def mixed_norm(err: torch.Tensor) -> torch.Tensor:  # torchdiffeq's _mixed_norm, one row
        pieces = list(pairwise(bounds))[:controlled]
        return torch.stack([err[:, a:b].pow(2).mean(dim=1).sqrt() for a, b in pieces]).amax(0)

    callback = getattr(func, "callback_accept_step", None)
    reject = getattr(func, "callback_reject_step", None)
    proposed: list[torch.Tensor] = []  # the step the controller proposed last, before torchode cut it

    class Controller(_torchode_controller(controller)):  # type: ignore[misc]
        def adapt_step_size(self, t0, dt, y0, step_result, state, stats):
            out = super().adapt_step_size(t0, dt, y0, step_result, state, stats)
            if callback is not None and bool(out[0][0]):
                # torchode cuts the last step to end at t[-1]; torchdiffeq takes the proposed step past
                # it and interpolates. The step reported is the proposed one, as torchdiffeq reports.
                taken = proposed[0] if proposed and proposed[0].abs() > dt[0].abs() else dt[0]
                callback(t0[0], unflatten(y0[0]), taken)
            elif reject is not None and not bool(out[0][0]) and bool(dt[0] != 0):
                reject(t0[0], unflatten(y0[0]), dt[0])
            proposed[:] = [out[1][0].detach()]
            return out

    term = torchode.ODETerm(f, with_stats=False)
    span = float((t[-1] - t[0]).detach().abs())
    step_control = Controller(atol=tol, rtol=tol, term=term, norm=mixed_norm,
                              dt_min=torch.finfo(t.dtype).eps * max(span, 1.0), **_controller_gains(controller))
    # torchdiffeq chooses step sizes under no_grad: so must this, for the same gradient and backward NFE.
    stepper = {"dopri5": torchode.Dopri5, "tsit5": torchode.Tsit5}[method]
    solver = torchode.AutoDiffAdjoint(
        stepper(term=term), step_control, max_steps=max_num_steps, backprop_through_step_size_control=False,
    )
    t_eval = t.reshape(1, -1)
    problem = torchode.InitialValueProblem(
        y0=flatten(y0), t_start=t_eval[:, 0], t_end=t_eval[:, -1], t_eval=t_eval,
    )
    dt0 = None
    if first_step is not None:
        dt0 = torch.sign(t[-1] - t[0]).detach().reshape(1) * first_step
    solution = solver.solve(problem, dt0=dt0)
    status = int(solution.status[0])
    if status != torchode.status_codes.SUCCESS:
        raise SolverError(f"torchode: {torchode.Status(status).name.lower().replace('_', ' ')}")
    ys = solution.ys[0]  # (len(t), features)
    return tuple(p.reshape(len(t), *s) for p, s in zip(ys.split(sizes, dim=-1), shapes, strict=True))


def _solve_scipy(
    func: nn.Module,
    y0: tuple[torch.Tensor, ...],
    t: torch.Tensor,
    *,
    tol: float,
    method: str,
    adjoint: bool,
    max_num_steps: int | None,
    first_step: float | None,
    controlled: int,
    options: dict[str, Any],
    adjoint_norm: str = "seminorm",
    adjoint_first_step: float | None = None,
) -> tuple[torch.Tensor, ...]:
    """The same solve with one of scipy's explicit Runge-Kutta methods (:data:`SCIPY_METHODS`).

    The reference implementations a numerical analyst reaches for first (``scipy.integrate.
    solve_ivp``'s ``RK45`` and ``DOP853``), as a backend, so that every benchmark episode, baseline
    and agent can run on them. The whole state is flattened into one float64 vector; scipy's
    own step-size control (its initial-step heuristic, safety factor and step-size bounds) and
    its error norm (the RMS over every component, where torchdiffeq takes the largest RMS over
    the state's tensors) decide the steps. The solver object is stepped here, one accepted step
    per call, so that ``max_num_steps`` caps it and the dynamics' ``callback_accept_step`` hears
    every accepted step (the last one, cut by scipy to end at ``t[1]``, is reported at the size
    the controller proposed, as torchdiffeq reports its last step). The dynamics count their own
    evaluations: for one interval they equal ``solve_ivp``'s ``nfev``.

    No gradient flows through scipy: the backend refuses ``adjoint`` and states or parameters
    that require grad while grad is on. It solves over one interval (``len(t) == 2``) and
    controls the error of the whole state (``controlled`` must be every tensor).
    """
    import numpy as np
    from scipy import integrate

    check_backend_options("scipy", method, adjoint)
    if options:
        raise ValueError(f"backend 'scipy' takes no solver options, got {sorted(options)}")
    if len(t) != 2:
        raise ValueError(f"backend 'scipy' solves over one interval (two times), got {len(t)} times")
    if controlled < len(y0):
        raise ValueError("backend 'scipy' controls the error of the whole state (controlled must be every tensor)")
    if torch.is_grad_enabled() and any(p.requires_grad for p in (*y0, *func.parameters())):
        raise ValueError("backend 'scipy' computes no gradient: solve under torch.no_grad() with a frozen model")
    shapes, dtypes = [y.shape for y in y0], [y.dtype for y in y0]
    sizes = [y.numel() for y in y0]
    t0, t1 = (float(v) for v in t.detach())
    stages = getattr(integrate, method).n_stages  # evaluations per step attempt (the last one gives f(t_new))
    calls = [0]

    def rhs(tt: float, flat: np.ndarray) -> np.ndarray:
        calls[0] += 1
        pieces = torch.from_numpy(flat).split(sizes)
        state = tuple(p.reshape(s).to(d) for p, s, d in zip(pieces, shapes, dtypes, strict=True))
        out = func(torch.tensor(tt, dtype=t.dtype), state)
        return torch.cat([o.detach().reshape(-1).double() for o in out]).numpy()

    y_start = torch.cat([y.detach().reshape(-1).double() for y in y0]).numpy()
    span = abs(t1 - t0)
    kwargs: dict[str, Any] = {"rtol": tol, "atol": tol}
    if first_step is not None:
        kwargs["first_step"] = min(first_step, span)
    solver = getattr(integrate, method)(rhs, t0, y_start, t1, **kwargs)
    accept = getattr(func, "callback_accept_step", None)
    reject = getattr(func, "callback_reject_step", None)
    steps = 0
    while solver.status == "running":
        if max_num_steps is not None and steps >= max_num_steps:
            raise SolverError(f"scipy {method}: max_num_steps ({max_num_steps}) exceeded")
        t_old, proposed, before = solver.t, solver.h_abs, calls[0]
        message = solver.step()
        if solver.status == "failed":
            raise SolverError(f"scipy {method}: {message}")
        steps += 1
        for _ in range(max(0, (calls[0] - before) // stages - 1)):  # every attempt but the accepted one
            if reject is not None:
                reject(torch.tensor(t_old, dtype=t.dtype), y0, torch.tensor(proposed, dtype=t.dtype))
        taken = abs(solver.t - t_old)
        if solver.status == "finished" and proposed > taken:
            taken = proposed  # cut to end at t[1]: the step the controller chose
        if accept is not None:
            accept(torch.tensor(t_old, dtype=t.dtype), y0, torch.tensor(taken, dtype=t.dtype))
    end = torch.from_numpy(solver.y.copy()).split(sizes)
    return tuple(torch.stack([y.detach(), e.reshape(s).to(d)])
                 for y, e, s, d in zip(y0, end, shapes, dtypes, strict=True))


#: ODE backends, name -> implementation: every backend takes ``solve``'s arguments and returns
#: the state at every time of ``t``; the dynamics count their own evaluations either way.
BACKENDS: dict[str, Callable[..., tuple[torch.Tensor, ...]]] = {
    "torchdiffeq": _solve_torchdiffeq,
    "torchode": _solve_torchode,
    "torchode-pi": functools.partial(_solve_torchode, controller="pi"),
    "scipy": _solve_scipy,
}
#: The backends whose solves also run batched, N problems in one loop (:func:`solve_batch`: the
#: benchmark tasks' vector envs), backend -> its step-size controller.
BATCHED_BACKENDS: dict[str, str] = {"torchode": "integral", "torchode-pi": "pi"}


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"unknown ODE backend {backend!r}; valid backends: {', '.join(BACKENDS)}")
    return backend


def check_backend_options(backend: str, method: str, adjoint: bool) -> None:
    """Raise ``ValueError`` if ``backend`` cannot solve with ``method`` / ``adjoint``."""
    check_backend(backend)
    if backend == "torchdiffeq":
        check_method(method)
        return
    valid = backend_methods(backend)
    if method not in valid:
        raise ValueError(f"backend {backend!r} supports methods {', '.join(valid)}, got {method!r}")
    if adjoint:
        why = "computes no gradient" if backend == "scipy" else "back-propagates directly"
        raise ValueError(f"backend {backend!r} {why}; adjoint=True needs backend 'torchdiffeq'")


def solve(
    func: nn.Module,
    y0: tuple[torch.Tensor, ...],
    t: torch.Tensor,
    counter: NFECounter,
    *,
    tol: float,
    method: str = "dopri5",
    adjoint: bool = False,
    max_num_steps: int | None = None,
    first_step: float | None = None,
    options: dict[str, Any] | None = None,
    backend: str = "torchdiffeq",
    controlled: int | None = None,
    adjoint_norm: str = "seminorm",
    adjoint_first_step: float | None = None,
) -> tuple[torch.Tensor, ...]:
    """Integrate ``func`` from ``t[0]`` over ``t`` with ``atol = rtol = tol``.

    Args:
        func: dynamics ``f(t, y) -> dy/dt`` over a tuple state; it must call
            ``counter.record_call`` once per evaluation.
        y0: initial state, a tuple of tensors.
        t: 1-D tensor of output times (increasing or decreasing).
        counter: receives the NFE counts; closed for the forward pass on return.
        tol: absolute and relative error tolerance (the paper uses one value for both).
        method: a solver name of ``backend`` (:func:`backend_methods`: torchdiffeq's registry,
            ``dopri5`` / ``tsit5`` for torchode, ``RK23`` / ``RK45`` / ``DOP853`` for scipy).
        adjoint: solve the backward pass with the adjoint method (FFJORD's choice).
        max_num_steps: step cap for adaptive solvers; exceeding it raises ``SolverError``.
        first_step: the adaptive solver's first step instead of its initial-step heuristic
            (which costs one evaluation and often starts far smaller than needed).
        options: extra torchdiffeq solver options.
        backend: the solver implementation, a name in :data:`BACKENDS` (``"torchode"`` and
            ``"torchode-pi"``, its PI step-size controller,
            back-propagate directly; ``"scipy"`` computes no gradient).
        controlled: how many leading tensors of the state the step-size control measures
            (``None``: all; torchdiffeq's mixed norm, the largest RMS error over them). The
            others are integrated along but not error-controlled, e.g. regularization
            integrals whose accuracy does not matter.
        adjoint_norm: the adjoint solve's error norm, a name in :data:`ADJOINT_NORMS`
            (``adjoint=True`` only; the adjoint solve has the forward's tolerance).
        adjoint_first_step: the adjoint solve's first step (``adjoint=True`` only; ``None``:
            its initial-step heuristic). The forward's ``first_step`` is never passed on: it
            was chosen for the forward dynamics at ``t[0]``, while the adjoint solve starts at
            ``t[-1]`` on the augmented system. With several output times the adjoint solves
            each interval separately, and each starts from this step. To be told the adjoint
            solve's accepted steps, ``func`` defines ``callback_accept_step_adjoint``.

    Returns:
        The state at every time in ``t`` (each tensor has a leading time dimension).

    Raises:
        SolverError: the solver failed (underflow in dt, step cap, non-finite state).
        ValueError: unknown backend, method or tolerance, or options the backend lacks.
    """
    tol = check_tolerance(tol)
    check_method(method, check_backend(backend))
    check_adjoint_norm(adjoint_norm)
    implementation = BACKENDS[backend]
    adaptive = is_adaptive(method, backend)
    if controlled is None:
        controlled = len(y0)
    if not 1 <= controlled <= len(y0):
        raise ValueError(f"controlled must be in [1, {len(y0)}], got {controlled}")
    try:
        out = implementation(
            func, y0, t, tol=tol, method=method, adjoint=adjoint, max_num_steps=max_num_steps,
            first_step=_check_first_step(first_step) if adaptive else None, controlled=controlled,
            options=dict(options or {}), adjoint_norm=adjoint_norm,
            adjoint_first_step=_check_first_step(adjoint_first_step) if adaptive else None,
        )
    finally:
        counter.close_forward()
    if not all(torch.isfinite(o[-1]).all() for o in out):
        raise SolverError("non-finite values in the solution")
    return out


def _leading_norm(count: int) -> Callable[[tuple[torch.Tensor, ...]], torch.Tensor]:
    """torchdiffeq's mixed norm (the largest RMS over the state's tensors) over the first ``count`` only."""

    def norm(state: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return torch.stack([s.abs().pow(2).mean().sqrt() for s in state[:count]]).max()

    return norm


@dataclass
class BlockStats:
    """What one ODE block reports after its forward solve.

    ``nfe`` is the forward NFE of the block. ``nfe_backward`` is read after the loss has been
    back-propagated (it is 0 before, and stays 0 when no backward pass runs). ``span`` is the
    length of the time interval the block solved (step sizes are reported as fractions of it).
    """

    nfe: int
    tol: float
    counter: NFECounter = field(repr=False)
    span: float = 1.0

    @property
    def nfe_backward(self) -> int:
        return self.counter.backward


class NFETotals:
    """Forward and backward NFE of a whole pass, for output dataclasses with ``stats``."""

    stats: tuple[BlockStats, ...]

    @property
    def nfe_forward(self) -> int:
        return sum(s.nfe for s in self.stats)

    @property
    def nfe_backward(self) -> int:
        """Read after the loss has been back-propagated (0 before)."""
        return sum(s.nfe_backward for s in self.stats)
