"""Bi-directional spirals of varying parameters (paper Sec. 4.6, Appendix E.1).

Ground truth (Eq. 8-9 of Appendix E.1), evaluated at the *angle* ``t``::

    counter-clockwise:  R = a + b * t;       x = R cos(t) + 5;  y = R sin(t)
    clockwise:          R = a + b * 50 / t;  x = R cos(t) - 5;  y = R sin(t)

with ``a ~ N(1.0, 0.08)`` and ``b ~ N(0.25, 0.03)``, where 0.08 and 0.03 are read as
**standard deviations** (the appendix writes ``N(mean, .)`` without saying which).

Choices the paper leaves open, fixed here:

* Ground-truth time grid: ``length`` (1000) equally spaced times ``s`` in
  ``[T_START, T_START + T_SPAN] = [1, 1 + 6 pi]`` (three turns; the clockwise radius needs
  ``t > 0``, so the grid starts at 1).
* Direction: a counter-clockwise spiral has angle ``t = s``. A clockwise spiral is traversed
  with its angle running backwards, ``t = 2 T_START + T_SPAN - s`` (as in the generator of
  Chen et al. 2018 that the paper builds on), so that it really turns clockwise in time.
  Evaluated literally at ``t = s`` both families would turn counter-clockwise. As a function
  of the angle the counter-clockwise radius grows and the clockwise radius shrinks; in time
  both spirals wind outwards.
* Window: one window of ``window`` (200) consecutive grid steps per spiral, starting at a
  uniformly drawn index in ``[0, length - window - extrap]``, so that the ``extrap`` (100)
  ground-truth steps that follow the window exist. Observations are the window plus Gaussian
  noise of std ``noise_std`` (0.3); the continuation is kept noise-free for extrapolation MSE.
* Times seen by a model are relative to the window start: ``times = dt * arange(window)``,
  ``extrap_times = dt * arange(window, window + extrap)``, ``dt = T_SPAN / (length - 1)``;
  every window shares one time grid.
* Exactly ``ceil(N / 2)`` counter-clockwise and ``floor(N / 2)`` clockwise spirals in a
  seeded random order. The test split draws everything from a different seed stream.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

#: First time of the ground-truth grid (clockwise radii need t > 0).
T_START = 1.0
#: Length of the ground-truth grid: three turns.
T_SPAN = 6 * math.pi
#: Distribution of the spiral parameters (means and *standard deviations*, Appendix E.1).
A_MEAN, A_STD = 1.0, 0.08
B_MEAN, B_STD = 0.25, 0.03
#: Centres of the two families: x + 5 counter-clockwise, x - 5 clockwise.
CENTRE_X = {1: 5.0, 0: -5.0}

SPLITS = {"train": 0, "test": 1}


@dataclass(frozen=True)
class SpiralData:
    """A set of noisy spiral windows and their ground truth.

    Attributes:
        times: ``(window,)`` observation times, relative to the window start.
        obs: ``(N, window, 2)`` noisy observed windows.
        clean: ``(N, window, 2)`` the same windows without noise.
        extrap_times: ``(extrap,)`` times of the continuation (after ``times``).
        extrap: ``(N, extrap, 2)`` noise-free ground truth following each window.
        params: ``(N, 3)`` ``(a, b, direction)``, direction 1 = counter-clockwise, 0 = clockwise.
        starts: ``(N,)`` index of each window's first step on the ground-truth grid.
        grid: ``(length,)`` the ground-truth time grid ``s``.
    """

    times: torch.Tensor
    obs: torch.Tensor
    clean: torch.Tensor
    extrap_times: torch.Tensor
    extrap: torch.Tensor
    params: torch.Tensor
    starts: torch.Tensor
    grid: torch.Tensor

    def __len__(self) -> int:
        return self.obs.shape[0]

    def subset(self, index: torch.Tensor | slice) -> SpiralData:
        """The spirals at ``index`` (shared time grids are kept)."""
        return SpiralData(
            times=self.times, obs=self.obs[index], clean=self.clean[index], extrap_times=self.extrap_times,
            extrap=self.extrap[index], params=self.params[index], starts=self.starts[index], grid=self.grid,
        )


def spiral_angle(s: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """Angle ``t`` at grid time ``s``: ``s`` counter-clockwise, reversed clockwise (see module doc)."""
    return np.where(direction == 1, s, 2 * T_START + T_SPAN - s)


def spiral_points(a: np.ndarray, b: np.ndarray, direction: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Eq. 8-9 of Appendix E.1 at angles ``t``; all inputs broadcast. Returns ``(..., 2)``."""
    ccw = direction == 1
    radius = np.where(ccw, a + b * t, a + b * 50.0 / t)
    centre = np.where(ccw, CENTRE_X[1], CENTRE_X[0])
    return np.stack([radius * np.cos(t) + centre, radius * np.sin(t)], axis=-1)


def window_times(window: int = 200, length: int = 1000, offset: int = 0) -> torch.Tensor:
    """``(window,)`` times of ``window`` grid steps starting ``offset`` steps after a window start."""
    return torch.arange(offset, offset + window, dtype=torch.float64).mul(T_SPAN / (length - 1)).float()


def make_spirals(
    num_spirals: int = 5000,
    length: int = 1000,
    window: int = 200,
    noise_std: float = 0.3,
    seed: int = 0,
    *,
    extrap: int = 100,
    split: str = "train",
) -> SpiralData:
    """Generate the bi-directional spiral set of Appendix E.1.

    Args:
        num_spirals: N, number of spirals (half counter-clockwise, half clockwise).
        length: number of steps of each ground-truth spiral.
        window: number of observed consecutive steps per spiral.
        noise_std: standard deviation of the Gaussian observation noise.
        seed: seed of the parameters, directions, window starts and noise.
        extrap: number of ground-truth steps after the window kept for extrapolation.
        split: ``"train"`` or ``"test"``; the test split uses an independent seed stream.

    Returns:
        A :class:`SpiralData` of float32 tensors.

    References:
        Paper Sec. 4.6 and Appendix E.1 (Eq. 8-9); Chen et al. 2018, Sec. 5.1.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    if num_spirals < 1:
        raise ValueError(f"num_spirals must be positive, got {num_spirals}")
    if window < 2 or extrap < 0 or window + extrap > length:
        raise ValueError(f"need 2 <= window and window + extrap <= length, got {window}, {extrap}, {length}")
    if noise_std < 0:
        raise ValueError(f"noise_std must be non-negative, got {noise_std}")
    rng = np.random.default_rng([seed, SPLITS[split]])
    n = num_spirals
    direction = np.zeros(n, dtype=np.int64)
    direction[: (n + 1) // 2] = 1
    direction = rng.permutation(direction)
    a = rng.normal(A_MEAN, A_STD, n)
    b = rng.normal(B_MEAN, B_STD, n)
    starts = rng.integers(0, length - window - extrap, n, endpoint=True)
    grid = np.linspace(T_START, T_START + T_SPAN, length)
    steps = starts[:, None] + np.arange(window + extrap)[None, :]
    angles = spiral_angle(grid[steps], direction[:, None])
    curve = spiral_points(a[:, None], b[:, None], direction[:, None], angles)
    clean = curve[:, :window]
    obs = clean + noise_std * rng.standard_normal(clean.shape)
    as_tensor = lambda arr: torch.as_tensor(np.ascontiguousarray(arr), dtype=torch.float32)  # noqa: E731
    return SpiralData(
        times=window_times(window, length),
        obs=as_tensor(obs),
        clean=as_tensor(clean),
        extrap_times=window_times(extrap, length, offset=window),
        extrap=as_tensor(curve[:, window:]),
        params=as_tensor(np.stack([a, b, direction], axis=1)),
        starts=torch.as_tensor(starts, dtype=torch.long),
        grid=torch.as_tensor(grid, dtype=torch.float64),
    )
