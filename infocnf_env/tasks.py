"""What the environment trains: a model with the block protocol, its data and its metrics.

The environment only needs a *task*: ``model`` (``num_blocks``, ``start``, ``features``,
``advance``, ``finish``), ``next_batch()`` for training and ``evaluate()`` at a tight
tolerance. :class:`FlowTask` serves every image / vector flow of :mod:`flows`; other model
families (the LatentODE) provide their own task with the same methods.
"""

from __future__ import annotations

from typing import Any

import torch

from flows import BatchStream, build_model, evaluate, iterate_batches, load_dataset
from flows.build import FlowConfig
from flows.heads import HEADS

_FLOW_OPTIONS = {f for f in FlowConfig.__dataclass_fields__}


class FlowTask:
    """A CNF / CCNF / InfoCNF flow on one dataset.

    Args:
        dataset: a key of ``flows.DATASETS``.
        head: ``"cnf"``, ``"ccnf"`` or ``"infocnf"``.
        arch: ``"multiscale"`` or ``"mlp"`` (vector data is flattened for ``mlp``).
        batch_size: training mini-batch size.
        data_root, download: where torchvision datasets live / whether to fetch them.
        device: torch device of the model and batches.
        seed: seed of the initial weights, the data order, dequantisation noise and flips.
        eval_batch_size: batch size of evaluation passes.
        **flow_options: fields of ``flows.FlowConfig`` (hidden, flows_per_scale, sup_ratio,
            beta, kinetic_weight, ...).
    """

    def __init__(
        self,
        dataset: str,
        head: str,
        arch: str = "multiscale",
        *,
        batch_size: int = 128,
        data_root: str | None = None,
        download: bool = False,
        device: str = "cpu",
        seed: int = 0,
        eval_batch_size: int | None = None,
        **flow_options: Any,
    ):
        unknown = sorted(set(flow_options) - _FLOW_OPTIONS)
        if unknown:
            raise ValueError(f"unknown env kwarg(s) {unknown}")
        if head not in HEADS:
            raise ValueError(f"unknown head {head!r}; valid heads: {', '.join(HEADS)}")
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        sup_ratio = flow_options.get("sup_ratio", 0.5)
        # checked for every head (CNF and CCNF ignore it), so a bad value is never silently accepted
        if isinstance(sup_ratio, bool) or not isinstance(sup_ratio, (int, float)) or not 0 < sup_ratio <= 1:
            raise ValueError(f"sup_ratio must be in (0, 1], got {sup_ratio!r}")
        self.device = torch.device(device)
        self.train_data = load_dataset(dataset, "train", root=data_root, download=download)
        self._test_args = dict(root=data_root, download=download)
        self._test_data = None
        self.dataset = dataset
        self.flatten = arch == "mlp"
        shape = self.train_data.shape
        data_shape = (int(torch.tensor(shape).prod()),) if self.flatten else shape
        flow_options.setdefault("num_levels", self.train_data.num_levels)
        if self.train_data.num_levels is None:
            flow_options.setdefault("logit_alpha", None)
        with torch.random.fork_rng(devices=[]):  # initial weights from `seed`, not the global RNG state
            torch.manual_seed(seed)
            model = build_model(head, data_shape, self.train_data.num_classes, arch, **flow_options)
        self.model = model.to(self.device)
        self.stream = BatchStream(self.train_data, batch_size, seed=seed)
        self.eval_batch_size = eval_batch_size or max(batch_size, 256)

    @property
    def batches_per_epoch(self) -> int:
        return self.stream.batches_per_epoch

    def reseed(self, seed: int) -> None:
        s = self.stream
        self.stream = BatchStream(self.train_data, s.batch_size, seed=seed, rank=s.rank, world_size=s.world_size)

    def shard(self, rank: int, world_size: int) -> None:
        """Multi-process training: this process draws rank ``rank``'s share of each global batch.

        ``batch_size`` stays the per-process batch; see :class:`flows.BatchStream`. The
        stream's position and generator carry over, so every rank continues the same global order.
        """
        old = self.stream
        self.stream = BatchStream(self.train_data, old.batch_size, rank=rank, world_size=world_size)
        self.stream.load_state_dict(old.state_dict())

    def _to_model(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.flatten:
            x = x.reshape(x.shape[0], -1)
        return x.to(self.device), y.to(self.device)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self._to_model(*self.stream.next())

    def data(self, split: str):
        if split == "train":
            return self.train_data
        if split != "test":
            raise ValueError(f"unknown split {split!r}; valid splits: train, test")
        if self._test_data is None:
            self._test_data = load_dataset(self.dataset, "test", **self._test_args)
        return self._test_data

    def evaluate(self, split: str = "test", tol: float = 1e-5, max_batches: int | None = None) -> dict[str, float]:
        batches = iterate_batches(self.data(split), self.eval_batch_size, max_batches=max_batches)
        return evaluate(self.model, (self._to_model(x, y) for x, y in batches), tol=tol)

    def state_dict(self) -> dict:
        return {"stream": self.stream.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.stream.load_state_dict(state["stream"])
