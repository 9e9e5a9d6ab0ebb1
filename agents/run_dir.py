"""The run directory: where a run's results live, and the rules that keep them.

* A new run never writes into an existing run (or any non-empty folder): ``--out`` of an
  existing run is refused with a line naming ``--resume``.
* One process at a time: a run directory is locked (``fcntl.flock`` on the directory) while a
  process writes it; a second process is refused before it changes anything. The lock is
  released when the process ends, however it ends.
* ``--resume`` continues the run with its saved settings; the latest readable checkpoint is
  used (``checkpoint.pt``, else ``checkpoint.pt.prev`` with a line saying so); a run killed
  before its first checkpoint starts over from iteration 0; a ``metrics.jsonl`` that does not
  hold every iteration up to the checkpoint is refused, so a summary is never computed from a
  partial log.
* Files are replaced atomically (written beside the target, then renamed).

The arguments of a run are checked here too (:func:`check_common_args`), and a resumed run's
are its own (:func:`resolve_args`): opening a run, new or resumed, is this module and
:class:`agents.runner.Run`.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import json
import os
from pathlib import Path
from typing import Any, TypeVar

from agents import registry
from agents.cli import CommonArgs
from agents.envs import env_id
from infocnf_env.checkpoint import CheckpointError, atomic_write, load_checkpoint
from infocnf_env.threads import check_threads

CONFIG = "config.json"
METRICS = "metrics.jsonl"
EVALS = "eval.jsonl"
CHECKPOINT = "checkpoint.pt"
SUMMARY = "summary.json"


class RunDirError(ValueError):
    """A run directory cannot be used as asked (exists, locked, unwritable, inconsistent)."""


def check_new_run_dir(path: Path) -> None:
    """Refuse a folder that already holds a run or anything else; refuse an unusable path."""
    if path.exists() and not path.is_dir():
        raise RunDirError(f"--out {str(path)!r} is a file, not a folder")
    if path.is_dir() and any(path.iterdir()):
        if (path / CONFIG).exists():
            raise RunDirError(f"--out {str(path)!r} already holds a run; continue it with --resume {path}, "
                              "or choose another --out")
        raise RunDirError(f"--out {str(path)!r} exists and is not empty; choose another --out")
    ancestor = path
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
        raise RunDirError(f"cannot create run directory {str(path)!r}: {str(ancestor)!r} is not a writable folder")


def read_config(path: Path) -> dict[str, Any]:
    """The ``config.json`` of a run directory (``--resume``)."""
    config_path = path / CONFIG
    if not config_path.is_file():
        raise CheckpointError(f"--resume {str(path)!r}: no {CONFIG}, not a run directory")
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"--resume {str(path)!r}: {CONFIG} is unreadable ({type(err).__name__})") from None
    if not isinstance(config, dict) or not {"env", "agent", "env_kwargs", "args"} <= set(config):
        raise CheckpointError(f"--resume {str(path)!r}: {CONFIG} is not a run's config")
    return config


def write_json(path: Path, obj: Any) -> None:
    """Replace ``path`` atomically with ``obj`` as indented JSON."""
    atomic_write(path, lambda fh: fh.write(json.dumps(obj, indent=2, default=str).encode()))


def latest_checkpoint(path: Path, map_location: str = "cpu") -> tuple[dict[str, Any] | None, str | None]:
    """The newest readable checkpoint of a run and a note for the user (``None`` if none is due).

    ``checkpoint.pt`` if it loads; else ``checkpoint.pt.prev`` (the note says so); ``(None, note)``
    when the run has written no checkpoint yet. Raises ``CheckpointError`` when checkpoints exist
    but none can be read.
    """
    latest, prev = path / CHECKPOINT, path / (CHECKPOINT + ".prev")
    if not latest.exists() and not prev.exists():
        return None, f"{str(path)!r} holds no checkpoint yet: starting the run over from iteration 0"
    try:
        return load_checkpoint(latest, map_location), None
    except CheckpointError as err:
        if not prev.exists():
            raise
        problem = str(err)
    try:
        state = load_checkpoint(prev, map_location)
    except CheckpointError:
        raise CheckpointError(f"{problem}, and so is {CHECKPOINT}.prev") from None
    iteration = state.get("run", {}).get("iteration", "?")
    return state, f"{problem}; resuming from {CHECKPOINT}.prev (iteration {iteration})"


def check_metrics(path: Path, iteration: int) -> None:
    """Refuse to resume when ``metrics.jsonl`` does not hold iterations 1..``iteration`` once each."""
    metrics = path / METRICS
    if iteration == 0:
        return
    if not metrics.exists():
        raise CheckpointError(f"--resume {str(path)!r}: {METRICS} is missing but the checkpoint is at iteration "
                              f"{iteration}; without the log the run's summary would be wrong")
    seen = [i for i in (_iteration_of(line) for line in metrics.read_text().splitlines()) if i is not None]
    kept = [i for i in seen if i <= iteration]
    if kept != list(range(1, iteration + 1)):
        missing = sorted(set(range(1, iteration + 1)) - set(kept))
        what = f"lacks iteration(s) {_ranges(missing)}" if missing else "repeats iterations"
        raise CheckpointError(f"--resume {str(path)!r}: {METRICS} {what} before the checkpoint's iteration "
                              f"{iteration}; the run's log is inconsistent, so it cannot be resumed")


def truncate_jsonl(path: Path, last_iteration: int) -> None:
    """Drop lines written after the checkpoint (and a partial last line), so a resumed run
    rewrites them identically."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        iteration = _iteration_of(line)
        if iteration is not None and iteration <= last_iteration:
            keep.append(line)
    atomic_write(path, lambda fh: fh.write("".join(line + "\n" for line in keep).encode()))


class DirLock:
    """An exclusive lock on a run directory, held until :meth:`release` or the process ends.

    ``flock`` on the directory itself, so the lock leaves no file behind.
    """

    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno in (errno.EAGAIN, errno.EACCES):
                raise RunDirError(f"run directory {str(self.path)!r} is in use by another process; "
                                  "wait for it to finish or choose another --out") from None
            raise
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def _iteration_of(line: str) -> int | None:
    try:
        return int(json.loads(line)["iteration"])
    except (ValueError, KeyError, TypeError):  # a line cut short by a killed process
        return None


def _ranges(values: list[int]) -> str:
    if len(values) <= 4:
        return ", ".join(map(str, values))
    return f"{values[0]}..{values[-1]} ({len(values)} in all)"


# ---------------------------------------------------------------------------- the run's arguments
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
