"""leaderboard-cnf: the leaderboard study on the CNF task with room, ``CNF-Frozen-Mixed-v0``.

The same code as ``leaderboard`` (:mod:`runs.studies.leaderboard`: the baselines chosen on the
training pool, every agent and baseline scored on the held-out test pool), on the frozen-flow
task whose episodes differ in difficulty: small batches from five toy densities, each solved by
its density's flow of two stacked blocks (:mod:`infocnf_env.frozen`). Its targets: the oracle's
room over the best schedule at least 15%, the best agent closing at least half of it.

Cost (full): the five flows, trained once until their loss plateaus and cached (~10 minutes
each on a core), references and grids of 128 episodes (a few minutes), 5 agents x 3 seeds x
``agent_episodes`` episodes of two blocks (~0.05-0.2 s each): under an hour with ``--jobs 2``.
"""

from __future__ import annotations

import math
from typing import Any

from runs.docs import Res
from runs.studies.leaderboard import COLUMNS as ODE_COLUMNS
from runs.studies.leaderboard import CONFIG as ODE_CONFIG
from runs.studies.leaderboard import NULLABLE_KEYS, ROW_KEYS, _leaderboard, plot, run

__all__ = ["COLUMNS", "CONFIG", "NEEDS", "NULLABLE_KEYS", "PAGE_ORDER", "QUICK", "ROW_KEYS", "TITLE",
           "USES_DIGITS_REGIMES", "plot", "run", "section"]

CONFIG: dict[str, Any] = {
    **ODE_CONFIG,
    "tasks": ["CNF-Frozen-Mixed-v0"],
    "task_kwargs": {},
    "targets": {"gap_fraction": 0.15, "gap_closed": 0.5, "nfe_saving_at_equal_error": 0.2},
}
QUICK: dict[str, Any] = {
    "task_kwargs": {"densities": ["checkerboard", "8gaussians"], "hidden": 4, "train_iterations": 3,
                    "train_pool_size": 2, "test_pool_size": 2},
    "grid_step": 4.0,
    "schedule_grid_step": 4.0,
    "agents": ["reinforce", "ppo"],
    "agent_episodes": 4,
    "contextual_neighbours": 1,
}

USES_DIGITS_REGIMES = False


# ============================================================================ table, figure, results page
#: Columns of the study's table (:func:`runs.tables.table`): (header, row key or ``key_mean`` stem,
#: digits); a stem that has ``_mean`` / ``_std`` in the row prints as ``mean ± std``. The
#: leaderboard's, with the error in nats of log-density to 5 digits.
COLUMNS = [("error [nats]", "error", 5) if key == "error" else (header, key, digits)
           for header, key, digits in ODE_COLUMNS]


#: The study's section of docs/results.md (:mod:`runs.docs`): its title, the result files it
#: needs (the section is left out without them) and its place on the page (ascending).
TITLE = "Tolerance learning with room on frozen CNFs, held-out scoring"
NEEDS = ("leaderboard-cnf",)
PAGE_ORDER = 160


def section(res: Res) -> str:
    d = res["leaderboard-cnf"]
    t = d["tasks"][0]
    r = t["reward"]
    cost = (f"{r['error_weight']:g} per decade of error above {r['error_target']:g} nats" if r["error_form"] == "target"
            else f"{r['error_weight']:g} x error (nats)")
    errors = [f["error"] for f in t["best_constant_per_family"].values()]
    spread = math.log10(max(errors) / min(errors)) if min(errors) > 0 else math.inf
    return _leaderboard(d, "leaderboard-cnf", res.get("tune-cnf"), f"""\
The CNF task with room (`CNF-Frozen-Mixed-v0`, [environment](environment.md#the-frozen-flow-benchmark)): \
each episode a small batch from one of {len(t['families'])} toy densities, solved by that density's frozen flow of \
{t['segments']} stacked blocks (one decision per block); error = mean |log p(x) - log p_ref(x)| against a 1e-8 \
solve; reward -{r['alpha']:g}/{t['segments']} x the NFE of each block - {cost}: the single-density tasks' reward, \
unchanged (log-density errors share one unit across the densities; at the best constant tolerance the densities' \
mean errors span {spread:.1f} decades, the table at the end). Flows trained until the loss plateaus (iterations \
per density: {', '.join(f"{k} {v}" for k, v in t.get('trained_steps', {}).items())}; 3000 is the cap).""")
