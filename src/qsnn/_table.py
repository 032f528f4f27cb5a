"""Fixed-width per-layer text tables, as ``profile(...).table()`` and ``estimate(...).table()``
print them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar


class _Named(Protocol):
    name: str


Row = TypeVar("Row", bound=_Named)


def layer_table(
    head: str,
    rows: Sequence[Row],
    line: Callable[[str, Row], str],
    total: str,
    *,
    name_width: int,
    max_rows: int | None = None,
) -> list[str]:
    """Header, rule, one ``line(name, row)`` per row, rule, ``total``.

    Names longer than ``name_width`` keep their tail (``"..." + name[-(name_width - 3):]``),
    where a layer's distinguishing part is; ``max_rows`` cuts the body and says how many
    layers were left out. Returns the lines, so callers can add their summary lines.
    """
    lines = [head, "-" * len(head)]
    shown = rows if max_rows is None else rows[:max_rows]
    for r in shown:
        name = r.name if len(r.name) <= name_width else "..." + r.name[-(name_width - 3) :]
        lines.append(line(name, r))
    if len(shown) < len(rows):
        lines.append(f"... {len(rows) - len(shown)} more layers")
    lines += ["-" * len(head), total]
    return lines
