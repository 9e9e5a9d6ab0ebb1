"""The command line of the ``bench-gpu`` study (:mod:`runs.studies.bench_gpu`), for a GPU machine.

    python -m runs.bench_gpu --synthetic                              # no CIFAR10 needed
    python -m runs.bench_gpu --data-root ~/data                       # real CIFAR10
    python -m runs.bench_gpu --policy reinforce --synthetic           # with the paper's CNN gates
    python -m runs.bench_gpu --env InfoCNF-CIFAR10-LargeBatch-v0 --synthetic --iterations 20
    python -m runs.bench_gpu --device cpu --synthetic --iterations 2 --batch-size 4 \\
        --env-kwargs hidden=8                                         # CPU smoke test

Each flag sets the study's config entry of its name; the study runs as ``python -m
runs.reproduce bench-gpu`` runs it and writes ``--json`` (default ``$OUT/bench_gpu.json``, else
``runs/results/bench_gpu.json``), rewritten after every iteration.
"""

from __future__ import annotations

import argparse
import os
import sys

from agents.cli import command_parser, parse_env_kwargs
from runs.reproduce import run_study
from runs.studies.bench_gpu import CONFIG, check


def main(argv: list[str] | None = None) -> dict:
    parser = command_parser("runs.bench_gpu", __doc__)
    parser.add_argument("--env", default=CONFIG["env"], help="registered id (CIFAR10 / MNIST ids)")
    parser.add_argument("--iterations", type=int, default=CONFIG["iterations"], help="training iterations to time")
    parser.add_argument("--warmup", type=int, default=CONFIG["warmup"], help="first iterations left out of the timing")
    parser.add_argument("--policy", choices=["fixed", "reinforce"], default=CONFIG["policy"],
                        help="fixed tolerance --tol for every block, or REINFORCE CNN gates")
    parser.add_argument("--tol", type=float, default=CONFIG["tol"], help="tolerance of --policy fixed")
    parser.add_argument("--batch-size", type=int, default=None, help="override the id's batch size")
    parser.add_argument("--device", default=CONFIG["device"], help="torch device (auto: cuda where there is one)")
    parser.add_argument("--data-root", default=None, help="folder holding cifar-10-batches-py/ (real data)")
    parser.add_argument("--synthetic", action="store_true", help="random images in CIFAR10's format instead")
    parser.add_argument("--env-kwargs", nargs="*", default=[], help="environment overrides key=value")
    parser.add_argument("--seed", type=int, default=CONFIG["seed"])
    parser.add_argument("--max-seconds", type=float, default=None, help="stop after this much wall time")
    parser.add_argument("--json", default=os.path.join(os.environ.get("OUT", "runs/results"), "bench_gpu.json"),
                        help="where to write the results (default $OUT/bench_gpu.json or runs/results/)")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=CONFIG["progress"])
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads (default: the rule of infocnf_env.threads for --env: torch's own, one per "
                             "core, for the CIFAR10 and MNIST ids)")
    args = parser.parse_args(argv)
    overrides = {key: getattr(args, key) for key in CONFIG if key != "env_kwargs"}
    try:
        overrides["env_kwargs"] = parse_env_kwargs(args.env_kwargs)
        check(overrides)
    except ValueError as err:
        parser.error(str(err))
    result = run_study("bench-gpu", overrides=overrides, path=args.json)
    print(f"wrote {args.json}", file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
