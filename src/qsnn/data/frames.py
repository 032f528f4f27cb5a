"""Events -> ``T`` frames of per-polarity counts, resized by scaling event coordinates.

For a recording of ``E`` events on an ``H x W`` sensor, :func:`events_to_frames` returns
integer counts ``[T, 2, H', W']``:

- **time bins** (``split_by="time"``): ``T`` windows of equal duration over the recording,
  event ``i`` in bin ``floor((t_i - t_min) * T / (t_max - t_min + 1))``;
- **count bins** (``split_by="count"``): ``T`` windows of (nearly) equal event count, event
  of rank ``r`` (by time) in bin ``floor(r * T / E)``;
- **resize** by scaling coordinates, ``x' = floor(x * W' / W)``, ``y' = floor(y * H' / H)``:
  every event lands in exactly one output pixel, so each frame's sum is the number of events
  in its window and the sum over frames is ``E`` (no interpolation, nothing lost).

Channel 0 counts OFF events (``p = 0``), channel 1 ON events.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .errors import DataError
from .events import Events

__all__ = ["SPLIT_BY", "events_to_frames", "parse_size", "time_bins"]

SPLIT_BY = ("time", "count")


def parse_size(
    size: int | str | Sequence[int] | None, sensor: tuple[int, int]
) -> tuple[int, int]:
    """``None`` or ``"native"`` -> the sensor's ``(H, W)``; ``48`` -> ``(48, 48)``;
    ``(H, W)`` as given."""
    if size is None or size == "native":
        return sensor
    if isinstance(size, str):
        raise DataError(f"frame size must be a positive int, (H, W) or 'native'; got {size!r}")
    hw = (int(size), int(size)) if isinstance(size, int) else tuple(int(s) for s in size)
    if len(hw) != 2 or min(hw) < 1:
        raise DataError(f"frame size must be a positive int or (H, W); got {size!r}")
    return hw[0], hw[1]


def time_bins(t: np.ndarray, time_steps: int, split_by: str = "time") -> np.ndarray:
    """The frame index in ``0 .. T-1`` of every event (see the module docstring)."""
    if time_steps < 1:
        raise DataError(f"time_steps must be >= 1; got {time_steps}")
    if split_by not in SPLIT_BY:
        raise DataError(f"split_by must be one of {SPLIT_BY}; got {split_by!r}")
    n = t.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    t = t.astype(np.int64, copy=False)
    if split_by == "time":
        t0 = t.min()
        span = int(t.max() - t0) + 1
        return (t - t0) * time_steps // span
    rank = np.empty(n, dtype=np.int64)
    order = np.argsort(t, kind="stable") if np.any(np.diff(t) < 0) else np.arange(n)
    rank[order] = np.arange(n, dtype=np.int64)
    return rank * time_steps // n


def events_to_frames(
    events: Events,
    *,
    time_steps: int,
    sensor: tuple[int, int],
    size: tuple[int, int] | None = None,
    split_by: str = "time",
) -> np.ndarray:
    """Counts ``[T, 2, H', W']`` (int64) of ``events`` recorded on a ``sensor = (H, W)``."""
    height, width = sensor
    out_h, out_w = size or sensor
    b = time_bins(events.t, time_steps, split_by)
    xs = events.x.astype(np.int64) * out_w // width
    ys = events.y.astype(np.int64) * out_h // height
    flat = ((b * 2 + events.p.astype(np.int64)) * out_h + ys) * out_w + xs
    counts = np.bincount(flat, minlength=time_steps * 2 * out_h * out_w)
    return counts.reshape(time_steps, 2, out_h, out_w)  # [T*2*H'*W'] -> [T, 2, H', W']
