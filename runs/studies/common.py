"""Helpers shared by the studies: the run matrix, per-group rows, comparisons and analysis passes.

A study's training runs form a *run matrix*: groups of arms, one arm per seed, keyed by
whatever identifies the group in the study (``(model, policy, regime)``, a policy name, a
variant name). :func:`seed_arms` builds one group, :func:`train_groups` trains every arm of
every group (cached, see :mod:`runs.run_cache`) and :func:`run_row` turns one group into the
columns every training-run row carries (mean ± std over seeds of :data:`RUN_METRICS`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.base import TolerancePolicy
from agents.evaluate import ToleranceTrace, policy_tolerance
from flows import EVAL_TOL  # noqa: F401  (the studies import it from here)
from runs.aggregate import RUN_METRICS, aggregate_series, read_jsonl, run_metrics, run_series, summarise
from runs.run_cache import Arm, Context, digits_arm, run_arms

#: Fraction of a run's last iterations whose logged records count as "end of training".
LAST_FRACTION = 0.25


# ============================================================================ the run matrix
def seed_arms(ctx: Context, model: str, policy: str, regime: str, **kwargs: Any) -> list[Arm]:
    """One :func:`runs.run_cache.digits_arm` per seed of ``ctx`` (``kwargs`` go to every arm)."""
    return [digits_arm(ctx, model, policy, regime, s, **kwargs) for s in ctx.seeds]


def train_groups(ctx: Context, groups: Mapping[Any, list[Arm]]) -> dict[Arm, dict]:
    """Train every arm of every group (cached runs are reused); each arm's ``summary.json``."""
    return run_arms(ctx, [a for arms in groups.values() for a in arms])


def run_row(ctx: Context, arms: list[Arm], summaries: dict[Arm, dict]) -> dict:
    """The columns of one group's row: ``seeds``, mean ± std of :data:`RUN_METRICS`, ``run_dirs``, ``per_seed``."""
    per_seed = [run_metrics(summaries[a]) for a in arms]
    return {"seeds": list(ctx.seeds), **summarise(per_seed, RUN_METRICS),
            "run_dirs": [a.run_dir(ctx.runs_dir).name for a in arms], "per_seed": per_seed}


def curve_rows(ctx: Context, groups: Mapping[tuple[str, str, str], list[Arm]]) -> list[dict]:
    """One row per ``(model, policy, regime)`` group: its evaluation curves, mean ± std over seeds."""
    rows = []
    for (model, policy, regime), arms in groups.items():
        batch = ctx.regimes[regime]["batch_size"]
        series = aggregate_series([run_series(a.run_dir(ctx.runs_dir), batch) for a in arms])
        rows.append({"model": model, "policy": policy, "batch": regime, "seeds": list(ctx.seeds), **series})
    return rows


# ============================================================================ comparisons
def ratio(a: float, b: float) -> float:
    """``a / b``, NaN when ``b`` is zero."""
    return a / b if b else float("nan")


def rel_diff(a: float, b: float) -> float:
    """Relative difference ``a / b - 1``."""
    return a / b - 1


def vs_fixed(row: dict, fixed: dict) -> dict:
    """A row's training NFE ratio and test bits/dim relative difference against the fixed-tolerance row."""
    return {"nfe_ratio_vs_fixed": ratio(row["nfe_mean"], fixed["nfe_mean"]),
            "bits_per_dim_rel_diff_vs_fixed": rel_diff(row["bits_per_dim_mean"], fixed["bits_per_dim_mean"])}


# ============================================================================ analysis of trained runs
@torch.no_grad()
def policy_pass(env: Any, x: torch.Tensor, y: torch.Tensor, policy: TolerancePolicy,
                generator: torch.Generator | None = None) -> tuple[Any, list[float], list[float]]:
    """One pass with the policy choosing each block's tolerance: output, log10 tols, policy stds."""
    trace = ToleranceTrace()
    model = env.model
    out = model(x.reshape(x.shape[0], *model.data_shape), y, tol=policy_tolerance(env, policy, trace),
                generator=generator)
    return out, trace.log_tols[0], trace.stds[0]


def batches(data: Any, batch_size: int, max_examples: int | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The split in order, in batches of ``batch_size`` (its first ``max_examples`` only, if given)."""
    from flows import iterate_batches
    from flows.data import LabelledData

    if max_examples is not None and max_examples < len(data):
        data = LabelledData(data.x[:max_examples], data.y[:max_examples], data.num_levels, data.num_classes,
                            data.flip, data.name)
    return list(iterate_batches(data, batch_size))


@torch.no_grad()
def latents(model: Any, data: Any, max_examples: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """z at the evaluation tolerance, the labels and the model's own predictions (dropout off)."""
    zs, ys, predictions = [], [], []
    for x, y in batches(data, 500, max_examples):
        out = model(x.reshape(x.shape[0], *model.data_shape), y, tol=EVAL_TOL,
                    generator=torch.Generator().manual_seed(0))
        zs.append(out.z)
        ys.append(y)
        predictions.append(out.predictions())
    return torch.cat(zs).double().numpy(), torch.cat(ys).numpy(), torch.cat(predictions).numpy()


def sup_size(model: Any, model_name: str, dim: int, sup_ratio: float, run_name: str) -> int:
    """Dimensions of z_y: the first ``sup_ratio`` of ``dim`` (Section 3.1); a ``ValueError`` where an
    InfoCNF run's own z_y differs (the probes would read another slice than its classifier)."""
    sup = round(sup_ratio * dim)
    if model_name == "infocnf" and model.head.sup_dim != sup:
        raise ValueError(f"{run_name}: z_y has {model.head.sup_dim} dims, sup_ratio {sup_ratio} gives {sup}")
    return sup


def probe_error(train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray]) -> float:
    """Test error of a linear probe: multinomial logistic regression fitted on ``train`` (features, labels)."""
    from sklearn.linear_model import LogisticRegression

    probe = LogisticRegression(max_iter=5000).fit(*train)
    return float(1.0 - probe.score(*test))


def training_tail(run_dir: Path, *keys: str) -> list[dict]:
    """The last :data:`LAST_FRACTION` (at least one) of the run's ``metrics.jsonl`` records holding ``keys``."""
    records = [m for m in read_jsonl(run_dir / "metrics.jsonl") if all(k in m for k in keys)]
    return records[-max(1, int(len(records) * LAST_FRACTION)):]
