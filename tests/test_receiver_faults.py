"""Receiver faults (issue 14, item 3): a real SinkWorker and webhook sink on a real redis-server
deliver to a real receiver on 127.0.0.1 (``testkit.faulty_receiver``) that times out, resets
the connection, answers 5xx for a long stretch, answers 410, is slower than the event rate, or
answers 2xx with a huge body.

Each test checks that every event arrives at least once after the fault ends, in per-viewer
order, that none is dropped or dead-lettered, and that what waits is visible meanwhile, the
same in ``notifier_sink_waiting`` (``/metrics``) and in the status model (``/api/status``),
both served by a real ``Endpoint``. Each counts how many requests met its fault (the
receiver's ``hits``), keeps it in its tally (``docs/reliability.md``) and prints it with its
other figures on one line (``pytest -rA`` shows it). The rig: ``testkit.faulty_receiver``.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import TYPE_CHECKING

import pytest

from notifier.sinks.acks import ACK_BATCH
from notifier.sinks.webhook.sink import ANSWER_LIMIT
from notifier.sinks.worker import READ_COUNT
from testkit.faulty_receiver import (
    FaultyReceiver,
    Hang,
    Huge,
    Reset,
    Slow,
    Stall,
    Status,
    all_arrived,
    check_arrived,
    delivering,
    steps,
)
from testkit.lane_watch import Memory, Seen, steady, until
from testkit.sink_support import KEYS, SECRET, dead_letters, make_events, pending, publish

if TYPE_CHECKING:
    from collections.abc import Callable

    from redis.asyncio import Redis

    from testkit.reliability import Tally

MB = 1024 * 1024


def hit(receiver: FaultyReceiver, kind: str, times: int) -> Callable[[], bool]:
    """A condition: ``times`` requests have met a fault of ``kind``."""
    return lambda: receiver.hits[kind] >= times


def report(test: str, **figures: object) -> None:
    """The test's figures (how often it tried its fault...) on one line of its output: shown
    by ``pytest -rA`` (or ``-s``)."""
    print(f"{test}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))


async def check_nothing_left(redis: Redis) -> None:
    """Everything acknowledged, no retry state left, nothing dead-lettered."""
    assert await pending(redis, "hooks") == 0
    assert not await redis.exists(KEYS.retries("hooks"))
    assert await dead_letters(redis) == []


@pytest.mark.timeout(60)
@pytest.mark.reliability(
    fault="Webhook receiver never answers",
    injected=(
        "the receiver holds every request unanswered until 18 have met the sink's 200 ms "
        "timeout; 30 events, 6 viewers"
    ),
    checked=(
        "nothing acknowledged meanwhile; metric and status agree: 6 retrying, 24 in hand, the "
        "timeout as last error; then all arrive, in order"
    ),
)
async def test_a_receiver_that_never_answers_times_out_and_nothing_is_lost(
    redis: Redis, redis_url: str, tally: Tally
) -> None:
    """(a) Timeouts: the receiver holds every request unanswered (``Hang``) until 18 requests
    have met the sink's 200 ms timeout, three per viewer's first event. Meanwhile nothing is
    acknowledged; the lane shows 6 retrying (each viewer's head) and 24 in hand, in the metric
    and the status alike, with the timeout as its last error. Then it answers: all 30 arrive."""
    events = make_events(30, 6, seed=11)
    async with FaultyReceiver(SECRET) as receiver:
        receiver.fault = Hang()
        async with delivering(
            redis, redis_url, receiver, timeout="200ms", retry=steps(40, "50ms")
        ) as rig:
            await publish(redis, events)
            await until(lambda: receiver.hits["hang"] >= 18, "18 requests timed out", timeout=30)
            seen = await steady(
                rig.watch,
                lambda s: s.lane.retrying == 6 and s.lane.last_error is not None,
                "6 retrying",
            )
            assert seen.waiting == {"unread": 0.0, "in_hand": 24.0, "retrying": 6.0}
            assert seen.lane.last_error == "no answer within 200ms"
            assert receiver.received == []
            receiver.fault = None
            await until(lambda: all_arrived(receiver, events), "every event arrived")
        hits = receiver.hits["hang"]
        report("hang", fault_hits=hits)
        tally.tried, tally.events = hits, len(events)
        assert hits >= 18
        tally.duplicated = check_arrived(receiver, events)
        await check_nothing_left(redis)


@pytest.mark.timeout(60)
@pytest.mark.reliability(
    fault="Webhook receiver resets the connection",
    injected=(
        "the receiver reads each request and resets the TCP connection (RST) until 60 have met "
        "it; 30 events, 6 viewers"
    ),
    checked=(
        "the lane shows the reset as last error, 6 retrying, 24 in hand; then every event "
        "arrives, in per-viewer order; none dead-lettered"
    ),
)
async def test_a_receiver_that_resets_the_connection_loses_nothing(
    redis: Redis, redis_url: str, tally: Tally
) -> None:
    """(b) Connection resets: the receiver reads each request and resets the TCP connection
    (RST, no answer) until 60 requests have met it, ten per viewer's head on a schedule of 20 ms
    steps; the lane shows the reset as its last error and the heads as retrying. Then it
    answers: all 30 arrive, in per-viewer order."""
    events = make_events(30, 6, seed=12)
    async with FaultyReceiver(SECRET) as receiver:
        receiver.fault = Reset()
        async with delivering(redis, redis_url, receiver, retry=steps(100, "20ms")) as rig:
            await publish(redis, events)
            await until(lambda: receiver.hits["reset"] >= 60, "60 connections reset")
            seen = await steady(
                rig.watch,
                lambda s: s.lane.retrying == 6 and s.lane.last_error is not None,
                "6 retrying",
            )
            assert seen.waiting == {"unread": 0.0, "in_hand": 24.0, "retrying": 6.0}
            assert "reset" in (seen.lane.last_error or "").lower()
            receiver.fault = None
            await until(lambda: all_arrived(receiver, events), "every event arrived")
        hits = receiver.hits["reset"]
        report("reset", fault_hits=hits)
        tally.tried, tally.events = hits, len(events)
        assert hits >= 60
        tally.duplicated = check_arrived(receiver, events)
        await check_nothing_left(redis)


@pytest.mark.timeout(60)
@pytest.mark.reliability(
    fault="Webhook receiver answers 5xx for a long stretch",
    injected=(
        "500, 502, 503, 504 in turn for 2 s against a retry schedule of 100 ms steps (minutes "
        "of 5xx, scaled down); 40 events"
    ),
    checked=(
        "the lane holds at 8 retrying, 32 in hand, last error HTTP 50x; nothing dead-lettered; "
        "then all arrive, in per-viewer order"
    ),
)
async def test_minutes_of_5xx_then_recovery_lose_nothing(
    redis: Redis, redis_url: str, tally: Tally
) -> None:
    """(c) 5xx for a long stretch, scaled down: minutes of 500/502/503/504 against the default
    schedule (5 s, then 5 min, 30 min... between attempts) become 2 s against a schedule of
    100 ms steps (50 attempts, at least 3.9 s of them with the jitter, so the outage ends before
    any event's schedule does): about 20 failed attempts per waiting event, more than an hour
    of outage costs on the default schedule. While it lasts the lane holds still at 8 retrying
    (the viewers' heads) and 32 in hand; afterwards all 40 arrive, in per-viewer order."""
    events = make_events(40, 8, seed=13)
    statuses = (500, 502, 503, 504)
    async with FaultyReceiver(SECRET) as receiver:
        receiver.fault = Status(503, body=b"upstream down")
        async with delivering(redis, redis_url, receiver, retry=steps(50, "100ms")) as rig:
            await publish(redis, events)
            started = time.monotonic()
            for turn in range(1_000):  # a different 5xx every 8 hits, for 2 s
                receiver.fault = Status(statuses[turn % 4], body=b"upstream down")
                await until(hit(receiver, "status", receiver.hits["status"] + 8), "8 more 5xx")
                if time.monotonic() - started >= 2.0:
                    break
            seen = await steady(rig.watch, lambda s: s.lane.retrying == 8, "8 retrying")
            assert seen.waiting == {"unread": 0.0, "in_hand": 32.0, "retrying": 8.0}
            assert (seen.lane.last_error or "").startswith("HTTP 50")
            assert await dead_letters(redis) == []
            receiver.fault = None
            await until(lambda: all_arrived(receiver, events), "every event arrived")
        hits = receiver.hits["status"]
        report("5xx", fault_hits=hits)
        tally.tried, tally.events = hits, len(events)
        assert hits >= 8 * 10
        tally.duplicated = check_arrived(receiver, events)
        assert rig.control.dead_lettered == 0
        await check_nothing_left(redis)


@pytest.mark.timeout(60)
@pytest.mark.reliability(
    fault="Webhook receiver answers 410 Gone",
    injected=(
        "the receiver answers 410 to every request, also after a resume (SIGHUP); then it is "
        "back and the worker restarts"
    ),
    checked=(
        "the sink pauses and says why (control, status, /readyz, metric); all 20 events kept, "
        "none dead-lettered; all delivered after"
    ),
)
async def test_410_pauses_says_why_and_keeps_every_event_for_the_resume(
    redis: Redis, redis_url: str, tally: Tally
) -> None:
    """(d) 410 Gone: the sink pauses and says why (the control, the status's sink and lane,
    ``/readyz``, ``notifier_sink_paused``); nothing is dead-lettered or acknowledged: all 20
    events wait, in hand. Resumed (SIGHUP) while the endpoint is still gone, it meets 410
    again and pauses again; once the endpoint is back, a restarted worker (a restart resumes)
    delivers all 20, in per-viewer order, and the pause is gone from the status."""
    events = make_events(20, 5, seed=14)
    gone = Status(410, body=b"this hook was deleted")
    async with FaultyReceiver(SECRET) as receiver:
        receiver.fault = gone
        async with delivering(redis, redis_url, receiver, concurrency=1) as rig:
            await publish(redis, events)
            await until(lambda: rig.control.paused is not None, "paused")
            assert (
                rig.control.paused
                == "HTTP 410: this hook was deleted (Gone: the endpoint was removed)"
            )
            seen = await steady(rig.watch, lambda s: s.sink_paused is not None, "paused, shown")
            assert seen.sink_paused == rig.control.paused
            assert seen.lane.paused == rig.control.paused
            assert seen.paused_metric == 1.0
            assert seen.waiting == {"unread": 0.0, "in_hand": 20.0, "retrying": 0.0}
            ready, body = await rig.watch.readyz()
            assert ready == 503
            assert "hooks" in body
            assert "410" in body
            first_pause = receiver.hits["status"]

            rig.control.resume()  # SIGHUP, the endpoint still gone
            await until(lambda: receiver.hits["status"] > first_pause, "410 met again")
            await until(lambda: rig.control.paused is not None, "paused again")
            assert await dead_letters(redis) == []
            assert await pending(redis, "hooks") == 20
        receiver.fault = None
        async with delivering(redis, redis_url, receiver, claim_idle=0.2) as again:
            await until(lambda: all_arrived(receiver, events), "every event arrived")
            await steady(again.watch, lambda s: s.sink_paused is None, "the pause is gone")
        hits = receiver.hits["status"]
        report("410", fault_hits=hits)
        tally.tried, tally.events = hits, len(events)
        assert hits >= 2
        tally.duplicated = check_arrived(receiver, events)
        await check_nothing_left(redis)


@pytest.mark.timeout(90)
@pytest.mark.reliability(
    fault="Webhook receiver slower than the event rate",
    injected=(
        "1,500 events at about 700/s; the receiver answers each after 20 ms, two at a time, "
        "and stalls twice"
    ),
    checked=(
        "the backlog grows in the stream, visible; the worker holds at most its backlog (100); "
        "memory flat; all arrive once, in order"
    ),
)
async def test_a_receiver_slower_than_the_event_rate_builds_a_visible_bounded_backlog(
    redis: Redis, redis_url: str, tally: Tally
) -> None:
    """(e) Back-pressure: 1,500 events arrive at about 700/s while the receiver answers each
    after 20 ms, two at a time (at most ~100/s). The backlog grows in the stream, not in the
    worker: it holds at most its backlog (100 here; 10,000 by default), each XREADGROUP asks
    for at most that room and ``READ_COUNT``, and the process does not grow. Twice while it
    grows the receiver stalls (``Hold``) so the lane is still: the metric and the status agree
    exactly, ``in_hand`` is within the bound (above half of it: the worker reads again once
    half is free) and ``unread`` is larger the second time. Then the
    receiver speeds up: all 1,500 arrive exactly once, in per-viewer order."""
    backlog = 100
    events = make_events(1_500, 60, seed=15)
    chunks = [events[i : i + 50] for i in range(0, len(events), 50)]
    async with FaultyReceiver(SECRET) as receiver:
        receiver.fault = Slow(0.02)
        async with (
            delivering(
                redis, redis_url, receiver, concurrency=2, backlog=backlog, timeout="10s"
            ) as rig,
            Memory() as memory,
        ):
            looks: list[Seen] = []
            stills: list[Seen] = []
            for n, chunk in enumerate(chunks, start=1):
                await publish(redis, chunk)
                looks.append(await rig.watch.look())
                if n in (10, 25):  # the receiver stalls: the lane stands still, and is compared
                    receiver.hold()
                    stills.append(
                        await steady(rig.watch, lambda s: s.lane.in_hand > backlog // 2, "still")
                    )
                    receiver.release()
                    receiver.fault = Slow(0.02)
                await asyncio.sleep(0.05)  # the event rate: 50 events every 50 ms or so
            receiver.fault = None
            await until(lambda: all_arrived(receiver, events), "every event arrived", timeout=60)
        hits = receiver.hits["slow"] + receiver.hits["hold"]
        tally.tried, tally.events = hits, len(events)
        report(
            "slow",
            fault_hits=hits,
            peak_unread=max(s.waiting["unread"] or 0 for s in looks),
            peak_in_hand=max(s.waiting["in_hand"] or 0 for s in looks),
            stills=[(s.lane.lag, s.lane.in_hand) for s in stills],
            largest_read=max(rig.stream.asked),
            rss_growth_mb=round(memory.growth / MB, 1),
        )

        first, second = stills
        assert backlog // 2 < first.lane.in_hand <= backlog
        assert backlog // 2 < second.lane.in_hand <= backlog
        assert (second.lane.lag or 0) > (first.lane.lag or 0) + 500
        unread = [s.waiting["unread"] or 0 for s in looks]
        assert max(unread) >= 800
        assert sum(b > a for a, b in itertools.pairwise(unread)) >= len(unread) // 2
        assert all((s.waiting["in_hand"] or 0) <= backlog + ACK_BATCH for s in looks)
        assert all(s.lane.pending <= backlog + ACK_BATCH for s in looks)
        assert max(rig.stream.asked) <= min(READ_COUNT, backlog)
        assert max(rig.stream.got) <= backlog
        assert receiver.most_in_flight <= 2
        assert memory.growth < 64 * MB
        tally.duplicated = check_arrived(receiver, events)
        assert tally.duplicated == 0
        await check_nothing_left(redis)


@pytest.mark.timeout(60)
@pytest.mark.reliability(
    fault="Webhook receiver answers 2xx with a 50 MB body",
    injected="every one of 20 requests answered 200 with a 50 MB body",
    checked=(
        "each delivered at once, not retried; under 16 MB of each body sent, memory grows "
        "under 32 MB; all arrive exactly once"
    ),
)
async def test_a_2xx_with_a_huge_body_is_delivered_without_reading_the_body(
    redis: Redis, redis_url: str, tally: Tally
) -> None:
    """(f) A 2xx with a 50 MB body, for every one of 20 events: each counts as delivered at
    once (no retry), the worker reads only ``ANSWER_LIMIT`` bytes of it and hangs up, so the
    receiver gets to send a few MB at most of each (socket buffers), and the process does not
    grow by anything near a body."""
    events = make_events(20, 4, seed=16)
    size = 50 * 1000 * 1000
    async with FaultyReceiver(SECRET) as receiver, Memory() as memory:
        receiver.fault = Huge(size)
        async with delivering(redis, redis_url, receiver) as rig:
            await publish(redis, events)
            await until(lambda: rig.control.delivered >= 20, "20 delivered")
            await steady(rig.watch, lambda s: s.lane.pending == 0, "all acknowledged")
        hits = receiver.hits["huge"]
        tally.tried, tally.events = hits, len(events)
        report(
            "huge",
            fault_hits=hits,
            most_body_sent_mb=round(max(receiver.body_sent) / MB, 1),
            rss_growth_mb=round(memory.growth / MB, 1),
        )
        assert hits == 20
        assert rig.control.retried == 0
        assert len(receiver.body_sent) == 20
        assert max(receiver.body_sent) < 16 * MB  # of 50 MB: what the socket buffers took
        assert memory.growth < 32 * MB
        assert ANSWER_LIMIT < MB
        tally.duplicated = check_arrived(receiver, events)
        assert tally.duplicated == 0
        await check_nothing_left(redis)


@pytest.mark.timeout(60)
@pytest.mark.reliability(
    fault="Webhook receiver answers 2xx and never sends the body",
    injected="every one of 12 requests answered 200 with a Content-Length of 1,000 and no body",
    checked="each delivered at once, exactly once: 12 delivered, none retried or dead-lettered",
)
async def test_a_2xx_whose_body_never_comes_is_delivered_once(
    redis: Redis, redis_url: str, tally: Tally
) -> None:
    """(f, the other end of a huge body) A 2xx whose body never comes, for every one of 12
    events: the status is the receiver's answer, so each counts as delivered at once, exactly
    once. (The sink used to wait for the first bytes of the body: each delivery timed out and
    was retried until its schedule ran out, and the receiver got every event again and again
    before it was dead-lettered.)"""
    events = make_events(12, 3, seed=17)
    async with FaultyReceiver(SECRET) as receiver:
        receiver.fault = Stall()
        async with delivering(
            redis, redis_url, receiver, timeout="300ms", retry=steps(3, "50ms")
        ) as rig:
            await publish(redis, events)
            await until(lambda: rig.control.delivered + rig.control.dead_lettered >= 12, "done")
            await steady(rig.watch, lambda s: s.lane.pending == 0, "all acknowledged")
        hits = receiver.hits["stall"]
        report("stall", fault_hits=hits)
        tally.tried, tally.events = hits, len(events)
        assert (rig.control.delivered, rig.control.retried, rig.control.dead_lettered) == (12, 0, 0)
        assert hits == 12
        tally.duplicated = check_arrived(receiver, events)
        assert tally.duplicated == 0
        await check_nothing_left(redis)
