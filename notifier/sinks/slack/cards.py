"""Stream events (SPEC 4.1) as Slack "cards": one section each, at the top of a message.

A card says which stream and what happened in its first line, where and when in its second,
then the figures; a degradation adds its breakdown as an aligned table in a code block (only
the newest degradation of a message, so that a flapping stream does not repeat tables)::

    🚨 *live-1 degraded*: 27% of 11,000 viewers dropped (2,970)
    `c_41pjso2krv6sk1wj / live-1` · 08:22:40 UTC
    11,000 viewers · 11,000 measured · 2,970 dropped (27%)
    ```
    country           viewers  dropped
    PL                  6,000    2,100
    (none)              2,000      270

    harness           viewers  dropped
    STORM_HLS_VIEWER    7,000    2,500
    ```

Durations read "2 h 5 min", counts "11,000", shares "27%". Every value is taken as untrusted
(``text``): a missing or malformed figure is left out, a card is never empty, and its length is
bounded whatever the event holds (at most ``MAX_ROWS`` rows of ``MAX_CELL`` characters a table).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from notifier.events import STREAM_EVENT_TYPES
from notifier.sinks.slack.text import (
    clean,
    count,
    escape,
    mapping,
    moment,
    percent,
    span,
    value,
    whole,
)

if TYPE_CHECKING:
    from collections.abc import Mapping
    from datetime import datetime

__all__ = [
    "DEGRADED",
    "MAX_CELL",
    "MAX_ROWS",
    "STREAM_LABELS",
    "Card",
    "card",
    "is_stream_event",
]

STREAM_LABELS: Final[dict[str, str]] = dict(
    zip(
        STREAM_EVENT_TYPES,
        ("audience started", "threshold crossed", "degraded", "recovered", "audience ended"),
        strict=True,
    )
)
"""What each stream type is called where events are counted ("…and 3 more stream events")."""

MAX_ROWS: Final = 5  # rows of a breakdown table, per attribute (what the rules emit at most)
MAX_CELL: Final = 18  # characters of a breakdown value
_ATTRIBUTES: Final = (
    ("countryCode", "country"),
    ("harnessType", "harness"),
    ("deviceType", "device"),
)
DEGRADED: Final = "stream.health_degraded"
_RECOVERED: Final = "stream.health_recovered"


@dataclass(frozen=True, slots=True)
class Card:
    """One stream event, rendered: all escaped, ready for Slack."""

    key: str  # the streamKey, as shown
    summary: str  # what happened, no mrkdwn: "degraded: 27% of 11,000 viewers dropped (2,970)"
    text: str  # the section's mrkdwn: headline, where and when, figures, table
    short: str  # the headline and where and when only, for when the whole does not fit


def is_stream_event(event: Mapping[str, Any]) -> bool:
    """A stream event, one of today's types or a later one (``stream.*``)."""
    kind = mapping(event).get("type")
    return isinstance(kind, str) and kind.startswith("stream.")


def card(event: Mapping[str, Any], stream_key: object = None, *, table: bool = True) -> Card:
    """The card of one stream event; ``stream_key`` names the stream if the event does not.

    ``table``: a degradation's card shows its breakdown (a message shows only its newest).
    """
    event = mapping(event)
    data = mapping(event.get("data"))
    stream = mapping(data.get("stream"))
    key = (
        value(stream.get("streamKey"))
        or value(event.get("subject"))
        or value(stream_key)
        or "a stream"
    )
    app = value(stream.get("applicationId"))
    at = moment(event.get("time"))
    emoji, title, detail = _what(event.get("type"), data)
    headline = f"{emoji} *{key} {title}*" + (f": {detail}" if detail else "")
    where = _join(f"`{app} / {key}`" if app else f"`{key}`", _clock(at, at))
    lines = [headline, where, *_figures(event.get("type"), data, at)]
    rows = _table(data.get("breakdown")) if table and event.get("type") == DEGRADED else ""
    text = "\n".join(lines) + (f"\n```\n{rows}\n```" if rows else "")
    summary = title + (f": {detail}" if detail else "")
    return Card(key=key, summary=summary, text=text, short=f"{headline}\n{where}")


def _what(kind: object, data: Mapping[str, Any]) -> tuple[str, str, str]:
    """The emoji, what happened ("degraded", "reached 1,000 viewers") and its detail."""
    viewers = count(data.get("viewers"))
    if kind == "stream.audience_started":
        detail = _viewers(data.get("viewers"))
        if data.get("initial") is True:
            detail = f"{detail} (already live when the notifier started)".lstrip()
        return "▶️", "audience started", detail
    if kind == "stream.audience_crossed":
        threshold, peak = count(data.get("threshold")), count(data.get("peakViewers"))
        down = data.get("direction") == "down"
        if not threshold:
            title = "crossed a threshold"
        else:
            title = f"fell below {threshold} viewers" if down else f"reached {threshold} viewers"
        parts = [f"{viewers} now" if viewers else "", f"peak {peak}" if peak else ""]
        return "📉" if down else "📈", title, ", ".join(part for part in parts if part)
    if kind == DEGRADED:
        return "🚨", "degraded", _dropped(data)
    if kind == _RECOVERED:
        lasted = span(mapping(data.get("incident")).get("durationMs"))
        return "✅", f"recovered after {lasted}" if lasted else "recovered", _dropped(data)
    if kind == "stream.audience_ended":
        summary = mapping(data.get("summary"))
        title = "audience ended"
        if summary.get("endedDegraded") is True:
            title += " while degraded"
        lasted = span(summary.get("durationMs"))
        if lasted:
            title += f" after {lasted}"
        peak = _viewers(summary.get("peakViewers"))
        return "⏹️", title, f"peak {peak}" if peak else ""
    return "🔹", value(kind) or "stream event", ""


def _dropped(data: Mapping[str, Any]) -> str:
    """ "27% of 11,000 viewers dropped (2,970)", or of the measured ones when fewer."""
    share, dropped = percent(data.get("share")), count(data.get("dropped"))
    measured, viewers = whole(data.get("measured")), whole(data.get("viewers"))
    if measured is None:
        base = ""
    elif measured == viewers:
        base = f" of {_viewers(measured)}"
    else:
        base = f" of {measured:,} measured viewers"
    if not share:
        return f"{dropped} dropped{base}" if dropped else ""
    return f"{share}{base} dropped" + (f" ({dropped})" if dropped else "")


def _figures(kind: object, data: Mapping[str, Any], at: datetime | None) -> list[str]:
    """The lines after the headline: counts, the incident, the audience's summary."""
    lines: list[str] = []
    if kind in (DEGRADED, _RECOVERED):
        measured, dropped, share = (
            count(data.get("measured")),
            count(data.get("dropped")),
            percent(data.get("share")),
        )
        lines.append(
            _join(
                _viewers(data.get("viewers")),
                f"{measured} measured" if measured else "",
                f"{dropped} dropped" + (f" ({share})" if share else "") if dropped else "",
            )
        )
    if kind == _RECOVERED:
        incident = mapping(data.get("incident"))
        since = _clock(moment(incident.get("since")), at)
        peak, peak_share = count(incident.get("peakDropped")), percent(incident.get("peakShare"))
        told = _join(  # how long it lasted is in the headline
            f"since {since}" if since else "",
            f"peak {peak} dropped" + (f" ({peak_share})" if peak_share else "") if peak else "",
        )
        lines.append(f"Incident: {told}" if told else "")
    if kind == "stream.audience_ended":
        summary = mapping(data.get("summary"))
        started = _clock(moment(summary.get("startedAt")), at)
        peak, peak_at = count(summary.get("peakViewers")), _clock(moment(summary.get("peakAt")), at)
        sessions = whole(summary.get("sessions"))
        degraded = span(summary.get("degradedMs")) if whole(summary.get("degradedMs")) else ""
        lines.append(
            _join(
                f"Started {started}" if started else "",
                f"peak {peak}" + (f" at {peak_at}" if peak_at else "") if peak else "",
                f"{sessions:,} sessions" if sessions is not None else "",
                f"degraded {degraded} in all" if degraded else "",
            )
        )
    return [line for line in lines if line]


def _join(*parts: str) -> str:
    return " · ".join(part for part in parts if part)


def _viewers(raw: object) -> str:
    """ "1 viewer", "11,000 viewers"; "" when not a count."""
    n = whole(raw)
    if n is None:
        return ""
    return "1 viewer" if n == 1 else f"{n:,} viewers"


def _clock(when: datetime | None, ref: datetime | None) -> str:
    """ "08:22:40 UTC", with the date too when it is not that of ``ref`` (the event's time)."""
    if when is None:
        return ""
    same_day = ref is not None and when.date() == ref.date()
    return when.strftime("%H:%M:%S UTC" if same_day else "%Y-%m-%d %H:%M:%S UTC")


def _table(raw: object) -> str:
    """The breakdown as aligned columns, one small table an attribute; "" when it has no rows."""
    breakdown = mapping(raw)
    tables: list[tuple[str, list[tuple[str, str, str]]]] = []
    for key, label in _ATTRIBUTES:
        rows = breakdown.get(key)
        if not isinstance(rows, list):
            continue
        cells = [_row(mapping(row)) for row in rows[:MAX_ROWS] if isinstance(row, dict)]
        if cells:
            tables.append((label, cells))
    if not tables:
        return ""
    every = [cell for _, cells in tables for cell in cells]
    first = max(len(label) for label, _ in tables)
    first = max([first, *(len(name) for name, _, _ in every)])
    second = max([len("viewers"), *(len(v) for _, v, _ in every)])
    third = max([len("dropped"), *(len(d) for _, _, d in every)])
    blocks = []
    for label, cells in tables:
        lines = [f"{label:<{first}}  {'viewers':>{second}}  {'dropped':>{third}}"]
        lines += [f"{n:<{first}}  {v:>{second}}  {d:>{third}}" for n, v, d in cells]
        blocks.append("\n".join(lines))
    return escape("\n\n".join(blocks))


def _row(row: Mapping[str, Any]) -> tuple[str, str, str]:
    """A breakdown row's cells, unescaped: the value cut to ``MAX_CELL``, the two counts."""
    name = clean(row.get("value")) or "(none)"
    if len(name) > MAX_CELL:
        name = name[: MAX_CELL - 1].rstrip() + "…"
    return name, count(row.get("viewers")) or "?", count(row.get("dropped")) or "?"
