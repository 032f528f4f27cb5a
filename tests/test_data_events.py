"""Event readers, frames, splits and cache, on small synthetic files in each standard format.

Each test writes the bytes of the public format itself (N-MNIST/N-Caltech101 ``.bin``, AEDAT
3.1 with ``*_labels.csv``, AEDAT 2.0, tonic's ``.npy`` repack) and checks that qsnn decodes
exactly the events written.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

import qsnn.data as qd
import qsnn.data.neuromorphic as nm
from qsnn.data import CorruptDataError, DataError, MissingDataError, get_dataset
from qsnn.data.events import (
    Events,
    decode_dvs128_cifar10dvs,
    read_aedat2,
    read_aedat31,
    read_gesture_labels,
    read_nmnist_bin,
)
from qsnn.data.frames import events_to_frames, time_bins


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("QSNN_CACHE_DIR", str(tmp_path / "cache"))


def _events(n: int, width: int, height: int, seed: int, t_max: int = 300_000) -> Events:
    rng = np.random.default_rng(seed)
    return Events(
        rng.integers(0, width, n),
        rng.integers(0, height, n),
        np.sort(rng.integers(0, t_max, n)),
        rng.integers(0, 2, n),
    )


# --- writers of the public formats ---------------------------------------------------------


def write_bin(path: Path, ev: Events) -> None:
    """N-MNIST / N-Caltech101: x, y, p << 7 | t[22:16], t[15:8], t[7:0]."""
    b = np.zeros((len(ev), 5), dtype=np.uint8)
    b[:, 0], b[:, 1] = ev.x, ev.y
    b[:, 2] = (ev.p << 7) | ((ev.t >> 16) & 0x7F)
    b[:, 3], b[:, 4] = (ev.t >> 8) & 0xFF, ev.t & 0xFF
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b.tobytes())


def write_aedat31(path: Path, ev: Events, packet: int = 50, junk: bool = True) -> None:
    """AEDAT 3.1: header, then packets (28-byte header + 8-byte polarity events)."""
    out = [b"#!AER-DAT3.1\r\n#Format: RAW\r\n#Source 1: DVS128\r\n#!END-HEADER\r\n"]
    if junk:  # a special-event packet (type 0) and an invalid polarity event: both skipped
        out.append(struct.pack("<hhiiiiii", 0, 1, 8, 4, 0, 1, 1, 1) + bytes(8))
        bad = np.array([[(3 << 17) | (4 << 2) | 2, 5]], dtype="<u4")  # valid bit 0
        out.append(struct.pack("<hhiiiiii", 1, 1, 8, 4, 0, 1, 1, 0) + bad.tobytes())
    for lo in range(0, len(ev), packet):
        sl = slice(lo, lo + packet)
        data = (ev.x[sl] << 17) | (ev.y[sl] << 2) | (ev.p[sl] << 1) | 1
        n = len(data)
        words = np.stack([data, ev.t[sl] & 0x7FFFFFFF], axis=1).astype("<u4")
        out.append(struct.pack("<hhiiiiii", 1, 1, 8, 4, 0, n, n, n) + words.tobytes())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(out))


def write_aedat2_cifar10dvs(path: Path, ev: Events) -> None:
    """AEDAT 2.0 DVS128 addresses such that qsnn's orientation gives back ``ev``."""
    x_raw, y_raw, bit = 127 - ev.y, 127 - ev.x, 1 - ev.p
    addr = (y_raw << 8) | (x_raw << 1) | bit
    special = np.array([[0x8000, 7]], dtype=">u4")  # bit 15: not a DVS event, dropped
    rec = np.stack([addr, ev.t], axis=1).astype(">u4")
    path.parent.mkdir(parents=True, exist_ok=True)
    head = b"#!AER-DAT2.0\r\n# This is a raw AE data file\r\n"
    path.write_bytes(head + special.tobytes() + rec.tobytes())


def _same(a: Events, b: Events) -> bool:
    return all(np.array_equal(getattr(a, k), getattr(b, k)) for k in "xytp")


# --- readers --------------------------------------------------------------------------------


def test_read_nmnist_bin_roundtrip_and_overflow(tmp_path):
    ev = _events(500, 34, 34, 0, t_max=1 << 23)
    write_bin(tmp_path / "a.bin", ev)
    assert _same(read_nmnist_bin(tmp_path / "a.bin"), ev)
    # an event with y == 240 is a timestamp-overflow marker: dropped, later t += 2**13
    raw = (tmp_path / "a.bin").read_bytes()
    marker = bytes([0, 240, 0, 0, 0])
    (tmp_path / "b.bin").write_bytes(raw[: 5 * 100] + marker + raw[5 * 100 :])
    got = read_nmnist_bin(tmp_path / "b.bin")
    assert len(got) == 500
    assert np.array_equal(got.t, ev.t + np.where(np.arange(500) >= 100, 1 << 13, 0))


def test_read_aedat31_polarity_packets(tmp_path):
    ev = _events(333, 128, 128, 1, t_max=5_000_000)
    write_aedat31(tmp_path / "u.aedat", ev)
    assert _same(read_aedat31(tmp_path / "u.aedat"), ev)


def test_read_aedat2_cifar10dvs_orientation(tmp_path):
    ev = _events(200, 128, 128, 2)
    write_aedat2_cifar10dvs(tmp_path / "c.aedat", ev)
    got = decode_dvs128_cifar10dvs(*read_aedat2(tmp_path / "c.aedat"))
    assert _same(got, ev)


def test_gesture_labels_csv(tmp_path):
    f = tmp_path / "user01_led_labels.csv"
    f.write_text("class,startTime_usec,endTime_usec\n1,100,200\n11,300,450\n")
    assert read_gesture_labels(f) == [(0, 100, 200), (10, 300, 450)]
    f.write_text("class,startTime_usec,endTime_usec\n1,100\n")
    with pytest.raises(CorruptDataError, match=r"user01_led_labels\.csv: line 2"):
        read_gesture_labels(f)


@pytest.mark.parametrize("cut", [1, 3, 7])
def test_truncated_files_are_reported_by_path(tmp_path, cut):
    ev = _events(100, 34, 34, 3)
    write_bin(tmp_path / "n.bin", ev)
    write_aedat31(tmp_path / "g.aedat", _events(100, 128, 128, 3))
    write_aedat2_cifar10dvs(tmp_path / "c.aedat", _events(100, 128, 128, 3))
    for name, read in [("n.bin", read_nmnist_bin), ("g.aedat", read_aedat31),
                       ("c.aedat", read_aedat2)]:
        p = tmp_path / name
        p.write_bytes(p.read_bytes()[:-cut])
        with pytest.raises(CorruptDataError, match="truncated") as err:
            read(p)
        assert str(p) in str(err.value)
    (tmp_path / "empty.bin").write_bytes(b"")
    with pytest.raises(CorruptDataError, match=r"empty\.bin"):
        read_nmnist_bin(tmp_path / "empty.bin")


# --- frames ---------------------------------------------------------------------------------


def test_time_and_count_bins():
    t = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 99])
    # time: span 100 us, T = 4 -> windows of 25 us
    assert time_bins(t, 4, "time").tolist() == [0] * 9 + [3]
    # count: 10 events into 4 frames -> floor(r * 4 / 10)
    assert time_bins(t, 4, "count").tolist() == [0, 0, 0, 1, 1, 2, 2, 2, 3, 3]
    shuffled = np.array([5, 1, 3])
    assert time_bins(shuffled, 3, "count").tolist() == [2, 0, 1]
    with pytest.raises(DataError, match="split_by"):
        time_bins(t, 4, "events")


@pytest.mark.parametrize("size", [(34, 34), (48, 48), (17, 10)])
@pytest.mark.parametrize("split_by", ["time", "count"])
def test_frames_keep_every_event_in_its_window(size, split_by):
    ev = _events(4000, 34, 34, 4)
    fr = events_to_frames(ev, time_steps=5, sensor=(34, 34), size=size, split_by=split_by)
    assert fr.shape == (5, 2, *size)
    bins = time_bins(ev.t, 5, split_by)
    for k in range(5):
        for pol in (0, 1):
            assert fr[k, pol].sum() == np.sum((bins == k) & (ev.p == pol))
    if size == (34, 34):  # native size: counts per pixel, by a plain loop
        ref = np.zeros_like(fr)
        for b, p, y, x in zip(bins, ev.p, ev.y, ev.x, strict=True):
            ref[b, p, y, x] += 1
        assert np.array_equal(fr, ref)


def test_resize_scales_coordinates():
    ev = Events(np.array([0, 127, 64]), np.array([127, 0, 32]), np.array([0, 1, 2]),
                np.array([1, 0, 1]))
    fr = events_to_frames(ev, time_steps=1, sensor=(128, 128), size=(48, 48))
    # x' = floor(x * 48 / 128): 0 -> 0, 127 -> 47, 64 -> 24; y 32 -> 12
    assert fr[0, 1, 47, 0] == 1 and fr[0, 0, 0, 47] == 1 and fr[0, 1, 12, 24] == 1


# --- datasets in their distributed layouts ----------------------------------------------------


def _nmnist_tree(root: Path) -> dict[Path, Events]:
    files = {}
    for split, per in (("Train", 2), ("Test", 1)):
        for d in range(10):
            for i in range(per):
                ev = _events(80 + 10 * d + i, 34, 34, 100 * d + i + (split == "Test"))
                p = root / split / str(d) / f"{i:05d}.bin"
                write_bin(p, ev)
                files[p] = ev
    return files


def test_nmnist_layout_frames_and_cache(tmp_path, monkeypatch):
    files = _nmnist_tree(tmp_path / "NMNIST")
    train = get_dataset("nmnist", tmp_path, "train", time_steps=4)
    assert train.inputs.shape == (20, 4, 2, 34, 34) and train.labels.tolist() == [
        d for d in range(10) for _ in range(2)
    ]
    sums = train.inputs.sum(dim=(1, 2, 3, 4)).tolist()
    want = [len(files[tmp_path / "NMNIST" / "Train" / str(d) / f"{i:05d}.bin"])
            for d in range(10) for i in range(2)]
    assert sums == want
    cached = list((tmp_path / "cache" / "frames").glob("*.pt"))
    assert len(cached) == 1 and not list((tmp_path / "cache" / "frames").glob(".*tmp"))

    def no_read(path):
        raise AssertionError("read a file although the cache holds the frames")

    monkeypatch.setattr(nm, "read_nmnist_bin", no_read)
    again = get_dataset("nmnist", tmp_path, "train", time_steps=4)
    assert torch.equal(again.inputs, train.inputs)
    monkeypatch.undo()
    monkeypatch.setenv("QSNN_CACHE_DIR", str(tmp_path / "cache"))
    # another parameter is another cache entry
    get_dataset("nmnist", tmp_path, "train", time_steps=4, size=48, split_by="count")
    assert len(list((tmp_path / "cache" / "frames").glob("*.pt"))) == 2


def test_cache_is_invalidated_by_a_changed_file_and_never_used_partial(tmp_path, caplog):
    _nmnist_tree(tmp_path)
    first = get_dataset("nmnist", tmp_path, "test", time_steps=2)
    (cache_file,) = (tmp_path / "cache" / "frames").glob("*.pt")
    # a truncated cache file is ignored and rebuilt
    cache_file.write_bytes(cache_file.read_bytes()[:200])
    with caplog.at_level("WARNING"):
        again = get_dataset("nmnist", tmp_path, "test", time_steps=2)
    assert torch.equal(again.inputs, first.inputs) and "rebuilding" in caplog.text
    # a source file that changes (new size and mtime) changes the key
    write_bin(tmp_path / "Test" / "3" / "00000.bin", _events(7, 34, 34, 9))
    os.utime(tmp_path / "Test" / "3" / "00000.bin", ns=(1, 1))
    changed = get_dataset("nmnist", tmp_path, "test", time_steps=2)
    assert int(changed.inputs[3].sum()) == 7


def test_nmnist_corrupt_recording_is_named(tmp_path):
    _nmnist_tree(tmp_path)
    bad = tmp_path / "Train" / "5" / "00001.bin"
    bad.write_bytes(bad.read_bytes()[:-2])
    with pytest.raises(CorruptDataError, match=str(bad)):
        get_dataset("nmnist", tmp_path, "train", time_steps=3)
    assert not list((tmp_path / "cache").rglob("*.pt"))  # nothing cached from a failed build
    out = tmp_path / "Test" / "1" / "00000.bin"
    ev = _events(20, 34, 34, 1)
    write_bin(out, Events(ev.x + 30, ev.y, ev.t, ev.p))  # x up to 63 on a 34-wide sensor
    with pytest.raises(CorruptDataError, match="outside the 34x34 sensor"):
        get_dataset("nmnist", tmp_path, "test", time_steps=3)


def test_missing_event_folders_name_path_and_source(tmp_path):
    cases = [
        ("nmnist", "Train/<digit>/*.bin", "garrickorchard.com/datasets/n-mnist"),
        ("dvs128_gesture", "DvsGesture/user*_*.aedat", "research.ibm.com"),
        ("cifar10_dvs", "<class>/*.aedat", "figshare.com"),
        ("ncaltech101", "Caltech101/<class>/*.bin", "garrickorchard.com/datasets/n-caltech101"),
    ]
    for name, layout, source in cases:
        with pytest.raises(MissingDataError) as err:
            get_dataset(name, tmp_path, "train", time_steps=4)
        msg = str(err.value)
        assert f"{tmp_path}/{layout}" in msg and source in msg and "\n" not in msg
        with pytest.raises(MissingDataError, match="cannot download"):
            get_dataset(name, tmp_path, "train", time_steps=4, download=True)


def _gesture_tree(folder: Path, with_trials: bool = True) -> dict[str, tuple[Events, list]]:
    trials = {"user01_fluorescent": [(1, 1000, 90_000), (11, 100_000, 250_000)],
              "user02_led": [(4, 0, 300_000)],
              "user24_lab": [(7, 50_000, 120_000), (2, 130_000, 260_000)]}
    out = {}
    for k, (name, rows) in enumerate(trials.items()):
        ev = _events(3000, 128, 128, 10 + k)
        write_aedat31(folder / f"{name}.aedat", ev)
        lines = ["class,startTime_usec,endTime_usec"] + [f"{c},{s},{e}" for c, s, e in rows]
        (folder / f"{name}_labels.csv").write_text("\n".join(lines) + "\n")
        out[name] = (ev, rows)
    if with_trials:
        (folder / "trials_to_train.txt").write_text("user01_fluorescent.aedat\nuser02_led.aedat\n")
        (folder / "trials_to_test.txt").write_text("user24_lab.aedat\n\n")
    return out


@pytest.mark.parametrize("with_trials", [True, False])
def test_dvs_gesture_official_aedat(tmp_path, with_trials):
    trials = _gesture_tree(tmp_path / "DvsGesture", with_trials)
    train = get_dataset("dvsgesture", tmp_path, "train", time_steps=3)
    test = get_dataset("dvs128_gesture", tmp_path, "test", time_steps=3)
    assert train.inputs.shape == (3, 3, 2, 48, 48) and len(test) == 2
    assert train.labels.tolist() == [0, 10, 3] and test.labels.tolist() == [6, 1]
    rows = [(trials[n][0], s, e) for n in ("user01_fluorescent", "user02_led")
            for _, s, e in trials[n][1]]
    for i, (ev, s, e) in enumerate(rows):  # each sample holds exactly its window's events
        assert int(train.inputs[i].sum()) == int(np.sum((ev.t >= s) & (ev.t < e)))
    assert train.augment is not None and not train.augment.flip  # a flip swaps left and right


def test_dvs_gesture_missing_labels_file(tmp_path):
    _gesture_tree(tmp_path / "DvsGesture")
    (tmp_path / "DvsGesture" / "user02_led_labels.csv").unlink()
    with pytest.raises(MissingDataError, match=r"user02_led_labels\.csv is missing"):
        get_dataset("dvsgesture", tmp_path, "train", time_steps=3)


def test_dvs_gesture_tonic_repack(tmp_path):
    rng = np.random.default_rng(0)
    counts = {}
    for trial, labels in (("user01_fluorescent", [0, 5]), ("user03_lab", [10])):
        for lab in labels:
            n = int(rng.integers(50, 200))
            arr = np.stack([rng.integers(0, 128, n), rng.integers(0, 128, n),
                            rng.integers(0, 2, n), np.sort(rng.integers(0, 6000, n))], axis=1)
            p = tmp_path / "ibmGestureTrain" / trial / f"{lab}.npy"
            p.parent.mkdir(parents=True, exist_ok=True)
            np.save(p, arr.astype(np.float64))
            counts[(trial, lab)] = n
    d = get_dataset("dvs128_gesture", tmp_path, "train", time_steps=2, size="native",
                    format="tonic")
    assert d.labels.tolist() == [0, 5, 10] and d.inputs.shape == (3, 2, 2, 128, 128)
    assert d.inputs.sum(dim=(1, 2, 3, 4)).tolist() == list(counts.values())


def test_cifar10_dvs_fixed_nine_to_one_split(tmp_path):
    folder = tmp_path / "CIFAR10DVS"
    for cls in nm.CIFAR10_CLASSES:
        for i in range(11):
            write_aedat2_cifar10dvs(folder / cls / f"cifar10_{cls}_{i}.aedat",
                                    _events(30 + i, 128, 128, i))
    train = get_dataset("cifar10_dvs", tmp_path, "train", time_steps=2)
    test = get_dataset("cifar10_dvs", tmp_path, "test", time_steps=2)
    # per class, the first ceil(0.9 * 11) = 10 names in sorted order train; "..._9" is last
    assert (len(train), len(test)) == (100, 10)
    assert test.labels.tolist() == list(range(10))
    assert test.inputs.sum(dim=(1, 2, 3, 4)).tolist() == [30 + 9] * 10
    assert train.inputs.shape[1:] == (2, 2, 48, 48)


def test_ncaltech101_layout_and_split(tmp_path):
    folder = tmp_path / "Caltech101"
    for cls, n in (("BACKGROUND_Google", 10), ("accordion", 7), ("ant", 1)):
        for i in range(n):
            write_bin(folder / cls / f"image_{i + 1:04d}.bin", _events(40 + i, 240, 180, i))
    (tmp_path / "Caltech101_annotations" / "accordion").mkdir(parents=True)
    train = get_dataset("ncaltech101", tmp_path, "train", time_steps=2)
    test = get_dataset("ncaltech101", tmp_path, "test", time_steps=2)
    assert train.classes == ("BACKGROUND_Google", "accordion", "ant")
    assert (len(train), len(test)) == (9 + 7 + 1, 1)  # ceil(9.0), ceil(6.3), ceil(0.9)
    assert test.labels.tolist() == [0] and int(test.inputs.sum()) == 40 + 9
    assert train.inputs.shape[1:] == (2, 2, 48, 48)


def test_event_options_are_checked(tmp_path):
    _nmnist_tree(tmp_path)
    with pytest.raises(DataError, match="time_steps must be"):
        get_dataset("nmnist", tmp_path, "test", time_steps=0)
    with pytest.raises(DataError, match="split_by"):
        get_dataset("nmnist", tmp_path, "test", time_steps=2, split_by="number")
    with pytest.raises(DataError, match="frame size"):
        get_dataset("nmnist", tmp_path, "test", time_steps=2, size=(0, 3))
    assert qd.dataset_spec("cifar10dvs").options[:1] == ["time_steps"]
