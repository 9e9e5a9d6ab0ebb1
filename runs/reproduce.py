"""Reproduce the paper's studies at CPU scale on the bundled digits (issue 4).

    python -m runs.reproduce STUDY [--seeds 3] [--quick] [--jobs N] [--workdir DIR] [--out DIR]
    python -m runs.reproduce all --jobs 2                  # every study, digits-table first

Studies (one config file each in ``runs/studies/``, whose docstring says what is run, how it
maps to the paper and what it costs):

=====================  ==========================================================================
``digits-table``      Tables 1-2: CCNF / InfoCNF fixed 1e-5 / InfoCNF learned, small + large batch
``uncond``            Fig. 4: unconditional CNF with vs without learned tolerances
``tol-integral``      Fig. 2a: |integral of p - 1| against the evaluation tolerance (1-D mixture)
``tol-hist``          Fig. 2b: learned tolerances per block on the train vs test sets
``curves``            Fig. 3: test error, test bits/dim and NFE over training
``eval-batch``        Appendix D: evaluation with the learned tolerances at various batch sizes
``policies``          REINFORCE vs SB3 PPO / SAC / A2C / TD3 vs fixed as the tolerance policy
``frozen``            policies on a frozen pre-trained flow against the fixed-tolerance front
``samples``           Fig. 7: class-conditional sample grid
``reinforce-ablation`` REINFORCE variants (gate lr, baseline, entropy, bounds) vs fixed 1e-5 / 1e-2
``latent-probe``      linear probes on z_y, z_u and z of CCNF and InfoCNF against their own classifier
=====================  ==========================================================================

Every study aggregates mean ± std over seeds (sample std, ddof=1; 0 for one seed) and writes
``OUT/STUDY.json`` and ``OUT/STUDY.png``. ``OUT`` is ``runs/results`` (``runs/results/quick``
with ``--quick``, so smoke runs never overwrite real results). The JSON always holds
``study``, ``quick``, ``seeds``, ``config`` (the merged study config, plus the digits regimes
where used), ``rows`` (a list of dicts, keys in :data:`ROW_KEYS`), ``plots`` and ``wall_s``;
some studies add more (``targets``, ``front``, ``curves``, ...). Non-finite numbers (a
diverged run) are written as ``null``.

Training runs are the agent CLIs (``agents.fixed``, ``agents.reinforce``, ``agents.sb3``)
with ``--out`` under ``WORKDIR/runs/``, one directory per configuration: the name ends with
a hash of everything that affects training, so a finished run is reused by every study that
needs it (``curves``, ``tol-hist``, ``eval-batch``, ``samples``, ``frozen`` and ``policies``
reuse the ``digits-table`` runs) and an interrupted one is resumed from its checkpoint. With
``--jobs N > 1`` runs go to N subprocesses of one thread each; otherwise they run in this
process with ``--threads`` torch threads. Logs go to ``WORKDIR/logs/``.
The run cache is :mod:`runs.run_cache`; the mean ± std and curve aggregation is
:mod:`runs.aggregate`; this module holds the studies and the driver.

``--quick``: 4-filter dynamics, 2-5 iterations, one seed, few evaluation batches: about a
minute per study on one core; used by ``tests/test_reproduce.py``.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.evaluate import (
    Policy,
    ToleranceTrace,
    evaluate_fixed,
    evaluate_policy,
    load_policy,
    load_run,
    policy_tolerance,
)
from runs.aggregate import (
    RUN_METRICS,
    aggregate_series,
    finite,
    read_jsonl,
    run_metrics,
    run_series,
    summarise,
)
from runs.run_cache import DIGITS_TRAIN_SIZE, Arm, Context, digits_arm, run_arms
from runs.studies import MODULES

STUDIES = tuple(MODULES)
EVAL_TOL = 1e-5
#: Fraction of a run's last iterations whose logged tolerances count as "end of training".
LAST_FRACTION = 0.25

#: Keys every row of a study's ``rows`` holds (``*_mean`` keys come with ``*_std``).
ROW_KEYS: dict[str, tuple[str, ...]] = {
    "digits-table": ("model", "policy", "batch", "seeds", "test_error_mean", "test_error_std", "bits_per_dim_mean",
                     "bits_per_dim_std", "marginal_bits_per_dim_mean", "marginal_bits_per_dim_std", "nfe_mean",
                     "nfe_std", "wall_s_mean", "wall_s_std"),
    "uncond": ("model", "policy", "batch", "seeds", "bits_per_dim_mean", "bits_per_dim_std", "nfe_mean", "nfe_std",
               "wall_s_mean", "wall_s_std"),
    "tol-integral": ("policy", "tol", "seeds", "abs_error_mean", "abs_error_std", "integral_mean", "integral_std",
                     "nfe_mean", "nfe_std"),
    "tol-hist": ("split", "block", "seeds", "log10_tol_mean", "log10_tol_std", "values"),
    "curves": ("model", "policy", "batch", "seeds", "epoch", "test_error_mean", "test_error_std",
               "bits_per_dim_mean", "bits_per_dim_std", "nfe_mean", "nfe_std"),
    "eval-batch": ("split", "batch_size", "seeds", "bits_per_dim_mean", "bits_per_dim_std",
                   "marginal_bits_per_dim_mean", "marginal_bits_per_dim_std", "error_mean", "error_std", "nfe_mean",
                   "nfe_std", "log10_tol_mean", "delta_bits_per_dim_mean", "delta_error_mean"),
    "policies": ("model", "policy", "batch", "seeds", "test_error_mean", "test_error_std", "bits_per_dim_mean",
                 "bits_per_dim_std", "nfe_mean", "nfe_std", "log10_tol_last_mean", "wall_s_mean"),
    "frozen": ("policy", "seeds", "nfe_mean", "nfe_std", "bits_per_dim_mean", "bits_per_dim_std",
               "excess_bits_per_dim_mean", "excess_bits_per_dim_std", "log10_tol_mean"),
    "samples": ("model", "policy", "seeds", "sample_accuracy_mean", "sample_accuracy_std", "self_consistency_mean",
                "self_consistency_std"),
    "latent-probe": ("model", "policy", "batch", "features", "seeds", "test_error_mean", "test_error_std"),
    "reinforce-ablation": ("variant", "model", "policy", "batch", "seeds", "test_error_mean", "test_error_std",
                           "bits_per_dim_mean", "bits_per_dim_std", "nfe_mean", "nfe_std", "log10_tol_last_mean",
                           "log10_tol_last_std", "nfe_ratio_vs_fixed", "bits_per_dim_rel_diff_vs_fixed"),
}


# ============================================================================ configuration
def _merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load_config(study: str, quick: bool) -> dict:
    """The study's ``CONFIG``, with ``QUICK`` merged in for ``--quick``."""
    if study not in MODULES:
        raise ValueError(f"unknown study {study!r}; valid: {', '.join(STUDIES)}")
    module = importlib.import_module(f"runs.studies.{MODULES[study]}")
    return _merge(module.CONFIG, module.QUICK) if quick else copy.deepcopy(module.CONFIG)


def digits_regimes(quick: bool) -> dict:
    from runs.studies import digits_table

    return copy.deepcopy(digits_table.QUICK_REGIMES if quick else digits_table.REGIMES)


# ============================================================================ trained flows and policies
@torch.no_grad()
def policy_pass(env: Any, x: torch.Tensor, y: torch.Tensor, policy: Policy,
                generator: torch.Generator | None = None) -> tuple[Any, list[float], list[float]]:
    """One pass with the policy choosing each block's tolerance: output, log10 tols, policy stds."""
    trace = ToleranceTrace()
    model = env.model
    out = model(x.reshape(x.shape[0], *model.data_shape), y, tol=policy_tolerance(env, policy, trace),
                generator=generator)
    return out, trace.log_tols[0], trace.stds[0]


def _batches(data: Any, batch_size: int, max_examples: int | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    from flows import iterate_batches
    from flows.data import LabelledData

    if max_examples is not None and max_examples < len(data):
        data = LabelledData(data.x[:max_examples], data.y[:max_examples], data.num_levels, data.num_classes,
                            data.flip, data.name)
    return list(iterate_batches(data, batch_size))


# ============================================================================ the studies
def study_digits_table(ctx: Context) -> dict:
    cfg = ctx.config
    groups = {(m, p, r): [digits_arm(ctx, m, p, r, s) for s in ctx.seeds]
              for r in cfg["regimes"] for m, p in cfg["arms"]}
    summaries = run_arms(ctx, [a for arms in groups.values() for a in arms])
    rows = []
    for (model, policy, regime), arms in groups.items():
        r = ctx.regimes[regime]
        per_seed = [run_metrics(summaries[a]) for a in arms]
        rows.append({
            "model": model, "policy": policy, "batch": regime, "batch_size": r["batch_size"], "lr": r["lr"],
            "iterations": r["iterations"], "epochs": r["iterations"] * r["batch_size"] / DIGITS_TRAIN_SIZE,
            "seeds": list(ctx.seeds), **summarise(per_seed, RUN_METRICS),
            "run_dirs": [a.run_dir(ctx.runs_dir).name for a in arms], "per_seed": per_seed,
        })
    return {"rows": rows, "targets": _targets(rows, cfg)}


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def _targets(rows: list[dict], cfg: dict) -> list[dict]:
    """Issue 4's targets, per regime: learned vs fixed NFE at equal bits/dim; InfoCNF vs CCNF error."""
    t = cfg["targets"]
    find = {(r["model"], r["policy"], r["batch"]): r for r in rows}
    out = []
    for regime in cfg["regimes"]:
        fixed, learned = find.get(("infocnf", "fixed", regime)), find.get(("infocnf", "reinforce", regime))
        ccnf = find.get(("ccnf", "fixed", regime))
        entry: dict[str, Any] = {"batch": regime}
        if fixed and learned:
            nfe_ratio = _ratio(learned["nfe_mean"], fixed["nfe_mean"])
            bpd = learned["bits_per_dim_mean"] / fixed["bits_per_dim_mean"] - 1
            entry.update(nfe_ratio=nfe_ratio, nfe_ratio_target=t["nfe_ratio"], learned_bits_per_dim_rel_diff=bpd,
                         nfe_target_met=bool(nfe_ratio <= t["nfe_ratio"] and abs(bpd) <= t["nfe_bpd_tol"]))
        if fixed and ccnf:
            err_ratio = _ratio(fixed["test_error_mean"], ccnf["test_error_mean"])
            bpd = fixed["bits_per_dim_mean"] / ccnf["bits_per_dim_mean"] - 1
            entry.update(error_ratio=err_ratio, error_ratio_target=t["error_ratio"],
                         infocnf_bits_per_dim_rel_diff=bpd,
                         error_target_met=bool(err_ratio <= t["error_ratio"] and abs(bpd) <= t["error_bpd_tol"]))
            if learned:
                entry["error_ratio_learned"] = _ratio(learned["test_error_mean"], ccnf["test_error_mean"])
        out.append(entry)
    return out


def _curve_rows(ctx: Context, groups: dict[tuple[str, str, str], list[Arm]]) -> list[dict]:
    rows = []
    for (model, policy, regime), arms in groups.items():
        batch = ctx.regimes[regime]["batch_size"]
        series = aggregate_series([run_series(a.run_dir(ctx.runs_dir), batch) for a in arms])
        rows.append({"model": model, "policy": policy, "batch": regime, "seeds": list(ctx.seeds), **series})
    return rows


def study_curves(ctx: Context) -> dict:
    table = load_config(ctx.config["table"], ctx.quick)
    ctx.config["digits_table"] = table
    groups = {(m, p, r): [digits_arm(ctx, m, p, r, s) for s in ctx.seeds]
              for r in table["regimes"] for m, p in table["arms"]}
    run_arms(ctx, [a for arms in groups.values() for a in arms])
    return {"rows": _curve_rows(ctx, groups)}


def study_uncond(ctx: Context) -> dict:
    cfg = ctx.config
    model, regime = cfg["model"], cfg["regime"]
    groups = {(model, p, regime): [digits_arm(ctx, model, p, regime, s) for s in ctx.seeds] for p in cfg["policies"]}
    summaries = run_arms(ctx, [a for arms in groups.values() for a in arms])
    rows = []
    for (m, policy, r), arms in groups.items():
        per_seed = [run_metrics(summaries[a]) for a in arms]
        rows.append({"model": m, "policy": policy, "batch": r, "seeds": list(ctx.seeds),
                     **summarise(per_seed, RUN_METRICS), "run_dirs": [a.run_dir(ctx.runs_dir).name for a in arms],
                     "per_seed": per_seed})
    result: dict[str, Any] = {"rows": rows, "curves": _curve_rows(ctx, groups)}
    by_policy = {r["policy"]: r for r in rows}
    if "fixed" in by_policy and "reinforce" in by_policy:
        fixed, learned = by_policy["fixed"], by_policy["reinforce"]
        result["nfe_ratio"] = _ratio(learned["nfe_mean"], fixed["nfe_mean"])
        result["bits_per_dim_rel_diff"] = learned["bits_per_dim_mean"] / fixed["bits_per_dim_mean"] - 1
    return result


def study_policies(ctx: Context) -> dict:
    cfg = ctx.config
    model, regime = cfg["model"], cfg["regime"]
    groups = {p: [digits_arm(ctx, model, p, regime, s) for s in ctx.seeds] for p in cfg["policies"]}
    summaries = run_arms(ctx, [a for arms in groups.values() for a in arms])
    rows = []
    for policy, arms in groups.items():
        per_seed = [run_metrics(summaries[a]) for a in arms]
        rows.append({"model": model, "policy": policy, "batch": regime, "seeds": list(ctx.seeds),
                     **summarise(per_seed, RUN_METRICS), "run_dirs": [a.run_dir(ctx.runs_dir).name for a in arms],
                     "per_seed": per_seed})
    fixed = next((r for r in rows if r["policy"] == "fixed"), None)
    if fixed:
        for row in rows:
            row["nfe_ratio_vs_fixed"] = _ratio(row["nfe_mean"], fixed["nfe_mean"])
            row["bits_per_dim_rel_diff_vs_fixed"] = row["bits_per_dim_mean"] / fixed["bits_per_dim_mean"] - 1
    return {"rows": rows}


def study_reinforce_ablation(ctx: Context) -> dict:
    cfg = ctx.config
    model, regime = cfg["model"], cfg["regime"]
    groups = {"reference": [digits_arm(ctx, model, cfg["reference"], regime, s) for s in ctx.seeds]}
    for name, v in cfg["variants"].items():
        label = f"{model}-{v['policy']}-{regime}" if not v["flags"] and not v["env"] else \
            f"{model}-{v['policy']}-{regime}-" + "".join(c for c in name if c.isalnum())
        groups[name] = [digits_arm(ctx, model, v["policy"], regime, s, label=label, flags=list(v["flags"]),
                                   extra_env=dict(v["env"])) for s in ctx.seeds]
    summaries = run_arms(ctx, [a for arms in groups.values() for a in arms])
    stats = {name: summarise([run_metrics(summaries[a]) for a in arms], RUN_METRICS) for name, arms in groups.items()}
    fixed = stats.pop("reference")
    rows = []
    for name, arms in groups.items():
        if name == "reference":
            continue
        s = stats[name]
        rows.append({"variant": name, "model": model, "policy": cfg["variants"][name]["policy"], "batch": regime,
                     "seeds": list(ctx.seeds), **s, "nfe_ratio_vs_fixed": _ratio(s["nfe_mean"], fixed["nfe_mean"]),
                     "bits_per_dim_rel_diff_vs_fixed": s["bits_per_dim_mean"] / fixed["bits_per_dim_mean"] - 1,
                     "run_dirs": [a.run_dir(ctx.runs_dir).name for a in arms],
                     "per_seed": [run_metrics(summaries[a]) for a in arms]})
    return {"rows": rows, "reference": {"policy": cfg["reference"], "seeds": list(ctx.seeds), **fixed}}


def study_tol_integral(ctx: Context) -> dict:
    from flows import SolverError
    from flows.data import toy1d_density

    cfg = ctx.config
    kwargs = tuple(sorted(cfg["env_kwargs"].items()))
    policies = {"fixed": ("fixed", ("--tol", "1e-5"))}
    if cfg["learned"]:
        policies["reinforce"] = ("reinforce", ())
    groups = {p: [Arm(f"toy1d-{p}", module, cfg["env"], s, cfg["iterations"], 0, flags, kwargs) for s in ctx.seeds]
              for p, (module, flags) in policies.items()}
    run_arms(ctx, [a for arms in groups.values() for a in arms])
    dtype = getattr(torch, cfg["dtype"])
    g = cfg["grid"]
    grid = torch.linspace(g["low"], g["high"], g["points"], dtype=torch.float64)
    dx = float(grid[1] - grid[0])
    x = grid.to(dtype).reshape(-1, 1)
    y = torch.zeros(len(grid), dtype=torch.long)
    per_tol: dict[float, list[dict]] = {t: [] for t in cfg["tols"]}
    learned: list[dict] = []
    failures: list[str] = []

    def integrate(out: Any) -> dict:
        integral = float(out.marginal_logpx.to(torch.float64).exp().sum() * dx)
        return {"integral": integral, "abs_error": abs(integral - 1.0), "nfe": out.nfe_forward}

    for arm in groups["fixed"]:
        run = load_run(arm.run_dir(ctx.runs_dir))
        run.model.to(dtype)
        for tol in cfg["tols"]:
            try:
                with torch.no_grad():
                    out = run.model(x, y, tol=tol, generator=torch.Generator().manual_seed(0))
            except SolverError as err:
                failures.append(f"seed {arm.seed} tol {tol:g}: {err}")
                continue
            per_tol[tol].append(integrate(out))
    for arm in groups.get("reinforce", []):
        run = load_run(arm.run_dir(ctx.runs_dir))
        run.model.to(dtype)
        policy = load_policy(arm.run_dir(ctx.runs_dir), run.env)
        out, log_tols, _ = policy_pass(run.env, x, y, policy, torch.Generator().manual_seed(0))
        learned.append({**integrate(out), "log10_tol": float(np.mean(log_tols))})
    rows = []
    for tol, records in per_tol.items():
        if records:
            rows.append({"policy": "fixed", "tol": tol, "seeds": list(ctx.seeds),
                         **summarise(records, ("abs_error", "integral", "nfe"))})
    if learned:
        stats = summarise(learned, ("abs_error", "integral", "nfe", "log10_tol"))
        rows.append({"policy": "reinforce", "tol": 10.0 ** stats["log10_tol_mean"], "seeds": list(ctx.seeds), **stats})
    grid_error = abs(float(toy1d_density(grid).sum() * dx) - 1.0)
    return {"rows": rows, "grid_error": grid_error, "solver_failures": failures}


def _reinforce_arms(ctx: Context, regime: str) -> list[Arm]:
    return [digits_arm(ctx, "infocnf", "reinforce", regime, s) for s in ctx.seeds]


def study_tol_hist(ctx: Context) -> dict:
    from flows import BatchStream

    cfg = ctx.config
    regime = cfg["regime"]
    batch = cfg["batch_size"] or ctx.regimes[regime]["batch_size"]
    arms = _reinforce_arms(ctx, regime)
    run_arms(ctx, arms)
    values: dict[tuple[str, int], list[float]] = {}
    stds: dict[tuple[str, int], list[float]] = {}
    for arm in arms:
        run_dir = arm.run_dir(ctx.runs_dir)
        run = load_run(run_dir)
        policy = load_policy(run_dir, run.env)
        generator = torch.Generator().manual_seed(0)
        for split in ("train", "test"):
            stream = BatchStream(run.env.task.data(split), batch, seed=arm.seed, augment=False)
            for _ in range(cfg["num_batches"]):
                _, log_tols, policy_stds = policy_pass(run.env, *stream.next(), policy, generator)
                for block, (t, s) in enumerate(zip(log_tols, policy_stds)):
                    values.setdefault((split, block), []).append(t)
                    stds.setdefault((split, block), []).append(s)
        records = [m for m in read_jsonl(run_dir / "metrics.jsonl") if "tols" in m and "nfe_forward" in m]
        for m in records[-max(1, int(len(records) * LAST_FRACTION)):]:
            for block, tol in enumerate(m["tols"]):
                values.setdefault(("training_log", block), []).append(math.log10(tol))
    rows = []
    for (split, block), vals in sorted(values.items(), key=lambda kv: (["train", "test", "training_log"].index(
            kv[0][0]), kv[0][1])):
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


def study_eval_batch(ctx: Context) -> dict:
    cfg = ctx.config
    arms = _reinforce_arms(ctx, cfg["regime"])
    run_arms(ctx, arms)
    per_key: dict[tuple[str, int], list[dict]] = {}
    references: dict[str, list[dict]] = {}
    for arm in arms:
        run_dir = arm.run_dir(ctx.runs_dir)
        run = load_run(run_dir)
        policy = load_policy(run_dir, run.env)
        for split, sizes in cfg["batch_sizes"].items():
            data = run.env.task.data(split)
            ref = evaluate_fixed(run.env, _batches(data, cfg["reference_batch_size"], cfg["max_examples"]), EVAL_TOL)
            references.setdefault(split, []).append(ref)
            for size in sizes:
                m = evaluate_policy(run.env, _batches(data, size, cfg["max_examples"]), policy)
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


def study_frozen(ctx: Context) -> dict:
    from flows import SolverError

    cfg = ctx.config
    regime = cfg["regime"]
    pretrained = [digits_arm(ctx, "infocnf", cfg["pretrained_policy"], regime, s) for s in ctx.seeds]
    run_arms(ctx, pretrained)
    groups = {}
    for policy in cfg["policies"]:
        groups[policy] = [
            digits_arm(ctx, "infocnf", policy, regime, p.seed, label=f"frozen-{policy}-{regime}",
                       iterations=cfg["iterations"], eval_every=0,
                       extra_env={"train_flow": False,
                                  "checkpoint": str((p.run_dir(ctx.runs_dir) / "checkpoint.pt").resolve())})
            for p in pretrained
        ]
    run_arms(ctx, [a for arms in groups.values() for a in arms])
    front: dict[float, list[dict]] = {t: [] for t in cfg["front_tols"]}
    points: dict[str, list[dict]] = {p: [] for p in groups}
    failures = []
    for i, arm in enumerate(pretrained):
        run = load_run(arm.run_dir(ctx.runs_dir))
        batches = _batches(run.env.task.data("test"), cfg["eval_batch_size"])
        ref = evaluate_fixed(run.env, batches, EVAL_TOL)
        for tol in cfg["front_tols"]:
            try:
                m = evaluate_fixed(run.env, batches, tol)
            except SolverError as err:
                failures.append(f"seed {arm.seed} tol {tol:g}: {err}")
                continue
            front[tol].append({**m, "excess_bits_per_dim": m["bits_per_dim"] - ref["bits_per_dim"]})
        for policy, arms in groups.items():
            run_dir = arms[i].run_dir(ctx.runs_dir)
            m = evaluate_policy(run.env, batches, load_policy(run_dir, run.env))
            m["excess_bits_per_dim"] = m["bits_per_dim"] - ref["bits_per_dim"]
            records = [r for r in read_jsonl(run_dir / "metrics.jsonl") if "nfe_forward" in r]
            tail = records[-max(1, int(len(records) * LAST_FRACTION)):]
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


def study_samples(ctx: Context) -> dict:
    from sklearn.linear_model import LogisticRegression

    from flows import load_dataset

    cfg = ctx.config
    regime = cfg["regime"]
    groups = {(m, p): [digits_arm(ctx, m, p, regime, s) for s in ctx.seeds] for m, p in cfg["models"]}
    run_arms(ctx, [a for arms in groups.values() for a in arms])
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    classifier = LogisticRegression(max_iter=5000).fit(train.x.reshape(len(train), -1).numpy(), train.y.numpy())
    classifier_accuracy = float(classifier.score(test.x.reshape(len(test), -1).numpy(), test.y.numpy()))
    labels = torch.arange(10).repeat_interleave(cfg["per_class"])
    rows, grids = [], {}
    for (model_name, policy), arms in groups.items():
        per_seed = []
        for arm in arms:
            run = load_run(arm.run_dir(ctx.runs_dir))
            model = run.model
            x = model.sample(labels, tol=cfg["tol"], generator=torch.Generator().manual_seed(arm.seed))
            levels = (x.reshape(len(labels), -1).double() * train.num_levels - 0.5).clamp(0, train.num_levels - 1)
            predicted = classifier.predict(levels.numpy())
            with torch.no_grad():
                out = model(x.clamp(1e-4, 1 - 1e-4), labels, tol=cfg["tol"], generator=torch.Generator().manual_seed(0))
            per_seed.append({"sample_accuracy": float((predicted == labels.numpy()).mean()),
                             "self_consistency": float((out.predictions() == labels).float().mean())})
            grids.setdefault(f"{model_name}-{policy}", x.reshape(len(labels), -1).clamp(0, 1).numpy().round(3).tolist())
        rows.append({"model": model_name, "policy": policy, "batch": regime, "seeds": list(ctx.seeds),
                     **summarise(per_seed, ("sample_accuracy", "self_consistency")), "per_seed": per_seed})
    return {"rows": rows, "classifier_test_accuracy": classifier_accuracy, "per_class": cfg["per_class"],
            "image_shape": list(train.shape), "grids": grids}


@torch.no_grad()
def _latents(model: Any, data: Any, max_examples: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """z at the evaluation tolerance, the labels and the model's own predictions (dropout off)."""
    zs, ys, predictions = [], [], []
    for x, y in _batches(data, 500, max_examples):
        out = model(x.reshape(x.shape[0], *model.data_shape), y, tol=EVAL_TOL, generator=torch.Generator().manual_seed(0))
        zs.append(out.z)
        ys.append(y)
        predictions.append(out.predictions())
    return torch.cat(zs).double().numpy(), torch.cat(ys).numpy(), torch.cat(predictions).numpy()


def study_latent_probe(ctx: Context) -> dict:
    from sklearn.linear_model import LogisticRegression

    from flows import load_dataset

    cfg = ctx.config
    groups = {(m, r): [digits_arm(ctx, m, cfg["policy"], r, s) for s in ctx.seeds]
              for r in cfg["regimes"] for m in cfg["models"]}
    run_arms(ctx, [a for arms in groups.values() for a in arms])
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    rows = []
    for (model_name, regime), arms in groups.items():
        per_seed: dict[str, list[dict]] = {}
        for arm in arms:
            model = load_run(arm.run_dir(ctx.runs_dir)).model.eval()
            z_train, y_train, _ = _latents(model, train, cfg["max_train"])
            z_test, y_test, own = _latents(model, test, None)
            dim = z_train.shape[1]
            sup = round(cfg["sup_ratio"] * dim)
            if model_name == "infocnf" and model.head.sup_dim != sup:
                raise ValueError(f"{arm.run_dir(ctx.runs_dir).name}: z_y has {model.head.sup_dim} dims, "
                                 f"sup_ratio {cfg['sup_ratio']} gives {sup}")
            summary = json.loads((arm.run_dir(ctx.runs_dir) / "summary.json").read_text())
            records = {"own classifier": {"test_error": float((own != y_test).mean()),
                                          "bits_per_dim": summary["test"]["bits_per_dim"]}}
            for name, cols in (("probe z_y", slice(0, sup)), ("probe z_u", slice(sup, dim)), ("probe z", slice(0, dim))):
                probe = LogisticRegression(max_iter=5000).fit(z_train[:, cols], y_train)
                records[name] = {"test_error": float(1.0 - probe.score(z_test[:, cols], y_test))}
            for features, record in records.items():
                per_seed.setdefault(features, []).append(record)
        for features, records in per_seed.items():
            rows.append({"model": model_name, "policy": cfg["policy"], "batch": regime, "features": features,
                         "seeds": list(ctx.seeds), **summarise(records, ("test_error", "bits_per_dim")),
                         "per_seed": records})
    return {"rows": rows}


RUNNERS: dict[str, Callable[[Context], dict]] = {
    "digits-table": study_digits_table, "uncond": study_uncond, "tol-integral": study_tol_integral,
    "tol-hist": study_tol_hist, "curves": study_curves, "eval-batch": study_eval_batch,
    "policies": study_policies, "frozen": study_frozen, "samples": study_samples,
    "reinforce-ablation": study_reinforce_ablation, "latent-probe": study_latent_probe,
}


# ============================================================================ driver
def run_study(study: str, *, seeds: int | None = None, quick: bool = False, jobs: int = 1, threads: int = 1,
              workdir: str | Path | None = None, out: str | Path | None = None) -> dict:
    """Run one study and write ``OUT/STUDY.json`` and ``OUT/STUDY.png``; return the result."""
    if study not in RUNNERS:
        raise ValueError(f"unknown study {study!r}; valid: {', '.join(STUDIES)}")
    n_seeds = seeds if seeds is not None else (1 if quick else 3)
    if n_seeds < 1:
        raise ValueError("--seeds must be positive")
    workdir = Path(workdir or ("runs/reproduce__runs/quick" if quick else "runs/reproduce__runs")).resolve()
    out = Path(out or ("runs/results/quick" if quick else "runs/results"))
    ctx = Context(study, quick, tuple(range(n_seeds)), jobs, threads, workdir, out, load_config(study, quick),
                  digits_regimes(quick))
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    start = time.perf_counter()
    try:
        result = RUNNERS[study](ctx)
    finally:
        torch.set_num_threads(previous_threads)
    full = finite({"study": study, "quick": quick, "seeds": list(ctx.seeds), "config": ctx.config,
                    "regimes": {} if study == "tol-integral" else ctx.regimes, "workdir": str(workdir), **result,
                    "wall_s": time.perf_counter() - start})
    out.mkdir(parents=True, exist_ok=True)
    from runs.plots import plot

    png = out / f"{study}.png"
    plot(study, full, png)
    full["plots"] = [png.name]
    (out / f"{study}.json").write_text(json.dumps(full, indent=2))
    print(f"[{study}] wrote {out / (study + '.json')} and {png} ({full['wall_s']:.0f}s)", flush=True)
    return full


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", choices=[*STUDIES, "all"], help="study to run ('all': every study in order)")
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds 0..n-1 (default 3; 1 with --quick)")
    parser.add_argument("--quick", action="store_true", help="tiny smoke-test sizes (about a minute per study)")
    parser.add_argument("--jobs", type=int, default=1, help="training runs in parallel (subprocesses, 1 thread each)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of in-process training and analysis")
    parser.add_argument("--workdir", default=None,
                        help="run directories and logs (default runs/reproduce__runs[/quick])")
    parser.add_argument("--out", default=None, help="JSON and PNG folder (default runs/results[/quick])")
    args = parser.parse_args(argv)
    studies = STUDIES if args.study == "all" else (args.study,)
    results = {}
    for study in studies:
        results[study] = run_study(study, seeds=args.seeds, quick=args.quick, jobs=args.jobs, threads=args.threads,
                                   workdir=args.workdir, out=args.out)
    return results if args.study == "all" else results[args.study]


if __name__ == "__main__":
    main()
