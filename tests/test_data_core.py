"""Data layer: registry, embedded digits, CIFAR layout, batches, augmentation, holdout, errors."""

from __future__ import annotations

import hashlib
import pickle
import subprocess
import sys
import tarfile
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import qsnn.data as qd
from qsnn.data import (
    Augment,
    CorruptDataError,
    DataError,
    MissingDataError,
    TensorData,
    get_dataset,
    random_crop,
    random_flip,
    split_holdout,
)

# --- registry ---------------------------------------------------------------------------


def test_registry_names_and_aliases():
    names = qd.list_datasets()
    for n in ("digits", "cifar10", "cifar100", "imagenet", "nmnist", "dvs128_gesture",
              "cifar10_dvs", "ncaltech101"):
        assert n in names
    assert qd.dataset_spec("dvsgesture").name == "dvs128_gesture"
    assert qd.dataset_spec("CIFAR-10").name == "cifar10"
    assert qd.list_datasets("events") == ["cifar10_dvs", "dvs128_gesture", "ncaltech101", "nmnist"]


def test_unknown_dataset_suggests_close_matches():
    with pytest.raises(DataError, match=r"unknown dataset 'cifar01'.*did you mean 'cifar10'"):
        get_dataset("cifar01")


def test_suggestions_name_each_dataset_once_closest_first():
    """``cifar`` is close to four spellings of two datasets. difflib's ratio 2M/T by hand:
    cifar10 10/12 = 0.83, cifar_10 and cifar100 10/13 = 0.77, cifar10dvs 10/15 = 0.67,
    cifar10_dvs 10/16 = 0.63, cifar_100 10/14 = 0.71; best per dataset: cifar10 0.83,
    cifar100 0.77, cifar10_dvs 0.67 (``'cifar10', 'cifar10', 'cifar100'`` before the fix)."""
    with pytest.raises(DataError) as err:
        get_dataset("cifar")
    assert "did you mean 'cifar10', 'cifar100', 'cifar10_dvs'?" in str(err.value)
    # five spellings of dvs128_gesture (and nothing else) are within reach of "gesture_"
    with pytest.raises(DataError) as err:
        get_dataset("gesture_")
    assert "did you mean 'dvs128_gesture'? (known:" in str(err.value)


def test_unknown_option_and_bad_split_are_clear():
    with pytest.raises(DataError, match=r"does not take option.*colour"):
        get_dataset("digits", colour="red")
    with pytest.raises(DataError, match="splits train, test; got split='valid'"):
        get_dataset("digits", split="valid")
    with pytest.raises(DataError, match="give time_steps"):
        get_dataset("nmnist", "/nonexistent")


def test_none_options_are_dropped_and_time_steps_ignored_for_static():
    d = get_dataset("digits", split="test", size=None, time_steps=4)
    assert d.sample_shape == (1, 8, 8) and d.time_steps is None


def test_import_pulls_in_nothing_optional():
    code = (
        "import sys, qsnn.data; "
        "print([m for m in ('sklearn', 'PIL', 'tonic', 'torchvision', 'matplotlib') "
        "if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- embedded digits --------------------------------------------------------------------


def test_digits_is_offline_fixed_and_honest():
    pytest.importorskip("sklearn")
    train = get_dataset("digits", split="train")
    test = get_dataset("digits", split="test")
    assert (len(train), len(test)) == (1438, 359)
    assert train.inputs.dtype == torch.uint8 and train.inputs.shape[1:] == (1, 8, 8)
    assert train.labels.min() == 0 and train.labels.max() == 9
    # the split is a partition of the 1,797 images, stratified, fixed by the seed
    assert sum(train.class_counts()) + sum(test.class_counts()) == 1797
    assert all(34 <= c <= 37 for c in test.class_counts())
    again = get_dataset("digits", split="test")
    assert torch.equal(again.inputs, test.inputs) and torch.equal(again.labels, test.labels)
    # normalized train batches have mean ~0 and std ~1
    x = train.to_float(train.inputs)
    assert abs(float(x.mean())) < 1e-4 and abs(float(x.std()) - 1) < 1e-3
    big = get_dataset("digits", split="test", size=32)
    assert big.inputs.shape == (359, 1, 32, 32)


def test_missing_optional_dependency_names_pip_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(DataError, match=r'pip install "qsnn\[digits\]"'):
        get_dataset("digits")


# --- CIFAR from the standard python layout (synthetic files) ---------------------------


def _write_cifar10(root: Path, n_per_batch: int = 20, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    arrays = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, n_per_batch).tolist()
        arrays[name] = data
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": data, b"labels": labels, b"batch_label": b"x"}, f, protocol=2)
    with open(folder / "batches.meta", "wb") as f:
        names = [c.encode() for c in "abcdefghij"]
        pickle.dump({b"label_names": names, b"num_vis": 3072}, f, protocol=2)
    return arrays


def test_cifar_reads_the_python_layout(tmp_path):
    arrays = _write_cifar10(tmp_path)
    train = get_dataset("cifar10", tmp_path, "train")
    test = get_dataset("cifar10", tmp_path / "cifar-10-batches-py", "test")  # the folder itself
    assert train.inputs.shape == (100, 3, 32, 32) and test.inputs.shape == (20, 3, 32, 32)
    assert train.classes == tuple("abcdefghij")
    # row layout is channel-planar RGB: the first 1024 bytes are the red plane
    red = torch.from_numpy(arrays["data_batch_1"][0, :1024])
    assert torch.equal(train.inputs[0, 0].flatten(), red)
    assert torch.equal(train.inputs[-1].flatten(), torch.from_numpy(arrays["data_batch_5"][-1]))


def test_cifar_missing_folder_names_path_layout_and_source(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("the network was touched without download=True")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    with pytest.raises(MissingDataError) as err:
        get_dataset("cifar10", tmp_path, "train")
    msg = str(err.value)
    assert str(tmp_path / "cifar-10-batches-py") in msg and "data_batch_1" in msg
    assert "cifar-10-python.tar.gz" in msg and "download=True" in msg and "\n" not in msg


def test_cifar_corrupt_file_is_reported_with_its_path(tmp_path):
    _write_cifar10(tmp_path)
    bad = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    bad.write_bytes(bad.read_bytes()[:1000])  # truncated
    with pytest.raises(CorruptDataError, match=str(bad)):
        get_dataset("cifar10", tmp_path, "train")
    get_dataset("cifar10", tmp_path, "test")  # the other split still loads


def test_cifar_pickles_cannot_run_code(tmp_path):
    _write_cifar10(tmp_path)
    evil = tmp_path / "cifar-10-batches-py" / "test_batch"
    evil.write_bytes(pickle.dumps(subprocess.Popen, protocol=2))
    with pytest.raises(CorruptDataError, match="refusing to load"):
        get_dataset("cifar10", tmp_path, "test")


def test_download_is_explicit_and_checked(tmp_path, monkeypatch):
    src = tmp_path / "src"
    _write_cifar10(src)
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    cfg = dict(qd.static._CIFAR["cifar10"], url=archive.as_uri(), md5=md5)
    monkeypatch.setitem(qd.static._CIFAR, "cifar10", cfg)
    dest = tmp_path / "dest"
    with pytest.raises(MissingDataError):
        get_dataset("cifar10", dest, "test")
    data = get_dataset("cifar10", dest, "test", download=True)
    assert len(data) == 20 and (dest / "cifar-10-batches-py" / "test_batch").is_file()
    assert not list(dest.glob(".extract-*")) and not list(dest.glob("*.part"))
    # a wrong checksum is refused and leaves nothing behind
    monkeypatch.setitem(qd.static._CIFAR, "cifar10", dict(cfg, md5="0" * 32))
    with pytest.raises(CorruptDataError, match="MD5"):
        get_dataset("cifar10", tmp_path / "dest2", "test", download=True)
    assert not (tmp_path / "dest2" / "cifar-10-batches-py").exists()


# --- batches ------------------------------------------------------------------------------


def _static(n: int = 10, classes: int = 2) -> TensorData:
    x = torch.arange(n * 3 * 4 * 4, dtype=torch.int64).remainder(256).to(torch.uint8)
    return TensorData(
        "toy", "train", x.view(n, 3, 4, 4), torch.arange(n) % classes, ("a", "b"),
        mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), augment=Augment(padding=1, flip=True),
    )


def test_static_batches_normalize_and_count():
    d = _static()
    batches = list(d.batches(4))
    assert len(d.batches(4)) == 3 and [len(y) for _, y in batches] == [4, 4, 2]
    assert len(d.batches(4, drop_last=True)) == 2
    x, y = batches[0]
    assert x.dtype == torch.float32 and x.shape == (4, 3, 4, 4)
    expect = (d.inputs[:4].float() / 255 - 0.5) / 0.25
    torch.testing.assert_close(x, expect)
    assert torch.equal(y, d.labels[:4])


def test_batches_are_deterministic_with_a_seed():
    d = _static(64)

    def run(seed, epoch):
        it = d.batches(16, shuffle=True, seed=seed, epoch=epoch, augment=True)
        return list(it)

    a, b, c = run(0, 0), run(0, 0), run(0, 1)
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not all(torch.equal(ya, yc) for (_, ya), (_, yc) in zip(a, c, strict=True))
    seen = torch.cat([y for _, y in a])
    assert sorted(seen.tolist()) == sorted(d.labels.tolist())


def test_shards_split_one_permutation():
    d = _static(10)
    idx = torch.arange(10)
    d = TensorData("toy", "train", d.inputs, idx, tuple("abcdefghij"), mean=d.mean, std=d.std)
    shards = [torch.cat([y for _, y in d.batches(2, shuffle=True, rank=r, world_size=3)])
              for r in range(3)]
    assert [len(s) for s in shards] == [4, 4, 4]  # ceil(10 / 3), padded from the start
    assert set(torch.cat(shards).tolist()) == set(range(10))
    dropped = [torch.cat([y for _, y in d.batches(3, shuffle=True, rank=r, world_size=3,
                                                   drop_last=True)]) for r in range(3)]
    assert [len(s) for s in dropped] == [3, 3, 3] and len(set(torch.cat(dropped).tolist())) == 9


def test_event_batches_are_time_major():
    frames = torch.randint(0, 5, (6, 3, 2, 5, 5), dtype=torch.uint8)  # [N, T, 2, H, W]
    d = TensorData("ev", "train", frames, torch.arange(6) % 2, ("a", "b"), kind="events")
    x, y = next(iter(d.batches(4)))
    assert torch.equal(y, d.labels[:4])
    assert x.shape == (3, 4, 2, 5, 5) and x.is_contiguous() and x.dtype == torch.float32
    assert torch.equal(x, frames[:4].transpose(0, 1).float())
    assert d.time_steps == 3 and d.sample_shape == (2, 5, 5)


def test_tensor_data_rejects_wrong_layouts():
    with pytest.raises(DataError, match=r"\[N, T, 2, H, W\]"):
        TensorData("ev", "train", torch.zeros(2, 2, 4, 4), torch.zeros(2), ("a",), kind="events")
    with pytest.raises(DataError, match="labels must be"):
        TensorData("s", "train", torch.zeros(2, 1, 4, 4), torch.zeros(3), ("a",),
                   mean=(0,), std=(1,))


# --- augmentation -------------------------------------------------------------------------


def test_random_crop_matches_the_per_sample_definition():
    x = torch.randint(0, 256, (37, 3, 8, 8), dtype=torch.uint8)
    y = random_crop(x, 2, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    dy, dx = torch.randint(0, 5, (37,), generator=g), torch.randint(0, 5, (37,), generator=g)
    p = F.pad(x, (2, 2, 2, 2))
    ref = torch.stack([p[b, :, dy[b] : dy[b] + 8, dx[b] : dx[b] + 8] for b in range(37)])
    assert torch.equal(y, ref)


def test_random_flip_flips_about_half_and_nothing_else():
    x = torch.randint(0, 256, (200, 3, 5, 5), dtype=torch.uint8)
    y = random_flip(x, torch.Generator().manual_seed(0))
    flipped = torch.tensor([torch.equal(y[b], x[b].flip(-1)) for b in range(200)])
    same = torch.tensor([torch.equal(y[b], x[b]) for b in range(200)])
    assert bool((flipped | same).all()) and 70 < int(flipped.sum()) < 130


def test_event_frames_get_one_crop_and_flip_for_all_steps():
    base = torch.randint(0, 9, (16, 1, 2, 6, 6), dtype=torch.uint8)
    x = base.expand(16, 4, 2, 6, 6).contiguous()  # [B, T, 2, H, W], equal over T
    y = Augment(padding=2, flip=True)(x, torch.Generator().manual_seed(1))
    assert y.shape == x.shape
    assert all(torch.equal(y[:, t], y[:, 0]) for t in range(4))
    assert y.sum() <= x.sum()  # a crop may only drop counts


def test_augment_runs_on_the_batch_device():
    dev = "cuda" if torch.cuda.is_available() else "meta"
    if dev == "meta":
        pytest.skip("no CUDA device")
    x = torch.randint(0, 256, (32, 3, 8, 8), dtype=torch.uint8)
    cpu = Augment(2, True)(x, torch.Generator().manual_seed(0))
    gpu = Augment(2, True)(x.to(dev), torch.Generator().manual_seed(0))
    assert gpu.device.type == "cuda" and torch.equal(gpu.cpu(), cpu)


# --- holdout and fixed splits -----------------------------------------------------------


def test_split_holdout_is_stratified_disjoint_and_fixed():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    d = TensorData("toy", "train", torch.arange(100, dtype=torch.uint8).view(100, 1, 1, 1),
                   labels, ("a", "b", "c"), mean=(0.0,), std=(1.0,))
    rest, val = split_holdout(d, 10, seed=0)
    assert (len(rest), len(val)) == (90, 10) and val.split == "val"
    assert val.class_counts() == [5, 3, 2]
    ids = set(rest.inputs.flatten().tolist()) | set(val.inputs.flatten().tolist())
    assert ids == set(range(100))
    again = split_holdout(d, 10, seed=0)[1]
    assert torch.equal(again.inputs, val.inputs)
    assert not torch.equal(split_holdout(d, 10, seed=1)[1].inputs, val.inputs)
    with pytest.raises(DataError, match="holdout size"):
        split_holdout(d, 100)


def test_per_class_split_takes_the_first_ceil_nine_tenths():
    labels = [0] * 11 + [1] * 7 + [2]
    train, test = qd.per_class_split(labels, 0.9)
    # class 0: ceil(9.9) = 10 of 11 to train; class 1: ceil(6.3) = 7 of 7; class 2: 1 of 1
    assert test == [10]
    assert train == list(range(10)) + list(range(11, 18)) + [18]


def test_load_splits_gives_train_val_test():
    pytest.importorskip("sklearn")
    s = qd.load_splits("digits", holdout=100)
    assert (len(s.train), len(s.val), len(s.test)) == (1338, 100, 359)


# --- torch.utils.data.Dataset protocol --------------------------------------------------


def _loader_batches(ds, batch_size, **kw):
    return list(torch.utils.data.DataLoader(ds, batch_size=batch_size, **kw))


def _assert_same_batches(got, want):
    assert len(got) == len(want)
    for (xg, yg), (xw, yw) in zip(got, want, strict=True):
        assert xg.dtype == xw.dtype and yg.dtype == yw.dtype == torch.int64
        assert torch.equal(xg, xw) and torch.equal(yg, yw)


def test_digits_dataloader_equals_batches():
    """The embedded digits through ``DataLoader`` (fetching via ``__getitems__``) and through
    ``ds[i]`` one by one give exactly the tensors of ``batches()``; values are
    ``(k / 255 - mean) / std`` of the stored uint8 levels."""
    pytest.importorskip("sklearn")
    ds = get_dataset("digits", split="test")
    assert isinstance(ds, torch.utils.data.Dataset) and len(ds) == 359
    want = list(ds.batches(64))
    _assert_same_batches(_loader_batches(ds, 64), want)
    _assert_same_batches(_loader_batches(ds, 64, collate_fn=ds.collate), want)
    one_by_one = [ds[i] for i in range(len(ds))]  # the plain __getitem__ path
    x = torch.stack([s[0] for s in one_by_one])
    y = torch.stack([s[1] for s in one_by_one])
    assert torch.equal(x, torch.cat([b[0] for b in want]))
    assert torch.equal(y, torch.cat([b[1] for b in want]))
    x0, y0 = ds[0]
    assert x0.shape == (1, 8, 8) and x0.dtype == torch.float32 and y0.shape == ()
    (m,), (sd,) = ds.mean, ds.std
    expect = (ds.inputs[0].double() / 255 - m) / sd
    torch.testing.assert_close(x0.double(), expect, rtol=1e-6, atol=1e-6)
    assert int(y0) == int(ds.labels[0])


def test_static_samples_are_not_augmented_and_index_like_a_sequence():
    """The toy split carries an augmentation: ``ds[i]`` is the unaugmented sample (as
    ``batches()`` without ``augment``); indices follow list semantics."""
    d = _static(10)
    assert d.augment is not None and d.augment.enabled
    x3, y3 = d[3]
    torch.testing.assert_close(x3, (d.inputs[3].float() / 255 - 0.5) / 0.25)
    assert int(y3) == 1
    ref = list(range(10))  # a list of the same length: the sequence rules to follow
    for i in (-1, -10, 0, 9, -3):
        xi, yi = d[i]
        xj, yj = d[ref[i]]
        assert torch.equal(xi, xj) and torch.equal(yi, yj)
    for i in (10, -11, 100):
        with pytest.raises(IndexError):
            ref[i]
        with pytest.raises(IndexError, match="out of range for 10 samples"):
            d[i]
    assert torch.equal(d[np.int64(-2)][0], d[8][0]) and torch.equal(d[torch.tensor(4)][0],
                                                                    d[4][0])
    with pytest.raises(TypeError):
        d[1.0]
    with pytest.raises(TypeError):
        d[1:3]
    assert len(list(d)) == 10  # iteration by the sequence protocol stops at IndexError
    got = d.__getitems__([9, -1, 0])
    assert all(torch.equal(a[0], b[0]) for a, b in zip(got, [d[9], d[9], d[0]], strict=True))
    with pytest.raises(IndexError):
        d.__getitems__([0, 10])
    # a held-out split is a Dataset too
    _, val = split_holdout(d, 4)
    _assert_same_batches(_loader_batches(val, 3, collate_fn=val.collate), list(val.batches(3)))


def test_event_dataloader_equals_batches():
    """Event samples are ``[T, 2, H, W]``; the default collation stacks them batch-major,
    ``collate_fn=ds.collate`` gives the time-major batches of ``batches()``."""
    frames = torch.randint(0, 7, (7, 3, 2, 5, 4), dtype=torch.uint8)  # [N, T, 2, H, W]
    d = TensorData("ev", "train", frames, torch.arange(7) % 2, ("a", "b"), kind="events")
    x, y = d[-2]
    assert x.shape == (3, 2, 5, 4) and x.dtype == torch.float32
    assert torch.equal(x, frames[5].float()) and int(y) == 1
    want = list(d.batches(3))
    _assert_same_batches(_loader_batches(d, 3, collate_fn=d.collate), want)
    batch_major = [(x.transpose(0, 1), y) for x, y in want]
    _assert_same_batches(_loader_batches(d, 3), batch_major)
    with pytest.raises(IndexError):
        d[7]
    with pytest.raises(DataError, match="empty"):
        d.collate([])


# --- ImageNet class folders ---------------------------------------------------------------


def make_image_folders(root, *, seed, per_class, height, width, suffix):
    """ImageNet-style ``train|val/<wnid>/img<i>.<suffix>`` RGB images, classes n01 and n02;
    image ``i`` is ``height[0] + height[1] * i`` pixels high."""
    pil = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(seed)
    for split in ("train", "val"):
        for wnid in ("n01", "n02"):
            (root / split / wnid).mkdir(parents=True)
            for i in range(per_class):
                arr = rng.integers(0, 256, (height[0] + height[1] * i, width, 3), dtype=np.uint8)
                pil.fromarray(arr).save(root / split / wnid / f"img{i}.{suffix}")


def test_imagenet_class_folders(tmp_path):
    make_image_folders(tmp_path, seed=0, per_class=3, height=(20, 7), width=30, suffix="JPEG")
    train = get_dataset("imagenet", tmp_path, "train", image_size=16)
    val = get_dataset("imagenet", tmp_path, "val", image_size=16)
    assert (len(train), len(val), train.classes) == (6, 6, ("n01", "n02"))
    xs = [x for x, _ in train.batches(4, shuffle=True, seed=1, workers=0, augment=True)]
    assert xs[0].shape == (4, 3, 16, 16) and xs[1].shape == (2, 3, 16, 16)
    again = [x for x, _ in train.batches(4, shuffle=True, seed=1, workers=0, augment=True)]
    assert all(torch.equal(a, b) for a, b in zip(xs, again, strict=True))
    x, y = next(iter(val.batches(6, workers=0)))
    assert x.shape == (6, 3, 16, 16) and y.tolist() == [0, 0, 0, 1, 1, 1]
    (tmp_path / "val" / "n02" / "img1.JPEG").write_bytes(b"\xff\xd8\xff not a jpeg")
    with pytest.raises(CorruptDataError, match=r"img1\.JPEG"):
        list(val.batches(6, workers=0))


def test_imagenet_missing_and_without_pillow(tmp_path, monkeypatch):
    pytest.importorskip("PIL.Image")
    with pytest.raises(MissingDataError, match=r"train/<wnid>/\*\.JPEG"):
        get_dataset("imagenet", tmp_path, "train")
    monkeypatch.setitem(sys.modules, "PIL", None)
    monkeypatch.setitem(sys.modules, "PIL.Image", None)
    with pytest.raises(DataError, match=r'pip install "qsnn\[vision\]"'):
        get_dataset("imagenet", tmp_path, "train")


def test_errors_are_value_errors_with_one_line():
    assert issubclass(MissingDataError, DataError) and issubclass(DataError, ValueError)
    with pytest.raises(DataError) as err:
        get_dataset("nmnist", "/nonexistent/x", time_steps=4)
    assert "\n" not in str(err.value) and "/nonexistent/x/Train/<digit>/*.bin" in str(err.value)


def test_imagenet_folders_are_a_dataset(tmp_path):
    """``ds[i]`` decodes as ``batches()`` with its defaults: the val center crop and the
    train split's crop fixed by seed 0, epoch 0; a DataLoader gives the same batches."""
    make_image_folders(tmp_path, seed=1, per_class=2, height=(18, 5), width=26, suffix="png")
    for split in ("train", "val"):
        ds = get_dataset("imagenet", tmp_path, split, image_size=12)
        assert isinstance(ds, torch.utils.data.Dataset) and len(ds) == 4
        want = list(ds.batches(3, workers=0))
        _assert_same_batches(_loader_batches(ds, 3), want)
        _assert_same_batches(_loader_batches(ds, 3, collate_fn=ds.collate), want)
        x, y = ds[-1]
        assert x.shape == (3, 12, 12) and int(y) == 1
        assert torch.equal(x, want[-1][0][-1])
        with pytest.raises(IndexError):
            ds[4]
