"""The training loop: ``fit(model, data, config)`` and ``train(config, out_dir)``.

``fit`` reads top to bottom: set up (device, precision, threads, DDP) -> optimizer and
schedule -> resume -> epochs (train, validate, test, checkpoint, log) -> final profile ->
``result.json``. Its parts live in modules named after them:

- :mod:`.environment`: device, precision, DDP ranks, and ``process_settings()``, which puts
  back every process-wide setting ``fit`` changes (threads, deterministic mode, CUDA device,
  RNG states) when it returns or raises;
- :mod:`.state`: :class:`RunState`, the typed position and measurements of a run;
- :mod:`.optim`: AdamW groups, warm-up + cosine schedule, loss scaler, Mixup/CutMix;
- :mod:`.loop`: one epoch of steps (Ctrl-C held to a step's end, mid-epoch resume) and the
  precise batch-norm statistics;
- :mod:`.evaluation`: accuracy and loss on a split;
- :mod:`.run`: the run directory (checkpoints with the model's construction arguments,
  metrics) and ``load_run``;
- :mod:`.results`: the epoch log line and ``result.json``.

- Speed: bf16 autocast and channels-last on CPUs that support them, AMP on CUDA, data in
  memory as uint8 tensors, batches assembled and augmented by tensor ops (no per-sample Python).
- Robustness: an atomic checkpoint after every epoch (and on Ctrl-C or SIGTERM, mid-epoch);
  ``resume`` continues exactly (model, optimizer, schedule, scaler, RNG states, position in the
  epoch), and only with the settings the checkpoint was trained with; a non-finite loss, or a
  non-finite tensor in what would be saved, stops the run and keeps the last good checkpoint;
  the run directory is locked while ``fit`` writes it (a second writer is refused), and the
  temporary files of a killed write are removed when it is opened.
- Selection: the best epoch is chosen on the validation split held out from the training set,
  never on the test set; test accuracy is reported at that epoch and at the last one.
- Scale-out: under ``torchrun`` the model is wrapped in DistributedDataParallel (gloo on CPU,
  nccl on CUDA), every rank trains on its shard, metrics are summed over ranks, and only rank 0
  writes files.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn

from ..allocation import Bits
from ..data import DataSplits, TensorData, load_splits
from ..io import lock_directory, remove_stale_temp_files, write_json_atomic
from .checkpoint import NonFiniteStateError, load_checkpoint, restore_rng
from .config import TrainConfig, resume_conflicts
from .environment import TrainEnv, auto_precision, cpu_bf16, process_settings, setup_env
from .evaluation import channels_last, evaluate
from .loop import (
    NonFiniteLossError,
    TrainingInterrupted,
    precise_bn,
    terminate_as_interrupt,
    train_epoch,
)
from .optim import Optim, param_groups
from .results import epoch_line, finish
from .run import (
    BEST,
    CHECKPOINT,
    CONFIG,
    append_metrics,
    non_finite_tensor,
    rewrite_metrics,
    save_best,
    save_state,
)
from .state import RunState

__all__ = [
    "BEST",
    "CHECKPOINT",
    "NonFiniteLossError",
    "NonFiniteStateError",
    "RunState",
    "TrainingInterrupted",
    "auto_precision",
    "build_model",
    "evaluate",
    "fit",
    "load_data",
    "model_args",
    "train",
]

log = logging.getLogger(__name__)

# Names this module had before it was split, used by benchmarks and tests.
_Env = TrainEnv
_cpu_bf16 = cpu_bf16
_channels_last = channels_last
_param_groups = param_groups


# -- model and data ----------------------------------------------------------------------------
def model_args(config: TrainConfig, train_data: TensorData) -> dict[str, Any]:
    """The keyword arguments of :func:`qsnn.models.create_model` for ``config``'s model sized
    for ``train_data`` (classes, channels, size); checkpoints store them (``load_run``)."""
    shape = train_data.sample_shape
    return {
        "name": config.model,
        "bits": config.bits,
        "overrides": config.overrides,
        "num_classes": train_data.num_classes,
        "in_channels": shape[0],
        "img_size": tuple(shape[-2:]),
        **(config.model_options or {}),
        # Explicit, so a checkpoint rebuilds the same neurons whatever the defaults later are.
        "neuron": config.neuron_options(),
    }


def build_model(config: TrainConfig, train_data: TensorData) -> nn.Module:
    """The registered model for ``config`` sized for ``train_data`` (classes, channels, size)."""
    from ..models import create_model

    return create_model(**model_args(config, train_data))


def load_data(config: TrainConfig) -> DataSplits:
    """Train/val/test splits for ``config`` (event frames at the allocation's ``T``)."""
    from ..data import dataset_spec

    spec = dataset_spec(config.dataset)
    steps = config.time_steps_data or config.allocation.t if spec.kind == "events" else None
    train = load_splits(
        config.dataset, config.data_root, time_steps=steps, **(config.data_options or {})
    )
    val_size = config.val_size
    if val_size is None:
        val_size = (
            5000
            if config.dataset.startswith("cifar") and len(train.train) > 20000
            else (len(train.train) // 10)
        )
    if val_size:
        from ..data import split_holdout

        rest, val = split_holdout(train.train, val_size, config.seed)
        return DataSplits(rest, val, train.test)
    return train


# -- the loop ----------------------------------------------------------------------------------
def fit(
    model: nn.Module,
    data: DataSplits,
    config: TrainConfig,
    *,
    out_dir: str | os.PathLike | None = None,
    resume: bool = False,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train ``model`` on ``data.train``; choose the best epoch on ``data.val`` (if any).

    Writes into ``out_dir`` (when given, rank 0 only): ``config.json`` first, then
    ``checkpoint.pt`` and ``best.pt`` after every epoch, ``metrics.jsonl`` (one line per
    epoch) and finally ``result.json`` with the final profile. Returns the result dict.

    - ``out_dir`` is locked while ``fit`` runs (:func:`qsnn.io.lock_directory`): a second
      process training into it gets a ``ValueError`` at once; the temporary files a killed
      write left there are removed.
    - ``resume=True`` continues the checkpoint in ``out_dir`` exactly; a ``config`` that
      contradicts the settings the checkpoint was trained with (any field but those in
      :data:`~qsnn.train.config.RESUMABLE_FIELDS`) is a ``ValueError`` naming each one.
    - A non-finite loss, or a NaN/inf tensor in the model or optimizer state at a save point,
      stops the run (:class:`NonFiniteLossError`) before anything of it is written.
    - Ctrl-C or SIGTERM stops at the end of the step in progress, saves an exact-resume
      checkpoint and raises :class:`TrainingInterrupted` (the SIGTERM handler is installed for
      the duration of ``fit``, in the main thread, and the previous one put back).
    - A relative ``config.data_root`` is saved as an absolute path (the run evaluates from
      any directory).
    - ``on_epoch(row)`` is called on rank 0 after every epoch is saved, with its
      ``metrics.jsonl`` row (``val_acc``, ``test_acc``, ...); an exception it raises stops
      the run there, its checkpoint kept (how a search prunes a trial).

    Threads, deterministic mode, the CUDA device and the RNG states are set for the run and
    put back as they were when ``fit`` returns or raises (:func:`process_settings`).
    """
    config = absolute_data_root(config)
    with process_settings(), terminate_as_interrupt():
        out = Path(out_dir) if out_dir is not None else None
        return _fit(model, data, config, out, resume, on_epoch)


def _check_memory(model: nn.Module, train_data: Any, config: TrainConfig, env: TrainEnv) -> None:
    """Refuse, before the first step, a ``T`` and batch whose activations cannot fit: one
    sample run at ``T = 1`` and ``2`` (``qsnn._memory``), scaled to ``T`` and the batch. A
    training step at ``T = 100000`` would otherwise allocate until the machine gives out."""
    from .._memory import ModelMemoryCheck

    example, _ = next(iter(train_data.batches(1, device=env.device)))
    check = ModelMemoryCheck(model, example, autograd=True, check_above=0)
    check("training", Bits.parse(config.bits).t, config.batch_size)


def absolute_data_root(config: TrainConfig) -> TrainConfig:
    """``config`` with a relative ``data_root`` made absolute (from the current directory, after
    ``~`` expansion), as the data layer reads it; the same ``config`` when there is nothing to
    resolve."""
    if config.data_root is None:
        return config
    resolved = os.path.abspath(os.path.expanduser(config.data_root))
    return config if resolved == config.data_root else replace(config, data_root=resolved)


def _fit(
    model: nn.Module,
    data: DataSplits,
    config: TrainConfig,
    out: Path | None,
    resume: bool,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    env = setup_env(config)
    steps_per_epoch = len(
        data.train.batches(config.batch_size, drop_last=True, rank=env.rank, world_size=env.world)
    )
    if steps_per_epoch == 0:
        raise ValueError(
            f"--batch-size {config.batch_size} is larger than the training split "
            f"({len(data.train)} samples per process)"
        )
    with contextlib.ExitStack() as stack:
        if out is not None and env.main:  # one writer: the lock, then clean up killed writes
            stack.enter_context(lock_directory(out, "run directory"))
            remove_stale_temp_files(out)
        return _fit_locked(model, data, config, out, resume, env, steps_per_epoch, on_epoch)


def _fit_locked(
    model: nn.Module,
    data: DataSplits,
    config: TrainConfig,
    out: Path | None,
    resume: bool,
    env: TrainEnv,
    steps_per_epoch: int,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    if config.precision == "auto":
        env.amp_dtype = auto_precision(model, env.amp_dtype)
    torch.manual_seed(config.seed)

    model = model.to(env.device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    train_data = data.train.to(env.device) if env.device.type == "cuda" else data.train
    _check_memory(model, train_data, config, env)
    args = model_args(config, train_data)
    total_steps = steps_per_epoch * config.epochs
    warmup = min(int(config.warmup_epochs * steps_per_epoch), total_steps // 2)
    optim = Optim.create(model, config, env, total_steps, warmup)
    facts = {
        "train_samples": len(train_data),
        "val_samples": len(data.val) if data.val is not None else 0,
        "steps_per_epoch": steps_per_epoch,
        "world_size": env.world,
        "precision": str(env.amp_dtype or "fp32").removeprefix("torch."),
    }

    state = RunState()
    if resume and out is not None and (out / CHECKPOINT).exists():
        ckpt = load_checkpoint(out / CHECKPOINT, map_location=env.device)
        _check_resume_settings(ckpt, config, out / CHECKPOINT)
        _check_resume_facts(ckpt, facts, out / CHECKPOINT)
        model.load_state_dict(ckpt["model"])
        optim.load_state_dict(ckpt)
        restore_rng(ckpt["rng"])
        state = RunState.from_checkpoint(ckpt)
        log.info("resumed %s at epoch %d step %d", out, state.epoch, state.step)
    elif out is not None and env.main and (out / CHECKPOINT).exists():
        raise ValueError(
            f"{out} already holds a run; pass --resume to continue it or choose another --out"
        )
    if out is not None and env.main:
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / CONFIG, config.to_dict())
        rewrite_metrics(out, state.history)

    net: nn.Module = model
    if env.world > 1:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[env.device.index] if env.device.type == "cuda" else None
        )
    if config.compile:
        net = torch.compile(net)

    start_wall = time.perf_counter()
    try:
        for epoch in range(state.epoch, config.epochs):
            stats = train_epoch(
                net, model, train_data, config, env, optim, epoch, state, out, args, facts
            )
            row = {"epoch": epoch + 1, **stats}
            precise_bn(model, train_data, config, env, epoch)
            row.update(_evaluate_epoch(model, data, config, env))
            is_best = state.finish_epoch(row)
            if out is not None:
                _check_finite(model, optim, env, epoch, out)
            if out is not None and env.main:
                if is_best:
                    save_best(out, model, epoch + 1, config, args)
                save_state(out, model, optim.state_dict(), state, config, args, facts)
                append_metrics(out, row)
            if env.main:
                log.info(epoch_line(row, config.epochs))
                if on_epoch is not None:
                    on_epoch(row)
    except KeyboardInterrupt:
        # Ctrl-C outside a training step (evaluation, checkpointing): the last checkpoint holds.
        raise TrainingInterrupted(
            f"interrupted after epoch {state.epoch}; "
            + (f"{out / CHECKPOINT} holds it; continue with --resume" if out else "no --out")
        ) from None
    finally:
        if env.world > 1 and dist.is_initialized():
            dist.barrier()
    wall = time.perf_counter() - start_wall
    return finish(model, data, config, env, state, out, wall)


def _check_resume_settings(ckpt: dict[str, Any], config: TrainConfig, path: Path) -> None:
    """Refuse to resume the checkpoint ``ckpt`` (read from ``path``) with a ``config`` that
    contradicts the settings it was trained with; a checkpoint without them (written by an
    older qsnn) resumes as before."""
    saved = ckpt.get("config")
    if not isinstance(saved, dict):
        return
    try:
        trained = TrainConfig.from_dict(saved)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{path} holds settings that are not valid: {err}") from None
    conflicts = resume_conflicts(trained, config)
    if conflicts:
        raise ValueError(
            f"--resume continues {path.parent} with the settings it was trained with; these "
            f"differ from its {path.name}: {', '.join(conflicts)}"
        )


#: What the ``run_facts`` of a checkpoint are called in a message.
_FACTS = {
    "train_samples": "training samples",
    "val_samples": "validation samples",
    "steps_per_epoch": "steps per epoch",
    "world_size": "processes (world size)",
}


def _check_resume_facts(ckpt: dict[str, Any], facts: dict[str, Any], path: Path) -> None:
    """Refuse to resume when what the settings resolve to now differs from what they resolved
    to when the checkpoint was written: other data (another copy at ``--data-root``), another
    number of processes; either would continue another run than the one saved. Another
    precision (``auto`` on other hardware) is allowed, with a warning."""
    saved = ckpt.get("run_facts")
    if not isinstance(saved, dict):  # written before run_facts existed
        return
    differ = [
        f"{label} {facts[key]} (run: {saved[key]})"
        for key, label in _FACTS.items()
        if key in saved and saved[key] != facts[key]
    ]
    if differ:
        raise ValueError(
            f"--resume continues {path.parent} as it was trained; it differs from its "
            f"{path.name} in: {', '.join(differ)} (the data, or the number of processes)"
        )
    if saved.get("precision", facts["precision"]) != facts["precision"]:
        log.warning(
            "%s was trained in %s; it continues in %s", path, saved["precision"], facts["precision"]
        )


def _check_finite(model: nn.Module, optim: Optim, env: TrainEnv, epoch: int, out: Path) -> None:
    """Stop before saving a state that holds NaN or infinity (a batch-norm variance can
    overflow while the loss is still finite): :class:`NonFiniteStateError`, the last good
    checkpoint kept. Every rank checks and they agree (one rank's buffers may differ)."""
    bad = non_finite_tensor(model, optim.optimizer)
    if env.world > 1:
        flag = torch.tensor([float(bad is not None)], device=env.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if bad is None and flag.item():
            bad = "a tensor of another rank's state is not finite"
    if bad is None:
        return
    kept = (
        f"the last good checkpoint {out / CHECKPOINT} is kept"
        if (out / CHECKPOINT).exists()
        else "no checkpoint was written"
    )
    raise NonFiniteStateError(
        f"{bad} after epoch {epoch + 1}; nothing of it is saved, {kept} (try a lower --lr or "
        "--precision fp32)"
    )


def _evaluate_epoch(
    model: nn.Module, data: DataSplits, config: TrainConfig, env: TrainEnv
) -> dict[str, float]:
    """Validation (when held out) and test accuracy and loss after an epoch."""
    eval_kw: dict[str, Any] = {
        "device": env.device,
        "amp_dtype": env.amp_dtype,
        "channels_last": config.channels_last,
        "batch_size": 512,
    }
    row: dict[str, float] = {}
    if data.val is not None:
        val = evaluate(model, data.val, **eval_kw)
        row.update(val_acc=val["acc"], val_loss=val["loss"])
    test = evaluate(model, data.test, **eval_kw)
    row.update(test_acc=test["acc"], test_loss=test["loss"])
    return row


def train(
    config: TrainConfig,
    out_dir: str | os.PathLike | None = None,
    resume: bool = False,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Load the data, build the model and ``fit`` it (what ``qsnn train`` runs); like ``fit``,
    leaves the process's settings and RNG states as it found them."""
    with process_settings():
        torch.manual_seed(config.seed)
        data = load_data(config)
        model = build_model(config, data.train)
        return fit(model, data, config, out_dir=out_dir, resume=resume, on_epoch=on_epoch)
