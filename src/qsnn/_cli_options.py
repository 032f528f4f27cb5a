"""Parsing of ``--neuron KEY=VALUE`` and ``--model-option KEY=VALUE`` (``qsnn train``/``sweep``).

Both end in ``TrainConfig.model_options``; every bad key or value is one ``ValueError`` that
names the flag, checked before any data is loaded.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

__all__ = ["check_model_options", "model_options", "neuron_options"]


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


def model_options(
    pairs: Sequence[str] | None, neuron: Sequence[str] | None
) -> dict[str, object] | None:
    """``--model-option KEY=VALUE`` (VALUE as JSON when it parses, else a string) and
    ``--neuron KEY=VALUE`` (under ``neuron``) -> ``TrainConfig.model_options``."""
    if not pairs and not neuron:
        return None
    options: dict[str, object] = {}
    for text in pairs or ():
        key, value = _split_pair(text, "--model-option", "widths=[16,32,32,64,64]")
        if key in options:
            raise ValueError(f"--model-option {key} is given twice")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
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
