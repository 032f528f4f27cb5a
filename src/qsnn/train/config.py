"""``TrainConfig``: every setting of a training run, validated, saved with the run."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from ..allocation import Bits

__all__ = ["TrainConfig"]

_PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: The neuron every model had before level scales (configs saved then lack ``precise_bn``).
_NEURON_BEFORE_LEVEL_SCALES = {"level_scale": "fixed", "learn_theta": False, "pow2_theta": False}


def _valid_device(name: str) -> bool:
    if name == "auto":
        return True
    try:
        import torch

        torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        return False
    return True


@dataclass
class TrainConfig:
    """A training run. The CLI flag of each field is ``--`` plus its name with ``-`` for ``_``.

    Defaults follow the paper (AdamW, lr 5e-4, batch 128) with a cosine schedule and warm-up.
    """

    model: str = "small_convnet"
    """Registered model name (``qsnn models``)."""
    dataset: str = "digits"
    """Registered dataset name (``digits`` ships with scikit-learn: no download)."""
    bits: str = "4/4/1"
    """Allocation ``b_w/b_s/T``."""
    overrides: dict[str, Any] | None = None
    """Per-layer widths by module-name pattern, e.g. ``{"stem.*": 8}``."""
    data_root: str | None = None
    """Folder holding the dataset's standard layout (default ``$QSNN_DATA`` or ``./data``)."""
    epochs: int = 10
    """Training epochs."""
    batch_size: int = 128
    """Samples per optimizer step (per process under DDP)."""
    lr: float = 5e-4
    """Peak learning rate of AdamW."""
    weight_decay: float = 0.05
    """AdamW weight decay; never applied to norms, biases, thresholds and scales."""
    warmup_epochs: float = 1.0
    """Linear warm-up length before the cosine decay (fraction of the run at most)."""
    min_lr_ratio: float = 0.0
    """Final learning rate as a fraction of ``lr``."""
    label_smoothing: float = 0.1
    """Label smoothing of the cross-entropy loss."""
    mixup: float = 0.0
    """Mixup Beta(alpha, alpha) parameter; 0 turns it off."""
    cutmix: float = 0.0
    """CutMix Beta(alpha, alpha) parameter; 0 turns it off (with both set, each batch picks one)."""
    augment: bool = True
    """The dataset's standard augmentation (crop with padding, flip)."""
    val_size: int | None = None
    """Training samples held out for choosing the best epoch; ``None``: 5,000 for CIFAR,
    10 % otherwise; 0: no validation (the last epoch is reported)."""
    seed: int = 0
    """Seed of the model initialisation, data order and augmentation."""
    precision: str = "auto"
    """``auto`` (bf16 autocast on a CPU that supports it, bf16/fp16 on CUDA), ``fp32``,
    ``bf16`` or ``fp16`` (CUDA only)."""
    channels_last: bool = True
    """Channels-last memory format for conv nets (faster on CPU and tensor cores)."""
    compile: bool = False
    """Wrap the model in ``torch.compile``."""
    device: str = "auto"
    """``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``."""
    threads: int | None = None
    """CPU threads per process (default: all cores divided among local processes)."""
    deterministic: bool = False
    """Deterministic algorithms (for exact-resume checks; slower)."""
    profile_batches: int = 8
    """Test batches on which the final profile measures firing rates."""
    precise_bn: int = 4096
    """Training images (drawn and augmented as in training) on which batch-norm statistics are
    re-estimated with the trained weights before every evaluation and save ("precise BN"); 0
    keeps the running averages of training."""
    progress: bool = True
    """Show a progress bar (tqdm when installed)."""
    time_steps_data: int | None = None
    """``T`` of event frames (default: the allocation's ``T``)."""
    data_options: dict[str, Any] | None = None
    """Extra dataset options (see ``qsnn.data.get_dataset``)."""
    model_options: dict[str, Any] | None = None
    """Extra model options (see ``qsnn.models.create_model``)."""

    def __post_init__(self) -> None:
        Bits.parse(self.bits)
        checks = [
            ("epochs", self.epochs >= 1, "an integer >= 1"),
            ("batch_size", self.batch_size >= 1, "an integer >= 1"),
            ("lr", self.lr > 0, "a number > 0"),
            ("weight_decay", self.weight_decay >= 0, "a number >= 0"),
            ("warmup_epochs", self.warmup_epochs >= 0, "a number >= 0"),
            ("min_lr_ratio", 0 <= self.min_lr_ratio <= 1, "in [0, 1]"),
            ("label_smoothing", 0 <= self.label_smoothing < 1, "in [0, 1)"),
            ("mixup", self.mixup >= 0, "a number >= 0"),
            ("cutmix", self.cutmix >= 0, "a number >= 0"),
            ("val_size", self.val_size is None or self.val_size >= 0, "an integer >= 0"),
            ("precision", self.precision in _PRECISIONS, f"one of {_PRECISIONS}"),
            ("profile_batches", self.profile_batches >= 0, "an integer >= 0"),
            ("precise_bn", self.precise_bn >= 0, "an integer >= 0"),
            ("threads", self.threads is None or self.threads >= 1, "an integer >= 1"),
            ("device", _valid_device(self.device), "auto, cpu, cuda or cuda:N"),
        ]
        for name, ok, want in checks:
            if not ok:
                flag = "--" + name.replace("_", "-")
                raise ValueError(f"{flag} must be {want}; got {getattr(self, name)!r}")

    @property
    def allocation(self) -> Bits:
        return Bits.parse(self.bits)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from a saved dict, ignoring keys a newer or older version does not know.

        A config saved before ``precise_bn`` existed describes a run trained without it and
        with the neurons of that time (a fixed ``theta``; a learned one not rounded to a power
        of two): it is read back that way, so the run resumes and evaluates as it was trained.
        """
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in values.items() if k in known}
        if "precise_bn" not in values:
            values["precise_bn"] = 0
            options = dict(values.get("model_options") or {})
            options["neuron"] = {**_NEURON_BEFORE_LEVEL_SCALES, **(options.get("neuron") or {})}
            values["model_options"] = options
        return cls(**values)
