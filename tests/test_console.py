"""The console at / and server.auth_token: rendering, escaping, charts, the token check."""

from __future__ import annotations

import hashlib
import hmac
import re
import subprocess
import sys
import zipfile
from datetime import UTC, datetime
from html import escape
from html.parser import HTMLParser
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import msgspec
import pytest
import structlog.testing
from aiohttp.test_utils import TestServer

from notifier.config import Settings, settings_from_text
from notifier.errors import ConfigError
from notifier.metrics import Metrics
from notifier.server.auth import refusal
from notifier.server.console import ASSETS, render, render_fragment
from notifier.server.endpoint import Endpoint
from notifier.server.settings import ServerSettings, is_loopback
from notifier.server.svg import audience_chart, chart_window, level_bar
from notifier.status.model import (
    AudiencePoint,
    ClusterStatus,
    EventLine,
    Incident,
    LastPoll,
    PartitionLane,
    SinkLane,
    SinkStatus,
    Status,
    StreamStatus,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from redis.asyncio import Redis

    from testkit.redis_procs import RedisServer

ROOT = Path(__file__).resolve().parent.parent
NOW = 1_770_000_000_000
TOKEN = "console-t0ken-5f1c2a9e"
HOSTILE_KEY = '<script>alert("key")</script>'
HOSTILE_VIEWER = '"><img src=x onerror=alert(1)>'
CLUSTER_YAML = "clusters: [{name: eu-1, base_url: 'http://127.0.0.1:9', auth: {token: t}}]\n"


def iso(ms: int) -> str:
    """RFC 3339 in UTC with milliseconds, as the status model writes times."""
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def lane(cluster: str = "eu-1", **overrides: Any) -> SinkLane:
    """A sink lane with nothing wrong, changed by ``overrides``."""
    values: dict[str, Any] = {
        "cluster": cluster,
        "lag": 0,
        "pending": 0,
        "retrying": 0,
        "dead_letters": 0,
        "last_error": None,
        "last_error_at": None,
        "last_delivered_at": iso(NOW - 1000),
    }
    return SinkLane(**(values | overrides))


def sample_status(**overrides: Any) -> Status:
    """A status with one of everything: two clusters, a degraded stream, a paused sink."""
    history = [AudiencePoint(NOW - 3_600_000 + i * 60_000, 900 + i) for i in range(61)]
    values: dict[str, Any] = {
        "generated_at": iso(NOW),
        "version": "0.1.0",
        "healthy": False,
        "problems": ["sink hooks: paused: 410 Gone", "cluster us-2: not polled yet"],
        "clusters": [
            ClusterStatus(
                name="eu-1",
                leader="web-3-4242-ab12cd34",
                last_poll=LastPoll(at=iso(NOW - 12_000), duration=0.213, complete=True, events=3),
                last_complete_at=iso(NOW - 12_000),
                tracked_viewers=12_345,
                events_per_minute=143.2,
                streams=7,
                healthy=True,
            ),
            ClusterStatus(
                name="us-2",
                leader=None,
                last_poll=LastPoll(
                    at=iso(NOW - 64_000),
                    duration=15.0,
                    complete=False,
                    reason="storm: connection refused",
                ),
                last_complete_at=None,
                tracked_viewers=0,
                events_per_minute=0.0,
                streams=0,
                healthy=False,
                problem="cluster us-2: not polled yet: storm: connection refused",
            ),
        ],
        "streams": [
            StreamStatus(
                cluster="eu-1",
                application_id="c_app",
                stream_key=HOSTILE_KEY,
                viewers=1_023,
                peak_viewers=1_200,
                dropped=40,
                measured=900,
                dropped_share=40 / 900,
                incident=Incident(since=iso(NOW - 300_000), peak_dropped=60, peak_share=0.31),
                history=history,
            )
        ],
        "sinks": [
            SinkStatus(
                name="hooks",
                type="webhook",
                paused="410 Gone",
                lanes=[
                    lane(lag=2_345, pending=10, retrying=3, dead_letters=2, last_error="410 Gone"),
                    lane("us-2"),
                ],
            ),
            SinkStatus(name="ops", type="slack", paused=None, lanes=[lane(lag=3)]),
        ],
        "events": [
            EventLine(
                cluster="eu-1",
                id="0b6c0f0e-1",
                type="viewer.health_dropped",
                time=iso(NOW - 2_000),
                stream_key=HOSTILE_KEY,
                viewer=HOSTILE_VIEWER,
                country="DE",
                health=42,
                initial=False,
            ),
            EventLine(
                cluster="eu-1",
                id="0b6c0f0e-2",
                type="stream.audience_started",
                time=iso(NOW - 90_000),
                stream_key="live",
                viewer=None,
                country=None,
                health=None,
                initial=True,
            ),
        ],
    }
    return Status(**(values | overrides))


class Tags(HTMLParser):
    """Every start tag of a document, with its attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def tags_of(html: str) -> list[tuple[str, dict[str, str | None]]]:
    """The start tags of ``html``."""
    parser = Tags()
    parser.feed(html)
    return parser.tags


# --- rendering ---------------------------------------------------------------------------------


def test_page_shows_clusters_with_formatted_numbers_and_relative_times() -> None:
    """Cluster cards carry the name, 12,345 tracked viewers, events/min, the leader and the
    last poll as "12 s ago" with the ISO time in a title; an incomplete poll shows its reason."""
    page = render(sample_status())
    assert 'data-cluster="eu-1"' in page
    assert '<span class="big" data-field="tracked_viewers">12,345</span>' in page
    assert ">143</span>" in page
    assert "web-3-4242-ab12cd34" in page
    assert f'title="{iso(NOW - 12_000)}" data-rel>12 s ago</time>' in page
    assert "213 ms" in page
    assert "incomplete</span> storm: connection refused" in page
    assert "1 min 4 s ago" in page


def test_banner_lists_every_problem_or_says_healthy() -> None:
    """Unhealthy: a red banner with one item a problem; healthy: a green one saying so."""
    page = render(sample_status())
    assert 'id="health" data-healthy="false"' in page
    assert "<li>sink hooks: paused: 410 Gone</li>" in page
    assert "<li>cluster us-2: not polled yet</li>" in page
    assert "<title>storm-notifier (unhealthy)</title>" in page
    healthy = render(sample_status(healthy=True, problems=[]))
    assert 'data-healthy="true"' in healthy
    assert "every cluster is polled and no sink is paused" in healthy


def test_untrusted_values_are_escaped_everywhere() -> None:
    """Stream keys and viewer ids from the Storm API cannot add an element or an attribute."""
    page = render(sample_status())
    assert HOSTILE_KEY not in page
    assert HOSTILE_VIEWER not in page
    assert "&lt;script&gt;alert(&quot;key&quot;)&lt;/script&gt;" in page
    tags = tags_of(page)
    assert not [t for t, _ in tags if t == "img"]
    scripts = [attrs for tag, attrs in tags if tag == "script"]
    assert scripts == [{"src": "assets/console.js", "defer": None}]
    assert not [a for _, attrs in tags for a in attrs if a.startswith("on")]


def test_page_has_no_inline_style_or_script_and_no_other_origin() -> None:
    """The strict CSP holds: no style attribute, no inline script, only relative asset URLs."""
    page = render(sample_status())
    for tag, attrs in tags_of(page):
        assert "style" not in attrs, tag
        for name in ("src", "href"):
            value = attrs.get(name)
            assert value is None or value.startswith("assets/"), (tag, value)
    assert "http://" not in page
    assert "https://" not in page


def test_streams_show_viewers_peak_share_incident_and_a_chart() -> None:
    """A top stream shows 1,023 viewers, peak 1,200, 4% dropped (40 of 900), the open incident
    with its peak, and an SVG chart over the last hour."""
    fragment = render_fragment(sample_status())
    row = fragment[
        fragment.index("<tr data-stream=") : fragment.index(
            "</tr>", fragment.index("<tr data-stream=")
        )
    ]
    assert ">1,023<" in row
    assert ">1,200<" in row
    assert "4%" in row
    assert "40 of 900" in row
    assert "degraded</span> since" in row
    assert "peak 60 dropped (31%)" in row
    assert '<svg class="chart"' in row
    assert "900 to 960 viewers over the last hour" in row


def test_sinks_show_lanes_lag_at_a_glance_and_the_pause() -> None:
    """Each lane is a row with lag bar, pending, retrying, dead letters and the last error; a
    paused sink says why and its bar is red; a small lag is green."""
    fragment = render_fragment(sample_status())
    assert fragment.count('data-sink="hooks"') == 2
    assert 'data-sink="hooks" class="paused" data-lane="eu-1"' in fragment
    assert '<span class="pill bad">paused</span><span class="sub">410 Gone</span>' in fragment
    assert 'class="lag bad"><svg class="bar"' in fragment
    assert ">2,345</span>" in fragment
    assert '<span class="error">410 Gone</span>' in fragment
    ops = fragment[fragment.index('data-sink="ops"') :]
    assert 'class="lag ok"' in ops


def partitioned_status() -> Status:
    """The sample status with a sink of three partitions: one led, one paused by a hostile
    reason, one nobody leads with a hostile error."""
    parts = [
        PartitionLane(
            index=0,
            lag=12,
            pending=4,
            leader="web-3-4242-ab12cd34",
            last_delivered_at=iso(NOW - 3000),
            last_error=None,
        ),
        PartitionLane(
            index=1,
            lag=1_500,
            pending=0,
            leader=HOSTILE_VIEWER,
            last_delivered_at=None,
            last_error=HOSTILE_KEY,
            paused=HOSTILE_KEY,
        ),
        PartitionLane(
            index=2,
            lag=None,
            pending=0,
            leader=None,
            last_delivered_at=None,
            last_error=HOSTILE_KEY,
        ),
    ]
    sink = SinkStatus(
        name="split",
        type="webhook",
        paused=HOSTILE_KEY,
        lanes=[lane(lag=1_500, pending=4, paused=HOSTILE_KEY, partitions=parts)],
    )
    return sample_status(sinks=[*sample_status().sinks, sink])


def test_a_lane_of_several_partitions_has_a_row_per_partition() -> None:
    """Under a lane of three, a sub-row per partition: its index, the leader's short id (the
    whole id in its title), lag with its bar, pending; nobody leading says so."""
    fragment = render_fragment(partitioned_status())
    rows = re.findall(r'<tr class="part" data-sink="split" data-lane="eu-1" data-partition="(\d)"'
                      r"(.*?)</tr>", fragment)  # fmt: skip
    assert [index for index, _ in rows] == ["0", "1", "2"]
    first, second, third = (row for _, row in rows)
    assert "partition 0" in first
    assert '<span class="mono" title="web-3-4242-ab12cd34">web-3-4242</span>' in first
    assert 'class="lag ok"' in first
    assert ">12</span>" in first
    assert '<td data-label="Pending" class="num">4</td>' in first
    assert 'class="lag bad"' in second
    assert '<span class="pill bad">paused</span>' in second
    assert ">1,500</span>" in second
    assert '<span class="warn">no leader</span>' in third
    assert 'class="lag warn"' in third
    assert ">—</span>" in third


def test_partition_rows_are_escaped_and_keep_the_csp() -> None:
    """A leader id, pause reason or error that looks like markup stays text; no inline style."""
    page = render(partitioned_status())
    assert HOSTILE_KEY not in page
    assert HOSTILE_VIEWER not in page
    assert f'title="{escape(HOSTILE_VIEWER)}"' in page
    tags = tags_of(page)
    assert not [t for t, _ in tags if t == "img"]
    assert [attrs for tag, attrs in tags if tag == "script"] == [
        {"src": "assets/console.js", "defer": None}
    ]
    for tag, attrs in tags:
        assert "style" not in attrs, tag
        assert not [a for a in attrs if a.startswith("on")], tag


def test_a_lane_of_one_partition_renders_as_before() -> None:
    """K = 1: the lane's one partition adds no row; the page is that of a lane without it."""
    one = PartitionLane(
        index=0, lag=3, pending=0, leader="web-3-4242-ab12cd34", last_delivered_at=None,
        last_error=None,
    )  # fmt: skip
    plain = sample_status(sinks=[SinkStatus(name="ops", type="slack", paused=None, lanes=[lane()])])
    single = sample_status(
        sinks=[SinkStatus(name="ops", type="slack", paused=None, lanes=[lane(partitions=[one])])]
    )
    assert render_fragment(single) == render_fragment(plain)
    assert "data-partition" not in render_fragment(single)


def test_events_show_type_time_stream_viewer_country_health() -> None:
    """The last events: type, relative time, stream, viewer id, country, health; initial ones
    are tagged."""
    fragment = render_fragment(sample_status())
    assert '<span class="type viewer-health_dropped">viewer.health_dropped</span>' in fragment
    assert ">2 s ago</time>" in fragment
    assert '<td data-label="Country">DE</td>' in fragment
    assert '<td data-label="Health" class="num">42</td>' in fragment
    assert '<span class="tag">initial</span>' in fragment


def test_empty_sections_say_so() -> None:
    """No streams, sinks or events: each section says so instead of an empty table."""
    fragment = render_fragment(sample_status(streams=[], sinks=[], events=[]))
    assert "No live audience right now." in fragment
    assert "No sinks configured" in fragment
    assert "No events yet." in fragment


def test_fragment_is_the_main_of_the_page() -> None:
    """What the refresh swaps in is exactly the page's <main> content."""
    status = sample_status()
    page = render(status)
    assert f'<main id="console" data-refresh="5">{render_fragment(status)}</main>' in page


def test_chart_spans_the_last_hour_and_breaks_at_gaps() -> None:
    """Points older than an hour are left out, x grows with time, and a gap of more than five
    minutes starts a new line."""
    points = [
        AudiencePoint(NOW - 7_200_000, 5_000),  # two hours ago: outside
        AudiencePoint(NOW - 3_000_000, 10),
        AudiencePoint(NOW - 2_940_000, 20),
        AudiencePoint(NOW - 120_000, 40),  # 47 minutes later: a new run
        AudiencePoint(NOW, 30),
    ]
    svg = audience_chart(points, now_ms=NOW, label="stream <k>")
    assert svg.count('class="line"') == 2
    assert "10 to 40 viewers" in svg
    assert "&lt;k&gt;" in svg
    assert "<k>" not in svg
    lines = re.findall(r'class="line" points="([^"]+)"', svg)
    xs = [float(pair.split(",")[0]) for line in lines for pair in line.split()]
    assert xs == sorted(xs)
    assert max(xs) == pytest.approx(238.0)
    single = audience_chart([AudiencePoint(NOW - 1000, 3)], now_ms=NOW, label="s")
    assert 'class="dot"' in single
    empty = audience_chart([], now_ms=NOW, label="s")
    assert "no audience samples" in empty


def test_a_young_history_fills_the_chart_and_the_heading_says_how_long() -> None:
    """Ten minutes of samples span the whole chart ("Last 10 min"); an hour or more is "Last
    hour", as is no sample in the hour; a few seconds still span five minutes."""
    young = [AudiencePoint(NOW - 600_000 + i * 20_000, 50) for i in range(31)]
    assert chart_window([young], now_ms=NOW) == 600
    assert chart_window([[AudiencePoint(NOW - 5_000, 1)]], now_ms=NOW) == 300
    assert chart_window([[AudiencePoint(NOW - 7_200_000, 1)]], now_ms=NOW) == 3600
    stream = sample_status().streams[0]
    fragment = render_fragment(
        sample_status(streams=[msgspec.structs.replace(stream, history=young)])
    )
    assert "<th>Last 10 min</th>" in fragment
    lines = re.findall(r'class="line" points="([^"]+)"', fragment)
    assert float(lines[0].split()[0].split(",")[0]) == pytest.approx(2.0)
    assert "<th>Last hour</th>" in render_fragment(sample_status())


def test_level_bar_is_log_scaled() -> None:
    """0 shows no fill, 1 a sliver, 10,000 or more a full bar."""

    def width(svg: str) -> float:
        return float(re.findall(r'class="fill [a-z]+" width="([0-9.]+)"', svg)[0])

    assert width(level_bar(0, level="ok")) == 0
    assert 0 < width(level_bar(1, level="ok")) < 20
    assert 40 < width(level_bar(100, level="warn")) < 60
    assert width(level_bar(10_000, level="bad")) == 100
    assert width(level_bar(10**9, level="bad")) == 100
    assert width(level_bar(None, level="warn")) == 0


# --- server.auth_token -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("LOCALHOST", True),
        ("0.0.0.0", False),
        ("::", False),
        ("[::]", False),
        ("10.1.2.3", False),
        ("notifier.internal", False),
    ],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    """127.0.0.0/8, ::1 and localhost are loopback; wildcards, other addresses and names not."""
    assert is_loopback(host) is loopback


def test_listen_off_loopback_without_a_token_is_a_config_error() -> None:
    """0.0.0.0 without server.auth_token: one line naming the key; with a token it loads."""
    with pytest.raises(ConfigError) as info:
        settings_from_text(CLUSTER_YAML + "server: {listen: '0.0.0.0:9464'}\n", {}, source="n.yaml")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("n.yaml: server: listen 0.0.0.0:9464 is not a loopback address")
    assert "server.auth_token" in message
    with pytest.raises(ConfigError, match=r"server\.auth_token"):
        settings_from_text(CLUSTER_YAML, {"NOTIFIER_SERVER__LISTEN": "[::]:80"}, source="n.yaml")
    settings = settings_from_text(
        CLUSTER_YAML + f"server: {{listen: '0.0.0.0:9464', auth_token: '{TOKEN}'}}\n",
        {},
        source="n.yaml",
    )
    assert settings.server.auth_token is not None
    assert settings.server.auth_token.get_secret_value() == TOKEN
    assert ServerSettings(listen="[::1]:9464").auth_token is None


def test_a_token_that_cannot_travel_in_a_header_is_refused_without_echo() -> None:
    """A token with a space or an empty one is an error that does not repeat it."""
    for bad in ("two words-0f-secret", ""):
        with pytest.raises(ConfigError) as info:
            settings_from_text(
                CLUSTER_YAML + f"server: {{auth_token: '{bad}'}}\n", {}, source="n.yaml"
            )
        assert "server.auth_token: must be printable ASCII" in str(info.value)
        assert not bad or bad not in str(info.value)


def test_cli_exits_2_naming_server_auth_token_and_masks_the_token(tmp_path: Path) -> None:
    """`notifier check-config` on a public listen without a token: exit 2, one line on stderr;
    with the token, its output never shows it."""
    config = tmp_path / "notifier.yaml"
    config.write_text(CLUSTER_YAML + "server: {listen: '0.0.0.0:9464'}\n")
    command = [
        sys.executable,
        "-m",
        "notifier",
        "check-config",
        "--offline",
        "--config",
        str(config),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "server.auth_token" in result.stderr
    config.write_text(CLUSTER_YAML + f"server: {{listen: '0.0.0.0:9464', auth_token: {TOKEN}}}\n")
    result = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    assert "auth_token" in result.stdout
    assert TOKEN not in result.stdout + result.stderr


def test_the_token_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every presented token, whatever its length, is compared with hmac.compare_digest as two
    32-byte digests: neither content nor length shows in the timing."""
    seen: list[tuple[int, int]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        assert isinstance(a, bytes)
        assert isinstance(b, bytes)
        seen.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    expected = hashlib.sha256(TOKEN.encode()).digest()
    assert refusal(f"Bearer {TOKEN}", expected) is None
    assert refusal(f"bearer {TOKEN}", expected) is None
    for wrong in ("x", TOKEN[:-1], TOKEN + "x", TOKEN[:-1] + "Z", "y" * 4096):
        assert refusal(f"Bearer {wrong}", expected) == "wrong"
    assert seen == [(32, 32)] * 7
    assert refusal(None, expected) == "missing"
    assert refusal(f"Basic {TOKEN}", expected) == "not_bearer"
    assert refusal("Bearer ", expected) == "not_bearer"


# --- the endpoint ------------------------------------------------------------------------------


def endpoint_settings(redis_url: str, token: str | None = TOKEN) -> Settings:
    """One cluster, one stdout sink, the endpoint on loopback with ``token``."""
    server = {"listen": "127.0.0.1:0"} | ({"auth_token": token} if token else {})
    return Settings.model_validate(
        {
            "redis": {"url": redis_url},
            "clusters": [
                {"name": "eu-1", "base_url": "http://127.0.0.1:9", "auth": {"token": "t"}}
            ],
            "sinks": [{"name": "out", "type": "stdout"}],
            "server": server,
        }
    )


@pytest.fixture
async def served(redis_url: str, redis: Redis) -> AsyncIterator[tuple[TestServer, str]]:
    """The real endpoint application (auth on) on 127.0.0.1, and its base URL."""
    endpoint = Endpoint(endpoint_settings(redis_url), redis, Metrics(), {}, polling=True)
    server = TestServer(endpoint.app(), host="127.0.0.1")
    await server.start_server()
    try:
        yield server, str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


PATHS = (
    "/",
    "/?fragment=1",
    "/assets/console.css",
    "/assets/console.js",
    "/assets/nope.txt",
    "/api/status",
    "/metrics",
    "/readyz",
    "/nowhere",
)


async def test_every_path_but_healthz_needs_the_token(served: tuple[TestServer, str]) -> None:
    """No header, a wrong token, a prefix of it or another scheme: 401 on every path but
    /healthz; the right token gets through; the token is in no response and no log line."""
    _, base = served
    refused: tuple[dict[str, str], ...] = (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Bearer {TOKEN[:-1]}"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
    )
    seen: list[str] = []
    with structlog.testing.capture_logs() as logs:
        async with aiohttp.ClientSession() as http:
            for path in PATHS:
                for headers in refused:
                    async with http.get(base + path, headers=headers) as response:
                        assert response.status == 401, (path, headers)
                        assert response.headers["WWW-Authenticate"].startswith("Bearer")
                        seen.append(await response.text() + str(response.headers))
                async with http.get(
                    base + path, headers={"Authorization": f"Bearer {TOKEN}"}
                ) as response:
                    assert response.status != 401, path
                    seen.append(await response.text() + str(response.headers))
            async with http.get(base + "/healthz") as response:
                assert (response.status, await response.text()) == (200, "ok\n")
    assert any(entry["event"] == "endpoint.unauthorized" for entry in logs)
    assert TOKEN not in "".join(seen)
    assert TOKEN not in repr(logs)


async def test_console_and_assets_are_served_with_a_strict_policy(
    served: tuple[TestServer, str],
) -> None:
    """/ is HTML naming the configured cluster with a strict CSP and no caching; ?fragment=1
    is its <main>; the stylesheet and script come from the package; unknown assets are 404."""
    _, base = served
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(headers=auth) as http:
        async with http.get(base + "/") as response:
            assert response.status == 200
            assert response.content_type == "text/html"
            assert "script-src 'self'" in response.headers["Content-Security-Policy"]
            assert response.headers["Cache-Control"] == "no-store"
            page = await response.text()
        assert page.startswith("<!doctype html>")
        assert 'data-cluster="eu-1"' in page
        assert 'data-sink="out"' in page
        async with http.get(base + "/?fragment=1") as response:
            fragment = await response.text()
        assert fragment.startswith('<div class="snapshot"')
        for name, kind in ASSETS.items():
            async with http.get(f"{base}/assets/{name}") as response:
                assert response.status == 200
                assert response.content_type == kind
                assert (await response.read()) == (
                    ROOT / "notifier" / "server" / "assets" / name
                ).read_bytes()
        async with http.get(base + "/assets/..%2Fconsole.py") as response:
            assert response.status == 404


async def test_console_says_why_when_redis_is_down(
    redis_server: RedisServer, served: tuple[TestServer, str]
) -> None:
    """Redis stopped: / answers 503 with a banner that gives the cause, the fragment the
    cause as text (for the script's status line); never the Redis URL."""
    _, base = served
    redis_server.stop()
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        async with http.get(base + "/") as response:
            assert response.status == 503
            page = await response.text()
        async with http.get(base + "/?fragment=1") as response:
            assert response.status == 503
            assert response.content_type == "text/plain"
            assert (await response.text()).startswith("redis: unreachable")
    assert "Status unavailable" in page
    assert "redis" in page
    assert redis_server.url not in page


async def test_without_a_token_the_console_is_open_on_loopback(
    redis_url: str, redis: Redis
) -> None:
    """server.auth_token unset (loopback only): every path answers without a header."""
    endpoint = Endpoint(
        endpoint_settings(redis_url, token=None), redis, Metrics(), {}, polling=True
    )
    server = TestServer(endpoint.app(), host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as http:
            for path in ("/", "/assets/console.js", "/readyz"):
                async with http.get(str(server.make_url(path))) as response:
                    assert response.status != 401, path
    finally:
        await server.close()


def test_the_wheel_carries_the_console_assets(tmp_path: Path) -> None:
    """An installed wheel has console.css and console.js beside the console module."""
    subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-d", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        timeout=60,
        check=True,
    )
    (wheel,) = tmp_path.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ASSETS:
        assert f"notifier/server/assets/{name}" in names
