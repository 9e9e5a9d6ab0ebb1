"""Plots of the ``runs.reproduce`` studies, drawn from their JSON alone, and of run directories.

    python -m runs.plots runs/results/digits-table.json [--out PNG]
    python -m runs.plots RUN_DIR [--out PNG]                 # RUN_DIR/curves.png
    python -m runs.plots --compare RUN_DIR RUN_DIR [--out PNG]

A run directory (what ``agents.*`` write) gets its training curves: loss, bits/dim, NFE,
per-block tolerances (:mod:`runs.run_curves`).

Every study's figure is a function of its result dict, the study's ``plot(result, path)``
(:class:`runs.study.Study`), so a figure can be redrawn from the JSON without rerunning
anything; what the studies' figures share (colours, names, the bar and curve helpers, titles,
saving) is :mod:`runs.figures`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from agents.cli import command_parser
from runs.studies import names, study


def plotted() -> list[str]:
    """The studies whose figure is drawn from their result alone, in registry order."""
    return [name for name in names() if study(name).plot is not None]


def plot(name: str, result: dict, path: str | Path) -> None:
    """Draw study ``name``'s figure from its result dict into ``path`` (PNG)."""
    draw = study(name).plot if name in names() else None
    if draw is None:
        raise ValueError(f"no plot for study {name!r}; valid: {', '.join(plotted())}")
    draw(result, Path(path))


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
    if result["study"] not in plotted():
        raise ValueError(f"no plot for study {result['study']!r}; valid: {', '.join(plotted())}")
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
