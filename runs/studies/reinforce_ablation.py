"""reinforce-ablation: what limits REINFORCE's NFE saving?

InfoCNF on digits (``regime`` of ``digits-table``), co-trained with variants of the REINFORCE
gates, each changing one thing from the defaults (gate init mean -3, gate lr 1e-2, baseline
momentum 0.9, no entropy bonus, discount 0.99, action bounds log10 tol in (-8, -2), alpha 1),
plus fixed 1e-2: the upper action bound for every block, the cheapest a policy within the default
bounds can be. Every variant is compared with the ``digits-table`` fixed-1e-5 arm (the same
runs): training NFE ratio and test bits/dim at 1e-5. The default variant and the fixed arm
are the digits-table runs (shared).

Settings tried outside this study (single seed unless noted): alpha 0.1 and 0.3 learned too
slowly; gate lr 3e-2 looked unstable; gate init mean -5 gave 0.83x (3 seeds, ``runs/bench_learned_tol.py``).

Cost (full): 18 new runs (6 variants x 3 seeds) of 300 iterations at 0.6-1.1 s/iteration on
one core: ~4,200 CPU-seconds, ~35 min with ``--jobs 2``.
"""

from __future__ import annotations

from runs.aggregate import RUN_METRICS, run_metrics, summarise
from runs.run_cache import Context
from runs.studies.common import run_row, seed_arms, train_groups, vs_fixed

ROW_KEYS = ("variant", "model", "policy", "batch", "seeds", "test_error_mean", "test_error_std",
            "bits_per_dim_mean", "bits_per_dim_std", "nfe_mean", "nfe_std", "log10_tol_last_mean",
            "log10_tol_last_std", "nfe_ratio_vs_fixed", "bits_per_dim_rel_diff_vs_fixed")

#: variant name -> policy of ``digits_table.POLICIES`` and the flags that replace its own
#: flags (``flags``) and extra environment kwargs (``env``).
CONFIG = {
    "model": "infocnf",
    "regime": "small",
    "reference": "fixed",
    "variants": {
        "reinforce (defaults)": {"policy": "reinforce", "flags": [], "env": {}},
        "gate lr 3e-2": {"policy": "reinforce", "flags": ["--gate-lr", "0.03"], "env": {}},
        "no baseline": {"policy": "reinforce", "flags": ["--no-baseline"], "env": {}},
        "entropy 1e-2": {"policy": "reinforce", "flags": ["--entropy", "0.01"], "env": {}},
        # each gate learns from its own block's NFE only (the last one also from the loss)
        "gamma 0": {"policy": "reinforce", "flags": ["--gamma", "0"], "env": {}},
        "bounds (-8, -1)": {"policy": "reinforce", "flags": [], "env": {"tol_bounds": (-8.0, -1.0)}},
        "fixed 1e-2": {"policy": "fixed", "flags": ["--tol", "1e-2"], "env": {}},
    },
}
QUICK: dict = {}


def _label(model: str, regime: str, name: str, variant: dict) -> str:
    """Run label of a variant: the plain policy's label when it changes nothing, so those runs are shared."""
    label = f"{model}-{variant['policy']}-{regime}"
    if not variant["flags"] and not variant["env"]:
        return label
    return f"{label}-" + "".join(c for c in name if c.isalnum())


def run(ctx: Context) -> dict:
    cfg = ctx.config
    model, regime = cfg["model"], cfg["regime"]
    reference = seed_arms(ctx, model, cfg["reference"], regime)
    groups = {name: seed_arms(ctx, model, v["policy"], regime, label=_label(model, regime, name, v),
                              flags=list(v["flags"]), extra_env=dict(v["env"]))
              for name, v in cfg["variants"].items()}
    summaries = train_groups(ctx, {"reference": reference, **groups})
    fixed = summarise([run_metrics(summaries[a]) for a in reference], RUN_METRICS)
    rows = []
    for name, arms in groups.items():
        row = {"variant": name, "model": model, "policy": cfg["variants"][name]["policy"], "batch": regime,
               **run_row(ctx, arms, summaries)}
        runs = {key: row.pop(key) for key in ("run_dirs", "per_seed")}  # keep them last, after the ratios
        rows.append({**row, **vs_fixed(row, fixed), **runs})
    return {"rows": rows, "reference": {"policy": cfg["reference"], "seeds": list(ctx.seeds), **fixed}}
