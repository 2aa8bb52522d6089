"""Inline SVG for the console: a stream's audience over the last hour, and a level bar.

Pure functions of their inputs (the console passes ``now``), returning markup that needs no
script, no external file and no ``style`` attribute (the page's Content-Security-Policy allows
none): colours come from classes the stylesheet sets, so dark and light themes both work.

The chart spans ``[now - window, now]`` left to right: the last hour, or less while the
history is younger (``chart_window``, one window for every chart of a page, so they compare).
y runs from 0 to the largest audience in the window, so a flat line near the top means a
steady audience. Samples are joined by straight lines; a gap longer than ``GAP`` (a poller
that was down) breaks the line.
"""

from __future__ import annotations

import math
from html import escape
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from notifier.status.model import AudiencePoint

__all__ = [
    "GAP",
    "MIN_WINDOW",
    "WINDOW",
    "audience_chart",
    "chart_window",
    "level_bar",
    "span_label",
]

WINDOW = 3600.0
"""Seconds the chart spans at most: the last hour."""
MIN_WINDOW = 300.0
"""Seconds the chart spans at least, however young the history."""
GAP = 300.0
"""Seconds between two samples past which the line is broken."""

_W, _H = 240.0, 48.0
_PAD = 2.0


def _n(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def chart_window(histories: Iterable[Sequence[AudiencePoint]], *, now_ms: int) -> float:
    """Seconds from the oldest sample of the last hour to ``now_ms``, within the bounds."""
    start_ms = now_ms - WINDOW * 1000
    oldest = min(
        (p.at_ms for points in histories for p in points if p.at_ms >= start_ms),
        default=start_ms,
    )
    return min(WINDOW, max(MIN_WINDOW, (now_ms - oldest) / 1000))


def audience_chart(
    points: Sequence[AudiencePoint],
    *,
    now_ms: int,
    label: str,
    window: float = WINDOW,
) -> str:
    """An ``<svg>`` line and area chart of ``points`` (``[unix_ms, viewers]``, any order).

    ``label`` names the stream for assistive technology; it is escaped here.
    """
    start_ms = now_ms - window * 1000
    shown = sorted((p for p in points if start_ms <= p.at_ms <= now_ms), key=lambda p: p.at_ms)
    peak = max((p.viewers for p in shown), default=0)
    low = min((p.viewers for p in shown), default=0)
    title = (
        f"{label}: no audience samples in the last {span_label(window)}"
        if not shown
        else f"{label}: {low:,} to {peak:,} viewers over the last {span_label(window)}"
    )
    scale = max(peak, 1)

    def xy(point: AudiencePoint) -> tuple[float, float]:
        x = _PAD + (point.at_ms - start_ms) / (window * 1000) * (_W - 2 * _PAD)
        y = _H - _PAD - point.viewers / scale * (_H - 2 * _PAD)
        return x, y

    runs: list[list[tuple[float, float]]] = []
    previous: AudiencePoint | None = None
    for point in shown:
        if previous is None or point.at_ms - previous.at_ms > GAP * 1000:
            runs.append([])
        runs[-1].append(xy(point))
        previous = point
    shapes: list[str] = []
    base = _n(_H - _PAD)
    for run in runs:
        coords = " ".join(f"{_n(x)},{_n(y)}" for x, y in run)
        if len(run) == 1:
            x, y = run[0]
            shapes.append(f'<circle class="dot" cx="{_n(x)}" cy="{_n(y)}" r="2"/>')
            continue
        area = f"{_n(run[0][0])},{base} {coords} {_n(run[-1][0])},{base}"
        shapes.append(f'<polygon class="area" points="{area}"/>')
        shapes.append(f'<polyline class="line" points="{coords}"/>')
    return (
        f'<svg class="chart" viewBox="0 0 {_n(_W)} {_n(_H)}" preserveAspectRatio="none"'
        f' role="img" aria-label="{escape(title)}"><title>{escape(title)}</title>'
        f'<line class="axis" x1="{_n(_PAD)}" y1="{base}" x2="{_n(_W - _PAD)}" y2="{base}"/>'
        + "".join(shapes)
        + "</svg>"
    )


def level_bar(value: int | None, *, level: str, full: int = 10_000) -> str:
    """A small horizontal bar for a backlog: log-scaled so 1, 100 and 10,000 all show.

    ``level`` is the colour class (``ok``, ``warn``, ``bad``); ``full`` fills the bar.
    """
    share = 0.0 if not value else min(1.0, math.log10(value + 1) / math.log10(full + 1))
    width = _n(max(share * 100, 2.0 if value else 0.0))
    return (
        '<svg class="bar" viewBox="0 0 100 6" preserveAspectRatio="none" aria-hidden="true">'
        '<rect class="track" width="100" height="6" rx="3"/>'
        f'<rect class="fill {escape(level)}" width="{width}" height="6" rx="3"/></svg>'
    )


def span_label(window: float) -> str:
    """``hour`` for the full window, else ``12 min``."""
    if window == WINDOW:
        return "hour"
    return f"{max(1, round(window / 60))} min"
