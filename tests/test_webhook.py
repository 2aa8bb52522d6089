"""The webhook sink against a real receiver that verifies with ``standardwebhooks``: signatures,
secret rotation, headers, Retry-After, redirects, timeouts, batch bodies.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from notifier.sinks.webhook import WebhookSink
from notifier.sinks.webhook.sink import BATCH_CONTENT_TYPE
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
    from redis.asyncio import Redis

OTHER_SECRET = "whsec_c2Vjb25kLXNlY3JldC1rZXktMzItYnl0ZXMh"


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
