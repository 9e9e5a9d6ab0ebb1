"""The action of a block: what the agent sets for one ODE solve, and how it is read.

Two action modes (``SpaceConfig.action_mode``):

* ``"tol"`` (default, the paper's gate, Section 3): ``Box(low, high, (1,))``, log10 of the
  solve's error tolerance (atol = rtol), ``(low, high) = tol_bounds``.
* ``"tol_first_step"``: ``Box((2,))``, log10 of the tolerance and log10 of the solver's first
  step as a fraction of the block's time span, bounded by ``first_step_bounds`` (default
  ``(-3, 0)``: from a thousandth of the span to the whole span). An adaptive solver's
  initial-step heuristic often starts so small that every solve takes a few steps however
  loose the tolerance; this lever lets a policy skip them where the dynamics allow.

Out-of-bounds actions are clipped; an action that is not finite numbers of the right shape
raises one ``ValueError``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from gymnasium import spaces

ACTION_MODES = ("tol", "tol_first_step")
#: log10 bounds of the first step, as a fraction of the block's time span.
DEFAULT_FIRST_STEP_BOUNDS = (-3.0, 0.0)


@dataclass(frozen=True)
class BlockAction:
    """What one block is solved with: ``tol`` (atol = rtol) and ``first_step`` (a fraction of
    the block's time span, ``None``: the solver's own start)."""

    tol: float
    first_step: float | None = None


def check_bounds(name: str, bounds: Any) -> tuple[float, float]:
    """``(low, high)`` as floats, or one ``ValueError`` unless they are finite with low < high
    <= 0: log10 of a tolerance or of a fraction of the time span, neither of which exceeds 1."""
    try:
        low, high = (float(b) for b in bounds)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be two numbers (low, high), got {bounds!r}") from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"{name} must be finite log10 values with low < high, got {bounds!r}")
    if high > 0:
        raise ValueError(f"{name} must be <= 0 (log10 of a value at most 1), got {bounds!r}; "
                         "e.g. (-8, -2) for tolerances from 1e-8 to 1e-2")
    return low, high


def action_space(mode: str, tol_bounds: tuple[float, float],
                 first_step_bounds: tuple[float, float] = DEFAULT_FIRST_STEP_BOUNDS) -> spaces.Box:
    """The Box of ``mode``: one log10 tolerance, or (log10 tolerance, log10 first-step fraction)."""
    if mode == "tol":
        return spaces.Box(tol_bounds[0], tol_bounds[1], (1,), np.float32)
    low = np.array([tol_bounds[0], first_step_bounds[0]], dtype=np.float32)
    high = np.array([tol_bounds[1], first_step_bounds[1]], dtype=np.float32)
    return spaces.Box(low, high, (2,), np.float32)


def parse_action(action: Any, mode: str, tol_bounds: tuple[float, float],
                 first_step_bounds: tuple[float, float] = DEFAULT_FIRST_STEP_BOUNDS) -> BlockAction:
    """Read an agent's action: clip each entry to its bounds and undo the log10."""
    size = 1 if mode == "tol" else 2
    what = "one log10 tolerance" if size == 1 else "a log10 tolerance and a log10 first-step fraction"
    kind_of = "a number (log10 of the tolerance)" if size == 1 else f"numbers ({what})"
    try:
        arr = np.asarray(action)
    except ValueError:  # a ragged nested sequence
        arr = np.asarray(None)
    if arr.dtype.kind not in "iuf":  # None, strings, bools, complex, objects: not log10 values
        shown = repr(action) if len(repr(action)) <= 60 else repr(action)[:57] + "..."
        kind = "" if action is None else f" ({type(action).__name__})"
        raise ValueError(f"action must be {kind_of}, got {shown}{kind}")
    arr = arr.astype(np.float64).reshape(-1) if arr.size == size else arr
    if arr.size != size:
        raise ValueError(f"action must hold {what} (shape ({size},)), got shape {np.shape(action)}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"action must be finite, got {arr[0] if size == 1 else arr.tolist()}")
    tol = 10.0 ** float(np.clip(arr[0], *tol_bounds))
    first_step = 10.0 ** float(np.clip(arr[1], *first_step_bounds)) if size == 2 else None
    return BlockAction(tol, first_step)
