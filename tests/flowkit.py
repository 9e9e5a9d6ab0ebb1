"""Small digits flows for the solver tests, and an NFE count kept apart from the library's."""

from __future__ import annotations

import torch
from torch import nn

from flows import BatchStream, build_model, load_dataset

#: A 3-block InfoCNF on the 8x8 digits, narrow enough for unit tests.
DIGITS = dict(hidden=8, num_scales=2, flows_per_scale=1, num_levels=17)


def digits_batch(size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """One dequantised training batch of digits (seed 0)."""
    return BatchStream(load_dataset("digits", "train"), size, seed=0).next()


def digits_flow(**options: object) -> nn.Module:
    """The :data:`DIGITS` InfoCNF (seed 0 weights), with ``options`` over its settings."""
    torch.manual_seed(0)
    return build_model("infocnf", (1, 8, 8), 10, **{**DIGITS, **options})


def count_net_calls(model: nn.Module) -> dict[str, int]:
    """``{"n": calls}`` of the model's dynamics networks, counted by forward hooks (reset it by hand)."""
    calls = {"n": 0}

    def count(module: nn.Module, inputs: object, output: object) -> None:
        calls["n"] += 1

    for block in model.blocks:
        block.net.register_forward_hook(count)
    return calls


def perturb(module: nn.Module, std: float, seed: int = 0) -> None:
    """Random conv/linear weights of scale ``std``: dynamics far from the identity map, stiff
    enough for large ``std`` that the solver rejects steps."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g, dtype=m.weight.dtype) * std)
