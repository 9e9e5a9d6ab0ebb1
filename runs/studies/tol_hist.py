"""tol-hist: learned tolerances per block on the training vs the test set (Fig. 2b).

Uses the ``infocnf`` / ``reinforce`` runs of ``digits-table`` (trained on demand). For each
seed the flow and the gates are loaded from the run's final checkpoint; ``num_batches``
random batches of ``batch_size`` (the training batch size, so the gates see the batch
statistics they were trained on) are drawn from each split, passed through the flow block by
block, and the tolerance each gate chooses (its mean, the deterministic output) is recorded.
The same figure also shows the tolerances the gates sampled during the last quarter of
training (``training_log``). The paper finds similar distributions on train and test.

Cost (full): analysis only, ~25-40 s per seed (plus the 3 digits-table REINFORCE runs,
~18 CPU-minutes, if absent).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from agents.evaluate import load_policy, load_run
from runs.run_cache import Context
from runs.studies.common import policy_pass, seed_arms, train_groups, training_tail

ROW_KEYS = ("split", "block", "seeds", "log10_tol_mean", "log10_tol_std", "values")
#: Row order of the splits.
SPLITS = ("train", "test", "training_log")

CONFIG = {"regime": "small", "num_batches": 40, "batch_size": None}  # None: the regime's batch size
QUICK = {"num_batches": 3}


def run(ctx: Context) -> dict:
    from flows import BatchStream

    cfg = ctx.config
    regime = cfg["regime"]
    batch = cfg["batch_size"] or ctx.regimes[regime]["batch_size"]
    arms = seed_arms(ctx, "infocnf", "reinforce", regime)
    train_groups(ctx, {"reinforce": arms})
    values: dict[tuple[str, int], list[float]] = {}
    stds: dict[tuple[str, int], list[float]] = {}
    for arm in arms:
        run_dir = arm.run_dir(ctx.runs_dir)
        trained = load_run(run_dir)
        policy = load_policy(run_dir, trained.env)
        generator = torch.Generator().manual_seed(0)
        for split in ("train", "test"):
            stream = BatchStream(trained.env.task.data(split), batch, seed=arm.seed, augment=False)
            for _ in range(cfg["num_batches"]):
                _, log_tols, policy_stds = policy_pass(trained.env, *stream.next(), policy, generator)
                for block, (t, s) in enumerate(zip(log_tols, policy_stds, strict=True)):
                    values.setdefault((split, block), []).append(t)
                    stds.setdefault((split, block), []).append(s)
        for m in training_tail(run_dir, "tols", "nfe_forward"):
            for block, tol in enumerate(m["tols"]):
                values.setdefault(("training_log", block), []).append(math.log10(tol))
    rows: list[dict[str, Any]] = []
    for (split, block), vals in sorted(values.items(), key=lambda kv: (SPLITS.index(kv[0][0]), kv[0][1])):
        arr = np.asarray(vals)
        row = {"split": split, "block": block, "seeds": list(ctx.seeds), "num_values": int(arr.size),
               "log10_tol_mean": float(arr.mean()), "log10_tol_std": float(arr.std()),
               "log10_tol_q10": float(np.quantile(arr, 0.1)), "log10_tol_q90": float(np.quantile(arr, 0.9)),
               "values": [round(float(v), 4) for v in arr]}
        if (split, block) in stds:
            row["policy_std"] = float(np.mean(stds[(split, block)]))
        rows.append(row)
    means = {(r["split"], r["block"]): r["log10_tol_mean"] for r in rows}
    gaps = [abs(means[("train", b)] - means[("test", b)]) for s, b in means if s == "train" and ("test", b) in means]
    return {"rows": rows, "batch_size": batch, "max_train_test_gap_log10": max(gaps) if gaps else float("nan")}
