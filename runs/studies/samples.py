"""samples: a class-conditional sample grid (Fig. 7).

``per_class`` samples of each digit class at tolerance 1e-5 from the ``infocnf`` /
``reinforce`` run (the paper's figure) and, for comparison, the ``ccnf`` / ``fixed`` run of
``digits-table`` (``regime``). Two numbers say whether the samples carry their class:
``sample_accuracy``, the fraction an independent classifier (scikit-learn logistic
regression fitted on the digits training split, its test accuracy is in the JSON) assigns to
the conditioning class, and ``self_consistency``, the fraction the model's own classifier
q_theta assigns to it (after encoding the samples at 1e-5).

Cost (full): analysis only (plus the digits-table runs if absent).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from agents.evaluate import load_run
from flows import FlowModel
from runs import figures
from runs.aggregate import summarise
from runs.format import figure, num_classes, required, row, sci
from runs.run_cache import Context
from runs.studies.common import seed_arms, train_groups
from runs.study import Page, Res, Study
from runs.tables import table

ROW_KEYS = ("model", "policy", "seeds", "sample_accuracy_mean", "sample_accuracy_std", "self_consistency_mean",
            "self_consistency_std")

CONFIG = {
    "regime": "small",
    "models": [["infocnf", "reinforce"], ["ccnf", "fixed"]],
    "per_class": 10,
    "tol": 1e-5,
}
QUICK = {"per_class": 2}


def run(ctx: Context) -> dict:
    from sklearn.linear_model import LogisticRegression

    from flows import load_dataset

    cfg = ctx.config
    regime = cfg["regime"]
    groups = {(m, p): seed_arms(ctx, m, p, regime) for m, p in cfg["models"]}
    train_groups(ctx, groups)
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    classifier = LogisticRegression(max_iter=5000).fit(train.x.reshape(len(train), -1).numpy(), train.y.numpy())
    classifier_accuracy = float(classifier.score(test.x.reshape(len(test), -1).numpy(), test.y.numpy()))
    labels = torch.arange(10).repeat_interleave(cfg["per_class"])
    num_levels = train.num_levels
    assert num_levels is not None  # the digits are quantised (17 levels)
    rows: list[dict] = []
    grids: dict[str, list] = {}
    for (model_name, policy), arms in groups.items():
        per_seed = []
        for arm in arms:
            model = load_run(arm.run_dir(ctx.runs_dir)).model
            assert isinstance(model, FlowModel)  # the digits flows sample
            x = model.sample(labels, tol=cfg["tol"], generator=torch.Generator().manual_seed(arm.seed))
            levels = (x.reshape(len(labels), -1).double() * num_levels - 0.5).clamp(0, num_levels - 1)
            predicted = classifier.predict(levels.numpy())
            with torch.no_grad():
                out = model(x.clamp(1e-4, 1 - 1e-4), labels, tol=cfg["tol"], generator=torch.Generator().manual_seed(0))
            per_seed.append({"sample_accuracy": float((predicted == labels.numpy()).mean()),
                             "self_consistency": float((out.predictions() == labels).float().mean())})
            grids.setdefault(f"{model_name}-{policy}", x.reshape(len(labels), -1).clamp(0, 1).numpy().round(3).tolist())
        rows.append({"model": model_name, "policy": policy, "batch": regime, "seeds": list(ctx.seeds),
                     **summarise(per_seed, ("sample_accuracy", "self_consistency")), "per_seed": per_seed})
    return {"rows": rows, "classifier_test_accuracy": classifier_accuracy, "per_class": cfg["per_class"],
            "image_shape": list(train.shape), "grids": grids}


# ============================================================================ table, figure, results page
#: Columns of the study's table (:func:`runs.tables.table`): (header, row key or ``key_mean`` stem,
#: digits); a stem that has ``_mean`` / ``_std`` in the row prints as ``mean ± std``.
COLUMNS = [("model", "model", 0), ("tolerance", "policy", 0), ("sample accuracy", "sample_accuracy", 3),
           ("self-consistency", "self_consistency", 3)]


def plot(result: dict, path: Path) -> None:
    plt = figures.pyplot()
    grids = result["grids"]
    per_class = result["per_class"]
    shape = result["image_shape"][-2:]
    accuracy = {f"{r['model']}-{r['policy']}": r for r in result["rows"]}
    fig, axes = plt.subplots(1, len(grids), figsize=(max(6.0, 1.0 + 0.6 * per_class * len(grids)), 6.5), squeeze=False)
    for ax, (name, flat) in zip(axes[0], grids.items(), strict=True):
        images = figures.floats([v for img in flat for v in img]).reshape(10, per_class, *shape)
        mosaic = np.block([[np.pad(images[c, k], 1, constant_values=0.0) for k in range(per_class)]
                           for c in range(10)])
        ax.imshow(mosaic, cmap="gray_r", vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([(shape[0] + 2) * (c + 0.5) for c in range(10)], [str(c) for c in range(10)])
        row = accuracy.get(name, {})
        agree = figures.num(row.get("sample_accuracy_mean"))
        ax.set_title(f"{figures.NAMES.get(name, name)}\nclassifier agrees: {agree:.2f}", fontsize=8)
    fig.suptitle(figures.title(result, "Class-conditional samples at tol 1e-5 (Fig. 7 analogue)"), fontsize=9)
    figures.save(fig, path)


def section(res: Res) -> str:
    d = res["samples"]
    info = row(d["rows"], model="infocnf")
    ccnf = row(d["rows"], model="ccnf")
    return "\n\n".join([figure("samples"), table(d, "samples"), f"""\
Samples at tol {sci(d['config']['tol'])} from the digits models are noisy strokes; a logistic-regression
classifier that scores {d['classifier_test_accuracy']:.3f} on the real test digits assigns \
{info['sample_accuracy_mean']:.0%} (InfoCNF) and
{ccnf['sample_accuracy_mean']:.0%} (CCNF) of them to the class they were conditioned on (chance \
{1 / required(num_classes(res), "samples"):.0%}). The models are far
from the paper's sample quality at this size and training length; the class signal is there but weak."""])


STUDY = Study(
    name="samples",
    summary="Fig. 7: class-conditional sample grid",
    config=CONFIG,
    quick=QUICK,
    row_keys=ROW_KEYS,
    run=run,
    columns=COLUMNS,
    plot=plot,
    page=Page("Class-conditional samples, Fig. 7 analogue", order=80, render=section, needs=("samples",)),
)
