"""Multi-process training under ``torchrun``: process group, rank helpers.

    torchrun --nproc_per_node=K -m agents.reinforce --env InfoCNF-CIFAR10-v0 --env-kwargs device=cuda
    torchrun --nproc_per_node=K -m agents.fixed --env InfoCNF-Digits-v0

Only when ``WORLD_SIZE > 1`` (torchrun sets it, with ``RANK``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``) does an agent CLI join a process group; a plain
``python -m agents.fixed`` never touches ``torch.distributed``. Backend: ``gloo`` for CPU
training; for ``device=cuda`` every rank takes GPU ``LOCAL_RANK`` and the group is
``cpu:gloo,cuda:nccl`` (NCCL for the flow's CUDA gradients, gloo for the gates, which live on
the CPU). What each rank does is described in ``TrainingStepEnv.distribute`` (model) and
``ReinforceAgent.distribute`` (gates); the runner keeps logging, evaluation, checkpoints and
the summary on rank 0.
"""

from __future__ import annotations

import datetime
import hashlib
import os
from typing import Any

import torch
import torch.distributed as dist

#: How long a collective waits for the other ranks: rank 0 evaluates on the full test set
#: (at tolerance 1e-5) while the others wait at their next collective.
TIMEOUT = datetime.timedelta(hours=2)


class SingleProcessOnly(ValueError):
    """A CLI that runs in one process was launched by torchrun (``WORLD_SIZE > 1``)."""


def env_world_size() -> int:
    """``WORLD_SIZE`` from the environment (1 when not launched by torchrun)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ValueError(f"WORLD_SIZE must be an integer, got {os.environ['WORLD_SIZE']!r}") from None


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def local_device(device: str) -> str:
    """The device of this rank: ``cuda`` (or ``cuda:i``) becomes ``cuda:LOCAL_RANK`` under torchrun."""
    if env_world_size() > 1 and str(device).startswith("cuda"):
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return device


def init_from_env(device: str = "cpu") -> bool:
    """Join the process group torchrun describes when ``WORLD_SIZE > 1``; returns whether it did."""
    if env_world_size() <= 1 or is_distributed():
        return is_distributed()
    if not dist.is_available():
        raise ValueError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed")
    missing = [v for v in ("RANK", "MASTER_ADDR", "MASTER_PORT") if v not in os.environ]
    if missing:
        raise ValueError(f"WORLD_SIZE > 1 but {', '.join(missing)} not set: launch with torchrun")
    if str(device).startswith("cuda"):
        torch.cuda.set_device(local_device(device))
        backend = "cpu:gloo,cuda:nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend=backend, timeout=TIMEOUT)
    return True


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` of rank ``src`` on every rank (identity in one process)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src)
    return box[0]


def any_rank(flag: bool) -> bool:
    """Whether ``flag`` is true on any rank (``flag`` itself in one process)."""
    if not is_distributed():
        return flag
    box = torch.tensor([float(flag)])
    dist.all_reduce(box)
    return bool(box.item() > 0)


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank (``[obj]`` in one process)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def checksum(*modules: torch.nn.Module) -> str:
    """SHA-256 of the exact bytes of every parameter and buffer of ``modules`` (bitwise identity)."""
    digest = hashlib.sha256()
    for module in modules:
        for name, tensor in module.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
