"""A long Storm outage (issue 14, item 4): the API down for 10 minutes, then back.

At the return, viewers still watching are not disconnected (an incomplete poll is never taken
for "everyone left"); viewers who left meanwhile are disconnected once, carrying their true
last-seen time: the start of the last complete poll before the outage. Viewers who came and
went within the outage leave no trace; those who came and stayed connect once.

How 10 minutes are made fast: ``test_a_ten_minute_outage_...`` runs the poller, its client and
the simulator on one settable clock (``FakeTime``): the client's backoff sleeps and the poll
schedule advance it instead of waiting, so a poll that fails for its whole ``poll_budget`` (20 s)
takes milliseconds, and the loop below takes the slots ``Poller.run`` would (``next_slot``: a
failing poll outlasts its 5 s slot, so the outage is about 30 polls, not 120). Everything in the
detection path reads that clock: poll times (``lastSeenAt``), retries and budgets, token expiry
(login and the simulator's tokens: the token of the first login runs out during the test, 16
minutes in), record refresh. What the settable clock cannot scale is Redis: the poller's lease
lives in real time, renewed by a background task every third of its TTL whatever the polls do.
So ``test_the_lease_outlives_an_outage_...`` runs ``Poller.run`` in real time through an outage
of several lease TTLs (1 s lease, 0.2 s polls) and checks the lease was never lost. No other
rule depends on time: a disconnect needs ``disconnect_after_missed_polls`` complete polls, and
the tracked state in Redis has no TTL.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections import Counter
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import pytest
import structlog.testing
from aiohttp import web

from notifier.config import DetectionSettings
from notifier.detect.poller import Poller, next_slot
from notifier.detect.store import StateStore
from notifier.lease import Lease
from notifier.metrics import Metrics
from notifier.simulator import Faults, PopulationSettings, Simulator, SimulatorSettings
from notifier.storm import StormClient, create_session
from testkit.bad_storm import KEYS
from testkit.detection_support import stream_events

from .conftest import cluster_settings

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from aiohttp.typedefs import Handler
    from redis.asyncio import Redis

    from testkit.reliability import Tally

START = 1_770_000_000.0  # the settable clock's wall time at the start of the test
POPULATION = PopulationSettings(
    seed=11, viewers=60, join_rate=0, leave_rate=0, health_change_rate=0, no_data_rate=0
)


class FakeTime:
    """One settable clock for the whole system: wall and monotonic time, and a sleep that
    advances it instead of waiting."""

    def __init__(self) -> None:
        self.now = START

    def wall(self) -> float:
        return self.now

    def mono(self) -> float:
        return self.now - START

    async def sleep(self, delay: float) -> None:
        self.now += max(delay, 0.0)
        await asyncio.sleep(0)


class Outage:
    """A middleware that, while ``down``, answers every /api request as a dead cluster does:
    503, an HTML 502 from the proxy, or a dropped connection, in turn; ``faults`` counts them."""

    def __init__(self) -> None:
        self.down = False
        self.faults = Counter[str]()

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not self.down or not request.path.startswith("/api/"):
            return await handler(request)
        kind = ("503", "502-html", "reset")[sum(self.faults.values()) % 3]
        self.faults[kind] += 1
        if kind == "503":
            return web.json_response({"message": "Service Unavailable"}, status=503)
        if kind == "502-html":
            return web.Response(
                status=502, text="<html>Bad Gateway</html>", content_type="text/html"
            )
        assert request.transport is not None
        request.transport.abort()
        return web.Response()


@asynccontextmanager
async def storm(clock: Callable[[], float]) -> AsyncIterator[tuple[str, Simulator, Outage]]:
    """The simulator on 127.0.0.1 behind an ``Outage`` switch."""
    simulator = Simulator(SimulatorSettings(population=POPULATION), Faults(), clock=clock)
    outage = Outage()
    app = simulator.app()
    app.middlewares.insert(0, outage.middleware)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", simulator, outage
    finally:
        await runner.cleanup()


def _ms(text: str) -> int:
    return round(dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def _by_viewer(events: list[dict[str, Any]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for event in events:
        out.setdefault(event["subject"], []).append(event["type"])
    return out


async def _polled_at(redis: Redis) -> int:
    return int(await redis.hget(KEYS.meta, "polled_at") or 0)


@pytest.mark.timeout(120)
@pytest.mark.reliability(
    fault="Storm down for 10 minutes",
    injected="every API request (login and lookups too) answered 503, an HTML 502 or a reset, in "
    "turn, for 10 minutes of a settable clock; viewers leave and join meanwhile",
    checked="no viewer still watching is disconnected; who left is disconnected once with the "
    "last-seen time of the last poll before; who joined and stayed connects once",
)
async def test_a_ten_minute_outage_disconnects_only_who_left_with_their_true_last_seen(
    redis: Redis, tally: Tally
) -> None:
    """4 minutes of polls, 10 minutes of a dead API (503, HTML 502, resets: login and lookups
    too), 2 minutes of polls; 10 viewers leave during the outage, 5 join (3 of them leave
    again). The clock is settable (module doc); the poll loop takes ``Poller.run``'s slots."""
    clock = FakeTime()
    detection = DetectionSettings.model_validate(
        {"streams": {"enabled": False}, "leader_lease": "60s"}  # lease: real time (module doc)
    )
    metrics = Metrics()
    async with storm(clock.wall) as (url, simulator, outage):
        settings = cluster_settings(url)  # logs in: poll_interval 5s, poll_budget 20s
        async with create_session(settings) as session:
            client = StormClient(
                settings, session, clock=clock.mono, wall_clock=clock.wall, sleep=clock.sleep
            )
            lease = Lease(redis, KEYS.lease, KEYS.fence, "outage-test", ttl=60)
            poller = Poller(
                settings,
                detection,
                client=client,
                store=StateStore(redis, KEYS, maxlen=100_000),
                lease=lease,
                metrics=metrics,
                clock=clock.mono,
                wall_clock=clock.wall,
            )
            slot = clock.mono()

            async def run_until(minute: float) -> int:
                """Poll on schedule until the clock reads ``minute``; the polls run."""
                nonlocal slot
                cycles = 0
                while clock.mono() < minute * 60:
                    clock.now = max(clock.now, START + slot)
                    await poller.cycle()
                    cycles += 1
                    slot = next_slot(slot, settings.poll_interval, clock.mono())
                return cycles

            population = simulator.population
            await run_until(4)
            watching = population.ids()
            before = await stream_events(redis, KEYS.events)
            last_seen = await _polled_at(redis)

            outage.down = True
            await run_until(7)
            leavers = sorted(watching)[:10]
            population.leave(leavers)
            joiners = population.join(5)
            await run_until(11)
            population.leave(joiners[:3])
            failed = await run_until(14)
            outage.down = False
            assert await stream_events(redis, KEYS.events) == before  # nothing meanwhile
            assert await _polled_at(redis) == last_seen
            back = await run_until(16)
            await client.aclose()

    events = (await stream_events(redis, KEYS.events))[len(before) :]
    tally.tried, tally.events = sum(outage.faults.values()), len(events)
    viewers = _by_viewer(events)
    assert set(viewers) == {*leavers, *joiners[3:]}  # no one still watching is touched
    for viewer_id in leavers:
        assert viewers[viewer_id] == ["viewer.disconnected"]
    for viewer_id in joiners[3:]:
        assert viewers[viewer_id] == ["viewer.connected"]
    for event in events:
        if event["type"] == "viewer.disconnected":
            assert _ms(event["data"]["lastSeenAt"]) == last_seen  # before the outage
            assert event["data"]["viewer"]["id"] == event["subject"]
        else:
            assert not event["data"].get("initial")

    incomplete = sum(
        metrics.registry.get_sample_value(
            "notifier_poll_incomplete_total", {"cluster": "sim", "reason": reason}
        )
        or 0
        for reason in ("unavailable", "malformed", "auth", "timeout", "budget")
    )
    outage_polls = metrics.registry.get_sample_value(
        "notifier_polls_total", {"cluster": "sim", "outcome": "incomplete"}
    )
    assert incomplete == outage_polls
    assert outage_polls is not None
    assert outage_polls >= 600 / (settings.poll_budget + settings.poll_interval)  # every slot
    assert failed >= 1
    assert back >= 2  # the leavers went at the 2nd complete poll (disconnect_after_missed_polls)
    assert sum(outage.faults.values()) > outage_polls  # each poll retried its requests
    assert simulator.stats.logins >= 2  # the first token ran out (15 min) on the same clock


@pytest.mark.timeout(60)
@pytest.mark.reliability(
    fault="Storm down for three lease TTLs",
    injected="real time: every API request answered 503, an HTML 502 or a reset for 15 polls "
    "(0.2 s polls, 1 s lease); 5 viewers leave meanwhile",
    checked="the lease is never lost (one leading line, no fencing); the 5 leavers are "
    "disconnected with their last-seen time from before the outage",
)
async def test_the_lease_outlives_an_outage_of_several_lease_ttls(
    redis: Redis, tally: Tally
) -> None:
    """Real time, ``Poller.run``: a 1 s lease, 0.2 s polls, Storm down for 15 polls (3 s, three
    lease TTLs). The lease is never lost, and the return is the same as in the scaled test."""
    detection = DetectionSettings.model_validate(
        {"streams": {"enabled": False}, "leader_lease": "1s"}
    )
    metrics = Metrics()
    stop = asyncio.Event()

    def value(name: str, **labels: str) -> float:
        return metrics.registry.get_sample_value(name, {"cluster": "sim", **labels}) or 0.0

    async def until(condition: Callable[[], bool], seconds: float = 20.0) -> None:
        deadline = asyncio.get_running_loop().time() + seconds
        while not condition():
            assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
            await asyncio.sleep(0.02)

    with structlog.testing.capture_logs() as logs:
        async with storm(time.time) as (url, simulator, outage):
            settings = cluster_settings(
                url, poll_interval="200ms", poll_budget="300ms", timeout="100ms"
            )
            async with create_session(settings) as session:
                client = StormClient(settings, session)
                poller = Poller(
                    settings,
                    detection,
                    client=client,
                    store=StateStore(redis, KEYS, maxlen=100_000),
                    lease=Lease(redis, KEYS.lease, KEYS.fence, "outage-test", ttl=1.0),
                    metrics=metrics,
                )
                running = asyncio.create_task(poller.run(stop))
                await until(lambda: value("notifier_polls_total", outcome="committed") >= 3)
                outage.down = True
                await until(lambda: value("notifier_polls_total", outcome="incomplete") >= 1)
                last_seen = await _polled_at(redis)
                watching = simulator.population.ids()
                leavers = sorted(watching)[:5]
                simulator.population.leave(leavers)
                await until(lambda: value("notifier_polls_total", outcome="incomplete") >= 15)
                outage.down = False
                gone: list[dict[str, Any]] = []

                async def disconnected() -> int:
                    gone[:] = [
                        e
                        for e in await stream_events(redis, KEYS.events)
                        if e["type"] == "viewer.disconnected"
                    ]
                    return len(gone)

                deadline = asyncio.get_running_loop().time() + 20
                while await disconnected() < len(leavers):
                    assert asyncio.get_running_loop().time() < deadline
                    await asyncio.sleep(0.05)
                stop.set()
                await running
    tally.tried, tally.events = sum(outage.faults.values()), len(gone)
    assert sorted(e["subject"] for e in gone) == leavers
    assert {_ms(e["data"]["lastSeenAt"]) for e in gone} == {last_seen}
    told = [line["event"] for line in logs]
    assert "poller.following" not in told
    assert "poller.commit_fenced" not in told
    assert told.count("poller.leading") == 1
    assert value("notifier_polls_total", outcome="fenced") == 0
