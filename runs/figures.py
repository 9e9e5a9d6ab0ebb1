"""What the studies' figures share: colours, names, matplotlib, titles, saving, bars and curves.

Each study's figure is its :attr:`runs.study.Study.plot`, drawn from its result dict alone (so a
figure can be redrawn from the JSON without rerunning anything, ``python -m runs.plots``).
Matplotlib with the Agg backend, imported when a figure is drawn.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from agents.registry import AGENTS

#: Colours kept across figures: each agent's own (:mod:`agents.registry`), and those of the
#: digits arms, splits and levers.
COLOURS = {"ccnf-fixed": "tab:gray", "infocnf-fixed": "tab:blue", "infocnf-reinforce": "tab:red",
           "cnf-fixed": "tab:blue", "cnf-reinforce": "tab:red",
           **{name: agent.colour for name, agent in AGENTS.items()}, "a2c-normadv": "tab:olive",
           "train": "tab:blue", "test": "tab:orange", "training_log": "tab:gray",
           "learned": "tab:red", "warm": "tab:green", "regularised": "tab:purple", "error_reg": "tab:pink",
           "combined": "tab:olive"}
#: Legend names of the digits arms (``model-policy``).
NAMES = {"ccnf-fixed": "CCNF (tol 1e-5)", "infocnf-fixed": "InfoCNF fixed tol 1e-5",
         "infocnf-reinforce": "InfoCNF learned tol", "cnf-fixed": "CNF fixed tol 1e-5",
         "cnf-reinforce": "CNF learned tol"}


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def num(x: Any) -> float:
    """A JSON number as a float (``null``, a diverged run's figure, as NaN)."""
    return float("nan") if x is None else float(x)


def floats(xs: list | None) -> np.ndarray:
    """A JSON list of numbers as a float64 array (``null`` as NaN)."""
    return np.array([num(v) for v in (xs or [])], dtype=np.float64)


def arm_name(row: dict) -> str:
    """A digits row's arm, ``model-policy`` (the key of :data:`COLOURS` and :data:`NAMES`)."""
    return f"{row['model']}-{row['policy']}"


def title(result: dict, text: str) -> str:
    """A figure's title: ``text`` with the number of seeds, and the quick settings named."""
    seeds = len(result.get("seeds", []))
    return f"{text} ({seeds} seed{'s' if seeds != 1 else ''}{', QUICK smoke settings' if result.get('quick') else ''})"


def save(fig: Any, path: Path) -> None:
    """Write ``fig`` to ``path`` (PNG) and close it."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    pyplot().close(fig)


def bars(ax: Any, rows: list[dict], key: str, groups: list[str], label: str, group_key: str = "batch") -> None:
    """Bars of ``key`` (mean ± std), one per arm, side by side within each ``group_key`` value."""
    arms = list(dict.fromkeys(arm_name(r) for r in rows))
    width = 0.8 / max(1, len(arms))
    for i, arm in enumerate(arms):
        xs, means, stds = [], [], []
        for j, group in enumerate(groups):
            row = next((r for r in rows if arm_name(r) == arm and r[group_key] == group), None)
            if row is None or f"{key}_mean" not in row:
                continue
            xs.append(j + (i - (len(arms) - 1) / 2) * width)
            means.append(num(row[f"{key}_mean"]))
            stds.append(num(row[f"{key}_std"]))
        ax.bar(xs, means, width, yerr=stds, capsize=3, color=COLOURS.get(arm), label=NAMES.get(arm, arm))
    ax.set_xticks(range(len(groups)), [f"{g} batch" if group_key == "batch" else g for g in groups],
                  fontsize=None if group_key == "batch" else 8)
    ax.set_ylabel(label)
    finite = [num(r.get(f"{key}_mean")) for r in rows if r.get(f"{key}_mean") is not None]
    if finite and key != "test_error":
        lo, hi = min(finite), max(finite)
        pad = 0.15 * (hi - lo) + 0.02 * abs(hi) + 1e-9
        ax.set_ylim(lo - pad, hi + pad)


def curve(ax: Any, row: dict, key: str, colour: str | None, label: str) -> None:
    """A row's curve of ``key`` against the epoch, mean with a ± std band."""
    if f"{key}_mean" not in row:
        return
    x, m, s = floats(row["epoch"]), floats(row[f"{key}_mean"]), floats(row[f"{key}_std"])
    ax.plot(x, m, marker=".", color=colour, label=label)
    ax.fill_between(x, m - s, m + s, color=colour, alpha=0.2)
