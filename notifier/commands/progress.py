"""Progress of ``notifier replay`` and ``notifier dlq redrive``, on standard error.

On a terminal, a bar with the count, the rate and the time left (rich); otherwise (a log file,
CI) one plain line every ``LINE_EVERY`` seconds. Both end with one summary line::

    replay: 1000 of 1000 events delivered, 0 failed, in 12.3s (81/s)

Both are ``notifier.sinks.redeliver.Progress``: told each outcome as it comes in.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    ProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as RichProgress
from rich.text import Text

if TYPE_CHECKING:
    from collections.abc import Callable

    from rich.progress import Task

    from notifier.sinks.redeliver import Progress

__all__ = ["LINE_EVERY", "BarProgress", "LineProgress", "progress_for"]

LINE_EVERY = 5.0
"""Seconds between two progress lines when standard error is not a terminal."""


def progress_for(verb: str, total: int, out: TextIO | None = None) -> Progress:
    """A bar if ``out`` (standard error by default) is a terminal, else a line now and then."""
    stream = out if out is not None else sys.stderr
    if _is_terminal(stream):
        return BarProgress(verb, total, Console(file=stream))
    return LineProgress(verb, total, stream)


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):
        return False


class _Tally:
    """The counts and the summary line both kinds print at the end."""

    def __init__(self, verb: str, total: int, clock: Callable[[], float]) -> None:
        self.verb = verb
        self.total = total
        self.done = 0
        self.failed = 0
        self._clock = clock
        self._started = clock()

    def count(self, delivered: int, failed: int) -> None:
        self.done += delivered
        self.failed += failed

    def elapsed(self) -> float:
        return self._clock() - self._started

    def rate(self) -> str:
        elapsed = self.elapsed()
        return f"{(self.done + self.failed) / elapsed:.0f}/s" if elapsed > 0 else "-/s"

    def summary(self) -> str:
        left = self.total - self.done - self.failed
        rest = f", {left} not attempted (interrupted)" if left > 0 else ""
        return (
            f"{self.verb}: {self.done} of {self.total} events delivered, {self.failed} failed"
            f"{rest}, in {self.elapsed():.1f}s ({self.rate()})"
        )


class LineProgress:
    """``replay: 120/1000 delivered, 0 failed, 24/s`` every ``every`` seconds, then the summary."""

    def __init__(
        self,
        verb: str,
        total: int,
        out: TextIO,
        *,
        every: float = LINE_EVERY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._tally = _Tally(verb, total, clock)
        self._out = out
        self._every = every
        self._clock = clock
        self._last = clock()

    def advance(self, *, delivered: int = 0, failed: int = 0) -> None:
        """Count; print a line when ``every`` seconds have passed since the last one."""
        self._tally.count(delivered, failed)
        if self._clock() - self._last >= self._every:
            self._last = self._clock()
            t = self._tally
            line = f"{t.verb}: {t.done}/{t.total} delivered, {t.failed} failed, {t.rate()}"
            print(line, file=self._out, flush=True)

    def finish(self) -> None:
        """The summary line."""
        print(self._tally.summary(), file=self._out, flush=True)


class _Rate(ProgressColumn):
    """Events a second, from rich's own speed estimate."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("-/s" if speed is None else f"{speed:.0f}/s", style="progress.data.speed")


class BarProgress:
    """A rich bar (``replay ━━━━━━╸━━━━ 620/1000 0 failed 81/s 0:00:05``), then the summary."""

    def __init__(
        self,
        verb: str,
        total: int,
        console: Console,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._tally = _Tally(verb, total, clock)
        self._console = console
        self._bar = RichProgress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[failed]} failed"),
            _Rate(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        self._task = self._bar.add_task(verb, total=total, failed=0)
        self._bar.start()

    def advance(self, *, delivered: int = 0, failed: int = 0) -> None:
        """Move the bar."""
        self._tally.count(delivered, failed)
        self._bar.update(self._task, advance=delivered + failed, failed=self._tally.failed)

    def finish(self) -> None:
        """Take the bar away and print the summary line."""
        self._bar.stop()
        self._console.print(self._tally.summary(), markup=False, highlight=False)
