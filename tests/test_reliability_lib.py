"""Issue 15, library side: every bad input to the data readers, the integer program, ``profile``
and ``hw`` is one clear error naming what (and which file) is wrong, raised before anything
large is allocated; a non-finite model is not deployed.

Crafted files are written by the tests themselves.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from qsnn.data import CorruptDataError, DataError, get_dataset

# --- crafted CIFAR pickles ------------------------------------------------------------------


def _write_cifar10(root: Path, rows: int = 4) -> Path:
    """A valid CIFAR-10 python layout of ``rows`` images per batch file."""
    rng = np.random.default_rng(0)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (rows, 3072), dtype=np.uint8),
                 b"labels": rng.integers(0, 10, rows).tolist(), b"batch_label": b"x"}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    meta = {b"label_names": [c.encode() for c in "abcdefghij"], b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return folder


class _Reduce:
    """Pickles as ``func(*args)`` (plus ``state`` for BUILD) without calling it: what a crafted
    file declares."""

    def __init__(self, func, args, state=None) -> None:
        self.func, self.args, self.state = func, args, state

    def __reduce__(self):
        return (self.func, self.args) if self.state is None else (self.func, self.args, self.state)


_RECONSTRUCT = np.ndarray.__reduce__(np.zeros(1))[0]  # numpy's own _reconstruct


def _cifar_error(folder: Path, name: str, content: dict | bytes, split: str = "test") -> str:
    """Write ``content`` as ``folder/name``, load the split, return the one-line error."""
    path = folder / name
    raw = content if isinstance(content, bytes) else pickle.dumps(content, protocol=2)
    path.write_bytes(raw)
    with pytest.raises(CorruptDataError) as err:
        get_dataset("cifar10", folder.parent, split)
    msg = str(err.value)
    assert str(path) in msg and "\n" not in msg
    return msg


def test_crafted_cifar_array_of_ten_trillion_elements_is_refused_before_allocating(tmp_path):
    """numpy's ``_reconstruct(ndarray, shape, typecode)`` allocates ``shape`` at once: a pickle
    declaring 10**13 int8 elements asked for 9.09 TiB (``_ArrayMemoryError``) before the fix."""
    folder = _write_cifar10(tmp_path)
    huge = _Reduce(_RECONSTRUCT, (np.ndarray, (10**13,), b"b"))
    msg = _cifar_error(folder, "test_batch", {b"data": huge, b"labels": [0]})
    # 10**13 bytes = 9.09 TiB; a CIFAR-10 test file holds at most 10,000 x 3,072 uint8
    assert "(10000000000000,)" in msg and "9.09 TiB" in msg and "10,000 x 3,072" in msg


def test_crafted_cifar_array_state_larger_than_a_batch_is_refused(tmp_path):
    """The array state (BUILD) declares the shape; 10,001 rows is one more than a CIFAR-10
    batch file holds (30,720,000 bytes), 10**13 rows with 3 bytes of data would not fit."""
    folder = _write_cifar10(tmp_path)
    state = (1, (10**13, 3072), np.dtype("u1"), False, b"abc")
    fake = _Reduce(_RECONSTRUCT, (np.ndarray, (0,), b"b"), state)
    msg = _cifar_error(folder, "test_batch", {b"data": fake, b"labels": [0]})
    assert "(10000000000000, 3072)" in msg and "refusing to allocate" in msg
    rows = np.zeros((10_001, 3072), dtype=np.uint8)
    msg = _cifar_error(folder, "data_batch_2", {b"data": rows, b"labels": [0] * 10_001}, "train")
    assert "(10001, 3072)" in msg and "at most 10,000 x 3,072" in msg


def test_crafted_cifar_object_array_and_short_buffer_are_refused(tmp_path):
    folder = _write_cifar10(tmp_path)
    objects = np.array([1, "x"], dtype=object)
    msg = _cifar_error(folder, "test_batch", {b"data": objects, b"labels": [0, 1]})
    assert "Python objects" in msg
    short = _Reduce(_RECONSTRUCT, (np.ndarray, (0,), b"b"),
                    (1, (2, 3072), np.dtype("u1"), False, b"\0" * 100))
    msg = _cifar_error(folder, "test_batch", {b"data": short, b"labels": [0, 1]})
    assert "100 bytes of data, not 6144" in msg  # 2 x 3,072


@pytest.mark.parametrize(
    "labels, expected",
    [
        (["cat", "dog", "cat", "dog"], "must be a list of 4 integer labels; got a list of 4 (str)"),
        ([0.5, 1.0, 2.0, 3.0], "must be a list of 4 integer labels; got a list of 4 (float)"),
        ([True, False, True, False], "integer labels; got a list of 4 (bool)"),
        (7, "must be a list of 4 integer labels; got int 7"),
        (None, "must be a list of 4 integer labels; got nothing"),
        ([0, 1, 2], "3 'labels' for 4 images"),
        ([0, 1, 2, 10], "holds label 10, outside 0..9"),
        ([0, -1, 2, 3], "holds label -1, outside 0..9"),
        ([0, 1, 2, 10**30], "holds label 1000000000000000000000000000000, outside 0..9"),
    ],
)
def test_crafted_cifar_labels_are_one_error_naming_the_file(tmp_path, labels, expected):
    folder = _write_cifar10(tmp_path)
    data = np.zeros((4, 3072), dtype=np.uint8)
    msg = _cifar_error(folder, "test_batch", {b"data": data, b"labels": labels})
    assert expected in msg


@pytest.mark.parametrize(
    "data, expected",
    [
        (np.zeros((4, 3072), dtype=np.float32), "a float32 array of shape (4, 3072)"),
        (np.zeros((4, 3, 32, 32), dtype=np.uint8), "a uint8 array of shape (4, 3, 32, 32)"),
        (np.zeros((4, 3000), dtype=np.uint8), "a uint8 array of shape (4, 3000)"),
        (b"\0" * 3072, "bytes"),
        (None, "got nothing"),
    ],
)
def test_crafted_cifar_data_of_wrong_shape_or_dtype(tmp_path, data, expected):
    folder = _write_cifar10(tmp_path)
    msg = _cifar_error(folder, "test_batch", {b"data": data, b"labels": [0, 1, 2, 3]})
    assert "expected 'data' uint8 [N, 3072] (N <= 10,000)" in msg and expected in msg


@pytest.mark.parametrize(
    "names, expected",
    [
        (list(range(10)), "'label_names' must be a list of 10 class names; got a list of 10 (int)"),
        (b"abcdefghij", "'label_names' must be a list of 10 class names; got bytes"),
        ("abcdefghij", "'label_names' must be a list of 10 class names; got str"),
        ([b"a", b"b"], "'label_names' has 2 class names, not 10"),
        ([b"\xff"] * 10, "not UTF-8"),
    ],
)
def test_crafted_cifar_label_names_are_checked(tmp_path, names, expected):
    folder = _write_cifar10(tmp_path)
    msg = _cifar_error(folder, "batches.meta", {b"label_names": names})
    assert expected in msg


def test_crafted_cifar_meta_that_is_not_a_dict_or_lacks_names(tmp_path):
    folder = _write_cifar10(tmp_path)
    assert "expected a pickled dict, got list" in _cifar_error(folder, "batches.meta", [1, 2])
    assert "no 'label_names' entry" in _cifar_error(folder, "batches.meta", {b"num_vis": 3072})


def test_crafted_cifar_huge_bytes_declaration_is_one_error(tmp_path):
    """A BINBYTES8 opcode declaring 10**13 bytes: the unpickler's own allocation fails."""
    folder = _write_cifar10(tmp_path)
    raw = b"\x80\x04\x8e" + (10**13).to_bytes(8, "little") + b"abc"
    assert "too large for memory" in _cifar_error(folder, "test_batch", raw)


def test_valid_cifar_still_loads_after_the_checks(tmp_path):
    _write_cifar10(tmp_path, rows=3)
    train = get_dataset("cifar10", tmp_path, "train")
    assert train.inputs.shape == (15, 3, 32, 32) and train.classes == tuple("abcdefghij")
    assert type(train.inputs) is torch.Tensor and train.labels.dtype == torch.int64


# --- the dataset registry -------------------------------------------------------------------


@pytest.mark.parametrize("name", [None, 3, 2.5, ["cifar10"]])
def test_get_dataset_with_a_name_that_is_not_a_string(name):
    with pytest.raises(DataError) as err:
        get_dataset(name)
    msg = str(err.value)
    assert msg.startswith(f"a dataset name must be a string; got {name!r}")
    assert "known: cifar10, cifar100, cifar10_dvs, digits, dvs128_gesture, imagenet" in msg
