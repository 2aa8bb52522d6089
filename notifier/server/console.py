"""The read-only console at ``/``: a ``Status`` rendered as one server-side HTML page.

``render(status)`` is the whole page and ``render_fragment(status)`` its ``<main>`` content
(what ``GET /?fragment=1`` answers); both are pure functions of the status, so the first
response already shows everything and the page works without script. ``assets/console.js``
swaps in a fresh fragment every few seconds, fetched same-origin: whatever put the
``Authorization`` header on the page request (a reverse proxy, a header extension) puts it on
that fetch too, so the page itself never holds the token.

Every value from the status is escaped (``html.escape``): stream keys and viewer ids come from
the Storm API and are untrusted. The page has a strict Content-Security-Policy (no inline
script or style, nothing from another origin) and carries no IP address and no secret.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from html import escape
from importlib import resources
from typing import TYPE_CHECKING, Final

import structlog
from aiohttp import web

from notifier.durations import spoken_duration
from notifier.errors import NotifierError
from notifier.redis_client import REDIS_ERRORS, redis_reason
from notifier.server.svg import audience_chart, chart_window, level_bar, span_label

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from notifier.status.model import (
        ClusterStatus,
        EventLine,
        PartitionLane,
        SinkLane,
        SinkStatus,
        Status,
        StreamStatus,
    )

__all__ = ["ASSETS", "ConsolePage", "render", "render_fragment", "serve_asset"]

log = structlog.get_logger("notifier.endpoint")

REFRESH_SECONDS: Final = 5
READ_TIMEOUT: Final = 5.0
LAG_WARN: Final = 100
LAG_BAD: Final = 1000

ASSETS: Final = {
    "console.css": "text/css",
    "console.js": "text/javascript",
    "favicon.svg": "image/svg+xml",
}
"""The files under ``notifier/server/assets/`` the endpoint serves, with their types."""

SECURITY_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self';"
        " connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


# --- formatting --------------------------------------------------------------------------------


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _count(value: int | None) -> str:
    return "—" if value is None else f"{value:,}"


def _rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 else f"{value:,.1f}".removesuffix(".0")


def _share(value: float) -> str:
    if 0 < value < 0.01:
        return "<1%"
    return f"{value:.0%}"


def _seconds(value: float) -> str:
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:,.1f} s"


def _ms(iso: str) -> int | None:
    try:
        return int(datetime.fromisoformat(iso).timestamp() * 1000)
    except ValueError:
        return None


def _ago(iso: str | None, now_ms: int) -> str:
    """``<time>`` saying how long ago, the ISO time in its title (the script keeps it current)."""
    if not iso:
        return '<span class="muted">never</span>'
    at = _ms(iso)
    if at is None:
        text = "?"
    elif now_ms - at < 1000:
        text = "just now"
    else:
        text = f"{spoken_duration(now_ms - at)} ago"
    return f'<time datetime="{_e(iso)}" title="{_e(iso)}" data-rel>{_e(text)}</time>'


# --- sections ------------------------------------------------------------------------------------


def _banner(status: Status) -> str:
    if status.healthy:
        return (
            '<section class="banner ok" id="health" data-healthy="true">'
            "<strong>Healthy</strong> every cluster is polled and no sink is paused</section>"
        )
    problems = "".join(f"<li>{_e(p)}</li>" for p in status.problems)
    return (
        '<section class="banner bad" id="health" data-healthy="false">'
        f"<strong>Unhealthy</strong><ul>{problems}</ul></section>"
    )


def _cluster(cluster: ClusterStatus, now_ms: int) -> str:
    poll = cluster.last_poll
    if poll is None:
        last = '<span class="muted">not polled yet</span>'
    else:
        state = (
            '<span class="pill ok">complete</span>'
            if poll.complete
            else f'<span class="pill bad">incomplete</span> {_e(poll.reason or "")}'
        )
        last = f"{_ago(poll.at, now_ms)} · {_seconds(poll.duration)} · {state}"
    leader = (
        f'<span class="mono">{_e(cluster.leader)}</span>'
        if cluster.leader
        else '<span class="pill bad">no leader</span>'
    )
    problem = f'<p class="problem">{_e(cluster.problem)}</p>' if cluster.problem else ""
    health = "ok" if cluster.healthy else "bad"
    return (
        f'<article class="card {health}" data-cluster="{_e(cluster.name)}">'
        f'<header><h3>{_e(cluster.name)}</h3><span class="pill {health}">'
        f"{'polling' if cluster.healthy else 'unhealthy'}</span></header>"
        '<div class="figures">'
        f'<div><span class="big" data-field="tracked_viewers">{_count(cluster.tracked_viewers)}'
        '</span><span class="label">viewers tracked</span></div>'
        f'<div><span class="big" data-field="events_per_minute">{_rate(cluster.events_per_minute)}'
        '</span><span class="label">events / min</span></div>'
        f'<div><span class="big" data-field="streams">{_count(cluster.streams)}</span>'
        '<span class="label">live streams</span></div></div>'
        f"<dl><dt>Last poll</dt><dd>{last}</dd>"
        f"<dt>Last complete</dt><dd>{_ago(cluster.last_complete_at, now_ms)}</dd>"
        f"<dt>Leader</dt><dd>{leader}</dd></dl>{problem}</article>"
    )


def _clusters(status: Status, now_ms: int) -> str:
    cards = "".join(_cluster(c, now_ms) for c in status.clusters)
    return f'<section id="clusters"><h2>Clusters</h2><div class="cards">{cards}</div></section>'


def _stream(stream: StreamStatus, now_ms: int, window: float, several: bool) -> str:
    name = stream.stream_key
    app = (
        f'<span class="sub mono">{_e(stream.application_id)}</span>'
        if stream.application_id
        else ""
    )
    where = f'<span class="sub">{_e(stream.cluster)}</span>' if several else ""
    if stream.incident is None:
        incident = '<span class="muted">none</span>'
    else:
        incident = (
            f'<span class="pill bad">degraded</span> since {_ago(stream.incident.since, now_ms)}'
            f'<span class="sub">peak {_count(stream.incident.peak_dropped)} dropped'
            f" ({_share(stream.incident.peak_share)})</span>"
        )
    share = "bad" if stream.incident else ("warn" if stream.dropped else "ok")
    chart = audience_chart(stream.history, now_ms=now_ms, label=f"stream {name}", window=window)
    return (
        f'<tr data-stream="{_e(name)}"><td data-label="Stream"><span class="mono">{_e(name)}'
        f"</span>{app}{where}</td>"
        f'<td data-label="Viewers" class="num">{_count(stream.viewers)}</td>'
        f'<td data-label="Peak" class="num">{_count(stream.peak_viewers)}</td>'
        f'<td data-label="Dropped" class="num"><span class="{share}">'
        f'{_share(stream.dropped_share)}</span><span class="sub">{_count(stream.dropped)} of '
        f"{_count(stream.measured)}</span></td>"
        f'<td data-label="Incident">{incident}</td>'
        f'<td data-label="Last {span_label(window)}" class="chart-cell">{chart}</td></tr>'
    )


def _streams(status: Status, now_ms: int) -> str:
    if not status.streams:
        body = '<p class="empty">No live audience right now.</p>'
    else:
        several = len({c.name for c in status.clusters}) > 1
        window = chart_window((s.history for s in status.streams), now_ms=now_ms)
        rows = "".join(_stream(s, now_ms, window, several) for s in status.streams)
        body = (
            '<table class="rows"><thead><tr><th>Stream</th><th class="num">Viewers</th>'
            '<th class="num">Peak</th><th class="num">Dropped</th><th>Incident</th>'
            f"<th>Last {span_label(window)}</th></tr></thead><tbody>{rows}</tbody></table>"
        )
    return f'<section id="streams"><h2>Top streams</h2>{body}</section>'


def _lag_level(paused: str | None, lag: int | None, retrying: int = 0) -> str:
    if paused or (lag is not None and lag >= LAG_BAD):
        return "bad"
    if lag is None or lag >= LAG_WARN or retrying:
        return "warn"
    return "ok"


def _lane(sink: SinkStatus, lane: SinkLane | None, now_ms: int, first: bool) -> str:
    head = f'<span class="again">{_e(sink.name)}</span>'
    if first:
        paused = (
            f'<span class="pill bad">paused</span><span class="sub">{_e(sink.paused)}</span>'
            if sink.paused
            else ""
        )
        head = (
            f'<span class="name">{_e(sink.name)}</span> <span class="sub">{_e(sink.type)}</span>'
            f"{paused}"
        )
    attrs = f'data-sink="{_e(sink.name)}"' + (' class="paused"' if sink.paused else "")
    if lane is None:
        return (
            f'<tr {attrs}><td data-label="Sink">{head}</td>'
            '<td colspan="7" class="muted">no cluster stream yet</td></tr>'
        )
    level = _lag_level(sink.paused, lane.lag, lane.retrying)
    error = (
        f'<span class="error">{_e(lane.last_error)}</span>{_ago(lane.last_error_at, now_ms)}'
        if lane.last_error
        else '<span class="muted">none</span>'
    )
    dead = "bad" if lane.dead_letters else ""
    return (
        f'<tr {attrs} data-lane="{_e(lane.cluster)}"><td data-label="Sink">{head}</td>'
        f'<td data-label="Cluster">{_e(lane.cluster)}</td>'
        f'<td data-label="Lag" class="lag {level}">{level_bar(lane.lag, level=level)}'
        f'<span class="num">{_count(lane.lag)}</span></td>'
        f'<td data-label="Pending" class="num">{_count(lane.pending)}</td>'
        f'<td data-label="Retrying" class="num">{_count(lane.retrying)}</td>'
        f'<td data-label="Dead letters" class="num {dead}">{_count(lane.dead_letters)}</td>'
        f'<td data-label="Last delivery">{_ago(lane.last_delivered_at, now_ms)}</td>'
        f'<td data-label="Last error">{error}</td></tr>'
    ) + _partitions(sink, lane, now_ms)


def _partitions(sink: SinkStatus, lane: SinkLane, now_ms: int) -> str:
    """A sub-row per partition under a lane of a sink with several; nothing for one."""
    if len(lane.partitions) < 2:
        return ""
    return "".join(_partition(sink, lane, part, now_ms) for part in lane.partitions)


def _partition(sink: SinkStatus, lane: SinkLane, part: PartitionLane, now_ms: int) -> str:
    level = _lag_level(part.paused, part.lag)
    if part.leader:
        leader = f'<span class="mono" title="{_e(part.leader)}">{_e(part.leader_short)}</span>'
    else:
        leader = '<span class="warn">no leader</span>'
    if part.paused:
        error = f'<span class="pill bad">paused</span><span class="sub">{_e(part.paused)}</span>'
    elif part.last_error:
        error = f'<span class="error">{_e(part.last_error)}</span>'
    else:
        error = '<span class="muted">none</span>'
    return (
        f'<tr class="part" data-sink="{_e(sink.name)}" data-lane="{_e(lane.cluster)}"'
        f' data-partition="{part.index}">'
        f'<td data-label="Partition"><span class="sub">partition {part.index}</span></td>'
        f'<td data-label="Leader">{leader}</td>'
        f'<td data-label="Lag" class="lag {level}">{level_bar(part.lag, level=level)}'
        f'<span class="num">{_count(part.lag)}</span></td>'
        f'<td data-label="Pending" class="num">{_count(part.pending)}</td>'
        '<td class="num"></td><td class="num"></td>'  # retries, dead letters: per sink
        f'<td data-label="Last delivery">{_ago(part.last_delivered_at, now_ms)}</td>'
        f'<td data-label="Last error">{error}</td></tr>'
    )


def _sinks(status: Status, now_ms: int) -> str:
    if not status.sinks:
        body = '<p class="empty">No sinks configured: events wait in the cluster streams.</p>'
    else:
        rows = "".join(
            _lane(sink, lane, now_ms, index == 0)
            for sink in status.sinks
            for index, lane in enumerate(sink.lanes or [None])
        )
        body = (
            '<table class="rows"><thead><tr><th>Sink</th><th>Cluster</th><th>Lag</th>'
            '<th class="num">Pending</th><th class="num">Retrying</th>'
            '<th class="num">Dead letters</th><th>Last delivery</th><th>Last error</th></tr>'
            f"</thead><tbody>{rows}</tbody></table>"
        )
    return f'<section id="sinks"><h2>Sinks</h2>{body}</section>'


def _event(event: EventLine, now_ms: int) -> str:
    kind = event.type.replace(".", "-")
    initial = ' <span class="tag">initial</span>' if event.initial else ""
    health = _count(event.health) if event.health is not None else ""
    return (
        f'<tr data-event="{_e(event.id)}"><td data-label="Time">{_ago(event.time, now_ms)}</td>'
        f'<td data-label="Type"><span class="type {_e(kind)}">{_e(event.type)}</span>{initial}</td>'
        f'<td data-label="Cluster">{_e(event.cluster)}</td>'
        f'<td data-label="Stream" class="mono">{_e(event.stream_key or "")}</td>'
        f'<td data-label="Viewer" class="mono">{_e(event.viewer or "")}</td>'
        f'<td data-label="Country">{_e(event.country or "")}</td>'
        f'<td data-label="Health" class="num">{health}</td></tr>'
    )


def _events(status: Status, now_ms: int) -> str:
    if not status.events:
        body = '<p class="empty">No events yet.</p>'
    else:
        rows = "".join(_event(e, now_ms) for e in status.events)
        body = (
            '<table class="rows events"><thead><tr><th>Time</th><th>Type</th><th>Cluster</th>'
            '<th>Stream</th><th>Viewer</th><th>Country</th><th class="num">Health</th></tr>'
            f"</thead><tbody>{rows}</tbody></table>"
        )
    return f'<section id="events"><h2>Latest events</h2>{body}</section>'


# --- the page ------------------------------------------------------------------------------------


def render_fragment(status: Status) -> str:
    """The content of ``<main>``: everything the status says, times relative to its own."""
    now_ms = _ms(status.generated_at) or 0
    return (
        f'<div class="snapshot" data-generated="{_e(status.generated_at)}">'
        f'<p class="meta">storm-notifier {_e(status.version)} · status of '
        f"{_ago(status.generated_at, now_ms)}</p>"
        + _banner(status)
        + _clusters(status, now_ms)
        + _streams(status, now_ms)
        + _sinks(status, now_ms)
        + _events(status, now_ms)
        + "</div>"
    )


def render(status: Status, *, refresh: int = REFRESH_SECONDS) -> str:
    """The whole HTML page; the script refreshes its ``<main>`` every ``refresh`` seconds."""
    title = "storm-notifier" + ("" if status.healthy else " (unhealthy)")
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="color-scheme" content="light dark">'
        f"<title>{_e(title)}</title>"
        '<link rel="icon" href="assets/favicon.svg" type="image/svg+xml">'
        '<link rel="stylesheet" href="assets/console.css">'
        '<script src="assets/console.js" defer></script></head><body>'
        '<header class="top"><h1>storm-notifier</h1>'
        '<p id="refresh" class="refresh" role="status" aria-live="polite"></p></header>'
        f'<main id="console" data-refresh="{refresh}">{render_fragment(status)}</main>'
        "</body></html>"
    )


def _unavailable(reason: str) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<title>storm-notifier (status unavailable)</title>"
        '<link rel="icon" href="assets/favicon.svg" type="image/svg+xml">'
        '<link rel="stylesheet" href="assets/console.css"></head><body>'
        '<header class="top"><h1>storm-notifier</h1></header><main id="console">'
        '<section class="banner bad" id="health" data-healthy="false">'
        f"<strong>Status unavailable</strong><ul><li>{_e(reason)}</li></ul></section>"
        "</main></body></html>"
    )


class ConsolePage:
    """``GET /`` (the page) and ``GET /?fragment=1`` (its ``<main>``, for the refresh)."""

    def __init__(self, read: Callable[[], Awaitable[Status]], *, timeout: float = READ_TIMEOUT):
        self._read = read
        self._timeout = timeout

    async def handle(self, request: web.Request) -> web.Response:
        """Read the status and answer it as HTML; 503 with the reason when Redis cannot say."""
        fragment = request.query.get("fragment") == "1"
        headers = {**SECURITY_HEADERS, "Cache-Control": "no-store"}
        try:
            async with asyncio.timeout(self._timeout):
                status = await self._read()
        except NotifierError as exc:
            reason = str(exc)
        except REDIS_ERRORS as exc:
            reason = f"redis: unreachable ({redis_reason(exc)})"
        else:
            body = render_fragment(status) if fragment else render(status)
            return web.Response(text=body, content_type="text/html", headers=headers)
        log.debug("endpoint.status_unavailable", reason=reason)
        if fragment:  # the script shows it as text in its status line
            return web.Response(status=503, text=reason, content_type="text/plain", headers=headers)
        return web.Response(
            status=503, text=_unavailable(reason), content_type="text/html", headers=headers
        )


_ASSET_CACHE: dict[str, bytes] = {}


def _asset(name: str) -> bytes:
    if name not in _ASSET_CACHE:
        _ASSET_CACHE[name] = (resources.files("notifier.server") / "assets" / name).read_bytes()
    return _ASSET_CACHE[name]


async def serve_asset(request: web.Request) -> web.Response:
    """``GET /assets/{name}``: the console's stylesheet and script, from the package itself."""
    name = request.match_info["name"]
    if name not in ASSETS:
        raise web.HTTPNotFound
    return web.Response(
        body=_asset(name),
        content_type=ASSETS[name],
        charset="utf-8",
        headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"},
    )
