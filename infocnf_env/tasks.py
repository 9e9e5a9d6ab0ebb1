"""What the environment trains: a model with the block protocol, its data and its metrics.

The environment only needs a :class:`Task`: a ``model`` that satisfies
:class:`flows.BlockModel`, ``next_batch()`` for training and ``evaluate()`` at a tight
tolerance. :class:`FlowTask` serves every image / vector flow of :mod:`flows`; other model
families (the LatentODE, :mod:`infocnf_env.spiral_task`) provide their own task.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol, runtime_checkable

import torch

from flows import EVAL_TOL, BatchStream, BlockModel, LabelledData, build_model, evaluate, iterate_batches, load_dataset
from flows.build import FlowConfig
from flows.heads import HEADS
from infocnf_env.config import DataConfig

_FLOW_OPTIONS = frozenset(f for f in FlowConfig.__dataclass_fields__)


@runtime_checkable
class Task(Protocol):
    """A model, its training stream and its test metrics, as the environment drives them.

    Every task is built as ``Task(head, arch, data, options, device=..., seed=...)`` (see
    :class:`FlowTask`), where ``options`` are the model family's own keywords.
    """

    @property
    def model(self) -> BlockModel[Any]:
        """The model being trained (a ``torch.nn.Module`` of the block protocol)."""
        ...

    @property
    def device(self) -> torch.device: ...

    @property
    def batches_per_epoch(self) -> int: ...

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next training batch ``(x, y)`` on the task's device."""
        ...

    def reseed(self, seed: int) -> None:
        """Restart the training stream from ``seed`` (``env.reset(seed=...)``)."""
        ...

    def data(self, split: str) -> Any:
        """The ``"train"`` or ``"test"`` data."""
        ...

    def evaluate(self, split: str = "test", tol: float = EVAL_TOL, max_batches: int | None = None) -> dict[str, float]:
        """Metrics of the model with every block solved at ``tol``."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class TaskFactory(Protocol):
    """What builds a task: a task class such as :class:`FlowTask` (``infocnf_env.TASKS``)."""

    def __call__(self, head: str, arch: str, data: DataConfig, options: Mapping[str, Any], *,
                 device: str = "cpu", seed: int = 0) -> Task: ...


@runtime_checkable
class ShardableTask(Task, Protocol):
    """A task that multi-process training can split: rank r draws its share of every batch."""

    def shard(self, rank: int, world_size: int) -> None: ...


def check_options(options: Mapping[str, Any], valid: Iterable[str]) -> None:
    """Raise one ``ValueError`` naming every option the model family does not know."""
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"unknown env kwarg(s) {unknown}")


def check_choice(what: str, value: str, valid: Iterable[str]) -> None:
    """Raise a ``ValueError`` listing the valid values if ``value`` is not one of them."""
    valid = list(valid)
    if value not in valid:
        raise ValueError(f"unknown {what} {value!r}; valid {what}s: {', '.join(valid)}")


class FlowTask:
    """A CNF / CCNF / InfoCNF flow on one dataset.

    Args:
        head: ``"cnf"``, ``"ccnf"`` or ``"infocnf"``.
        arch: ``"multiscale"`` or ``"mlp"`` (vector data is flattened for ``mlp``).
        data: the dataset (a key of ``flows.DATASETS``), batch sizes and data root.
        options: fields of ``flows.FlowConfig`` (hidden, flows_per_scale, sup_ratio, beta,
            kinetic_weight, ...).
        device: torch device of the model and batches.
        seed: seed of the initial weights, the data order, dequantisation noise and flips.
    """

    def __init__(
        self, head: str, arch: str, data: DataConfig, options: Mapping[str, Any], *,
        device: str = "cpu", seed: int = 0,
    ):
        check_options(options, _FLOW_OPTIONS)
        check_choice("head", head, HEADS)
        flow_options = dict(options)
        sup_ratio = flow_options.get("sup_ratio", 0.5)
        # checked for every head (CNF and CCNF ignore it), so a bad value is never silently accepted
        if isinstance(sup_ratio, bool) or not isinstance(sup_ratio, (int, float)) or not 0 < sup_ratio <= 1:
            raise ValueError(f"sup_ratio must be in (0, 1], got {sup_ratio!r}")
        dataset = data.dataset
        self.device = torch.device(device)
        self.train_data = load_dataset(dataset, "train", root=data.data_root, download=data.download)
        self._data_config = data
        self._test_data: LabelledData | None = None
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
        self.stream = BatchStream(self.train_data, data.batch_size, seed=seed)
        self.eval_batch_size = data.eval_batch_size or max(data.batch_size, 256)

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
            self._test_data = load_dataset(self.dataset, "test", root=self._data_config.data_root,
                                           download=self._data_config.download)
        return self._test_data

    def evaluate(self, split: str = "test", tol: float = EVAL_TOL, max_batches: int | None = None) -> dict[str, float]:
        batches = iterate_batches(self.data(split), self.eval_batch_size, max_batches=max_batches)
        return evaluate(self.model, (self._to_model(x, y) for x, y in batches), tol=tol)

    def state_dict(self) -> dict:
        return {"stream": self.stream.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.stream.load_state_dict(state["stream"])
