"""Training: ``fit(model, data, config)``, ``train(config, out_dir)``, runs on disk.

A run directory holds ``config.json`` (written first), ``checkpoint.pt`` (the latest state,
for ``--resume``), ``best.pt`` (the weights of the best validation epoch), ``metrics.jsonl``
(one line per epoch) and ``result.json`` (accuracies, timings, the final profile). Both
checkpoints hold the model's construction arguments (``model_args``), so ``load_run`` rebuilds
the model without the dataset, and the run's settings (``config``), so a resume that
contradicts them is refused even without ``config.json``. A checkpoint is written only when
every tensor in it is finite. While ``fit`` writes a run directory it holds its lock
(``.lock``; a second writer is refused) and SIGTERM stops it as Ctrl-C does (an exact-resume
checkpoint, then :class:`TrainingInterrupted`). ``fit`` and ``train`` leave the process's
settings (threads, deterministic mode, RNG states, signal handlers) as they found them.

Modules: ``engine`` (``fit``, ``train``, ``build_model``, ``load_data``), ``environment``,
``state`` (:class:`RunState`), ``optim``, ``loop``, ``evaluation``, ``run``, ``results``,
``checkpoint``, ``config``, ``precise_bn``.

The package is callable: ``qsnn.train(config, out_dir)`` is ``qsnn.train.train(config,
out_dir)`` (the package and its main function share the name, as a user expects both).
"""

import sys
import types

from .checkpoint import CheckpointError, NonFiniteStateError, load_checkpoint, save_checkpoint
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
from .run import load_run, read_config
from .state import RunState

__all__ = [
    "CheckpointError",
    "NonFiniteLossError",
    "NonFiniteStateError",
    "RunState",
    "TrainConfig",
    "TrainingInterrupted",
    "build_model",
    "evaluate",
    "fit",
    "load_checkpoint",
    "load_data",
    "load_run",
    "read_config",
    "save_checkpoint",
    "train",
]


class _CallablePackage(types.ModuleType):
    """``qsnn.train`` the package, callable as ``train``."""

    def __call__(self, *args, **kwargs):
        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
