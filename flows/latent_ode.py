"""LatentODE with an optionally partitioned latent code (paper Sec. 4.6, Appendix E.2-E.3).

The baseline is the LatentODE of Chen et al. 2018 / Rubanova et al. 2019: an RNN runs
backwards in time over the observed window and gives ``q(z_t0 | x) = N(mean, exp(log_std)^2)``;
``z_t0`` is integrated through ``dz/dt = f(z)`` over the observation times and decoded to
``x_hat``. The partitioned variant applies InfoCNF's split to ``z_t0``: the first ``sup_dim``
(3) dimensions are ``z_y`` with the conditional prior ``N(mu(y), sigma(y))`` from a linear,
zero-initialised ``q_phi(y)``, the rest are ``z_u ~ N(0, I)``, and a linear ``q_theta(z_y)``
predicts ``y = (a, b, direction)``.

Loss (per spiral, averaged over the batch)::

    loss = [-log p(x | z) + KL(q(z_t0 | x) || p(z_t0 | y))] / (T * D) + beta * L_sup

with a Gaussian likelihood of fixed std ``obs_std`` (default 0.3, the data's noise std), i.e.
the negative ELBO per observed scalar (the maximiser is that of the ELBO).
``L_sup = BCE(direction logit) + MSE((a, b) standardised by their prior means and stds)``.

Block protocol (docs/design.md): the ODE solve of the latent trajectory is cut into
``num_blocks == segments`` (default 1) consecutive time segments of the solved time grid, each
one block with its own tolerance and its own NFE count. ``start`` encodes and samples ``z_t0``
(posterior mean in eval mode), ``features`` is the latent state at the start of the next
segment (``z_t0`` for the first), ``advance`` solves one segment from there, ``finish`` decodes
the whole trajectory and computes the loss. The observation times live in the state; they
default to the constructor's ``times``. With ``T`` times, segment ``k`` covers the times
``times[b_k], ..., times[b_{k+1}]`` with ``b = round(linspace(0, T - 1, segments + 1))``:
consecutive segments share their boundary time, and each segment restarts the adaptive
solver from the previous segment's end state. Sampling, reconstruction and
:func:`evaluate_latent_ode` solve the same segments (all at one tolerance).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from itertools import pairwise
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from flows.ode import (
    EVAL_TOL,
    BlockStats,
    NFECounter,
    NFETotals,
    check_adjoint_norm,
    check_method,
    check_tolerance,
    solve,
)
from flows.spirals import A_MEAN, A_STD, B_MEAN, B_STD, SpiralData, window_times

__all__ = ["ENCODERS", "LatentODE", "LatentODEOutput", "LatentODEState", "evaluate_latent_ode"]

#: Recurrent cells of the encoder.
ENCODERS = {"gru": nn.GRU, "rnn": nn.RNN}

_Y_MEAN = (A_MEAN, B_MEAN)
_Y_STD = (A_STD, B_STD)


@dataclass(frozen=True)
class LatentODEState:
    """Where a pass through the LatentODE stands.

    Attributes:
        x: ``(B, T, D)`` observations.
        y: ``(B, 3)`` spiral parameters ``(a, b, direction)`` or ``None``.
        times: ``(T,)`` observation times; ``z0`` lives at ``times[0]``.
        q_mean, q_log_std: ``(B, L)`` posterior ``q(z_t0 | x)``.
        z0: ``(B, L)`` latent initial state (a posterior sample in train mode, the mean in eval).
        traj: ``(T, B, L)`` latent trajectory once every segment is solved, else ``None``.
        stats: ``BlockStats`` of the solved segments (blocks).
        pieces: the solved segments' trajectories, ``(T_k, B, L)`` each, the shared boundary
            time kept only in the earlier segment.
    """

    x: torch.Tensor
    y: torch.Tensor | None
    times: torch.Tensor
    q_mean: torch.Tensor
    q_log_std: torch.Tensor
    z0: torch.Tensor
    traj: torch.Tensor | None = None
    stats: tuple[BlockStats, ...] = ()
    pieces: tuple[torch.Tensor, ...] = ()


@dataclass
class LatentODEOutput(NFETotals):
    """What :meth:`LatentODE.finish` returns.

    Attributes:
        loss: scalar, negative ELBO per observed scalar + ``beta * sup_loss``.
        recon_nll: scalar mean ``-log p(x | z)`` per observed scalar.
        kl: scalar mean ``KL(q(z_t0 | x) || p(z_t0 | y))`` per spiral (not normalised).
        recon_mse: scalar mean squared error of ``x_hat`` against the observations.
        x_hat: ``(B, T, D)`` decoded trajectory.
        z0: ``(B, L)`` latent initial state.
        stats: ``BlockStats`` of the pass.
        xent: scalar direction cross-entropy (partitioned only, else ``None``).
        ab_mse: scalar MSE of standardised ``(a, b)`` (partitioned only).
        sup_pred: ``(B, 3)`` ``(a_hat, b_hat, direction logit)`` in data units (partitioned only).
        y: the conditioning of the pass.
    """

    loss: torch.Tensor
    recon_nll: torch.Tensor
    kl: torch.Tensor
    recon_mse: torch.Tensor
    x_hat: torch.Tensor
    z0: torch.Tensor
    stats: tuple[BlockStats, ...]
    xent: torch.Tensor | None = None
    ab_mse: torch.Tensor | None = None
    sup_pred: torch.Tensor | None = None
    y: torch.Tensor | None = None

    @property
    def neg_elbo(self) -> torch.Tensor:
        """Scalar negative ELBO per observed scalar (nats): the loss without the supervised term."""
        return self.recon_nll + self.kl / self.x_hat[0].numel()

    def metrics(self) -> dict[str, float]:
        """recon_mse, recon_nll, kl, bits_per_dim; plus xent, ab_mse, direction_error, error when partitioned.

        ``bits_per_dim`` is :attr:`neg_elbo` in bits (``/ ln 2``): the negative ELBO per observed
        scalar, the LatentODE's counterpart of a flow's bits/dim. ``error`` is the direction error
        (the partitioned model's classification error), the key the flows use for their error rate.
        """
        out = {
            "recon_mse": float(self.recon_mse.detach()),
            "recon_nll": float(self.recon_nll.detach()),
            "kl": float(self.kl.detach()),
            "bits_per_dim": float(self.neg_elbo.detach()) / math.log(2),
        }
        if self.xent is not None and self.sup_pred is not None and self.y is not None:
            assert self.ab_mse is not None  # finish() sets xent, ab_mse and sup_pred together
            out["xent"] = float(self.xent.detach())
            out["ab_mse"] = float(self.ab_mse.detach())
            wrong = (self.sup_pred[:, 2] > 0).long() != self.y[:, 2].round().long()
            out["direction_error"] = float(wrong.float().mean())
            out["error"] = out["direction_error"]
        return out


class _Dynamics(nn.Module):
    """``dz/dt = f(z)`` for one solve; counts every evaluation on the solve's counter."""

    def __init__(self, net: nn.Module, counter: NFECounter):
        super().__init__()
        self.net = net
        self.counter = counter

    def forward(self, t: torch.Tensor, states: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        dz = self.net(states[0])
        self.counter.record_call(dz)
        return (dz,)


def _gaussian_kl(mean: torch.Tensor, log_std: torch.Tensor, p_mean: torch.Tensor, p_log_std: torch.Tensor):
    """``KL(N(mean, std^2) || N(p_mean, p_std^2))`` summed over the last dimension."""
    var_ratio = torch.exp(2 * (log_std - p_log_std))
    sq = ((mean - p_mean) * torch.exp(-p_log_std)).pow(2)
    return 0.5 * (var_ratio + sq - 1).sum(-1) - (log_std - p_log_std).sum(-1)


class LatentODE(nn.Module):
    """LatentODE (Appendix E.2), optionally with the partitioned latent code of InfoCNF.

    Args:
        times: ``(T,)`` default observation times; ``None`` means the spiral windows' grid
            (:func:`flows.spirals.window_times`). A pass may override them in :meth:`start`.
        partitioned: split ``z_t0`` into ``z_y`` (conditional prior, supervised head) and ``z_u``.
        obs_dim: D, dimension of one observation (2 for spirals).
        latent_dim: L, dimension of ``z_t0`` (5).
        sup_dim: dimension of ``z_y`` when partitioned (3).
        rnn_hidden: hidden units of the encoder RNN (25).
        dyn_hidden: hidden units of the one-hidden-layer dynamics MLP (20).
        dec_hidden: hidden units of the one-hidden-layer decoder (20).
        encoder: ``"gru"`` (default) or ``"rnn"``.
        obs_std: fixed std of the Gaussian likelihood (0.3, the data's noise std).
        obs_scale: fixed scale of the data: the encoder reads ``x / obs_scale`` and the decoder's
            output is multiplied by it (spiral coordinates reach about +-19; this keeps the
            networks' inputs and outputs of order one).
        beta: weight of the supervised loss.
        solver: torchdiffeq method (``dopri5``).
        adjoint: back-propagate through the solve with the adjoint method.
        adjoint_norm: the adjoint solve's error norm, ``"seminorm"`` (default; Kidger, Chen and
            Lyons 2021) or ``"full"`` (see ``flows.ode.ADJOINT_NORMS``); adjoint only. The
            adjoint solve starts from its initial-step heuristic on every interval between
            observation times, whatever first step the forward solve was given.
        max_num_steps: step cap of the solver; exceeding it raises ``SolverError``. torchdiffeq
            applies it between consecutive output times, not to the whole solve.
        segments: number of consecutive time segments the trajectory solve is cut into, one
            block (one tolerance, one NFE count) each; ``num_blocks == segments``. Every solved
            time grid needs at least ``segments + 1`` times.

    Attributes:
        spec: the constructor's settings (kept with checkpoints; ``times`` as its length).

    References:
        Paper Sec. 4.6, Appendix E.2; Rubanova et al. 2019; Chen et al. 2018, Sec. 5.
    """

    # Registered buffers (``y_mean`` and ``y_std`` only when partitioned).
    times: torch.Tensor
    y_mean: torch.Tensor
    y_std: torch.Tensor

    def __init__(
        self,
        times: torch.Tensor | None = None,
        *,
        partitioned: bool = False,
        obs_dim: int = 2,
        latent_dim: int = 5,
        sup_dim: int = 3,
        rnn_hidden: int = 25,
        dyn_hidden: int = 20,
        dec_hidden: int = 20,
        encoder: str = "gru",
        obs_std: float = 0.3,
        obs_scale: float = 5.0,
        beta: float = 1.0,
        solver: str = "dopri5",
        adjoint: bool = False,
        adjoint_norm: str = "seminorm",
        max_num_steps: int | None = 10_000,
        segments: int = 1,
    ):
        super().__init__()
        if isinstance(segments, bool) or not isinstance(segments, int) or segments < 1:
            raise ValueError(f"segments must be a positive integer, got {segments!r}")
        if encoder not in ENCODERS:
            raise ValueError(f"unknown encoder {encoder!r}; valid encoders: {', '.join(ENCODERS)}")
        if partitioned and not 0 < sup_dim < latent_dim:
            raise ValueError(f"need 0 < sup_dim < latent_dim, got {sup_dim} and {latent_dim}")
        if not (obs_std > 0 and obs_scale > 0):
            raise ValueError(f"obs_std and obs_scale must be positive, got {obs_std} and {obs_scale}")
        times = window_times() if times is None else torch.as_tensor(times, dtype=torch.float32)
        self.num_blocks = segments
        self.register_buffer("times", self._check_times(times))
        self.segment_bounds(times.shape[0])  # enough default times for every segment
        self.partitioned = partitioned
        self.obs_dim = obs_dim
        self.latent_dim = latent_dim
        self.sup_dim = sup_dim if partitioned else 0
        self.obs_std = float(obs_std)
        self.obs_scale = float(obs_scale)
        self.beta = float(beta)
        self.solver = check_method(solver)
        self.adjoint = adjoint
        self.adjoint_norm = check_adjoint_norm(adjoint_norm)
        self.max_num_steps = max_num_steps
        self.spec = {"arch": "latent_ode", "config": dict(
            num_times=int(times.shape[0]), partitioned=bool(partitioned), obs_dim=obs_dim, latent_dim=latent_dim,
            sup_dim=self.sup_dim, rnn_hidden=rnn_hidden, dyn_hidden=dyn_hidden, dec_hidden=dec_hidden,
            encoder=encoder, obs_std=self.obs_std, obs_scale=self.obs_scale, beta=self.beta, solver=solver,
            adjoint=bool(adjoint), adjoint_norm=adjoint_norm, max_num_steps=max_num_steps, segments=segments,
        )}
        self.rnn = ENCODERS[encoder](obs_dim, rnn_hidden, batch_first=True)
        self.to_posterior = nn.Linear(rnn_hidden, 2 * latent_dim)
        self.dynamics = nn.Sequential(nn.Linear(latent_dim, dyn_hidden), nn.ELU(), nn.Linear(dyn_hidden, latent_dim))
        self.decoder = nn.Sequential(nn.Linear(latent_dim, dec_hidden), nn.ReLU(), nn.Linear(dec_hidden, obs_dim))
        if partitioned:
            self.q_phi = nn.Linear(3, 2 * sup_dim)  # y -> (mu, log sigma) of p(z_y | y)
            nn.init.zeros_(self.q_phi.weight)
            nn.init.zeros_(self.q_phi.bias)
            self.q_theta = nn.Linear(sup_dim, 3)  # z_y -> (a, b standardised, direction logit)
            self.register_buffer("y_mean", torch.tensor(_Y_MEAN))
            self.register_buffer("y_std", torch.tensor(_Y_STD))

    # ------------------------------------------------------------------ block loop
    def start(
        self,
        x: torch.Tensor,
        y: torch.Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
        times: torch.Tensor | None = None,
    ) -> LatentODEState:
        """Encode the window and draw ``z_t0``.

        Args:
            x: ``(B, T, D)`` observations at ``times``.
            y: ``(B, 3)`` ``(a, b, direction)``; required when partitioned, ignored otherwise.
            generator: source of the posterior sample (train mode only).
            times: ``(T,)`` observation times; defaults to the constructor's ``times``.
        """
        times = self.times if times is None else self._check_times(times.to(self.times))
        if x.dim() != 3 or x.shape[1:] != (times.shape[0], self.obs_dim):
            raise ValueError(f"x must have shape (batch, {times.shape[0]}, {self.obs_dim}), got {tuple(x.shape)}")
        self.segment_bounds(times.shape[0])  # enough times for every segment
        if self.partitioned:
            if y is None:
                raise ValueError("the partitioned LatentODE needs y = (a, b, direction)")
            if y.shape != (x.shape[0], 3):
                raise ValueError(f"y must have shape ({x.shape[0]}, 3), got {tuple(y.shape)}")
        mean, log_std = self.encode(x)
        z0 = mean
        if self.training:
            eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
            z0 = mean + torch.exp(log_std) * eps
        return LatentODEState(x=x, y=y if self.partitioned else None, times=times, q_mean=mean,
                              q_log_std=log_std, z0=z0)

    def features(self, state: LatentODEState) -> torch.Tensor:
        """``(B, L)`` the input of the next ODE block: the latent state at the start of its
        segment (``z_t0`` for the first). What a tolerance gate sees."""
        if state.traj is not None:
            raise RuntimeError("all blocks have been solved; call finish()")
        return state.pieces[-1][-1] if state.pieces else state.z0

    def block_index(self, state: LatentODEState) -> int:
        return len(state.stats)

    def solver_state(self) -> dict[str, Any]:
        """Nothing carries over between passes: every segment solve starts from the heuristic."""
        return {}

    def load_solver_state(self, state: dict[str, Any] | None) -> None:
        """Nothing to restore (see :meth:`solver_state`)."""

    def block_input_shapes(self) -> list[tuple[int, ...]]:
        return [(self.latent_dim,)] * self.num_blocks

    def segment_bounds(self, num_times: int) -> list[tuple[int, int]]:
        """``[(lo, hi), ...]``: segment k solves over ``times[lo : hi + 1]`` (see the module doc)."""
        if num_times < self.num_blocks + 1:
            raise ValueError(f"{self.num_blocks} segments need at least {self.num_blocks + 1} times, got {num_times}")
        bounds = [round(k * (num_times - 1) / self.num_blocks) for k in range(self.num_blocks + 1)]
        return list(pairwise(bounds))

    def advance(
        self, state: LatentODEState, tol: float = EVAL_TOL, *, first_step: float | None = None
    ) -> tuple[LatentODEState, BlockStats]:
        """Solve ``dz/dt = f(z)`` over the next time segment with ``atol = rtol = tol``.

        ``first_step``: the solver's first step as a fraction of the segment's time span, in
        (0, 1] (``None``: the solver's initial-step heuristic).

        Raises:
            ValueError: ``tol`` is not a positive finite number.
            SolverError: the solve failed (step cap, step-size underflow, non-finite state).
        """
        tol = check_tolerance(tol)
        if state.traj is not None:
            raise RuntimeError("all blocks have been solved; call finish()")
        k = len(state.stats)
        lo, hi = self.segment_bounds(state.times.shape[0])[k]
        piece, stats = self.integrate(self.features(state), state.times[lo : hi + 1], tol, first_step=first_step)
        pieces = state.pieces + (piece if k == 0 else piece[1:],)
        traj = torch.cat(pieces) if k + 1 == self.num_blocks else None
        return replace(state, traj=traj, stats=state.stats + (stats,), pieces=pieces), stats

    def finish(self, state: LatentODEState) -> LatentODEOutput:
        """Decode the trajectory; negative ELBO, KL and the supervised loss (Sec. 4.6)."""
        if state.traj is None:
            raise RuntimeError("finish() called before every ODE block was solved")
        x, y = state.x, state.y
        x_hat = self.decode(state.traj)
        sq_err = (x - x_hat).pow(2)
        log_norm = math.log(self.obs_std) + 0.5 * math.log(2 * math.pi)
        recon_nll = (0.5 * sq_err / self.obs_std**2 + log_norm).mean()
        p_mean, p_log_std = self.prior(y, x.shape[0])
        kl = _gaussian_kl(state.q_mean, state.q_log_std, p_mean, p_log_std).mean()
        loss = recon_nll + kl / x[0].numel()
        xent = ab_mse = sup_pred = None
        if self.partitioned:
            if y is None:
                raise ValueError("the partitioned LatentODE needs y = (a, b, direction)")
            raw = self.q_theta(self.z_y(state.z0))
            y_std = (y[:, :2] - self.y_mean) / self.y_std
            xent = F.binary_cross_entropy_with_logits(raw[:, 2], y[:, 2].float())
            ab_mse = F.mse_loss(raw[:, :2], y_std)
            loss = loss + self.beta * (xent + ab_mse)
            sup_pred = torch.cat([raw[:, :2] * self.y_std + self.y_mean, raw[:, 2:]], dim=1)
        return LatentODEOutput(
            loss=loss, recon_nll=recon_nll, kl=kl, recon_mse=sq_err.mean(), x_hat=x_hat, z0=state.z0,
            stats=state.stats, xent=xent, ab_mse=ab_mse, sup_pred=sup_pred, y=y,
        )

    def forward(
        self, x: torch.Tensor, y: torch.Tensor | None = None, *, tol: float = EVAL_TOL,
        generator: torch.Generator | None = None,
    ) -> LatentODEOutput:
        """The block loop at one tolerance."""
        state = self.start(x, y, generator=generator)
        for _ in range(self.num_blocks):
            state, _ = self.advance(state, tol)
        return self.finish(state)

    # ------------------------------------------------------------------ pieces
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, T, D)`` -> posterior mean and log-std ``(B, L)``; the RNN reads x backwards in time."""
        _, h = self.rnn(x.flip(1) / self.obs_scale)
        mean, log_std = self.to_posterior(h[-1]).chunk(2, dim=-1)
        return mean, log_std

    def decode(self, traj: torch.Tensor) -> torch.Tensor:
        """Latent trajectory ``(T, B, L)`` -> observations ``(B, T, D)``."""
        return self.decoder(traj).transpose(0, 1) * self.obs_scale

    def z_y(self, z: torch.Tensor) -> torch.Tensor:
        """The supervised code: the first ``sup_dim`` dimensions (empty for the baseline)."""
        return z[..., : self.sup_dim]

    def predict(self, z: torch.Tensor) -> torch.Tensor:
        """``q_theta(z_y)``: ``(B, 3)`` = (a, b) in data units and the direction logit."""
        if not self.partitioned:
            raise RuntimeError("only the partitioned LatentODE has a supervised head")
        raw = self.q_theta(self.z_y(z))
        return torch.cat([raw[:, :2] * self.y_std + self.y_mean, raw[:, 2:]], dim=1)

    def prior(self, y: torch.Tensor | None, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-std ``(B, L)`` of ``p(z_t0 | y)``: ``q_phi(y)`` on ``z_y``, N(0, I) on ``z_u``."""
        mean = self.times.new_zeros(batch, self.latent_dim)
        log_std = torch.zeros_like(mean)
        if self.partitioned:
            if y is None:
                raise ValueError("the partitioned LatentODE needs y = (a, b, direction)")
            y_in = torch.cat([(y[:, :2] - self.y_mean) / self.y_std, y[:, 2:]], dim=1)
            mu, log_sigma = self.q_phi(y_in).chunk(2, dim=-1)
            mean = torch.cat([mu, mean[:, self.sup_dim :]], dim=1)
            log_std = torch.cat([log_sigma, log_std[:, self.sup_dim :]], dim=1)
        return mean, log_std

    def integrate(
        self, z0: torch.Tensor, times: torch.Tensor, tol: float, *, first_step: float | None = None
    ) -> tuple[torch.Tensor, BlockStats]:
        """One counted solve from ``z0`` at ``times[0]``; returns ``(T, B, L)`` and its stats.

        ``first_step``: the first step as a fraction of ``times[-1] - times[0]``, in (0, 1].
        """
        counter = NFECounter()
        step = None
        if first_step is not None:
            if not 0 < first_step <= 1:
                raise ValueError(f"first_step must be a fraction of the time span in (0, 1], got {first_step!r}")
            step = first_step * abs(float(times[-1] - times[0]))
        (traj,) = solve(
            _Dynamics(self.dynamics, counter), (z0,), times, counter, tol=tol, method=self.solver,
            adjoint=self.adjoint, adjoint_norm=self.adjoint_norm, max_num_steps=self.max_num_steps, first_step=step,
        )
        span = abs(float(times[-1] - times[0]))
        return traj, BlockStats(nfe=counter.forward, tol=tol, counter=counter, span=span)

    def trajectory(
        self, z0: torch.Tensor, times: torch.Tensor, tol: float
    ) -> tuple[torch.Tensor, tuple[BlockStats, ...]]:
        """The block loop's solve at one tolerance: every segment from ``z0`` over ``times``.

        Returns ``(T, B, L)`` and one ``BlockStats`` per segment.
        """
        pieces, stats = [], []
        z = z0
        for k, (lo, hi) in enumerate(self.segment_bounds(times.shape[0])):
            piece, s = self.integrate(z, times[lo : hi + 1], tol)
            pieces.append(piece if k == 0 else piece[1:])
            stats.append(s)
            z = piece[-1]
        return torch.cat(pieces), tuple(stats)

    @torch.no_grad()
    def sample(
        self, y: torch.Tensor | None, times: torch.Tensor, tol: float = EVAL_TOL,
        generator: torch.Generator | None = None, *, num: int | None = None,
    ) -> torch.Tensor:
        """Trajectories ``(B, T, D)`` from the (conditional) prior: ``z_t0 ~ p(z_t0 | y)``, decoded at ``times``.

        ``y`` ``(B, 3)`` is required when partitioned; the baseline only uses its batch size
        (or ``num``).
        """
        tol = check_tolerance(tol)
        if self.partitioned and y is None:
            raise ValueError("the partitioned LatentODE needs y to sample")
        batch = y.shape[0] if y is not None else num
        if batch is None:
            raise ValueError("pass y or num")
        mean, log_std = self.prior(y, batch)
        z0 = mean + torch.exp(log_std) * torch.randn(mean.shape, generator=generator, dtype=mean.dtype)
        traj, _ = self.trajectory(z0, self._check_times(times.to(self.times)), tol)
        return self.decode(traj)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, times: torch.Tensor | None = None, tol: float = EVAL_TOL) -> torch.Tensor:
        """Decode the posterior mean of ``x`` at ``times`` (default: the model's times) ``(B, T, D)``."""
        mean, _ = self.encode(x)
        times = self.times if times is None else self._check_times(times.to(self.times))
        traj, _ = self.trajectory(mean, times, check_tolerance(tol))
        return self.decode(traj)

    @torch.no_grad()
    def extrapolate(
        self, x: torch.Tensor, times_obs: torch.Tensor, times_future: torch.Tensor, tol: float = EVAL_TOL
    ) -> torch.Tensor:
        """Encode the observed window (posterior mean) and decode ``(B, len(times_future), D)``.

        ``times_future`` must follow ``times_obs`` (increasing); ``z_t0`` lives at ``times_obs[0]``.
        """
        times = torch.cat([times_obs, times_future]).to(self.times)
        out = self.reconstruct(x, times, tol)
        return out[:, times_obs.shape[0] :]

    @staticmethod
    def _check_times(times: torch.Tensor) -> torch.Tensor:
        if times.dim() != 1 or times.shape[0] < 2 or not bool((times[1:] > times[:-1]).all()):
            raise ValueError("times must be a strictly increasing 1-D tensor of at least 2 points")
        return times


@torch.no_grad()
def evaluate_latent_ode(
    model: LatentODE, data: SpiralData, tol: float = EVAL_TOL, batch_size: int = 500, *, max_batches: int | None = None,
) -> dict:
    """Test metrics at tolerance ``tol`` using the posterior mean of ``z_t0`` (Sec. 4.6).

    Every segment of the window-plus-continuation solve runs at ``tol``. ``max_batches`` limits
    the pass to the first batches of ``batch_size`` spirals (``None``: all of ``data``).

    Returns:
        ``recon_mse``: MSE of the reconstructed window against the noise-free window;
        ``recon_mse_noisy``: the same against the noisy observations (floor: noise variance);
        ``extrap_mse``: MSE of the decoded continuation against the noise-free ground truth;
        ``neg_elbo``: the negative ELBO per observed scalar (nats) of the noisy window with
        ``z_t0`` at the posterior mean (the training loss without the supervised term, in eval mode);
        ``nfe``: mean forward NFE of one solve (over the window and continuation, all segments);
        ``num_samples``: spirals evaluated;
        partitioned only (absent for the baseline, which has no supervised head):
        ``direction_error`` (fraction of wrong directions), ``ab_mae`` (mean absolute error
        of a and b in data units, averaged over both), ``a_mae``, ``b_mae``.
    """
    tol = check_tolerance(tol)
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    was_training = model.training
    model.eval()
    device = model.times.device
    times = torch.cat([data.times, data.extrap_times]).to(model.times)
    window = data.times.shape[0]
    sums: dict[str, float] = {}
    n_batches = n = 0
    log_norm = math.log(model.obs_std) + 0.5 * math.log(2 * math.pi)
    try:
        for lo in range(0, len(data), batch_size):
            if max_batches is not None and n_batches >= max_batches:
                break
            x = data.obs[lo : lo + batch_size].to(device)
            y = data.params[lo : lo + batch_size].to(device)
            mean, log_std = model.encode(x)
            traj, stats = model.trajectory(mean, times, tol)
            x_hat = model.decode(traj)
            p_mean, p_log_std = model.prior(y, x.shape[0])
            recon_nll = (0.5 * (x_hat[:, :window] - x).pow(2) / model.obs_std**2 + log_norm).sum()
            kl = _gaussian_kl(mean, log_std, p_mean, p_log_std).sum()
            parts = {
                "recon_mse": (x_hat[:, :window] - data.clean[lo : lo + batch_size].to(device)).pow(2).sum(),
                "recon_mse_noisy": (x_hat[:, :window] - x).pow(2).sum(),
                "extrap_mse": (x_hat[:, window:] - data.extrap[lo : lo + batch_size].to(device)).pow(2).sum(),
                "neg_elbo": recon_nll + kl,
                "nfe": sum(s.nfe for s in stats),
            }
            if model.partitioned:
                pred = model.predict(mean)
                parts["direction_error"] = ((pred[:, 2] > 0).long() != y[:, 2].long()).sum()
                parts["a_mae"] = (pred[:, 0] - y[:, 0]).abs().sum()
                parts["b_mae"] = (pred[:, 1] - y[:, 1]).abs().sum()
            for key, value in parts.items():
                sums[key] = sums.get(key, 0.0) + float(value)
            n_batches += 1
            n += x.shape[0]
    finally:
        model.train(was_training)
    if not n:
        raise ValueError("evaluate_latent_ode() got no spirals")
    scalars = data.obs.shape[2]
    out = {
        "recon_mse": sums["recon_mse"] / (n * window * scalars),
        "recon_mse_noisy": sums["recon_mse_noisy"] / (n * window * scalars),
        "extrap_mse": sums["extrap_mse"] / (n * max(1, data.extrap_times.shape[0]) * scalars),
        "neg_elbo": sums["neg_elbo"] / (n * window * scalars),
        "nfe": sums["nfe"] / n_batches,
        "num_samples": n,
    }
    if model.partitioned:
        out["direction_error"] = sums["direction_error"] / n
        out["a_mae"] = sums["a_mae"] / n
        out["b_mae"] = sums["b_mae"] / n
        out["ab_mae"] = 0.5 * (out["a_mae"] + out["b_mae"])
    return out
