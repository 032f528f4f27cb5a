"""Real recordings and images from ``../shared/data`` (skipped cleanly when it is absent).

- ``nmnist-small/``: 1,000 train and 100 test N-MNIST recordings (34x34) in the standard layout.
  Frame sums are checked against an independent count from the raw bytes.
- ``cifar10/``: the real CIFAR-10, written in the standard python layout by the folder's own
  ``materialize.py`` into a temporary folder (a 100-per-class train subset by default; the full
  50,000 under ``-m slow``).
"""

from __future__ import annotations

import importlib.util
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from qsnn.data import get_dataset

_DEFAULT = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
SHARED = Path(os.environ.get("QSNN_SHARED_DATA") or _DEFAULT).resolve()
NMNIST = SHARED / "nmnist-small"
CIFAR = SHARED / "cifar10"

needs_nmnist = pytest.mark.skipif(not NMNIST.is_dir(), reason=f"{NMNIST} is absent")
needs_cifar = pytest.mark.skipif(
    not (CIFAR / "materialize.py").is_file() or importlib.util.find_spec("PIL") is None,
    reason=f"{CIFAR} is absent or Pillow (needed by materialize.py) is not installed",
)

# --- N-MNIST ---------------------------------------------------------------------------------

RAW = np.dtype([("x", "u1"), ("y", "u1"), ("b2", "u1"), ("b3", "u1"), ("b4", "u1")])


def raw_events(path: Path) -> tuple[np.ndarray, ...]:
    """Independent parse of the 5-byte format (no overflow markers in this subset)."""
    r = np.fromfile(path, dtype=RAW)
    t = (r["b2"].astype(np.int64) & 0x7F) * 65536 + r["b3"].astype(np.int64) * 256 + r["b4"]
    assert not np.any(r["y"] == 240)
    return r["x"].astype(np.int64), r["y"].astype(np.int64), (r["b2"] >> 7).astype(np.int64), t


def files(split: str) -> list[tuple[Path, int]]:
    folder = NMNIST / ("Train" if split == "train" else "Test")
    return [(f, d) for d in range(10) for f in sorted((folder / str(d)).glob("*.bin"))]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("frames-cache")


@needs_nmnist
@pytest.mark.parametrize("split", ["train", "test"])
def test_nmnist_counts_shapes_labels(split, cache_dir):
    d = get_dataset("nmnist", NMNIST, split, time_steps=5, cache_dir=cache_dir)
    listed = files(split)
    assert len(d) == len(listed) == (1000 if split == "train" else 100)
    assert d.inputs.shape == (len(listed), 5, 2, 34, 34) and d.labels.dtype == torch.int64
    assert d.labels.tolist() == [lab for _, lab in listed]
    assert int(d.labels.min()) == 0 and int(d.labels.max()) == 9
    if split == "test":  # small and uneven: only two eights
        assert d.class_counts()[8] == 2


@needs_nmnist
@pytest.mark.parametrize("split_by", ["time", "count"])
def test_nmnist_frame_sums_equal_events_in_each_window(split_by, cache_dir):
    T = 6
    native = get_dataset("nmnist", NMNIST, "train", time_steps=T, split_by=split_by,
                         cache_dir=cache_dir)
    resized = get_dataset("nmnist", NMNIST, "train", time_steps=T, split_by=split_by, size=48,
                          cache_dir=cache_dir)
    assert resized.inputs.shape == (1000, T, 2, 48, 48)
    per_frame = native.inputs.sum(dim=(3, 4), dtype=torch.int64)  # [N, T, 2]
    assert torch.equal(per_frame, resized.inputs.sum(dim=(3, 4), dtype=torch.int64))
    for i, (path, _) in enumerate(files("train")):
        x, y, p, t = raw_events(path)
        n = len(t)
        want = np.zeros((T, 2), dtype=np.int64)
        for k in range(T):
            if split_by == "time":  # window k: k * span <= (t - t0) * T < (k + 1) * span
                span = int(t.max() - t.min()) + 1
                rel = (t - t.min()) * T
                inside = (rel >= k * span) & (rel < (k + 1) * span)
            else:  # window k: events of rank r (by time) with k * n <= r * T < (k + 1) * n
                rank = np.argsort(np.argsort(t, kind="stable"), kind="stable") * T
                inside = (rank >= k * n) & (rank < (k + 1) * n)
            want[k] = [np.sum(inside & (p == 0)), np.sum(inside & (p == 1))]
        assert np.array_equal(per_frame[i].numpy(), want), path
        if i < 5 and split_by == "time":  # per pixel, at the native size
            ref = np.zeros((T, 2, 34, 34), dtype=np.int64)
            bins = (t - t.min()) * T // (int(t.max() - t.min()) + 1)
            np.add.at(ref, (bins, p, y, x), 1)
            assert np.array_equal(native.inputs[i].numpy(), ref)


@needs_nmnist
def test_nmnist_batches_are_time_major(cache_dir):
    d = get_dataset("nmnist", NMNIST, "test", time_steps=4, size=48, cache_dir=cache_dir)
    x, y = next(iter(d.batches(32, shuffle=True, seed=0)))
    assert x.shape == (4, 32, 2, 48, 48) and x.dtype == torch.float32 and y.shape == (32,)


# --- CIFAR-10 ---------------------------------------------------------------------------------


def materialize(dest: Path, per_class: int | None) -> Path:
    cmd = [sys.executable, str(CIFAR / "materialize.py"), str(dest)]
    if per_class is not None:
        cmd += ["--train-per-class", str(per_class)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=600)
    return dest


@pytest.fixture(scope="session")
def cifar_small(tmp_path_factory):
    return materialize(tmp_path_factory.mktemp("cifar10"), 100)


def _some_test_images(k: int) -> tuple[list[np.ndarray], list[int], tuple[str, ...]]:
    from PIL import Image

    z = np.load(CIFAR / "cifar10_jpegbytes.npz", allow_pickle=False)
    blob, off = z["test_jpeg"], z["test_offsets"]
    imgs = []
    for i in range(k):
        im = Image.open(io.BytesIO(blob[off[i] : off[i + 1]].tobytes())).convert("RGB")
        imgs.append(np.asarray(im).transpose(2, 0, 1))  # HWC -> CHW
    return imgs, z["y_test"][:k].tolist(), tuple(str(c) for c in z["classes"])


@needs_cifar
def test_cifar10_real_files(cifar_small):
    train = get_dataset("cifar10", cifar_small, "train")
    test = get_dataset("cifar10", cifar_small, "test")
    assert train.inputs.shape == (1000, 3, 32, 32) and test.inputs.shape == (10000, 3, 32, 32)
    assert train.inputs.dtype == torch.uint8
    assert train.class_counts() == [100] * 10 and test.class_counts() == [1000] * 10
    imgs, labels, classes = _some_test_images(5)
    assert test.classes == classes and classes[0] == "airplane"
    flat = test.inputs.flatten(1)
    for img, lab in zip(imgs, labels, strict=True):
        hit = torch.nonzero((flat == torch.from_numpy(img.reshape(-1))).all(dim=1)).flatten()
        assert len(hit) == 1 and int(test.labels[hit[0]]) == lab
    x, y = next(iter(train.batches(1000)))  # normalized with CIFAR-10's mean and std
    assert x.shape == (1000, 3, 32, 32) and y.shape == (1000,)
    assert abs(float(x.mean())) < 0.1 and abs(float(x.std()) - 1) < 0.1
    x, _ = next(iter(train.batches(256, shuffle=True, augment=True)))
    assert x.shape == (256, 3, 32, 32)


@needs_cifar
@pytest.mark.slow
def test_cifar10_real_full(tmp_path):
    root = materialize(tmp_path, None)
    train = get_dataset("cifar10", root, "train")
    assert train.inputs.shape == (50000, 3, 32, 32) and train.class_counts() == [5000] * 10
