"""Training: ``fit(model, data, config)``, ``train(config, out_dir)``, runs on disk.

A run directory holds ``config.json`` (written first), ``checkpoint.pt`` (the latest state,
for ``--resume``), ``best.pt`` (the weights of the best validation epoch), ``metrics.jsonl``
(one line per epoch) and ``result.json`` (accuracies, timings, the final profile). Both
checkpoints hold the model's construction arguments (``model_args``), so ``load_run`` rebuilds
the model without the dataset. ``fit`` and ``train`` leave the process's settings (threads,
deterministic mode, RNG states) as they found them.

Modules: ``engine`` (``fit``, ``train``, ``build_model``, ``load_data``), ``environment``,
``state`` (:class:`RunState`), ``optim``, ``loop``, ``evaluation``, ``run``, ``results``,
``checkpoint``, ``config``, ``precise_bn``.

The package is callable: ``qsnn.train(config, out_dir)`` is ``qsnn.train.train(config,
out_dir)`` (the package and its main function share the name, as a user expects both).
"""

import sys
import types

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .engine import (
    NonFiniteLossError,
    TrainingInterrupted,
    build_model,
    evaluate,
    fit,
    load_data,
    train,
)
from .run import load_run
from .state import RunState

__all__ = [
    "CheckpointError",
    "NonFiniteLossError",
    "RunState",
    "TrainConfig",
    "TrainingInterrupted",
    "build_model",
    "evaluate",
    "fit",
    "load_checkpoint",
    "load_data",
    "load_run",
    "save_checkpoint",
    "train",
]


class _CallablePackage(types.ModuleType):
    """``qsnn.train`` the package, callable as ``train``."""

    def __call__(self, *args, **kwargs):
        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
