"""learned-vs-fixed: learned vs fixed tolerances on digits, equal training budget.

``agents.fixed --tol 1e-5`` and ``agents.reinforce`` (its default settings with the paper's
Gaussian gates, :func:`runs.matrix.with_paper_gates`, and ``reinforce_args``) on ``env`` for
``iterations`` iterations, one run per seed (the seed also sets the flow's initial weights,
``env_kwargs`` ``seed``), through the run cache (:mod:`runs.run_cache`). Reports mean ± std over
seeds of the training NFE per iteration (forward + backward, averaged over training) and the
test bits/dim and error at tol 1e-5, per arm in ``rows`` (a dict: ``fixed``, ``reinforce``),
and ``nfe_ratio`` / ``bits_per_dim_rel_diff`` of the learned arm against the fixed one.

``reinforce_args`` chose the gates' initial mean: ``--init-mean=-3`` (the CLI's default, named
so that the result says it) wrote ``runs/results/learned_vs_fixed.json``; the
``learned_vs_fixed__init_mean-5.json`` file is an older run at initial mean -5 (then the
default), made before ``--seed`` also set the flow's initial weights, so it cannot be written
again as it is. Committed with ``--jobs 2``; the result's ``wall_s`` says what it took.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from runs.aggregate import mean_std
from runs.format import eval_tol
from runs.matrix import policy_agent_args
from runs.run_cache import Arm, Context, run_arms
from runs.study import Page, Res, Study
from runs.tables import cell

CONFIG: dict[str, Any] = {"env": "InfoCNF-Digits-v0", "iterations": 300, "reinforce_args": ["--init-mean=-3"],
                          "env_kwargs": {}}
QUICK: dict[str, Any] = {"iterations": 2}

#: The result files of this study on the page: the current one and the older run at initial mean -5.
FILES = ("learned_vs_fixed__init_mean-5", "learned_vs_fixed")


def run(ctx: Context) -> dict:
    cfg = ctx.config
    arms: dict[str, list[Arm]] = {}
    for policy in ("fixed", "reinforce"):
        module, flags = policy_agent_args(policy, cfg["reinforce_args"] if policy == "reinforce" else None)
        arms[policy] = [Arm(f"learned-vs-fixed-{policy}", module, cfg["env"], s, cfg["iterations"], 0, tuple(flags),
                            tuple(sorted({**cfg["env_kwargs"], "seed": s}.items()))) for s in ctx.seeds]
    summaries = run_arms(ctx, [a for group in arms.values() for a in group])
    table: dict[str, dict[str, Any]] = {}
    for policy, group in arms.items():
        runs = [summaries[a] for a in group]
        table[policy] = {
            "seeds": [r["seed"] for r in runs],
            **{f"{k}_{m}": v for k, key in (("nfe", "train_nfe_mean"), ("nfe_forward", "train_nfe_forward_mean"))
               for m, v in zip(("mean", "std"), mean_std([r[key] for r in runs]), strict=True)},
            **{f"{k}_{m}": v for k in ("bits_per_dim", "marginal_bits_per_dim", "error")
               for m, v in zip(("mean", "std"), mean_std([r["test"][k] for r in runs]), strict=True)},
            "wall_s_mean": float(np.mean([r["wall_s"] for r in runs])),
            "mean_log10_tol_last": float(np.mean([r["mean_log10_tol_last"] for r in runs])),
        }
    fixed, learned = table["fixed"], table["reinforce"]
    return {"env": cfg["env"], "iterations": cfg["iterations"], "reinforce_args": list(cfg["reinforce_args"]),
            "rows": table, "nfe_ratio": learned["nfe_mean"] / fixed["nfe_mean"],
            "bits_per_dim_rel_diff": learned["bits_per_dim_mean"] / fixed["bits_per_dim_mean"] - 1}


def init_mean(key: str, result: dict) -> str:
    """The gates' initial mean of a learned-vs-fixed result: its ``--init-mean`` flag or file name."""
    for arg in result.get("reinforce_args", []):
        if arg.startswith("--init-mean="):
            return arg.split("=", 1)[1]
    return key.rsplit("init_mean", 1)[1] if "init_mean" in key else "(default)"


def section(res: Res) -> str:
    lvf = [(k, res[k]) for k in FILES if k in res]
    lines = [("| gate initial mean | fixed NFE / it | learned NFE / it | NFE ratio | fixed bits/dim | "
             "learned bits/dim | learned final log10 tol |"), "|" + " --- |" * 7]
    for key, r in lvf:
        f, learned = r["rows"]["fixed"], r["rows"]["reinforce"]
        lines.append(f"| {init_mean(key, r)} | {cell(f, 'nfe', 1)} | {cell(learned, 'nfe', 1)} | "
                     f"{r['nfe_ratio']:.3f} | {cell(f, 'bits_per_dim', 4)} | "
                     f"{cell(learned, 'bits_per_dim', 4)} | {learned['mean_log10_tol_last']:.2f} |")
    r0 = lvf[0][1]
    return f"""\
`python -m runs.reproduce learned-vs-fixed`, written to `runs/results/learned_vs_fixed*.json`: \
{len(r0['rows']['fixed']['seeds'])} seeds x {r0['iterations']} iterations of `{r0['env']}`, training NFE per
iteration (forward + backward, averaged over training) and test bits/dim at {eval_tol(res)}. These runs chose
the gates' initial mean; the `init_mean-5` file predates `--seed` also setting the flow's initial
weights, so its fixed arm differs from the other's.

""" + "\n".join(lines)


STUDY = Study(
    name="learned-vs-fixed",
    summary="learned (REINFORCE) vs fixed 1e-5 tolerances on digits at an equal training budget",
    config=CONFIG,
    quick=QUICK,
    run=run,
    page=Page("Learned vs fixed tolerance", order=1000, render=section, needs=("learned_vs_fixed",)),
    uses_digits_regimes=False,
    stem="learned_vs_fixed",
)
