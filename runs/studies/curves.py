"""curves: test error, test bits/dim and NFE over training (Fig. 3).

The three models of ``digits-table`` (CCNF, InfoCNF fixed 1e-5, InfoCNF learned) in both
regimes, from their ``eval.jsonl`` (test metrics at tol 1e-5 every ``eval_every`` iterations)
and ``metrics.jsonl`` (training NFE, forward + backward, averaged between evaluations).
Mean ± std over seeds against epochs (examples seen / 1,497).

Cost (full): nothing beyond the digits-table runs (trained on demand).
"""

from __future__ import annotations

from pathlib import Path

from runs import figures
from runs.format import eval_tol, figure, row
from runs.run_cache import Context
from runs.studies import load_config
from runs.studies.common import curve_rows, seed_arms, train_groups
from runs.study import Page, Res, Study

ROW_KEYS = ("model", "policy", "batch", "seeds", "epoch", "test_error_mean", "test_error_std",
            "bits_per_dim_mean", "bits_per_dim_std", "nfe_mean", "nfe_std")

CONFIG = {"table": "digits-table"}
QUICK: dict = {}


def run(ctx: Context) -> dict:
    table = load_config(ctx.config["table"], ctx.quick)
    ctx.config["digits_table"] = table
    groups = {(m, p, r): seed_arms(ctx, m, p, r) for r in table["regimes"] for m, p in table["arms"]}
    train_groups(ctx, groups)
    return {"rows": curve_rows(ctx, groups)}


# ============================================================================ table, figure, results page


def plot(result: dict, path: Path) -> None:
    plt = figures.pyplot()
    rows = result["rows"]
    regimes = list(dict.fromkeys(r["batch"] for r in rows))
    panels = [("test_error", "test error"), ("bits_per_dim", "test bits/dim @1e-5"), ("nfe", "train NFE / it (f+b)")]
    fig, axes = plt.subplots(len(regimes), 3, figsize=(13, 3.6 * len(regimes)), squeeze=False)
    for i, regime in enumerate(regimes):
        for j, (key, label) in enumerate(panels):
            ax = axes[i][j]
            for entry in (r for r in rows if r["batch"] == regime):
                arm = figures.arm_name(entry)
                figures.curve(ax, entry, key, figures.COLOURS.get(arm), figures.NAMES.get(arm, arm))
            ax.set_xlabel("epoch")
            ax.set_ylabel(label)
            ax.set_title(f"{regime} batch")
        axes[i][0].legend(fontsize=7)
    fig.suptitle(figures.title(result, "Training curves (Fig. 3 analogue)"))
    figures.save(fig, path)


def section(res: Res) -> str:
    rows = res["curves"]["rows"]
    cuts, gaps, gaps_err, spread = [], [], [], {}
    for batch in ("small", "large"):
        learned = row(rows, model="infocnf", policy="reinforce", batch=batch)
        fixed = row(rows, model="infocnf", policy="fixed", batch=batch)
        cuts += [1 - a / b for a, b in zip(learned["nfe_mean"], fixed["nfe_mean"], strict=True)]
        gaps += [abs(a - b) for a, b in zip(learned["bits_per_dim_mean"], fixed["bits_per_dim_mean"], strict=True)]
        gaps_err += [abs(a - b) for a, b in zip(learned["test_error_mean"], fixed["test_error_mean"], strict=True)]
        spread[batch] = max(learned["nfe_std"])
    n_points = len(row(rows, model="infocnf", policy="reinforce", batch="small")["iteration"])
    return "\n\n".join([figure("curves"), f"""\
Test error and bits/dim of the learned-tolerance arm track the fixed-{eval_tol(res)} arm through training in
both regimes (at each of the {n_points} evaluations, bits/dim within {max(gaps):.4f} and error within \
{max(gaps_err):.3f}
of each other), while its training NFE stays {100 * min(cuts):.0f}-{100 * max(cuts):.0f}% lower at every evaluation
(the paper's Fig. 3). The NFE of the learned arm varies more across seeds with small batches
(std up to {spread['small']:.1f} NFE per iteration, against {spread['large']:.1f} with large batches)."""])


STUDY = Study(
    name="curves",
    summary="Fig. 3: test error, test bits/dim and NFE over training",
    config=CONFIG,
    quick=QUICK,
    row_keys=ROW_KEYS,
    run=run,
    plot=plot,
    page=Page("Training curves, Fig. 3 analogue", order=40, render=section, needs=("curves",)),
)
