"""The training loop: ``fit(model, data, config)`` and ``train(config, out_dir)``.

Reads top to bottom: set up (device, precision, threads, DDP) -> optimizer and schedule ->
resume -> epochs (train, validate, test, checkpoint, log) -> final profile -> ``result.json``.

- Speed: bf16 autocast and channels-last on CPUs that support them, AMP on CUDA, data in
  memory as uint8 tensors, batches assembled and augmented by tensor ops (no per-sample Python).
- Robustness: an atomic checkpoint after every epoch (and on Ctrl-C, mid-epoch); ``resume``
  continues exactly (model, optimizer, schedule, scaler, RNG states, position in the epoch); a
  non-finite loss stops the run and keeps the last good checkpoint.
- Selection: the best epoch is chosen on the validation split held out from the training set,
  never on the test set; test accuracy is reported at that epoch and at the last one.
- Scale-out: under ``torchrun`` the model is wrapped in DistributedDataParallel (gloo on CPU,
  nccl on CUDA), every rank trains on its shard, metrics are summed over ranks, and only rank 0
  writes files.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..data import DataSplits, TensorData, load_splits, raw_input_bits
from ..data.base import derive_seed
from ..io import write_json_atomic, write_text_atomic
from .checkpoint import capture_rng, load_checkpoint, restore_rng, save_checkpoint
from .config import TrainConfig
from .precise_bn import recompute_bn_stats

__all__ = [
    "NonFiniteLossError",
    "TrainingInterrupted",
    "auto_precision",
    "build_model",
    "fit",
    "train",
]

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class TrainingInterrupted(RuntimeError):
    """Ctrl-C: the state was saved and the run can be resumed."""


# -- environment -------------------------------------------------------------------------------
@dataclass
class _Env:
    device: torch.device
    amp_dtype: torch.dtype | None
    rank: int
    world: int
    local_rank: int

    @property
    def main(self) -> bool:
        return self.rank == 0


def _cpu_bf16() -> bool:
    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool((probe and probe()) or (amx and amx()))


def _setup_env(config: TrainConfig) -> _Env:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    if config.device == "auto":
        device = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(config.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda was asked for but CUDA is not available")
        if device.type == "cuda" and world > 1:
            device = torch.device(f"cuda:{local_rank}")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    if device.type == "cpu":
        threads = config.threads or max(1, (os.cpu_count() or 1) // max(1, local_world))
        torch.set_num_threads(threads)
    precision = config.precision
    if precision == "auto":
        if device.type == "cuda":
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            precision = "bf16" if _cpu_bf16() else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("--precision fp16 needs CUDA; use bf16 or fp32 on CPU")
    amp = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    if config.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    return _Env(device, amp, rank, world, local_rank)


def auto_precision(model: nn.Module, amp_dtype: torch.dtype | None) -> torch.dtype | None:
    """The autocast dtype ``--precision auto`` trains ``model`` in: ``amp_dtype``, unless a
    neuron has ``b_s > 8``. Its input current (a conv + batch-norm output) would then be a bf16
    value of 8 significant bits, which cannot reach every one of its levels (at ``T = 1`` a
    16-bit neuron would see about 2,000 of its 65,536), so such a model trains in float32.
    At ``b_s <= 8`` a bf16 current reaches every level (its step is at most ``theta`` below
    ``256 * theta``)."""
    if amp_dtype not in (torch.bfloat16, torch.float16):
        return amp_dtype
    from ..neurons import SpikeLevels

    widest = max((m.bits_s for m in model.modules() if isinstance(m, SpikeLevels)), default=0)
    significand = 8 if amp_dtype == torch.bfloat16 else 11
    if widest > significand:
        log.info("b_s = %d: a %s input current cannot reach every spike level; training in "
                 "float32", widest, str(amp_dtype).removeprefix("torch."))
        return None
    return amp_dtype


# -- model and data ----------------------------------------------------------------------------
def build_model(config: TrainConfig, train_data: TensorData) -> nn.Module:
    """The registered model for ``config`` sized for ``train_data`` (classes, channels, size)."""
    from ..models import create_model

    shape = train_data.sample_shape
    return create_model(
        config.model,
        bits=config.bits,
        overrides=config.overrides,
        num_classes=train_data.num_classes,
        in_channels=shape[0],
        img_size=tuple(shape[-2:]),
        **(config.model_options or {}),
    )


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


def _channels_last(x: Tensor) -> Tensor:
    if x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    if x.dim() == 5:  # [T, B, C, H, W]: every step channels-last
        return x.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)
    return x


# -- optimisation ------------------------------------------------------------------------------
def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Decay conv/linear weights only: no decay on norms, biases, thresholds or scales."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.dim() > 1 and not name.endswith(".scale") else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def _lr_lambda(total: int, warmup: int, min_ratio: float):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _mix(
    x: Tensor, y: Tensor, num_classes: int, config: TrainConfig, seed: int
) -> tuple[Tensor, Tensor]:
    """Mixup or CutMix on a batch (drawn from ``seed`` alone); returns inputs, soft targets
    with ``config.label_smoothing``."""
    smoothing = config.label_smoothing
    target = F.one_hot(y, num_classes).float()
    target = target * (1 - smoothing) + smoothing / num_classes
    modes = [m for m, a in (("mixup", config.mixup), ("cutmix", config.cutmix)) if a > 0]
    if not modes:
        return x, target
    rng = np.random.default_rng(seed)
    mode = modes[int(rng.integers(len(modes)))]
    alpha = config.mixup if mode == "mixup" else config.cutmix
    lam = float(rng.beta(alpha, alpha))
    batch_dim = 1 if x.dim() == 5 else 0  # [T, B, ...] event frames or [B, ...]
    perm = torch.from_numpy(rng.permutation(x.shape[batch_dim])).to(x.device)
    if mode == "mixup":
        x = lam * x + (1 - lam) * x.index_select(batch_dim, perm)
    else:
        h, w = x.shape[-2:]
        cut_h, cut_w = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
        cy, cx = int(rng.integers(h)), int(rng.integers(w))
        y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, h)
        x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, w)
        x = x.clone()
        x[..., y0:y1, x0:x1] = x.index_select(batch_dim, perm)[..., y0:y1, x0:x1]
        lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)
    return x, lam * target + (1 - lam) * target[perm.to(target.device)]


# -- evaluation --------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: TensorData,
    *,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
) -> dict[str, float]:
    """Accuracy and mean cross-entropy of ``model`` on all of ``data``."""
    was = model.training
    model.eval()
    device = torch.device(device)
    loss_sum, correct, count = 0.0, 0, 0
    try:
        for x, y in data.batches(batch_size, device=device):
            if channels_last:
                x = _channels_last(x)
            with torch.autocast(
                device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None
            ):
                logits = model(x)
            loss_sum += float(F.cross_entropy(logits.float(), y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
            count += y.numel()
    finally:
        model.train(was)
    return {"acc": correct / max(1, count), "loss": loss_sum / max(1, count), "n": count}


# -- the loop ----------------------------------------------------------------------------------
class _DeferInterrupt:
    """Hold Ctrl-C until the training step in progress is complete (a step interrupted half
    way has updated batch-norm statistics, or some of the weights, but not the step count).
    A second Ctrl-C stops at once, without saving."""

    def __init__(self) -> None:
        self.requested = False
        self.forced = False
        self._previous = None

    def __enter__(self) -> _DeferInterrupt:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            self.forced = True
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _progress(iterable, total: int, enabled: bool, desc: str):
    if enabled:
        try:
            from tqdm.auto import tqdm

            return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True)
        except ImportError:
            pass
    return iterable


@dataclass
class _Optim:
    """AdamW + the warm-up/cosine schedule + the fp16 loss scaler, stepped and saved together."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler

    @classmethod
    def create(
        cls, model: nn.Module, config: TrainConfig, env: _Env, total_steps: int, warmup: int
    ) -> _Optim:
        optimizer = torch.optim.AdamW(_param_groups(model, config.weight_decay), lr=config.lr)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, _lr_lambda(total_steps, max(1, warmup), config.min_lr_ratio)
        )
        # A loss scaler only matters for fp16; it is a no-op (but still checkpointed) otherwise.
        scaler = torch.amp.GradScaler(env.device.type, enabled=env.amp_dtype == torch.float16)
        return cls(optimizer, scheduler, scaler)

    def step(self, loss: Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()

    def state_dict(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
        }

    def load_state_dict(self, ckpt: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])


def fit(
    model: nn.Module,
    data: DataSplits,
    config: TrainConfig,
    *,
    out_dir: str | os.PathLike | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Train ``model`` on ``data.train``; choose the best epoch on ``data.val`` (if any).

    Writes into ``out_dir`` (when given, rank 0 only): ``config.json`` first, then
    ``checkpoint.pt`` and ``best.pt`` after every epoch, ``metrics.jsonl`` (one line per
    epoch) and finally ``result.json`` with the final profile. Returns the result dict.
    """
    env = _setup_env(config)
    if config.precision == "auto":
        env.amp_dtype = auto_precision(model, env.amp_dtype)
    out = Path(out_dir) if out_dir is not None else None
    torch.manual_seed(config.seed)

    model = model.to(env.device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    train_data = data.train.to(env.device) if env.device.type == "cuda" else data.train
    steps_per_epoch = len(
        train_data.batches(config.batch_size, drop_last=True, rank=env.rank, world_size=env.world)
    )
    if steps_per_epoch == 0:
        raise ValueError(
            f"--batch-size {config.batch_size} is larger than the training split "
            f"({len(train_data)} samples per process)"
        )
    total_steps = steps_per_epoch * config.epochs
    warmup = min(int(config.warmup_epochs * steps_per_epoch), total_steps // 2)
    optim = _Optim.create(model, config, env, total_steps, warmup)

    state = {"epoch": 0, "step": 0, "history": [], "best": None, "partial": None, "train_time": 0.0}
    if resume and out is not None and (out / CHECKPOINT).exists():
        ckpt = load_checkpoint(out / CHECKPOINT, map_location=env.device)
        model.load_state_dict(ckpt["model"])
        optim.load_state_dict(ckpt)
        restore_rng(ckpt["rng"])
        state.update({k: ckpt[k] for k in state if k in ckpt})
        log.info("resumed %s at epoch %d step %d", out, state["epoch"], state["step"])
    elif out is not None and env.main and (out / CHECKPOINT).exists():
        raise ValueError(
            f"{out} already holds a run; pass --resume to continue it or choose another --out"
        )
    if out is not None and env.main:
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / "config.json", config.to_dict())
        _rewrite_metrics(out, state["history"])

    net: nn.Module = model
    if env.world > 1:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[env.device.index] if env.device.type == "cuda" else None
        )
    if config.compile:
        net = torch.compile(net)

    start_wall = time.perf_counter()
    try:
        for epoch in range(state["epoch"], config.epochs):
            stats = _train_epoch(net, model, train_data, config, env, optim, epoch, state, out)
            row = {"epoch": epoch + 1, **stats}
            _precise_bn(model, train_data, config, env, epoch)
            eval_kw = {
                "device": env.device,
                "amp_dtype": env.amp_dtype,
                "channels_last": config.channels_last,
                "batch_size": 512,
            }
            if data.val is not None:
                val = evaluate(model, data.val, **eval_kw)
                row.update(val_acc=val["acc"], val_loss=val["loss"])
            test = evaluate(model, data.test, **eval_kw)
            row.update(test_acc=test["acc"], test_loss=test["loss"])
            state["history"].append(row)
            state["epoch"], state["step"], state["partial"] = epoch + 1, 0, None
            score = row.get("val_acc")
            best = state["best"]
            if score is None or best is None or score > best["val_acc"]:
                state["best"] = {
                    "epoch": epoch + 1,
                    "val_acc": score if score is not None else -1.0,
                    "test_acc": row["test_acc"],
                }
                if out is not None and env.main:
                    save_checkpoint(
                        out / BEST,
                        {
                            "model": model.state_dict(),
                            "epoch": epoch + 1,
                            "config": config.to_dict(),
                        },
                    )
            if out is not None and env.main:
                _save(out, model, optim, state, config)
                with open(out / "metrics.jsonl", "a", encoding="utf-8") as handle:
                    handle.write(json.dumps(row) + "\n")
            if env.main:
                log.info(_epoch_line(row, config.epochs))
    except KeyboardInterrupt:
        # Ctrl-C outside a training step (evaluation, checkpointing): the last checkpoint holds.
        raise TrainingInterrupted(
            f"interrupted after epoch {state['epoch']}; "
            + (f"{out / CHECKPOINT} holds it; continue with --resume" if out else "no --out")
        ) from None
    finally:
        if env.world > 1 and dist.is_initialized():
            dist.barrier()
    wall = time.perf_counter() - start_wall
    return _finish(model, data, config, env, state, out, wall)


def _train_epoch(
    net: nn.Module,
    model: nn.Module,
    train_data: TensorData,
    config: TrainConfig,
    env: _Env,
    optim: _Optim,
    epoch: int,
    state: dict[str, Any],
    out: Path | None,
) -> dict[str, float]:
    """One epoch of training steps; ``state["step"]``/``state["partial"]`` make it resumable
    mid-epoch (``net`` is ``model`` wrapped by DDP/compile when asked)."""
    net.train()
    batches = train_data.batches(
        config.batch_size,
        shuffle=True,
        seed=config.seed,
        epoch=epoch,
        drop_last=True,
        augment=config.augment,
        device=env.device,
        rank=env.rank,
        world_size=env.world,
    )
    skip = state["step"]
    partial = state["partial"] or {"loss": 0.0, "correct": 0.0, "count": 0.0, "time": 0.0}
    sums = torch.tensor(
        [partial["loss"], partial["correct"], partial["count"]], dtype=torch.float64
    )
    elapsed = partial["time"]
    bar = _progress(
        batches,
        len(batches),
        config.progress and env.main and sys.stderr.isatty(),
        f"epoch {epoch + 1}/{config.epochs}",
    )
    step = 0
    interrupt = _DeferInterrupt()
    try:
        interrupt.__enter__()
        tick = time.perf_counter()
        for step, (x, y) in enumerate(bar):
            if step < skip:  # resuming inside an epoch: these batches were trained on
                continue
            if config.channels_last:
                x = _channels_last(x)
            mix_seed = derive_seed(config.seed, epoch, step, env.rank, "mix")
            x, target = _mix(x, y, train_data.num_classes, config, mix_seed)
            with torch.autocast(
                env.device.type,
                dtype=env.amp_dtype or torch.float32,
                enabled=env.amp_dtype is not None,
            ):
                logits = net(x)
                loss = F.cross_entropy(logits.float(), target)
            if not torch.isfinite(loss):
                raise NonFiniteLossError(
                    f"loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}; the last "
                    "good checkpoint is kept (try a lower --lr or --precision fp32)"
                )
            optim.step(loss)
            n = y.numel()
            sums += torch.tensor(
                [float(loss.detach()) * n, float((logits.argmax(1) == y).sum()), n],
                dtype=torch.float64,
            )
            state["step"] = step + 1
            if interrupt.requested:  # Ctrl-C during this step: stop at its end
                raise KeyboardInterrupt
            if hasattr(bar, "set_postfix") and step % 10 == 0:
                now = time.perf_counter()
                bar.set_postfix(
                    loss=f"{sums[0] / sums[2]:.3f}",
                    acc=f"{sums[1] / sums[2]:.3f}",
                    img_s=f"{sums[2] / max(1e-9, elapsed + now - tick):.0f}",
                )
        if interrupt.requested:  # Ctrl-C after the last step: still honoured
            raise KeyboardInterrupt
        elapsed += time.perf_counter() - tick
    except KeyboardInterrupt:
        if interrupt.forced:  # second Ctrl-C mid-step: keep the last consistent checkpoint
            raise
        elapsed += time.perf_counter() - tick
        state["partial"] = {
            "loss": float(sums[0]),
            "correct": float(sums[1]),
            "count": float(sums[2]),
            "time": elapsed,
        }
        if out is not None and env.main:
            _save(out, model, optim, state, config)
        raise TrainingInterrupted(
            f"interrupted at epoch {epoch + 1}, step {state['step']}; state saved to "
            f"{out / CHECKPOINT if out else '(no --out)'}; continue with --resume"
        ) from None
    finally:
        interrupt.__exit__()
        if hasattr(bar, "close"):
            bar.close()
    if env.world > 1:
        dist.all_reduce(sums)
    count = max(1.0, float(sums[2]))
    state["train_time"] = state.get("train_time", 0.0) + elapsed
    return {
        "train_loss": float(sums[0]) / count,
        "train_acc": float(sums[1]) / count,
        "lr": optim.optimizer.param_groups[0]["lr"],
        "epoch_time_s": elapsed,
        "images_per_s": float(sums[2]) / max(1e-9, elapsed),
    }


def _precise_bn(
    model: nn.Module, train_data: TensorData, config: TrainConfig, env: _Env, epoch: int
) -> None:
    """Batch-norm statistics of the weights just trained, before they are evaluated or saved
    (``qsnn.train.precise_bn``)."""
    if not config.precise_bn:
        return
    recompute_bn_stats(
        model,
        train_data,
        samples=config.precise_bn,
        batch_size=config.batch_size,
        seed=derive_seed(config.seed, epoch, "precise-bn"),
        device=env.device,
        amp_dtype=env.amp_dtype,
        augment=config.augment,
        prepare=_channels_last if config.channels_last else None,
        rank=env.rank,
        world_size=env.world,
    )


def _save(out: Path, model: nn.Module, optim: _Optim, state: dict, config: TrainConfig) -> None:
    save_checkpoint(
        out / CHECKPOINT,
        {
            "model": model.state_dict(),
            **optim.state_dict(),
            "rng": capture_rng(),
            "config": config.to_dict(),
            **state,
        },
    )


def _rewrite_metrics(out: Path, history: list[dict]) -> None:
    # On resume, metrics.jsonl is made to match the checkpoint (a killed run may have written
    # a line for an epoch whose checkpoint never landed).
    text = "".join(json.dumps(row) + "\n" for row in history)
    write_text_atomic(out / "metrics.jsonl", text)


def _epoch_line(row: dict, epochs: int) -> str:
    val = f" val {100 * row['val_acc']:.2f}%" if "val_acc" in row else ""
    return (
        f"epoch {row['epoch']}/{epochs}: loss {row['train_loss']:.4f} train "
        f"{100 * row['train_acc']:.2f}%{val} test {100 * row['test_acc']:.2f}% "
        f"({row['images_per_s']:.0f} img/s, {row['epoch_time_s']:.1f} s)"
    )


def _finish(model, data, config, env, state, out, wall) -> dict[str, Any]:
    from ..metrics import profile

    history = state["history"]
    last = history[-1]
    best = state["best"] or {}
    result: dict[str, Any] = {
        "model": config.model,
        "dataset": config.dataset,
        "bits": config.bits,
        "budget": config.allocation.budget,
        "epochs": config.epochs,
        "best_epoch": best.get("epoch"),
        "val_acc_best": best.get("val_acc") if data.val is not None else None,
        "test_acc_best": best.get("test_acc"),
        "test_acc_last": last["test_acc"],
        "train_acc_last": last["train_acc"],
        "selection": "best validation epoch" if data.val is not None else "last epoch",
        "wall_time_s": wall,
        "train_time_s": state.get("train_time"),
        "train_images_per_s": sum(r["images_per_s"] for r in history) / len(history),
        "samples": {
            "train": len(data.train),
            "val": len(data.val) if data.val else 0,
            "test": len(data.test),
        },
        "environment": {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "device": str(env.device),
            "precision": str(env.amp_dtype or "fp32"),
            "threads": torch.get_num_threads(),
            "world_size": env.world,
        },
        "config": config.to_dict(),
    }
    if config.profile_batches and env.main:
        example, _ = next(iter(data.test.batches(2, device=env.device)))
        batches = data.test.batches(256, device=env.device)
        kind_bits = raw_input_bits(data.test.kind)
        prof = profile(
            model, example, data=batches, max_batches=config.profile_batches, input_bits=kind_bits
        )
        result["profile"] = prof.to_dict()
        result["hardware"] = _hardware_summary(
            model, example[:1] if data.test.kind == "static" else example[:, :1], kind_bits
        )
    if out is not None and env.main:
        write_json_atomic(out / "result.json", result)
    return result


def _hardware_summary(model: nn.Module, example: Tensor, input_bits: int | None) -> dict | None:
    """fps, cycles and latency on the default bit-serial accelerator (``qsnn.hardware``); None
    for models the accelerator model does not map."""
    from ..hardware import estimate

    try:
        report = estimate(model, example, input_bits=input_bits)
    except ValueError as err:
        log.info("no hardware estimate: %s", err)
        return None
    return {
        "fps": report.fps,
        "cycles": report.cycles,
        "latency_s": report.latency_s,
        "accelerator": report.accel.to_dict(),
    }


def train(
    config: TrainConfig, out_dir: str | os.PathLike | None = None, resume: bool = False
) -> dict[str, Any]:
    """Load the data, build the model and ``fit`` it (what ``qsnn train`` runs)."""
    torch.manual_seed(config.seed)
    data = load_data(config)
    model = build_model(config, data.train)
    return fit(model, data, config, out_dir=out_dir, resume=resume)
