"""eval-batch: evaluating with the learned tolerances at different test batch sizes (App. D).

Uses the ``infocnf`` / ``reinforce`` runs of ``digits-table`` (``regime``). The gates choose
each block's tolerance from each evaluation batch (their mean, the deterministic output), so
the tolerance, and with it the metrics, can depend on the batch size. For each split and
batch size the whole split is evaluated in order; the study reports bits/dim (conditional and
marginal), error, forward NFE per batch and the chosen tolerances, and the difference to the
same split evaluated at tol 1e-5. The paper finds no change at batch sizes up to ~2x the
training batch and worse metrics at 4-9x; here ``train`` goes up to the whole training set
(1,497 = 11.7x the training batch of 128).

Cost (full): ~40 s per seed on a 10-iteration flow, ~1-2 min on a trained one (batch
size 1 is 300 single-image passes); plus the digits-table REINFORCE runs if absent.
"""

from __future__ import annotations

from agents.evaluate import evaluate_fixed, evaluate_policy, load_policy, load_run
from runs.aggregate import summarise
from runs.run_cache import Context
from runs.studies.common import EVAL_TOL, batches, seed_arms, train_groups

ROW_KEYS = ("split", "batch_size", "seeds", "bits_per_dim_mean", "bits_per_dim_std", "marginal_bits_per_dim_mean",
            "marginal_bits_per_dim_std", "error_mean", "error_std", "nfe_mean", "nfe_std", "log10_tol_mean",
            "delta_bits_per_dim_mean", "delta_error_mean")

CONFIG = {
    "regime": "small",
    "batch_sizes": {"test": [1, 10, 30, 100, 150, 300], "train": [32, 128, 499, 1497]},
    "reference_batch_size": 100,
    "max_examples": None,  # None: the whole split
}
QUICK = {"batch_sizes": {"test": [1, 10], "train": [30]}, "reference_batch_size": 10, "max_examples": 30}


def run(ctx: Context) -> dict:
    cfg = ctx.config
    arms = seed_arms(ctx, "infocnf", "reinforce", cfg["regime"])
    train_groups(ctx, {"reinforce": arms})
    per_key: dict[tuple[str, int], list[dict]] = {}
    references: dict[str, list[dict]] = {}
    for arm in arms:
        run_dir = arm.run_dir(ctx.runs_dir)
        trained = load_run(run_dir)
        policy = load_policy(run_dir, trained.env)
        for split, sizes in cfg["batch_sizes"].items():
            data = trained.env.task.data(split)
            ref = evaluate_fixed(trained.env, batches(data, cfg["reference_batch_size"], cfg["max_examples"]),
                                 EVAL_TOL)
            references.setdefault(split, []).append(ref)
            for size in sizes:
                m = evaluate_policy(trained.env, batches(data, size, cfg["max_examples"]), policy)
                m.update(delta_bits_per_dim=m["bits_per_dim"] - ref["bits_per_dim"],
                         delta_marginal_bits_per_dim=m["marginal_bits_per_dim"] - ref["marginal_bits_per_dim"],
                         delta_error=m["error"] - ref["error"])
                per_key.setdefault((split, size), []).append(m)
    keys = ("bits_per_dim", "marginal_bits_per_dim", "error", "nfe", "log10_tol", "delta_bits_per_dim",
            "delta_marginal_bits_per_dim", "delta_error")
    rows = [{"split": split, "batch_size": size, "seeds": list(ctx.seeds), "num_samples": records[0]["num_samples"],
             **summarise(records, keys)} for (split, size), records in per_key.items()]
    reference = [{"split": split, "tol": EVAL_TOL, "batch_size": cfg["reference_batch_size"],
                  **summarise(records, ("bits_per_dim", "marginal_bits_per_dim", "error", "nfe"))}
                 for split, records in references.items()]
    return {"rows": rows, "reference": reference}
