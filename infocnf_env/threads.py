"""Torch's intra-op threads in forked worker processes.

``gymnasium.make_vec(id, vectorization_mode="async")`` builds one environment in the parent
(to read its spaces) and then forks a worker per sub-environment. Once the parent has run a
torch operation, its OpenMP thread pool exists; GNU OpenMP is not fork-safe, and the first
parallel torch operation in a forked child waits forever for threads that were not copied.
:func:`single_thread_after_fork` makes every child forked after ``import infocnf_env`` run
torch on one thread, as torch's own ``DataLoader`` workers do; each sub-environment then
runs in its own process anyway. Spawned children (``context="spawn"``) start afresh and are
not affected.
"""

from __future__ import annotations

import os

import torch

_registered = False


def _one_thread() -> None:
    torch.set_num_threads(1)


def single_thread_after_fork() -> None:
    """Register (once per process) a fork handler that sets torch to one thread in the child."""
    global _registered
    if not _registered and hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_one_thread)
        _registered = True
