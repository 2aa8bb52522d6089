"""``notifier demo``: the whole pipeline on one machine, with nothing to set up.

A simulated Storm cluster (``notifier simulate``, in-process), an embedded Redis (fakeredis),
the poller, a live view fed through a sink, and a webhook sink delivering to a local receiver
that checks every Standard Webhooks signature. A terminal shows the events and counters as
they happen; without a terminal, one line an event. ``--duration`` stops it by itself.
``--slack`` adds a Slack app sink posting to a local stand-in of Slack (``demo_slack``) and a
scripted incident on stream ``123``: the live view then shows the channel as Slack would.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import itertools
import os
import secrets
import time
from collections import Counter, deque
from typing import TYPE_CHECKING, Any

from aiohttp import web
from pydantic import SecretStr
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from notifier.commands._common import duration, run_until_signal
from notifier.commands.demo_slack import LocalSlack, channel_view, sink_settings, summary
from notifier.config import Settings
from notifier.durations import spoken_duration
from notifier.errors import ConfigError
from notifier.events import STREAM_EVENT_TYPES, VIEWER_EVENT_TYPES
from notifier.logs import configure_logging
from notifier.service import Service
from notifier.simulator import (
    Faults,
    Incident,
    PopulationSettings,
    SimulatorSettings,
    running_simulator,
)
from notifier.sinks.base import Batching, Delivered, Outcome
from notifier.sinks.stdout import StdoutSink, StdoutSinkSettings
from notifier.sinks.webhook.config import signing_key
from notifier.sinks.webhook.sink import sign

if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence

    from notifier.commands._common import Commands
    from notifier.sinks.base import Event

__all__ = ["main", "register", "run_demo"]

TOKEN = "demo-token"  # noqa: S105 - the simulator's own stand-in credential
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
LABELS = {  # the counters, in ICONS' order
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
FEED = 13  # events shown: with the counters and the border, the view fits 80x24
PINNED = 4  # of them, the latest stream events, kept on top however many viewer events follow


class _Receiver:
    """A webhook endpoint that checks signatures the way a receiver should."""

    def __init__(self, secret: SecretStr) -> None:
        self._key = signing_key(secret)
        self.verified = 0
        self.rejected = 0
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/hook"

    async def aclose(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        message_id = request.headers.get("webhook-id", "")
        timestamp = request.headers.get("webhook-timestamp", "0")
        expected = sign(
            [self._key], message_id, int(timestamp) if timestamp.isdigit() else 0, body
        ).split()
        offered = request.headers.get("webhook-signature", "").split()
        fresh = abs(time.time() - float(timestamp or 0)) < 300
        if fresh and any(hmac.compare_digest(e, o) for e in expected for o in offered):
            self.verified += 1
            return web.Response(status=204)
        self.rejected += 1
        return web.Response(status=401)


class _ViewSink:
    """The demo's ``stdout`` sink: JSON lines on standard output when it is not a terminal;
    on a terminal the same events land in the live view instead."""

    def __init__(self, view: _View, stdout: StdoutSink | None) -> None:
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


class _View:
    """What the terminal shows: counters (viewers, streams, webhooks) and the latest events,
    the latest stream events first (a first poll's thousand joins would push them out)."""

    def __init__(self, console: Console, *, live: bool, slack: LocalSlack | None = None) -> None:
        self.console = console
        self.live = live
        self.slack = slack  # shown instead of the feed
        self.recent: deque[dict[str, Any]] = deque(maxlen=FEED)
        self.streams: deque[dict[str, Any]] = deque(maxlen=PINNED)
        self.counts: Counter[str] = Counter()
        self.started = time.monotonic()

    def add(self, event: dict[str, Any]) -> None:
        self.counts[event["type"]] += 1
        if str(event["type"]).startswith("stream."):
            self.streams.appendleft(event)
        else:
            self.recent.appendleft(event)

    def render(self, service: Service, receiver: _Receiver, sim_url: str) -> Panel:
        poller = service.pollers[0] if service.pollers else None
        hooks = service.sinks.get("hooks")
        counts = self.counts
        live = counts["stream.audience_started"] - counts["stream.audience_ended"]
        columns: list[list[tuple[str, int]]] = [
            [
                ("viewers tracked", poller.tracked if poller else 0),
                ("polls committed", poller.commits if poller else 0),
                *((LABELS[kind], counts[kind]) for kind in VIEWER_EVENT_TYPES),
            ],
            [
                ("live streams", live),
                *((LABELS[kind], counts[kind]) for kind in STREAM_EVENT_TYPES),
            ],
            [
                ("webhooks verified", receiver.verified),
                ("webhooks rejected", receiver.rejected),
                ("webhook retries", hooks.retried if hooks else 0),
                ("dead letters", hooks.dead_lettered if hooks else 0),
            ],
        ]
        stats = Table.grid(padding=(0, 1), expand=True)
        for _ in columns:
            stats.add_column(style="bold", no_wrap=True)
            stats.add_column(justify="right", no_wrap=True)
        for row in itertools.zip_longest(*columns, fillvalue=("", "")):
            stats.add_row(*(str(cell) for pair in row for cell in pair))
        events = Table(expand=True, show_edge=False, box=None, pad_edge=False)
        events.add_column("time", no_wrap=True, min_width=8)
        events.add_column("event", no_wrap=True, max_width=16)
        events.add_column("viewer / stream", no_wrap=True, max_width=18)
        events.add_column("", no_wrap=True, ratio=1, overflow="ellipsis")
        for event in [*self.streams, *list(self.recent)[: FEED - len(self.streams)]]:
            events.add_row(
                Text(str(event.get("time", ""))[11:19]),
                _icon(event),
                Text(str(event.get("subject", ""))),
                Text(_detail(event)),
            )
        elapsed = time.monotonic() - self.started
        title = f"storm-notifier demo · {sim_url} · embedded Redis · {elapsed:.0f}s"
        feed = channel_view(self.slack, lines=FEED) if self.slack else events
        return Panel(Group(stats, feed), title=title, subtitle="Ctrl-C stops")


def _icon(event: dict[str, Any]) -> Text:
    kind = str(event.get("type"))
    data = event.get("data") or {}
    if kind == "stream.audience_crossed":
        down = data.get("direction") == "down"
        arrow = "↘ below" if down else "↗ reached"
        return Text(f"{arrow} {_count(data.get('threshold'))}", style="cyan")
    if kind == "stream.audience_ended" and (data.get("summary") or {}).get("endedDegraded"):
        return Text("■ ended degraded", style="red")
    return Text.from_markup(ICONS[kind]) if kind in ICONS else Text(kind)


def _detail(event: dict[str, Any]) -> str:
    """What happened, in a few words: a viewer's stream, country, device and health; a
    stream's figures."""
    data: dict[str, Any] = event.get("data") or {}
    if "viewer" not in data:
        return _figures(str(event.get("type")), data)
    viewer = data["viewer"]
    where = f"{viewer.get('countryCode') or ''} {str(viewer.get('deviceType') or '').lower()}"
    parts = (str(viewer.get("streamKey") or ""), where.strip(), _health(event))
    return " · ".join(part for part in parts if part)


def _figures(kind: str, data: dict[str, Any]) -> str:
    """A stream event's figures, short enough for the feed of an 80-column terminal."""
    share = data.get("share")
    dropped = f"{share:.0%} dropped" if isinstance(share, int | float) else "? dropped"
    lasted = (data.get("incident") or data.get("summary") or {}).get("durationMs")
    after = f" after {spoken_duration(lasted)}" if isinstance(lasted, int) else ""
    if kind == "stream.audience_started":
        return _viewers(data.get("viewers")) + (" (already live)" if data.get("initial") else "")
    if kind == "stream.audience_crossed":
        return f"{_viewers(data.get('viewers'))}, peak {_count(data.get('peakViewers'))}"
    if kind == "stream.health_degraded":
        return f"{dropped} ({_count(data.get('dropped'))}/{_count(data.get('measured'))})"
    if kind == "stream.health_recovered":
        return dropped + after
    if kind == "stream.audience_ended":
        peak = _count((data.get("summary") or {}).get("peakViewers"))
        return f"{after.strip()}, peak {peak}".lstrip(", ")
    return ""


def _count(value: object) -> str:
    return f"{value:,}" if isinstance(value, int) else "?"


def _viewers(value: object) -> str:
    return "1 viewer" if value == 1 else f"{_count(value)} viewers"


def _health(event: dict[str, Any]) -> str:
    viewer = event["data"]["viewer"]
    now = f"{viewer.get('healthScore')} {viewer.get('healthGrade') or ''}".strip()
    previous = event["data"].get("previous")
    if previous:
        before = previous.get("healthScore")
        return f"{'?' if before is None else before} → {now}"
    return now


def _settings(
    sim_url: str, receiver_url: str, secret: str, slack: LocalSlack | None = None
) -> Settings:
    extra = [sink_settings(slack)] if slack else []
    return Settings.model_validate(
        {
            "clusters": [
                {
                    "name": "demo",
                    "base_url": sim_url,
                    "auth": {"token": TOKEN},
                    "poll_interval": "1s",
                    "page_size": 100,
                }
            ],
            "detection": {"leader_lease": "2s", "health": {"consecutive_polls": 1}},
            "sinks": [
                {"name": "live", "type": "stdout"},
                {
                    "name": "hooks",
                    "type": "webhook",
                    "url": receiver_url,
                    "secret": secret,
                    "retry": {"schedule": ["0s", "1s", "2s", "5s"]},
                },
                *extra,
            ],
            "logging": {"format": "console", "level": "warning"},
        }
    )


async def run_demo(
    *,
    duration: float | None,
    viewers: int,
    seed: int,
    stop: asyncio.Event,
    console: Console | None = None,
    slack: bool = False,
) -> int:
    """Run the demo until ``stop`` is set or ``duration`` seconds have passed."""
    import fakeredis  # noqa: PLC0415 - only the demo needs an embedded Redis

    console = console or Console(soft_wrap=True)
    live = console.is_terminal and not os.environ.get("CI")
    status_console = console if live else Console(stderr=True, soft_wrap=True)
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    incidents = (Incident("123", 8_000, 30_000, 0.6),) if slack else ()
    population = PopulationSettings(
        seed=seed,
        viewers=viewers,
        join_rate=0.03,
        leave_rate=0.03,
        health_change_rate=0.08,
        incidents=incidents,
    )
    simulator = SimulatorSettings(population=population, static_tokens=(TOKEN,), tick=1.0)
    faults = Faults(
        seed=seed, max_rows_per_page=50, error_rate=0.02, rate_limit_rate=0.01, retry_after=1
    )
    local_slack = LocalSlack() if slack else None
    view = _View(console, live=live, slack=local_slack)
    receiver = _Receiver(SecretStr(secret))
    redis = fakeredis.FakeAsyncRedis()
    await receiver.start()
    if local_slack is not None:
        await local_slack.start()
    try:
        async with running_simulator(simulator, faults) as sim:
            settings = _settings(sim.url, receiver.url, secret, local_slack)
            stdout = None if live else StdoutSink(StdoutSinkSettings(name="live"))
            service = Service(
                settings, redis=redis, sinks={"live": _ViewSink(view, stdout)}, endpoint=False
            )
            if not live:  # the events are JSON lines on stdout; the story goes to stderr
                note = f", {duration:g}s" if duration else ""
                status_console.print(
                    f"storm-notifier demo: simulator {sim.url}, embedded Redis,"
                    f" {viewers} viewers{note}"
                )
            runner = asyncio.create_task(service.run(stop))
            timer = asyncio.create_task(_stop_after(stop, duration))
            try:
                if live:
                    with Live(
                        view.render(service, receiver, sim.url),
                        console=console,
                        refresh_per_second=4,
                        transient=False,
                    ) as screen:
                        while not runner.done():
                            await asyncio.wait([runner], timeout=0.25)
                            screen.update(view.render(service, receiver, sim.url))
                status = await runner
            finally:
                stop.set()
                timer.cancel()
        status_console.print(
            f"demo finished: {sum(view.counts.values())} events "
            + ", ".join(f"{n} {LABELS.get(k, k)}" for k, n in view.counts.items())
            + f"; {receiver.verified} webhooks verified, {receiver.rejected} rejected",
            highlight=False,
        )
        if local_slack is not None:
            status_console.print(summary(local_slack), highlight=False)
        return status
    finally:
        await receiver.aclose()
        if local_slack is not None:
            await local_slack.aclose()
        await redis.aclose()


async def _stop_after(stop: asyncio.Event, duration: float | None) -> None:
    if duration is not None:
        await asyncio.sleep(duration)
        stop.set()


def register(commands: Commands, parents: list[argparse.ArgumentParser]) -> None:
    """``notifier demo [--duration D] [--viewers N] [--seed S]``."""
    parser = commands.add_parser(
        "demo",
        parents=parents,
        help="everything on this machine with no setup: simulator, embedded Redis, sinks",
    )
    parser.add_argument(
        "--duration",
        type=duration,
        metavar="D",
        help="stop by itself after this long (e.g. 20s); default: until Ctrl-C",
    )
    parser.add_argument("--viewers", type=int, default=300, help="simulated audience (default 300)")
    parser.add_argument("--seed", type=int, default=7, help="simulator seed (default 7)")
    parser.add_argument(
        "--slack",
        action="store_true",
        help="a Slack app sink on a local stand-in of Slack, and an incident to show",
    )
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    """Run the demo until ``--duration`` or Ctrl-C."""
    if args.viewers < 1:
        raise ConfigError("--viewers must be at least 1")
    configure_logging(fmt="console", level="error")
    return run_until_signal(
        lambda stop: run_demo(
            duration=args.duration,
            viewers=args.viewers,
            seed=args.seed,
            stop=stop,
            slack=args.slack,
        )
    )
