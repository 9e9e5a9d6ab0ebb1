"""speed-adjoint: the cost levers on the adjoint path, the one the CIFAR10 and MNIST ids train on.

InfoCNF on digits in the ``small`` regime (batch 128, 300 iterations, as the ``speed`` study)
with the adjoint method and the authors' recipe (``flows.AUTHORS_RECIPE``: the CIFAR10 ids'
model choices, c -> h -> h -> h -> c dynamics, LinearZeros heads, beta 0.5, a learned end time
per block): the CIFAR10 ids' training path at digits size. One run per arm and seed, the arms
of a seed trained side by side:

* ``adjoint-fixed``: every block at 1e-5, the full adjoint norm (FFJORD's adjoint);
* ``adjoint-seminorm``: the seminorm adjoint (``adjoint_norm="seminorm"``; Kidger, Chen and
  Lyons 2021: the backward solve's error control leaves out the parameter-gradient channels);
* ``adjoint-seminorm-warm``: the seminorm and warm starts of the forward and the adjoint solves
  (each block's solves start from the steps they last accepted, rescaled to the tolerance);
* ``adjoint-combined``: the seminorm, warm starts and REINFORCE tolerances (Section 3,
  Eq. 6-7). A learned first step is not part of it: a forward solve starts from either the
  learned step or the warm start, and the warm start is the one that also reaches the adjoint
  solve.

Rows as the ``speed`` study's (:func:`runs.studies.speed.regime_rows`), ``regime`` "adjoint",
against ``adjoint-fixed`` of the same seed; ``nfe_backward_ratio`` is the adjoint solves' share.
``targets``: the seminorm's backward NFE at most 0.6x the full norm's with test bits/dim within
0.1%; every lever on, training wall time at most 0.35x with bits/dim within 1%.

Cost (full): a training run per arm and seed, an adjoint solve per block in each; the committed
result's ``wall_s`` (``runs/results/speed-adjoint.json``) is the time of the run that wrote it
(runs found in the workdir's cache are not retrained).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flows.build import AUTHORS_RECIPE
from runs.format import apct, bullets, eval_tol, figure, pct, row, verdict
from runs.run_cache import Arm, Context, digits_arm
from runs.studies.speed import bars, regime_rows
from runs.study import Page, Res, Study
from runs.tables import cell

ROW_KEYS = ("arm", "regime", "nfe_ratio", "nfe_backward_ratio", "wall_ratio", "bpd_ratio", "test_nfe_ratio", "seeds")

#: Arm name -> (policy of ``digits_arm``, adjoint norm, uses the warm start).
ARMS = {
    "adjoint-fixed": ("fixed", "full", False),
    "adjoint-seminorm": ("fixed", "seminorm", False),
    "adjoint-seminorm-warm": ("fixed", "seminorm", True),
    "adjoint-combined": ("reinforce", "seminorm", True),
}

CONFIG = {
    "regime": "small",
    "arms": list(ARMS),
    "env": {"adjoint": True, **AUTHORS_RECIPE},
    "targets": {"seminorm_nfe_backward_ratio": 0.6, "seminorm_bpd_tol": 0.001,
                "combined_wall_ratio": 0.35, "combined_bpd_tol": 0.01},
}
QUICK: dict = {}


def _arm(ctx: Context, name: str, seed: int) -> Arm:
    policy, norm, warm = ARMS[name]
    env = {**ctx.config["env"], "adjoint_norm": norm, **({"warm_start": True} if warm else {})}
    return digits_arm(ctx, "infocnf", policy, ctx.config["regime"], seed, label=f"speed-{name}", eval_every=0,
                      extra_env=env)


def run(ctx: Context) -> dict:
    rows = regime_rows(ctx, ctx.config["arms"], lambda name, seed: _arm(ctx, name, seed), "adjoint")
    return {"rows": rows, "targets": _targets(rows, ctx.config["targets"])}


def _targets(rows: list[dict], t: dict) -> dict:
    by = {r["arm"]: r for r in rows}
    out: dict[str, Any] = {}
    if "adjoint-seminorm" in by:
        a = by["adjoint-seminorm"]
        out["seminorm"] = {"nfe_backward_ratio": a["nfe_backward_ratio"], "bpd_ratio": a["bpd_ratio"],
                           "met": bool(a["nfe_backward_ratio"] <= t["seminorm_nfe_backward_ratio"]
                                       and abs(a["bpd_ratio"] - 1) <= t["seminorm_bpd_tol"])}
    if "adjoint-combined" in by:
        a = by["adjoint-combined"]
        out["combined"] = {"wall_ratio": a["wall_ratio"], "nfe_ratio": a["nfe_ratio"], "bpd_ratio": a["bpd_ratio"],
                           "met": bool(a["wall_ratio"] <= t["combined_wall_ratio"]
                                       and abs(a["bpd_ratio"] - 1) <= t["combined_bpd_tol"])}
    return {"thresholds": t, **out}


# ============================================================================ table, figure, results page
COLUMNS = [("arm", "arm", 0), ("train NFE / it", "nfe", 1), ("NFE vs full", "nfe_ratio", 3),
           ("backward NFE vs full", "nfe_backward_ratio", 3), ("wall vs full", "wall_ratio", 3),
           ("test bits/dim", "bits_per_dim", 4), ("bits/dim vs full", "bpd_ratio", 4), ("test NFE", "test_nfe", 1),
           ("test NFE vs full", "test_nfe_ratio", 3)]


def plot(result: dict, path: Path) -> None:
    bars(result, path, "Levers on the adjoint path (against the full-norm adjoint at 1e-5)")


def section(res: Res) -> str:
    d = res["speed-adjoint"]
    t, th = d["targets"], d["targets"]["thresholds"]
    regime = d["regimes"][d["config"]["regime"]]
    fixed = row(d["rows"], arm="adjoint-fixed")
    lines = ["| arm | train NFE / it | vs full norm | backward NFE vs full norm | train wall vs full norm | "
             "test bits/dim | vs full norm | test NFE @1e-5 |", "|" + " --- |" * 8]
    for r in d["rows"]:
        lines.append(f"| {r['arm']} | {cell(r, 'nfe', 1)} | {r['nfe_ratio']:.3f}x | {r['nfe_backward_ratio']:.3f}x | "
                     f"{r['wall_ratio']:.3f}x | {cell(r, 'bits_per_dim', 4)} | {pct(r['bpd_ratio'] - 1, 3)} | "
                     f"{cell(r, 'test_nfe', 1)} |")
    items = []
    if "seminorm" in t:
        m = t["seminorm"]
        items.append(f"Seminorm adjoint: backward NFE {m['nfe_backward_ratio']:.3f}x of the full norm's, bits/dim "
                     f"{pct(m['bpd_ratio'] - 1, 3)} (target: at most {th['seminorm_nfe_backward_ratio']}x, bits/dim "
                     f"within {apct(th['seminorm_bpd_tol'], 1)}): {verdict(m['met'])}.")
        per_seed = [p["nfe_backward_ratio"] for p in row(d["rows"], arm="adjoint-seminorm")["per_seed"]]
        spread = max(abs(r - 1) for r in per_seed)
        if spread < 0.01:
            items.append(f"The seminorm changes no step count here: every seed's backward NFE is within "
                         f"{apct(spread, 2)} of the full norm's. The adjoint solves take a few steps "
                         f"({fixed['nfe_backward_mean']:.0f} backward NFE per iteration over the blocks, six "
                         f"per dopri5 step), sized by the state and adjoint channels, which both norms measure.")
    if "combined" in t:
        c = t["combined"]
        items.append(f"Seminorm + warm starts + REINFORCE: training wall time {c['wall_ratio']:.3f}x of fixed 1e-5 "
                     f"with the full-norm adjoint, NFE {c['nfe_ratio']:.3f}x, bits/dim {pct(c['bpd_ratio'] - 1)} "
                     f"(target: at most {th['combined_wall_ratio']}x, bits/dim within "
                     f"{apct(th['combined_bpd_tol'], 0)}): {verdict(c['met'])}.")
    env = ", ".join(f"{k}={v}" for k, v in d["config"]["env"].items())
    return "\n\n".join([figure("speed-adjoint"), f"""\
InfoCNF on digits trained with the adjoint method and the authors' recipe (the CIFAR10 ids' model choices at \
digits size: {env}), batch {regime['batch_size']}, {regime['iterations']} iterations, {len(d['seeds'])} seeds; the \
arms of a seed trained side by side. Ratios are per seed against the full-norm adjoint at fixed 1e-5 of the same \
seed, then averaged; training wall time is that of the training iterations; test metrics at {eval_tol(res)} \
({fixed['test_nfe_mean']:.1f} NFE per test batch for the full-norm arm).""", "\n".join(lines), bullets(items)])


STUDY = Study(
    name="speed-adjoint",
    summary="the seminorm adjoint, warm starts, learned tolerances on the adjoint path",
    config=CONFIG,
    quick=QUICK,
    row_keys=ROW_KEYS,
    run=run,
    columns=COLUMNS,
    plot=plot,
    page=Page("The adjoint path: seminorm adjoints, warm starts, learned tolerances", order=131, render=section,
              needs=("speed-adjoint",)),
)
