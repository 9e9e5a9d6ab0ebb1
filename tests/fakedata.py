"""Tiny fake CIFAR10 / MNIST folders in torchvision's on-disk formats, for tests without downloads.

``write_fake_cifar10(root)`` writes ``root/cifar-10-batches-py/`` (pickled batches, as the
python version of CIFAR10 ships them); torchvision checks their MD5 sums, so a test also calls
``allow_fake_cifar10(monkeypatch)``. ``write_fake_mnist(root)`` writes the four raw idx files
under ``root/MNIST/raw/`` (big-endian headers); torchvision only checks that they exist.
"""

from __future__ import annotations

import os
import pickle
import struct
from pathlib import Path

import numpy as np

CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_LABEL_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _images_and_labels(rng: np.random.Generator, n: int, pixels: int) -> tuple[np.ndarray, np.ndarray]:
    labels = np.arange(n) % 10  # every class present, so conditional heads see valid labels
    return rng.integers(0, 256, size=(n, pixels), dtype=np.uint8), labels


def write_fake_cifar10(root: str | os.PathLike, per_batch: int = 8, test_size: int = 16, seed: int = 0) -> Path:
    """Write a CIFAR10 folder with ``5 * per_batch`` training and ``test_size`` test images.

    Returns:
        The ``cifar-10-batches-py`` folder.
    """
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name, n in [(f, per_batch) for f in CIFAR10_TRAIN_FILES] + [("test_batch", test_size)]:
        data, labels = _images_and_labels(rng, n, 3 * 32 * 32)
        # str keys: torchvision unpickles with encoding="latin1" and reads entry["data"], entry["labels"]
        entry = {"data": data, "labels": labels.tolist(), "batch_label": name}
        with open(folder / name, "wb") as fh:
            pickle.dump(entry, fh)
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": CIFAR10_LABEL_NAMES, "num_cases_per_batch": per_batch, "num_vis": 3072}, fh)
    return folder


def allow_fake_cifar10(monkeypatch) -> None:
    """Skip torchvision's MD5 checks of the CIFAR10 files (the data and the meta file)."""
    import torchvision.datasets.cifar as cifar

    monkeypatch.setattr(cifar.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(cifar, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath))


def _write_idx(path: Path, array: np.ndarray) -> None:
    """An idx file: magic 0x0000 08 <ndim> (unsigned byte data), then each size as big-endian int32."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def write_fake_mnist(root: str | os.PathLike, train_size: int = 32, test_size: int = 16, seed: int = 0) -> Path:
    """Write MNIST's raw idx files (28x28 uint8 images, uint8 labels).

    Returns:
        The ``MNIST/raw`` folder.
    """
    folder = Path(root) / "MNIST" / "raw"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for prefix, n in (("train", train_size), ("t10k", test_size)):
        images, labels = _images_and_labels(rng, n, 28 * 28)
        _write_idx(folder / f"{prefix}-images-idx3-ubyte", images.reshape(n, 28, 28))
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels.astype(np.uint8))
    return folder
