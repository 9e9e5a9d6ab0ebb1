"""frozen: tolerance policies on a frozen, pre-trained flow.

The flow is the ``infocnf`` / ``fixed`` (1e-5) run of ``digits-table`` (``regime``), one
per seed. Each policy then learns on the frozen flow (``train_flow=False``: the flow's
weights never change) for ``iterations`` episodes with the same reward as in co-training.
Afterwards the test set is evaluated with each policy's deterministic tolerances (REINFORCE:
the gate mean; SB3: ``predict(deterministic=True)``), giving one (NFE, bits/dim) point per
policy, against the front traced by fixed tolerances ``front_tols`` on the same batches and
Hutchinson noise. ``excess_bits_per_dim`` is bits/dim at the policy's tolerances minus
bits/dim at 1e-5: negative values mean the policy's loose tolerances make the model *look*
better than it is (solver error), which the bounds (-8, -2) limit.

Cost (full): 15 runs of 300 forward-only episodes (0.45-0.65 s each on one core): ~2,500
CPU-seconds plus ~15 s of evaluation per seed, ~20-25 min with ``--jobs 2`` (plus the 3
pre-training runs, ~17 CPU-minutes, if absent).
"""

from __future__ import annotations

import numpy as np

from agents.evaluate import evaluate_fixed, evaluate_policy, load_policy, load_run
from runs.aggregate import summarise
from runs.run_cache import Context, digits_arm
from runs.studies.common import EVAL_TOL, batches, seed_arms, train_groups, training_tail

ROW_KEYS = ("policy", "seeds", "nfe_mean", "nfe_std", "bits_per_dim_mean", "bits_per_dim_std",
            "excess_bits_per_dim_mean", "excess_bits_per_dim_std", "log10_tol_mean")

CONFIG = {
    "regime": "small",
    "pretrained_policy": "fixed",
    "policies": ["reinforce", "ppo", "sac", "a2c-normadv", "td3"],
    "iterations": 300,
    "front_tols": [1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2],
    "eval_batch_size": 100,
}
QUICK = {"iterations": 3, "front_tols": [1e-5, 1e-3, 1e-2], "eval_batch_size": 100}


def run(ctx: Context) -> dict:
    from flows import SolverError

    cfg = ctx.config
    regime = cfg["regime"]
    pretrained = seed_arms(ctx, "infocnf", cfg["pretrained_policy"], regime)
    train_groups(ctx, {"pretrained": pretrained})
    groups = {
        policy: [digits_arm(ctx, "infocnf", policy, regime, p.seed, label=f"frozen-{policy}-{regime}",
                            iterations=cfg["iterations"], eval_every=0,
                            extra_env={"train_flow": False,
                                       "checkpoint": str((p.run_dir(ctx.runs_dir) / "checkpoint.pt").resolve())})
                 for p in pretrained]
        for policy in cfg["policies"]
    }
    train_groups(ctx, groups)
    front: dict[float, list[dict]] = {t: [] for t in cfg["front_tols"]}
    points: dict[str, list[dict]] = {p: [] for p in groups}
    failures = []
    for i, arm in enumerate(pretrained):
        trained = load_run(arm.run_dir(ctx.runs_dir))
        test = batches(trained.env.task.data("test"), cfg["eval_batch_size"])
        ref = evaluate_fixed(trained.env, test, EVAL_TOL)
        for tol in cfg["front_tols"]:
            try:
                m = evaluate_fixed(trained.env, test, tol)
            except SolverError as err:
                failures.append(f"seed {arm.seed} tol {tol:g}: {err}")
                continue
            front[tol].append({**m, "excess_bits_per_dim": m["bits_per_dim"] - ref["bits_per_dim"]})
        for policy, arms in groups.items():
            run_dir = arms[i].run_dir(ctx.runs_dir)
            m = evaluate_policy(trained.env, test, load_policy(run_dir, trained.env))
            m["excess_bits_per_dim"] = m["bits_per_dim"] - ref["bits_per_dim"]
            tail = training_tail(run_dir, "nfe_forward")
            m["train_nfe_forward_last"] = float(np.mean([r["nfe_forward"] for r in tail]))
            m["train_bits_per_dim_last"] = float(np.mean([r["bits_per_dim"] for r in tail]))
            points[policy].append(m)
    keys = ("nfe", "bits_per_dim", "excess_bits_per_dim", "error", "log10_tol", "train_nfe_forward_last",
            "train_bits_per_dim_last")
    rows = [{"policy": p, "seeds": list(ctx.seeds), **summarise(records, keys),
             "per_seed": [{"nfe": r["nfe"], "log10_tol_blocks": r["log10_tol_blocks"]} for r in records]}
            for p, records in points.items()]
    front_rows = [{"policy": "fixed", "tol": tol, "seeds": list(ctx.seeds),
                   **summarise(records, ("nfe", "bits_per_dim", "excess_bits_per_dim", "error"))}
                  for tol, records in front.items() if records]
    return {"rows": rows, "front": front_rows, "solver_failures": failures,
            "pretrained": [a.run_dir(ctx.runs_dir).name for a in pretrained]}
