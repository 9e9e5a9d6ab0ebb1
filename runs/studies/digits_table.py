"""digits-table: the analogue of Tables 1 and 2 on the bundled 8x8 digits.

CCNF with fixed tolerance 1e-5, InfoCNF with fixed tolerance 1e-5 and InfoCNF with learned
tolerances (REINFORCE gates, ``agents.reinforce`` defaults) in two regimes:

* ``small``: the registered ``*-Digits-v0`` recipe, batch 128, Adam lr 2e-3.
* ``large``: batch 499 (a third of the 1,497 training images: 3 batches per epoch, none
  dropped; 3.9x the small batch) with the learning rate scaled by the same factor, 3.9x to
  7.8e-3. The paper goes from batch 900 / lr 1e-3 to batch 8,000 / lr 1e-2 on CIFAR10
  (Section 4.1): lr x10 for batch x8.9, the linear scaling rule it cites. A literal 10x
  (lr 2e-2) is not among the committed runs; set ``"lr": 2e-2`` in
  :data:`runs.matrix.REGIMES` to run it.

The regimes (and their ``--quick`` versions) live in :mod:`runs.matrix`, shared with every
study that trains a digits flow.

Budget: every arm of a regime trains for the same number of iterations. Across regimes the
budget is the same number of *epochs* (examples seen), as in the paper (400 epochs for both
batch sizes): 300 iterations of 128 = 77 iterations of 499 = 25.7 epochs. (Equal iterations
would make the large-batch arms 3.9x as expensive.) The learning
rate drops 10x at the paper's point of training: 62.5% for small batches (epoch 250 of 400),
30% for large batches (epoch 120 of 400).

Columns: test error, test bits/dim (conditional and marginal) at tol 1e-5, training NFE per
iteration (forward + backward, averaged over training), wall time. Test metrics are also
logged every ``eval_every`` iterations for the ``curves`` study.

Cost (full): 9 runs of each regime (3 arms x 3 seeds); each run's time is its ``wall_s`` in the
result's rows (``runs/results/digits-table.json``), the whole study's the top-level ``wall_s``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from runs import figures
from runs.format import (
    apct,
    bullets,
    eval_tol,
    figure,
    per_seed,
    rel_pct,
    rng,
    row,
    share,
    tol10,
    upper_bound,
    within_std,
    xs,
)
from runs.matrix import DIGITS_TRAIN_SIZE
from runs.run_cache import Context
from runs.studies.common import ratio, rel_diff, run_row, seed_arms, train_groups
from runs.study import Finding, Page, Res, Study, stated
from runs.tables import table

ROW_KEYS = ("model", "policy", "batch", "seeds", "test_error_mean", "test_error_std", "bits_per_dim_mean",
            "bits_per_dim_std", "marginal_bits_per_dim_mean", "marginal_bits_per_dim_std", "nfe_mean", "nfe_std",
            "wall_s_mean", "wall_s_std")

CONFIG = {
    "arms": [["ccnf", "fixed"], ["infocnf", "fixed"], ["infocnf", "reinforce"]],
    "regimes": ["small", "large"],
    # Targets: learned NFE <= 0.70x fixed at bits/dim within 1%;
    # InfoCNF error <= 0.9x CCNF's at bits/dim within 2%.
    "targets": {"nfe_ratio": 0.70, "nfe_bpd_tol": 0.01, "error_ratio": 0.9, "error_bpd_tol": 0.02},
}

QUICK: dict = {}


def run(ctx: Context) -> dict:
    cfg = ctx.config
    groups = {(m, p, r): seed_arms(ctx, m, p, r) for r in cfg["regimes"] for m, p in cfg["arms"]}
    summaries = train_groups(ctx, groups)
    rows = []
    for (model, policy, regime), arms in groups.items():
        r = ctx.regimes[regime]
        rows.append({
            "model": model, "policy": policy, "batch": regime, "batch_size": r["batch_size"], "lr": r["lr"],
            "iterations": r["iterations"], "epochs": r["iterations"] * r["batch_size"] / DIGITS_TRAIN_SIZE,
            **run_row(ctx, arms, summaries),
        })
    return {"rows": rows, "targets": target_checks(rows, cfg)}


def target_checks(rows: list[dict], cfg: dict) -> list[dict]:
    """The targets, per regime: learned vs fixed NFE at equal bits/dim; InfoCNF vs CCNF error."""
    t = cfg["targets"]
    find = {(r["model"], r["policy"], r["batch"]): r for r in rows}
    out = []
    for regime in cfg["regimes"]:
        fixed, learned = find.get(("infocnf", "fixed", regime)), find.get(("infocnf", "reinforce", regime))
        ccnf = find.get(("ccnf", "fixed", regime))
        entry: dict[str, Any] = {"batch": regime}
        if fixed and learned:
            nfe_ratio = ratio(learned["nfe_mean"], fixed["nfe_mean"])
            bpd = rel_diff(learned["bits_per_dim_mean"], fixed["bits_per_dim_mean"])
            entry.update(nfe_ratio=nfe_ratio, nfe_ratio_target=t["nfe_ratio"], learned_bits_per_dim_rel_diff=bpd,
                         nfe_target_met=bool(nfe_ratio <= t["nfe_ratio"] and abs(bpd) <= t["nfe_bpd_tol"]))
        if fixed and ccnf:
            err_ratio = ratio(fixed["test_error_mean"], ccnf["test_error_mean"])
            bpd = rel_diff(fixed["bits_per_dim_mean"], ccnf["bits_per_dim_mean"])
            entry.update(error_ratio=err_ratio, error_ratio_target=t["error_ratio"],
                         infocnf_bits_per_dim_rel_diff=bpd,
                         error_target_met=bool(err_ratio <= t["error_ratio"] and abs(bpd) <= t["error_bpd_tol"]))
            if learned:
                entry["error_ratio_learned"] = ratio(learned["test_error_mean"], ccnf["test_error_mean"])
        out.append(entry)
    return out


# ============================================================================ table, figure, results page
#: Columns of the study's table (:func:`runs.tables.table`): (header, row key or ``key_mean`` stem,
#: digits); a stem that has ``_mean`` / ``_std`` in the row prints as ``mean ± std``.
COLUMNS = [("model", "model", 0), ("tolerance", "policy", 0), ("batch", "batch", 0),
           ("test error", "test_error", 3), ("bits/dim", "bits_per_dim", 4),
           ("marginal bits/dim", "marginal_bits_per_dim", 4), ("train NFE / it", "nfe", 1),
           ("wall s", "wall_s", 0)]


def plot(result: dict, path: Path) -> None:
    plt = figures.pyplot()
    rows = result["rows"]
    groups = list(dict.fromkeys(r["batch"] for r in rows))
    panels = [("test_error", "test error"), ("bits_per_dim", "test bits/dim @1e-5"),
              ("marginal_bits_per_dim", "test marginal bits/dim"), ("nfe", "train NFE / iteration (f+b)"),
              ("wall_s", "wall time [s]")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.8))
    for ax, (key, label) in zip(axes, panels, strict=True):
        figures.bars(ax, rows, key, groups, label)
    axes[0].legend(fontsize=7)
    fig.suptitle(figures.title(result, "Digits analogue of Tables 1-2"))
    figures.save(fig, path)


def targets(result: dict) -> str:
    """The target checks (learned NFE, InfoCNF error), one line per regime: the lines under the table."""
    out = []
    for t in result.get("targets", []):
        parts = [f"{t['batch']} batch:"]
        if "nfe_ratio" in t:
            parts.append(f"learned NFE {_num(t['nfe_ratio'], 3)}x fixed (target {t['nfe_ratio_target']}), "
                         f"bits/dim {rel_pct(t['learned_bits_per_dim_rel_diff'])} -> "
                         f"{'met' if t['nfe_target_met'] else 'not met'};")
        if "error_ratio" in t:
            parts.append(f"InfoCNF error {_num(t['error_ratio'], 3)}x CCNF (target {t['error_ratio_target']}), "
                         f"bits/dim {rel_pct(t['infocnf_bits_per_dim_rel_diff'])} -> "
                         f"{'met' if t['error_target_met'] else 'not met'}")
        out.append("- " + " ".join(parts))
    return "\n".join(out)


def _num(value: float | None, digits: int) -> str:
    return "nan" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def section(res: Res) -> str:
    d = res["digits-table"]
    rows, cfg = d["rows"], d["config"]["targets"]
    t = {x["batch"]: x for x in d["targets"]}
    learned = {b: row(rows, model="infocnf", policy="reinforce", batch=b) for b in ("small", "large")}
    fixed = {b: row(rows, model="infocnf", policy="fixed", batch=b) for b in ("small", "large")}
    ccnf = {b: row(rows, model="ccnf", policy="fixed", batch=b) for b in ("small", "large")}
    seed_ratios = [a / b for a, b in zip(per_seed(learned["small"], "nfe"), per_seed(fixed["small"], "nfe"),
                                         strict=True)]
    walls = {b: learned[b]["wall_s_mean"] / fixed[b]["wall_s_mean"] for b in ("small", "large")}
    bpd = max(abs(t[b]["learned_bits_per_dim_rel_diff"]) for b in t)
    met = [b for b in ("large", "small") if t[b]["nfe_target_met"]]
    missed = [b for b in ("large", "small") if not t[b]["nfe_target_met"]]
    verdict = (f"is met with {' and '.join(met) or 'no'} batches" + (f" and missed with {' and '.join(missed)} ones"
                                                                      if missed else ""))
    tols = per_seed(learned["small"], "log10_tol_last")
    ub = upper_bound(res)
    floor = ""
    if ub is not None:
        f12 = row(res["reinforce-ablation"]["rows"], variant="fixed 1e-2")
        floor = (f" Fixed {tol10(ub)}, the bound itself, costs {f12['nfe_ratio_vs_fixed']:.3f}x, so "
                 f"{cfg['nfe_ratio']:.2f}x is about the best any policy inside the default bounds can do "
                 "([`reinforce-ablation`](#reinforce-ablation)).")
    small_within = within_std(fixed["small"], ccnf["small"], "test_error")
    rel = [t[b]["infocnf_bits_per_dim_rel_diff"] for b in t]
    probe = ""
    if "latent-probe" in res and "samples" in res:
        lp = res["latent-probe"]
        dims = math.prod(res["samples"]["image_shape"])
        probe = (f" The classifier of InfoCNF sees {share(lp['config']['sup_ratio'])} of z "
                 f"(z_y, {round(lp['config']['sup_ratio'] * dims)} of {dims} dimensions) and its large-batch runs are "
                 f"short ({d['regimes']['large']['iterations']} iterations); at this scale the split costs accuracy "
                 "rather than helping ([`latent-probe`](#latent-probe) shows where the class sits in z and what "
                 "twice the epochs changes).")
    err_met = any(t[b]["error_target_met"] for b in t)
    bpd_rng = {b: [r["bits_per_dim_mean"] for r in rows if r["batch"] == b] for b in ("small", "large")}
    return "\n\n".join([figure("digits-table"), table(d, "digits-table"), targets(d), "What holds and what does not:",
                        bullets([
        f"**Learned tolerances cut training NFE at no cost in test bits/dim**: "
        f"{t['small']['nfe_ratio']:.2f}x the fixed-{eval_tol(res)} arm with small batches (per seed "
        f"{xs(seed_ratios)}), {t['large']['nfe_ratio']:.2f}x with large batches, test bits/dim equal to "
        f"{apct(bpd)}. Wall time drops with it ({walls['small']:.2f}x small, {walls['large']:.2f}x large). "
        f"The target (NFE <= {cfg['nfe_ratio']}x at bits/dim within {cfg['nfe_bpd_tol']:.0%}) {verdict}. "
        f"The gates end below the upper bound (final mean log10 tol {rng(tols, 2, ' to ')} with small batches"
        + (f", against the bound {ub:.0f})." if ub is not None else ").") + floor,
        f"**InfoCNF does not beat CCNF here.** The paper's InfoCNF has lower test error than CCNF at similar "
        f"bits/dim. On digits, InfoCNF's error is {t['small']['error_ratio']:.2f}x CCNF's with small batches "
        f"({fixed['small']['test_error_mean']:.3f} vs {ccnf['small']['test_error_mean']:.3f}"
        + (", within one std" if small_within else "")
        + f") and {t['large']['error_ratio']:.1f}x with large batches ({fixed['large']['test_error_mean']:.3f} vs "
        f"{ccnf['large']['test_error_mean']:.3f}), and its bits/dim are {rng([100 * r for r in rel], 2)}% worse."
        + probe + f" Target (error <= {cfg['error_ratio']}x at bits/dim within {cfg['error_bpd_tol']:.0%}) "
        + ("met." if err_met else "not met."),
        f"The large-batch, large-learning-rate regime is worse than the small-batch one for every arm "
        f"({rng(bpd_rng['large'], 2)} vs {rng(bpd_rng['small'], 2)} bits/dim) at equal epochs, as in the paper "
        "(Table 1's large-batch rows are worse too); the paper's literal learning-rate scaling diverged here "
        "(see `runs/studies/digits_table.py`)."
        if max(bpd_rng["small"]) < min(bpd_rng["large"]) else "",
    ])])


STUDY = Study(
    name="digits-table",
    summary="Tables 1-2: CCNF / InfoCNF fixed 1e-5 / InfoCNF learned, small + large batch",
    config=CONFIG,
    quick=QUICK,
    row_keys=ROW_KEYS,
    run=run,
    columns=COLUMNS,
    plot=plot,
    page=Page("Tables 1-2 analogue", order=10, render=section, needs=("digits-table", "eval-batch")),
    table_notes=targets,
    finding=Finding("Does InfoCNF beat CCNF?", order=20, also=("beta",),
                    answer=stated("not at the digits ids' beta; with the authors' weighting, an edge within one "
                                  "standard deviation")),
)
