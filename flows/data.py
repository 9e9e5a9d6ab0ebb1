"""Datasets as in-memory tensors, and seeded mini-batch streams.

Registry :data:`DATASETS`:

* ``cifar10``, ``mnist`` — through torchvision from ``root`` (``download=True`` fetches them
  where the network allows; a failed download is one ``ValueError`` and removes the folders
  and files it created). Training batches get uniform dequantisation and, for CIFAR10,
  random horizontal flips (Section 4.1).
* ``digits`` — scikit-learn's bundled 8x8 handwritten digits (values 0..16, so 17 levels),
  split once with a fixed seed into 1,497 training and 300 test images. Runs anywhere.
* ``toy1d`` — Appendix C: a mixture of three 1-D Gaussians, labelled by component.
* ``toy2d`` — two interleaved half-moons in 2-D, labelled by moon.
* ``checkerboard``, ``pinwheel``, ``rings``, ``2spirals``, ``8gaussians`` — FFJORD's 2-D toy
  densities (:mod:`flows.toy_densities`), labelled by region; 20,000 training points.

Quantised data are stored as integer levels and dequantised per batch: ``x = (k + u) / L``
with ``u ~ U[0, 1)``, so x lies in [0, 1]. All randomness comes from a ``torch.Generator``.
"""

from __future__ import annotations

import http.client
import math
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import cast

import numpy as np
import torch

from flows.toy_densities import TOY_DENSITIES, sample_toy


@dataclass(frozen=True)
class LabelledData:
    """A whole split in memory.

    Attributes:
        x: ``(N, *shape)``: integer levels for quantised data, floats for continuous data.
        y: ``(N,)`` int64 labels.
        num_levels: quantisation levels (``None``: continuous data, used as is).
        num_classes: number of labels.
        flip: apply random horizontal flips to training batches.
        name: dataset name.
        split: ``"train"`` or ``"test"`` (set by :func:`load_dataset`).
    """

    x: torch.Tensor
    y: torch.Tensor
    num_levels: int | None
    num_classes: int
    flip: bool = False
    name: str = ""
    split: str = ""

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    def __len__(self) -> int:
        return self.x.shape[0]

    def describe(self) -> str:
        """``"the toy1d train split"``, as far as name and split are known."""
        return " ".join(["the", *filter(None, [self.name, self.split]), "split" if self.split else "data"])


def _missing(name: str, root: str | None, folder: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"{name} was not found under data root {root!r}. Pass download=True (command line: --env-kwargs "
        f"download=True) where the network allows, or place the extracted '{folder}' folder inside that root."
    )


class _DownloadGuard:
    """What exists under a data root before a download, so a failed one can remove what it added.

    torchvision creates the root (and missing parents), the dataset's folder and partial files
    and leaves them behind when a download fails. Before: the topmost missing folder on the
    root's path, the root's entries and every path under the dataset's folder ``subtree``.
    :meth:`remove_new` deletes only paths that were not there, never a pre-existing one.
    """

    def __init__(self, root: str, subtree: str):
        self.root = Path(root).expanduser()
        self.subtree = subtree
        self.missing_top: Path | None = None
        path = self.root
        while not os.path.lexists(path):
            self.missing_top = path
            if path.parent == path:
                break
            path = path.parent
        self.before: set[str] = set()
        if self.missing_top is None and self.root.is_dir():
            self.before.update(os.listdir(self.root))
            for dirpath, dirnames, filenames in os.walk(self.root / subtree):
                self.before.update(os.path.relpath(os.path.join(dirpath, n), self.root) for n in dirnames + filenames)

    def remove_new(self) -> None:
        if self.missing_top is not None:  # the root was created by the download: all of it is new
            shutil.rmtree(self.missing_top, ignore_errors=True)
            return
        if not self.root.is_dir():
            return
        for entry in os.listdir(self.root):
            if entry not in self.before:
                _remove(self.root / entry)
        for dirpath, dirnames, filenames in os.walk(self.root / self.subtree):  # an existing dataset folder
            for n in list(dirnames) + filenames:
                if os.path.relpath(os.path.join(dirpath, n), self.root) not in self.before:
                    _remove(Path(dirpath) / n)
                    if n in dirnames:
                        dirnames.remove(n)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _one_line(err: BaseException) -> str:
    """The last line of an error's message (torchvision lists every mirror it tried)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[-1] if lines else type(err).__name__


def _torchvision(name: str, split: str, root: str | None, download: bool) -> tuple[np.ndarray, np.ndarray]:
    import torchvision

    if root is None:
        raise ValueError(f"dataset {name!r} needs a data root: data_root='DIR' in the env kwargs (command line: "
                         "--env-kwargs data_root=DIR download=True; download=True fetches the data where the "
                         "network allows), root=... in flows.data")
    cls = {"cifar10": torchvision.datasets.CIFAR10, "mnist": torchvision.datasets.MNIST}[name]
    folder = {"cifar10": "cifar-10-batches-py", "mnist": "MNIST/raw"}[name]
    guard = _DownloadGuard(root, folder.split("/")[0]) if download else None
    try:
        ds = cls(root=root, train=split == "train", download=download)
    except (RuntimeError, OSError, http.client.HTTPException) as err:
        if guard is not None:  # no network, an unwritable root, a truncated or corrupt download
            guard.remove_new()
            raise ValueError(f"could not download {name} to {root!r}: {_one_line(err)}; download it elsewhere "
                             f"and pass data_root=... (the folder that holds '{folder}')") from None
        if isinstance(err, RuntimeError) and ("not found" in str(err).lower() or "download=True" in str(err)):
            raise _missing(name, root, folder) from None
        raise
    return np.asarray(ds.data), np.asarray(ds.targets)


def _cifar10(split: str, root: str | None, download: bool, seed: int) -> LabelledData:
    images, labels = _torchvision("cifar10", split, root, download)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    return LabelledData(x, torch.as_tensor(labels, dtype=torch.int64), 256, 10, flip=split == "train", name="cifar10")


def _mnist(split: str, root: str | None, download: bool, seed: int) -> LabelledData:
    images, labels = _torchvision("mnist", split, root, download)
    x = torch.as_tensor(images).reshape(-1, 1, 28, 28)
    return LabelledData(x, torch.as_tensor(labels, dtype=torch.int64), 256, 10, name="mnist")


DIGITS_TEST_SIZE = 300


def _digits(split: str, root: str | None, download: bool, seed: int) -> LabelledData:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    order = np.random.default_rng(0).permutation(len(bunch.target))  # fixed split, not the run seed
    idx = order[DIGITS_TEST_SIZE:] if split == "train" else order[:DIGITS_TEST_SIZE]
    x = torch.as_tensor(bunch.images[idx], dtype=torch.uint8).reshape(-1, 1, 8, 8)
    return LabelledData(x, torch.as_tensor(bunch.target[idx], dtype=torch.int64), 17, 10, name="digits")


#: Appendix C mixture: (weight, mean, std) of each component.
TOY1D_MIXTURE = ((1 / 3, -4.0, 0.6), (1 / 3, 0.0, 0.5), (1 / 3, 4.0, 0.8))


def toy1d_density(x: torch.Tensor) -> torch.Tensor:
    """Ground-truth density of the ``toy1d`` mixture at points ``x``."""
    # cast: sum() starts from int 0, but the mixture is non-empty, so the result is a Tensor.
    return cast(
        torch.Tensor,
        sum(w * torch.exp(-0.5 * ((x - m) / s) ** 2) / (s * math.sqrt(2 * math.pi)) for w, m, s in TOY1D_MIXTURE),
    )


def _toy1d(split: str, root: str | None, download: bool, seed: int) -> LabelledData:
    n = 6000 if split == "train" else 2000
    g = torch.Generator().manual_seed(1000 * seed + (0 if split == "train" else 1))
    weights = torch.tensor([w for w, _, _ in TOY1D_MIXTURE])
    y = torch.multinomial(weights, n, replacement=True, generator=g)
    means = torch.tensor([m for _, m, _ in TOY1D_MIXTURE])[y]
    stds = torch.tensor([s for _, _, s in TOY1D_MIXTURE])[y]
    x = means + stds * torch.randn(n, generator=g)
    return LabelledData(x.reshape(n, 1), y, None, len(TOY1D_MIXTURE), name="toy1d")


def _toy2d(split: str, root: str | None, download: bool, seed: int) -> LabelledData:
    from sklearn.datasets import make_moons

    n = 4000 if split == "train" else 1000
    x, y = make_moons(n, noise=0.08, random_state=1000 * seed + (0 if split == "train" else 1))
    x = (x - np.array([0.5, 0.25])) * 2.0
    return LabelledData(torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.int64), None, 2,
                        name="toy2d")


def _toy_density(name: str) -> Callable[[str, str | None, bool, int], LabelledData]:
    def load(split: str, root: str | None, download: bool, seed: int) -> LabelledData:
        g = torch.Generator().manual_seed(1000 * seed + (0 if split == "train" else 1))
        x, y = sample_toy(name, 20000 if split == "train" else 5000, g)
        return LabelledData(x, y, None, TOY_DENSITIES[name][1], name=name)

    return load


DATASETS = {"cifar10": _cifar10, "mnist": _mnist, "digits": _digits, "toy1d": _toy1d, "toy2d": _toy2d,
            **{name: _toy_density(name) for name in TOY_DENSITIES}}
SPLITS = ("train", "test")


def load_dataset(
    name: str, split: str = "train", *, root: str | None = None, download: bool = False, seed: int = 0
) -> LabelledData:
    """Load one split of a registered dataset into memory.

    Args:
        name: a key of :data:`DATASETS`.
        split: ``"train"`` or ``"test"``.
        root: data root for torchvision datasets.
        download: let torchvision download missing files.
        seed: seed of the synthetic sets (``toy1d``, ``toy2d``, the toy densities); ignored otherwise.

    Raises:
        ValueError: unknown name or split; a failed download (no network, unwritable root).
        FileNotFoundError: a torchvision dataset is missing under ``root``.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid datasets: {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    return replace(DATASETS[name](split, root, download, seed), split=split)


def prepare(
    data: LabelledData, idx: torch.Tensor, generator: torch.Generator, *, augment: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Float inputs and labels for the examples ``idx``: dequantised, optionally flipped."""
    x = data.x[idx]
    if data.num_levels is not None:
        noise = torch.rand(x.shape, generator=generator)
        x = (x.to(torch.float32) + noise) / data.num_levels
    else:
        x = x.to(torch.float32)
    if augment and data.flip:
        flip = torch.rand(x.shape[0], generator=generator) < 0.5
        x = torch.where(flip.reshape(-1, *([1] * (x.dim() - 1))), x.flip(-1), x)
    return x, data.y[idx]


class IndexStream:
    """Endless seeded example indices, ``size`` at a time, epoch by epoch.

    Each epoch is a fresh permutation of ``range(n)``; an epoch's last incomplete chunk is
    dropped. ``state_dict`` holds the permutation, position and generator, so a resumed stream
    continues exactly. ``generator`` may also drive per-batch randomness (dequantisation).
    """

    def __init__(self, n: int, size: int, seed: int):
        if not 0 < size <= n:
            raise ValueError(f"index chunks of {size} need 1 <= size <= {n} (the number of examples)")
        self.n = n
        self.size = size
        self.generator = torch.Generator().manual_seed(seed)
        self.epoch = 0
        self._order = torch.randperm(n, generator=self.generator)
        self._pos = 0

    def next(self) -> torch.Tensor:
        if self._pos + self.size > self.n:
            self.epoch += 1
            self._order = torch.randperm(self.n, generator=self.generator)
            self._pos = 0
        idx = self._order[self._pos : self._pos + self.size]
        self._pos += self.size
        return idx

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "order": self._order.clone(), "pos": self._pos,
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.epoch = int(state["epoch"])
        self._order = state["order"].clone()
        self._pos = int(state["pos"])
        self.generator.set_state(state["generator"])


class BatchStream:
    """An endless, seeded stream of training mini-batches, epoch by epoch.

    Each epoch is a fresh permutation; the last incomplete batch of an epoch is dropped so all
    batches have ``batch_size`` examples. A batch larger than the data (``batch_size x
    world_size > len(data)``) is a ``ValueError``. ``state_dict`` holds the position and generator, so a
    resumed stream continues with exactly the batches the uninterrupted one would give.

    Sharding (multi-process training): with ``world_size = K > 1`` every rank builds the stream
    with the same seed, so all ranks walk the same permutation and draw the same dequantisation
    noise and flips for a *global* batch of ``K * batch_size`` examples; rank r keeps the slice
    ``[r * batch_size, (r + 1) * batch_size)`` of it. The ranks' batches are disjoint, their union
    is the batch a single process with ``K * batch_size`` would draw, and an epoch is
    ``len(data) // (K * batch_size)`` global batches (``batches_per_epoch``). ``K = 1`` is the
    plain stream.
    """

    def __init__(self, data: LabelledData, batch_size: int, *, seed: int = 0, augment: bool = True,
                 rank: int = 0, world_size: int = 1):
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size), got rank {rank} of world_size {world_size}")
        if len(data) < world_size:
            raise ValueError(f"{len(data)} examples cannot be shared by {world_size} processes")
        if batch_size * world_size > len(data):
            what = f"batch_size {batch_size}" if world_size == 1 else \
                f"batch_size {batch_size} x {world_size} processes = {batch_size * world_size}"
            raise ValueError(f"{what} exceeds the {len(data)} examples of {data.describe()}; "
                             f"use batch_size <= {len(data) // world_size}")
        self.data = data
        self.rank = rank
        self.world_size = world_size
        self.batch_size = batch_size
        self.augment = augment
        self.indices = IndexStream(len(data), self.global_batch_size, seed)

    @property
    def epoch(self) -> int:
        return self.indices.epoch

    @property
    def global_batch_size(self) -> int:
        return self.batch_size * self.world_size

    @property
    def batches_per_epoch(self) -> int:
        return len(self.data) // self.global_batch_size

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        idx = self.indices.next()
        x, y = prepare(self.data, idx, self.indices.generator, augment=self.augment)
        if self.world_size == 1:
            return x, y
        part = slice(self.rank * self.batch_size, (self.rank + 1) * self.batch_size)
        return x[part].contiguous(), y[part].contiguous()

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        while True:
            yield self.next()

    def state_dict(self) -> dict:
        return self.indices.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.indices.load_state_dict(state)


def iterate_batches(
    data: LabelledData, batch_size: int, *, seed: int = 0, max_batches: int | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Deterministic pass over a split in order (evaluation): fixed dequantisation noise."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    generator = torch.Generator().manual_seed(seed)
    for k, start in enumerate(range(0, len(data), batch_size)):
        if max_batches is not None and k >= max_batches:
            return
        idx = torch.arange(start, min(start + batch_size, len(data)))
        yield prepare(data, idx, generator, augment=False)
