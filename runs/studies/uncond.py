"""uncond: unconditional CNF with vs without learned tolerances (paper Fig. 4, Section 4.4).

``CNF-Digits-v0`` (N(0, I) prior, no classifier) trained in the ``small`` digits regime with
fixed tolerance 1e-5 and with REINFORCE gates; test bits/dim at 1e-5 and training NFE per
iteration, as final numbers (mean ± std over seeds) and as curves over training. The paper
reports equal NLLs (3.37 bits/dim on CIFAR10) and 15% fewer NFEs with learned tolerances.

Cost (full): 6 runs of 300 iterations at ~1.0-1.1 s/iteration (one core): ~2,000
CPU-seconds, ~17 min with ``--jobs 2``.
"""

from __future__ import annotations

from typing import Any

from runs.run_cache import Context
from runs.studies.common import curve_rows, ratio, rel_diff, run_row, seed_arms, train_groups

ROW_KEYS = ("model", "policy", "batch", "seeds", "bits_per_dim_mean", "bits_per_dim_std", "nfe_mean", "nfe_std",
            "wall_s_mean", "wall_s_std")

CONFIG = {"model": "cnf", "regime": "small", "policies": ["fixed", "reinforce"]}
QUICK: dict = {}


def run(ctx: Context) -> dict:
    cfg = ctx.config
    model, regime = cfg["model"], cfg["regime"]
    groups = {(model, p, regime): seed_arms(ctx, model, p, regime) for p in cfg["policies"]}
    summaries = train_groups(ctx, groups)
    rows = [{"model": m, "policy": p, "batch": r, **run_row(ctx, arms, summaries)}
            for (m, p, r), arms in groups.items()]
    result: dict[str, Any] = {"rows": rows, "curves": curve_rows(ctx, groups)}
    by_policy = {r["policy"]: r for r in rows}
    if "fixed" in by_policy and "reinforce" in by_policy:
        fixed, learned = by_policy["fixed"], by_policy["reinforce"]
        result["nfe_ratio"] = ratio(learned["nfe_mean"], fixed["nfe_mean"])
        result["bits_per_dim_rel_diff"] = rel_diff(learned["bits_per_dim_mean"], fixed["bits_per_dim_mean"])
    return result
