"""How one event reads in the demo's live view: an icon and a few words.

``icon`` names what happened (``● joined``, ``↗ reached 1,000``); ``detail`` says the rest
in a few words, the most telling first so that a narrow terminal cuts the least useful: a
viewer's stream, health and where it watches from; a stream's figures. Only what the event
knows is shown: a health drop seen on a viewer's first poll has no score before it, so it
reads ``47 Average``, not ``? → 47``. ``LABELS`` names the counters, in the order of
``ICONS``.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text

from notifier.durations import spoken_duration

__all__ = ["ICONS", "LABELS", "count", "detail", "icon"]

ICONS = {
    "viewer.connected": "[green]● joined[/]",
    "viewer.disconnected": "[bright_black]○ left[/]",
    "viewer.health_dropped": "[red]▼ health dropped[/]",
    "viewer.health_recovered": "[yellow]▲ recovered[/]",
    "stream.audience_started": "[cyan]▶ stream started[/]",
    "stream.audience_crossed": "[cyan]↕ crossed[/]",
    "stream.health_degraded": "[bold red]✖ degraded[/]",
    "stream.health_recovered": "[bold green]✔ stream healthy[/]",
    "stream.audience_ended": "[bright_black]■ stream ended[/]",
}
LABELS = {
    "viewer.connected": "joined",
    "viewer.disconnected": "left",
    "viewer.health_dropped": "health dropped",
    "viewer.health_recovered": "recovered",
    "stream.audience_started": "audience started",
    "stream.audience_crossed": "threshold crossed",
    "stream.health_degraded": "stream degraded",
    "stream.health_recovered": "stream recovered",
    "stream.audience_ended": "audience ended",
}


def icon(event: dict[str, Any]) -> Text:
    """What happened, as a short styled label."""
    kind = str(event.get("type"))
    data = event.get("data") or {}
    if kind == "stream.audience_crossed":
        down = data.get("direction") == "down"
        arrow = "↘ below" if down else "↗ reached"
        return Text(f"{arrow} {count(data.get('threshold'))}", style="cyan")
    if kind == "stream.audience_ended" and (data.get("summary") or {}).get("endedDegraded"):
        return Text("■ ended degraded", style="red")
    return Text.from_markup(ICONS[kind]) if kind in ICONS else Text(kind)


def detail(event: dict[str, Any]) -> str:
    """The rest in a few words: a viewer's stream, health, country and device; a stream's
    figures."""
    data: dict[str, Any] = event.get("data") or {}
    if "viewer" not in data:
        return _figures(str(event.get("type")), data)
    viewer = data["viewer"]
    where = f"{viewer.get('countryCode') or ''} {str(viewer.get('deviceType') or '').lower()}"
    parts = (str(viewer.get("streamKey") or ""), _health(data), where.strip())
    return " · ".join(part for part in parts if part)


def count(value: object) -> str:
    """A whole number with thousands separators; ``?`` for anything else."""
    return f"{value:,}" if isinstance(value, int) else "?"


def _figures(kind: str, data: dict[str, Any]) -> str:
    """A stream event's figures, short enough for the feed of an 80-column terminal."""
    share = data.get("share")
    dropped = f"{share:.0%} dropped" if isinstance(share, int | float) else "dropped"
    lasted = (data.get("incident") or data.get("summary") or {}).get("durationMs")
    after = f"after {spoken_duration(lasted)}" if isinstance(lasted, int) else ""
    if kind == "stream.audience_started":
        return _viewers(data.get("viewers")) + (" (already live)" if data.get("initial") else "")
    if kind == "stream.audience_crossed":
        return f"{_viewers(data.get('viewers'))}, peak {count(data.get('peakViewers'))}"
    if kind == "stream.health_degraded":
        return f"{dropped} ({count(data.get('dropped'))}/{count(data.get('measured'))})"
    if kind == "stream.health_recovered":
        return f"{dropped} {after}".strip()
    if kind == "stream.audience_ended":
        peak = (data.get("summary") or {}).get("peakViewers")
        return ", ".join(part for part in (after, f"peak {count(peak)}" if peak else "") if part)
    return ""


def _viewers(value: object) -> str:
    return "1 viewer" if value == 1 else f"{count(value)} viewers"


def _health(data: dict[str, Any]) -> str:
    """``88 → 47 Average`` after a change from a known score, else ``47 Average``."""
    viewer = data["viewer"]
    score = viewer.get("healthScore")
    now = f"{'' if score is None else score} {viewer.get('healthGrade') or ''}".strip()
    before = (data.get("previous") or {}).get("healthScore")
    if not isinstance(before, int | float) or not now:
        return now
    return f"{before:g} → {now}"
