"""Reproduce the paper's studies at CPU scale on the bundled digits.

    python -m runs.reproduce STUDY [--seeds 3] [--quick] [--jobs N] [--workdir DIR] [--out DIR]
    python -m runs.reproduce all --jobs 2                  # every study, digits-table first

Studies (one module each in ``runs/studies/``, holding the study's config, code, table
columns, plot and results-page section, see :mod:`runs.studies`; its docstring says what is
run, how it maps to the paper and what it costs):

=====================  ==========================================================================
``digits-table``      Tables 1-2: CCNF / InfoCNF fixed 1e-5 / InfoCNF learned, small + large batch
``uncond``            Fig. 4: unconditional CNF with vs without learned tolerances
``tol-integral``      Fig. 2a: |integral of p - 1| against the evaluation tolerance (1-D mixture)
``tol-hist``          Fig. 2b: learned tolerances per block on the train vs test sets
``curves``            Fig. 3: test error, test bits/dim and NFE over training
``eval-batch``        Appendix D: evaluation with the learned tolerances at various batch sizes
``policies``          REINFORCE vs SB3 PPO / SAC / A2C / TD3 vs fixed as the tolerance policy
``frozen``            policies on a frozen pre-trained flow against the fixed-tolerance front
``samples``           Fig. 7: class-conditional sample grid
``reinforce-ablation`` REINFORCE variants (gate lr, baseline, entropy, bounds) vs fixed 1e-5 / 1e-2
``latent-probe``      linear probes on z_y, z_u and z of CCNF and InfoCNF against their own classifier
``speed``             warm starts, regularizers, learned tolerances, combined
``speed-adjoint``     the seminorm adjoint, warm starts, learned tolerances on the adjoint path
``speed-classical``   learned tolerances on top of the best classical solver setting, direct and adjoint
``beta``              InfoCNF vs CCNF (authors' heads) as beta grows to CIFAR10's supervision ratio
``tune``              the leaderboard agents' learning rates, chosen on the training pool of ``ODE-Mixed-v0``
``tune-cnf``          the same on ``CNF-Frozen-Mixed-v0``
``benchmark``         the leaderboard: agents on ``ODE-Mixed-v0`` and ``CNF-Frozen-Mixed-v0`` against every
                      classical solver setting, the best of them and the oracles; co-training with every lever
``threads``           the README's main job at 1 and 2 CPU threads, idle and beside a busy process
=====================  ==========================================================================

Every study aggregates mean ± std over seeds (sample std, ddof=1; 0 for one seed) and writes
``OUT/STUDY.json`` and ``OUT/STUDY.png``. ``OUT`` is ``runs/results`` (``runs/results/quick``
with ``--quick``, so smoke runs never overwrite real results). The JSON always holds
``study``, ``quick``, ``seeds``, ``config`` (the merged study config, plus the digits regimes
where used), ``rows`` (a list of dicts, keys in :data:`ROW_KEYS`, gathered from the study
modules), ``plots`` and ``wall_s``; some studies add more (``targets``, ``front``, ``curves``,
...). Non-finite numbers (a diverged run) are written as ``null``.

Training runs are the agent CLIs (``agents.fixed``, ``agents.reinforce``, ``agents.sb3``)
with ``--out`` under ``WORKDIR/runs/``, one directory per configuration: the name ends with
a hash of everything that affects training, so a finished run is reused by every study that
needs it (``curves``, ``tol-hist``, ``eval-batch``, ``samples``, ``frozen`` and ``policies``
reuse the ``digits-table`` runs) and an interrupted one is resumed from its checkpoint. With
``--jobs N > 1`` runs go to N subprocesses of one thread each; otherwise they run in this
process with ``--threads`` torch threads. Logs go to ``WORKDIR/logs/``.
The run cache is :mod:`runs.run_cache`; the digits run matrix (environment ids, policies,
training regimes) is :mod:`runs.matrix`; the mean ± std and curve aggregation is
:mod:`runs.aggregate`; the helpers the studies share are :mod:`runs.studies.common`; this
module is the driver.

``--quick``: 4-filter dynamics, 2-5 iterations, one seed, few evaluation batches: the smoke
test of every study, used by ``tests/test_reproduce.py``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from agents.cli import RUNS_ROOT, command_parser
from infocnf_env.threads import using_threads
from runs.aggregate import finite
from runs.matrix import digits_regimes
from runs.run_cache import Context
from runs.studies import MODULES, load_config, study_module

STUDIES = tuple(MODULES)
#: Keys every row of a study's ``rows`` holds (``*_mean`` keys come with ``*_std``).
ROW_KEYS: dict[str, tuple[str, ...]] = {s: study_module(s).ROW_KEYS for s in STUDIES}
#: study -> its ``run(ctx) -> dict``.
RUNNERS: dict[str, Callable[[Context], dict]] = {s: study_module(s).run for s in STUDIES}


def write_result(study: str, full: dict, out: Path) -> None:
    """Draw ``OUT/STUDY.png``, add it to ``full["plots"]`` and write ``OUT/STUDY.json``."""
    from runs.plots import plot

    out.mkdir(parents=True, exist_ok=True)
    png = out / f"{study}.png"
    plot(study, full, png)
    full["plots"] = [png.name]
    (out / f"{study}.json").write_text(json.dumps(full, indent=2))
    print(f"[{study}] wrote {out / (study + '.json')} and {png} ({full['wall_s']:.0f}s)", flush=True)


def run_study(study: str, *, seeds: int | None = None, quick: bool = False, jobs: int = 1, threads: int = 1,
              workdir: str | Path | None = None, out: str | Path | None = None) -> dict:
    """Run one study and write ``OUT/STUDY.json`` and ``OUT/STUDY.png``; return the result."""
    module = study_module(study)
    n_seeds = seeds if seeds is not None else (1 if quick else getattr(module, "SEEDS", 3))
    if n_seeds < 1:
        raise ValueError("--seeds must be positive")
    workdir = Path(workdir or (f"{RUNS_ROOT}/reproduce/quick" if quick else f"{RUNS_ROOT}/reproduce")).resolve()
    out = Path(out or ("runs/results/quick" if quick else "runs/results"))
    ctx = Context(study, quick, tuple(range(n_seeds)), jobs, threads, workdir, out, load_config(study, quick),
                  digits_regimes(quick))
    start = time.perf_counter()
    with using_threads(threads):
        result = module.run(ctx)
    regimes = ctx.regimes if getattr(module, "USES_DIGITS_REGIMES", True) else {}
    full = finite({"study": study, "quick": quick, "seeds": list(ctx.seeds), "config": ctx.config,
                   "regimes": regimes, "workdir": str(workdir), **result, "wall_s": time.perf_counter() - start})
    write_result(study, full, out)
    return full


def main(argv: list[str] | None = None) -> dict:
    parser = command_parser("runs.reproduce", __doc__)
    parser.add_argument("study", choices=[*STUDIES, "all"], help="study to run ('all': every study in order)")
    parser.add_argument("--seeds", type=int, default=None,
                        help="number of seeds 0..n-1 (default: the study's SEEDS, else 3; 1 with --quick)")
    parser.add_argument("--quick", action="store_true", help="tiny smoke-test sizes")
    parser.add_argument("--jobs", type=int, default=1, help="training runs in parallel (subprocesses, 1 thread each)")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads of in-process training and analysis (torch and NumPy's BLAS; default 1: "
                             "the studies' tensors are too small to share, infocnf_env.threads)")
    parser.add_argument("--workdir", default=None,
                        help=f"run directories and logs (default {RUNS_ROOT}/reproduce[/quick])")
    parser.add_argument("--out", default=None, help="JSON and PNG folder (default runs/results[/quick])")
    args = parser.parse_args(argv)
    studies = STUDIES if args.study == "all" else (args.study,)
    results = {}
    for study in studies:
        results[study] = run_study(study, seeds=args.seeds, quick=args.quick, jobs=args.jobs, threads=args.threads,
                                   workdir=args.workdir, out=args.out)
    return results if args.study == "all" else results[args.study]


if __name__ == "__main__":
    main()
