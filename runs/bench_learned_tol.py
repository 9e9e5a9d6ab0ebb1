"""Learned vs fixed tolerances on digits, equal training budget.

    python -m runs.bench_learned_tol [--seeds 0 1 2] [--iterations 300] [--jobs 2]

Runs ``agents.fixed --tol 1e-5`` and ``agents.reinforce`` (default settings, the paper's
Gaussian gates: ``runs.matrix.with_paper_gates``) on ``InfoCNF-Digits-v0`` for each seed (the
seed also sets the flow's initial weights), each as its own process (``--threads`` each:
default 1 with ``--jobs > 1``, else 2), and reports mean ± std over seeds of
the training NFE per iteration (forward + backward, averaged over training) and the test
bits/dim and error at tol 1e-5.
Writes ``runs/results/learned_vs_fixed.json``; run directories go under ``--workdir``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from agents.cli import RUNS_ROOT, command_parser
from runs.matrix import with_paper_gates


def _run(agent: str, seed: int, iterations: int, workdir: Path, extra: list[str], threads: int) -> dict:
    out = workdir / f"{agent}__{seed}"
    cmd = [sys.executable, "-m", f"agents.{agent}", "--env", "InfoCNF-Digits-v0", "--seed", str(seed),
           "--iterations", str(iterations), "--eval-every", "0", "--out", str(out), "--no-progress",
           "--no-tensorboard", "--threads", str(threads), *with_paper_gates(agent, extra),
           "--env-kwargs", f"seed={seed}"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return json.loads((out / "summary.json").read_text())


def _stats(values: list[float]) -> tuple[float, float]:
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0  # as runs.reproduce


def main(argv: list[str] | None = None) -> dict:
    parser = command_parser("runs.bench_learned_tol", __doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--workdir", default=f"{RUNS_ROOT}/bench_learned_tol")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads of each run (default: 1 with --jobs > 1, else 2)")
    parser.add_argument("--json", default="runs/results/learned_vs_fixed.json")
    parser.add_argument("--reinforce-args", nargs="*", default=[], help="extra flags for agents.reinforce")
    args = parser.parse_args(argv)
    workdir = Path(args.workdir)
    threads = args.threads or (1 if args.jobs > 1 else 2)
    jobs = [(agent, seed, extra) for seed in args.seeds
            for agent, extra in (("fixed", ["--tol", "1e-5"]), ("reinforce", args.reinforce_args))]
    with ThreadPoolExecutor(args.jobs) as pool:
        summaries = list(pool.map(lambda j: _run(j[0], j[1], args.iterations, workdir, j[2], threads), jobs))
    rows: dict[str, list[dict]] = {}
    for (agent, _seed, _), s in zip(jobs, summaries, strict=True):
        rows.setdefault(agent, []).append(s)
    table: dict[str, dict[str, Any]] = {}
    for agent, runs in rows.items():
        table[agent] = {
            "seeds": [r["seed"] for r in runs],
            **{f"{k}_{m}": v for k, key in (("nfe", "train_nfe_mean"), ("nfe_forward", "train_nfe_forward_mean"))
               for m, v in zip(("mean", "std"), _stats([r[key] for r in runs]), strict=True)},
            **{f"{k}_{m}": v for k in ("bits_per_dim", "marginal_bits_per_dim", "error")
               for m, v in zip(("mean", "std"), _stats([r["test"][k] for r in runs]), strict=True)},
            "wall_s_mean": float(np.mean([r["wall_s"] for r in runs])),
            "mean_log10_tol_last": float(np.mean([r["mean_log10_tol_last"] for r in runs])),
        }
    fixed, learned = table["fixed"], table["reinforce"]
    result = {
        "env": "InfoCNF-Digits-v0", "iterations": args.iterations, "reinforce_args": args.reinforce_args,
        "rows": table,
        "nfe_ratio": learned["nfe_mean"] / fixed["nfe_mean"],
        "bits_per_dim_rel_diff": learned["bits_per_dim_mean"] / fixed["bits_per_dim_mean"] - 1,
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2))
    print(f"{'arm':<10} {'NFE/iter (f+b)':>16} {'test bits/dim':>16} {'test error':>14} {'log10 tol (end)':>16}")
    for agent, r in table.items():
        print(f"{agent:<10} {r['nfe_mean']:>9.1f} ± {r['nfe_std']:<4.1f} {r['bits_per_dim_mean']:>9.4f} ± "
              f"{r['bits_per_dim_std']:<5.4f} {r['error_mean']:>7.4f} ± {r['error_std']:<5.4f} "
              f"{r['mean_log10_tol_last']:>10.2f}")
    print(f"NFE ratio learned/fixed: {result['nfe_ratio']:.3f} (target <= 0.70); "
          f"bits/dim relative difference: {100 * result['bits_per_dim_rel_diff']:+.2f}% (target within 1%)")
    return result


if __name__ == "__main__":
    main()
