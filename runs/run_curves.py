"""Training curves of run directories (``agents.*`` CLIs), drawn from their JSON lines alone.

    python -m runs.plots RUN_DIR                       # RUN_DIR/curves.png
    python -m runs.plots --compare RUN_DIR RUN_DIR ... # overlaid, compare.png beside the first

Panels, each drawn only when a run logged it: the training loss and bits/dim per iteration
(``metrics.jsonl``) with the test values at tol 1e-5 (``eval.jsonl``, dots), the forward and
backward NFE per iteration, log10 of each block's tolerance, the test error, and the episode
reward. Iteration values are smoothed by a running mean over about 2% of the run (the raw
values are faint behind it); nothing is read from TensorBoard or the checkpoint.

One run: each block (an ODE task's segment) has its own colour in the tolerance panel.
Several runs (``--compare``): each run has its own colour, named once in the figure's legend
by what tells the runs apart (env, agent, seed; else ``run 1``, ``run 2``, ... with the
directories listed under the figure); a panel's legend names its line styles (the series,
and the blocks of the tolerance panel).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agents.run_dir import CONFIG, EVALS, METRICS

#: File a single run's curves go to, inside the run directory.
CURVES = "curves.png"
#: Colours of compared runs, and of the blocks of one run, in order (matplotlib's tab10).
RUN_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink",
               "tab:gray", "tab:olive", "tab:cyan")
BLOCK_COLOURS = RUN_COLOURS


@dataclass
class RunLog:
    """What a run directory logged: its name, config and JSON lines."""

    path: Path
    config: dict
    metrics: list[dict] = field(default_factory=list)
    evals: list[dict] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.path.name


def _jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    records = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            raise ValueError(f"{str(path)!r} line {number} is not JSON") from None
    return records


def read_run(path: str | Path) -> RunLog:
    """A run directory's logs; one ``ValueError`` for a folder that is not one or holds no iteration."""
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"{str(path)!r} is not a directory")
    if not (path / CONFIG).is_file():
        raise ValueError(f"{str(path)!r} is not a run directory: no {CONFIG} (the agents' CLIs write one per run)")
    try:
        config = json.loads((path / CONFIG).read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{str(path / CONFIG)!r} is not JSON ({err.msg})") from None
    run = RunLog(path, config, _jsonl(path / METRICS), _jsonl(path / EVALS))
    if not run.metrics:
        raise ValueError(f"{str(path)!r} has no iteration in {METRICS} yet: nothing to plot")
    return run


def _series(records: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(iterations, values) of the records holding a finite number under ``key``."""
    pairs = [(r["iteration"], float(r[key])) for r in records
             if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)
             and math.isfinite(float(r[key]))]
    return np.array([p[0] for p in pairs], dtype=np.float64), np.array([p[1] for p in pairs], dtype=np.float64)


def smooth(values: np.ndarray, window: int | None = None) -> np.ndarray:
    """Running mean over ``window`` values (default: about 2% of them), as long as ``values``."""
    n = len(values)
    window = max(1, n // 50) if window is None else max(1, min(window, n))
    if window == 1 or n == 0:
        return values.astype(np.float64)
    cumulative = np.cumsum(np.insert(values.astype(np.float64), 0, 0.0))
    out = np.empty(n)
    for i in range(n):
        start = max(0, i + 1 - window)
        out[i] = (cumulative[i + 1] - cumulative[start]) / (i + 1 - start)
    return out


def _block_tols(run: RunLog) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """log10 tolerance of each block per iteration."""
    out: dict[int, tuple[list[float], list[float]]] = {}
    for record in run.metrics:
        for block, tol in enumerate(record.get("tols") or []):
            if isinstance(tol, (int, float)) and tol > 0:
                xs, ys = out.setdefault(block, ([], []))
                xs.append(record["iteration"])
                ys.append(math.log10(tol))
    return {b: (np.array(xs), np.array(ys)) for b, (xs, ys) in out.items()}


#: The panels: (title, [(source, key, line style label)]); source "train" or "test".
PANELS: tuple[tuple[str, tuple[tuple[str, str, str], ...]], ...] = (
    ("loss", (("train", "loss", "train"), ("test", "loss", "test @1e-5"))),
    ("bits/dim", (("train", "bits_per_dim", "train"), ("test", "bits_per_dim", "test @1e-5"))),
    ("NFE per iteration", (("train", "nfe_forward", "forward"), ("train", "nfe_backward", "backward"))),
    ("log10 tolerance per block", ()),
    ("error", (("train", "error", "train"), ("test", "error", "test @1e-5"))),
    ("reconstruction MSE", (("train", "recon_mse", "train"), ("test", "recon_mse", "test"))),
    ("episode reward", (("train", "reward", "train"),)),
)
#: Line styles of the series within a panel (and of the blocks of compared runs).
STYLES = ("-", "--", ":", "-.")


def _has_panel(runs: Sequence[RunLog], title: str, series: tuple[tuple[str, str, str], ...]) -> bool:
    if not series:
        return any(_block_tols(run) for run in runs)
    return any(len(_series(run.metrics if source == "train" else run.evals, key)[0])
               for run in runs for source, key, _ in series)


def short_labels(runs: Sequence[RunLog]) -> list[str]:
    """A legend label per run: the settings that tell the runs apart (env, agent, seed), or
    ``run 1``, ``run 2``, ... where those do not."""
    def parts(run: RunLog) -> list[str]:
        config = run.config
        args = config.get("args") or {}
        return [str(config.get("env", "?")), str(config.get("agent", "?")), f"seed {args.get('seed', '?')}"]

    table = [parts(run) for run in runs]
    differ = [i for i in range(3) if len({row[i] for row in table}) > 1]
    labels = [", ".join(row[i] for i in differ) for row in table]
    if not differ or len(set(labels)) < len(labels):
        return [f"run {i + 1}" for i in range(len(runs))]
    return labels


def figure(runs: Sequence[RunLog], title: str | None = None) -> Any:
    """The curves of ``runs`` as a matplotlib figure (:func:`draw` saves it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    panels = [(name, series) for name, series in PANELS if _has_panel(runs, name, series)]
    cols = 2 if len(panels) > 1 else 1
    rows = math.ceil(len(panels) / cols)
    several = len(runs) > 1
    labels = short_labels(runs) if several else []
    fig, axes = plt.subplots(rows, cols, figsize=(6.0 * cols, 3.2 * rows + (0.4 if several else 0.0)),
                             squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax, (name, series) in zip(axes.flat, panels, strict=False):
        keys: dict[str, Line2D] = {}  # the panel's legend: one entry per series (or block), in black
        for index, run in enumerate(runs):
            colour = RUN_COLOURS[index % len(RUN_COLOURS)]
            if not series:  # per-block tolerances: a colour per block, or a style per block of compared runs
                for block, (xs, ys) in sorted(_block_tols(run).items()):
                    style = STYLES[block % len(STYLES)] if several else "-"
                    block_colour = colour if several else BLOCK_COLOURS[block % len(BLOCK_COLOURS)]
                    ax.plot(xs, smooth(ys), style, color=block_colour, lw=1.2, label=f"block {block}")
                    keys.setdefault(f"block {block}", Line2D([], [], ls=style, color="black" if several
                                                             else block_colour, lw=1.2))
                continue
            for number, (source, key, label) in enumerate(series):
                xs, ys = _series(run.metrics if source == "train" else run.evals, key)
                if not len(xs):
                    continue
                style = STYLES[number % len(STYLES)]
                if source == "test":
                    ax.plot(xs, ys, "o" + style, color=colour, ms=4, lw=0.8, label=label)
                    keys.setdefault(label, Line2D([], [], ls=style, marker="o", ms=4, lw=0.8,
                                                  color="black" if several else colour))
                else:
                    if len(xs) > 1 and not several:
                        ax.plot(xs, ys, style, color=colour, lw=0.5, alpha=0.25)
                    ax.plot(xs, smooth(ys), style, color=colour, lw=1.4, label=label)
                    keys.setdefault(label, Line2D([], [], ls=style, lw=1.4, color="black" if several else colour))
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("iteration", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        if keys:
            ax.legend(list(keys.values()), list(keys), fontsize=7)
    if several:
        handles = [Line2D([], [], color=RUN_COLOURS[i % len(RUN_COLOURS)], lw=2) for i in range(len(runs))]
        fig.legend(handles, labels, loc="upper center", ncol=min(len(runs), 4), fontsize=8, frameon=False,
                   bbox_to_anchor=(0.5, 0.965))
        if labels[0].startswith("run 1"):
            fig.text(0.01, 0.005, "; ".join(f"{label}: {run.path.name}" for label, run in zip(labels, runs,
                                                                                          strict=True)), fontsize=6)
    if title is None:
        run = runs[0]
        title = (f"{run.config.get('env', '?')}, {run.config.get('agent', '?')} ({run.path})" if not several
                 else f"{len(runs)} runs")
    if several:
        fig.suptitle(title, fontsize=10, y=0.995)
        fig.tight_layout(rect=(0, 0.02, 1, 0.93))
    else:
        fig.suptitle(title, fontsize=10)
        fig.tight_layout()
    return fig


def draw(runs: Sequence[RunLog], path: str | Path, title: str | None = None) -> Path:
    """Draw the curves of ``runs`` (:func:`figure`) into ``path`` (PNG); returns the path."""
    import matplotlib.pyplot as plt

    fig = figure(runs, title)
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """One run's curves, by default to ``RUN_DIR/curves.png``."""
    run = read_run(run_dir)
    return draw([run], out if out is not None else run.path / CURVES)


def plot_compare(run_dirs: Sequence[str | Path], out: str | Path | None = None) -> Path:
    """Several runs overlaid, by default to ``compare.png`` beside the first run directory."""
    runs = [read_run(d) for d in run_dirs]
    if not runs:
        raise ValueError("--compare needs at least one run directory")
    return draw(runs, out if out is not None else runs[0].path.parent / "compare.png")


def plotted(runs: Any) -> list[str]:
    """The titles of the panels ``draw`` would make for ``runs``."""
    return [name for name, series in PANELS if _has_panel(runs, name, series)]
