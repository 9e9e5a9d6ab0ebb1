"""benchmark: tolerance learning on frozen flows against its baselines, and co-training with every lever.

Two parts.

**Frozen-flow leaderboard** (``tasks``): on each frozen benchmark id
(:mod:`infocnf_env.frozen`, FFJORD 2-D toy densities trained to convergence, a fixed pool of
episodes with cached 1e-8 references), in both action modes:

* the fixed-action front: mean NFE and mean accuracy error of every action of the grid
  (log10 tolerances ``grid_tols`` x first steps ``grid_first_steps``, ``None`` = the solver's
  own start) over the pool;
* ``best_constant_reward``: the grid action with the best mean reward (one action for every
  episode);
* ``oracle_reward``: each episode's best grid action in hindsight, averaged (an upper bound
  for a policy that adapts to its input, within the grid);
* each agent (REINFORCE with the paper's gates, SB3 PPO / SAC / TD3 / A2C) trained for
  ``agent_episodes`` episodes per seed and scored by the mean reward of its deterministic
  policy over the pool; ``gap_closed = (agent - best constant) / (oracle - best constant)``.

**Co-training** (``cotrain``): InfoCNF on digits in the ``small`` regime (batch 128, 300
iterations), fixed 1e-5 against REINFORCE with wide bounds (``cotrain_tol_bounds``), the
first-step lever (``tol_first_step``) and the accuracy term (a reference solve at 1e-5 of
every batch, two-sided gap, weight ``cotrain_gap_weight``). ``nfe_ratio``: training NFE per
iteration (forward + backward, the reference solves not included) over fixed 1e-5's;
``reference_nfe_ratio``: the reference solves' NFE over the same; ``bpd_ratio``: test
bits/dim at 1e-5 over fixed 1e-5's. Means over seeds of per-seed ratios.

Cost (full): the frozen flows (trained once, cached in the user cache directory), the grids
(~1 min per task and mode), 5 agents x 2 modes x 3 seeds x tasks short runs, and 6 digits
runs of 300 iterations: about 1.5 hours with ``--jobs 2``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from runs.aggregate import run_metrics
from runs.run_cache import Arm, Context, digits_arm, run_arms
from runs.studies.common import ratio

ROW_KEYS = ("task", "action_mode", "agent", "reward_mean", "reward_std", "gap_closed", "seeds")

CONFIG: dict[str, Any] = {
    "cotrain_regime": "small",
    "cotrain_tol_bounds": [-8.0, 0.0],
    "cotrain_gap_weight": 1000.0,
    "cotrain_gap_every": 1,
    "targets": {"gap_fraction": 0.10, "gap_closed": 0.5, "cotrain_nfe_ratio": 0.45, "cotrain_bpd_tol": 0.01},
}
QUICK: dict[str, Any] = {}

USES_DIGITS_REGIMES = True


# ============================================================================ co-training
def cotrain_arm(ctx: Context, name: str, seed: int) -> Arm:
    """``fixed``: every block at 1e-5; ``reinforce``: wide bounds, first-step lever, accuracy term."""
    cfg = ctx.config
    if name == "fixed":
        return digits_arm(ctx, "infocnf", "fixed", cfg["cotrain_regime"], seed, label="bench-cotrain-fixed",
                          eval_every=0)
    extra = {"tol_bounds": tuple(cfg["cotrain_tol_bounds"]), "action_mode": "tol_first_step",
             "gap_check_every": cfg["cotrain_gap_every"], "gap_weight": cfg["cotrain_gap_weight"],
             "gap_sided": "two"}
    return digits_arm(ctx, "infocnf", "reinforce", cfg["cotrain_regime"], seed, label="bench-cotrain-reinforce",
                      eval_every=0, extra_env=extra)


def cotrain_rows(ctx: Context) -> list[dict]:
    """One row per co-trained agent against fixed 1e-5 of the same seeds."""
    arms = {(name, s): cotrain_arm(ctx, name, s) for s in ctx.seeds for name in ("fixed", "reinforce")}
    summaries = run_arms(ctx, list(arms.values()))
    figures = {key: run_metrics(summaries[arm]) | {"nfe_reference": summaries[arm].get("train_nfe_reference_mean")}
               for key, arm in arms.items()}
    per_seed = []
    for s in ctx.seeds:
        mine, fixed = figures[("reinforce", s)], figures[("fixed", s)]
        per_seed.append({"seed": s, "nfe_ratio": ratio(mine["nfe"], fixed["nfe"]),
                         "reference_nfe_ratio": ratio(mine["nfe_reference"] or 0.0, fixed["nfe"]),
                         "bpd_ratio": ratio(mine["bits_per_dim"], fixed["bits_per_dim"]),
                         "nfe": mine["nfe"], "fixed_nfe": fixed["nfe"], "bits_per_dim": mine["bits_per_dim"],
                         "fixed_bits_per_dim": fixed["bits_per_dim"]})
    mean = {k: float(np.mean([p[k] for p in per_seed])) for k in ("nfe_ratio", "reference_nfe_ratio", "bpd_ratio")}
    return [{"agent": "reinforce", **mean, "seeds": list(ctx.seeds), "per_seed": per_seed,
             "run_dirs": [arms[("reinforce", s)].run_dir(ctx.runs_dir).name for s in ctx.seeds]}]


def run(ctx: Context) -> dict:
    cotrain = cotrain_rows(ctx)
    t = ctx.config["targets"]
    c = cotrain[0]
    targets = {"thresholds": t, "cotrain": {"nfe_ratio": c["nfe_ratio"], "bpd_ratio": c["bpd_ratio"],
                                            "met": bool(c["nfe_ratio"] <= t["cotrain_nfe_ratio"]
                                                        and abs(c["bpd_ratio"] - 1) <= t["cotrain_bpd_tol"])}}
    return {"rows": [], "cotrain": cotrain, "targets": targets}
