"""The status model in a terminal (``notifier status``): a headline and four rich tables.

Clusters, the top streams, the sinks' lanes (a sink of several partitions: a sub-row per
partition under each lane), the last few events; times relative to the status's own
``generated_at``. Every value that came from Storm or a receiver (stream keys,
viewer ids, errors) is printed as plain text, never read as rich markup.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Final

from rich.table import Table
from rich.text import Text

from notifier.durations import spoken_duration

if TYPE_CHECKING:
    from rich.console import Console

    from notifier.status.model import LastPoll, PartitionLane, Status

__all__ = ["EVENTS_SHOWN", "print_status"]

EVENTS_SHOWN: Final = 10
"""Events the table shows (``--json`` has all of the status's)."""


def print_status(status: Status, console: Console) -> None:
    """Print ``status`` on ``console``."""
    now_ms = _ms(status.generated_at) or 0
    if status.healthy:
        console.print(Text("healthy", style="bold green"), _meta(status))
    else:
        count = len(status.problems)
        headline = f"{count} problem{'s' if count != 1 else ''}"
        console.print(Text(headline, style="bold red"), _meta(status))
    console.print(_clusters(status, now_ms))
    if status.streams:
        console.print(_streams(status, now_ms))
    if status.sinks:
        console.print(_sinks(status, now_ms))
    if status.events:
        console.print(_events(status, now_ms))


def _meta(status: Status) -> Text:
    return Text(f"storm-notifier {status.version}, {status.generated_at}", style="dim")


def _table(title: str, *columns: str, right: tuple[str, ...] = ()) -> Table:
    table = Table(title=title, title_justify="left", title_style="bold", expand=False)
    for column in columns:
        table.add_column(column, justify="right" if column in right else "left")
    return table


def _clusters(status: Status, now_ms: int) -> Table:
    table = _table(
        "Clusters",
        "cluster",
        "health",
        "last poll",
        "viewers",
        "events/min",
        "streams",
        "leader",
        right=("viewers", "events/min", "streams"),
    )
    for cluster in status.clusters:
        health = (
            Text("ok", style="green")
            if cluster.healthy
            else Text(cluster.problem or "unhealthy", style="red")
        )
        table.add_row(
            Text(cluster.name),
            health,
            _last_poll(cluster.last_poll, now_ms),
            f"{cluster.tracked_viewers:,}",
            f"{cluster.events_per_minute:,.1f}",
            f"{cluster.streams:,}",
            Text(cluster.leader or "nobody", style="" if cluster.leader else "yellow"),
        )
    return table


def _last_poll(poll: LastPoll | None, now_ms: int) -> Text:
    if poll is None:
        return Text("never", style="yellow")
    text = Text(f"{_ago(poll.at, now_ms)}, took {poll.duration:.2f}s")
    if not poll.complete:
        text.append(f"\nincomplete: {poll.reason or 'unknown'}", style="red")
    return text


def _streams(status: Status, now_ms: int) -> Table:
    table = _table(
        "Top streams",
        "stream",
        "cluster",
        "viewers",
        "peak",
        "dropped",
        "incident",
        right=("viewers", "peak", "dropped"),
    )
    for stream in status.streams:
        incident = Text("")
        if stream.incident is not None:
            incident = Text(
                f"since {_ago(stream.incident.since, now_ms)}, peak {stream.incident.peak_dropped}"
                f" ({stream.incident.peak_share:.0%})",
                style="red",
            )
        table.add_row(
            Text(stream.stream_key),
            Text(stream.cluster),
            f"{stream.viewers:,}",
            f"{stream.peak_viewers:,}",
            f"{stream.dropped:,} ({stream.dropped_share:.0%})",
            incident,
        )
    return table


def _sinks(status: Status, now_ms: int) -> Table:
    table = _table(
        "Sinks",
        "sink",
        "cluster",
        "state",
        "lag",
        "pending",
        "retrying",
        "dead letters",
        "last delivery",
        "last error",
        right=("lag", "pending", "retrying", "dead letters"),
    )
    for sink in status.sinks:
        for lane in sink.lanes:
            paused = lane.paused or sink.paused
            state = (
                Text(f"paused: {paused}", style="bold red") if paused else Text("ok", style="green")
            )
            error = Text("")
            if lane.last_error is not None:
                when = _ago(lane.last_error_at, now_ms) if lane.last_error_at else ""
                error = Text(f"{lane.last_error} ({when})" if when else lane.last_error)
            table.add_row(
                Text(f"{sink.name} ({sink.type})"),
                Text(lane.cluster),
                state,
                "?" if lane.lag is None else f"{lane.lag:,}",
                f"{lane.pending:,}",
                f"{lane.retrying:,}",
                Text(f"{lane.dead_letters:,}", style="yellow" if lane.dead_letters else ""),
                _ago(lane.last_delivered_at, now_ms) if lane.last_delivered_at else "never",
                error,
            )
            if len(lane.partitions) > 1:
                for part in lane.partitions:
                    table.add_row(*_partition(part, now_ms))
    return table


def _partition(part: PartitionLane, now_ms: int) -> tuple[Text | str, ...]:
    """A sub-row of a lane: the partition, its leader (or why it is paused), lag, pending."""
    if part.paused:
        state = Text(f"paused: {part.paused}", style="red")
    elif part.leader_short:
        state = Text(part.leader_short)
    else:
        state = Text("no leader", style="yellow")
    return (
        Text(f"  partition {part.index}", style="dim"),
        "",
        state,
        "?" if part.lag is None else f"{part.lag:,}",
        f"{part.pending:,}",
        "",
        "",
        _ago(part.last_delivered_at, now_ms) if part.last_delivered_at else "never",
        Text(part.last_error or ""),
    )


def _events(status: Status, now_ms: int) -> Table:
    shown = status.events[:EVENTS_SHOWN]
    table = _table(
        f"Last {len(shown)} events",
        "time",
        "type",
        "cluster",
        "stream",
        "viewer",
        "country",
        "health",
        right=("health",),
    )
    for event in shown:
        table.add_row(
            _ago(event.time, now_ms),
            Text(event.type + (" (initial)" if event.initial else "")),
            Text(event.cluster),
            Text(event.stream_key or ""),
            Text(event.viewer or ""),
            Text(event.country or ""),
            "" if event.health is None else str(event.health),
        )
    return table


def _ms(when: str | None) -> int | None:
    if not when:
        return None
    try:
        return int(datetime.fromisoformat(when).timestamp() * 1000)
    except ValueError:
        return None


def _ago(when: str | None, now_ms: int) -> str:
    ms = _ms(when)
    if ms is None:
        return when or ""
    return f"{spoken_duration(now_ms - ms)} ago"
