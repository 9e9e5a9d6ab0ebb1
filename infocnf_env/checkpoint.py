"""Checkpoint files: written atomically, read without executing code.

A checkpoint is a dict of tensors, numbers, strings, lists and dicts saved with
``torch.save`` and read with ``torch.load(..., weights_only=True)``, which refuses pickled
code. Every file the project writes in place (checkpoints, run records, cached artefacts)
goes through :func:`atomic_write`: a temporary file in the same folder, flushed and fsynced,
then renamed over the target; a checkpoint keeps the previous one as ``<name>.prev``
(hard-linked before the rename, so a process killed at any instant leaves a complete ``<name>``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch


class CheckpointError(RuntimeError):
    """A checkpoint is missing, truncated, corrupt or belongs to another model."""


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], Any], *, keep_previous: bool = False) -> None:
    """Replace ``path`` with what ``write`` writes to a binary file, atomically: a reader (or a
    process killed at any instant) sees the old file or the whole new one, never a part.

    The new content goes to a temporary file in the same folder, is flushed and fsynced, and is
    renamed over ``path``. ``keep_previous``: the file it replaces is kept as ``<name>.prev``
    (hard-linked before the rename, so a complete ``<name>`` exists at every instant).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        if keep_previous and path.exists():
            prev = path.with_name(path.name + ".prev")
            prev_tmp = path.with_name(path.name + ".prev.tmp")
            prev_tmp.unlink(missing_ok=True)
            try:
                os.link(path, prev_tmp)
            except OSError:  # a file system without hard links
                shutil.copyfile(path, prev_tmp)
            os.replace(prev_tmp, prev)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` ``obj`` to ``path`` atomically (:func:`atomic_write`)."""
    atomic_write(path, lambda fh: torch.save(obj, fh))


def save_checkpoint(obj: dict[str, Any], path: str | os.PathLike) -> None:
    """Save ``obj`` atomically, keeping the previous file as ``<name>.prev``."""
    atomic_write(path, lambda fh: torch.save(obj, fh), keep_previous=True)


def _fsync_dir(folder: Path) -> None:
    """Make the renames durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types for truncated or foreign files
        raise CheckpointError(f"checkpoint {str(path)!r} is truncated or corrupt ({type(err).__name__})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {str(path)!r} does not hold a dict")
    return obj


#: Options of a model's spec that change how it is trained or solved, not its weights: a
#: checkpoint loads into a model that differs from it only in these.
NON_WEIGHT_OPTIONS = frozenset({
    "solver", "adjoint", "adjoint_norm", "max_num_steps", "divergence", "noise", "dropout", "beta", "kinetic_weight",
    "jacobian_weight", "segments", "warm_start", "error_weight", "solver_backend",
})

#: Weight options added to the model spec after checkpoints were first written, with the value
#: every model had before: a checkpoint whose spec lacks one was written with that value.
ADDED_OPTIONS: dict[str, Any] = {"head_init": "zeros"}


def _flatten(spec: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(spec, dict):
        return {prefix or "spec": spec}
    out: dict[str, Any] = {}
    for key, value in spec.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        out.update(_flatten(value, name) if isinstance(value, dict) else {name: value})
    return out


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def spec_differences(theirs: Any, mine: dict[str, Any]) -> str:
    """The spec fields in which a checkpoint's model differs from this one ("" if none).

    Options in :data:`NON_WEIGHT_OPTIONS` are ignored; an option of :data:`ADDED_OPTIONS` that
    the checkpoint's spec lacks (next to the other options of its group) counts as its old
    value. One line, e.g. ``model.config.hidden: 8 in the checkpoint, 4 here``.
    """
    if not isinstance(theirs, dict):
        return "the checkpoint holds no model spec"
    a, b = _flatten(theirs), _flatten(mine)
    missing = object()
    for key in b:
        parent, _, name = key.rpartition(".")
        if name in ADDED_OPTIONS and key not in a and any(k.startswith(parent + ".") for k in a):
            a[key] = ADDED_OPTIONS[name]

    def duplicate(key: str) -> bool:  # model.head repeats the env's head, etc.
        top = key.split(".", 1)[-1]
        return key.startswith("model.") and top in a and top in b and \
            a.get(key, missing) == a[top] and b.get(key, missing) == b[top]

    keys = [k for k in sorted(set(a) | set(b)) if k.rsplit(".", 1)[-1] not in NON_WEIGHT_OPTIONS and not duplicate(k)]
    diffs = [(k, a.get(k, missing), b.get(k, missing)) for k in keys if a.get(k, missing) != b.get(k, missing)]
    shown = 4
    parts = [f"{k}: {'(absent)' if x is missing else _short(x)} in the checkpoint, "
             f"{'(absent)' if y is missing else _short(y)} here" for k, x, y in diffs[:shown]]
    if len(diffs) > shown:
        parts.append(f"and {len(diffs) - shown} more")
    return "; ".join(parts)
