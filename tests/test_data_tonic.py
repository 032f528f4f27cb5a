"""Issue 17, item 3: tonic datasets as qsnn event datasets (``tonic:NAME``, ``from_tonic``)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from qsnn.data import DataError, get_dataset
from qsnn.data.errors import MissingDataError
from qsnn.data.frames import events_to_frames
from qsnn.data.from_tonic import events_of, from_tonic

EVENT = np.dtype([("x", "<i8"), ("y", "<i8"), ("t", "<i8"), ("p", "<i8")])


def _events(rows) -> np.ndarray:
    return np.array([tuple(r) for r in rows], dtype=EVENT)


class LookAlike:
    """What from_tonic needs of a tonic dataset: len, [i] -> (events, target), sensor_size."""

    sensor_size = (4, 3, 2)  # tonic's (W, H, P)
    classes = ("left", "right")

    def __init__(self, samples):
        self.samples = samples

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        return self.samples[i]


def test_a_look_alike_dataset_becomes_frames_counted_by_hand() -> None:
    # Sample 0: 4 events, t in 0..99 -> T = 2 time bins of 50 us: [0, 50) and [50, 100).
    s0 = _events([(0, 0, 0, 1), (3, 2, 10, 0), (3, 2, 60, 0), (1, 1, 99, 1)])
    s1 = _events([(2, 1, 5, 1)])
    data = from_tonic(LookAlike([(s0, 1), (s1, 0)]), time_steps=2)
    assert tuple(data.inputs.shape) == (2, 2, 2, 3, 4)  # [N, T, polarity, H, W]
    want = np.zeros((2, 2, 3, 4), dtype=np.int64)
    want[0, 1, 0, 0] = 1  # t=0, ON at x=0, y=0
    want[0, 0, 2, 3] = 1  # t=10, OFF at x=3, y=2
    want[1, 0, 2, 3] = 1  # t=60
    want[1, 1, 1, 1] = 1  # t=99, ON at x=1, y=1
    assert np.array_equal(data.inputs[0].numpy(), want)
    assert int(data.inputs[1].sum()) == 1 and int(data.inputs[1, 0, 1, 1, 2]) == 1
    assert data.labels.tolist() == [1, 0]
    assert data.classes == ("left", "right") and data.kind == "events"


def test_look_alike_errors_name_the_sample() -> None:
    bad = np.zeros(2, dtype=[("x", "<i8"), ("y", "<i8")])
    with pytest.raises(DataError, match=r"sample 0: events need fields x, y, t, p"):
        from_tonic(LookAlike([(bad, 0)]), time_steps=2)
    outside = _events([(9, 0, 0, 1)])
    with pytest.raises(DataError, match=r"outside the 4x3 sensor"):
        from_tonic(LookAlike([(outside, 0)]), time_steps=2)
    with pytest.raises(DataError, match="time_steps must be an integer >= 1"):
        from_tonic(LookAlike([(_events([(0, 0, 0, 1)]), 0)]), time_steps=0)


def test_missing_tonic_says_what_to_install(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "tonic", None)
    with pytest.raises(DataError, match=r'pip install "qsnn\[events\]"'):
        get_dataset("tonic:NMNIST", "/nonexistent", time_steps=4)


def _tonic():
    return pytest.importorskip("tonic", reason="tonic is the optional extra qsnn[events]")


def test_time_and_count_bins_agree_with_tonics_own_to_frame() -> None:
    """tonic.transforms.ToFrame is an independent binning of the same events. Count bins agree
    exactly; time bins agree except that tonic leaves out the events at the very last
    timestamp (its bins end before t_max), which qsnn counts in the last frame."""
    tonic_mod = _tonic()
    from tonic.transforms import ToFrame

    rng = np.random.default_rng(0)
    n = 2000
    ev = np.zeros(n, dtype=EVENT)
    ev["x"], ev["y"] = rng.integers(0, 34, n), rng.integers(0, 34, n)
    ev["t"], ev["p"] = np.sort(rng.integers(0, 300_000, n)), rng.integers(0, 2, n)
    ours = events_to_frames(events_of(ev), time_steps=5, sensor=(34, 34), split_by="count")
    theirs = ToFrame(sensor_size=(34, 34, 2), n_event_bins=5)(ev)
    assert np.array_equal(ours, theirs)
    ours = events_to_frames(events_of(ev), time_steps=5, sensor=(34, 34))
    theirs = ToFrame(sensor_size=(34, 34, 2), n_time_bins=5)(ev).astype(np.int64)
    last = ev[ev["t"] == ev["t"].max()]
    for e in last:
        theirs[-1, e["p"], e["y"], e["x"]] += 1
    assert np.array_equal(ours, theirs)
    assert tonic_mod.__version__


def _fake_tonic_class(tonic_mod):
    """A tonic dataset class in tonic's own style: files under save_to/<ClassName>/, a
    ``download`` that tonic's __init__ calls when they are missing."""

    class FakeDVS(tonic_mod.dataset.Dataset):
        sensor_size = (4, 3, 2)
        dtype = EVENT
        ordering = EVENT.names
        classes = ("a", "b")

        def __init__(self, save_to, train=True, transform=None, target_transform=None):
            super().__init__(save_to, transform=transform, target_transform=target_transform)
            self.folder = Path(self.location_on_system) / ("train" if train else "test")
            if not self.folder.is_dir():
                self.download()
            self.files = sorted(self.folder.glob("*.npy"))

        def download(self):  # stands for tonic's download: writes the files
            for split, n in (("train", 3), ("test", 2)):
                folder = Path(self.location_on_system) / split
                folder.mkdir(parents=True, exist_ok=True)
                for i in range(n):
                    np.save(folder / f"{i % 2}_{i}.npy", _events([(i % 4, 0, 0, 1), (0, 2, 9, 0)]))

        def __getitem__(self, i):
            return np.load(self.files[i]), int(self.files[i].name[0])

        def __len__(self):
            return len(self.files)

    return FakeDVS


def test_tonic_name_loads_through_qsnn_and_never_downloads_unasked(monkeypatch, tmp_path) -> None:
    tonic_mod = _tonic()
    monkeypatch.setattr(tonic_mod.datasets, "FakeDVS", _fake_tonic_class(tonic_mod), raising=False)
    with pytest.raises(
        MissingDataError, match=r"tonic FakeDVS: its files are not under .*--download"
    ):
        get_dataset("tonic:FakeDVS", tmp_path, "train", time_steps=2)
    assert not (tmp_path / "FakeDVS").exists()
    train = get_dataset("tonic:FakeDVS", tmp_path, "train", time_steps=2, download=True)
    test = get_dataset("tonic:fakedvs", tmp_path, "test", time_steps=2)  # files there now
    assert (len(train), len(test)) == (3, 2)
    assert tuple(train.inputs.shape) == (3, 2, 2, 3, 4)
    assert int(train.inputs.sum()) == 6 and train.labels.tolist() == [
        0,
        0,
        1,
    ]  # sorted: 0_0, 0_2, 1_1
    with pytest.raises(DataError, match="tonic has no dataset 'NoSuchSet'"):
        get_dataset("tonic:NoSuchSet", tmp_path, time_steps=2)
