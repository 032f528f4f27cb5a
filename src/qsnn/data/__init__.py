"""Datasets for qsnn (SPEC §7): static images in memory, event recordings as cached frames.

    from qsnn.data import get_dataset
    train = get_dataset("cifar10", "~/data", "train")          # uint8 [50000, 3, 32, 32]
    for x, y in train.batches(128, shuffle=True, seed=0, epoch=e, device="cuda", augment=True):
        ...                                                      # x: float [B, 3, 32, 32]
    ev = get_dataset("cifar10_dvs", "~/data", "train", time_steps=10)   # [N, 10, 2, 48, 48]
    for x, y in ev.batches(64, shuffle=True):                   # x: float [T, B, 2, 48, 48]
        ...
    x, y = train[0]                 # a torch Dataset too: x float [3, 32, 32], y int64 []
    loader = DataLoader(ev, batch_size=64, collate_fn=ev.collate)  # = ev.batches(64)

Every split is a ``torch.utils.data.Dataset`` whose ``ds[i]`` is sample ``i`` exactly as
``batches()`` yields it (unaugmented); ``batches()`` stays the fast path.

Registered names (:func:`list_datasets`): ``digits`` (embedded, offline: scikit-learn's 1,797
8x8 digits), ``cifar10``, ``cifar100``, ``imagenet``, ``nmnist``, ``dvs128_gesture``
(alias ``dvsgesture``), ``cifar10_dvs``, ``ncaltech101``. Only ``download=True`` touches the
network. Every failure is a :class:`DataError` with a one-line message. Importing this
package imports no optional dependency (scikit-learn, Pillow, tonic are imported when used).
"""

from . import imagenet as _imagenet  # noqa: F401  (registers "imagenet")
from . import neuromorphic as _neuromorphic  # noqa: F401  (registers the event datasets)
from . import static as _static  # noqa: F401  (registers "digits", "cifar10", "cifar100")
from .augment import Augment, random_crop, random_flip
from .base import (
    BatchIterator,
    TensorData,
    normalize,
    per_class_split,
    raw_input_bits,
    split_holdout,
)
from .errors import CorruptDataError, DataError, MissingDataError
from .events import Events
from .frames import events_to_frames
from .imagenet import ImageFolderData
from .registry import (
    DatasetSpec,
    DataSplits,
    dataset_spec,
    default_root,
    get_dataset,
    list_datasets,
    load_splits,
    register_dataset,
)

__all__ = [
    "Augment",
    "BatchIterator",
    "CorruptDataError",
    "DataError",
    "DataSplits",
    "DatasetSpec",
    "Events",
    "ImageFolderData",
    "MissingDataError",
    "TensorData",
    "dataset_spec",
    "default_root",
    "events_to_frames",
    "get_dataset",
    "list_datasets",
    "load_splits",
    "normalize",
    "per_class_split",
    "random_crop",
    "random_flip",
    "raw_input_bits",
    "register_dataset",
    "split_holdout",
]
