"""policies: which agent should choose the tolerances?

InfoCNF on digits (``regime`` of ``digits-table``), co-trained with each tolerance policy:
the fixed 1e-5 baseline, the paper's REINFORCE gates and stable-baselines3 PPO, SAC, A2C and
TD3 (``agents.sb3`` defaults, vector observation, action rescaled to [-1, 1]; PPO and A2C
with ``--init-std 0.5``, the REINFORCE gates' initial spread, explicit so that it is in the
run cache key). ``a2c`` updates after every episode on raw returns (``n_steps=3``);
``a2c-normadv`` uses 12-step (4-episode) rollouts and advantages normalised per update
(``n_steps=12 normalize_advantage=True``, the ``agents.sb3`` default). Equal budget: the
same iterations for every arm. Reports training NFE per iteration, test
bits/dim and error at 1e-5, and the final mean log10 tolerance. The fixed and REINFORCE
arms are the digits-table ones (shared runs).

Cost (full): 15 new runs (5 SB3 arms x 3 seeds) of 300 iterations at ~1.2
s/iteration (one core; SB3-SAC measured): ~5,500 CPU-seconds, ~50 min with ``--jobs 2``
(plus the 6 shared digits-table runs, ~35 CPU-minutes, if absent).
"""

from __future__ import annotations

from runs.run_cache import Context
from runs.studies.common import run_row, seed_arms, train_groups, vs_fixed

ROW_KEYS = ("model", "policy", "batch", "seeds", "test_error_mean", "test_error_std", "bits_per_dim_mean",
            "bits_per_dim_std", "nfe_mean", "nfe_std", "log10_tol_last_mean", "wall_s_mean")

CONFIG = {"model": "infocnf", "regime": "small",
          "policies": ["fixed", "reinforce", "ppo", "sac", "a2c", "a2c-normadv", "td3"]}
QUICK: dict = {}


def run(ctx: Context) -> dict:
    cfg = ctx.config
    model, regime = cfg["model"], cfg["regime"]
    groups = {p: seed_arms(ctx, model, p, regime) for p in cfg["policies"]}
    summaries = train_groups(ctx, groups)
    rows = [{"model": model, "policy": p, "batch": regime, **run_row(ctx, arms, summaries)}
            for p, arms in groups.items()]
    fixed = next((r for r in rows if r["policy"] == "fixed"), None)
    if fixed:
        for row in rows:
            row.update(vs_fixed(row, fixed))
    return {"rows": rows}
