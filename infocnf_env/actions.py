"""The action of a block: what the agent sets for one ODE solve, and how it is read.

Two action modes (``SpaceConfig.action_mode``):

* ``"tol"`` (default, the paper's gate, Section 3): ``Box(low, high, (1,))``, log10 of the
  solve's error tolerance (atol = rtol), ``(low, high) = tol_bounds``.
* ``"tol_first_step"``: ``Box((2,))``, log10 of the tolerance and log10 of the solver's first
  step as a fraction of the block's time span, bounded by ``first_step_bounds`` (default
  ``(-3, 0)``: from a thousandth of the span to the whole span). An adaptive solver's
  initial-step heuristic often starts so small that every solve takes a few steps however
  loose the tolerance; this lever lets a policy skip them where the dynamics allow.
* ``"tol_method"``: ``Box((2,))``, log10 of the tolerance and the solver's method as a position
  in ``[0, 1]``: with M methods to choose from, ``[k / M, (k + 1) / M)`` picks the k-th (1
  picks the last). Which methods, and what a task does with the choice, is the task's
  (the classical ODE tasks: ``ODEConfig.method_choices``); the other envs refuse this mode.

Out-of-bounds actions are clipped; an action that is not finite numbers of the right shape
raises one ``ValueError``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from gymnasium import spaces

ACTION_MODES = ("tol", "tol_first_step", "tol_method")
#: log10 bounds of the first step, as a fraction of the block's time span.
DEFAULT_FIRST_STEP_BOUNDS = (-3.0, 0.0)
#: Bounds of the method position of the ``tol_method`` mode.
METHOD_BOUNDS = (0.0, 1.0)


@dataclass(frozen=True)
class BlockAction:
    """What one block is solved with: ``tol`` (atol = rtol), ``first_step`` (a fraction of
    the block's time span, ``None``: the solver's own start) and ``method`` (a position in
    ``[0, 1]`` among the task's methods, ``None``: the task's method)."""

    tol: float
    first_step: float | None = None
    method: float | None = None

    def method_index(self, count: int) -> int | None:
        """The method of ``count`` that :attr:`method` picks (``None`` when it picks none)."""
        if self.method is None:
            return None
        return min(int(self.method * count), count - 1)


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
    """The Box of ``mode``: one log10 tolerance, or (log10 tolerance, log10 first-step fraction),
    or (log10 tolerance, method position)."""
    if mode == "tol":
        return spaces.Box(tol_bounds[0], tol_bounds[1], (1,), np.float32)
    second = first_step_bounds if mode == "tol_first_step" else METHOD_BOUNDS
    low = np.array([tol_bounds[0], second[0]], dtype=np.float32)
    high = np.array([tol_bounds[1], second[1]], dtype=np.float32)
    return spaces.Box(low, high, (2,), np.float32)


def parse_action(action: Any, mode: str, tol_bounds: tuple[float, float],
                 first_step_bounds: tuple[float, float] = DEFAULT_FIRST_STEP_BOUNDS) -> BlockAction:
    """Read an agent's action: clip each entry to its bounds and undo the log10."""
    size = 1 if mode == "tol" else 2
    what = {"tol": "one log10 tolerance", "tol_first_step": "a log10 tolerance and a log10 first-step fraction",
            "tol_method": "a log10 tolerance and a method position in [0, 1]"}[mode]
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
    if mode == "tol_method":
        return BlockAction(tol, method=float(np.clip(arr[1], *METHOD_BOUNDS)))
    first_step = 10.0 ** float(np.clip(arr[1], *first_step_bounds)) if size == 2 else None
    return BlockAction(tol, first_step)
