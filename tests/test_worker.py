"""Delivery through a SinkWorker on a real redis-server: per-viewer order, retries and dead
letters, claims from vanished workers, leases, trimmed streams, pause, filters, unreadable entries,
and the lane's report for the status model.
"""

from __future__ import annotations

import asyncio
import io
import json
import random
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, cast

import structlog

from notifier.logs import configure_logging
from notifier.sinks.control import SinkControl
from notifier.sinks.lane import LaneReport
from notifier.sinks.webhook import WebhookSink
from notifier.sinks.worker import SinkWorker
from testkit.receivers import Reply, WebhookReceiver
from testkit.sink_support import (
    KEYS,
    SECRET,
    by_viewer,
    create_group,
    dead_letters,
    make_events,
    pending,
    publish,
    received_events,
    running_worker,
    webhook,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from redis.asyncio import Redis

    from notifier.sinks.webhook import WebhookSinkSettings


async def test_an_outage_delays_but_loses_nothing_and_keeps_viewer_order(redis: Redis) -> None:
    """While the receiver answers 500 nothing is acked; after it recovers all arrive, in order."""
    events = make_events(120, 12, seed=2)
    async with WebhookReceiver(SECRET) as receiver:
        receiver.default = Reply(status=500)
        await create_group(redis, "hooks")
        await publish(redis, events)
        settings = webhook(receiver.url, retry={"schedule": ["0s"] + ["100ms"] * 50})
        async with running_worker(WebhookSink(settings), settings, redis) as control:
            await control.wait_until(lambda c: c.retried >= 40)
            assert receiver.received == []
            assert len({a.body for a in receiver.attempts}) <= 12  # only each viewer's head
            receiver.default = Reply(status=200)
            await receiver.wait_for(120)
        got = received_events(receiver)
        assert by_viewer(got) == by_viewer(events)
        assert control.retried >= 40
        assert control.dead_lettered == 0
        assert await pending(redis, "hooks") == 0


async def test_a_permanent_4xx_dead_letters_and_the_viewer_moves_on(redis: Redis) -> None:
    """400 goes to the dead letters with reason, attempts and status; later events go on."""
    events = make_events(3, 1)
    async with WebhookReceiver(SECRET) as receiver:
        receiver.respond(Reply(status=400, body=b'{"error":"bad field"}'))
        await create_group(redis, "hooks")
        await publish(redis, events)
        settings = webhook(receiver.url)
        async with running_worker(WebhookSink(settings), settings, redis) as control:
            await receiver.wait_for(2)
        (dead,) = await dead_letters(redis)
        assert dead[b"id"].decode() == events[0]["id"]
        assert dead[b"reason"].startswith(b"HTTP 400")
        assert (dead[b"attempts"], dead[b"status"]) == (b"1", b"400")
        assert dead[b"event"] == events[0]["body"]
        assert control.dead_lettered == 1
        assert [e["sequence"] for e in received_events(receiver)] == [2, 3]
        assert await pending(redis, "hooks") == 0


async def test_an_exhausted_schedule_dead_letters(redis: Redis) -> None:
    """Five 503s on a five-step schedule: dead-lettered with the last reason."""
    events = make_events(1, 1)
    async with WebhookReceiver(SECRET) as receiver:
        receiver.default = Reply(status=503)
        await create_group(redis, "hooks")
        await publish(redis, events)
        settings = webhook(receiver.url)
        async with running_worker(WebhookSink(settings), settings, redis) as control:
            await control.wait_until(lambda c: c.dead_lettered > 0)
        (dead,) = await dead_letters(redis)
        assert dead[b"reason"] == b"gave up after 5 attempts: HTTP 503"
        assert len(receiver.attempts) == 5
        assert not await redis.exists(KEYS.retries("hooks"))


async def test_410_pauses_the_sink_until_resumed(redis: Redis) -> None:
    """410 Gone pauses the sink: nothing more is sent, nothing is lost; resume delivers all."""
    events = make_events(20, 5)
    async with WebhookReceiver(SECRET) as receiver:
        receiver.respond(Reply(status=410))
        await create_group(redis, "hooks")
        await publish(redis, events)
        settings = webhook(receiver.url, concurrency=1)
        async with running_worker(WebhookSink(settings), settings, redis, concurrency=1) as control:
            await control.wait_until(lambda c: c.paused is not None)
            assert "410" in (control.paused or "")
            seen = len(receiver.attempts)
            await asyncio.sleep(0.3)  # a paused sink stays quiet (what is checked is silence)
            assert len(receiver.attempts) == seen
            assert await dead_letters(redis) == []
            control.resume()
            await receiver.wait_for(20)
        assert by_viewer(received_events(receiver)) == by_viewer(events)


async def test_filters_pick_events_and_the_rest_is_acknowledged(redis: Redis) -> None:
    """events, stream_keys globs and countries select; the others are acked, not delivered."""
    events = make_events(90, 9)
    filtered = {"stream_keys": ["live-*"], "countries": ["pl", "FR"]}
    settings = webhook("http://x", filter=filtered, events=["viewer.connected"])
    wanted = [
        e
        for e in events
        if e["type"] == "viewer.connected"
        and e["streamKey"].startswith("live-")
        and e["country"] in ("PL", "FR")
    ]
    async with WebhookReceiver(SECRET) as receiver:
        await create_group(redis, "hooks")
        await publish(redis, events)
        real = webhook(receiver.url, filter=filtered, events=["viewer.connected"])
        async with running_worker(WebhookSink(real), settings, redis) as control:
            await receiver.wait_for(len(wanted))
            await control.wait_until(lambda c: c.filtered >= len(events) - len(wanted))
        assert sorted(e["id"] for e in received_events(receiver)) == sorted(e["id"] for e in wanted)
        assert await pending(redis, "hooks") == 0


async def test_a_new_worker_claims_what_a_dead_one_left(redis: Redis) -> None:
    """Entries read but never acked by a vanished worker are claimed and delivered."""
    events = make_events(10, 3)
    async with WebhookReceiver(SECRET) as receiver:
        await create_group(redis, "hooks")
        await publish(redis, events)
        await redis.xreadgroup("sink:hooks", "dead-worker", {KEYS.events: ">"}, count=6)
        settings = webhook(receiver.url)
        async with running_worker(WebhookSink(settings), settings, redis, claim_idle=0.3):
            await receiver.wait_for(10)
        assert by_viewer(received_events(receiver)) == by_viewer(events)
        consumers = await redis.xinfo_consumers(KEYS.events, "sink:hooks")
        assert "dead-worker" not in {c["name"].decode() for c in consumers}


async def test_retry_state_survives_a_new_worker(redis: Redis) -> None:
    """A retrying event keeps its attempt count across workers: the schedule does not restart."""
    events = make_events(1, 1)
    async with WebhookReceiver(SECRET) as receiver:
        receiver.default = Reply(status=503)
        await create_group(redis, "hooks")
        await publish(redis, events)
        settings = webhook(receiver.url, retry={"schedule": ["0s", "50ms", "60s", "0s"]})
        async with running_worker(WebhookSink(settings), settings, redis) as first:
            await first.wait_until(lambda c: c.retried >= 2)
        assert len(receiver.attempts) == 2
        entries: list[tuple[bytes, Any]] = await redis.xrange(KEYS.events)  # type: ignore[assignment]
        state: bytes | None = await redis.hget(KEYS.retries("hooks"), entries[0][0])  # type: ignore[assignment]
        assert state is not None
        assert state.startswith(b"2|503|")
        receiver.default = Reply(status=200)
        async with running_worker(WebhookSink(settings), settings, redis, claim_idle=0.1):
            await asyncio.sleep(0.5)  # the third attempt is due in 60 s, not now
        assert len(receiver.attempts) == 2


async def test_unreadable_entries_are_dead_lettered_not_lost(redis: Redis) -> None:
    """An entry that is not an event is dead-lettered with the reason; the rest flows."""
    events = make_events(2, 2)
    async with WebhookReceiver(SECRET) as receiver:
        await create_group(redis, "hooks")
        await redis.xadd(KEYS.events, {"type": "x", "id": "y", "event": "{not json"})
        await publish(redis, events)
        settings = webhook(receiver.url)
        async with running_worker(WebhookSink(settings), settings, redis):
            await receiver.wait_for(2)
        (dead,) = await dead_letters(redis)
        assert dead[b"reason"].startswith(b"unreadable: ")
        assert await pending(redis, "hooks") == 0


async def test_batch_mode_takes_a_viewers_queued_events_together_and_in_order(
    redis: Redis,
) -> None:
    """One viewer's 20 queued events go out 10 a request, in order, retries included."""
    events = make_events(20, 1)
    async with WebhookReceiver(SECRET) as receiver:
        receiver.respond(Reply(status=503), Reply(status=503))
        await create_group(redis, "hooks")
        await publish(redis, events)
        settings = webhook(receiver.url, batch_size=10, batch_wait="5s")
        async with running_worker(WebhookSink(settings), settings, redis) as control:
            await control.wait_until(lambda c: c.delivered >= 20)
        assert [len(r.json) for r in receiver.received] == [10, 10]
        assert [e["sequence"] for e in received_events(receiver)] == list(range(1, 21))
        assert len(receiver.attempts) == 4
        assert await pending(redis, "hooks") == 0


async def test_a_worker_waiting_to_claim_keeps_its_lease_and_order(redis: Redis) -> None:
    """While the new leader waits for a dead worker's entries to be claimable (longer than
    the lease), it renews its lease: a second replica never delivers in between, and every
    viewer's events arrive in stream order."""
    events = make_events(60, 6)
    async with WebhookReceiver(SECRET) as receiver:
        await create_group(redis, "hooks")
        await publish(redis, events)
        await redis.xreadgroup("sink:hooks", "gone-worker", {KEYS.events: ">"}, count=10)
        settings = webhook(receiver.url)
        first = running_worker(
            WebhookSink(settings), settings, redis, claim_idle=1.5, lease_ttl=0.6
        )
        second = running_worker(
            WebhookSink(settings), settings, redis, claim_idle=1.5, lease_ttl=0.6
        )
        async with first as a, second as b:
            await receiver.wait_for(60)
            async with asyncio.timeout(30):  # either may lead: whichever took the lease first
                while a.delivered + b.delivered < 60:
                    await asyncio.sleep(0.02)
            assert b.delivered == 0 or a.delivered == 0  # one leader, never both
        got = received_events(receiver)
        firsts: dict[str, dict[str, Any]] = {}
        for event in got:
            firsts.setdefault(event["id"], event)
        assert by_viewer(list(firsts.values())) == by_viewer(events)


async def test_events_trimmed_before_a_sink_read_them_are_reported(redis: Redis) -> None:
    """A stream trimmed past unread events: the worker says so in an error log line."""
    log = io.StringIO()
    configure_logging(fmt="json", level="info", stream=log)
    async with WebhookReceiver(SECRET) as receiver:
        await create_group(redis, "hooks")
        for event in make_events(3000, 30):
            await redis.xadd(
                KEYS.events,
                {"type": event["type"], "id": event["id"], "event": event["body"]},
                maxlen=100,
                approximate=False,
            )
        settings = webhook(receiver.url)
        async with running_worker(WebhookSink(settings), settings, redis, lease_ttl=0.3) as c:
            await c.wait_until(lambda control: control.delivered >= 100)
            while "sink.events_trimmed_unread" not in log.getvalue():
                await asyncio.sleep(0.05)  # the check runs with the lease renewal
    line = next(
        json.loads(x) for x in log.getvalue().splitlines() if "sink.events_trimmed_unread" in x
    )
    assert line["level"] == "error"


async def test_skip_initial_acknowledges_the_first_polls_events_without_delivering(
    redis: Redis,
) -> None:
    """With ``skip_initial`` the events marked ``data.initial`` are acked, not sent; the rest
    arrive as usual."""
    events = make_events(30, 6)
    for event in events[:12]:
        body = json.loads(event["body"])
        body["data"]["initial"] = True
        event["body"] = json.dumps(body).encode()
    async with WebhookReceiver(SECRET) as receiver:
        await create_group(redis, "hooks")
        await publish(redis, events)
        settings = webhook(receiver.url, skip_initial=True)
        async with running_worker(WebhookSink(settings), settings, redis) as control:
            await receiver.wait_for(18)
            await control.wait_until(lambda c: c.filtered >= 12)
        assert sorted(e["id"] for e in received_events(receiver)) == sorted(
            e["id"] for e in events[12:]
        )
        assert await pending(redis, "hooks") == 0


# --- what the worker logs and reports ----------------------------------------------------------


async def test_a_pause_after_failures_is_not_a_recovery(redis: Redis) -> None:
    """503 then 410: sink.failing, then sink.paused, and no sink.recovered before it; the first
    delivery after the resume is the recovery."""
    events = make_events(1, 1)
    with structlog.testing.capture_logs() as logs:
        async with WebhookReceiver(SECRET) as receiver:
            receiver.respond(Reply(status=503), Reply(status=410))
            await create_group(redis, "hooks")
            await publish(redis, events)
            settings = webhook(receiver.url)
            async with running_worker(WebhookSink(settings), settings, redis) as control:
                await control.wait_until(lambda c: c.paused is not None)
                told = [e["event"] for e in logs if e["event"].startswith("sink.")]
                control.resume()
                await receiver.wait_for(1)
                await control.wait_until(lambda c: c.delivered == 1)
    assert [e for e in told if e in ("sink.failing", "sink.recovered", "sink.paused")] == [
        "sink.failing",
        "sink.paused",
    ]
    after = [e["event"] for e in logs if e["event"] in ("sink.recovered", "sink.failing")]
    assert after == ["sink.failing", "sink.recovered"]


@asynccontextmanager
async def reporting_worker(
    settings: WebhookSinkSettings, redis: Redis, *, report_every: float
) -> AsyncIterator[SinkControl]:
    """A worker of sink ``hooks`` on ``KEYS`` writing its report every ``report_every`` s."""
    control = SinkControl(settings.name)
    sink = WebhookSink(settings)
    worker = SinkWorker(
        sink,
        settings,
        control,
        cluster=KEYS.cluster,
        redis=redis,
        keys=KEYS,
        owner="test-report",
        maxlen=100_000,
        lease_ttl=2.0,
        claim_idle=2.0,
        rng=random.Random(0),
        report_every=report_every,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        yield control
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await sink.aclose()


async def until(check: Callable[[], Awaitable[object]]) -> None:
    """Until ``check()`` is truthy (asked every 10 ms; the test's timeout bounds it)."""
    while not await check():
        await asyncio.sleep(0.01)


async def report(redis: Redis) -> LaneReport:
    """The lane's report as the status model reads it."""
    fields = await redis.hgetall(KEYS.sink_state("hooks"))
    return LaneReport.decode(cast("dict[bytes, bytes]", fields))


async def test_the_lane_report_says_paused_at_once_with_urls_masked(redis: Redis) -> None:
    """With reports an hour apart, a pause is still written at once, with the last error and
    the last delivery, every URL cut to scheme and host; a resume removes it at once; a stale
    pause left by a dead worker is cleared by the next worker that leads."""
    await redis.hset(KEYS.sink_state("hooks"), "paused", "left by a dead worker")
    events = make_events(3, 1)
    body = b"see https://hooks.example.com/T0/secret-path?token=abc\nthen retry"
    async with WebhookReceiver(SECRET) as receiver:
        receiver.respond(Reply(status=200), Reply(status=503), Reply(status=410, body=body))
        await create_group(redis, "hooks")
        await publish(redis, events)
        settings = webhook(receiver.url)
        async with reporting_worker(settings, redis, report_every=3600) as control:
            await until(lambda: pause_is(redis, "HTTP 410"))
            lane = await report(redis)
            reason = "HTTP 410: see https://hooks.example.com/… then retry (Gone: the endpoint"
            assert lane.paused == lane.last_error
            assert lane.paused is not None
            assert lane.paused.startswith(reason)
            assert lane.last_error_at is not None
            assert lane.last_delivered_at is not None
            assert lane.last_error_at >= lane.last_delivered_at
            receiver.default = Reply(status=200)
            control.resume()
            await until(lambda: pause_is(redis, None))
            await receiver.wait_for(3)
    stored = await report(redis)
    assert "secret-path" not in repr(stored)
    assert "token=abc" not in repr(stored)


async def pause_is(redis: Redis, prefix: str | None) -> bool:
    """Whether the lane's report says paused with ``prefix`` (None: not paused)."""
    paused = (await report(redis)).paused
    return paused is None if prefix is None else (paused or "").startswith(prefix)


async def test_a_report_that_cannot_be_written_fails_no_delivery(redis: Redis) -> None:
    """The report's key holds a string (HSET fails): every event is still delivered and
    acknowledged, and the failure is logged once."""
    await redis.set(KEYS.sink_state("hooks"), "not a hash")
    events = make_events(40, 8)
    with structlog.testing.capture_logs() as logs:
        async with WebhookReceiver(SECRET) as receiver:
            await create_group(redis, "hooks")
            await publish(redis, events)
            settings = webhook(receiver.url)
            async with reporting_worker(settings, redis, report_every=0.01) as control:
                await receiver.wait_for(40)
                await control.wait_until(lambda c: c.delivered == 40)
    assert by_viewer(received_events(receiver)) == by_viewer(events)
    assert await pending(redis, "hooks") == 0
    assert [e["event"] for e in logs].count("sink.report_failed") == 1
