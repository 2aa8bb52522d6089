"""Progress of replay and redrive: a bar on a terminal, a line now and then elsewhere."""

from __future__ import annotations

import io
import re

from rich.console import Console

from notifier.commands.progress import BarProgress, LineProgress, progress_for


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_plain_lines_every_few_seconds_then_a_summary() -> None:
    """Not on a terminal: a line when 5 s have passed, and one summary line at the end."""
    out, clock = io.StringIO(), Clock()
    progress = LineProgress("replay", 100, out, every=5.0, clock=clock)
    progress.advance(delivered=10)
    clock.now += 4.0
    progress.advance(delivered=10)
    assert out.getvalue() == ""
    clock.now += 1.0
    progress.advance(delivered=20, failed=1)
    assert out.getvalue() == "replay: 40/100 delivered, 1 failed, 8/s\n"
    clock.now += 5.0
    progress.advance(delivered=59)
    progress.finish()
    assert out.getvalue().splitlines()[1:] == [
        "replay: 99/100 delivered, 1 failed, 10/s",
        "replay: 99 of 100 events delivered, 1 failed, in 10.0s (10/s)",
    ]


def test_an_interrupted_run_says_what_was_not_attempted() -> None:
    """The summary of a run that stopped early counts the events never tried."""
    out, clock = io.StringIO(), Clock()
    progress = LineProgress("redrive", 10, out, clock=clock)
    progress.advance(delivered=3)
    clock.now += 2.0
    progress.finish()
    assert out.getvalue() == (
        "redrive: 3 of 10 events delivered, 0 failed, 7 not attempted (interrupted), in 2.0s"
        " (2/s)\n"
    )


def test_a_terminal_gets_a_bar_with_rate_and_time_left() -> None:
    """On a terminal: a rich bar (count, failures, rate, time left), cleared for the summary."""
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100)
    progress = BarProgress("replay", 50, console)
    progress.advance(delivered=20, failed=2)
    progress.advance(delivered=26)
    progress.finish()
    drawn = out.getvalue()
    assert "replay" in drawn
    assert "48/50" in drawn
    assert "2 failed" in drawn
    assert "/s" in drawn
    last = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\r", "", drawn.rstrip().splitlines()[-1])
    assert last.startswith(
        "replay: 46 of 50 events delivered, 2 failed, 2 not attempted (interrupted), in "
    )


def test_the_kind_follows_the_stream() -> None:
    """A file or a pipe gets lines; a terminal gets the bar."""
    assert isinstance(progress_for("replay", 1, io.StringIO()), LineProgress)

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    bar = progress_for("replay", 1, Terminal())
    assert isinstance(bar, BarProgress)
    bar.finish()
