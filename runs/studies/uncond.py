"""uncond: unconditional CNF with vs without learned tolerances (paper Fig. 4, Section 4.4).

``CNF-Digits-v0`` (N(0, I) prior, no classifier) trained in the ``small`` digits regime with
fixed tolerance 1e-5 and with REINFORCE gates; test bits/dim at 1e-5 and training NFE per
iteration, as final numbers (mean ± std over seeds) and as curves over training. The paper
reports equal NLLs (3.37 bits/dim on CIFAR10) and 15% fewer NFEs with learned tolerances.

Cost (full): a training run per arm and seed; the committed result's ``wall_s``
(``runs/results/uncond.json``) is the time of the run that wrote it (runs found in the workdir's
cache are not retrained).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from runs import figures
from runs.format import apct, eval_tol, figure, per_seed, row, within_std, xs
from runs.run_cache import Context
from runs.studies.common import curve_rows, ratio, rel_diff, run_row, seed_arms, train_groups
from runs.study import Page, Res, Study
from runs.tables import table

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


# ============================================================================ table, figure, results page
#: Columns of the study's table (:func:`runs.tables.table`): (header, row key or ``key_mean`` stem,
#: digits); a stem that has ``_mean`` / ``_std`` in the row prints as ``mean ± std``.
COLUMNS = [("model", "model", 0), ("tolerance", "policy", 0), ("bits/dim", "bits_per_dim", 4),
           ("train NFE / it", "nfe", 1), ("wall s", "wall_s", 0)]


def plot(result: dict, path: Path) -> None:
    plt = figures.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    finals = {r["policy"]: r for r in result["rows"]}
    for entry in result["curves"]:
        final = finals.get(entry["policy"], {})
        arm = figures.arm_name(entry)
        label = (f"{figures.NAMES.get(arm, arm)}: {figures.num(final.get('bits_per_dim_mean')):.3f} bits/dim, "
                 f"{figures.num(final.get('nfe_mean')):.0f} NFE")
        figures.curve(axes[0], entry, "bits_per_dim", figures.COLOURS.get(figures.arm_name(entry)), label)
        figures.curve(axes[1], entry, "nfe", figures.COLOURS.get(figures.arm_name(entry)), label)
    axes[0].set_ylabel("test bits/dim @1e-5")
    axes[1].set_ylabel("train NFE / iteration (f+b)")
    for ax in axes:
        ax.set_xlabel("epoch")
    axes[0].legend(fontsize=7)
    fig.suptitle(figures.title(result, "Unconditional CNF with / without learned tolerances (Fig. 4 analogue)"))
    figures.save(fig, path)


def section(res: Res) -> str:
    d = res["uncond"]
    fixed, learned = row(d["rows"], policy="fixed"), row(d["rows"], policy="reinforce")
    ratios = [a / b for a, b in zip(per_seed(learned, "nfe"), per_seed(fixed, "nfe"), strict=True)]
    within = within_std(learned, fixed, "bits_per_dim")
    return "\n\n".join([figure("uncond"), table(d, "uncond"), f"""\
The paper's Fig. 4 effect holds: the learned tolerances train the unconditional CNF at
{d['nfe_ratio']:.2f}x the NFE of fixed {eval_tol(res)} (per seed {xs(ratios)}) with test bits/dim \
{apct(d['bits_per_dim_rel_diff'])} {'worse' if d['bits_per_dim_rel_diff'] > 0 else 'better'}""" + (
        " (within one std)." if within else ".")])


STUDY = Study(
    name="uncond",
    summary="Fig. 4: unconditional CNF with vs without learned tolerances",
    config=CONFIG,
    quick=QUICK,
    row_keys=ROW_KEYS,
    run=run,
    columns=COLUMNS,
    plot=plot,
    page=Page("Unconditional CNF with vs without learned tolerances, Fig. 4 analogue", order=90, render=section,
              needs=("uncond",)),
)
