"""Optimisation: AdamW parameter groups, the warm-up + cosine schedule, the fp16 loss scaler,
and the Mixup/CutMix targets."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .config import TrainConfig
from .environment import TrainEnv

__all__ = ["Optim", "lr_lambda", "mix", "param_groups"]


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
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


def lr_lambda(total: int, warmup: int, min_ratio: float) -> Callable[[int], float]:
    """The learning-rate factor at a step: linear warm-up over ``warmup`` steps, then a cosine
    from 1 down to ``min_ratio`` at step ``total``."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def mix(
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


@dataclass
class Optim:
    """AdamW + the warm-up/cosine schedule + the fp16 loss scaler, stepped and saved together."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler

    @classmethod
    def create(
        cls, model: nn.Module, config: TrainConfig, env: TrainEnv, total_steps: int, warmup: int
    ) -> Optim:
        """The optimizer of ``model`` for a run of ``total_steps`` with ``warmup`` of them."""
        optimizer = torch.optim.AdamW(param_groups(model, config.weight_decay), lr=config.lr)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lr_lambda(total_steps, max(1, warmup), config.min_lr_ratio)
        )
        # A loss scaler only matters for fp16; it is a no-op (but still checkpointed) otherwise.
        scaler = torch.amp.GradScaler(env.device.type, enabled=env.amp_dtype == torch.float16)
        return cls(optimizer, scheduler, scaler)

    def step(self, loss: Tensor) -> None:
        """One optimizer step on ``loss`` (backward, scaled step, schedule)."""
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint entries ``optimizer``, ``scheduler`` and ``scaler``."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
        }

    def load_state_dict(self, ckpt: dict[str, Any]) -> None:
        """Restore from a checkpoint holding :meth:`state_dict`'s entries."""
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
