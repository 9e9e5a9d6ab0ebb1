"""tol-hist: learned tolerances per block on the training vs the test set (Fig. 2b).

Uses the ``infocnf`` / ``reinforce`` runs of ``digits-table`` (trained on demand). For each
seed the flow and the gates are loaded from the run's final checkpoint; ``num_batches``
random batches of ``batch_size`` (the training batch size, so the gates see the batch
statistics they were trained on) are drawn from each split, passed through the flow block by
block, and the tolerance each gate chooses (its mean, the deterministic output) is recorded.
The same figure also shows the tolerances the gates sampled during the last quarter of
training (``training_log``). The paper finds similar distributions on train and test.

Cost (full): analysis only (plus the digits-table REINFORCE runs if absent).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.evaluate import load_policy, load_run
from runs import figures
from runs.format import figure, num_blocks, required, sci
from runs.run_cache import Context
from runs.studies.common import policy_pass, seed_arms, train_groups, training_tail
from runs.study import Finding, Page, Res, Study, stated
from runs.tables import table

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


# ============================================================================ table, figure, results page
#: Columns of the study's table (:func:`runs.tables.table`): (header, row key or ``key_mean`` stem,
#: digits); a stem that has ``_mean`` / ``_std`` in the row prints as ``mean ± std``.
COLUMNS = [("split", "split", 0), ("block", "block", 0), ("log10 tol", "log10_tol", 2),
           ("q10", "log10_tol_q10", 2), ("q90", "log10_tol_q90", 2)]


def plot(result: dict, path: Path) -> None:
    plt = figures.pyplot()
    rows = result["rows"]
    blocks = sorted({r["block"] for r in rows})
    fig, axes = plt.subplots(1, len(blocks), figsize=(4 * len(blocks), 3.6), squeeze=False)
    for ax, block in zip(axes[0], blocks, strict=True):
        block_rows = [r for r in rows if r["block"] == block]
        values = np.concatenate([figures.floats(r["values"]) for r in block_rows])
        lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
        bins = np.linspace(lo - 0.05, hi + 0.05, 30)
        for row in block_rows:
            label = {"train": "train set (gate mean)", "test": "test set (gate mean)",
                     "training_log": "sampled in training (last 25%)"}.get(row["split"], row["split"])
            hist = "step" if row["split"] == "training_log" else "stepfilled"
            ax.hist(figures.floats(row["values"]), bins=bins, density=True, histtype=hist,
                    alpha=0.5 if hist != "step" else 1, color=figures.COLOURS.get(row["split"]), label=label)
        ax.set_xlabel("log10 tolerance")
        ax.set_title(f"block {block}")
    axes[0][0].set_ylabel("density")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(figures.title(result, "Learned tolerances per block, train vs test (Fig. 2b analogue)"))
    figures.save(fig, path)


def section(res: Res) -> str:
    d = res["tol-hist"]
    per = d["config"]["num_batches"]
    ranges, last_at_bound = [], True
    blocks = required(num_blocks(res), "tol-hist")
    for r in d["rows"]:
        if r["split"] == "training_log":
            continue
        chunks = [r["values"][i:i + per] for i in range(0, len(r["values"]), per)]
        ranges += [max(c) - min(c) for c in chunks]
        if r["block"] == blocks - 1:
            last_at_bound &= min(r["values"]) == max(r["values"]) == r["log10_tol_q90"]
    log = [r for r in d["rows"] if r["split"] == "training_log"]
    seeds = len(d["seeds"])
    iterations = d["regimes"][d["config"]["regime"]]["iterations"]
    frac = log[0]["num_values"] / seeds / iterations
    return "\n\n".join([figure("tol-hist"), table(d, "tol-hist"), f"""\
The gates' deterministic choices (their means, batches of {d['batch_size']}) on the training and the test
set agree to {sci(d['max_train_test_gap_log10'])} in log10 tol, as in the paper. They differ by block more than by
input: within one seed a gate's choice varies by at most {max(ranges):.3f} in log10 tol across the
{per} batches (the spread in the table is between seeds)""" + (
        ", and the last block sits at the upper bound on every seed" if last_at_bound else "") + f""".
`training_log` is what was sampled in the last {frac:.0%} of training (it includes the
exploration noise)."""])


STUDY = Study(
    name="tol-hist",
    summary="Fig. 2b: learned tolerances per block on the train vs test sets",
    config=CONFIG,
    quick=QUICK,
    row_keys=ROW_KEYS,
    run=run,
    columns=COLUMNS,
    plot=plot,
    page=Page("Learned tolerances on train vs test, Fig. 2b analogue", order=60, render=section, needs=("tol-hist",)),
    finding=Finding("Do the learned tolerances depend on the input?", order=30,
                    answer=stated("little: the gates learn per-block constants"), also=("eval-batch",)),
)
