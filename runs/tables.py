"""Markdown tables from the studies' result files (the tables of docs/results.md).

    python -m runs.tables                      # every runs/results/STUDY.json present
    python -m runs.tables digits-table policies --results runs/results

Each table is read from ``STUDY.json`` as written by :mod:`runs.reproduce` (mean ± std over
the seeds); nothing is typed by hand. Its columns are the study's ``columns``
(:class:`runs.study.Study`). Studies whose file is absent are skipped. The whole
results page, tables and prose, is written by ``python -m runs.docs`` (:mod:`runs.docs`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agents.cli import command_parser
from runs.format import rel_pct
from runs.studies import registry, study


def cell(row: dict, key: str, digits: int) -> str:
    """One table cell: ``mean ± std`` for a ``key_mean`` stem, the plain value otherwise."""
    if f"{key}_mean" in row:
        mean, std = row[f"{key}_mean"], row.get(f"{key}_std")
        if mean is None:
            return "diverged"
        text = f"{mean:.{digits}f}"
        return text if std is None else f"{text} ± {std:.{digits}f}"
    value = row.get(key, "")
    if value is None:
        return "—"
    if "rel_diff" in key:  # a relative difference, shown in percent
        return rel_pct(value)
    if isinstance(value, float):
        return f"{value:.{digits}g}" if key == "tol" else f"{value:.{digits}f}"
    return str(value)


def tabled() -> list[str]:
    """The studies that have a table (``columns``), in registry order."""
    return [name for name, s in registry().items() if s.columns]


def table(result: dict, name: str) -> str:
    """The study's rows (and the lists its ``table_extra`` names) as a markdown table."""
    s = study(name)
    columns = s.columns
    rows: list[dict[str, Any]] = list(result["rows"])
    for key in s.table_extra:
        rows += result.get(key, [])
    lines = ["| " + " | ".join(c[0] for c in columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(cell(r, key, d) for _, key, d in columns) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    parser = command_parser("runs.tables", __doc__.split("\n\n")[0])
    valid = tabled()
    parser.add_argument("studies", nargs="*", default=valid)
    parser.add_argument("--results", default="runs/results")
    args = parser.parse_args(argv)
    unknown = [s for s in args.studies if s not in valid]
    if unknown:
        parser.error(f"no table for {', '.join(unknown)}; valid: {', '.join(valid)}")
    blocks = []
    for name in args.studies:
        path = Path(args.results) / f"{study(name).stem}.json"
        if not path.exists():
            continue
        result = json.loads(path.read_text())
        block = f"### {name}\n\n{table(result, name)}"
        notes = study(name).table_notes
        if notes is not None:
            block += "\n\n" + notes(result)
        blocks.append(block)
    text = "\n\n".join(blocks)
    print(text)
    return text


if __name__ == "__main__":
    main()
