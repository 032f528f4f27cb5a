"""The model registry: a decorator and a dict keyed by entry-point name (timm style).

``@register_model`` records a function ``fn(*, bits, **kwargs) -> nn.Module`` under its own name.
``list_models`` lists names (optionally filtered by ``fnmatch`` patterns); ``model_entrypoint``
looks one up and, for an unknown name, raises ``ValueError`` naming the close matches.
"""

from __future__ import annotations

import difflib
import fnmatch
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch.nn as nn

__all__ = ["is_model", "list_models", "model_entrypoint", "register_model"]

ModelFn = TypeVar("ModelFn", bound=Callable[..., nn.Module])

_model_entrypoints: dict[str, Callable[..., nn.Module]] = {}
_model_to_module: dict[str, str] = {}


def register_model(fn: ModelFn) -> ModelFn:
    """Register ``fn`` as a model entry point under ``fn.__name__`` (returns ``fn`` unchanged)."""
    name = fn.__name__
    if name in _model_entrypoints and _model_entrypoints[name] is not fn:
        warnings.warn(f"model {name!r} registered twice; the later definition wins", stacklevel=2)
    _model_entrypoints[name] = fn
    module = sys.modules[fn.__module__].__name__.rsplit(".", 1)[-1]
    _model_to_module[name] = module
    return fn


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
