"""The demo's live view: counters and the latest events in one panel that fits the terminal.

``LiveView`` is fed by ``ViewSink`` (the demo's ``live`` sink: on a terminal its events land
here instead of on standard output) and drawn from ``Figures``, what the orchestration reads
off the service and the receiver. The panel is as tall as the terminal allows once the closing
lines (``summary``, and the Slack one with ``--slack``) and a shell prompt have room below it,
so the last frame stays whole on screen, title included, even at 80x24. The latest stream
events stay on top of the feed (a first poll's thousand joins would push them out).
"""

from __future__ import annotations

import itertools
from collections import Counter, deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from notifier.commands.demo_feed import LABELS, count, detail, icon
from notifier.commands.demo_slack import channel_view
from notifier.commands.demo_slack import summary as slack_summary
from notifier.durations import spoken_duration
from notifier.events import STREAM_EVENT_TYPES, VIEWER_EVENT_TYPES
from notifier.sinks.base import Batching, Delivered, Outcome

if TYPE_CHECKING:
    from collections.abc import Sequence

    from notifier.commands.demo_slack import LocalSlack
    from notifier.sinks.base import Event
    from notifier.sinks.stdout import StdoutSink

__all__ = ["Figures", "LiveView", "ViewSink"]

PINNED = 4  # the latest stream events kept on top of the feed, at most
MIN_FEED = 3  # feed rows however small the terminal
BELOW = 2  # rows kept free under the closing lines: the shell prompt, and the command above
_BORDER = 2  # the panel's top and bottom lines


@dataclass(frozen=True, slots=True)
class Figures:
    """What the counters show besides the events: the poller's, the receiver's, the sink's."""

    elapsed: float  # seconds since the demo started
    tracked: int = 0  # viewers tracked after the last committed poll
    commits: int = 0
    verified: int = 0  # webhooks whose signature verified at the receiver
    rejected: int = 0
    retried: int = 0
    dead_lettered: int = 0


class LiveView:
    """The counters of every event type and the latest events (or, with ``slack``, the local
    Slack channel), drawn to fit ``console``."""

    def __init__(self, console: Console, *, title: str, slack: LocalSlack | None = None) -> None:
        self.console = console
        self.title = title
        self.slack = slack  # shown instead of the feed
        self.recent: deque[dict[str, Any]] = deque(maxlen=200)
        self.streams: deque[dict[str, Any]] = deque(maxlen=PINNED)
        self.counts: Counter[str] = Counter()

    def add(self, event: dict[str, Any]) -> None:
        """Count an event and put it at the top of the feed."""
        self.counts[event["type"]] += 1
        if str(event["type"]).startswith("stream."):
            self.streams.appendleft(event)
        else:
            self.recent.appendleft(event)

    def summary(self, figures: Figures) -> str:
        """The closing line: how long it ran, the events by type, what the receiver verified."""
        total = sum(self.counts.values())
        kinds = [
            f"{count(self.counts[k])} {label}" for k, label in LABELS.items() if self.counts[k]
        ]
        kinds += [f"{count(n)} {k}" for k, n in self.counts.items() if k not in LABELS]
        events = f"{count(total)} {'event' if total == 1 else 'events'}"
        if kinds:
            events += f" ({', '.join(kinds)})"
        took = spoken_duration(int(figures.elapsed * 1000))
        return (
            f"demo finished after {took}: {events};"
            f" {count(figures.verified)} webhooks verified, {count(figures.rejected)} rejected."
        )

    def closing(self, figures: Figures) -> list[str]:
        """The lines printed under the last frame."""
        lines = [self.summary(figures)]
        if self.slack is not None:
            lines.append(slack_summary(self.slack))
        return lines

    def render(self, figures: Figures, *, finished: bool = False) -> Panel:
        """The panel: counters, then the feed (or the channel) in the rows that are left."""
        stats = self._stats(figures)
        reserved = sum(self._height(line) for line in self.closing(figures))
        room = self.console.height - _BORDER - stats.row_count - reserved - BELOW
        if self.slack is not None:
            feed: Panel | Table = channel_view(self.slack, lines=max(room - _BORDER, MIN_FEED))
        else:
            feed = self._feed(max(room - 1, MIN_FEED))  # - 1: the feed's heading
        title = f"{self.title} · {figures.elapsed:.0f}s"
        subtitle = "finished" if finished else "Ctrl-C stops"
        return Panel(Group(stats, feed), title=title, subtitle=subtitle)

    def _height(self, line: str) -> int:
        """Rows ``line`` takes on the console, wrapped."""
        return len(Text(line).wrap(self.console, self.console.width))

    def _stats(self, figures: Figures) -> Table:
        counts = self.counts
        live = counts["stream.audience_started"] - counts["stream.audience_ended"]
        columns: list[list[tuple[str, int]]] = [
            [
                ("viewers tracked", figures.tracked),
                ("polls committed", figures.commits),
                *((LABELS[kind], counts[kind]) for kind in VIEWER_EVENT_TYPES),
            ],
            [
                ("live streams", live),
                *((LABELS[kind], counts[kind]) for kind in STREAM_EVENT_TYPES),
            ],
            [
                ("webhooks verified", figures.verified),
                ("webhooks rejected", figures.rejected),
                ("webhook retries", figures.retried),
                ("dead letters", figures.dead_lettered),
            ],
        ]
        stats = Table.grid(padding=(0, 1), expand=True)
        for _ in columns:
            stats.add_column(style="bold", no_wrap=True)
            stats.add_column(justify="right", no_wrap=True)
        for row in itertools.zip_longest(*columns, fillvalue=None):
            stats.add_row(*(cell for pair in row for cell in _pair(pair)))
        return stats

    def _feed(self, rows: int) -> Table:
        """The newest events in ``rows`` rows: up to ``PINNED`` stream events (never more than
        half the rows), then viewer events."""
        events = Table(expand=True, show_edge=False, box=None, pad_edge=False)
        events.add_column("time", no_wrap=True, min_width=8)
        events.add_column("event", no_wrap=True, max_width=16)
        events.add_column("viewer / stream", no_wrap=True, max_width=18)
        events.add_column("", no_wrap=True, ratio=1, overflow="ellipsis")
        pinned = list(self.streams)[: max(rows // 2, 1)]
        for event in [*pinned, *itertools.islice(self.recent, rows - len(pinned))]:
            events.add_row(
                Text(str(event.get("time", ""))[11:19]),
                icon(event),
                Text(str(event.get("subject", ""))),
                Text(detail(event)),
            )
        return events


def _pair(pair: tuple[str, int] | None) -> tuple[str, str]:
    return ("", "") if pair is None else (pair[0], count(pair[1]))


class ViewSink:
    """The demo's ``live`` sink: JSON lines on standard output when that is not a terminal
    (``stdout``); on a terminal the same events land in the live view instead."""

    def __init__(self, view: LiveView, stdout: StdoutSink | None) -> None:
        self._view = view
        self._stdout = stdout

    @property
    def batching(self) -> Batching:
        return Batching(size=200)

    async def deliver(self, events: Sequence[Event]) -> Outcome:
        for event in events:
            self._view.add(event.payload())
        if self._stdout is not None:
            return await self._stdout.deliver(events)
        return Delivered()

    async def aclose(self) -> None:
        """Nothing to release."""
