"""tol-integral: does the density integrate to one at a given solver tolerance? (Fig. 2a, App. C-D)

InfoCNF is trained on the Appendix C 1-D mixture of three Gaussians (``InfoCNF-Toy1D-v0``,
fixed tolerance 1e-5). Its marginal density p(x) (log-sum-exp over classes) is then
integrated by a Riemann sum over ``grid`` with every block solved at each tolerance of
``tols``; the study reports |integral - 1| against the tolerance (log plot). The grid alone
(the true mixture density summed on the same points) is accurate to ``grid_error`` in the
JSON. With ``learned``, a second model is trained with REINFORCE gates and the integral is
also computed at the gates' own tolerances (Appendix D reports an error of 0.00014).

``dtype``: the precision the sweep runs the trained model in. float32 is what training and
evaluation use; "float64" separates solver error from float32 round-off at the tightest
tolerances (on a 100-iteration model both gave the same curve: |integral - 1| ~1e-7 at
1e-8, ~4e-5 at 1e-5, ~6e-3 at 1e-1).

Cost (full): 6 runs of 1,000 iterations at ~0.09 s/iteration (one core) plus the sweep
(~0.1-0.4 s per tolerance): ~10 CPU-minutes, ~5 min with ``--jobs 2``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from agents.evaluate import load_policy, load_run
from runs.aggregate import summarise
from runs.run_cache import Arm, Context
from runs.studies.common import policy_pass, train_groups

ROW_KEYS = ("policy", "tol", "seeds", "abs_error_mean", "abs_error_std", "integral_mean", "integral_std",
            "nfe_mean", "nfe_std")
#: A 1-D toy study: its JSON leaves out the digits regimes.
USES_DIGITS_REGIMES = False

CONFIG = {
    "env": "InfoCNF-Toy1D-v0",
    "iterations": 1000,
    "learned": True,
    "grid": {"low": -15.0, "high": 15.0, "points": 6001},
    "tols": [1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1],
    "dtype": "float32",
    "env_kwargs": {},
}
QUICK = {
    "iterations": 5,
    "grid": {"points": 801},
    "tols": [1e-8, 1e-5, 1e-2, 1e-1],
    "env_kwargs": {"hidden": 8},
}


def run(ctx: Context) -> dict:
    from flows import SolverError
    from flows.data import toy1d_density

    cfg = ctx.config
    kwargs = tuple(sorted(cfg["env_kwargs"].items()))
    policies: dict[str, tuple[str, tuple[str, ...]]] = {"fixed": ("fixed", ("--tol", "1e-5"))}
    if cfg["learned"]:
        policies["reinforce"] = ("reinforce", ())
    groups = {p: [Arm(f"toy1d-{p}", module, cfg["env"], s, cfg["iterations"], 0, flags, kwargs) for s in ctx.seeds]
              for p, (module, flags) in policies.items()}
    train_groups(ctx, groups)
    dtype = getattr(torch, cfg["dtype"])
    g = cfg["grid"]
    grid = torch.linspace(g["low"], g["high"], g["points"], dtype=torch.float64)
    dx = float(grid[1] - grid[0])
    x = grid.to(dtype).reshape(-1, 1)
    y = torch.zeros(len(grid), dtype=torch.long)
    per_tol: dict[float, list[dict]] = {t: [] for t in cfg["tols"]}
    learned: list[dict] = []
    failures: list[str] = []

    def integrate(out: Any) -> dict:
        integral = float(out.marginal_logpx.to(torch.float64).exp().sum() * dx)
        return {"integral": integral, "abs_error": abs(integral - 1.0), "nfe": out.nfe_forward}

    for arm in groups["fixed"]:
        trained = load_run(arm.run_dir(ctx.runs_dir))
        trained.model.to(dtype)
        for tol in cfg["tols"]:
            try:
                with torch.no_grad():
                    out = trained.model(x, y, tol=tol, generator=torch.Generator().manual_seed(0))
            except SolverError as err:
                failures.append(f"seed {arm.seed} tol {tol:g}: {err}")
                continue
            per_tol[tol].append(integrate(out))
    for arm in groups.get("reinforce", []):
        trained = load_run(arm.run_dir(ctx.runs_dir))
        trained.model.to(dtype)
        policy = load_policy(arm.run_dir(ctx.runs_dir), trained.env)
        out, log_tols, _ = policy_pass(trained.env, x, y, policy, torch.Generator().manual_seed(0))
        learned.append({**integrate(out), "log10_tol": float(np.mean(log_tols))})
    rows = []
    for tol, records in per_tol.items():
        if records:
            rows.append({"policy": "fixed", "tol": tol, "seeds": list(ctx.seeds),
                         **summarise(records, ("abs_error", "integral", "nfe"))})
    if learned:
        stats = summarise(learned, ("abs_error", "integral", "nfe", "log10_tol"))
        rows.append({"policy": "reinforce", "tol": 10.0 ** stats["log10_tol_mean"], "seeds": list(ctx.seeds), **stats})
    grid_error = abs(float(toy1d_density(grid).sum() * dx) - 1.0)
    return {"rows": rows, "grid_error": grid_error, "solver_failures": failures}
