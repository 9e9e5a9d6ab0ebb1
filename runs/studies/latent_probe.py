"""latent-probe: where does the class information sit in z?

Why InfoCNF misses the error target of ``digits-table``: its representation, or its
classifier? For the ``ccnf`` and ``infocnf`` runs of ``digits-table`` (``policy``, every
regime in ``regimes``), the flow maps the digits training and test sets to z at tolerance
1e-5, and a linear probe (scikit-learn multinomial logistic regression, fitted on the
training latents) is trained on three slices of z:

* ``z_y``: the first ``sup_ratio`` (0.5) of z, InfoCNF's supervised code (Section 3.1),
* ``z_u``: the rest, InfoCNF's unsupervised code, which Section 3.1 says holds the other
  variations of the data and so should carry little of the class,
* ``z``: all of it, what CCNF's classifier sees.

The rows report the probes' test error next to the model's own classifier q_theta (with
dropout off) and the run's test bits/dim. Besides the two ``digits-table`` regimes, the
``large-long`` regime trains both models with large batches for twice the epochs (154
iterations, the same schedule shape), to see whether InfoCNF's large-batch gap closes with
training. The same slices are probed on CCNF for reference, though CCNF's prior covers
all of z. A probe beating the model's own classifier on the same slice means that
classifier is under-trained, not that the representation lacks the class.

Cost (full): ~10 s of analysis per run (18 runs: 2 models x 3 regimes x 3 seeds), plus
training the 6 ``large-long`` runs (154 iterations at ~4.3 s: ~4,000 CPU-seconds, ~35 min
with ``--jobs 2``) and the digits-table runs if absent.
"""

from __future__ import annotations

import json

from agents.evaluate import load_run
from runs.aggregate import summarise
from runs.run_cache import Context
from runs.studies.common import latents, probe_error, seed_arms, sup_size, train_groups

ROW_KEYS = ("model", "policy", "batch", "features", "seeds", "test_error_mean", "test_error_std")

CONFIG = {
    "models": ["ccnf", "infocnf"],
    "policy": "fixed",
    "regimes": ["small", "large", "large-long"],
    "sup_ratio": 0.5,
    "max_train": None,  # probe on all 1,497 training digits
}
QUICK = {"max_train": 200}


def run(ctx: Context) -> dict:
    from flows import load_dataset

    cfg = ctx.config
    groups = {(m, r): seed_arms(ctx, m, cfg["policy"], r) for r in cfg["regimes"] for m in cfg["models"]}
    train_groups(ctx, groups)
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    rows = []
    for (model_name, regime), arms in groups.items():
        per_seed: dict[str, list[dict]] = {}
        for arm in arms:
            model = load_run(arm.run_dir(ctx.runs_dir)).model.eval()
            z_train, y_train, _ = latents(model, train, cfg["max_train"])
            z_test, y_test, own = latents(model, test, None)
            dim = z_train.shape[1]
            sup = sup_size(model, model_name, dim, cfg["sup_ratio"], arm.run_dir(ctx.runs_dir).name)
            summary = json.loads((arm.run_dir(ctx.runs_dir) / "summary.json").read_text())
            records = {"own classifier": {"test_error": float((own != y_test).mean()),
                                          "bits_per_dim": summary["test"]["bits_per_dim"]}}
            slices = (("probe z_y", slice(0, sup)), ("probe z_u", slice(sup, dim)), ("probe z", slice(0, dim)))
            for name, cols in slices:
                records[name] = {"test_error": probe_error((z_train[:, cols], y_train), (z_test[:, cols], y_test))}
            for features, record in records.items():
                per_seed.setdefault(features, []).append(record)
        for features, seed_records in per_seed.items():
            rows.append({"model": model_name, "policy": cfg["policy"], "batch": regime, "features": features,
                         "seeds": list(ctx.seeds), **summarise(seed_records, ("test_error", "bits_per_dim")),
                         "per_seed": seed_records})
    return {"rows": rows}
