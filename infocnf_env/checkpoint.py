"""Checkpoint files: written atomically, read without executing code.

A checkpoint is a dict of tensors, numbers, strings, lists and dicts saved with
``torch.save`` and read with ``torch.load(..., weights_only=True)``, which refuses pickled
code. Writes go to a temporary file in the same folder, are flushed and fsynced, and then
renamed over the target; the previous checkpoint is kept as ``<name>.prev`` (hard-linked
before the rename, so a process killed at any instant leaves a complete ``<name>``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch


class CheckpointError(RuntimeError):
    """A checkpoint is missing, truncated, corrupt or belongs to another model."""


def save_checkpoint(obj: dict[str, Any], path: str | os.PathLike) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        torch.save(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())
    if path.exists():
        prev = path.with_name(path.name + ".prev")
        prev_tmp = path.with_name(path.name + ".prev.tmp")
        prev_tmp.unlink(missing_ok=True)
        try:
            os.link(path, prev_tmp)
        except OSError:  # a file system without hard links
            shutil.copyfile(path, prev_tmp)
        os.replace(prev_tmp, prev)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


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
