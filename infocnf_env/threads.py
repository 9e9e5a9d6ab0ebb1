"""CPU threads: how many a run uses, and torch's intra-op threads in forked worker processes.

**The thread rule** (:func:`infocnf_env.default_threads`, next to the
registry it reads). The bundled ids (digits, the 1-D mixture, the
spirals, the frozen flows, the classical ODE tasks) run on one thread: their tensors are tiny
(a digits block solves a batch of 128 8x8 images with 24-filter convolutions), so a second
intra-op thread gains little on an idle machine, and on a machine whose other cores are busy
the threads wait for each other at every operation; one thread is the choice that is never
far from the fastest. The ``threads`` study measures both (iterations per second of the
README's main job at 1 and 2 threads, idle and beside a busy process:
``python -m runs.reproduce threads``, ``runs/results/threads.json``). The
CIFAR10 and MNIST ids (the paper's sizes: batch 900, 64-filter dynamics on 32x32 images) keep
torch's own default, one thread per core: their operations are large enough to share; the
study does not measure them (they are meant for a GPU). :func:`set_threads` applies a count to
torch and to the BLAS pools of NumPy and SciPy (threadpoolctl) before anything is built.

**Forked workers** (:func:`single_thread_after_fork`). ``gymnasium.make_vec(id,
vectorization_mode="async")`` builds one environment in the parent (to read its spaces) and
then forks a worker per sub-environment. Once the parent has run a torch operation, its OpenMP
thread pool exists; GNU OpenMP is not fork-safe, and the first parallel torch operation in a
forked child waits forever for threads that were not copied. :func:`single_thread_after_fork`
makes every child forked after ``import infocnf_env`` run torch on one thread, as torch's own
``DataLoader`` workers do; each sub-environment then runs in its own process anyway. Spawned
children (``context="spawn"``) start afresh and are not affected.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import torch

_registered = False
#: The threadpoolctl limit in force (kept so that it is not garbage-collected mid-run).
_blas_limit: Any = None


def _one_thread() -> None:
    torch.set_num_threads(1)


def single_thread_after_fork() -> None:
    """Register (once per process) a fork handler that sets torch to one thread in the child."""
    global _registered
    if not _registered and hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_one_thread)
        _registered = True


def torch_default_threads() -> int:
    """The count torch starts with where nothing limits it: one per usable core."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def check_threads(threads: Any, flag: str = "--threads") -> int:
    """``threads`` as a positive int; one ``ValueError`` naming ``flag`` otherwise."""
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"{flag} must be a positive integer, got {threads!r}")
    return threads


def set_threads(threads: int) -> int:
    """Run torch's intra-op work and the BLAS pools of NumPy / SciPy on ``threads`` threads;
    returns the torch count that was in force (to restore it)."""
    global _blas_limit
    check_threads(threads)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    from threadpoolctl import threadpool_limits

    _blas_limit = threadpool_limits(limits=threads)
    return previous


@contextlib.contextmanager
def using_threads(threads: int) -> Iterator[None]:
    """:func:`set_threads` within the block; torch's count and the BLAS limits are restored after."""
    global _blas_limit
    check_threads(threads)
    from threadpoolctl import threadpool_limits

    previous = torch.get_num_threads()
    outer = _blas_limit
    with threadpool_limits(limits=threads):
        torch.set_num_threads(threads)
        try:
            yield
        finally:
            torch.set_num_threads(previous)
            _blas_limit = outer
