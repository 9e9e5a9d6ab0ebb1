"""Aggregation of training runs for :mod:`runs.reproduce`: mean ± std over seeds, curves, JSON-safe values."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from runs.matrix import DIGITS_TRAIN_SIZE

#: Per-seed metrics of a training run (from its summary.json) that the tables aggregate.
RUN_METRICS = ("test_error", "bits_per_dim", "marginal_bits_per_dim", "nfe", "nfe_forward", "nfe_backward",
               "test_nfe", "wall_s", "log10_tol_last", "solver_failures")


def mean_std(values: Iterable[float]) -> tuple[float, float]:
    arr = np.asarray([float("nan") if v is None else v for v in values], dtype=np.float64)
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def summarise(per_seed: list[dict], keys: Iterable[str]) -> dict:
    """``{key}_mean`` and ``{key}_std`` over seeds of every key present in the records."""
    out = {}
    for key in keys:
        if all(key in r for r in per_seed):
            out[f"{key}_mean"], out[f"{key}_std"] = mean_std(r[key] for r in per_seed)
    return out


def run_metrics(summary: dict) -> dict:
    """Per-seed metrics of a finished run (test metrics at 1e-5, training NFE per iteration)."""
    test = summary["test"]
    record = {
        "bits_per_dim": test["bits_per_dim"], "marginal_bits_per_dim": test["marginal_bits_per_dim"],
        "nfe": summary["train_nfe_mean"], "nfe_forward": summary["train_nfe_forward_mean"],
        "nfe_backward": summary["train_nfe_backward_mean"], "test_nfe": test["nfe"], "wall_s": summary["wall_s"],
        "log10_tol_last": summary["mean_log10_tol_last"], "solver_failures": summary["solver_failures"],
    }
    if test.get("error") is not None and math.isfinite(test["error"]):
        record["test_error"] = test["error"]
    return record


def read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_series(run_dir: Path, batch_size: int) -> dict[str, list[float]]:
    """Test metrics at each evaluation, with the training NFE averaged since the previous one."""
    evals = {e["iteration"]: e for e in read_jsonl(run_dir / "eval.jsonl")}  # a resumed run: keep the last
    metrics = [m for m in read_jsonl(run_dir / "metrics.jsonl") if "nfe_forward" in m]
    series: dict[str, list[float]] = {"iteration": [], "epoch": [], "bits_per_dim": [], "test_error": [], "nfe": []}
    previous = 0
    for it in sorted(evals):
        window = [m["nfe_forward"] + m["nfe_backward"] for m in metrics if previous < m["iteration"] <= it]
        series["iteration"].append(it)
        series["epoch"].append(it * batch_size / DIGITS_TRAIN_SIZE)
        series["bits_per_dim"].append(evals[it]["bits_per_dim"])
        series["test_error"].append(evals[it].get("error", float("nan")))
        series["nfe"].append(float(np.mean(window)) if window else float("nan"))
        previous = it
    return series


def aggregate_series(series: list[dict[str, list[float]]]) -> dict[str, list[float]]:
    """Mean and std over seeds, point by point (runs of one config share the evaluation grid)."""
    length = min(len(s["iteration"]) for s in series)
    out: dict[str, list[float]] = {"iteration": series[0]["iteration"][:length], "epoch": series[0]["epoch"][:length]}
    for key in ("test_error", "bits_per_dim", "nfe"):
        values = np.array([s[key][:length] for s in series], dtype=np.float64)
        if np.isnan(values).all():
            continue
        out[f"{key}_mean"] = values.mean(0).tolist()
        out[f"{key}_std"] = (values.std(0, ddof=1) if len(series) > 1 else np.zeros(length)).tolist()
    return out


def finite(obj: Any) -> Any:
    """JSON-safe copy: numpy scalars to Python, NaN / inf to None."""
    if isinstance(obj, dict):
        return {str(k): finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    return obj
