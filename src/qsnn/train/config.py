"""``TrainConfig``: every setting of a training run, validated, saved with the run.

Each field carries its help text (and, where the shell spelling is not ``--`` plus the name
with ``-`` for ``_``, its flags) in ``field(metadata=...)``: ``qsnn train``/``qsnn sweep`` build
one flag per field from it, so the dataclass and the command line cannot drift apart.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import numbers
import os
import typing
from collections.abc import Mapping
from dataclasses import Field, asdict, dataclass, field, fields
from typing import Any

from ..allocation import Bits

__all__ = [
    "RESUMABLE_FIELDS",
    "TrainConfig",
    "cli_flag",
    "default_text",
    "field_type",
    "resume_conflicts",
    "settings_key",
]

_PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: Settings a resumed run may change: they do not affect what it computes. Every other field
#: shapes the run (model, bits, overrides, options, data, schedule, seed ...), and a resume
#: that gives another value is refused (:func:`resume_conflicts`).
RESUMABLE_FIELDS = frozenset({"progress", "threads", "device", "data_root", "checkpoint_every"})
#: The seeds ``torch.manual_seed`` takes.
_SEED_RANGE = (-(2**63), 2**64)
#: The neuron every model had before level scales (configs saved then lack ``precise_bn``).
_NEURON_BEFORE_LEVEL_SCALES = {"level_scale": "fixed", "learn_theta": False, "pow2_theta": False}
#: What a run's unset neuron settings were, by version of qsnn's model defaults (the field
#: ``neuron_defaults`` records a run's version). Version 1 is a plain ``SpikeNeuron``'s own
#: (a fixed ``theta = 1`` whatever ``b_s``). Version 2 (the default since 2026-12-02) is the
#: scaled step ``theta * 2**(1 - b_s)``, chosen by the best mean test accuracy over the three
#: splits of budget 4 at ``b_w = 1`` on CIFAR-10 (BENCHMARKS.md, "Which level step by
#: default"). Changing the models' defaults means adding the next version here (the full
#: settings), making it ``NEURON_DEFAULTS_VERSION`` and setting ``MODEL_NEURON_DEFAULTS`` to
#: match (a test checks that they agree): runs saved before keep their version, so they are
#: rebuilt with their own neurons and keep settings keys of their own, never mistaken for runs
#: of the new defaults.
NEURON_DEFAULTS: dict[int, dict[str, Any]] = {
    1: {"level_scale": "fixed", "theta": 1.0, "learn_theta": False, "pow2_theta": True},
    2: {"level_scale": "scaled", "theta": 1.0, "learn_theta": False, "pow2_theta": True},
}
NEURON_DEFAULTS_VERSION = 2
#: ``data_options`` keys that other fields (or the engine) set: passing them would clash.
_RESERVED_DATA_OPTIONS = {
    "name": "dataset",
    "root": "data_root",
    "split": None,
    "time_steps": "time_steps_data",
    "holdout": "val_size",
    "holdout_seed": "seed",
}


def _opt(
    default: Any,
    help: str,
    *,
    flags: tuple[str, ...] | None = None,
    metavar: str | None = None,
    choices: tuple[str, ...] | None = None,
    shown: str | None = None,
) -> Any:
    """A field with its CLI help. ``flags``: the shell spelling when it is not ``--name``;
    ``shown``: what ``--help`` says the default is when it is ``None``."""
    meta = {"help": help, "flags": flags, "metavar": metavar, "choices": choices, "shown": shown}
    return field(default=default, metadata=meta)


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
    """A training run. The CLI flag of each field is ``--`` plus its name with ``-`` for ``_``
    (:func:`cli_flag`); its help text is ``field.metadata["help"]`` (listed below).

    Defaults follow the paper (AdamW, lr 5e-4, batch 128) with a cosine schedule and warm-up.
    Every field is type-checked: a wrong type or value is one ``ValueError`` naming the field,
    its flag, what it takes and what it got. ``bits`` also takes a :class:`~qsnn.Bits`, kept as
    its ``"b_w/b_s/T"`` string (the form saved in ``config.json``).
    """

    model: str = _opt("small_convnet", "registered model name (see `qsnn models`)", metavar="NAME")
    dataset: str = _opt(
        "digits",
        "registered dataset name (digits ships with scikit-learn: no download)",
        metavar="NAME",
    )
    bits: str = _opt("4/4/1", "allocation b_w/b_s/T", metavar="W/S/T")
    overrides: dict[str, Any] | None = _opt(  # noqa: RUF009 (a dataclasses.field)
        None,
        "per-layer widths by module-name pattern: b_w (8) or b_w/b_s ('8/8') of the "
        "modules matching it",
        flags=("--override",),
        shown="none",
    )
    data_root: str | None = _opt(
        None,
        "folder holding the dataset's standard layout",
        metavar="DIR",
        shown="$QSNN_DATA or ./data",
    )
    epochs: int = _opt(10, "training epochs")
    batch_size: int = _opt(128, "samples per optimizer step (per process under DDP)")
    lr: float = _opt(5e-4, "peak learning rate of AdamW")
    weight_decay: float = _opt(
        0.05, "AdamW weight decay; never applied to norms, biases, thresholds and scales"
    )
    warmup_epochs: float = _opt(
        1.0, "linear warm-up length before the cosine decay (half the run at most)"
    )
    min_lr_ratio: float = _opt(0.0, "final learning rate as a fraction of --lr")
    label_smoothing: float = _opt(0.1, "label smoothing of the cross-entropy loss")
    mixup: float = _opt(0.0, "mixup Beta(alpha, alpha) parameter; 0 turns it off")
    cutmix: float = _opt(
        0.0,
        "CutMix Beta(alpha, alpha) parameter; 0 turns it off (with both mixup and cutmix "
        "set, each batch picks one)",
    )
    augment: bool = _opt(True, "the dataset's standard augmentation (crop with padding, flip)")
    val_size: int | None = _opt(
        None,
        "training samples held out for choosing the best epoch; 0: no validation (the "
        "last epoch is reported)",
        shown="5000 for CIFAR, 10% otherwise",
    )
    seed: int = _opt(0, "seed of the model initialisation, data order and augmentation")
    precision: str = _opt(
        "auto",
        "auto (bf16 autocast on a CPU that supports it, bf16/fp16 on CUDA), fp32, "
        "bf16 or fp16 (CUDA only)",
        choices=_PRECISIONS,
    )
    channels_last: bool = _opt(
        True, "channels-last memory format for conv nets (faster on CPU and tensor cores)"
    )
    compile: bool = _opt(False, "wrap the model in torch.compile")
    device: str = _opt("auto", "auto (CUDA when available), cpu, cuda or cuda:N", metavar="DEVICE")
    threads: int | None = _opt(
        None, "CPU threads per process", shown="all cores divided among local processes"
    )
    deterministic: bool = _opt(False, "deterministic algorithms (for exact-resume checks; slower)")
    profile_batches: int = _opt(
        8, "test batches on which the final profile measures firing rates (0: no profile)"
    )
    neuron_defaults: int = _opt(
        NEURON_DEFAULTS_VERSION,
        "which version of qsnn's model neuron defaults fills the neuron settings left unset "
        "(qsnn.train.config.NEURON_DEFAULTS; a run saved before this setting existed: 1)",
    )
    precise_bn: int = _opt(
        4096,
        "training images (drawn and augmented as in training) on which batch-norm "
        "statistics are re-estimated with the trained weights before every evaluation and "
        "save ('precise BN'); 0 keeps the running averages of training",
    )
    progress: bool = _opt(True, "show a progress bar (tqdm when installed)")
    checkpoint_every: float = _opt(
        600.0,
        "seconds of training between mid-epoch checkpoints (a run killed without warning "
        "loses at most this much; every epoch end is saved anyway); 0: epoch ends only",
        metavar="SECONDS",
    )
    time_steps_data: int | None = _opt(None, "T of event frames", shown="the allocation's T")
    data_options: dict[str, Any] | None = _opt(  # noqa: RUF009 (a dataclasses.field)
        None,
        "extra dataset options (see qsnn.data.get_dataset)",
        flags=("--data-option", "--download"),
        shown="none",
    )
    model_options: dict[str, Any] | None = _opt(  # noqa: RUF009 (a dataclasses.field)
        None,
        "extra model constructor options (see qsnn.models.create_model); 'neuron' holds "
        "the settings of every neuron",
        flags=("--neuron", "--model-option"),
        shown="the model's own",
    )

    def __post_init__(self) -> None:
        for f in fields(self):
            setattr(self, f.name, _checked_type(f, getattr(self, f.name)))
        try:
            Bits.parse(self.bits)
        except ValueError as err:
            raise ValueError(f"bits ({cli_flag('bits')}): {err}") from None
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
            ("neuron_defaults", self.neuron_defaults in NEURON_DEFAULTS,
             f"one of {sorted(NEURON_DEFAULTS)}"),
            ("checkpoint_every", 0 <= self.checkpoint_every < float("inf"), "a number >= 0"),
            ("seed", _SEED_RANGE[0] <= self.seed < _SEED_RANGE[1], "an integer in [-2**63, 2**64)"),
            ("threads", self.threads is None or self.threads >= 1, "an integer >= 1"),
            ("device", _valid_device(self.device), "auto, cpu, cuda or cuda:N"),
            ("time_steps_data", self.time_steps_data is None or self.time_steps_data >= 1,
             "an integer >= 1"),
        ]  # fmt: skip
        for name, ok, want in checks:
            if not ok:
                raise ValueError(_must(name, want, getattr(self, name)))
        for key in self.data_options or {}:
            if key in _RESERVED_DATA_OPTIONS:
                owner = _RESERVED_DATA_OPTIONS[key]
                hint = f"; set {owner} ({cli_flag(owner)})" if owner else ""
                raise ValueError(
                    f"data_options ({cli_flag('data_options')}) cannot set {key!r}{hint}"
                )

    @property
    def allocation(self) -> Bits:
        return Bits.parse(self.bits)

    def neuron_options(self) -> dict[str, Any]:
        """The neuron settings the run's model is built with: its version's defaults
        (``NEURON_DEFAULTS[neuron_defaults]``) under the ones it sets (``model_options``)."""
        return self.with_neuron_defaults(self.model_options or {})["neuron"]

    def with_neuron_defaults(self, model_args: Mapping[str, Any]) -> dict[str, Any]:
        """``create_model`` keywords saved with a run (a checkpoint's ``model_args``) with the
        run's neuron defaults filled in, so that a run saved before a change of the defaults
        is rebuilt with the neurons it was trained with."""
        given = model_args.get("neuron") or {}
        return {**model_args, "neuron": {**NEURON_DEFAULTS[self.neuron_defaults], **given}}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        """Build from a saved dict, ignoring keys a newer or older version does not know;
        anything but a mapping (a JSON list, a string) is a ``ValueError``.

        A config saved before ``precise_bn`` existed describes a run trained without it and
        with the neurons of that time (a fixed ``theta``; a learned one not rounded to a power
        of two): it is read back that way, so the run resumes and evaluates as it was trained.
        A ``Bits`` saved as ``{"w": 4, "s": 2, "t": 2}`` (before ``bits`` took a ``Bits``
        explicitly) is read back as ``"4/2/2"``, in ``bits`` and in ``overrides``.
        """
        if not isinstance(values, Mapping):
            raise ValueError(
                f"a training config must be a JSON object (a mapping of setting names to "
                f"values); got {type(values).__name__}"
            )
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in values.items() if k in known}
        values.setdefault("neuron_defaults", 1)  # saved before the field: version 1's
        if "precise_bn" not in values:
            values["precise_bn"] = 0
            options = dict(values.get("model_options") or {})
            options["neuron"] = {**_NEURON_BEFORE_LEVEL_SCALES, **(options.get("neuron") or {})}
            values["model_options"] = options
        if _is_saved_bits(values.get("bits")):
            values["bits"] = Bits(**values["bits"])
        if isinstance(values.get("overrides"), Mapping):
            values["overrides"] = {
                k: Bits(**v) if _is_saved_bits(v) else v for k, v in values["overrides"].items()
            }
        return cls(**values)


def settings_key(config: TrainConfig) -> str:
    """A run's identity: 12 hex digits of the SHA-256 of every setting that shapes it (all
    fields but :data:`RESUMABLE_FIELDS`, as canonical JSON). Two configs that train the same
    run have the same key; another allocation, seed, recipe, overrides or neuron option gives
    another. A sweep names its run directories with it, so a re-run with other settings trains
    new runs instead of reusing finished ones."""
    shaping = {k: v for k, v in config.to_dict().items() if k not in RESUMABLE_FIELDS}
    if shaping.get("neuron_defaults") == 1:  # the value of every run saved before the field:
        del shaping["neuron_defaults"]  # left out, so their keys (run directories) still match
    text = json.dumps(shaping, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def resume_conflicts(saved: TrainConfig, given: TrainConfig) -> list[str]:
    """The settings in which ``given`` contradicts the ``saved`` config of a run it would
    resume, as ``"--bits '2/2/2' (run: '4/4/1')"`` (flag, the value given, the run's value);
    empty when it may resume. Fields in :data:`RESUMABLE_FIELDS` may differ."""
    return [
        f"{cli_flag(f.name)} {getattr(given, f.name)!r} (run: {getattr(saved, f.name)!r})"
        for f in fields(TrainConfig)
        if f.name not in RESUMABLE_FIELDS and getattr(given, f.name) != getattr(saved, f.name)
    ]


def cli_flag(name: str) -> str:
    """The command-line flag(s) of field ``name``: ``--batch-size``; ``--neuron/--model-option``
    for ``model_options``."""
    meta = _FIELDS[name].metadata
    return "/".join(meta["flags"]) if meta["flags"] else "--" + name.replace("_", "-")


def default_text(f: Field) -> str:
    """The default of field ``f`` as ``--help`` shows it (``true``/``false`` for booleans)."""
    if f.default is None:
        return f.metadata["shown"] or "none"
    if isinstance(f.default, bool):
        return "true" if f.default else "false"
    return str(f.default)


def _must(name: str, want: str, value: Any, *, show_type: bool = False) -> str:
    got = f"{value!r} ({type(value).__name__})" if show_type else repr(value)
    return f"{name} ({cli_flag(name)}) must be {want}; got {got}"


def field_type(name: str) -> type:
    """The type of field ``name`` without ``None``: ``int``, ``float``, ``str``, ``bool`` or
    ``dict``."""
    hint = _hints()[name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if args:
        hint = args[0]
    return typing.get_origin(hint) or hint


@functools.cache
def _hints() -> dict[str, Any]:
    return typing.get_type_hints(TrainConfig)


def _is_saved_bits(value: Any) -> bool:
    return isinstance(value, Mapping) and set(value) == {"w", "s", "t"}


def _checked_type(f: Field, value: Any) -> Any:
    """``value`` checked against the annotation of ``f``, in its canonical form: ``int`` and
    ``float`` for numbers (numpy scalars included; never a ``bool``), ``str`` for a ``Bits``
    (``bits``, override values) or a path (``data_root``), a ``dict`` copy of a mapping."""
    name = f.name
    if value is None and type(None) in typing.get_args(_hints()[name]):
        return None
    base = field_type(name)
    if base is bool:
        if not isinstance(value, bool):
            raise ValueError(_must(name, "true or false", value, show_type=True))
        return value
    if base is int:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ValueError(_must(name, "an integer", value, show_type=True))
        return int(value)
    if base is float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValueError(_must(name, "a number", value, show_type=True))
        if not math.isfinite(value):
            raise ValueError(_must(name, "a finite number", value))
        return float(value)
    if base is str:
        if name == "bits" and isinstance(value, Bits):
            return str(value)
        if name == "data_root" and isinstance(value, os.PathLike):
            value = os.fspath(value)
        if not isinstance(value, str):
            want = {"bits": "a 'b_w/b_s/T' string or a Bits", "data_root": "a path"}
            raise ValueError(_must(name, want.get(name, "a string"), value, show_type=True))
        return value
    if base is dict:
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise ValueError(_must(name, "a mapping with string keys", value, show_type=True))
        value = dict(value)
        if name == "overrides":
            value = {k: str(v) if isinstance(v, Bits) else v for k, v in value.items()}
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            raise ValueError(
                _must(name, "JSON values (it is saved in config.json)", value)
            ) from None
        return value
    raise TypeError(f"TrainConfig.{name}: no check for type {base!r}")  # a new kind of field


_FIELDS: dict[str, Field] = {f.name: f for f in fields(TrainConfig)}
TrainConfig.__doc__ = (
    (TrainConfig.__doc__ or "")
    + "\n    Fields:\n\n"
    + "".join(
        f"    - ``{f.name}`` (default {default_text(f)}): {f.metadata['help']}.\n"
        for f in _FIELDS.values()
    )
)
