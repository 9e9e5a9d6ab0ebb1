"""What a run records: ``metrics.jsonl``, ``eval.jsonl``, TensorBoard scalars, and the summary table."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from agents.run_dir import EVALS, METRICS

#: Keys of an episode's final ``info`` copied to ``metrics.jsonl``.
METRIC_KEYS = ("loss", "bits_per_dim", "xent", "error", "nfe_forward", "nfe_backward", "nfe_reference", "loss_gap",
               "tols", "first_steps", "nfe_blocks", "epoch", "lr", "skipped_update", "solver_error", "recon_mse", "kl",
               "failed_ranks")


class RunLogger:
    """metrics.jsonl, eval.jsonl and TensorBoard scalars of one run.

    ``first_step``: the first iteration this process logs; TensorBoard events of a previous
    process at or after it (written after the checkpoint the run resumes from) are purged, so
    no step appears twice.
    """

    def __init__(self, run_dir: Path, tensorboard: bool, enabled: bool = True, first_step: int = 1):
        self.run_dir = run_dir
        self.enabled = enabled  # False on ranks > 0 of a multi-process run: they write nothing
        self.writer = None
        if tensorboard and enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir), purge_step=first_step if first_step > 1 else None)

    def _append(self, name: str, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.run_dir / name, "a") as fh:
            fh.write(json.dumps(record, sort_keys=True) + "\n")

    def _scalars(self, prefix: str, record: dict, step: int) -> None:
        if self.writer is None:
            return
        for key, value in record.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                self.writer.add_scalar(f"{prefix}/{key}", value, step)
        for block, tol in enumerate(record.get("tols") or []):
            if tol > 0:
                self.writer.add_scalar(f"{prefix}/log10_tol/block{block}", math.log10(tol), step)
        for block, nfe in enumerate(record.get("nfe_blocks") or []):
            self.writer.add_scalar(f"{prefix}/nfe/block{block}", nfe, step)

    def iteration(self, record: dict) -> None:
        self._append(METRICS, record)
        self._scalars("train", record, record["iteration"])

    def evaluation(self, record: dict) -> None:
        self._append(EVALS, record)
        self._scalars("test", record, record["iteration"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def episode_record(iteration: int, reward: float, info: dict, agent_stats: dict, wall_time: float) -> dict:
    record = {"iteration": iteration, "reward": reward, "wall_time": round(wall_time, 3)}
    record.update({k: info[k] for k in METRIC_KEYS if k in info})
    record.update(agent_stats)
    return record


def mean_or_none(values: Any) -> float | None:
    values = [float(v) for v in values]
    return float(np.mean(values)) if values else None


def print_summary(summary: dict) -> None:
    test = summary["test"]
    names = {"bits_per_dim": "test bits/dim @1e-5", "marginal_bits_per_dim": "test marginal bits/dim",
             "error": "test error", "nfe": "test NFE / episode" if "policy" in test else "test NFE / batch",
             "policy": "test scored with"}
    rows = [("env", summary["env"]), ("agent", summary["agent"]), ("iterations", summary["iterations"])]
    for key, value in test.items():
        if key == "num_samples":
            continue
        shown = (f"{value:.1f}" if key == "nfe" else f"{value:.5g}") if isinstance(value, float) else value
        rows.append((names.get(key, f"test {key}"), shown))
    rows += [
        ("train NFE fwd / iter", fmt(summary["train_nfe_forward_mean"])),
        ("train NFE bwd / iter", fmt(summary["train_nfe_backward_mean"])),
        ("reference NFE / iter (apart)", fmt(summary.get("train_nfe_reference_mean"))),
        ("mean log10 tol (last 10%)", fmt(summary["mean_log10_tol_last"], 2)),
        ("wall time [s]", summary["wall_s"]),
        ("device", _device_row(summary)),
        ("run directory", summary.get("run_dir", "n/a")),
    ]
    width = max(len(k) for k, _ in rows)
    print("\n" + "\n".join(f"{k:<{width}}  {v}" for k, v in rows))


def _device_row(summary: dict) -> str:
    device, env_device = summary.get("device", "n/a"), summary.get("env_device")
    return device if env_device in (None, device) else f"{device} (environment: {env_device})"


def fmt(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"
