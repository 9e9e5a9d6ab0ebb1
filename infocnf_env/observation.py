"""Observations of the block loop: what a tolerance policy sees before each ODE block.

Two encoders of the same thing (the block index and the block's input features, the input the
paper's gates see, Section 3):

* ``vector`` (default) — a float32 vector: one-hot block index followed by summary statistics
  of the block input over the batch (mean, std, mean |h|, log(1 + max |h|)). Works with
  stable-baselines3's ``MlpPolicy``.
* ``features`` — a ``Dict`` with ``"block"`` (``Discrete(N + 1)``; N marks the terminal
  observation) and ``"features"``: a fixed-size view of a sub-sample of the batch,
  ``(k, C, S, S)`` for images (each block's input resized to S x S by adaptive average pooling
  or nearest upsampling, channels zero-padded to the largest block's C) or ``(k, D)`` for
  vectors. This is what the paper's CNN gates read.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces

OBS_MODES = ("vector", "features")
NUM_STATS = 4


def feature_stats(h: torch.Tensor) -> np.ndarray:
    """Batch statistics of a block input: mean, std, mean |h|, log(1 + max |h|)."""
    h = h.detach().reshape(-1).to(torch.float64)
    absh = h.abs()
    stats = [h.mean(), h.std(unbiased=False), absh.mean(), torch.log1p(absh.max())]
    return np.array([float(s) for s in stats], dtype=np.float32)


class ObservationEncoder:
    """Turns (block index, block input) into an observation of a fixed Gymnasium space.

    Args:
        mode: ``"vector"`` or ``"features"``.
        num_blocks: N, the number of ODE blocks.
        input_shapes: per-sample input shape of every block, in order.
        num_samples: k, examples of the batch kept in ``features`` mode.
        size: S, spatial size of image feature maps in ``features`` mode.
        extra: values appended to ``vector`` observations (given to :meth:`encode`), e.g. the
            solver's feedback from the previous block.
    """

    def __init__(
        self, mode: str, num_blocks: int, input_shapes: list[tuple[int, ...]], num_samples: int = 8,
        size: int | None = None, extra: int = 0,
    ):
        if mode not in OBS_MODES:
            raise ValueError(f"unknown obs_mode {mode!r}; valid: {', '.join(OBS_MODES)}")
        if extra and mode != "vector":
            raise ValueError("extra observation values need obs_mode='vector'")
        self.extra = extra
        self.mode = mode
        self.num_blocks = num_blocks
        self.num_samples = num_samples
        self.images = len(input_shapes[0]) == 3
        if self.images:
            self.channels = max(s[0] for s in input_shapes)
            self.size = size or max(s[1] for s in input_shapes)
            self.feature_shape: tuple[int, ...] = (num_samples, self.channels, self.size, self.size)
        else:
            self.feature_shape = (num_samples, max(int(np.prod(s)) for s in input_shapes))
        if mode == "vector":
            self.space: spaces.Space = spaces.Box(-np.inf, np.inf, (num_blocks + NUM_STATS + extra,), np.float32)
        else:
            self.space = spaces.Dict({
                "block": spaces.Discrete(num_blocks + 1),
                "features": spaces.Box(-np.inf, np.inf, self.feature_shape, np.float32),
            })

    def encode(self, block: int, h: torch.Tensor, extra: np.ndarray | None = None) -> np.ndarray | dict:
        if self.mode == "vector":
            onehot = np.zeros(self.num_blocks, dtype=np.float32)
            onehot[block] = 1.0
            tail = np.zeros(0, dtype=np.float32) if extra is None else np.asarray(extra, dtype=np.float32)
            if len(tail) != self.extra:
                raise ValueError(f"expected {self.extra} extra observation values, got {len(tail)}")
            return np.concatenate([onehot, feature_stats(h), tail])
        return {"block": block, "features": self._feature_map(h)}

    def terminal(self) -> np.ndarray | dict:
        """Observation returned with the last step (no block left to solve)."""
        if self.mode == "vector":
            return np.zeros(self.num_blocks + NUM_STATS + self.extra, dtype=np.float32)
        return {"block": self.num_blocks, "features": np.zeros(self.feature_shape, dtype=np.float32)}

    def _feature_map(self, h: torch.Tensor) -> np.ndarray:
        h = h.detach()[: self.num_samples].to(torch.float32)
        out = torch.zeros(self.feature_shape)
        if self.images:
            if h.shape[-1] >= self.size:
                h = F.adaptive_avg_pool2d(h, self.size)
            else:
                h = F.interpolate(h, size=(self.size, self.size), mode="nearest")
            out[: h.shape[0], : h.shape[1]] = h.cpu()
        else:
            flat = h.reshape(h.shape[0], -1).cpu()
            out[: flat.shape[0], : flat.shape[1]] = flat
        return out.numpy()
