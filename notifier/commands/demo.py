"""``notifier demo``: the whole pipeline on one machine, with nothing to set up.

A simulated Storm cluster (``notifier simulate``, in-process), an embedded Redis (fakeredis),
the poller, a live view fed through a sink, and a webhook sink delivering to a local receiver
that checks every Standard Webhooks signature. A terminal shows the events and counters as
they happen; without a terminal, one line an event. ``--duration`` stops it by itself.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
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

from notifier.commands._common import duration, run_until_signal
from notifier.config import Settings
from notifier.errors import ConfigError
from notifier.events import EVENT_TYPES
from notifier.logs import configure_logging
from notifier.service import Service
from notifier.simulator import Faults, PopulationSettings, SimulatorSettings, running_simulator
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
}


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
    """What the terminal shows: counters and the latest events."""

    def __init__(self, console: Console, *, live: bool) -> None:
        self.console = console
        self.live = live
        self.recent: deque[dict[str, Any]] = deque(maxlen=14)
        self.counts: Counter[str] = Counter()
        self.started = time.monotonic()

    def add(self, event: dict[str, Any]) -> None:
        self.counts[event["type"]] += 1
        self.recent.appendleft(event)

    def render(self, service: Service, receiver: _Receiver, sim_url: str) -> Panel:
        stats = Table.grid(padding=(0, 2))
        stats.add_column(style="bold")
        stats.add_column(justify="right")
        poller = service.pollers[0] if service.pollers else None
        hooks = service.sinks.get("hooks")
        tracked = poller.tracked if poller else 0
        rows = [
            ("viewers tracked", tracked),
            ("polls committed", poller.commits if poller else 0),
            *((kind.removeprefix("viewer."), self.counts[kind]) for kind in EVENT_TYPES),
            ("webhooks verified", receiver.verified),
            ("webhooks rejected", receiver.rejected),
            ("webhook retries", hooks.retried if hooks else 0),
            ("dead letters", hooks.dead_lettered if hooks else 0),
        ]
        for name, value in rows:
            stats.add_row(name, str(value))
        events = Table(expand=True, show_edge=False, box=None)
        for column in ("time", "event", "viewer", "stream", "where", "health"):
            events.add_column(column, no_wrap=True)
        for event in self.recent:
            viewer = event["data"]["viewer"]
            events.add_row(
                event["time"][11:19],
                ICONS.get(event["type"], event["type"]),
                event["subject"],
                str(viewer.get("streamKey") or ""),
                f"{viewer.get('countryCode') or ''} {str(viewer.get('deviceType') or '').lower()}",
                _health(event),
            )
        elapsed = time.monotonic() - self.started
        title = f"storm-notifier demo · simulator {sim_url} · embedded Redis · {elapsed:.0f}s"
        return Panel(Group(stats, events), title=title, subtitle="Ctrl-C stops")


def _health(event: dict[str, Any]) -> str:
    viewer = event["data"]["viewer"]
    now = f"{viewer.get('healthScore')} {viewer.get('healthGrade') or ''}".strip()
    previous = event["data"].get("previous")
    if previous:
        before = previous.get("healthScore")
        return f"{'?' if before is None else before} → {now}"
    return now


def _settings(sim_url: str, receiver_url: str, secret: str) -> Settings:
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
) -> int:
    """Run the demo until ``stop`` is set or ``duration`` seconds have passed."""
    import fakeredis  # noqa: PLC0415 - only the demo needs an embedded Redis

    console = console or Console(soft_wrap=True)
    live = console.is_terminal and not os.environ.get("CI")
    status_console = console if live else Console(stderr=True, soft_wrap=True)
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    population = PopulationSettings(
        seed=seed, viewers=viewers, join_rate=0.03, leave_rate=0.03, health_change_rate=0.08
    )
    simulator = SimulatorSettings(population=population, static_tokens=(TOKEN,), tick=1.0)
    faults = Faults(
        seed=seed, max_rows_per_page=50, error_rate=0.02, rate_limit_rate=0.01, retry_after=1
    )
    view = _View(console, live=live)
    receiver = _Receiver(SecretStr(secret))
    redis = fakeredis.FakeAsyncRedis()
    await receiver.start()
    try:
        async with running_simulator(simulator, faults) as sim:
            settings = _settings(sim.url, receiver.url, secret)
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
            + ", ".join(f"{n} {k.removeprefix('viewer.')}" for k, n in view.counts.items())
            + f"; {receiver.verified} webhooks verified, {receiver.rejected} rejected",
            highlight=False,
        )
        return status
    finally:
        await receiver.aclose()
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
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    """Run the demo until ``--duration`` or Ctrl-C."""
    if args.viewers < 1:
        raise ConfigError("--viewers must be at least 1")
    configure_logging(fmt="console", level="error")
    return run_until_signal(
        lambda stop: run_demo(
            duration=args.duration, viewers=args.viewers, seed=args.seed, stop=stop
        )
    )
