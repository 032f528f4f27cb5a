"""Readers of the event-camera file formats, in numpy (no optional dependency).

Every reader returns :class:`Events` (``x``, ``y``, ``p`` in {0: OFF, 1: ON}, ``t`` in
microseconds) and reports a truncated or malformed file as :class:`CorruptDataError` naming
the path.

- :func:`read_nmnist_bin`: the ATIS ``.bin`` format of N-MNIST and N-Caltech101 (Orchard et
  al. 2015): 5 bytes per event, ``x``, ``y``, then polarity in bit 7 and a 23-bit timestamp.
- :func:`read_aedat2`: jAER AEDAT 2.0 (and 1.0), big-endian ``address, timestamp`` pairs after
  ``#`` header lines (CIFAR10-DVS, recorded with a DVS128); :func:`decode_dvs128_cifar10dvs`
  turns the addresses into coordinates.
- :func:`read_aedat31`: AEDAT 3.1 (cAER/jAER packets, little-endian), whose polarity packets
  hold DVS128 Gesture's official recordings; :func:`read_gesture_labels` reads their
  ``*_labels.csv``.
- :func:`read_tonic_gesture_npy`: tonic's repack of DVS128 Gesture (``[N, 4]`` ``x, y, p, t``
  arrays with ``t`` in milliseconds).
- :func:`read_aedat4_with_tonic`: AEDAT 4 (tonic's repack of CIFAR10-DVS), read through tonic.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import CorruptDataError, DataError, require

__all__ = [
    "Events",
    "decode_dvs128_cifar10dvs",
    "read_aedat2",
    "read_aedat4_with_tonic",
    "read_aedat31",
    "read_gesture_labels",
    "read_nmnist_bin",
    "read_tonic_gesture_npy",
]


@dataclass(frozen=True)
class Events:
    """A recording: int64 arrays ``x``, ``y``, ``t`` (microseconds) and ``p`` (0 or 1)."""

    x: np.ndarray
    y: np.ndarray
    t: np.ndarray
    p: np.ndarray

    def __len__(self) -> int:
        return int(self.t.shape[0])

    def window(self, start: int, end: int) -> Events:
        """The events with ``start <= t < end``."""
        m = (self.t >= start) & (self.t < end)
        return Events(self.x[m], self.y[m], self.t[m], self.p[m])

    def check_sensor(self, height: int, width: int, path: Path) -> Events:
        """Raise :class:`CorruptDataError` unless every event lies on a ``height x width``
        sensor and polarities are 0/1."""
        if len(self) and (
            self.x.min() < 0 or self.x.max() >= width or self.y.min() < 0
            or self.y.max() >= height or self.p.min() < 0 or self.p.max() > 1
        ):
            raise CorruptDataError(
                f"{path}: events outside the {width}x{height} sensor (x up to {self.x.max()}, "
                f"y up to {self.y.max()}, p in {self.p.min()}..{self.p.max()}); corrupt file?"
            )
        return self


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise CorruptDataError(f"{path}: cannot read ({err})") from err


NMNIST_OVERFLOW_Y = 240
NMNIST_OVERFLOW_STEP = 1 << 13


def read_nmnist_bin(path: Path) -> Events:
    """N-MNIST / N-Caltech101 ``.bin``: 5 bytes per event, big-endian fields.

    ``x = b0``, ``y = b1``, ``p = b2 >> 7``, ``t = (b2 & 0x7F) << 16 | b3 << 8 | b4`` (us).
    As in the dataset authors' reference reader, an event with ``y == 240`` is not an event
    but a timestamp overflow marker that adds ``2**13`` to every later timestamp.
    """
    raw = np.frombuffer(_read_bytes(path), dtype=np.uint8)
    if raw.size == 0 or raw.size % 5:
        raise CorruptDataError(
            f"{path}: truncated or corrupt N-MNIST/N-Caltech101 .bin file: {raw.size} bytes "
            f"is not a positive multiple of 5 (5 bytes per event)"
        )
    ev = raw.reshape(-1, 5).astype(np.int64)  # [E, 5] bytes of each event
    x, y = ev[:, 0], ev[:, 1]
    p = ev[:, 2] >> 7
    t = ((ev[:, 2] & 0x7F) << 16) | (ev[:, 3] << 8) | ev[:, 4]
    overflow = y == NMNIST_OVERFLOW_Y
    if overflow.any():
        t = t + NMNIST_OVERFLOW_STEP * np.cumsum(overflow)
        keep = ~overflow
        x, y, t, p = x[keep], y[keep], t[keep], p[keep]
    return Events(x, y, t, p)


def _skip_hash_header(buf: bytes, path: Path) -> tuple[int, list[bytes]]:
    """Offset of the first byte after the ``#`` header lines, and those lines."""
    pos, lines = 0, []
    while buf[pos : pos + 1] == b"#":
        nl = buf.find(b"\n", pos)
        if nl < 0:
            raise CorruptDataError(f"{path}: header line without end; truncated file?")
        line = buf[pos : nl + 1].rstrip(b"\r\n")
        lines.append(line)
        pos = nl + 1
        if line == b"#!END-HEADER":
            break
    return pos, lines


def read_aedat2(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """jAER AEDAT 2.0 (or 1.0): raw ``(address, t)`` as int64, with 32-bit wrap-arounds of
    the timestamp unrolled.

    After the ``#`` header lines, 2.0 stores big-endian ``uint32 address, int32 timestamp``
    pairs (8 bytes); 1.0 stores ``uint16 address, int32 timestamp`` (6 bytes).
    """
    buf = _read_bytes(path)
    pos, lines = _skip_hash_header(buf, path)
    version = next((ln[9:].strip() for ln in lines if ln.startswith(b"#!AER-DAT")), b"2.0")
    if version.startswith(b"1"):
        dtype = np.dtype([("a", ">u2"), ("t", ">u4")])
    elif version.startswith(b"2"):
        dtype = np.dtype([("a", ">u4"), ("t", ">u4")])
    else:
        raise CorruptDataError(
            f"{path}: AEDAT version {version.decode(errors='replace')} is not AEDAT 1.0/2.0"
        )
    payload = len(buf) - pos
    if payload % dtype.itemsize:
        raise CorruptDataError(
            f"{path}: truncated AEDAT {version.decode()} file: {payload} bytes of events is "
            f"not a multiple of {dtype.itemsize}"
        )
    rec = np.frombuffer(buf, dtype=dtype, offset=pos)
    addr = rec["a"].astype(np.int64)
    t = rec["t"].astype(np.int64)
    wraps = np.diff(t, prepend=t[:1]) < -(1 << 31)
    if wraps.any():
        t = t + (np.cumsum(wraps) << 32)
    return addr, t


def decode_dvs128_cifar10dvs(addr: np.ndarray, t: np.ndarray) -> Events:
    """DVS128 addresses of CIFAR10-DVS -> events, oriented as SpikingJelly reads them.

    jAER's DVS128 address: polarity bit 0 (1 = OFF), ``x`` bits 1-7, ``y`` bits 8-14; bit 15
    marks special (non-DVS) events, which are dropped. qsnn returns ``x = 127 - y_raw``,
    ``y = 127 - x_raw``, ``p = 1 - bit0`` (SpikingJelly's orientation, under which the
    recorded CIFAR images stand upright), so results compare with papers that used it.
    """
    keep = (addr & 0x8000) == 0
    addr, t = addr[keep], t[keep]
    x_raw = (addr >> 1) & 0x7F
    y_raw = (addr >> 8) & 0x7F
    return Events(127 - y_raw, 127 - x_raw, t, 1 - (addr & 1))


_AEDAT3_HEADER = struct.Struct("<hhiiiiii")  # type, source, size, tsOffset, tsOverflow,
#                                              capacity, number, valid
_POLARITY_EVENT = 1


def read_aedat31(path: Path) -> Events:
    """AEDAT 3.x: the polarity events of every packet, valid ones only.

    After the ``#`` header (ending ``#!END-HEADER``), packets of a 28-byte little-endian
    header (``eventType, eventSource, eventSize, eventTSOffset, eventTSOverflow,
    eventCapacity, eventNumber, eventValid``) and ``eventCapacity * eventSize`` bytes of
    events. A polarity event (type 1) is ``uint32 data, int32 timestamp``: valid bit 0,
    polarity bit 1, ``y`` bits 2-16, ``x`` bits 17-31; ``t = timestamp | tsOverflow << 31``.
    """
    buf = _read_bytes(path)
    pos, lines = _skip_hash_header(buf, path)
    if not lines or not lines[0].startswith(b"#!AER-DAT3"):
        raise CorruptDataError(f"{path}: not an AEDAT 3.x file (first line must be #!AER-DAT3.x)")
    if lines[-1] != b"#!END-HEADER":
        raise CorruptDataError(f"{path}: AEDAT 3 header has no #!END-HEADER line")
    data, stamps = [], []
    end = len(buf)
    while pos < end:
        if pos + _AEDAT3_HEADER.size > end:
            raise CorruptDataError(f"{path}: truncated AEDAT 3 packet header at byte {pos}")
        etype, _src, esize, _off, overflow, capacity, _num, _valid = _AEDAT3_HEADER.unpack_from(
            buf, pos
        )
        pos += _AEDAT3_HEADER.size
        nbytes = capacity * esize
        if esize <= 0 or capacity < 0 or pos + nbytes > end:
            raise CorruptDataError(
                f"{path}: truncated or corrupt AEDAT 3 packet at byte {pos - 28} "
                f"({capacity} events of {esize} bytes, {end - pos} bytes left)"
            )
        if etype == _POLARITY_EVENT:
            if esize < 8:
                raise CorruptDataError(f"{path}: polarity events of {esize} bytes (need 8)")
            words = np.frombuffer(buf, dtype="<u4", count=nbytes // 4, offset=pos)
            words = words.reshape(capacity, esize // 4)  # [events, 32-bit words]
            data.append(words[:, 0].astype(np.int64))
            stamps.append(words[:, 1].astype(np.int64) | (int(overflow) << 31))
        pos += nbytes
    if not data:
        empty = np.zeros(0, dtype=np.int64)
        return Events(empty, empty, empty, empty)
    d, t = np.concatenate(data), np.concatenate(stamps)
    valid = (d & 1) == 1
    d, t = d[valid], t[valid]
    return Events((d >> 17) & 0x7FFF, (d >> 2) & 0x7FFF, t, (d >> 1) & 1)


def read_gesture_labels(path: Path) -> list[tuple[int, int, int]]:
    """DVS128 Gesture ``*_labels.csv``: ``(label, start_us, end_us)`` rows, ``label`` 0-based.

    The file is ``class,startTime_usec,endTime_usec`` then one row per gesture, class 1..11.
    """
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise CorruptDataError(f"{path}: cannot read labels ({err})") from err
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.lower().startswith("class"):
            continue
        try:
            label, start, end = (int(v) for v in line.split(","))
        except ValueError as err:
            raise CorruptDataError(
                f"{path}: line {n} is not 'class,startTime_usec,endTime_usec': {line!r}"
            ) from err
        if not 1 <= label <= 11 or end <= start:
            raise CorruptDataError(f"{path}: line {n} has class {label} (1..11), {start}..{end}")
        rows.append((label - 1, start, end))
    if not rows:
        raise CorruptDataError(f"{path}: no gesture rows")
    return rows


def read_tonic_gesture_npy(path: Path) -> Events:
    """tonic's DVS128 Gesture repack: a ``.npy`` ``[N, 4]`` of ``x, y, p, t`` with ``t`` in ms."""
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, MemoryError) as err:
        raise CorruptDataError(f"{path}: truncated or not a .npy array ({err})") from err
    if not isinstance(arr, np.ndarray):  # an .npz archive
        arr.close()
        raise CorruptDataError(f"{path}: expected a .npy array; got an .npz archive")
    if arr.ndim != 2 or arr.shape[1] != 4 or arr.dtype.kind not in "iuf":
        raise CorruptDataError(
            f"{path}: expected an [N, 4] numeric x, y, p, t array; got {arr.dtype} {arr.shape}"
        )
    a = arr.astype(np.int64)
    return Events(a[:, 0], a[:, 1], a[:, 3] * 1000, a[:, 2])


def read_aedat4_with_tonic(path: Path) -> Events:
    """AEDAT 4 (tonic's repack of CIFAR10-DVS), decoded by ``tonic.io.read_aedat4``."""
    io = require("tonic.io", "events", "tonic")
    try:
        ev = io.read_aedat4(str(path))
    except Exception as err:  # tonic/loris raise many kinds on bad files
        raise CorruptDataError(f"{path}: cannot read AEDAT 4 ({err})") from err
    names = ev.dtype.names or ()

    def col(cands: tuple[str, ...], pos: int) -> np.ndarray:
        for c in cands:
            if c in names:
                return np.asarray(ev[c]).astype(np.int64)
        if names:
            raise DataError(f"{path}: AEDAT 4 events lack a field among {cands}; got {names}")
        return np.asarray(ev)[:, pos].astype(np.int64)

    t = col(("t", "ts", "timestamp"), 0)
    return Events(
        col(("x",), 1), col(("y",), 2), t, col(("p", "polarity", "is_increase", "on"), 3)
    )
