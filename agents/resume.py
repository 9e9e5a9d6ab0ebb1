"""The arguments of a run: checks of the shared flags, and a resumed run's own settings."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, TypeVar

from agents import registry
from agents.cli import CommonArgs
from agents.envs import env_id
from agents.run_dir import read_config
from infocnf_env.checkpoint import CheckpointError
from infocnf_env.threads import check_threads

A = TypeVar("A", bound=CommonArgs)

#: Flags a resumed run may change (recorded in its ``config.json``); every other flag is fixed
#: by the run's own ``config.json``.
CHANGEABLE_ON_RESUME = frozenset({"iterations", "progress", "resume", "device", "threads"})
#: The changeable flags as a resumed run's refusal names them.
CHANGEABLE_FLAGS = ", ".join(f"--{name}" for name in ("iterations", "progress", "device", "threads"))


def check_common_args(args: CommonArgs) -> None:
    """Refuse bad values of the shared flags before anything is created."""
    if args.iterations < 1:
        raise ValueError(f"--iterations must be >= 1 (a run trains at least one iteration), got {args.iterations}")
    for name in ("eval_every", "checkpoint_every"):
        value = getattr(args, name)
        if value < 0:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 0, got {value}")
    if args.threads is not None:
        check_threads(args.threads)
    if args.eval_batches is not None and args.eval_batches <= 0:
        raise ValueError(f"--eval-batches must be positive, got {args.eval_batches}")
    if args.resume and args.out:
        raise ValueError("--out names a new run and --resume an existing one: give one of them")
    if not 0 <= args.seed < 2**32:
        raise ValueError(f"--seed must be an integer in [0, 2**32), got {args.seed}")


def resolve_args(args: A, family: str, added: dict[str, Any] | None = None) -> A:
    """The arguments to run with: ``args`` itself, or for ``--resume`` the run's own.

    A resumed run takes its arguments from its ``config.json``. A flag given on this command
    line must equal the run's value, except those in :data:`CHANGEABLE_ON_RESUME` (recorded in
    the config when they change); anything else would silently change the run, so it is
    refused. ``family`` is the CLI (``fixed``, ``reinforce``, ``sb3``): a run of an agent that
    another CLI trains (:mod:`agents.registry`) is refused. ``added``: flags the CLI gained after
    runs were first written, with the value those runs had; a config that lacks one means that
    value.
    """
    args = dataclasses.replace(args, env=env_id(args.env))
    if not args.resume:
        return args
    saved = read_config(Path(args.resume))
    where, given = repr(args.resume), args.explicit
    if registry.trainer_of(saved["agent"]) != family or ("env" in given and saved["env"] != args.env):
        env = args.env if "env" in given else saved["env"]
        raise CheckpointError(f"--resume {where} is a run of {saved['agent']} on {saved['env']}, "
                              f"not {family} on {env}")
    fields = {f.name for f in dataclasses.fields(args)}
    own = {**(added or {}), **{k: v for k, v in saved["args"].items() if k in fields and k != "explicit"}}
    for name in sorted(given - CHANGEABLE_ON_RESUME):
        if name in own and _as_saved(getattr(args, name)) != own[name]:
            flag = "--" + name.replace("_", "-")
            raise CheckpointError(f"--resume {where}: {flag} {_show(getattr(args, name))} differs from the run's "
                                  f"{_show(own[name])}; a resumed run keeps its settings (only {CHANGEABLE_FLAGS} "
                                  "may change)")
    keep = {name: getattr(args, name) for name in CHANGEABLE_ON_RESUME & given}
    return dataclasses.replace(args, **{**own, **keep, "resume": args.resume, "out": None, "explicit": given})


def _as_saved(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _show(value: Any) -> str:
    return " ".join(map(str, value)) if isinstance(value, list) else str(value)
