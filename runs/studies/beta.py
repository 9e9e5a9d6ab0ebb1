"""beta: does InfoCNF's accuracy gain over CCNF appear when the supervision weighs as on CIFAR10?

J = bits/dim + beta x cross-entropy (Eq. 4). Bits/dim is the negative log-likelihood in nats
divided by D ln 2, so the cross-entropy weighs beta x D x ln 2 times as much as the NLL per
example: 0.5 x 3072 x ln 2 = 1065 in the authors' CIFAR10 runs (``--weight_y 0.5``), but only
44 in the digits-table runs (beta 1, D = 64). This study trains CCNF and InfoCNF with the
authors' heads (``head_init="linear_zeros"``, Glow's LinearZeros q_theta / q_phi) at
beta from the paper's 0.5 up to 24, where beta x 64 x ln 2 = 1065 matches CIFAR10, 3 seeds each,
fixed tolerance 1e-5: four betas (0.5, 2, 6, 24) in the digits-table's small-batch regime, the
two ends (0.5, 24) in its large-batch regime.

Per run it reports the test error of the model's own classifier and test bits/dim at 1e-5,
and the test error of linear probes (scikit-learn logistic regression fitted on the training
latents at 1e-5) on z_y (the first ``sup_ratio`` of z; for CCNF the same slice, for reference)
and on all of z. The top-level ``pixel_probe_error`` is the same probe on the raw pixels
(levels scaled to [0, 1]): the ceiling a flow's linear read-out must beat to add anything.
``comparisons`` holds, per regime and beta, InfoCNF's test error over CCNF's.

Differences from the digits-table runs, all for the 2-core budget: the steps start warm
(``warm_start=True``, which halves the training NFE at the same bits/dim, see the ``speed``
study), and test metrics are computed once, at the end (no evaluation curve). The rest of the
authors' recipe (four-layer dynamics, learned end time) is left at the digits defaults, so
the heads and beta are the only changes against ``digits-table``.

Cost (full): 2 models x (4 + 2) betas x 3 seeds training runs, and the probes of each; the
committed result's ``wall_s`` (``runs/results/beta.json``) is the time of the run that wrote it
(runs found in the workdir's cache are not retrained).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from runs import figures
from runs.aggregate import summarise
from runs.format import bullets, figure, nums, pct, row, xs
from runs.run_cache import Context
from runs.studies.common import latents, probe_error, ratio, rel_diff, seed_arms, sup_size, train_groups
from runs.study import Page, Res, Study
from runs.tables import table

ROW_KEYS = ("model", "batch", "beta", "seeds", "test_error_mean", "test_error_std", "bits_per_dim_mean",
            "bits_per_dim_std", "zy_probe_error_mean", "zy_probe_error_std", "z_probe_error_mean",
            "z_probe_error_std", "supervision_ratio")
#: ``comparisons[].error_ratio`` is null where CCNF's test error is 0.
NULLABLE_KEYS = ("error_ratio",)

CONFIG = {
    "models": ["ccnf", "infocnf"],
    # regime -> betas: the paper's 0.5 up to CIFAR10's ratio; the large-batch regime runs the two
    # ends only (the 2-core budget)
    "betas": {"small": [0.5, 2.0, 6.0, 24.0], "large": [0.5, 24.0]},
    "env_kwargs": {"head_init": "linear_zeros", "warm_start": True},
    "sup_ratio": 0.5,
    "max_train": None,  # probe on all 1,497 training digits
}
QUICK = {"betas": {"small": [0.5, 24.0], "large": []}, "max_train": 200}


def supervision_ratio(beta: float, dim: int) -> float:
    """beta x D x ln 2: the cross-entropy's weight against the per-example NLL in nats (Eq. 4)."""
    return beta * dim * math.log(2)


def pixels(data: Any) -> tuple[np.ndarray, np.ndarray]:
    """The split's images flattened, levels scaled to [0, 1], and its labels."""
    x = data.x.reshape(len(data), -1).double().numpy()
    return x / max(1, (data.num_levels or 1) - 1), data.y.numpy()


def run(ctx: Context) -> dict:
    from agents.evaluate import load_run
    from flows import load_dataset

    cfg = ctx.config
    groups = {(m, r, b): seed_arms(ctx, m, "fixed", r, label=f"{m}-beta{b:g}-{r}", eval_every=0,
                                   extra_env={**cfg["env_kwargs"], "beta": b})
              for r, betas in cfg["betas"].items() for b in betas for m in cfg["models"]}
    summaries = train_groups(ctx, groups)
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    dim = int(np.prod(train.shape))
    rows = []
    for (model_name, regime, beta), arms in groups.items():
        per_seed = []
        for arm in arms:
            model = load_run(arm.run_dir(ctx.runs_dir)).model.eval()
            z_train, y_train, _ = latents(model, train, cfg["max_train"])
            z_test, y_test, _ = latents(model, test, None)
            sup = sup_size(model, model_name, z_train.shape[1], cfg["sup_ratio"], arm.run_dir(ctx.runs_dir).name)
            test_metrics = summaries[arm]["test"]
            per_seed.append({
                "test_error": test_metrics["error"], "bits_per_dim": test_metrics["bits_per_dim"],
                "nfe": summaries[arm]["train_nfe_mean"],
                "zy_probe_error": probe_error((z_train[:, :sup], y_train), (z_test[:, :sup], y_test)),
                "z_probe_error": probe_error((z_train, y_train), (z_test, y_test)),
            })
        rows.append({"model": model_name, "batch": regime, "beta": beta, "seeds": list(ctx.seeds),
                     "supervision_ratio": supervision_ratio(beta, dim),
                     **summarise(per_seed, ("test_error", "bits_per_dim", "zy_probe_error", "z_probe_error", "nfe")),
                     "run_dirs": [a.run_dir(ctx.runs_dir).name for a in arms], "per_seed": per_seed})
    x_train, y_train = pixels(train)
    if cfg["max_train"] is not None:
        x_train, y_train = x_train[: cfg["max_train"]], y_train[: cfg["max_train"]]
    return {"rows": rows, "comparisons": comparisons(rows), "pixel_probe_error": probe_error((x_train, y_train),
                                                                                             pixels(test)),
            "cifar10_supervision_ratio": supervision_ratio(0.5, 3 * 32 * 32)}


def comparisons(rows: list[dict]) -> list[dict]:
    """Per regime and beta: InfoCNF's test error over CCNF's, and the bits/dim difference."""
    find = {(r["model"], r["batch"], r["beta"]): r for r in rows}
    out = []
    for (model, batch, beta), info in find.items():
        ccnf = find.get(("ccnf", batch, beta))
        if model != "infocnf" or ccnf is None:
            continue
        out.append({"batch": batch, "beta": beta,
                    "error_ratio": ratio(info["test_error_mean"], ccnf["test_error_mean"]),
                    "error_diff": info["test_error_mean"] - ccnf["test_error_mean"],
                    "bits_per_dim_rel_diff": rel_diff(info["bits_per_dim_mean"], ccnf["bits_per_dim_mean"])})
    return out


# ============================================================================ table, figure, results page
#: Columns of the study's table (:func:`runs.tables.table`): (header, row key or ``key_mean`` stem,
#: digits); a stem that has ``_mean`` / ``_std`` in the row prints as ``mean ± std``.
COLUMNS = [("model", "model", 0), ("batch", "batch", 0), ("beta", "beta", 1),
           ("β·D·ln 2", "supervision_ratio", 0), ("test error", "test_error", 3),
           ("probe z_y", "zy_probe_error", 3), ("probe z", "z_probe_error", 3),
           ("bits/dim", "bits_per_dim", 4)]


def plot(result: dict, path: Path) -> None:
    """Per regime: test error (own classifier, solid; probe on z_y, dashed) and bits/dim against
    beta for CCNF and InfoCNF, with the raw-pixel probe as the ceiling."""
    plt = figures.pyplot()
    rows = result["rows"]
    regimes = list(dict.fromkeys(r["batch"] for r in rows))
    fig, axes = plt.subplots(2, len(regimes), figsize=(5.0 * len(regimes), 6.5), squeeze=False)
    for col, regime in enumerate(regimes):
        err_ax, bpd_ax = axes[0][col], axes[1][col]
        for model in dict.fromkeys(r["model"] for r in rows):
            sel = sorted((r for r in rows if r["batch"] == regime and r["model"] == model), key=lambda r: r["beta"])
            betas = [r["beta"] for r in sel]
            colour = figures.COLOURS.get(f"{model}-fixed")
            name = {"ccnf": "CCNF", "infocnf": "InfoCNF"}.get(model, model)
            err_ax.errorbar(betas, [figures.num(r["test_error_mean"]) for r in sel],
                            [figures.num(r["test_error_std"]) for r in sel], color=colour, marker="o", capsize=3,
                            label=f"{name}: own classifier")
            err_ax.plot(betas, [figures.num(r["zy_probe_error_mean"]) for r in sel], color=colour, ls="--", marker="x",
                        label=f"{name}: probe on z_y")
            bpd_ax.errorbar(betas, [figures.num(r["bits_per_dim_mean"]) for r in sel],
                            [figures.num(r["bits_per_dim_std"]) for r in sel], color=colour, marker="o", capsize=3,
                            label=name)
        err_ax.axhline(figures.num(result["pixel_probe_error"]), color="grey", ls=":", label="probe on raw pixels")
        for ax, label in ((err_ax, "test error"), (bpd_ax, "test bits/dim @1e-5")):
            ax.set_xscale("log")
            ax.set_xlabel("beta (cross-entropy weight)")
            ax.set_ylabel(label)
        err_ax.set_title(f"{regime} batch", fontsize=9)
    axes[0][0].legend(fontsize=6)
    axes[1][0].legend(fontsize=6)
    fig.suptitle(figures.title(result, "InfoCNF vs CCNF against the supervision weight beta (authors' heads)"))
    figures.save(fig, path)


def section(res: Res) -> str:
    d = res["beta"]
    rows = d["rows"]
    regimes = list(dict.fromkeys(r["batch"] for r in rows))
    betas = sorted({r["beta"] for r in rows})
    pixel = d["pixel_probe_error"]

    def r(model: str, batch: str, b: float) -> dict:
        return row(rows, model=model, batch=batch, beta=b)

    def err(model: str, batch: str, b: float) -> str:
        x = r(model, batch, b)
        return f"{x['test_error_mean']:.3f} ± {x['test_error_std']:.3f}"

    top = betas[-1]
    shown = "; ".join(f"{', '.join(f'{b:g}' for b in sorted({x['beta'] for x in rows if x['batch'] == batch}))} "
                      f"({batch} batch)" for batch in regimes)
    gap = []
    for batch in regimes:
        comps = sorted((c for c in d["comparisons"] if c["batch"] == batch), key=lambda c: c["beta"])
        batch_betas, ratios = [c["beta"] for c in comps], [c["error_ratio"] for c in comps]
        info, ccnf = r("infocnf", batch, top), r("ccnf", batch, top)
        closed = info["test_error_mean"] <= ccnf["test_error_mean"]
        within = abs(info["test_error_mean"] - ccnf["test_error_mean"]) <= max(info["test_error_std"],
                                                                                ccnf["test_error_std"])
        verdict = ("InfoCNF is ahead" if closed else "InfoCNF is still behind") + (
            ", within one standard deviation" if within else "")
        gap.append(f"**{batch} batch**: InfoCNF's test error over CCNF's is "
                   f"{xs([x if x is not None else float('nan') for x in ratios])} at beta "
                   f"{', '.join(f'{b:g}' for b in batch_betas)}; at "
                   f"beta {top:g} (CIFAR10's ratio) {verdict}: {err('infocnf', batch, top)} vs "
                   f"{err('ccnf', batch, top)}.")
    own = [(x["test_error_mean"], x["model"], x["batch"], x["beta"]) for x in rows]
    below = [o for o in own if o[0] < pixel]
    best = min(own)
    zy_best = min(x["zy_probe_error_mean"] for x in rows if x["model"] == "infocnf")
    ceiling = (f"**The ceiling.** A logistic regression on the raw pixels errs {pixel:.3f}. "
               + (f"No model's own classifier gets below it (best: {best[1]}, {best[2]} batch, beta {best[3]:g}: "
                  f"{best[0]:.3f}), and no probe on InfoCNF's z_y does either (best {zy_best:.3f})"
                  if not below else
                  f"{len(below)} of {len(own)} configurations' own classifiers get below it, all at beta "
                  f"{min(o[3] for o in below):g} or more (best: {best[1]}, {best[2]} batch, beta {best[3]:g}: "
                  f"{best[0]:.3f}); the best probe on InfoCNF's z_y errs {zy_best:.3f}")
               + (": on digits the flows' linear read-out has little or no room to improve on the pixels, so an "
                  "accuracy gain of InfoCNF over CCNF has little room to show." if not below else
                  ": stronger supervision, for CCNF as for InfoCNF, is what moves the flows' error below the "
                  "pixel ceiling."))
    ccnf_rows = [x for x in rows if x["model"] == "ccnf"]
    pairs = [(r("infocnf", x["batch"], x["beta"])["zy_probe_error_mean"], x["zy_probe_error_mean"]) for x in ccnf_rows]
    misses = [f"{x['batch']} batch, beta {x['beta']:g}" for x, (i, c) in zip(ccnf_rows, pairs, strict=True) if i >= c]
    partition = (f"**Where the class sits.** A probe on InfoCNF's z_y errs less than one on the same slice of CCNF's z "
                 f"in {sum(i < c for i, c in pairs)} of {len(pairs)} (batch, beta) pairs "
                 f"({nums([i for i, _ in pairs], 3)} vs {nums([c for _, c in pairs], 3)}): the partition gathers the "
                 "class in z_y, as Section 3.1 intends" + (f", except with {', '.join(misses)}." if misses else "."))
    cost = []
    for model in ("ccnf", "infocnf"):
        parts = [f"{pct(r(model, b, top)['bits_per_dim_mean'] / r(model, b, betas[0])['bits_per_dim_mean'] - 1, 1)}"
                 f" ({b} batch)" for b in regimes]
        cost.append(f"{ {'ccnf': 'CCNF', 'infocnf': 'InfoCNF'}[model]} {', '.join(parts)}")
    bpd = (f"**What the supervision costs in likelihood**: test bits/dim at beta {top:g} against beta "
           f"{betas[0]:g}: {'; '.join(cost)}.")
    per_unit_beta = rows[0]["supervision_ratio"] / rows[0]["beta"]  # D ln 2 of digits
    return "\n\n".join([figure("beta"), table(d, "beta"), f"""\
J = bits/dim + beta x cross-entropy (Eq. 4). Bits/dim is the negative log-likelihood divided by D ln 2, so per
example the cross-entropy weighs beta x D x ln 2 times the NLL in nats: {d['cifar10_supervision_ratio']:.0f} in the
authors' CIFAR10 runs (beta 0.5, D = 3072), {per_unit_beta:.0f} in the digits-table runs (beta 1, D = 64).
CCNF and InfoCNF with the authors' heads (`head_init="linear_zeros"`) are trained at beta {shown}
(the largest matches CIFAR10's ratio on digits), {len(d['seeds'])} seeds, fixed
tolerance 1e-5 with warm-started steps (which leaves bits/dim unchanged, see [`speed`](#speed)); the other
choices are the digits ids' (three-layer dynamics, fixed end time). "probe z_y" / "probe z" are logistic
regressions fitted on the training latents at 1e-5 (for CCNF, z_y is the same slice of z).""", bullets(
        [*gap, ceiling, partition, bpd])])


STUDY = Study(
    name="beta",
    summary="InfoCNF vs CCNF (authors' heads) as beta grows to CIFAR10's supervision ratio",
    config=CONFIG,
    quick=QUICK,
    row_keys=ROW_KEYS,
    run=run,
    columns=COLUMNS,
    plot=plot,
    page=Page("InfoCNF vs CCNF as the supervision weighs as on CIFAR10", order=30, render=section, needs=("beta",)),
    nullable_keys=NULLABLE_KEYS,
)
