"""Datasets and batch streams: splits, dequantisation, seeding/resume, flips, torchvision files."""

from __future__ import annotations

import io
import pickle

import numpy as np
import pytest
import torch
import torchvision

from flows import BatchStream, iterate_batches, load_dataset
from flows.data import TOY1D_MIXTURE, toy1d_density

# ---------------------------------------------------------------------------- digits


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "train"), load_dataset("digits", "test")


def test_digits_split_sizes_and_format(digits):
    train, test = digits
    assert len(train) == 1497 and len(test) == 300
    for split in digits:
        assert split.shape == (1, 8, 8) and split.x.dtype == torch.uint8
        assert split.num_levels == 17 and split.num_classes == 10 and not split.flip
        assert int(split.x.max()) == 16 and int(split.x.min()) == 0
        assert split.y.dtype == torch.int64 and set(split.y.tolist()) == set(range(10))
    # Together the two splits are exactly sklearn's 1,797 images.
    from sklearn.datasets import load_digits

    bunch = load_digits()
    ours = torch.cat([train.x, test.x]).reshape(-1, 64).double()
    theirs = torch.as_tensor(bunch.images).reshape(-1, 64)
    assert sorted(map(tuple, ours.tolist())) == sorted(map(tuple, theirs.tolist()))


def test_digits_split_is_fixed_whatever_the_seed(digits):
    train, test = digits
    for seed in (1, 7):
        assert torch.equal(load_dataset("digits", "train", seed=seed).x, train.x)
        assert torch.equal(load_dataset("digits", "test", seed=seed).y, test.y)


def test_dequantised_values_lie_in_the_unit_interval_and_round_to_the_levels(digits):
    train, _ = digits
    x, y = next(iterate_batches(train, 200))
    assert x.dtype == torch.float32 and x.shape == (200, 1, 8, 8)
    assert (x >= 0).all() and (x <= 1).all()
    offset = x.double() * 17 - train.x[:200].double()
    assert (offset >= -1e-5).all() and (offset <= 1 + 1e-5).all()
    assert 0.25 < float(offset.std()) < 0.33, "the uniform noise must actually be added"
    assert torch.equal(y, train.y[:200])
    xs, _ = BatchStream(train, 64, seed=0).next()
    assert (xs >= 0).all() and (xs <= 1).all()


def test_iterate_batches_is_deterministic_and_covers_the_split(digits):
    _, test = digits
    first = list(iterate_batches(test, 128, seed=3))
    second = list(iterate_batches(test, 128, seed=3))
    assert [b[0].shape[0] for b in first] == [128, 128, 44]
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, second, strict=True))
    assert torch.equal(torch.cat([b[1] for b in first]), test.y)
    assert len(list(iterate_batches(test, 128, max_batches=2))) == 2


# ---------------------------------------------------------------------------- BatchStream


def _take(stream: BatchStream, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [stream.next() for _ in range(n)]


def _same(a, b) -> bool:
    return all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b, strict=True))


def test_batch_stream_is_determined_by_its_seed(digits):
    train, _ = digits
    a = _take(BatchStream(train, 100, seed=5), 4)
    b = _take(BatchStream(train, 100, seed=5), 4)
    c = _take(BatchStream(train, 100, seed=6), 4)
    assert _same(a, b)
    assert not torch.equal(a[0][1], c[0][1])


def test_batch_stream_resumes_exactly_from_its_state_dict(digits):
    train, _ = digits
    # 1497 // 400 = 3 batches per epoch: the resumed batches cross an epoch boundary.
    stream = BatchStream(train, 400, seed=2)
    _take(stream, 2)
    state = stream.state_dict()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    expected = _take(stream, 4)
    assert stream.epoch == 1

    resumed = BatchStream(train, 400, seed=99)
    buffer.seek(0)
    resumed.load_state_dict(torch.load(buffer, weights_only=False))
    assert resumed.epoch == 0
    assert _same(_take(resumed, 4), expected)
    assert resumed.epoch == stream.epoch
    # The saved state is a snapshot, not a view of the running stream.
    again = BatchStream(train, 400, seed=0)
    again.load_state_dict(state)
    assert _same(_take(again, 4), expected)


def test_epochs_advance_and_each_epoch_is_a_permutation():
    data = load_dataset("toy1d", "test")  # continuous values: every example is identifiable
    stream = BatchStream(data, 600, seed=0)
    assert stream.batches_per_epoch == 3
    epochs = []
    for expected_epoch in (0, 1):
        epoch = _take(stream, 3)
        assert stream.epoch == expected_epoch
        assert all(x.shape == (600, 1) for x, _ in epoch)
        epochs.append(torch.cat([x for x, _ in epoch]).flatten())
    stream.next()
    assert stream.epoch == 2
    # Within an epoch no example repeats; each epoch is a fresh permutation.
    for values in epochs:
        assert values.unique().numel() == 1800
        assert torch.isin(values, data.x.flatten()).all()
    assert not torch.equal(epochs[0], epochs[1])


def test_batch_stream_takes_the_whole_split_but_not_more():
    data = load_dataset("toy1d", "test")
    stream = BatchStream(data, len(data))
    assert stream.batch_size == len(data) and stream.next()[0].shape == (len(data), 1)
    with pytest.raises(ValueError, match=r"^batch_size 2001 exceeds the 2000 examples of the toy1d test split; "
                                         r"use batch_size <= 2000$"):
        BatchStream(data, len(data) + 1)


# ---------------------------------------------------------------------------- toy data


def test_toy1d_labels_are_mixture_components():
    data = load_dataset("toy1d", "train", seed=0)
    assert data.shape == (1,) and data.num_levels is None and data.num_classes == 3
    x = data.x.flatten().double()
    for k, (weight, mean, std) in enumerate(TOY1D_MIXTURE):
        xk = x[data.y == k]
        assert abs(xk.numel() / len(data) - weight) < 0.03
        assert abs(float(xk.mean()) - mean) < 5 * std / xk.numel() ** 0.5
        assert abs(float(xk.std()) / std - 1) < 0.06
        assert float((xk - mean).abs().max()) < 6 * std
    assert torch.equal(load_dataset("toy1d", "train", seed=0).x, data.x)
    assert not torch.equal(load_dataset("toy1d", "train", seed=1).x, data.x)
    assert not torch.equal(load_dataset("toy1d", "test", seed=0).x[:100], data.x[:100])
    grid = torch.linspace(-12, 12, 4801, dtype=torch.float64)
    assert abs(float(toy1d_density(grid).sum() * (grid[1] - grid[0])) - 1) < 1e-6


def test_toy2d_labels_are_moons():
    data = load_dataset("toy2d", "test")
    assert data.shape == (2,) and data.num_classes == 2 and data.num_levels is None
    # The upper moon (label 0) lies above the lower one on average.
    assert data.x[data.y == 0, 1].mean() > data.x[data.y == 1, 1].mean() + 0.5


# ---------------------------------------------------------------------------- torchvision files


def _cifar_files(root, rng) -> dict[str, tuple[np.ndarray, list[int]]]:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(4, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=4).tolist()
        # torchvision reads the python-2 pickles with encoding="latin1": their keys come back
        # as str, so str keys are what a faithful fake file holds.
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "labels": labels, "batch_label": name}, f)
        written[name] = (data, labels)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)], "num_cases_per_batch": 4}, f)
    return written


def _idx(path, array: np.ndarray, magic: int) -> None:
    header = np.array([magic, *array.shape], dtype=">i4").tobytes()
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _mnist_files(root, rng) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    written = {}
    for prefix, n in (("train", 12), ("t10k", 5)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n).astype(np.uint8)
        _idx(raw / f"{prefix}-images-idx3-ubyte", images, 2051)
        _idx(raw / f"{prefix}-labels-idx1-ubyte", labels, 2049)
        written[prefix] = (images, labels)
    return written


@pytest.fixture
def cifar_root(tmp_path, monkeypatch):
    written = _cifar_files(tmp_path, np.random.default_rng(0))
    # The fake files cannot match torchvision's md5 sums.
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *a, **k: True)
    return tmp_path, written


@pytest.fixture
def mnist_root(tmp_path):
    return tmp_path, _mnist_files(tmp_path, np.random.default_rng(1))


def test_cifar10_loads_the_pickled_batches(cifar_root):
    root, written = cifar_root
    train = load_dataset("cifar10", "train", root=str(root))
    test = load_dataset("cifar10", "test", root=str(root))
    raw_train = np.concatenate([written[f"data_batch_{i}"][0] for i in range(1, 6)])
    labels_train = sum((written[f"data_batch_{i}"][1] for i in range(1, 6)), [])
    assert train.x.shape == (20, 3, 32, 32) and test.x.shape == (4, 3, 32, 32)
    assert train.x.dtype == torch.uint8
    # The 3072 bytes of a row are the R, G and B planes in turn, row-major.
    assert torch.equal(train.x, torch.from_numpy(raw_train.reshape(20, 3, 32, 32)))
    assert torch.equal(test.x, torch.from_numpy(written["test_batch"][0].reshape(4, 3, 32, 32)))
    assert train.y.tolist() == labels_train and test.y.tolist() == written["test_batch"][1]
    assert train.y.dtype == torch.int64
    assert train.num_levels == 256 and train.num_classes == 10
    assert train.flip and not test.flip


def test_mnist_loads_the_idx_files(mnist_root):
    root, written = mnist_root
    train = load_dataset("mnist", "train", root=str(root))
    test = load_dataset("mnist", "test", root=str(root))
    assert train.x.shape == (12, 1, 28, 28) and test.x.shape == (5, 1, 28, 28)
    assert torch.equal(train.x[:, 0], torch.from_numpy(written["train"][0]))
    assert torch.equal(test.x[:, 0], torch.from_numpy(written["t10k"][0]))
    assert train.y.tolist() == written["train"][1].tolist() and train.y.dtype == torch.int64
    assert test.y.tolist() == written["t10k"][1].tolist()
    assert train.num_levels == 256 and train.num_classes == 10
    assert not train.flip and not test.flip


def _orientations(data, batches) -> tuple[int, int]:
    """Count (plain, flipped) batch rows, matching each against every stored image."""
    levels = data.x.double()
    plain = flipped = 0
    for x, y in batches:
        scaled = x.double() * data.num_levels
        for row, label in zip(scaled, y, strict=True):
            as_is = ((row - levels >= -1e-4) & (row - levels <= 1 + 1e-4)).flatten(1).all(1)
            mirrored = ((row - levels.flip(-1) >= -1e-4) & (row - levels.flip(-1) <= 1 + 1e-4)).flatten(1).all(1)
            assert as_is.sum() + mirrored.sum() == 1, "each row is exactly one stored image, maybe mirrored"
            index = int((as_is | mirrored).nonzero())
            assert int(data.y[index]) == int(label)
            plain += int(as_is.any())
            flipped += int(mirrored.any())
    return plain, flipped


def test_cifar10_training_batches_get_horizontal_flips(cifar_root):
    root, _ = cifar_root
    train = load_dataset("cifar10", "train", root=str(root))
    plain, flipped = _orientations(train, _take(BatchStream(train, 10, seed=0), 4))
    assert plain > 5 and flipped > 5
    # Evaluation passes and unaugmented streams never flip.
    assert _orientations(train, iterate_batches(train, 10)) == (20, 0)
    assert _orientations(train, _take(BatchStream(train, 10, seed=0, augment=False), 4)) == (40, 0)
    test = load_dataset("cifar10", "test", root=str(root))
    assert _orientations(test, _take(BatchStream(test, 4, seed=0), 3)) == (12, 0)


def test_mnist_training_batches_are_not_flipped(mnist_root):
    root, _ = mnist_root
    train = load_dataset("mnist", "train", root=str(root))
    assert _orientations(train, _take(BatchStream(train, 6, seed=0), 6)) == (36, 0)


@pytest.mark.parametrize("name,folder", [("cifar10", "cifar-10-batches-py"), ("mnist", "MNIST/raw")])
def test_missing_data_root_says_how_to_get_the_data(tmp_path, name, folder):
    root = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as err:
        load_dataset(name, "train", root=str(root))
    message = str(err.value)
    assert "download=True" in message and folder in message and str(root) in message
    with pytest.raises(ValueError, match="needs a data root"):
        load_dataset(name, "train")
