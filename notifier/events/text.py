"""An event as one aligned line for people: ``notifier tail --format text``, the stdout sink's
``format: text`` (examples in ``docs/cli.md``)::

    08:22:40.071  eu-1  viewer.connected         123               v_tnhfdb57dtycrrja  IT  83 …
    08:22:45.071  eu-1  stream.health_degraded   123               viewers 120, dropped 30 of …

Columns: the time of the poll (UTC, ms), the cluster, the type, the stream key; then for a
viewer event the viewer id, its country and its health (score and grade), for a stream event
the figures of its type. A line is built from the named fields only: the viewer record's other
fields (its IP address among them) never appear. Colour is ANSI, on a terminal only
(``wants_color``: not when ``NO_COLOR`` is set). The functions here are pure and never raise on
an event of an unexpected shape: what is missing prints as ``-``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from notifier.durations import spoken_duration

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["TextFormat", "event_line", "wants_color"]

TYPE_WIDTH = 23  # "stream.health_recovered", the longest type
_RESET = "\x1b[0m"
_STYLES = {
    "time": "2",
    "cluster": "34",
    "detail": "2",
    "good": "32",
    "fair": "33",
    "bad": "31",
    "viewer.connected": "32",
    "viewer.disconnected": "33",
    "viewer.health_dropped": "1;31",
    "viewer.health_recovered": "1;32",
    "stream.audience_started": "36",
    "stream.audience_crossed": "35",
    "stream.health_degraded": "1;31",
    "stream.health_recovered": "1;32",
    "stream.audience_ended": "36",
}
"""SGR codes by style name: dim, blue, green, yellow, red (bold for health changes)..."""

Segment = tuple[str, str]
"""A piece of a line and the name of its style ("" for none)."""


class _Terminal(Protocol):
    def isatty(self) -> bool: ...


def wants_color(stream: _Terminal, environ: Mapping[str, str]) -> bool:
    """Colour when ``stream`` is a terminal and ``NO_COLOR`` is not set (no-color.org)."""
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError, OSError):  # closed, or not a real file
        return False
    return tty and not environ.get("NO_COLOR")


@dataclass(frozen=True, slots=True)
class TextFormat:
    """Column widths and colour. ``cluster_width``: the longest cluster name to align on."""

    color: bool = False
    cluster_width: int = 4
    stream_width: int = 16
    viewer_width: int = 18

    def line(self, event: object) -> str:
        """The event (decoded JSON) as one line, without a newline."""
        return render(self.segments(event), color=self.color)

    def segments(self, decoded: object) -> list[Segment]:
        """The line's pieces with their styles (``render`` joins them)."""
        event = _mapping(decoded)
        kind = _text(event.get("type"))
        data = _mapping(event.get("data"))
        stream = _mapping(data.get("stream") if kind.startswith("stream.") else data.get("viewer"))
        head: list[Segment] = [
            (_clock(event.get("time")), "time"),
            ("  ", ""),
            (_text(event.get("cluster")).ljust(self.cluster_width), "cluster"),
            ("  ", ""),
            (kind.ljust(TYPE_WIDTH), kind),
            ("  ", ""),
            (_text(stream.get("streamKey")).ljust(self.stream_width), ""),
            ("  ", ""),
        ]
        if kind.startswith("stream."):
            return [*head, *_stream_figures(kind, data)]
        viewer = _mapping(data.get("viewer"))
        subject = viewer.get("id", event.get("subject"))
        return [
            *head,
            (_text(subject).ljust(self.viewer_width), ""),
            ("  ", ""),
            (_text(viewer.get("countryCode")).ljust(2), ""),
            ("  ", ""),
            *_viewer_health(kind, viewer, data),
        ]


def event_line(event: object, *, color: bool = False) -> str:
    """The event as one line with the default widths."""
    return TextFormat(color=color).line(event)


def render(segments: list[Segment], *, color: bool) -> str:
    """Join the pieces; with ``color``, each styled piece in its ANSI colour."""
    if not color:
        return "".join(text for text, _ in segments).rstrip()
    out = [
        f"\x1b[{_STYLES[style]}m{text}{_RESET}" if style in _STYLES and text.strip() else text
        for text, style in segments
    ]
    return "".join(out).rstrip()


# --- viewer events -----------------------------------------------------------------------------


def _viewer_health(kind: str, viewer: Mapping[str, Any], data: Mapping[str, Any]) -> list[Segment]:
    now = _health(viewer.get("healthScore"), viewer.get("healthGrade"))
    if kind in ("viewer.health_dropped", "viewer.health_recovered"):
        previous = _mapping(data.get("previous"))
        edge = "below" if kind == "viewer.health_dropped" else "at least"
        detail = f"{edge} {_number(data.get('threshold'))}"
        if previous.get("healthScore") is not None or previous.get("healthGrade"):
            was = _health(previous.get("healthScore"), previous.get("healthGrade"))[0]
            detail = f"was {was}, {detail}"
        return [now, ("  " + detail, "detail")]
    if kind == "viewer.disconnected":
        session = _mapping(data.get("session"))
        duration = session.get("durationMs")
        stayed = f"  after {spoken_duration(duration)}" if isinstance(duration, int) else ""
        return [("last ", ""), now, (stayed, "detail")]
    return [now, ("  already watching" if data.get("initial") is True else "", "detail")]


def _health(score: object, grade: object) -> Segment:
    """``83 Very Good`` in green, ``31 Bad`` in red, ``no data`` dim."""
    if grade == "No Data" or (score in (0, None) and grade in (None, "")):
        return "no data", "detail"
    text = f"{_number(score)} {_text(grade)}" if grade else _number(score)
    value = score if isinstance(score, int | float) and not isinstance(score, bool) else None
    style = "" if value is None else "bad" if value < 50 else "fair" if value < 70 else "good"
    return text, style


# --- stream events -----------------------------------------------------------------------------


def _stream_figures(kind: str, data: Mapping[str, Any]) -> list[Segment]:
    viewers = f"viewers {_number(data.get('viewers'))}"
    if kind == "stream.audience_started":
        return [
            (viewers, ""),
            ("  already watching" if data.get("initial") is True else "", "detail"),
        ]
    if kind == "stream.audience_crossed":
        direction = _text(data.get("direction"))
        crossed = f"{direction} through {_number(data.get('threshold'))}"
        return [(viewers, ""), (f", {crossed}, peak {_number(data.get('peakViewers'))}", "detail")]
    if kind in ("stream.health_degraded", "stream.health_recovered"):
        dropped = (
            f"{viewers}, dropped {_number(data.get('dropped'))} of"
            f" {_number(data.get('measured'))} measured ({_percent(data.get('share'))})"
        )
        if kind == "stream.health_degraded":
            return [(dropped, "")]
        incident = _mapping(data.get("incident"))
        lasted = _spoken(incident.get("durationMs"))
        peak = (
            f"peak {_number(incident.get('peakDropped'))} ({_percent(incident.get('peakShare'))})"
        )
        return [(dropped, ""), (f", after {lasted}, {peak}", "detail")]
    if kind == "stream.audience_ended":
        summary = _mapping(data.get("summary"))
        ended = (
            f"lasted {_spoken(summary.get('durationMs'))}, peak"
            f" {_number(summary.get('peakViewers'))}, {_number(summary.get('sessions'))} sessions"
        )
        degraded = summary.get("degradedMs")
        extra = f", degraded {_spoken(degraded)}" if isinstance(degraded, int) and degraded else ""
        extra += ", ended degraded" if summary.get("endedDegraded") is True else ""
        return [(ended, ""), (extra, "detail")]
    return [(viewers, "")] if "viewers" in data else []


# --- values ------------------------------------------------------------------------------------


def _clock(value: object) -> str:
    """``08:22:40.071`` (UTC) from an RFC 3339 time; ``-`` padded when there is none."""
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value).astimezone(UTC)
        except ValueError:
            pass
        else:
            return moment.strftime("%H:%M:%S.") + f"{moment.microsecond // 1000:03d}"
    return "-".ljust(12)


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: object) -> str:
    if value is None or value == "":
        return "-"
    return " ".join(str(value).split())  # one line, whatever the record holds


def _number(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return "-" if value is None or isinstance(value, bool) else _text(value)


def _percent(value: object) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value * 100:.0f}%"
    return "-"


def _spoken(value: object) -> str:
    return spoken_duration(value) if isinstance(value, int) and not isinstance(value, bool) else "-"
