"""Markdown tables from the studies' result files (the tables of docs/results.md).

    python -m runs.tables                      # every runs/results/STUDY.json present
    python -m runs.tables digits-table policies --results runs/results

Each table is read from ``STUDY.json`` as written by :mod:`runs.reproduce` (mean ± std over
the seeds); nothing is typed by hand. Studies whose file is absent are skipped. The whole
results page, tables and prose, is written by ``python -m runs.docs`` (:mod:`runs.docs`).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from runs.studies import MODULES

#: Study -> (column header, row key or ``key_mean`` stem, digits) of its table. A stem that
#: has ``_mean`` / ``_std`` in the row prints as ``mean ± std``.
COLUMNS: dict[str, list[tuple[str, str, int]]] = {
    "digits-table": [("model", "model", 0), ("tolerance", "policy", 0), ("batch", "batch", 0),
                     ("test error", "test_error", 3), ("bits/dim", "bits_per_dim", 4),
                     ("marginal bits/dim", "marginal_bits_per_dim", 4), ("train NFE / it", "nfe", 1),
                     ("wall s", "wall_s", 0)],
    "uncond": [("model", "model", 0), ("tolerance", "policy", 0), ("bits/dim", "bits_per_dim", 4),
               ("train NFE / it", "nfe", 1), ("wall s", "wall_s", 0)],
    "tol-integral": [("tolerance", "policy", 0), ("tol", "tol", 8), ("integral", "integral", 6),
                     ("abs(integral - 1)", "abs_error", 6), ("NFE", "nfe", 1)],
    "tol-hist": [("split", "split", 0), ("block", "block", 0), ("log10 tol", "log10_tol", 2),
                 ("q10", "log10_tol_q10", 2), ("q90", "log10_tol_q90", 2)],
    "eval-batch": [("split", "split", 0), ("batch", "batch_size", 0), ("bits/dim", "bits_per_dim", 4),
                   ("Δ bits/dim vs 1e-5", "delta_bits_per_dim", 4), ("error", "error", 3),
                   ("Δ error", "delta_error", 3), ("NFE / batch", "nfe", 1), ("log10 tol", "log10_tol", 2)],
    "policies": [("tolerance", "policy", 0), ("test error", "test_error", 3), ("bits/dim", "bits_per_dim", 4),
                 ("bits/dim vs fixed", "bits_per_dim_rel_diff_vs_fixed", 0), ("train NFE / it", "nfe", 1),
                 ("NFE vs fixed", "nfe_ratio_vs_fixed", 3),
                 ("final log10 tol", "log10_tol_last", 2), ("wall s", "wall_s", 0)],
    "frozen": [("tolerance", "policy", 0), ("tol", "tol", 8), ("test NFE", "nfe", 1),
               ("bits/dim", "bits_per_dim", 4), ("excess bits/dim", "excess_bits_per_dim", 4),
               ("log10 tol", "log10_tol", 2)],
    "reinforce-ablation": [("variant", "variant", 0), ("test error", "test_error", 3),
                           ("bits/dim", "bits_per_dim", 4),
                           ("bits/dim vs fixed 1e-5", "bits_per_dim_rel_diff_vs_fixed", 0),
                           ("train NFE / it", "nfe", 1), ("NFE vs fixed 1e-5", "nfe_ratio_vs_fixed", 3),
                           ("final log10 tol", "log10_tol_last", 2)],
    "samples": [("model", "model", 0), ("tolerance", "policy", 0), ("sample accuracy", "sample_accuracy", 3),
                ("self-consistency", "self_consistency", 3)],
    "latent-probe": [("model", "model", 0), ("batch", "batch", 0), ("classifier", "features", 0),
                     ("test error", "test_error", 3), ("bits/dim", "bits_per_dim", 4)],
    "speed": [("arm", "arm", 0), ("train NFE / it", "nfe", 1), ("NFE vs fixed", "nfe_ratio", 3),
              ("wall vs fixed", "wall_ratio", 3), ("test bits/dim", "bits_per_dim", 4),
              ("bits/dim vs fixed", "bpd_ratio", 4), ("test NFE", "test_nfe", 1),
              ("test NFE vs fixed", "test_nfe_ratio", 3)],
    "benchmark": [("task", "task", 0), ("action", "action_mode", 0), ("agent", "agent", 0),
                  ("reward", "reward", 2), ("gap closed", "gap_closed", 2), ("NFE / episode", "nfe", 1),
                  ("error [nats]", "error", 4)],
    "leaderboard": [("task", "task", 0), ("agent", "agent", 0), ("reward", "reward", 2),
                    ("gap closed", "gap_closed", 2), ("NFE / episode", "nfe", 1), ("error", "error", 6),
                    ("NFE saving at equal error", "nfe_saving_at_equal_error", 2)],
    "leaderboard-cnf": [("task", "task", 0), ("agent", "agent", 0), ("reward", "reward", 2),
                        ("gap closed", "gap_closed", 2), ("NFE / episode", "nfe", 1), ("error [nats]", "error", 5),
                        ("NFE saving at equal error", "nfe_saving_at_equal_error", 2)],
    "beta": [("model", "model", 0), ("batch", "batch", 0), ("beta", "beta", 1),
             ("β·D·ln 2", "supervision_ratio", 0), ("test error", "test_error", 3),
             ("probe z_y", "zy_probe_error", 3), ("probe z", "z_probe_error", 3),
             ("bits/dim", "bits_per_dim", 4)],
}


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
        return _pct(value)
    if isinstance(value, float):
        return f"{value:.{digits}g}" if key == "tol" else f"{value:.{digits}f}"
    return str(value)


def table(result: dict, study: str) -> str:
    """The study's rows (and, for ``frozen``, the fixed-tolerance front) as a markdown table."""
    columns = COLUMNS[study]
    rows: list[dict[str, Any]] = list(result["rows"])
    if study == "frozen":
        rows += result.get("front", [])
    lines = ["| " + " | ".join(c[0] for c in columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(cell(r, key, d) for _, key, d in columns) + " |" for r in rows]
    return "\n".join(lines)


def targets(result: dict) -> str:
    """digits-table: the target checks (learned NFE, InfoCNF error), one line per regime."""
    out = []
    for t in result.get("targets", []):
        parts = [f"{t['batch']} batch:"]
        if "nfe_ratio" in t:
            parts.append(f"learned NFE {_num(t['nfe_ratio'], 3)}x fixed (target {t['nfe_ratio_target']}), "
                         f"bits/dim {_pct(t['learned_bits_per_dim_rel_diff'])} -> "
                         f"{'met' if t['nfe_target_met'] else 'not met'};")
        if "error_ratio" in t:
            parts.append(f"InfoCNF error {_num(t['error_ratio'], 3)}x CCNF (target {t['error_ratio_target']}), "
                         f"bits/dim {_pct(t['infocnf_bits_per_dim_rel_diff'])} -> "
                         f"{'met' if t['error_target_met'] else 'not met'}")
        out.append("- " + " ".join(parts))
    return "\n".join(out)


def _num(value: float | None, digits: int) -> str:
    return "nan" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _pct(value: float | None) -> str:
    return "nan" if value is None or not math.isfinite(value) else f"{100 * value:+.2f}%"


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("studies", nargs="*", default=[s for s in MODULES if s != "curves"])
    parser.add_argument("--results", default="runs/results")
    args = parser.parse_args(argv)
    unknown = [s for s in args.studies if s not in COLUMNS]
    if unknown:
        parser.error(f"no table for {', '.join(unknown)}; valid: {', '.join(COLUMNS)}")
    blocks = []
    for study in args.studies:
        path = Path(args.results) / f"{study}.json"
        if not path.exists():
            continue
        result = json.loads(path.read_text())
        block = f"### {study}\n\n{table(result, study)}"
        if study == "digits-table":
            block += "\n\n" + targets(result)
        blocks.append(block)
    text = "\n\n".join(blocks)
    print(text)
    return text


if __name__ == "__main__":
    main()
