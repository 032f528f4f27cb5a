"""The state of a run between steps: what a checkpoint holds besides weights and optimizer.

:class:`RunState` is where the loop is (epoch, step inside it), what it measured so far
(one history row per finished epoch, the running sums of an interrupted epoch), the best epoch
and the training time. It is saved into ``checkpoint.pt`` as plain dicts and numbers (the
keys ``epoch``, ``step``, ``history``, ``best``, ``partial``, ``train_time``, as before this
class existed), so checkpoints stay ``weights_only``-loadable and old ones resume.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

__all__ = ["BestEpoch", "EpochProgress", "RunState"]


@dataclass
class EpochProgress:
    """Running sums of an epoch interrupted mid-way (resumed from its next step)."""

    loss: float = 0.0
    """Sum of per-sample losses."""
    correct: float = 0.0
    """Correctly classified samples."""
    count: float = 0.0
    """Samples trained on."""
    time: float = 0.0
    """Seconds spent in training steps."""


@dataclass
class BestEpoch:
    """The epoch chosen so far: best validation accuracy (the last epoch without validation)."""

    epoch: int
    """1-based epoch number."""
    val_acc: float
    """Its validation accuracy; ``-1.0`` when there is no validation split."""
    test_acc: float
    """Its test accuracy (reported, never used to choose)."""


@dataclass
class RunState:
    """Position and measurements of a run; everything ``--resume`` needs beyond the tensors."""

    epoch: int = 0
    """Finished epochs."""
    step: int = 0
    """Finished steps of the current epoch (0 at an epoch boundary)."""
    history: list[dict[str, Any]] = field(default_factory=list)
    """One metrics row per finished epoch (as written to ``metrics.jsonl``)."""
    best: BestEpoch | None = None
    """The best epoch so far."""
    partial: EpochProgress | None = None
    """Running sums of the current epoch when it was interrupted mid-way."""
    train_time: float = 0.0
    """Seconds spent in training steps over all finished epochs."""

    def to_checkpoint(self) -> dict[str, Any]:
        """The checkpoint entries of this state (plain containers)."""
        return {
            "epoch": self.epoch,
            "step": self.step,
            "history": self.history,
            "best": asdict(self.best) if self.best is not None else None,
            "partial": asdict(self.partial) if self.partial is not None else None,
            "train_time": self.train_time,
        }

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any]) -> RunState:
        """The state saved in ``ckpt``; entries it lacks keep their defaults."""
        state = cls()
        for key in ("epoch", "step", "history", "train_time"):
            if key in ckpt:
                setattr(state, key, ckpt[key])
        if ckpt.get("best") is not None:
            state.best = BestEpoch(**_known(BestEpoch, ckpt["best"]))
        if ckpt.get("partial") is not None:
            state.partial = EpochProgress(**_known(EpochProgress, ckpt["partial"]))
        return state

    def finish_epoch(self, row: dict[str, Any]) -> bool:
        """Record the metrics ``row`` of the epoch just finished; True when it is the new best
        (higher validation accuracy than every earlier epoch; every epoch without validation)."""
        self.history.append(row)
        self.epoch, self.step, self.partial = row["epoch"], 0, None
        score = row.get("val_acc")
        if score is None or self.best is None or score > self.best.val_acc:
            self.best = BestEpoch(self.epoch, score if score is not None else -1.0, row["test_acc"])
            return True
        return False


def _known(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """The entries of ``values`` that are fields of dataclass ``cls``."""
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in values.items() if k in names}
