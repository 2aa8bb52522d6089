"""Delivery to real local receivers through a real redis-server: webhooks, Slack, stdout."""

from __future__ import annotations

import asyncio
import io
import json
import re
import time
from typing import TYPE_CHECKING, Any

import pytest
from redis.asyncio import Redis

from notifier.logs import configure_logging
from notifier.sinks.base import Event, decode_event
from notifier.sinks.slack.config import SlackSinkSettings
from notifier.sinks.slack.sink import SlackSink
from notifier.sinks.stdout import StdoutSink, StdoutSinkSettings
from notifier.sinks.webhook import WebhookSink, WebhookSinkSettings
from notifier.sinks.webhook.sink import BATCH_CONTENT_TYPE
from notifier.sinks.worker import SinkControl, matches

from .receivers import Reply, SlackStandIn, WebhookReceiver, slack_reply
from .sink_support import (
    KEYS,
    by_viewer,
    create_group,
    make_events,
    pending,
    publish,
    running_worker,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OTHER_SECRET = "whsec_c2Vjb25kLXNlY3JldC1rZXktMzItYnl0ZXMh"
FAST = {"schedule": ["0s", "50ms", "100ms", "150ms", "200ms"]}


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    """A client of the private redis-server."""
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


def webhook(url: str, **extra: Any) -> WebhookSinkSettings:
    return WebhookSinkSettings.model_validate(
        {"name": "hooks", "url": url, "secret": SECRET, "retry": FAST, "timeout": "2s", **extra}
    )


async def dead_letters(redis: Redis, sink: str = "hooks") -> list[dict[bytes, bytes]]:
    entries: list[tuple[bytes, dict[bytes, bytes]]] = await redis.xrange(KEYS.dlq(sink))  # type: ignore[assignment]
    return [fields for _, fields in entries]


def received_events(receiver: WebhookReceiver) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for item in receiver.received:
        out += item.json if isinstance(item.json, list) else [item.json]
    return out


async def test_every_event_arrives_signed_in_order_and_is_acknowledged(redis: Redis) -> None:
    """300 events of 30 viewers: each verified by standardwebhooks, per viewer in order, acked."""
    events = make_events(300, 30)
    settings = webhook("http://x")
    async with WebhookReceiver(SECRET) as receiver:
        await create_group(redis, "hooks")
        await publish(redis, events)
        async with running_worker(WebhookSink(webhook(receiver.url)), settings, redis) as control:
            await receiver.wait_for(300)
        got = received_events(receiver)
        assert sorted(e["id"] for e in got) == sorted(e["id"] for e in events)
        assert by_viewer(got) == by_viewer(events)
        first = receiver.received[0]
        assert first.id == first.json["id"]
        assert first.content_type == "application/cloudevents+json"
        assert abs(first.timestamp - time.time()) < 60
        assert control.delivered == 300
        assert await pending(redis, "hooks") == 0
        assert not await redis.exists(KEYS.retries("hooks"))


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


async def test_retry_after_is_honoured(redis: Redis) -> None:
    """A 429 with Retry-After: 1 delays the next attempt by at least a second."""
    events = make_events(1, 1)
    async with WebhookReceiver(SECRET) as receiver:
        receiver.respond(Reply(status=429, headers={"Retry-After": "1"}))
        await create_group(redis, "hooks")
        await publish(redis, events)
        settings = webhook(receiver.url)
        async with running_worker(WebhookSink(settings), settings, redis):
            await receiver.wait_for(1)
        first, second = receiver.attempts[0], receiver.attempts[1]
        assert (first.status, second.status) == (429, 200)
        assert second.time - first.time >= 0.95


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


async def test_redirects_and_timeouts(redis: Redis) -> None:
    """A redirect is never followed (dead letter); a slow answer times out and is retried."""
    events = make_events(2, 2)
    async with WebhookReceiver(SECRET) as receiver:
        receiver.respond(
            Reply(status=302, redirect_to="http://127.0.0.1:9/elsewhere"), Reply(delay=1.0)
        )
        await create_group(redis, "hooks")
        await publish(redis, events)
        settings = webhook(receiver.url, timeout="300ms", concurrency=1)
        async with running_worker(WebhookSink(settings), settings, redis, concurrency=1):
            await receiver.wait_for(2)  # the slow one lands late, then its retry
        (dead,) = await dead_letters(redis)
        assert dead[b"reason"] == b"HTTP 302: redirects are not followed"
        assert all(a.path == "/hook" for a in receiver.attempts)


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


def test_filter_matching_rules() -> None:
    """Each filter key narrows; an empty list lets everything through."""
    (event,) = [decode_event("eu-1", "1-0", {b"event": e["body"]}) for e in make_events(1, 1)]
    base = {"name": "x", "url": "http://x", "secret": SECRET}
    assert matches(WebhookSinkSettings.model_validate(base), event)
    for key, good, bad in [
        ("clusters", ["eu-1"], ["us-1"]),
        ("stream_keys", ["live-?"], ["back*"]),
        ("application_ids", ["app-1"], ["app-2"]),
        ("harness_types", ["STORM_MSE_VIEWER"], ["RTMP_VIEWER"]),
        ("countries", ["pl"], ["DE"]),
    ]:
        assert matches(WebhookSinkSettings.model_validate({**base, "filter": {key: good}}), event)
        assert not matches(
            WebhookSinkSettings.model_validate({**base, "filter": {key: bad}}), event
        )


async def test_batch_mode_sends_arrays_in_viewer_order(redis: Redis) -> None:
    """batch_size 10: JSON arrays, the batch content type, one signature, order per viewer."""
    events = make_events(100, 25)
    async with WebhookReceiver(SECRET) as receiver:
        await create_group(redis, "hooks")
        await publish(redis, events)
        settings = webhook(receiver.url, batch_size=10, batch_wait="50ms")
        async with running_worker(WebhookSink(settings), settings, redis) as control:
            await control.wait_until(lambda c: c.delivered >= 100)
        assert all(isinstance(r.json, list) for r in receiver.received)
        assert {r.content_type for r in receiver.received} == {BATCH_CONTENT_TYPE}
        assert max(len(r.json) for r in receiver.received) == 10
        assert by_viewer(received_events(receiver)) == by_viewer(events)


async def test_secret_rotation_signs_with_every_secret(redis: Redis) -> None:
    """Two secrets: a receiver that knows only the new one verifies every request."""
    events = make_events(5, 5)
    async with WebhookReceiver(OTHER_SECRET) as receiver:
        await create_group(redis, "hooks")
        await publish(redis, events)
        settings = webhook(
            receiver.url, secret=[SECRET, OTHER_SECRET], headers={"Authorization": "Bearer t0ken"}
        )
        async with running_worker(WebhookSink(settings), settings, redis):
            await receiver.wait_for(5)
        assert receiver.received[0].headers["webhook-signature"].count("v1,") == 2
        assert receiver.received[0].headers["Authorization"] == "Bearer t0ken"


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


# --- Slack -------------------------------------------------------------------------------------


def slack(url: str, **extra: Any) -> SlackSinkSettings:
    return SlackSinkSettings.model_validate(
        {"name": "ops", "webhook_url": url, "group_wait": "200ms", "retry": FAST, **extra}
    )


@pytest.mark.timeout(90)
async def test_slack_gets_valid_grouped_messages_never_faster_than_one_a_second(
    redis: Redis,
) -> None:
    """Three streams' events become grouped Block Kit messages, paced to 1/s, all delivered."""
    events = make_events(60, 12)
    async with SlackStandIn() as stand_in:
        stand_in.respond(slack_reply(429, "rate_limited", retry_after=1))
        await create_group(redis, "ops")
        await publish(redis, events)
        settings = slack(stand_in.url)
        control = SinkControl("ops")
        async with running_worker(
            SlackSink(settings), settings, redis, control=control, concurrency=2
        ):
            await asyncio.wait_for(control.wait_until(lambda c: c.delivered >= 60), 80)
        assert stand_in.invalid == []
        assert all(gap >= 0.99 for gap in stand_in.intervals())
        assert control.dead_lettered == 0
        texts = " ".join(m.payload["text"] for m in stand_in.messages)
        for stream_key in ("live-1", "live-2", "backstage"):
            assert stream_key in texts
        counted = re.findall(r"(\d+) (?:joined|left|health dropped|recovered)", texts)
        assert sum(int(n) for n in counted) == 60  # every event is in exactly one message
        assert await pending(redis, "ops") == 0


@pytest.mark.parametrize(
    ("status", "reason"),
    [(403, "invalid_token"), (404, "channel_not_found"), (410, "channel_is_archived")],
)
async def test_slack_revoked_webhooks_pause(redis: Redis, status: int, reason: str) -> None:
    """403/404/410 from Slack pause the sink; nothing is dead-lettered."""
    events = make_events(3, 1)
    async with SlackStandIn() as stand_in:
        stand_in.respond(slack_reply(status, reason))
        await create_group(redis, "ops")
        await publish(redis, events)
        settings = slack(stand_in.url, group_wait="0s")
        async with running_worker(SlackSink(settings), settings, redis) as control:
            await control.wait_until(lambda c: c.paused is not None)
        assert reason in (control.paused or "")
        assert await dead_letters(redis, "ops") == []
        assert await pending(redis, "ops") == 3


async def test_slack_invalid_payload_dead_letters(redis: Redis) -> None:
    """Slack's 400 invalid_payload goes to the dead letters, and the sink carries on."""
    events = make_events(2, 1)
    async with SlackStandIn() as stand_in:
        stand_in.respond(slack_reply(400, "invalid_payload"))
        await create_group(redis, "ops")
        await publish(redis, events[:1])
        settings = slack(stand_in.url, group_wait="0s")
        async with running_worker(SlackSink(settings), settings, redis) as control:
            await control.wait_until(lambda c: c.dead_lettered > 0)
            await publish(redis, events[1:])
            await stand_in.wait_for(1)
        (dead,) = await dead_letters(redis, "ops")
        assert dead[b"reason"] == b"HTTP 400: invalid_payload"


async def test_stdout_sink_writes_json_lines() -> None:
    """The stdout sink writes each event as one line, exactly as in the stream."""
    out = io.BytesIO()
    sink = StdoutSink(StdoutSinkSettings(name="out"), out)
    events = [
        Event(
            cluster="c",
            entry_id=f"{i}-0",
            id=str(i),
            type="viewer.connected",
            subject="v",
            sequence=i,
            body=json.dumps({"n": i}).encode(),
        )
        for i in range(3)
    ]
    assert (await sink.deliver(events)).__class__.__name__ == "Delivered"
    assert out.getvalue().splitlines() == [e.body for e in events]
    out.close()
    closed = await sink.deliver(events)
    assert closed.__class__.__name__ == "Failed"


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
            await a.wait_until(lambda c: c.delivered + b.delivered >= 60)
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


async def test_slack_rate_limits_use_up_no_attempt(redis: Redis) -> None:
    """Three 429s on a two-step schedule: still delivered, nothing dead-lettered."""
    events = make_events(1, 1)
    async with SlackStandIn() as stand_in:
        stand_in.respond(*[slack_reply(429, "rate_limited", retry_after=0)] * 3)
        await create_group(redis, "ops")
        await publish(redis, events)
        settings = slack(stand_in.url, group_wait="0s", retry={"schedule": ["0s", "10ms"]})
        async with running_worker(SlackSink(settings), settings, redis) as control:
            await control.wait_until(lambda c: c.delivered == 1)
        assert control.dead_lettered == 0
        assert [a.status for a in stand_in.attempts] == [429, 429, 429, 200]
