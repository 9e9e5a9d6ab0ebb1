"""curves: test error, test bits/dim and NFE over training (Fig. 3).

The three models of ``digits-table`` (CCNF, InfoCNF fixed 1e-5, InfoCNF learned) in both
regimes, from their ``eval.jsonl`` (test metrics at tol 1e-5 every ``eval_every`` iterations)
and ``metrics.jsonl`` (training NFE, forward + backward, averaged between evaluations).
Mean ± std over seeds against epochs (examples seen / 1,497).

Cost (full): nothing beyond the digits-table runs (trained on demand: ~50 min with --jobs 2).
"""

from __future__ import annotations

from runs.run_cache import Context
from runs.studies import load_config
from runs.studies.common import curve_rows, seed_arms, train_groups

ROW_KEYS = ("model", "policy", "batch", "seeds", "epoch", "test_error_mean", "test_error_std",
            "bits_per_dim_mean", "bits_per_dim_std", "nfe_mean", "nfe_std")

CONFIG = {"table": "digits-table"}
QUICK: dict = {}


def run(ctx: Context) -> dict:
    table = load_config(ctx.config["table"], ctx.quick)
    ctx.config["digits_table"] = table
    groups = {(m, p, r): seed_arms(ctx, m, p, r) for r in table["regimes"] for m, p in table["arms"]}
    train_groups(ctx, groups)
    return {"rows": curve_rows(ctx, groups)}
