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

Cost (full): 36 runs (2 models x (4 + 2) betas x 3 seeds) of 230-490 s each, plus ~10 s of
probing each; the committed result took 63 min with ``--jobs 2`` (``wall_s``) on a 2-core
machine that also ran ``runs.spirals`` at low priority.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from runs.aggregate import summarise
from runs.run_cache import Context
from runs.studies.common import latents, probe_error, ratio, rel_diff, seed_arms, sup_size, train_groups

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
