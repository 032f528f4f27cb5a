"""The training flags of ``qsnn train``/``qsnn sweep``: one per ``TrainConfig`` field, built
from the field (type, default, help in ``field.metadata``), plus ``--config FILE``.

Scalar fields map one to one (``--batch-size N``; booleans as ``--augment/--no-augment``). The
three mapping fields take repeatable ``KEY=VALUE`` flags: ``--override`` (``overrides``),
``--neuron`` and ``--model-option`` (``model_options``), ``--data-option`` and ``--download``
(``data_options``). Every bad key or value is one ``ValueError`` that names the flag, checked
before any data is loaded.
"""

from __future__ import annotations

import argparse
import difflib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import Field, fields
from pathlib import Path
from typing import Any

from .train.config import TrainConfig, cli_flag, default_text, field_type

__all__ = [
    "add_train_flags",
    "check_model_options",
    "data_options",
    "model_options",
    "neuron_options",
    "overrides",
    "read_config_file",
    "train_values",
]


def _split_pair(text: str, flag: str, example: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"{flag} must look like KEY=VALUE (e.g. {example!r}); got {text!r}")
    return key.strip(), value.strip()


_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def _neuron_value(key: str, text: str, default: object) -> object:
    """``--neuron KEY=VALUE``: VALUE read as the type of the setting's default."""
    if isinstance(default, bool):
        if text.lower() not in _TRUE + _FALSE:
            raise ValueError(f"--neuron {key} takes true or false; got {text!r}")
        return text.lower() in _TRUE
    if isinstance(default, float):
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"--neuron {key} takes a number; got {text!r}") from None
    return text


def neuron_options(pairs: Sequence[str]) -> dict[str, object]:
    """``--neuron KEY=VALUE`` flags -> ``SpikeNeuron`` settings, checked by building one."""
    import difflib
    import inspect

    from .neurons import SpikeNeuron

    params = inspect.signature(SpikeNeuron.__init__).parameters
    defaults = {n: p.default for n, p in params.items()
                if p.kind is inspect.Parameter.KEYWORD_ONLY and n != "level"}
    options: dict[str, object] = {}
    for text in pairs:
        key, value = _split_pair(text, "--neuron", "theta=0.5")
        if key not in defaults:
            close = difflib.get_close_matches(key, defaults, n=2)
            hint = f" (did you mean {' or '.join(close)}?)" if close else ""
            raise ValueError(
                f"--neuron: unknown setting {key!r}{hint}; settings: {', '.join(defaults)}"
            )
        if key in options:
            raise ValueError(f"--neuron {key} is given twice")
        options[key] = _neuron_value(key, value, defaults[key])
    try:
        SpikeNeuron(1, **options)  # type: ignore[arg-type]
    except ValueError as err:
        raise ValueError(f"--neuron: {err}") from None
    return options


def _json_pairs(pairs: Sequence[str] | None, flag: str, example: str) -> dict[str, object]:
    """``FLAG KEY=VALUE`` flags -> ``{KEY: VALUE}``, VALUE as JSON when it parses, else the
    string; a repeated KEY is an error."""
    options: dict[str, object] = {}
    for text in pairs or ():
        key, value = _split_pair(text, flag, example)
        if key in options:
            raise ValueError(f"{flag} {key} is given twice")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def model_options(
    pairs: Sequence[str] | None, neuron: Sequence[str] | None
) -> dict[str, object] | None:
    """``--model-option KEY=VALUE`` (VALUE as JSON when it parses, else a string) and
    ``--neuron KEY=VALUE`` (under ``neuron``) -> ``TrainConfig.model_options``."""
    if not pairs and not neuron:
        return None
    options = _json_pairs(pairs, "--model-option", "widths=[16,32,32,64,64]")
    if neuron:
        if "neuron" in options:
            raise ValueError("set neuron options with --neuron KEY=VALUE, not --model-option")
        options["neuron"] = neuron_options(neuron)
    return options


def check_model_options(model: str, bits: str, options: dict | None) -> None:
    """Build ``model`` with ``options`` on the meta device (no memory, no data): an option the
    model does not take, or a bad value, is one clear error before any data is loaded."""
    if not options:
        return
    import inspect

    import torch

    from .models import create_model

    with torch.device("meta"):
        cls = type(create_model(model, bits=bits))
        params = inspect.signature(cls.__init__).parameters
        takes = [n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY
                 and n not in ("bits", "overrides", "num_classes", "in_channels")]
        unknown = sorted(set(options) - set(takes))
        if unknown:
            raise ValueError(
                f"--model-option: {model} does not take {unknown}; its options: "
                f"{', '.join(takes)}"
            )
        try:
            create_model(model, bits=bits, **options)
        except (TypeError, ValueError) as err:
            raise ValueError(f"--model-option/--neuron for {model}: {err}") from None


def overrides(pairs: Sequence[str] | None) -> dict[str, object] | None:
    """``--override PATTERN=BITS`` flags -> ``TrainConfig.overrides`` (an all-digit BITS is an
    int ``b_w``; anything else, e.g. ``8/8``, stays a string for the bit policy to read)."""
    if not pairs:
        return None
    found: dict[str, object] = {}
    for text in pairs:
        pattern, sep, value = text.partition("=")
        if not sep or not pattern:
            raise ValueError(
                f"--override must look like PATTERN=BITS (e.g. 'stem.*=8'); got {text!r}"
            )
        if pattern in found:
            raise ValueError(f"--override {pattern} is given twice")
        found[pattern] = int(value) if value.isdigit() else value
    return found


def data_options(pairs: Sequence[str] | None, download: bool | None) -> dict[str, object] | None:
    """``--data-option KEY=VALUE`` (VALUE as JSON when it parses, else a string) and
    ``--download`` -> ``TrainConfig.data_options``; the dataset checks the keys when it loads
    (before reading any file)."""
    if not pairs and not download:
        return None
    options = _json_pairs(pairs, "--data-option", "size=16")
    if download:
        if "download" in options:
            raise ValueError("give --download or --data-option download=..., not both")
        options["download"] = True
    return options


# -- the flags --------------------------------------------------------------------------------
def _help(f: Field, what: str | None = None) -> str:
    """``field.metadata["help"]`` (or ``what``) with the default, escaped for argparse."""
    text = f"{what or f.metadata['help']} (default: {default_text(f)})"
    return text.replace("%", "%%")


_METAVARS = {int: "N", float: "X", str: "TEXT"}


def _add_overrides(group: argparse._ArgumentGroup, f: Field) -> None:
    group.add_argument(
        "--override", action="append", metavar="PATTERN=BITS",
        help=_help(f, f"{f.metadata['help']}, e.g. 'stem.*=8' or 'head=8/8'; repeatable"),
    )  # fmt: skip


def _add_model_options(group: argparse._ArgumentGroup, f: Field) -> None:
    group.add_argument(
        "--neuron", action="append", metavar="KEY=VALUE",
        help=_help(f, "neuron setting for every neuron (model_options['neuron']), e.g. "
                   "'level_scale=data', 'learn_theta=true', 'theta=0.5', 'tau=2', "
                   "'reset=soft', 'surrogate=sigmoid:0.5'; repeatable"),
    )  # fmt: skip
    group.add_argument(
        "--model-option", action="append", metavar="KEY=VALUE",
        help=_help(f, "model constructor option (see qsnn.models.create_model); one "
                   "KEY=VALUE per flag, VALUE as JSON or a string, e.g. "
                   "'widths=[16,32,32,64,64]' or "
                   "'quant={\"learn_scale\": true}'; repeatable"),
    )  # fmt: skip


def _add_data_options(group: argparse._ArgumentGroup, f: Field) -> None:
    group.add_argument(
        "--data-option", action="append", metavar="KEY=VALUE",
        help=_help(f, f"{f.metadata['help']}; one KEY=VALUE per flag, VALUE as JSON or a "
                   "string, e.g. 'size=16' (digits upsampled to 16x16); repeatable"),
    )  # fmt: skip
    group.add_argument(
        "--download", action="store_true", default=None,
        help="fetch the dataset into --data-root when missing (data_options['download']; "
        "CIFAR-10/100 only; needs network) (default: false)",
    )  # fmt: skip


#: The mapping fields: how their flags are added, and how their values are read back.
_MAPPING_FLAGS: dict[str, tuple[Callable[[Any, Field], None], Callable[[Any], Any]]] = {
    "overrides": (_add_overrides, lambda a: overrides(a.override)),
    "model_options": (_add_model_options, lambda a: model_options(a.model_option, a.neuron)),
    "data_options": (_add_data_options, lambda a: data_options(a.data_option, a.download)),
}


def add_train_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per ``TrainConfig`` field (help and default from the field), and ``--config``.

    Every flag defaults to ``None`` (absent), so a config file, a resumed run's saved config
    or the field's default decides what a flag left out means.
    """
    group = parser.add_argument_group(
        "training options",
        "One per TrainConfig field. --config FILE sets any of them; flags given here win.",
    )
    group.add_argument(
        "--config", metavar="FILE",
        help="a JSON object of TrainConfig fields, e.g. {\"epochs\": 4, \"lr\": 0.002} (a run's "
        "config.json works; .yaml/.yml needs PyYAML); flags on the command line override its "
        "values, key by key inside overrides, data_options and model_options",
    )  # fmt: skip
    for f in fields(TrainConfig):
        if f.name in _MAPPING_FLAGS:
            _MAPPING_FLAGS[f.name][0](group, f)
            continue
        kind = field_type(f.name)
        flag = cli_flag(f.name)
        if kind is bool:
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction,
                               default=None, help=_help(f))  # fmt: skip
        elif kind in _METAVARS:
            group.add_argument(
                flag, dest=f.name, type=kind, default=None, choices=f.metadata["choices"],
                metavar=None if f.metadata["choices"] else f.metadata["metavar"] or _METAVARS[kind],
                help=_help(f),
            )  # fmt: skip
        else:  # a new kind of field: give it a flag before it can ship
            raise TypeError(f"no command-line flag for TrainConfig.{f.name} ({kind!r})")


def train_values(args: argparse.Namespace) -> dict[str, Any]:
    """The ``TrainConfig`` fields set by ``--config FILE`` and the flags (flags win; fields
    set by neither are absent)."""
    given: dict[str, Any] = {}
    for f in fields(TrainConfig):
        read = _MAPPING_FLAGS.get(f.name)
        value = read[1](args) if read else getattr(args, f.name, None)
        if value is not None:
            given[f.name] = value
    config = getattr(args, "config", None)
    return _merge(read_config_file(config), given) if config else given


def _merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """``top`` over ``base``; mappings (and ``model_options["neuron"]``) merge key by key."""
    merged = dict(base)
    for key, value in top.items():
        old = merged.get(key)
        if isinstance(old, Mapping) and isinstance(value, Mapping):
            value = _merge(old, value) if key in ("model_options", "neuron") else {**old, **value}
        merged[key] = value
    return merged


def read_config_file(path: str) -> dict[str, Any]:
    """``--config FILE``: a JSON (or, with PyYAML, YAML) object of ``TrainConfig`` fields."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise ValueError(f"--config {path}: cannot read it: {reason}") from None
    if file.suffix.lower() in (".yaml", ".yml"):
        values = _read_yaml(text, path)
    else:
        try:
            values = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
        except ValueError as err:
            raise ValueError(f"--config {path} is not valid JSON: {err}") from None
    if not isinstance(values, dict):
        kind = type(values).__name__
        raise ValueError(f"--config {path} must hold an object of TrainConfig fields; got {kind}")
    known = [f.name for f in fields(TrainConfig)]
    for key in values:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=2)
            hint = f" (did you mean {' or '.join(close)}?)" if close else ""
            raise ValueError(
                f"--config {path}: unknown field {key!r}{hint}; fields: {', '.join(known)}"
            )
    try:  # the file alone must be a valid config: its errors name it
        TrainConfig(**values)
    except ValueError as err:
        raise ValueError(f"--config {path}: {err}") from None
    return values


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"key {key!r} is given twice")
        out[key] = value
    return out


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not a JSON value")


def _read_yaml(text: str, path: str) -> Any:
    try:
        import yaml  # type: ignore[import-untyped]
    except ImportError:
        raise ValueError(
            f"--config {path}: reading YAML needs PyYAML (pip install pyyaml); or write the "
            "config as JSON"
        ) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(f"--config {path} is not valid YAML: {first}") from None
