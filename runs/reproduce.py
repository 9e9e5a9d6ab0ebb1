"""Reproduce the paper's studies at CPU scale on the bundled digits.

    python -m runs.reproduce STUDY [--seeds 3] [--quick] [--jobs N] [--workdir DIR] [--out DIR]
    python -m runs.reproduce all --jobs 2                  # every study, digits-table first
    python -m runs.reproduce bench-cifar --set device=cuda batch=900 --out runs/results/gpu

Studies (one module each in ``runs/studies/``, registered in :mod:`runs.studies`, each a
:class:`runs.study.Study` holding its config, code, table columns, figure and results-page
section; its module's docstring says what is run, how it maps to the paper and what it costs;
this table is the registry's, ``python -m runs.studies``):

=========================  =============================================================================================
``digits-table``           Tables 1-2: CCNF / InfoCNF fixed 1e-5 / InfoCNF learned, small + large batch
``uncond``                 Fig. 4: unconditional CNF with vs without learned tolerances
``tol-integral``           Fig. 2a: |integral of p - 1| against the evaluation tolerance (1-D mixture)
``tol-hist``               Fig. 2b: learned tolerances per block on the train vs test sets
``curves``                 Fig. 3: test error, test bits/dim and NFE over training
``eval-batch``             Appendix D: evaluation with the learned tolerances at various batch sizes
``policies``               REINFORCE vs SB3 PPO / SAC / A2C / TD3 vs fixed as the tolerance policy
``frozen``                 policies on a frozen pre-trained flow against the fixed-tolerance front
``samples``                Fig. 7: class-conditional sample grid
``reinforce-ablation``     REINFORCE variants (gate lr, baseline, entropy, bounds) vs fixed 1e-5 / 1e-2
``latent-probe``           linear probes on z_y, z_u and z of CCNF and InfoCNF against their own classifier
``speed``                  warm starts, regularizers, learned tolerances, combined
``speed-adjoint``          the seminorm adjoint, warm starts, learned tolerances on the adjoint path
``speed-classical``        learned tolerances on top of the best classical solver setting, direct and adjoint
``beta``                   InfoCNF vs CCNF (authors' heads) as beta grows to CIFAR10's supervision ratio
``tune``                   the leaderboard agents' learning rates, chosen on the training pool of ODE-Mixed-v0
``tune-cnf``               the same on CNF-Frozen-Mixed-v0
``benchmark``              the leaderboard: agents vs every classical solver setting and the oracles, ODE and CNF tasks
``leaderboard-scale``      the leaderboard's agents searched by Optuna, trained 10x longer on the ODE task's vector env
``leaderboard-scale-cnf``  the leaderboard's agents searched by Optuna, trained 10x longer on the CNF task's vector env
``threads``                the README's main job at 1 and 2 CPU threads, idle and beside a busy process
``learned-vs-fixed``       learned (REINFORCE) vs fixed 1e-5 tolerances on digits at an equal training budget
``spirals``                Section 4.6: the LatentODE with and without the partitioned latent code on spirals
``spirals-ab-ceiling``     how much of a spiral's (a, b) one noisy window holds: the ceiling of the spirals head
``bench-env``              performance: a training iteration through the environment vs the plain block loop
``throughput``             performance: env steps/s of the single env, gymnasium's vector envs and the native vector env
``bench-flow``             performance: our CNF block's cost per NFE, and the NFE per iteration against the tolerance
``bench-backend``          performance: the ODE backends of flows.ode.solve on the digits flow
``bench-cifar``            performance: the CIFAR10 ids' adjoint path beside a minimal FFJORD solve
``bench-gpu``              performance: the CIFAR10 id on a GPU (time per iteration, NFE, memory); run by name
=========================  =============================================================================================

Every study aggregates mean ± std over seeds (sample std, ddof=1; 0 for one seed) and writes
``OUT/STEM.json`` (``STEM`` is the study's name unless it keeps an older file name, e.g.
``bench-flow`` writes ``bench_flow.json``) and the figure its ``plot`` draws, ``OUT/STEM.png``.
``OUT`` is ``runs/results`` (``runs/results/quick`` with ``--quick``, so smoke runs never
overwrite real results). The JSON always holds the :class:`runs.study.CommonFields`:
``study``, ``quick``, ``seeds``, ``config`` (the merged study config), ``regimes`` (the
digits regimes where used), ``workdir``, ``rows`` (a list of dicts, keys in the study's
``row_keys``; empty for a study without a table), ``plots`` and ``wall_s``; each study adds its
own entries (``targets``, ``front``, ``curves``, ...). Non-finite numbers (a diverged run) are
written as ``null``. ``--set KEY=VALUE`` changes one config entry (a Python literal, else a
string; ``a.b=...`` for a nested one); it is written into the JSON's ``config``.

Training runs are the agent CLIs (``agents.fixed``, ``agents.reinforce``, ``agents.sb3``)
with ``--out`` under ``WORKDIR/runs/``, one directory per configuration: the name ends with
a hash of everything that affects training, so a finished run is reused by every study that
needs it (``curves``, ``tol-hist``, ``eval-batch``, ``samples``, ``frozen`` and ``policies``
reuse the ``digits-table`` runs) and an interrupted one is resumed from its checkpoint. With
``--jobs N > 1`` runs go to N subprocesses of one thread each; otherwise they run in this
process with ``--threads`` torch threads (the performance studies, ``bench-*``, time their own
thread counts, set in their config). Logs go to ``WORKDIR/logs/``.
The run cache is :mod:`runs.run_cache`; the digits run matrix (environment ids, policies,
training regimes) is :mod:`runs.matrix`; the mean ± std and curve aggregation is
:mod:`runs.aggregate`; the helpers the studies share are :mod:`runs.studies.common`; this
module is the driver.

``--quick``: 4-filter dynamics, 2-5 iterations, one seed, few evaluation batches: the smoke
test of every study, used by ``tests/test_reproduce.py``.
"""

from __future__ import annotations

import ast
import json
import time
from pathlib import Path
from typing import Any

from agents.cli import RUNS_ROOT, command_parser
from infocnf_env.threads import using_threads
from runs.aggregate import finite
from runs.matrix import digits_regimes
from runs.run_cache import Context
from runs.studies import names, registry, study
from runs.study import Result, Study

#: Every study's name, in the order ``all`` runs them (:data:`runs.studies.MODULES`).
STUDIES = names()


def write_result(s: Study, full: Result, path: Path) -> None:
    """Draw the study's figure beside ``path`` (``STEM.png``), list it in ``full["plots"]`` and
    write ``full`` to ``path``. A study without a ``plot`` lists the figures its run drew."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if s.plot is not None:
        png = path.with_suffix(".png")
        s.plot(full, png)
        full["plots"] = [png.name]
    else:
        full["plots"] = list(full.get("plots", []))
    path.write_text(json.dumps(full, indent=2))
    figures = "".join(f" and {path.parent / name}" for name in full["plots"])
    print(f"[{s.name}] wrote {path}{figures} ({full['wall_s']:.0f}s)", flush=True)


def run_study(name: str, *, seeds: int | None = None, quick: bool = False, jobs: int = 1, threads: int = 1,
              workdir: str | Path | None = None, out: str | Path | None = None,
              overrides: dict[str, Any] | None = None, path: str | Path | None = None) -> Result:
    """Run study ``name`` and write ``OUT/STEM.json`` (or ``path``) and its figure; return the result.

    ``overrides`` are merged into the study's config (after the quick settings)."""
    s = study(name)
    n_seeds = seeds if seeds is not None else (1 if quick else s.seeds)
    if n_seeds < 1:
        raise ValueError("--seeds must be positive")
    workdir = Path(workdir or (f"{RUNS_ROOT}/reproduce/quick" if quick else f"{RUNS_ROOT}/reproduce")).resolve()
    out = Path(out or ("runs/results/quick" if quick else "runs/results"))
    path = Path(path) if path is not None else out / f"{s.stem}.json"
    ctx = Context(s.name, quick, tuple(range(n_seeds)), jobs, threads, workdir, path.parent,
                  s.load_config(quick, overrides), digits_regimes(quick), path)
    start = time.perf_counter()
    with using_threads(threads):
        result = s.run(ctx)
    regimes = ctx.regimes if s.uses_digits_regimes else {}
    full = finite({"study": s.name, "quick": quick, "seeds": list(ctx.seeds), "config": ctx.config,
                   "regimes": regimes, "workdir": str(workdir), "rows": [], **result,
                   "wall_s": time.perf_counter() - start})
    write_result(s, full, path)
    return full


def parse_overrides(name: str, pairs: list[str]) -> dict[str, Any]:
    """``--set KEY=VALUE`` pairs as a nested dict of config overrides of study ``name``: each
    value a Python literal, else a string; one ``ValueError`` for a malformed pair or a key the
    study's config lacks."""
    config = study(name).config
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--set takes KEY=VALUE, got {pair!r}")
        try:
            value: Any = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        *parents, leaf = key.split(".")
        node, target = config, overrides
        for part in parents:
            if not isinstance(node, dict) or part not in node:
                raise ValueError(f"--set {key}: study {name} has no config entry {part!r}")
            node, target = node[part], target.setdefault(part, {})
        if not isinstance(node, dict) or leaf not in node:
            valid = ", ".join(node) if isinstance(node, dict) else "none"
            raise ValueError(f"--set {key}: study {name} has no config entry {leaf!r}; valid: {valid}")
        target[leaf] = value
    return overrides


def main(argv: list[str] | None = None) -> dict:
    parser = command_parser("runs.reproduce", __doc__)
    parser.add_argument("study", choices=[*STUDIES, "all"],
                        help="study to run ('all': every study in order, except those run by name only)")
    parser.add_argument("--seeds", type=int, default=None,
                        help="number of seeds 0..n-1 (default: the study's seeds, 3 for most; 1 with --quick)")
    parser.add_argument("--quick", action="store_true", help="tiny smoke-test sizes")
    parser.add_argument("--jobs", type=int, default=1, help="training runs in parallel (subprocesses, 1 thread each)")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads of in-process training and analysis (torch and NumPy's BLAS; default 1: "
                             "the studies' tensors are too small to share, infocnf_env.threads)")
    parser.add_argument("--workdir", default=None,
                        help=f"run directories and logs (default {RUNS_ROOT}/reproduce[/quick])")
    parser.add_argument("--out", default=None, help="JSON and PNG folder (default runs/results[/quick])")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="change config entries of the study (a Python literal, else a string; a.b for a "
                             "nested entry)")
    args = parser.parse_args(argv)
    if args.overrides and args.study == "all":
        parser.error("--set changes one study's config: name the study")
    studies = tuple(n for n, s in registry().items() if s.in_all) if args.study == "all" else (args.study,)
    try:
        overrides = parse_overrides(args.study, args.overrides) if args.overrides else None
    except ValueError as err:
        parser.error(str(err))
    results = {}
    for name in studies:
        results[name] = run_study(name, seeds=args.seeds, quick=args.quick, jobs=args.jobs, threads=args.threads,
                                  workdir=args.workdir, out=args.out, overrides=overrides)
    return results if args.study == "all" else results[args.study]


if __name__ == "__main__":
    main()
