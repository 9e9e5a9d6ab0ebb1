"""Collectives of multi-process training (``torch.distributed``), shared by the env and the agents.

Every function here is called by every rank in the same order; with one process none of them
is called. The process group itself is set up by :mod:`agents.distributed` (``torchrun``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import numpy as np
import torch
import torch.distributed as dist


class _Weights(Protocol):
    """A module, or a model of the block protocol: anything with parameters and buffers."""

    def parameters(self) -> Iterator[torch.nn.Parameter]: ...

    def buffers(self) -> Iterator[torch.Tensor]: ...


def rank_seed(generator: torch.Generator, rank: int) -> int:
    """A seed for rank ``rank`` derived from a draw of ``generator`` (deterministic, rank-distinct)."""
    draw = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
    return int(np.random.SeedSequence([draw, rank]).generate_state(1, np.uint64)[0] >> 1)


def broadcast_module(module: _Weights, src: int = 0) -> None:
    """Copy ``src``'s parameters and buffers into every rank's ``module`` (in place)."""
    with torch.no_grad():
        for tensor in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(tensor.data, src)


def average_gradients(params: list[torch.nn.Parameter], world_size: int) -> None:
    """Replace each gradient by its mean over the ranks, as DistributedDataParallel does.

    One ``all_reduce`` over a flat buffer of every parameter's gradient (zeros where this rank
    has none) plus one "has a gradient" count per parameter; the sum is divided by the world
    size (a rank without a gradient contributes zero, like an unused parameter under DDP).
    A parameter no rank has a gradient for keeps ``grad = None``, so Adam leaves it alone as in
    one process. Every rank must call this with the same parameters in the same order.
    """
    if not params:
        return
    device = params[0].device
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).to(device)
                      for p in params] + [torch.tensor([float(p.grad is not None) for p in params], device=device)])
    dist.all_reduce(flat)
    flat[: flat.numel() - len(params)] /= world_size
    counts = flat[flat.numel() - len(params):]
    offset = 0
    for p, count in zip(params, counts.tolist(), strict=True):
        n = p.numel()
        p.grad = flat[offset: offset + n].view_as(p).to(p.dtype).clone() if count > 0 else None
        offset += n


def count_ranks(flags: list[bool], device: torch.device | str = "cpu") -> list[int]:
    """For each flag, how many ranks raised it (one ``all_reduce``).

    The env counts, once per episode, the ranks whose solve failed and those that saw a
    non-finite loss or gradient, so that all ranks update (or skip) together.
    """
    counts = torch.tensor([float(f) for f in flags], device=device)
    dist.all_reduce(counts)
    return [int(c) for c in counts.tolist()]
