"""Progress of qsnn's long commands, written to stderr (stdout keeps the tables and JSON that
users pipe).

One :class:`Progress` per command (``Progress("verify")``). On a terminal (stderr is a tty and
tqdm is installed) a loop is a tqdm bar and a stage a line above it; anywhere else (a log file,
a pipe, CI) each stage is one line (``verify: converting the model``) and a long loop adds one
line every :data:`EVERY` seconds with k of N, the time elapsed and an estimate of the time left
(``verify: compared 192 of 359 samples, ..., 12 s elapsed, about 10 s left``).
``Progress("...", enabled=False)`` writes nothing: the CLI's ``--no-progress``, and what a
library call that is not given ``progress=`` gets (:func:`resolve`), so library calls stay quiet.

A stage line is written once the command's input has been checked, right before the slow work:
bad input stays one ``qsnn: error: ...`` line with no progress before it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TextIO, TypeVar

__all__ = ["EVERY", "Counter", "Progress", "bar", "duration", "eta", "resolve"]

#: Seconds between two progress lines of one loop when stderr is not a terminal.
EVERY = 10.0

T = TypeVar("T")


def duration(seconds: float) -> str:
    """``45 s`` below 90 s, else ``3 min``: what a person reading a log needs, no more."""
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def eta(elapsed: float, done: int, total: int | None) -> str:
    """``12 min elapsed, about 30 min left``: the mean time per item so far times the items
    left (rough when items differ in cost, as sweep runs across allocations do). No estimate
    before the first item is done or when the total is unknown."""
    text = f"{duration(elapsed)} elapsed"
    if total is None or done < 1 or done >= total:
        return text
    return f"{text}, about {duration(elapsed / done * (total - done))} left"


def _tqdm() -> Any:
    """tqdm's class, or ``None`` when it is not installed (an optional dependency)."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm


def bar(iterable: Iterable[T], total: int, enabled: bool, desc: str) -> Iterable[T]:
    """``iterable`` with a tqdm bar when ``enabled`` and tqdm is installed (the training
    loop's epoch bar; it decides ``enabled`` itself: a terminal, rank 0, ``--progress``)."""
    tqdm = _tqdm() if enabled else None
    if tqdm is None:
        return iterable
    return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True)


class Progress:
    """Stage lines and loop counters of one command (``command`` starts every line).

    Args:
        command: the line prefix, e.g. ``"verify"``.
        enabled: ``False`` writes nothing at all.
        stream: where lines go; default ``sys.stderr`` as it is at the time of writing (so a
            redirected or captured stderr is honoured).
        every: seconds between two lines of one loop (default :data:`EVERY`, read when used).
        clock: the time source (tests pass a fake one).
        terminal: whether to draw tqdm bars; default: ``stream.isatty()`` and tqdm installed.
    """

    def __init__(
        self,
        command: str,
        enabled: bool = True,
        *,
        stream: TextIO | None = None,
        every: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        terminal: bool | None = None,
    ) -> None:
        self.command = command
        self.enabled = enabled
        self._stream = stream
        self._every = every
        self.clock = clock
        self._terminal = terminal
        self._bars = 0  # open tqdm bars: lines then go through tqdm.write, above them

    @property
    def stream(self) -> TextIO:
        return self._stream if self._stream is not None else sys.stderr

    @property
    def every(self) -> float:
        return EVERY if self._every is None else self._every

    @property
    def terminal(self) -> bool:
        """tqdm bars rather than periodic lines: stderr is a terminal and tqdm is installed."""
        if self._terminal is not None:
            return self._terminal and _tqdm() is not None
        isatty = getattr(self.stream, "isatty", None)
        try:
            tty = bool(isatty()) if isatty is not None else False
        except (ValueError, OSError):  # a closed stream
            tty = False
        return tty and _tqdm() is not None

    def write(self, line: str) -> None:
        """One line, as it is (no prefix); above any open bar so that it is not torn."""
        if not self.enabled:
            return
        tqdm = _tqdm() if self._bars else None
        if tqdm is not None:
            tqdm.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)

    def stage(self, text: str) -> None:
        """``COMMAND: text``, the start of one stage of the command."""
        self.write(f"{self.command}: {text}")

    def counter(
        self, total: int | None, unit: str, what: str = "", *, draw: bool = True
    ) -> Counter:
        """A counter of a loop of ``total`` (``None``: unknown) ``unit`` (``"samples"``);
        ``what`` names what is done (``"compared"``). ``draw=False`` never draws a bar (a loop
        nested in another one that has one): it writes lines every :attr:`every` seconds."""
        return Counter(self, total, unit, what, draw=draw)

    def track(
        self, iterable: Iterable[T], total: int | None, unit: str, what: str = ""
    ) -> Iterator[T]:
        """``iterable``, counting one ``unit`` per item."""
        with self.counter(total, unit, what) as count:
            for item in iterable:
                yield item
                count.advance()


class Counter:
    """The count of one loop: a tqdm bar on a terminal, else a line every ``every`` seconds
    (none for a loop that ends sooner). Made by :meth:`Progress.counter`; a context manager
    that closes its bar."""

    def __init__(
        self, progress: Progress, total: int | None, unit: str, what: str, *, draw: bool = True
    ) -> None:
        self.progress, self.total, self.unit, self.what = progress, total, unit, what
        self.done = 0
        self.started = self.reported = progress.clock()
        self._bar = None
        if progress.enabled and draw and progress.terminal:
            desc = f"{progress.command}: {what}" if what else progress.command
            self._bar = _tqdm()(total=total, desc=desc, unit=f" {unit}", leave=False,
                                dynamic_ncols=True, file=progress.stream)  # fmt: skip
            progress._bars += 1

    def line(self, detail: str = "") -> str:
        """``verify: compared 16 of 64 samples, DETAIL, 3 s elapsed, about 9 s left``."""
        count = f"{self.done}" if self.total is None else f"{self.done} of {self.total}"
        head = f"{self.progress.command}: {self.what + ' ' if self.what else ''}{count} {self.unit}"
        elapsed = self.progress.clock() - self.started
        return ", ".join(part for part in (head, detail, eta(elapsed, self.done, self.total))
                         if part)  # fmt: skip

    def advance(self, n: int = 1, detail: str | Callable[[], str] = "") -> None:
        """``n`` more done; ``detail`` (or a function that gives it, called only when a line
        is written) is added to the line or the bar."""
        self.done += n
        if not self.progress.enabled:
            return
        if self._bar is not None:
            self._bar.update(n)
            if detail:
                self._bar.set_postfix_str(detail() if callable(detail) else detail)
            return
        now = self.progress.clock()
        if now - self.reported >= self.progress.every:
            self.reported = now
            self.progress.write(self.line(detail() if callable(detail) else detail))

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
            self.progress._bars -= 1

    def __enter__(self) -> Counter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def resolve(progress: Progress | bool | None, command: str) -> Progress:
    """A library function's ``progress=`` argument as a :class:`Progress`: one given is used
    as it is, ``True`` writes lines headed ``command``, ``None``/``False`` writes nothing."""
    if isinstance(progress, Progress):
        return progress
    return Progress(command, enabled=bool(progress))
