"""Plots of the ``runs.reproduce`` studies, drawn from their JSON alone, and of run directories.

    python -m runs.plots runs/results/digits-table.json [--out PNG]
    python -m runs.plots RUN_DIR [--out PNG]                 # RUN_DIR/curves.png
    python -m runs.plots --compare RUN_DIR RUN_DIR [--out PNG]

A run directory (what ``agents.*`` write) gets its training curves: loss, bits/dim, NFE,
per-block tolerances (:mod:`runs.run_curves`).

Every study's figure is a function of its result dict (see :data:`PLOTTERS`), so a figure
can be redrawn from the JSON without rerunning anything. Matplotlib with the Agg backend.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

#: Colours per arm, kept across figures.
COLOURS = {"ccnf-fixed": "tab:gray", "infocnf-fixed": "tab:blue", "infocnf-reinforce": "tab:red",
           "cnf-fixed": "tab:blue", "cnf-reinforce": "tab:red", "fixed": "tab:blue", "reinforce": "tab:red",
           "ppo": "tab:green", "sac": "tab:purple", "a2c": "tab:orange", "a2c-normadv": "tab:olive",
           "td3": "tab:brown",
           "train": "tab:blue", "test": "tab:orange", "training_log": "tab:gray",
           "learned": "tab:red", "warm": "tab:green", "regularised": "tab:purple", "error_reg": "tab:pink",
           "combined": "tab:olive"}
NAMES = {"ccnf-fixed": "CCNF (tol 1e-5)", "infocnf-fixed": "InfoCNF fixed tol 1e-5",
         "infocnf-reinforce": "InfoCNF learned tol", "cnf-fixed": "CNF fixed tol 1e-5",
         "cnf-reinforce": "CNF learned tol"}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _f(value: Any) -> float:
    return float("nan") if value is None else float(value)


def _arr(values: list | None) -> np.ndarray:
    return np.array([_f(v) for v in (values or [])], dtype=np.float64)


def _arm(row: dict) -> str:
    return f"{row['model']}-{row['policy']}"


def _title(result: dict, text: str) -> str:
    seeds = len(result.get("seeds", []))
    return f"{text} ({seeds} seed{'s' if seeds != 1 else ''}{', QUICK smoke settings' if result.get('quick') else ''})"


def _save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)


def _bars(ax: Any, rows: list[dict], key: str, groups: list[str], label: str, group_key: str = "batch") -> None:
    """Bars of ``key`` (mean ± std), one per arm, side by side within each ``group_key`` value."""
    arms = list(dict.fromkeys(_arm(r) for r in rows))
    width = 0.8 / max(1, len(arms))
    for i, arm in enumerate(arms):
        xs, means, stds = [], [], []
        for j, group in enumerate(groups):
            row = next((r for r in rows if _arm(r) == arm and r[group_key] == group), None)
            if row is None or f"{key}_mean" not in row:
                continue
            xs.append(j + (i - (len(arms) - 1) / 2) * width)
            means.append(_f(row[f"{key}_mean"]))
            stds.append(_f(row[f"{key}_std"]))
        ax.bar(xs, means, width, yerr=stds, capsize=3, color=COLOURS.get(arm), label=NAMES.get(arm, arm))
    ax.set_xticks(range(len(groups)), [f"{g} batch" if group_key == "batch" else g for g in groups],
                  fontsize=None if group_key == "batch" else 8)
    ax.set_ylabel(label)
    finite = [_f(r.get(f"{key}_mean")) for r in rows if r.get(f"{key}_mean") is not None]
    if finite and key != "test_error":
        lo, hi = min(finite), max(finite)
        pad = 0.15 * (hi - lo) + 0.02 * abs(hi) + 1e-9
        ax.set_ylim(lo - pad, hi + pad)


def plot_digits_table(result: dict, path: Path) -> None:
    plt = _pyplot()
    rows = result["rows"]
    groups = list(dict.fromkeys(r["batch"] for r in rows))
    panels = [("test_error", "test error"), ("bits_per_dim", "test bits/dim @1e-5"),
              ("marginal_bits_per_dim", "test marginal bits/dim"), ("nfe", "train NFE / iteration (f+b)"),
              ("wall_s", "wall time [s]")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.8))
    for ax, (key, label) in zip(axes, panels, strict=True):
        _bars(ax, rows, key, groups, label)
    axes[0].legend(fontsize=7)
    fig.suptitle(_title(result, "Digits analogue of Tables 1-2"))
    _save(fig, path)


def _curve(ax: Any, row: dict, key: str, colour: str | None, label: str) -> None:
    if f"{key}_mean" not in row:
        return
    x, m, s = _arr(row["epoch"]), _arr(row[f"{key}_mean"]), _arr(row[f"{key}_std"])
    ax.plot(x, m, marker=".", color=colour, label=label)
    ax.fill_between(x, m - s, m + s, color=colour, alpha=0.2)


def plot_curves(result: dict, path: Path) -> None:
    plt = _pyplot()
    rows = result["rows"]
    regimes = list(dict.fromkeys(r["batch"] for r in rows))
    panels = [("test_error", "test error"), ("bits_per_dim", "test bits/dim @1e-5"), ("nfe", "train NFE / it (f+b)")]
    fig, axes = plt.subplots(len(regimes), 3, figsize=(13, 3.6 * len(regimes)), squeeze=False)
    for i, regime in enumerate(regimes):
        for j, (key, label) in enumerate(panels):
            ax = axes[i][j]
            for row in (r for r in rows if r["batch"] == regime):
                _curve(ax, row, key, COLOURS.get(_arm(row)), NAMES.get(_arm(row), _arm(row)))
            ax.set_xlabel("epoch")
            ax.set_ylabel(label)
            ax.set_title(f"{regime} batch")
        axes[i][0].legend(fontsize=7)
    fig.suptitle(_title(result, "Training curves (Fig. 3 analogue)"))
    _save(fig, path)


def plot_uncond(result: dict, path: Path) -> None:
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    finals = {r["policy"]: r for r in result["rows"]}
    for row in result["curves"]:
        final = finals.get(row["policy"], {})
        label = (f"{NAMES.get(_arm(row), _arm(row))}: {_f(final.get('bits_per_dim_mean')):.3f} bits/dim, "
                 f"{_f(final.get('nfe_mean')):.0f} NFE")
        _curve(axes[0], row, "bits_per_dim", COLOURS.get(_arm(row)), label)
        _curve(axes[1], row, "nfe", COLOURS.get(_arm(row)), label)
    axes[0].set_ylabel("test bits/dim @1e-5")
    axes[1].set_ylabel("train NFE / iteration (f+b)")
    for ax in axes:
        ax.set_xlabel("epoch")
    axes[0].legend(fontsize=7)
    fig.suptitle(_title(result, "Unconditional CNF with / without learned tolerances (Fig. 4 analogue)"))
    _save(fig, path)


def plot_tol_integral(result: dict, path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.2))
    fixed = [r for r in result["rows"] if r["policy"] == "fixed"]
    tols = _arr([r["tol"] for r in fixed])
    err = np.maximum(_arr([r["abs_error_mean"] for r in fixed]), 1e-16)
    std = _arr([r["abs_error_std"] for r in fixed])
    ax.errorbar(tols, err, yerr=std, marker="o", color=COLOURS["fixed"], label="fixed tolerance", capsize=3)
    for row in (r for r in result["rows"] if r["policy"] != "fixed"):
        ax.errorbar([_f(row["tol"])], [max(_f(row["abs_error_mean"]), 1e-16)], yerr=[_f(row["abs_error_std"])],
                    marker="*", markersize=14, linestyle="none", color=COLOURS.get(row["policy"]),
                    label=f"learned ({row['policy']}), geometric-mean tol")
    if result.get("grid_error") is not None:
        ax.axhline(max(_f(result["grid_error"]), 1e-16), color="k", ls=":", lw=1, label="grid (true density)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("solver tolerance (atol = rtol)")
    ax.set_ylabel("|integral of p(x) dx - 1|")
    ax.legend(fontsize=7)
    ax.set_title(_title(result, "Fig. 2a analogue: 1-D mixture"), fontsize=9)
    _save(fig, path)


def plot_tol_hist(result: dict, path: Path) -> None:
    plt = _pyplot()
    rows = result["rows"]
    blocks = sorted({r["block"] for r in rows})
    fig, axes = plt.subplots(1, len(blocks), figsize=(4 * len(blocks), 3.6), squeeze=False)
    for ax, block in zip(axes[0], blocks, strict=True):
        block_rows = [r for r in rows if r["block"] == block]
        values = np.concatenate([_arr(r["values"]) for r in block_rows])
        lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
        bins = np.linspace(lo - 0.05, hi + 0.05, 30)
        for row in block_rows:
            label = {"train": "train set (gate mean)", "test": "test set (gate mean)",
                     "training_log": "sampled in training (last 25%)"}.get(row["split"], row["split"])
            hist = "step" if row["split"] == "training_log" else "stepfilled"
            ax.hist(_arr(row["values"]), bins=bins, density=True, histtype=hist, alpha=0.5 if hist != "step" else 1,
                    color=COLOURS.get(row["split"]), label=label)
        ax.set_xlabel("log10 tolerance")
        ax.set_title(f"block {block}")
    axes[0][0].set_ylabel("density")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(_title(result, "Learned tolerances per block, train vs test (Fig. 2b analogue)"))
    _save(fig, path)


def plot_eval_batch(result: dict, path: Path) -> None:
    plt = _pyplot()
    rows = result["rows"]
    panels = [("delta_bits_per_dim", "bits/dim (learned tol) - bits/dim (1e-5)"),
              ("delta_error", "error (learned tol) - error (1e-5)"), ("nfe", "forward NFE per batch"),
              ("log10_tol", "mean log10 tolerance")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8))
    for ax, (key, label) in zip(axes, panels, strict=True):
        for split in dict.fromkeys(r["split"] for r in rows):
            sub = sorted((r for r in rows if r["split"] == split), key=lambda r: r["batch_size"])
            ax.errorbar([r["batch_size"] for r in sub], _arr([r.get(f"{key}_mean") for r in sub]),
                        yerr=_arr([r.get(f"{key}_std") for r in sub]), marker="o", capsize=3,
                        color=COLOURS.get(split), label=f"{split} split")
        if key.startswith("delta"):
            ax.axhline(0, color="k", lw=0.8)
        ax.set_xscale("log")
        ax.set_xlabel("evaluation batch size")
        ax.set_ylabel(label, fontsize=8)
    axes[0].legend(fontsize=7)
    fig.suptitle(_title(result, "Evaluating with the learned tolerances vs batch size (Appendix D analogue)"))
    _save(fig, path)


def plot_policies(result: dict, path: Path, title: str = "Tolerance policies co-trained with InfoCNF on digits",
                  ) -> None:
    """Training NFE against test bits/dim, and test error, one point / bar per row.

    Rows are named by ``variant`` where present (``reinforce-ablation``), else by ``policy``.
    """
    plt = _pyplot()
    rows = list(result["rows"])
    if "reference" in result:
        rows.insert(0, {**result["reference"], "variant": f"{result['reference']['policy']} (reference)"})
    names = [r.get("variant", r["policy"]) for r in rows]
    colours = [COLOURS.get(r["policy"], f"C{i}") if "variant" not in r else f"C{i}" for i, r in enumerate(rows)]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for row, name, colour in zip(rows, names, colours, strict=True):
        axes[0].errorbar(_f(row["nfe_mean"]), _f(row["bits_per_dim_mean"]), xerr=_f(row["nfe_std"]),
                         yerr=_f(row["bits_per_dim_std"]), marker="o", capsize=3, color=colour, label=name)
    axes[0].set_xlabel("train NFE / iteration (f+b)")
    axes[0].set_ylabel("test bits/dim @1e-5")
    axes[0].legend(fontsize=7)
    xs = range(len(rows))
    axes[1].bar(xs, _arr([r.get("test_error_mean") for r in rows]), yerr=_arr([r.get("test_error_std") for r in rows]),
                capsize=3, color=colours)
    axes[1].set_xticks(list(xs), names, rotation=30, fontsize=7, ha="right")
    axes[1].set_ylabel("test error")
    fig.suptitle(_title(result, title))
    _save(fig, path)


def plot_reinforce_ablation(result: dict, path: Path) -> None:
    plot_policies(result, path, "REINFORCE variants co-trained with InfoCNF on digits")


def plot_frozen(result: dict, path: Path) -> None:
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    front = sorted(result["front"], key=lambda r: r["tol"])
    for ax, key, label in ((axes[0], "bits_per_dim", "test bits/dim at the tolerances used"),
                           (axes[1], "excess_bits_per_dim", "bits/dim minus bits/dim @1e-5")):
        ax.errorbar(_arr([r["nfe_mean"] for r in front]), _arr([r[f"{key}_mean"] for r in front]),
                    yerr=_arr([r[f"{key}_std"] for r in front]), marker="s", color="k", capsize=2,
                    label="fixed tolerances")
        for r in front:
            ax.annotate(f"{r['tol']:.0e}", (_f(r["nfe_mean"]), _f(r[f"{key}_mean"])), fontsize=6,
                        textcoords="offset points", xytext=(3, 3))
        for row in result["rows"]:
            ax.errorbar(_f(row["nfe_mean"]), _f(row[f"{key}_mean"]), xerr=_f(row["nfe_std"]),
                        yerr=_f(row[f"{key}_std"]), marker="o", markersize=8, linestyle="none", capsize=3,
                        color=COLOURS.get(row["policy"]), label=row["policy"])
        ax.set_xscale("log")
        ax.set_xlabel("test forward NFE per batch")
        ax.set_ylabel(label)
    axes[0].legend(fontsize=7)
    fig.suptitle(_title(result, "Policies on a frozen InfoCNF vs the fixed-tolerance front"))
    _save(fig, path)


def plot_samples(result: dict, path: Path) -> None:
    plt = _pyplot()
    grids = result["grids"]
    per_class = result["per_class"]
    shape = result["image_shape"][-2:]
    accuracy = {f"{r['model']}-{r['policy']}": r for r in result["rows"]}
    fig, axes = plt.subplots(1, len(grids), figsize=(max(6.0, 1.0 + 0.6 * per_class * len(grids)), 6.5), squeeze=False)
    for ax, (name, flat) in zip(axes[0], grids.items(), strict=True):
        images = _arr([v for img in flat for v in img]).reshape(10, per_class, *shape)
        mosaic = np.block([[np.pad(images[c, k], 1, constant_values=0.0) for k in range(per_class)]
                           for c in range(10)])
        ax.imshow(mosaic, cmap="gray_r", vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([(shape[0] + 2) * (c + 0.5) for c in range(10)], [str(c) for c in range(10)])
        row = accuracy.get(name, {})
        agree = _f(row.get("sample_accuracy_mean"))
        ax.set_title(f"{NAMES.get(name, name)}\nclassifier agrees: {agree:.2f}", fontsize=8)
    fig.suptitle(_title(result, "Class-conditional samples at tol 1e-5 (Fig. 7 analogue)"), fontsize=9)
    _save(fig, path)


def plot_latent_probe(result: dict, path: Path) -> None:
    plt = _pyplot()
    rows = result["rows"]
    regimes = list(dict.fromkeys(r["batch"] for r in rows))
    features = list(dict.fromkeys(r["features"] for r in rows))
    fig, axes = plt.subplots(1, len(regimes), figsize=(5.5 * len(regimes), 3.8), squeeze=False)
    for ax, regime in zip(axes[0], regimes, strict=True):
        _bars(ax, [r for r in rows if r["batch"] == regime], "test_error", features, "test error", group_key="features")
        ax.set_title({"large-long": "large batch, 2x epochs"}.get(regime, f"{regime} batch"), fontsize=9)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(_title(result, "Linear probes on the latent code vs the model's own classifier"))
    _save(fig, path)


def plot_speed(result: dict, path: Path) -> None:
    plt = _pyplot()
    rows = result["rows"]
    panels = [("nfe_ratio", "train NFE / it vs fixed", 1.0), ("wall_ratio", "train wall time vs fixed", 1.0),
              ("test_nfe_ratio", "test NFE @1e-5 vs fixed", 1.0), ("bpd_ratio", "test bits/dim vs fixed [%]", 100.0)]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    names = [r["arm"] for r in rows]
    for ax, (key, label, scale) in zip(axes[0], panels, strict=True):
        # ratios as bars from 1 (the fixed arm); bits/dim as a percentage difference from 0
        base = 1.0 if scale == 1.0 else 0.0
        per_seed = [[scale * (_f(p[key]) - 1.0) + base for p in r["per_seed"]] for r in rows]
        values = [float(np.mean(v)) for v in per_seed]
        spread = [float(np.std(v, ddof=1)) if len(v) > 1 else 0.0 for v in per_seed]
        ax.bar(range(len(rows)), [v - base for v in values], bottom=base, yerr=spread, capsize=3,
               color=[COLOURS.get(n, "tab:gray") for n in names])
        ax.axhline(base, color="grey", lw=0.8, ls="--")
        ax.set_xticks(range(len(rows)), names, rotation=30, fontsize=8)
        ax.set_ylabel(label)
    fig.suptitle(_title(result, f"Levers on the cost (RNODE weight {result['reg_weight']:g})"))
    _save(fig, path)


def plot_benchmark(result: dict, path: Path) -> None:
    """Per frozen task and action mode: the fixed-action front (mean NFE vs mean error), the
    best constant, the hindsight oracle and each agent (mean over seeds)."""
    plt = _pyplot()
    tasks = result["tasks"]
    fig, axes = plt.subplots(1, max(1, len(tasks)), figsize=(4.2 * max(1, len(tasks)), 3.8), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=False):
        front = task["front"]
        ax.scatter([f["nfe"] for f in front], [max(_f(f["error"]), 1e-7) for f in front], s=10, color="grey",
                   label="fixed actions")
        ax.scatter([task["best_constant_nfe"]], [max(_f(task["best_constant_error"]), 1e-7)], marker="s",
                   color="black", label="best constant")
        ax.scatter([task["oracle_nfe"]], [max(_f(task["oracle_error"]), 1e-7)], marker="*", s=80, color="gold",
                   edgecolor="black", label="oracle")
        for agent in task["agents"]:
            ax.scatter([agent["nfe_mean"]], [max(_f(agent["error_mean"]), 1e-7)], marker="o",
                       color=COLOURS.get(agent["agent"], None), label=agent["agent"])
        ax.set_yscale("log")
        ax.set_xlabel("NFE per episode")
        ax.set_ylabel("error of log p(x) [nats]")
        ax.set_title(f"{task['task'].replace('CNF-Frozen-', '').replace('-v0', '')}, {task['action_mode']}",
                     fontsize=9)
    axes[0][0].legend(fontsize=6)
    fig.suptitle(_title(result, "Frozen-flow benchmark: agents against the fixed-action front"))
    _save(fig, path)


def plot_beta(result: dict, path: Path) -> None:
    """Per regime: test error (own classifier, solid; probe on z_y, dashed) and bits/dim against
    beta for CCNF and InfoCNF, with the raw-pixel probe as the ceiling."""
    plt = _pyplot()
    rows = result["rows"]
    regimes = list(dict.fromkeys(r["batch"] for r in rows))
    fig, axes = plt.subplots(2, len(regimes), figsize=(5.0 * len(regimes), 6.5), squeeze=False)
    for col, regime in enumerate(regimes):
        err_ax, bpd_ax = axes[0][col], axes[1][col]
        for model in dict.fromkeys(r["model"] for r in rows):
            sel = sorted((r for r in rows if r["batch"] == regime and r["model"] == model), key=lambda r: r["beta"])
            betas = [r["beta"] for r in sel]
            colour = COLOURS.get(f"{model}-fixed")
            name = {"ccnf": "CCNF", "infocnf": "InfoCNF"}.get(model, model)
            err_ax.errorbar(betas, [_f(r["test_error_mean"]) for r in sel], [_f(r["test_error_std"]) for r in sel],
                            color=colour, marker="o", capsize=3, label=f"{name}: own classifier")
            err_ax.plot(betas, [_f(r["zy_probe_error_mean"]) for r in sel], color=colour, ls="--", marker="x",
                        label=f"{name}: probe on z_y")
            bpd_ax.errorbar(betas, [_f(r["bits_per_dim_mean"]) for r in sel],
                            [_f(r["bits_per_dim_std"]) for r in sel], color=colour, marker="o", capsize=3,
                            label=name)
        err_ax.axhline(_f(result["pixel_probe_error"]), color="grey", ls=":", label="probe on raw pixels")
        for ax, label in ((err_ax, "test error"), (bpd_ax, "test bits/dim @1e-5")):
            ax.set_xscale("log")
            ax.set_xlabel("beta (cross-entropy weight)")
            ax.set_ylabel(label)
        err_ax.set_title(f"{regime} batch", fontsize=9)
    axes[0][0].legend(fontsize=6)
    axes[1][0].legend(fontsize=6)
    fig.suptitle(_title(result, "InfoCNF vs CCNF against the supervision weight beta (authors' heads)"))
    _save(fig, path)


def plot_leaderboard(result: dict, path: Path) -> None:
    """Per benchmark task, on the test pool: the constant-tolerance front (mean NFE vs mean error),
    the best constant, best schedule, contextual regressor, PI controller, oracle and each agent
    (mean over seeds)."""
    plt = _pyplot()
    tasks = result["tasks"]
    fig, axes = plt.subplots(1, max(1, len(tasks)), figsize=(max(7.0, 5.0 * len(tasks)), 4.5), squeeze=False)
    markers = {"best_constant": ("s", "black"), "best_schedule": ("D", "grey"), "contextual": ("P", "tab:cyan"),
               "pi_controller": ("X", "tab:brown"), "oracle": ("*", "gold")}
    for ax, task in zip(axes[0], tasks, strict=False):
        front = task["front"]
        ax.plot([f["nfe"] for f in front], [max(_f(f["error"]), 1e-12) for f in front], color="grey", marker=".",
                lw=0.8, label="constant tolerances")
        for row in (r for r in result["rows"] if r["task"] == task["task"]):
            marker, colour = markers.get(row["agent"], ("o", COLOURS.get(row["agent"])))
            ax.scatter([row["nfe_mean"]], [max(_f(row["error_mean"]), 1e-12)], marker=marker, color=colour,
                       s=70 if marker == "*" else 30, edgecolor="black" if marker == "*" else None, label=row["agent"],
                       zorder=3)
        if task["reward"]["error_form"] == "target":
            ax.axhline(task["reward"]["error_target"], color="red", ls=":", lw=0.8, label="error target")
        ax.set_yscale("log")
        ax.set_xlabel("NFE per episode (test pool)")
        ax.set_ylabel(task.get("error_unit", "mean error"))
        ax.set_title(task["task"], fontsize=9)
    axes[0][0].legend(fontsize=6)
    fig.suptitle(_title(result, "Tolerance agents and baselines on held-out episodes"))
    _save(fig, path)


PLOTTERS: dict[str, Callable[[dict, Path], None]] = {
    "digits-table": plot_digits_table, "uncond": plot_uncond, "tol-integral": plot_tol_integral,
    "tol-hist": plot_tol_hist, "curves": plot_curves, "eval-batch": plot_eval_batch,
    "policies": plot_policies, "frozen": plot_frozen, "samples": plot_samples,
    "reinforce-ablation": plot_reinforce_ablation, "latent-probe": plot_latent_probe, "speed": plot_speed,
    "benchmark": plot_benchmark, "beta": plot_beta, "leaderboard": plot_leaderboard,
    "leaderboard-cnf": plot_leaderboard,
}


def plot(study: str, result: dict, path: str | Path) -> None:
    """Draw ``study``'s figure from its result dict into ``path`` (PNG)."""
    if study not in PLOTTERS:
        raise ValueError(f"no plot for study {study!r}; valid: {', '.join(PLOTTERS)}")
    PLOTTERS[study](result, Path(path))


def load_study(path: Path) -> dict:
    """A study's result from its JSON; ``ValueError`` (one line) for any other file."""
    try:
        text = path.read_text()
    except OSError as err:
        raise ValueError(f"cannot read {str(path)!r}: {err.strerror or err}") from None
    try:
        result = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{str(path)!r} is not JSON ({err.msg} at line {err.lineno})") from None
    if not isinstance(result, dict) or not {"study", "rows"} <= set(result):
        if isinstance(result, dict):
            keys = sorted(result)
            what = "a run's summary.json" if {"env", "agent", "iterations"} <= set(keys) else "a JSON object"
            got = f"{what} with keys {', '.join(keys[:6])}{', ...' if len(keys) > 6 else ''}"
        else:
            got = f"a JSON {type(result).__name__}"
        hint = f"; a run's curves: python -m runs.plots {str(path.parent)!r}" if "summary" in got else ""
        raise ValueError(f"{str(path)!r} is not a study result: expected a STUDY.json written by runs.reproduce "
                         f"(keys study, rows, ...), got {got}{hint}")
    if result["study"] not in PLOTTERS:
        raise ValueError(f"no plot for study {result['study']!r}; valid: {', '.join(PLOTTERS)}")
    return result


def main(argv: list[str] | None = None) -> None:
    from runs import run_curves

    parser = argparse.ArgumentParser(prog="python -m runs.plots", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("json", type=Path, nargs="?", default=None,
                        help="a study's JSON written by runs.reproduce (runs/results/STUDY.json), or a run directory")
    parser.add_argument("--compare", type=Path, nargs="+", default=None, metavar="RUN_DIR",
                        help="overlay the curves of these run directories")
    parser.add_argument("--out", type=Path, default=None,
                        help="PNG path (default: next to the JSON; RUN_DIR/curves.png; compare.png beside the "
                             "first compared run)")
    args = parser.parse_args(argv)
    try:
        if args.compare is not None:
            dirs = ([args.json] if args.json is not None else []) + args.compare
            out = run_curves.plot_compare(dirs, args.out)
        elif args.json is None:
            raise ValueError("give a study's JSON, a run directory or --compare RUN_DIR ...")
        elif args.json.is_dir():
            out = run_curves.plot_run(args.json, args.out)
        else:
            result = load_study(args.json)
            out = args.out or args.json.with_suffix(".png")
            plot(result["study"], result, out)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
