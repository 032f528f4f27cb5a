"""Issue 15, library side: every bad input to the data readers, the integer program, ``profile``
and ``hw`` is one clear error naming what (and which file) is wrong, raised before anything
large is allocated; a non-finite model is not deployed.

Crafted files are written by the tests themselves.
"""

from __future__ import annotations

import math
import os
import pickle
import re
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


# --- the integer program (qsnn deploy) ------------------------------------------------------


def _small_convnet(bits: str = "4/2/2", img_size: int = 16):
    from qsnn.models import create_model

    return create_model("small_convnet", bits=bits, num_classes=5, img_size=img_size,
                        widths=(8, 16, 16, 16, 16)).eval()


@pytest.fixture(scope="module")
def program_file(tmp_path_factory) -> Path:
    from qsnn.deploy import convert

    path = convert(_small_convnet()).save(tmp_path_factory.mktemp("deploy"))
    assert path.name == "program.npz"
    return path


def _program_error(path: Path) -> str:
    from qsnn.cli import _error_exit
    from qsnn.deploy import ProgramError, load_program

    with pytest.raises(ProgramError) as err:
        load_program(path)
    msg = str(err.value)
    assert str(path) in msg and "\n" not in msg
    # the CLI prints a qsnn ValueError as one line with exit status 2 (not a traceback)
    assert _error_exit(err.value) == (2, f"qsnn: error: {msg}")
    return msg


@pytest.mark.parametrize("keep", [0.5, 0.99, 0.0])
def test_truncated_program_is_one_error_naming_the_file(program_file, tmp_path, keep):
    """Before: ``zipfile.BadZipFile`` (not a ValueError) from deep inside numpy."""
    raw = program_file.read_bytes()
    bad = tmp_path / "program.npz"
    bad.write_bytes(raw[: int(len(raw) * keep)])
    assert "is not a readable qsnn integer program" in _program_error(bad)


def test_garbage_and_damaged_programs_are_one_error(program_file, tmp_path):
    bad = tmp_path / "program.npz"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    assert "is not a readable qsnn integer program" in _program_error(bad)
    raw = bytearray(program_file.read_bytes())
    middle = len(raw) // 2
    raw[middle : middle + 64] = bytes(64)  # zeroed compressed data: CRC or inflate error
    bad.write_bytes(bytes(raw))
    assert "is not a readable qsnn integer program" in _program_error(bad)
    np.save(bad.with_suffix(".npy"), np.zeros(3))
    bad.with_suffix(".npy").rename(bad)
    assert "is a single numpy array" in _program_error(bad)


def test_program_with_a_wrong_manifest_or_arrays(program_file, tmp_path):
    with np.load(program_file) as data:
        arrays = {k: data[k] for k in data.files}
    bad = tmp_path / "program.npz"

    def write(**changes) -> str:
        np.savez(bad, **{**arrays, **changes})
        return _program_error(bad)

    no_manifest = dict(arrays)
    del no_manifest["manifest"]
    np.savez(bad, **no_manifest)
    assert "holds no manifest" in _program_error(bad)
    as_list = np.frombuffer(b"[1, 2]", dtype=np.uint8)
    assert "the manifest is a JSON list, not an object" in write(manifest=as_list)
    # the stem conv: 8 output channels, 3 input channels, 3x3 kernel, stored as int8 codes
    swapped = arrays["0.weight"].astype(np.float32)
    assert "layer 0 array 'weight' is float32 [8, 3, 3, 3]; the manifest says int8 [8, 3, 3, 3]" \
        in write(**{"0.weight": swapped})
    missing = {k: v for k, v in arrays.items() if k != "1.threshold"}
    np.savez(bad, **missing)
    assert "layer 1 array 'threshold' is missing" in _program_error(bad)


def test_deploy_refuses_a_non_finite_model():
    """Before: ``RuntimeWarning: invalid value encountered in cast`` and a program from inf."""
    from qsnn.deploy import convert

    model = _small_convnet()
    model.features[0].bn.running_var[:] = math.inf  # features.0: 8 -> 16 channels
    with pytest.raises(ValueError) as err:
        convert(model)
    assert str(err.value).startswith("features.0.bn.running_var has inf (16 of 16 values are "
                                     "not finite)")
    model = _small_convnet()
    with torch.no_grad():
        model.head.weight[2, 7] = math.nan  # the head: 64 features -> 5 classes
    with pytest.raises(ValueError, match=r"^head\.weight has NaN \(1 of 320 values"):
        convert(model)


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({"batch_size": 0}, "batch_size must be an integer >= 1; got 0"),
        ({"batch_size": -3}, "batch_size must be an integer >= 1; got -3"),
        ({"limit": 0}, "limit must be an integer >= 1; got 0"),
        ({"limit": -5}, "limit must be an integer >= 1; got -5"),
        ({"limit": 2.5}, "limit must be an integer >= 1; got 2.5"),
    ],
)
def test_verify_refuses_counts_below_one(kwargs, expected):
    """Before: ``range() arg 3 must not be zero``; ``limit=-5`` reported -5 samples."""
    from qsnn.data import TensorData
    from qsnn.deploy import convert, verify

    model = _small_convnet()
    x = torch.zeros(4, 3, 16, 16, dtype=torch.uint8)
    data = TensorData("zeros", "test", x, torch.zeros(4, dtype=torch.int64), tuple("abcde"),
                      mean=(0.5,) * 3, std=(0.25,) * 3)
    with pytest.raises(ValueError) as err:
        verify(model, convert(model, check=False), data, **kwargs)
    assert str(err.value) == expected


# --- profile and hw: input limits -----------------------------------------------------------


def test_profile_and_hw_of_an_input_smaller_than_the_model_allows():
    """small_convnet built for 16x16 on 4x4 images: a torch error 29 frames deep before."""
    from qsnn.hardware import estimate
    from qsnn.metrics import profile

    model = _small_convnet()
    expected = ("SmallConvNet cannot run on input (2, 3, 4, 4): it was built for samples of "
                "shape (3, 16, 16) (C, H, W), input [B, 3, 16, 16] (")
    with pytest.raises(ValueError) as err:
        profile(model, torch.rand(2, 3, 4, 4))
    assert str(err.value).startswith(expected) and "\n" not in str(err.value)
    with pytest.raises(ValueError) as err:
        estimate(model, torch.rand(2, 3, 4, 4))
    assert str(err.value).startswith(expected)
    # a larger image than the head was built for is refused the same way
    with pytest.raises(ValueError, match=r"^SmallConvNet cannot run on input \(1, 3, 32, 32\)"):
        profile(model, torch.rand(1, 3, 32, 32))


@pytest.mark.parametrize("shape, time_major", [((0, 3, 16, 16), False), ((2, 0, 3, 16, 16), True),
                                               ((0, 2, 3, 16, 16), True)])
def test_profile_and_hw_of_an_empty_batch(shape, time_major):
    """``profile --batch 0`` ended in ZeroDivisionError (MACs per sample = total / 0)."""
    from qsnn.hardware import gemms_from_model
    from qsnn.metrics import profile

    model = _small_convnet()
    what = "batch size 0" if shape[1 if time_major else 0] == 0 else "number of time steps 0"
    with pytest.raises(ValueError, match=rf"^profile: the example input {re.escape(str(shape))} "
                                         rf"has {what}; it needs at least one sample"):
        profile(model, torch.zeros(shape), time_major=time_major)
    with pytest.raises(ValueError, match=rf"^hw: the example input .* has {what}"):
        gemms_from_model(model, torch.zeros(shape), time_major=time_major)


# --- memory estimates -----------------------------------------------------------------------


class _Doubler(torch.nn.Module):
    """``StaticEncoder(T)`` (a broadcast view: no new memory), ``* 2`` (a new ``[T, B, ...]``
    tensor) and the mean over ``T`` (a new ``[B, ...]`` one)."""

    def __init__(self, steps: int) -> None:
        from qsnn import StaticEncoder

        super().__init__()
        self.encoder = StaticEncoder(steps)

    def forward(self, x):
        return (self.encoder(x) * 2.0).mean(0)


def test_activation_bytes_of_a_hand_counted_model():
    """Per sample of [4, 8, 8] float32 (1 KiB): while the mean runs, the doubled [T] steps
    (T KiB) and the mean's output (1 KiB) are alive: T + 1 KiB, fixed 1 KiB + 1 KiB per step.
    With autograd: the output (1 KiB) at the end of the forward pass (nothing is saved) plus
    twice the largest activation (T KiB) for gradients: 1 KiB + 2 KiB per step."""
    from qsnn._memory import activation_bytes

    model = _Doubler(1000)
    x = torch.rand(3, 4, 8, 8)
    est = activation_bytes(model, x)
    assert (est.fixed, est.per_step) == (1024, 1024)
    assert est.bytes(1000, 3) == 3 * (1024 + 1024 * 1000)
    assert model.encoder.time_steps == 1000  # restored after the runs at T = 1 and 2
    train = activation_bytes(model, x, autograd=True)
    assert (train.fixed, train.per_step) == (1024, 2048)
    assert activation_bytes(torch.nn.Conv2d(4, 4, 3), x) is None  # nothing grows with T


def test_check_fits_message_and_headroom():
    from qsnn._memory import MemoryLimitError, available_bytes, check_fits

    gib = 2**30
    check_fits("small", 0.85 * gib, available=gib)  # within 90 %
    with pytest.raises(MemoryLimitError) as err:
        check_fits("profile at T=100000, batch 2", 3 * gib // 2, available=gib)
    assert str(err.value) == ("profile at T=100000, batch 2 needs about 1.50 GiB of activations; "
                              "this machine has 1.00 GiB available (lower T or the batch size)")
    with pytest.raises(MemoryLimitError, match=r"about 972\.80 MiB"):
        check_fits("x", 0.95 * gib, available=gib)
    avail = available_bytes()
    assert avail is None or 0 < avail <= os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def test_profile_at_a_T_that_cannot_fit_is_refused_before_running():
    """At T = 10**6 the stem's spikes alone are [T*B, 8, 16, 16] float32: 2 * 8 KiB per step,
    15.26 GiB for a batch of 2; before, profile ran (for hours) until memory gave out."""
    from qsnn._memory import activation_bytes, available_bytes
    from qsnn.metrics import profile

    steps, batch = 10**6, 2
    model = _small_convnet(f"4/2/{steps}")
    x = torch.rand(batch, 3, 16, 16)
    est = activation_bytes(model, x)
    stem_spikes = steps * batch * 8 * 16 * 16 * 4
    assert stem_spikes <= est.bytes(steps, batch) <= 50 * stem_spikes
    avail = available_bytes()
    if avail is None or est.bytes(steps, batch) <= 0.9 * avail:
        pytest.skip("this machine has the memory for it")
    with pytest.raises(ValueError) as err:
        profile(model, x)
    assert re.fullmatch(r"profile at T=1000000, batch 2 needs about [\d.]+ (GiB|TiB) of "
                        r"activations; this machine has [\d.]+ (MiB|GiB|TiB) available "
                        r"\(lower T or the batch size\)", str(err.value))


def test_hw_at_a_large_T_traces_a_few_steps_only():
    """The layers' GEMMs do not change with T: hw traces T = 2 and 3 and reads T_op as the
    model's T. Before, T = 1000 traced 1000 steps of every neuron (128 s, 1.4 GB); here a
    forward hook sees what the neurons get. S = T_op * b_in: 100000 * 2 for a layer on 2-bit
    spikes, 1 * 8 for the stem on the 8-bit image (computed once)."""
    from qsnn.hardware import estimate
    from qsnn.neurons import SpikeNeuron

    steps = 100_000
    model = _small_convnet(f"4/2/{steps}")
    seen: list[int] = []
    for module in model.modules():
        if isinstance(module, SpikeNeuron):
            module.register_forward_pre_hook(lambda mod, args: seen.append(args[0].shape[0]))
    report = estimate(model)
    assert seen and max(seen) <= 3
    slices = [layer.gemm.slices for layer in report.layers]
    assert slices[0] == 8 and all(s == steps * 2 for s in slices[1:])  # the head too: it
    assert report.layers[-1].gemm.out_steps == 1  # runs every step, before the time mean
    assert model.stem.encoder.time_steps == steps


def test_gesture_npy_that_is_an_archive_or_declares_a_huge_array(tmp_path):
    """tonic's DVS128 Gesture ``.npy``: an ``.npz`` in its place failed with AttributeError, a
    header declaring 10**12 x 4 int64 (29.1 TiB) with ``MemoryError``."""
    from qsnn.data.events import read_tonic_gesture_npy

    archive = tmp_path / "user01_fluorescent.npy"
    with open(archive, "wb") as f:
        np.savez(f, events=np.zeros((3, 4)))
    with pytest.raises(CorruptDataError, match=rf"^{re.escape(str(archive))}: expected a \.npy"):
        read_tonic_gesture_npy(archive)
    huge = tmp_path / "user02_led.npy"
    with open(huge, "wb") as f:
        header = {"descr": "<i8", "fortran_order": False, "shape": (10**12, 4)}
        np.lib.format.write_array_header_1_0(f, header)
        f.write(bytes(64))
    with pytest.raises(CorruptDataError, match=rf"^{re.escape(str(huge))}: truncated or not"):
        read_tonic_gesture_npy(huge)
    text = tmp_path / "user03_natural.npy"
    np.save(text, np.array([["a", "b", "c", "d"]]))
    with pytest.raises(CorruptDataError, match=r"numeric x, y, p, t array; got <U1 \(1, 4\)"):
        read_tonic_gesture_npy(text)
