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

``reg_weight`` is chosen by a sweep on seed 0 (``reg_sweep``): the largest weight whose test
bits/dim stays within ``reg_bpd_tol`` of the fixed arm's (same seed); the sweep's runs are
cached, so the chosen weight's seed-0 run is the ``regularised`` arm's. The regularizers
integrate ``||f||^2`` and ``||e^T df/dz||^2`` summed over all dimensions, beside a loss in bits
per dimension, so the sweep holds small weights.

Rows, each a mean over seeds against the ``fixed`` arm of the same seeds: ``nfe_ratio``
(training NFE per iteration, forward + backward), ``nfe_backward_ratio`` (its backward part),
``wall_ratio`` (training wall time: the last iteration's
``wall_time``, periodic evaluation off), ``bpd_ratio`` (test bits/dim at 1e-5),
``test_nfe_ratio`` (NFE of a test batch at 1e-5; warm-started arms start it from their
trained steps). ``targets`` checks the figures asked of these levers.

Cost (full): a training run per arm and seed, plus the sweep's runs; the committed result's
``wall_s`` (``runs/results/speed.json``) is the time of the run that wrote it (runs found in the
workdir's cache are not retrained). The same levers on the adjoint path are the
``speed-adjoint`` study (:mod:`runs.studies.speed_adjoint`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from runs import figures
from runs.aggregate import read_jsonl, run_metrics, summarise
from runs.format import apct, bullets, eval_tol, figure, pct, row, verdict
from runs.run_cache import Arm, Context, digits_arm, run_arms
from runs.studies.common import ratio
from runs.study import Finding, Page, Res, Study, stated
from runs.tables import cell

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

CONFIG = {
    "regime": "small",
    "arms": list(ARMS),
    "reg_weights": [1e-3, 3e-4, 1e-4],
    "reg_bpd_tol": 0.01,
    "error_weight": 1e5,
    "targets": {"combined_nfe_ratio": 0.4, "combined_wall_ratio": 0.45, "combined_bpd_tol": 0.01,
                "regularised_test_nfe_ratio": 0.7, "warm_nfe_forward_ratio": 0.6, "warm_bpd_tol": 0.001},
}
QUICK = {"reg_weights": [1e-3]}

#: Per-seed figures of one run (from its summary and its metrics.jsonl).
FIELDS = ("nfe", "nfe_forward", "nfe_backward", "wall", "bits_per_dim", "test_nfe", "test_error")


def _arm(ctx: Context, name: str, seed: int, reg_weight: float) -> Arm:
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


def run_figures(ctx: Context, arm: Arm, summary: dict) -> dict:
    """:data:`FIELDS` of one run: its :func:`run_metrics`, and the wall time of its training
    iterations alone (the last iteration's, before the final evaluation)."""
    records = [r for r in read_jsonl(arm.run_dir(ctx.runs_dir) / "metrics.jsonl") if "nfe_forward" in r]
    metrics = {**run_metrics(summary), "wall": records[-1]["wall_time"]}
    return {key: metrics[key] for key in FIELDS}


def _choose_weight(ctx: Context) -> tuple[float, list[dict]]:
    """The weight of :func:`choose_weight` over the sweep of ``reg_weights`` on seed 0 (its test
    bits/dim against fixed's; ``reg_weight_within_tol`` in the result says whether one was within)."""
    cfg, seed = ctx.config, ctx.seeds[0]
    fixed = _arm(ctx, "fixed", seed, 0.0)
    sweep = {w: _arm(ctx, "regularised", seed, w) for w in cfg["reg_weights"]}
    summaries = run_arms(ctx, [fixed, *sweep.values()])
    base = run_figures(ctx, fixed, summaries[fixed])
    rows = []
    for weight, arm in sweep.items():
        f = run_figures(ctx, arm, summaries[arm])
        rows.append({"reg_weight": weight, "seed": seed,
                     "bpd_ratio": ratio(f["bits_per_dim"], base["bits_per_dim"]),
                     "nfe_ratio": ratio(f["nfe"], base["nfe"]),
                     "test_nfe_ratio": ratio(f["test_nfe"], base["test_nfe"])})
    return choose_weight(rows, cfg["reg_bpd_tol"]), rows


def choose_weight(sweep: list[dict], tol: float) -> float:
    """The largest ``reg_weight`` of ``sweep`` whose ``bpd_ratio`` is within ``tol`` of 1 (the
    smallest swept weight if none is)."""
    ok = [r["reg_weight"] for r in sweep if abs(r["bpd_ratio"] - 1) <= tol]
    return max(ok) if ok else min(r["reg_weight"] for r in sweep)


def run(ctx: Context) -> dict:
    cfg = ctx.config
    weight, sweep = _choose_weight(ctx)
    within = any(r["reg_weight"] == weight and abs(r["bpd_ratio"] - 1) <= cfg["reg_bpd_tol"] for r in sweep)
    rows = regime_rows(ctx, cfg["arms"], lambda name, seed: _arm(ctx, name, seed, weight), cfg["regime"])
    return {"rows": rows, "reg_weight": weight, "reg_weight_within_tol": within, "reg_sweep": sweep,
            "targets": _targets(rows, cfg["targets"])}


def regime_rows(ctx: Context, names: list[str], make_arm: Callable[[str, int], Arm], regime: str) -> list[dict]:
    """Train the arms ``names`` (seed-major, so a seed's arms run side by side) and return one
    row per arm, labelled ``regime``: the mean over seeds of its ratios against the first arm of
    the same seed, its :data:`FIELDS` as mean ± std, its run directories and its per-seed figures."""
    arms = {(name, s): make_arm(name, s) for s in ctx.seeds for name in names}
    summaries = run_arms(ctx, list(arms.values()))
    per_seed = {key: run_figures(ctx, arm, summaries[arm]) for key, arm in arms.items()}
    base, rows = names[0], []
    for name in names:
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
        rows.append({"arm": name, "regime": regime, "baseline": base, **means,
                     "seeds": list(ctx.seeds), **summarise([per_seed[(name, s)] for s in ctx.seeds], FIELDS),
                     "run_dirs": [arms[(name, s)].run_dir(ctx.runs_dir).name for s in ctx.seeds],
                     "per_seed": [{**per_seed[(name, s)], **r} for s, r in zip(ctx.seeds, ratios, strict=True)]})
    return rows


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
    return {"thresholds": t, **out}


# ============================================================================ table, figure, results page
#: Columns of the study's table (:func:`runs.tables.table`): (header, row key or ``key_mean`` stem,
#: digits); a stem that has ``_mean`` / ``_std`` in the row prints as ``mean ± std``.
COLUMNS = [("arm", "arm", 0), ("train NFE / it", "nfe", 1), ("NFE vs fixed", "nfe_ratio", 3),
           ("wall vs fixed", "wall_ratio", 3), ("test bits/dim", "bits_per_dim", 4),
           ("bits/dim vs fixed", "bpd_ratio", 4), ("test NFE", "test_nfe", 1),
           ("test NFE vs fixed", "test_nfe_ratio", 3)]


def plot(result: dict, path: Path) -> None:
    bars(result, path, f"Levers on the cost (RNODE weight {result['reg_weight']:g})")


def bars(result: dict, path: Path, title: str) -> None:
    """One panel per ratio (training NFE, wall time, test NFE, bits/dim), a bar per arm with the
    spread over seeds, against the regime's first arm."""
    plt = figures.pyplot()
    rows = result["rows"]
    panels = [("nfe_ratio", "train NFE / it vs fixed", 1.0), ("wall_ratio", "train wall time vs fixed", 1.0),
              ("test_nfe_ratio", "test NFE @1e-5 vs fixed", 1.0), ("bpd_ratio", "test bits/dim vs fixed [%]", 100.0)]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    names = [r["arm"] for r in rows]
    for ax, (key, label, scale) in zip(axes[0], panels, strict=True):
        # ratios as bars from 1 (the fixed arm); bits/dim as a percentage difference from 0
        base = 1.0 if scale == 1.0 else 0.0
        per_seed = [[scale * (figures.num(p[key]) - 1.0) + base for p in r["per_seed"]] for r in rows]
        values = [float(np.mean(v)) for v in per_seed]
        spread = [float(np.std(v, ddof=1)) if len(v) > 1 else 0.0 for v in per_seed]
        ax.bar(range(len(rows)), [v - base for v in values], bottom=base, yerr=spread, capsize=3,
               color=[figures.COLOURS.get(n, "tab:gray") for n in names])
        ax.axhline(base, color="grey", lw=0.8, ls="--")
        ax.set_xticks(range(len(rows)), names, rotation=30, fontsize=8)
        ax.set_ylabel(label)
    fig.suptitle(figures.title(result, title))
    figures.save(fig, path)


def section(res: Res) -> str:
    d = res["speed"]
    cfg, t = d["config"], d["targets"]
    regime = d["regimes"][cfg["regime"]]
    fixed = row(d["rows"], arm="fixed")
    lines = ["| arm | train NFE / it | vs fixed | train wall vs fixed | test bits/dim | vs fixed | test NFE @1e-5 | "
             "vs fixed |", "|" + " --- |" * 8]
    for r in d["rows"]:
        lines.append(f"| {r['arm']} | {cell(r, 'nfe', 1)} | {r['nfe_ratio']:.3f}x | {r['wall_ratio']:.3f}x | "
                     f"{cell(r, 'bits_per_dim', 4)} | {pct(r['bpd_ratio'] - 1)} | {cell(r, 'test_nfe', 1)} | "
                     f"{r['test_nfe_ratio']:.3f}x |")

    th = t["thresholds"]
    sweep = ", ".join(f"{r['reg_weight']:g}: bits/dim {pct(r['bpd_ratio'] - 1)}, test NFE {r['test_nfe_ratio']:.2f}x"
                      for r in d["reg_sweep"])
    items = []
    if "warm" in t:
        w = t["warm"]
        items.append(f"Warm start alone: training forward NFE {w['nfe_forward_ratio']:.3f}x and test-pass NFE "
                     f"{w['test_nfe_ratio']:.3f}x of the heuristic start, bits/dim {pct(w['bpd_ratio'] - 1, 3)} "
                     f"(target: both at most {th['warm_nfe_forward_ratio']}x, bits/dim within "
                     f"{apct(th['warm_bpd_tol'], 1)}): {verdict(w['met'])}.")
    if "regularised" in t:
        r = t["regularised"]
        items.append(f"RNODE regularizers (weight {d['reg_weight']:g}): test NFE at 1e-5 {r['test_nfe_ratio']:.3f}x "
                     f"of the unregularised model (target at most {th['regularised_test_nfe_ratio']}x): "
                     f"{verdict(r['met'])}. The weight is the largest of the sweep on seed {d['reg_sweep'][0]['seed']} "
                     f"whose bits/dim stayed within {apct(cfg['reg_bpd_tol'], 0)} ({sweep}).")
    if "combined" in t:
        c = t["combined"]
        items.append(f"Warm start + regularizers + REINFORCE: training NFE {c['nfe_ratio']:.3f}x, wall time "
                     f"{c['wall_ratio']:.3f}x, bits/dim {pct(c['bpd_ratio'] - 1)} (target: at most "
                     f"{th['combined_nfe_ratio']}x and {th['combined_wall_ratio']}x, bits/dim within "
                     f"{apct(th['combined_bpd_tol'], 0)}): {verdict(c['met'])}.")
    if "regularised" in t and "combined" in t and "warm" in t:
        r, c = row(d["rows"], arm="regularised"), t["combined"]
        items.append(f"The RNODE regularizers alone save no training NFE here ({r['nfe_ratio']:.3f}x): the combined "
                     f"arm's {c['nfe_ratio']:.3f}x is the warm start's ({t['warm']['nfe_forward_ratio']:.3f}x forward) "
                     f"and the learned tolerances' ({row(d['rows'], arm='learned')['nfe_ratio']:.3f}x) together. Its "
                     f"test pass at 1e-5 starts from steps accepted at the looser learned tolerances, rescaled, so it "
                     f"saves less there than the warm start alone.")
    if any(r["arm"] == "error_reg" for r in d["rows"]):
        e = row(d["rows"], arm="error_reg")
        items.append(f"The solver-error regularizer (Pal et al. 2021, weight {cfg['error_weight']:g}) costs its probe "
                     f"steps: training NFE {e['nfe_ratio']:.3f}x, test NFE {e['test_nfe_ratio']:.3f}x, bits/dim "
                     f"{pct(e['bpd_ratio'] - 1)}; its probe evaluations are part of the training NFE.")
    parts = [figure("speed"), f"""\
InfoCNF on digits, batch {regime['batch_size']}, {regime['iterations']} iterations, {len(d['seeds'])} seeds; the \
arms of a seed trained side by side. Ratios are per seed against the fixed arm of the same seed, then averaged; \
training wall time is that of the training iterations (periodic evaluation off); test metrics at {eval_tol(res)} \
({fixed['test_nfe_mean']:.1f} NFE per test batch for the fixed arm).""" + (
        " The same levers on the adjoint path: [speed-adjoint](#speed-adjoint)." if "speed-adjoint" in res else ""),
        "\n".join(lines), bullets(items)]
    return "\n\n".join(parts)


STUDY = Study(
    name="speed",
    summary="warm starts, regularizers, learned tolerances, combined",
    config=CONFIG,
    quick=QUICK,
    row_keys=ROW_KEYS,
    run=run,
    columns=COLUMNS,
    plot=plot,
    page=Page("Faster than the paper: warm starts, easier dynamics, learned tolerances", order=130, render=section,
              needs=("speed",)),
    finding=Finding("What else makes solves cheaper?", order=50, also=("speed-adjoint",),
                    answer=stated("warm-started blocks, far more than learned tolerances; the two combine")),
)
