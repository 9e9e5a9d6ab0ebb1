"""speed: the levers on a CNF's cost beside learned tolerances, alone and combined.

InfoCNF on digits in the ``small`` regime (batch 128, 300 iterations), one run per arm and
seed, the arms of a seed trained side by side (interleaved on the same load, so their wall
times compare):

* ``fixed``: every block at 1e-5, the solver's initial-step heuristic (the paper's baseline);
* ``learned``: REINFORCE gates choose each block's tolerance (Section 3, Eq. 6-7);
* ``warm``: fixed 1e-5, each block's solve started from the step it last accepted
  (``warm_start``);
* ``regularised``: fixed 1e-5 with the kinetic-energy and Jacobian-Frobenius regularizers of
  RNODE (Finlay et al. 2020), both at the weight ``reg_weight``;
* ``error_reg``: fixed 1e-5 with the solver-error regularizer (Pal et al. 2021, a probe step
  per block, ``error_weight``; its evaluations count in the NFE);
* ``combined``: warm start + the regularizers + REINFORCE.

The ``adjoint`` regime: the same digits flow, batch and iterations, with the adjoint method
and the authors' recipe (``flows.AUTHORS_RECIPE``: the CIFAR10 ids' model choices, c -> h ->
h -> h -> c dynamics, LinearZeros heads, beta 0.5, a learned end time per block), the CIFAR10
ids' training path at digits size:

* ``adjoint-fixed``: every block at 1e-5, the full adjoint norm (FFJORD's adjoint);
* ``adjoint-seminorm``: the seminorm adjoint (``adjoint_norm="seminorm"``, Kidger et al. 2021);
* ``adjoint-seminorm-warm``: the seminorm and warm starts of the forward and the adjoint solves;
* ``adjoint-combined``: the seminorm, warm starts and REINFORCE tolerances. A learned first
  step is not part of it: a forward solve starts from either the learned step or the warm
  start, and the warm start is the one that also reaches the adjoint solve.

``reg_weight`` is chosen by a sweep on seed 0 (``reg_sweep``): the largest weight whose test
bits/dim stays within ``reg_bpd_tol`` of the fixed arm's (same seed); the sweep's runs are
cached, so the chosen weight's seed-0 run is the ``regularised`` arm's. The regularizers
integrate ``||f||^2`` and ``||e^T df/dz||^2`` summed over all dimensions, beside a loss in bits
per dimension, so the sweep holds small weights.

Rows, each a mean over seeds against the first arm of their ``regime`` (``fixed`` in ``small``,
``adjoint-fixed`` in ``adjoint``) of the same seeds: ``nfe_ratio`` (training NFE per iteration,
forward + backward), ``nfe_backward_ratio`` (its backward part: the adjoint solves' evaluations
in ``adjoint``), ``wall_ratio`` (training wall time: the last iteration's
``wall_time``, periodic evaluation off), ``bpd_ratio`` (test bits/dim at 1e-5),
``test_nfe_ratio`` (NFE of a test batch at 1e-5; warm-started arms start it from their
trained steps). ``targets`` checks the figures asked of these levers.

Cost (full): 18 runs + 2 extra sweep runs of 300 iterations at ~1-1.5 s/iteration on
one core: about an hour with ``--jobs 2``; the adjoint regime's 12 runs cost more per
iteration (an adjoint solve per block), about two more hours.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from flows.build import AUTHORS_RECIPE
from runs.aggregate import read_jsonl, run_metrics, summarise
from runs.run_cache import Arm, Context, digits_arm, run_arms
from runs.studies.common import ratio

ROW_KEYS = ("arm", "regime", "nfe_ratio", "nfe_backward_ratio", "wall_ratio", "bpd_ratio", "test_nfe_ratio", "seeds")

#: Arm name -> (policy of ``digits_arm``, uses the warm start, uses the RNODE regularizers,
#: uses the solver-error regularizer).
ARMS = {
    "fixed": ("fixed", False, False, False),
    "learned": ("reinforce", False, False, False),
    "warm": ("fixed", True, False, False),
    "regularised": ("fixed", False, True, False),
    "error_reg": ("fixed", False, False, True),
    "combined": ("reinforce", True, True, False),
}

#: Adjoint-regime arm name -> (policy of ``digits_arm``, adjoint norm, uses the warm start).
ADJOINT_ARMS = {
    "adjoint-fixed": ("fixed", "full", False),
    "adjoint-seminorm": ("fixed", "seminorm", False),
    "adjoint-seminorm-warm": ("fixed", "seminorm", True),
    "adjoint-combined": ("reinforce", "seminorm", True),
}

CONFIG = {
    "regime": "small",
    "arms": list(ARMS),
    "adjoint_arms": list(ADJOINT_ARMS),
    "adjoint_env": {"adjoint": True, **AUTHORS_RECIPE},
    "reg_weights": [1e-3, 3e-4, 1e-4],
    "reg_bpd_tol": 0.01,
    "error_weight": 1e5,
    "targets": {"combined_nfe_ratio": 0.4, "combined_wall_ratio": 0.45, "combined_bpd_tol": 0.01,
                "regularised_test_nfe_ratio": 0.7, "warm_nfe_forward_ratio": 0.6, "warm_bpd_tol": 0.001,
                "seminorm_nfe_backward_ratio": 0.6, "seminorm_bpd_tol": 0.001,
                "adjoint_combined_wall_ratio": 0.35, "adjoint_combined_bpd_tol": 0.01},
}
QUICK = {"reg_weights": [1e-3]}

#: Per-seed figures of one run (from its summary and its metrics.jsonl).
FIELDS = ("nfe", "nfe_forward", "nfe_backward", "wall", "bits_per_dim", "test_nfe", "test_error")


def _arm(ctx: Context, name: str, seed: int, reg_weight: float) -> Arm:
    if name in ADJOINT_ARMS:
        policy, norm, adjoint_warm = ADJOINT_ARMS[name]
        env = {**ctx.config["adjoint_env"], "adjoint_norm": norm, **({"warm_start": True} if adjoint_warm else {})}
        return digits_arm(ctx, "infocnf", policy, ctx.config["regime"], seed, label=f"speed-{name}", eval_every=0,
                          extra_env=env)
    policy, warm, reg, error_reg = ARMS[name]
    extra: dict[str, Any] = {}
    if warm:
        extra["warm_start"] = True
    if reg:
        extra.update(kinetic_weight=reg_weight, jacobian_weight=reg_weight)
    if error_reg:
        extra["error_weight"] = ctx.config["error_weight"]
    label = f"speed-{name}" + (f"-reg{reg_weight:g}" if reg else "")
    return digits_arm(ctx, "infocnf", policy, ctx.config["regime"], seed, label=label, eval_every=0,
                      extra_env=extra)


def _figures(ctx: Context, arm: Arm, summary: dict) -> dict:
    """:data:`FIELDS` of one run: its :func:`run_metrics`, and the wall time of its training
    iterations alone (the last iteration's, before the final evaluation)."""
    records = [r for r in read_jsonl(arm.run_dir(ctx.runs_dir) / "metrics.jsonl") if "nfe_forward" in r]
    metrics = {**run_metrics(summary), "wall": records[-1]["wall_time"]}
    return {key: metrics[key] for key in FIELDS}


def _choose_weight(ctx: Context) -> tuple[float, list[dict]]:
    """The largest swept weight whose seed-0 test bits/dim is within ``reg_bpd_tol`` of fixed's
    (the smallest swept weight if none is; ``reg_weight_within_tol`` in the result says which)."""
    cfg, seed = ctx.config, ctx.seeds[0]
    fixed = _arm(ctx, "fixed", seed, 0.0)
    sweep = {w: _arm(ctx, "regularised", seed, w) for w in cfg["reg_weights"]}
    summaries = run_arms(ctx, [fixed, *sweep.values()])
    base = _figures(ctx, fixed, summaries[fixed])
    rows = []
    for weight, arm in sweep.items():
        f = _figures(ctx, arm, summaries[arm])
        rows.append({"reg_weight": weight, "seed": seed,
                     "bpd_ratio": ratio(f["bits_per_dim"], base["bits_per_dim"]),
                     "nfe_ratio": ratio(f["nfe"], base["nfe"]),
                     "test_nfe_ratio": ratio(f["test_nfe"], base["test_nfe"])})
    ok = [r["reg_weight"] for r in rows if abs(r["bpd_ratio"] - 1) <= cfg["reg_bpd_tol"]]
    return (max(ok) if ok else min(cfg["reg_weights"])), rows


def run(ctx: Context) -> dict:
    cfg = ctx.config
    weight, sweep = _choose_weight(ctx)
    within = any(r["reg_weight"] == weight and abs(r["bpd_ratio"] - 1) <= cfg["reg_bpd_tol"] for r in sweep)
    regimes = {cfg["regime"]: cfg["arms"], "adjoint": cfg["adjoint_arms"]}
    names = [name for arm_names in regimes.values() for name in arm_names]
    arms = {(name, s): _arm(ctx, name, s, weight) for s in ctx.seeds for name in names}  # seed-major
    summaries = run_arms(ctx, list(arms.values()))
    per_seed = {key: _figures(ctx, arm, summaries[arm]) for key, arm in arms.items()}
    rows = []
    for regime, arm_names in regimes.items():
        base = arm_names[0]
        for name in arm_names:
            ratios = []
            for s in ctx.seeds:
                mine, fixed = per_seed[(name, s)], per_seed[(base, s)]
                ratios.append({"nfe_ratio": ratio(mine["nfe"], fixed["nfe"]),
                               "nfe_forward_ratio": ratio(mine["nfe_forward"], fixed["nfe_forward"]),
                               "nfe_backward_ratio": ratio(mine["nfe_backward"], fixed["nfe_backward"]),
                               "wall_ratio": ratio(mine["wall"], fixed["wall"]),
                               "bpd_ratio": ratio(mine["bits_per_dim"], fixed["bits_per_dim"]),
                               "test_nfe_ratio": ratio(mine["test_nfe"], fixed["test_nfe"])})
            means = {k: float(np.mean([r[k] for r in ratios])) for k in ratios[0]}
            rows.append({"arm": name, "regime": regime, "baseline": base, **means, "seeds": list(ctx.seeds),
                         **summarise([per_seed[(name, s)] for s in ctx.seeds], FIELDS),
                         "run_dirs": [arms[(name, s)].run_dir(ctx.runs_dir).name for s in ctx.seeds],
                         "per_seed": [{**per_seed[(name, s)], **r} for s, r in zip(ctx.seeds, ratios, strict=True)]})
    return {"rows": rows, "reg_weight": weight, "reg_weight_within_tol": within, "reg_sweep": sweep,
            "targets": _targets(rows, cfg["targets"])}


def _targets(rows: list[dict], t: dict) -> dict:
    by = {r["arm"]: r for r in rows}
    out: dict[str, Any] = {}
    if "combined" in by:
        c = by["combined"]
        out["combined"] = {"nfe_ratio": c["nfe_ratio"], "wall_ratio": c["wall_ratio"], "bpd_ratio": c["bpd_ratio"],
                           "met": bool(c["nfe_ratio"] <= t["combined_nfe_ratio"]
                                       and c["wall_ratio"] <= t["combined_wall_ratio"]
                                       and abs(c["bpd_ratio"] - 1) <= t["combined_bpd_tol"])}
    if "regularised" in by:
        r = by["regularised"]
        out["regularised"] = {"test_nfe_ratio": r["test_nfe_ratio"],
                              "met": bool(r["test_nfe_ratio"] <= t["regularised_test_nfe_ratio"])}
    if "warm" in by:
        w = by["warm"]
        out["warm"] = {"nfe_forward_ratio": w["nfe_forward_ratio"], "test_nfe_ratio": w["test_nfe_ratio"],
                       "bpd_ratio": w["bpd_ratio"],
                       "met": bool(w["nfe_forward_ratio"] <= t["warm_nfe_forward_ratio"]
                                   and w["test_nfe_ratio"] <= t["warm_nfe_forward_ratio"]
                                   and abs(w["bpd_ratio"] - 1) <= t["warm_bpd_tol"])}
    if "adjoint-seminorm" in by:
        a = by["adjoint-seminorm"]
        out["seminorm"] = {"nfe_backward_ratio": a["nfe_backward_ratio"], "bpd_ratio": a["bpd_ratio"],
                           "met": bool(a["nfe_backward_ratio"] <= t["seminorm_nfe_backward_ratio"]
                                       and abs(a["bpd_ratio"] - 1) <= t["seminorm_bpd_tol"])}
    if "adjoint-combined" in by:
        a = by["adjoint-combined"]
        out["adjoint_combined"] = {"wall_ratio": a["wall_ratio"], "nfe_ratio": a["nfe_ratio"],
                                   "bpd_ratio": a["bpd_ratio"],
                                   "met": bool(a["wall_ratio"] <= t["adjoint_combined_wall_ratio"]
                                               and abs(a["bpd_ratio"] - 1) <= t["adjoint_combined_bpd_tol"])}
    return {"thresholds": t, **out}
