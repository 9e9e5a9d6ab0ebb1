"""The on-disk cache of the benchmark envs: trained frozen flows, reference solves, baseline grids.

Nothing here is downloaded or committed; everything is rebuilt when missing. A file that cannot
be read (truncated by a killed process, written by another torch) is reported in one line and
rebuilt, never trusted. A cache folder that cannot be created or written fails at once, before
any expensive work, with one ``CacheError`` line naming the folder and ``INFOCNF_CACHE``.

Building a missing entry is an env's *first use*, the one slow part of a first run: the
builders report their progress (:mod:`infocnf_env.progress`), and a caller that wants to act
before it starts (an agent CLI creates its run directory, so the user sees where the run
goes) registers a callback with :func:`on_first_use`.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import torch

from infocnf_env.checkpoint import atomic_save
from infocnf_env.progress import stderr

T = TypeVar("T")


class CacheError(ValueError):
    """The cache folder cannot be used (not creatable, not writable)."""


def cache_dir(folder: str | os.PathLike | None = None) -> Path:
    """Where the benchmark envs cache their artefacts: ``folder`` if given, else ``$INFOCNF_CACHE``,
    else ``$XDG_CACHE_HOME/infocnf-gym``, else ``~/.cache/infocnf-gym``."""
    if folder:
        return Path(folder)
    if os.environ.get("INFOCNF_CACHE"):
        return Path(os.environ["INFOCNF_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "infocnf-gym"


def check_writable(folder: Path) -> Path:
    """Create ``folder`` and check a file can be written there; one ``CacheError`` otherwise."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".probe"):
            pass
    except OSError as err:
        raise CacheError(f"the benchmark cache folder {str(folder)!r} is not writable ({err.strerror or err}); "
                         "set INFOCNF_CACHE or the env's cache= to a writable folder") from None
    return folder


def cached(path: Path, build: Callable[[], T], *, what: str, log: Callable[[str], None] | None = None) -> T:
    """The object saved at ``path``; else ``build()``, saved atomically, then returned.

    A file that does not load is reported (``log``, default stderr) and rebuilt.
    """
    if path.exists():
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises many types for truncated or foreign files
            (log or stderr)(f"cache file {str(path)!r} ({what}) is unreadable ({type(err).__name__}); rebuilding it")
            path.unlink(missing_ok=True)
    check_writable(path.parent)
    for callback in list(_FIRST_USE):
        callback()
    obj = build()
    atomic_save(obj, path)
    return obj


#: Callbacks run before a missing cache entry is built (:func:`on_first_use`).
_FIRST_USE: list[Callable[[], None]] = []


@contextlib.contextmanager
def on_first_use(callback: Callable[[], None]) -> Iterator[None]:
    """Within the block, ``callback()`` runs before each missing cache entry is built (after
    the cache folder has been checked): at most a few times per env, so it should be cheap
    after its first call."""
    _FIRST_USE.append(callback)
    try:
        yield
    finally:
        _FIRST_USE.remove(callback)
