"""Plots of the ``runs.reproduce`` studies, drawn from their JSON alone, and of run directories.

    python -m runs.plots runs/results/digits-table.json [--out PNG]
    python -m runs.plots RUN_DIR [--out PNG]                 # RUN_DIR/curves.png
    python -m runs.plots --compare RUN_DIR RUN_DIR [--out PNG]

A run directory (what ``agents.*`` write) gets its training curves: loss, bits/dim, NFE,
per-block tolerances (:mod:`runs.run_curves`).

Every study's figure is a function of its result dict, the study module's ``plot(result,
path)`` (:mod:`runs.studies`), so a figure can be redrawn from the JSON without rerunning
anything; this module holds what the studies' plots share (colours, names, the bar and curve
helpers, titles, saving). Matplotlib with the Agg backend.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from agents.cli import command_parser
from runs.studies import MODULES, study_module

#: Colours per arm, kept across figures.
COLOURS = {"ccnf-fixed": "tab:gray", "infocnf-fixed": "tab:blue", "infocnf-reinforce": "tab:red",
           "cnf-fixed": "tab:blue", "cnf-reinforce": "tab:red", "fixed": "tab:blue", "reinforce": "tab:red",
           "ppo": "tab:green", "sac": "tab:purple", "a2c": "tab:orange", "a2c-normadv": "tab:olive",
           "td3": "tab:brown",
           "train": "tab:blue", "test": "tab:orange", "training_log": "tab:gray",
           "learned": "tab:red", "warm": "tab:green", "regularised": "tab:purple", "error_reg": "tab:pink",
           "combined": "tab:olive"}
NAMES = {"ccnf-fixed": "CCNF (tol 1e-5)", "infocnf-fixed": "InfoCNF fixed tol 1e-5",
         "infocnf-reinforce": "InfoCNF learned tol", "cnf-fixed": "CNF fixed tol 1e-5",
         "cnf-reinforce": "CNF learned tol"}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _f(value: Any) -> float:
    return float("nan") if value is None else float(value)


def _arr(values: list | None) -> np.ndarray:
    return np.array([_f(v) for v in (values or [])], dtype=np.float64)


def _arm(row: dict) -> str:
    return f"{row['model']}-{row['policy']}"


def _title(result: dict, text: str) -> str:
    seeds = len(result.get("seeds", []))
    return f"{text} ({seeds} seed{'s' if seeds != 1 else ''}{', QUICK smoke settings' if result.get('quick') else ''})"


def _save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)


def _bars(ax: Any, rows: list[dict], key: str, groups: list[str], label: str, group_key: str = "batch") -> None:
    """Bars of ``key`` (mean ± std), one per arm, side by side within each ``group_key`` value."""
    arms = list(dict.fromkeys(_arm(r) for r in rows))
    width = 0.8 / max(1, len(arms))
    for i, arm in enumerate(arms):
        xs, means, stds = [], [], []
        for j, group in enumerate(groups):
            row = next((r for r in rows if _arm(r) == arm and r[group_key] == group), None)
            if row is None or f"{key}_mean" not in row:
                continue
            xs.append(j + (i - (len(arms) - 1) / 2) * width)
            means.append(_f(row[f"{key}_mean"]))
            stds.append(_f(row[f"{key}_std"]))
        ax.bar(xs, means, width, yerr=stds, capsize=3, color=COLOURS.get(arm), label=NAMES.get(arm, arm))
    ax.set_xticks(range(len(groups)), [f"{g} batch" if group_key == "batch" else g for g in groups],
                  fontsize=None if group_key == "batch" else 8)
    ax.set_ylabel(label)
    finite = [_f(r.get(f"{key}_mean")) for r in rows if r.get(f"{key}_mean") is not None]
    if finite and key != "test_error":
        lo, hi = min(finite), max(finite)
        pad = 0.15 * (hi - lo) + 0.02 * abs(hi) + 1e-9
        ax.set_ylim(lo - pad, hi + pad)


def _curve(ax: Any, row: dict, key: str, colour: str | None, label: str) -> None:
    if f"{key}_mean" not in row:
        return
    x, m, s = _arr(row["epoch"]), _arr(row[f"{key}_mean"]), _arr(row[f"{key}_std"])
    ax.plot(x, m, marker=".", color=colour, label=label)
    ax.fill_between(x, m - s, m + s, color=colour, alpha=0.2)


def plot(study: str, result: dict, path: str | Path) -> None:
    """Draw ``study``'s figure from its result dict into ``path`` (PNG)."""
    if study not in MODULES:
        raise ValueError(f"no plot for study {study!r}; valid: {', '.join(MODULES)}")
    study_module(study).plot(result, Path(path))


def load_study(path: Path) -> dict:
    """A study's result from its JSON; ``ValueError`` (one line) for any other file."""
    try:
        text = path.read_text()
    except OSError as err:
        raise ValueError(f"cannot read {str(path)!r}: {err.strerror or err}") from None
    try:
        result = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{str(path)!r} is not JSON ({err.msg} at line {err.lineno})") from None
    if not isinstance(result, dict) or not {"study", "rows"} <= set(result):
        if isinstance(result, dict):
            keys = sorted(result)
            what = "a run's summary.json" if {"env", "agent", "iterations"} <= set(keys) else "a JSON object"
            got = f"{what} with keys {', '.join(keys[:6])}{', ...' if len(keys) > 6 else ''}"
        else:
            got = f"a JSON {type(result).__name__}"
        hint = f"; a run's curves: python -m runs.plots {str(path.parent)!r}" if "summary" in got else ""
        raise ValueError(f"{str(path)!r} is not a study result: expected a STUDY.json written by runs.reproduce "
                         f"(keys study, rows, ...), got {got}{hint}")
    if result["study"] not in MODULES:
        raise ValueError(f"no plot for study {result['study']!r}; valid: {', '.join(MODULES)}")
    return result


def main(argv: list[str] | None = None) -> None:
    from runs import run_curves

    parser = command_parser("runs.plots", __doc__)
    parser.add_argument("json", type=Path, nargs="?", default=None,
                        help="a study's JSON written by runs.reproduce (runs/results/STUDY.json), or a run directory")
    parser.add_argument("--compare", type=Path, nargs="+", default=None, metavar="RUN_DIR",
                        help="overlay the curves of these run directories")
    parser.add_argument("--out", type=Path, default=None,
                        help="PNG path (default: next to the JSON; RUN_DIR/curves.png; compare.png beside the "
                             "first compared run)")
    args = parser.parse_args(argv)
    try:
        if args.compare is not None:
            dirs = ([args.json] if args.json is not None else []) + args.compare
            out = run_curves.plot_compare(dirs, args.out)
        elif args.json is None:
            raise ValueError("give a study's JSON, a run directory or --compare RUN_DIR ...")
        elif args.json.is_dir():
            out = run_curves.plot_run(args.json, args.out)
        else:
            result = load_study(args.json)
            out = args.out or args.json.with_suffix(".png")
            plot(result["study"], result, out)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
