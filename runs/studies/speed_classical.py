"""speed-classical: learned tolerances in co-training against the strongest classical solver setting.

InfoCNF on digits in the ``small`` regime (batch 128, 300 iterations, as the ``speed`` study),
one run per arm and seed, the arms of a seed trained side by side. Two paths:

* ``direct`` (back-propagation through the solver, the digits ids' path): every block at fixed
  1e-5 with each classical setting the solve layer can train with (``settings``: torchdiffeq's
  dopri5 with its integral controller, the baseline of every other co-training figure; bosh3,
  dopri8; torchode's dopri5 and tsit5 with a PI step-size controller);
* ``adjoint`` (the CIFAR10 ids' path, ``adjoint_env``: the adjoint method with FFJORD's full
  norm and the authors' recipe, as the ``speed-adjoint`` study's baseline): fixed 1e-5 with each
  method torchdiffeq offers the adjoint (``adjoint_settings``), forward and backward solves alike.

On each path the best classical setting is the one with the fewest training NFE per iteration
(forward + backward, mean over seeds) among those whose test bits/dim stays within
``bpd_tol`` of the dopri5 baseline's; ``learned`` is REINFORCE's tolerances (Section 3,
Eq. 6-7) on top of that setting. Rows as the ``speed`` study's
(:func:`runs.studies.speed.regime_rows`), ratios per seed against the path's dopri5 arm;
``targets``: the learned arm against the best classical setting of the same seeds, training
NFE at most ``learned_nfe_ratio`` of it with test bits/dim within ``bpd_tol``.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from flows.build import AUTHORS_RECIPE
from runs.format import apct, bullets, eval_tol, figure, pct, verdict
from runs.run_cache import Arm, Context, digits_arm
from runs.studies.common import ratio
from runs.studies.speed import bars, regime_rows
from runs.study import Finding, Page, Res, Study
from runs.tables import cell

ROW_KEYS = ("arm", "regime", "nfe_ratio", "nfe_backward_ratio", "wall_ratio", "bpd_ratio", "test_nfe_ratio", "seeds")

#: Classical settings of a digits flow: name -> model options (the first is the baseline).
SETTINGS: dict[str, dict[str, str]] = {
    "dopri5": {},
    "bosh3": {"solver": "bosh3"},
    "dopri8": {"solver": "dopri8"},
    "dopri5-pi": {"solver_backend": "torchode-pi"},
    "tsit5-pi": {"solver": "tsit5", "solver_backend": "torchode-pi"},
}

CONFIG: dict[str, Any] = {
    "regime": "small",
    "paths": ["direct", "adjoint"],
    "settings": [s for s in SETTINGS if s != "dopri5-torchdiffeq"],  # the digits env's own dopri5 is torchdiffeq's
    "adjoint_settings": ["dopri5", "bosh3", "dopri8"],
    "adjoint_env": {"adjoint": True, "adjoint_norm": "full", **AUTHORS_RECIPE},
    "targets": {"learned_nfe_ratio": 0.8, "bpd_tol": 0.001},
}
QUICK: dict[str, Any] = {"settings": ["dopri5", "dopri5-pi"], "adjoint_settings": ["dopri5", "bosh3"]}


def _arm(ctx: Context, path: str, setting: str, policy: str, seed: int) -> Arm:
    env = dict(SETTINGS[setting])
    if path == "adjoint":
        env = {**ctx.config["adjoint_env"], **env}
    label = f"speed-classical-{path}-{setting}" + ("-learned" if policy == "reinforce" else "")
    return digits_arm(ctx, "infocnf", policy, ctx.config["regime"], seed, label=label, eval_every=0, extra_env=env)


def _arm_of(ctx: Context, path: str, name: str, seed: int, best: str | None = None) -> Arm:
    """Arm ``name`` of ``path``: a setting at fixed 1e-5, or ``learned`` (REINFORCE on ``best``)."""
    if name == "learned":
        assert best is not None
        return _arm(ctx, path, best, "reinforce", seed)
    return _arm(ctx, path, name, "fixed", seed)


def best_setting(rows: list[dict], tol: float) -> str:
    """The fixed arm with the fewest training NFE among those whose test bits/dim is within
    ``tol`` of the baseline's (the first row, always eligible)."""
    eligible = [r for r in rows if abs(r["bpd_ratio"] - 1) <= tol] or rows[:1]
    return min(eligible, key=lambda r: r["nfe_mean"])["arm"]


def run(ctx: Context) -> dict:
    cfg = ctx.config
    rows, targets = [], {"thresholds": cfg["targets"]}
    for path in cfg["paths"]:
        names = cfg["settings"] if path == "direct" else cfg["adjoint_settings"]
        best = best_setting(regime_rows(ctx, names, partial(_arm_of, ctx, path), path), cfg["targets"]["bpd_tol"])
        path_rows = regime_rows(ctx, [*names, "learned"], partial(_arm_of, ctx, path, best=best), path)
        by = {r["arm"]: r for r in path_rows}
        by["learned"]["on"] = best
        per_seed = [{"nfe_ratio": ratio(m["nfe"], b["nfe"]), "bpd_ratio": ratio(m["bits_per_dim"], b["bits_per_dim"]),
                     "wall_ratio": ratio(m["wall"], b["wall"])}
                    for m, b in zip(by["learned"]["per_seed"], by[best]["per_seed"], strict=True)]
        mean = {k: float(np.mean([p[k] for p in per_seed])) for k in per_seed[0]}
        t = cfg["targets"]
        targets[path] = {"best_classical": best, **mean, "per_seed": per_seed,
                         "met": bool(mean["nfe_ratio"] <= t["learned_nfe_ratio"]
                                     and abs(mean["bpd_ratio"] - 1) <= t["bpd_tol"])}
        rows += path_rows
    return {"rows": rows, "targets": targets}


# ============================================================================ table, figure, results page
COLUMNS = [("path", "regime", 0), ("arm", "arm", 0), ("train NFE / it", "nfe", 1),
           ("NFE vs dopri5", "nfe_ratio", 3), ("wall vs dopri5", "wall_ratio", 3),
           ("test bits/dim", "bits_per_dim", 4), ("bits/dim vs dopri5", "bpd_ratio", 4),
           ("test NFE", "test_nfe", 1)]


def plot(result: dict, path: Path) -> None:
    bars(result, path, "Classical settings at 1e-5 and learned tolerances on the best (against dopri5)")


def section(res: Res) -> str:
    d = res["speed-classical"]
    t, th = d["targets"], d["targets"]["thresholds"]
    regime = d["regimes"][d["config"]["regime"]]
    lines = ["| path | arm | train NFE / it | vs dopri5 | train wall vs dopri5 | test bits/dim | vs dopri5 | "
             "test NFE @1e-5 |", "|" + " --- |" * 8]
    for r in d["rows"]:
        arm = r["arm"] + (f" (on {r['on']})" if "on" in r else "")
        lines.append(f"| {r['regime']} | {arm} | {cell(r, 'nfe', 1)} | {r['nfe_ratio']:.3f}x | {r['wall_ratio']:.3f}x "
                     f"| {cell(r, 'bits_per_dim', 4)} | {pct(r['bpd_ratio'] - 1, 3)} | {cell(r, 'test_nfe', 1)} |")
    items = []
    for path in d["config"]["paths"]:
        m = t[path]
        items.append(f"{path} path: the best classical setting at fixed 1e-5 is {m['best_classical']}; REINFORCE's "
                     f"tolerances on top of it train with {m['nfe_ratio']:.3f}x its NFE and {m['wall_ratio']:.3f}x "
                     f"its wall time at test bits/dim {pct(m['bpd_ratio'] - 1, 3)} (target: at most "
                     f"{th['learned_nfe_ratio']}x NFE within {apct(th['bpd_tol'], 1)}): {verdict(m['met'])}.")
    adjoint = ", ".join(f"{k}={v}" for k, v in d["config"]["adjoint_env"].items())
    return "\n\n".join([figure("speed-classical"), f"""\
InfoCNF on digits, batch {regime['batch_size']}, {regime['iterations']} iterations, {len(d['seeds'])} seeds, the \
arms of a seed trained side by side; every fixed arm solves each block at 1e-5 with one classical setting (direct \
path: back-propagation through the solver; adjoint path: {adjoint}). The best classical setting is the one with the \
fewest training NFE whose test bits/dim stays within {apct(th['bpd_tol'], 1)} of dopri5's; `learned` is REINFORCE \
on top of it. Ratios per seed against the path's dopri5 arm, then averaged; test metrics at {eval_tol(res)}.""",
                         "\n".join(lines), bullets(items)])


def finding_answer(res: Res) -> str:
    """The README's findings row: the best classical setting per path and REINFORCE on it."""
    d = res["speed-classical"]
    t = d["targets"]
    per_path = [f"{path} path: the best setting at {eval_tol(d)} is {t[path]['best_classical']}; REINFORCE on it "
                f"trains with {t[path]['nfe_ratio']:.2f}x its NFE at test bits/dim within "
                f"{apct(t['thresholds']['bpd_tol'], 1)}" for path in d["config"]["paths"]]
    return f"on digits ({len(d['seeds'])} seeds), " + "; ".join(per_path)


STUDY = Study(
    name="speed-classical",
    summary="learned tolerances on top of the best classical solver setting, direct and adjoint",
    config=CONFIG,
    quick=QUICK,
    row_keys=ROW_KEYS,
    run=run,
    columns=COLUMNS,
    plot=plot,
    page=Page("Co-training: learned tolerances against the best classical solver setting", order=132, render=section,
              needs=("speed-classical",)),
    finding=Finding("Do learned tolerances beat the best classical setting in co-training?", order=40,
                    answer=finding_answer),
)
