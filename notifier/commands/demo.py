"""``notifier demo``: the whole pipeline on one machine, with nothing to set up.

A simulated Storm cluster (``notifier simulate``, in-process), an embedded Redis (fakeredis),
the poller, a live view fed through a sink, and a webhook sink delivering to a local receiver
that checks every Standard Webhooks signature. A terminal shows the events and counters as
they happen; without a terminal, one JSON line an event on standard output and the story on
standard error. ``--duration`` stops it by itself. ``--slack`` adds a Slack app sink posting to
a local stand-in of Slack and a scripted incident on stream ``123``: the live view then shows
the channel as Slack would.

This module wires the pieces together and runs them; each piece has its own module:
``demo_view`` (the live view and its sink), ``demo_feed`` (how an event reads in it),
``demo_receiver`` (the verifying webhook receiver), ``demo_slack`` (the stand-in of Slack).
"""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import time
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

from pydantic import SecretStr
from rich.console import Console
from rich.live import Live

from notifier.commands._common import duration, run_until_signal
from notifier.commands.demo_receiver import Receiver
from notifier.commands.demo_slack import LocalSlack, sink_settings
from notifier.commands.demo_view import Figures, LiveView, ViewSink
from notifier.config import Settings
from notifier.durations import spoken_duration
from notifier.errors import ConfigError
from notifier.logs import configure_logging
from notifier.service import Service
from notifier.simulator import (
    Faults,
    Incident,
    PopulationSettings,
    SimulatorSettings,
    running_simulator,
)
from notifier.sinks.stdout import StdoutSink, StdoutSinkSettings

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable

    from notifier.commands._common import Commands

__all__ = ["main", "register", "run_demo"]

TOKEN = "demo-token"  # noqa: S105 - the simulator's own stand-in credential
REFRESH = 0.25  # seconds between two frames of the live view


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
    live: bool | None = None,
) -> int:
    """Run the demo until ``stop`` is set or ``duration`` seconds have passed.

    ``live``: draw the live view on ``console`` (default: when it is a terminal, outside CI);
    otherwise the events go to standard output as JSON lines and the story to standard error.
    """
    import fakeredis  # noqa: PLC0415 - only the demo needs an embedded Redis

    started = time.monotonic()
    console = console or Console(soft_wrap=True)
    if live is None:
        live = console.is_terminal and not os.environ.get("CI")
    story = console if live else Console(stderr=True, soft_wrap=True)
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    local_slack = LocalSlack() if slack else None
    receiver = Receiver(SecretStr(secret))
    async with AsyncExitStack() as stack:
        await receiver.start()
        stack.push_async_callback(receiver.aclose)
        if local_slack is not None:
            await local_slack.start()
            stack.push_async_callback(local_slack.aclose)
        redis = fakeredis.FakeAsyncRedis()
        stack.push_async_callback(redis.aclose)
        sim = await stack.enter_async_context(running_simulator(*_simulator(seed, viewers, slack)))
        title = f"storm-notifier demo · {sim.url} · embedded Redis"
        view = LiveView(console, title=title, slack=local_slack)
        stdout = None if live else StdoutSink(StdoutSinkSettings(name="live"))
        service = Service(
            _settings(sim.url, receiver.url, secret, local_slack),
            redis=redis,
            sinks={"live": ViewSink(view, stdout)},
            endpoint=False,
        )
        if not live:
            lasting = f", for {spoken_duration(int(duration * 1000))}" if duration else ""
            story.print(
                f"storm-notifier demo: simulator {sim.url}, embedded Redis,"
                f" {viewers} viewers{lasting}.",
                highlight=False,
            )

        def figures() -> Figures:
            return _figures(service, receiver, time.monotonic() - started)

        status = await _run(service, stop, duration, view if live else None, figures)
        for line in view.closing(figures()):
            story.print(line, highlight=False, soft_wrap=not live)  # live: wrap at words
        return status


async def _run(
    service: Service,
    stop: asyncio.Event,
    duration: float | None,
    view: LiveView | None,
    figures: Callable[[], Figures],
) -> int:
    """Run the service until ``stop`` (or ``duration``), drawing ``view`` meanwhile if given;
    its last frame is drawn once the service has stopped."""
    runner = asyncio.create_task(service.run(stop))
    timer = asyncio.create_task(_stop_after(stop, duration))
    try:
        if view is None:
            return await runner
        with Live(
            view.render(figures()), console=view.console, auto_refresh=False, transient=False
        ) as screen:
            while not runner.done():
                await asyncio.wait([runner], timeout=REFRESH)
                screen.update(view.render(figures()), refresh=True)
            screen.update(view.render(figures(), finished=True), refresh=True)
        return await runner
    finally:
        stop.set()
        timer.cancel()


def _figures(service: Service, receiver: Receiver, elapsed: float) -> Figures:
    poller = service.pollers[0] if service.pollers else None
    hooks = service.sinks.get("hooks")
    return Figures(
        elapsed=elapsed,
        tracked=poller.tracked if poller else 0,
        commits=poller.commits if poller else 0,
        verified=receiver.verified,
        rejected=receiver.rejected,
        retried=hooks.retried if hooks else 0,
        dead_lettered=hooks.dead_lettered if hooks else 0,
    )


def _simulator(seed: int, viewers: int, slack: bool) -> tuple[SimulatorSettings, Faults]:
    """A lively audience ticking every second, a few faults; with ``slack`` an incident on
    stream 123 (8 s in, for 30 s, 60% of its viewers)."""
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
    return simulator, faults


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
