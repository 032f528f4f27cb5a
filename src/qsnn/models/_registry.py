"""The model registry: a decorator and a dict keyed by entry-point name (timm style).

``@register_model`` records a function ``fn(*, bits, **kwargs) -> nn.Module`` under its own name,
together with the model's metadata (:class:`ModelInfo`: native input size, classes, dataset kind
and raw input bits), readable without building the model through :func:`model_info`.
``list_models`` lists names (optionally filtered by ``fnmatch`` patterns); ``model_entrypoint``
looks one up and, for an unknown name, raises ``ValueError`` naming the close matches.

Metadata is given to the decorator (``@register_model(input_size=(3, 32, 32), num_classes=10,
kind="static")``) or, for the built-in zoo registered with a bare ``@register_model``, read from
:data:`_ZOO`, the one table of the zoo's native shapes.
"""

from __future__ import annotations

import difflib
import fnmatch
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeVar, overload

import torch.nn as nn

from ..data.base import raw_input_bits

__all__ = [
    "ModelInfo",
    "is_model",
    "list_models",
    "model_entrypoint",
    "model_info",
    "register_model",
]

ModelFn = TypeVar("ModelFn", bound=Callable[..., nn.Module])
DataKind = Literal["static", "events"]


@dataclass(frozen=True)
class ModelInfo:
    """What a registered model takes and gives at its native size, known without building it."""

    name: str
    """Entry-point name, e.g. ``"sew_resnet18_cifar"``."""
    module: str
    """Model file that defines it (``"sew_resnet"``, ``"spikformer"``, ...)."""
    input_size: tuple[int, int, int]
    """Native ``(C, H, W)`` of one input (one frame for event models)."""
    num_classes: int
    """Native number of logits."""
    kind: DataKind
    """Data kind the model is made for: ``"static"`` images or ``"events"`` frames."""
    input_bits: int | None = field(init=False)
    """Raw input bits of that kind (:func:`qsnn.data.raw_input_bits`): 8 for static images,
    ``None`` for event counts (inferred from the values). Derived from ``kind``."""

    def __post_init__(self) -> None:
        """Check the shape, the class count and the kind (a bad registration fails at import);
        derive ``input_bits`` from the kind."""
        size = tuple(self.input_size)
        if len(size) != 3 or not all(isinstance(v, int) and v > 0 for v in size):
            raise ValueError(f"{self.name}: input_size must be (C, H, W) positive ints; "
                             f"got {self.input_size!r}")
        if not isinstance(self.num_classes, int) or self.num_classes < 1:
            raise ValueError(f"{self.name}: num_classes must be a positive int; "
                             f"got {self.num_classes!r}")
        if self.kind not in ("static", "events"):
            raise ValueError(f"{self.name}: kind must be 'static' or 'events'; got {self.kind!r}")
        object.__setattr__(self, "input_size", size)
        object.__setattr__(self, "input_bits", raw_input_bits(self.kind))


_IMAGENET = ((3, 224, 224), 1000, "static")
_CIFAR = ((3, 32, 32), 10, "static")
_ZOO: dict[str, tuple[tuple[int, int, int], int, DataKind]] = {
    "resnet19": _CIFAR,
    "small_convnet": _CIFAR,
    "sew_resnet18": _IMAGENET,
    "sew_resnet34": _IMAGENET,
    "sew_resnet50": _IMAGENET,
    "sew_resnet18_cifar": _CIFAR,
    "sew_resnet34_cifar": _CIFAR,
    "sew_resnet50_cifar": _CIFAR,
    "spikformer_2_384_cifar": _CIFAR,
    "spikformer_4_256_cifar": _CIFAR,
    "spikformer_4_384_cifar": _CIFAR,
    "spikformer_6_512": _IMAGENET,
    "spikformer_8_384": _IMAGENET,
    "spikformer_8_512": _IMAGENET,
    "spikformer_8_768": _IMAGENET,
    "spikformer_10_512": _IMAGENET,
    "spikformer_2_256_dvs": ((2, 128, 128), 10, "events"),
}
"""Native ``(input_size, num_classes, kind)`` of the built-in zoo's bare ``@register_model``
entries (what their constructors build with no size arguments)."""

_model_entrypoints: dict[str, Callable[..., nn.Module]] = {}
_model_to_module: dict[str, str] = {}
_model_info: dict[str, ModelInfo] = {}


@overload
def register_model(fn: ModelFn) -> ModelFn: ...


@overload
def register_model(
    fn: None = None,
    *,
    input_size: tuple[int, int, int] | None = None,
    num_classes: int | None = None,
    kind: DataKind | None = None,
) -> Callable[[ModelFn], ModelFn]: ...


def register_model(
    fn: ModelFn | None = None,
    *,
    input_size: tuple[int, int, int] | None = None,
    num_classes: int | None = None,
    kind: DataKind | None = None,
) -> ModelFn | Callable[[ModelFn], ModelFn]:
    """Register ``fn`` as a model entry point under ``fn.__name__`` (returns ``fn`` unchanged).

    Used bare (``@register_model``) or with the model's metadata
    (``@register_model(input_size=(C, H, W), num_classes=K, kind="static")``; ``kind``
    defaults to ``"static"``). A bare entry takes its metadata from the zoo table :data:`_ZOO`;
    one with none there (a user's model registered bare) is still buildable, and
    :func:`model_info` says its metadata is missing.
    """
    if fn is None:
        return lambda f: _register(f, input_size, num_classes, kind)
    return _register(fn, input_size, num_classes, kind)


def _register(
    fn: ModelFn,
    input_size: tuple[int, int, int] | None,
    num_classes: int | None,
    kind: DataKind | None,
) -> ModelFn:
    name = fn.__name__
    module = sys.modules[fn.__module__].__name__.rsplit(".", 1)[-1]
    if input_size is None and num_classes is None and kind is None:
        native = _ZOO.get(name)
    elif input_size is None or num_classes is None:
        raise ValueError(f"register_model({name}): give both input_size and num_classes "
                         "(kind defaults to 'static')")
    else:
        native = (input_size, num_classes, kind or "static")
    # metadata is checked before anything is recorded: a bad registration records nothing
    info = ModelInfo(name, module, *native) if native is not None else None
    if name in _model_entrypoints and _model_entrypoints[name] is not fn:
        warnings.warn(f"model {name!r} registered twice; the later definition wins", stacklevel=3)
    _model_entrypoints[name] = fn
    _model_to_module[name] = module
    _model_info.pop(name, None)
    if info is not None:
        _model_info[name] = info
    return fn


def model_info(name: str) -> ModelInfo:
    """Metadata of the registered model ``name`` (native input size, classes, data kind and
    input bits), without building it; ``ValueError`` for an unknown name or a model registered
    without metadata."""
    model_entrypoint(name)  # unknown name: the error with close matches
    if name not in _model_info:
        raise ValueError(
            f"model {name!r} was registered without metadata; register it with "
            "@register_model(input_size=(C, H, W), num_classes=K, kind='static' or 'events')"
        )
    return _model_info[name]


def list_models(filter: str | Sequence[str] = "", module: str | None = None) -> list[str]:
    """Sorted names of registered models.

    Args:
        filter: an ``fnmatch`` pattern (``"sew_*"``) or a list of them; empty lists every model.
        module: only models defined in this model file (``"spikformer"``, ``"sew_resnet"``, ...).
    """
    names = sorted(_model_entrypoints)
    if module is not None:
        names = [n for n in names if _model_to_module[n] == module]
    patterns = [filter] if isinstance(filter, str) else list(filter)
    patterns = [p for p in patterns if p]
    if patterns:
        names = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    return names


def is_model(name: str) -> bool:
    """True when ``name`` is a registered model."""
    return name in _model_entrypoints


def model_entrypoint(name: str) -> Callable[..., nn.Module]:
    """The entry point registered as ``name``; ``ValueError`` with close matches otherwise."""
    if name in _model_entrypoints:
        return _model_entrypoints[name]
    names = sorted(_model_entrypoints)
    close = difflib.get_close_matches(str(name), names, n=4, cutoff=0.5)
    hint = f"did you mean {', '.join(map(repr, close))}? " if close else ""
    raise ValueError(f"unknown model {name!r}; {hint}known models: {', '.join(names)}")
