"""The Slack sink against a stand-in that validates with ``slack_sdk`` and rate-limits like Slack:
grouped Block Kit messages, pacing, revoked webhooks, invalid payloads.
"""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING, Any

import pytest
from aiohttp import web

from notifier.events import AudienceStarted, Connected, Envelope, decode_event
from notifier.sinks.base import Delivered
from notifier.sinks.control import SinkControl
from notifier.sinks.slack.config import SlackSinkSettings
from notifier.sinks.slack.sink import SlackSink
from testkit.receivers import SlackStandIn, slack_reply
from testkit.sink_support import (
    EPOCH,
    FAST,
    KEYS,
    create_group,
    dead_letters,
    make_events,
    pending,
    publish,
    running_worker,
)
from tests.conftest import scripted_storm

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from notifier.events import Emission, StreamEmission


def slack(url: str, **extra: Any) -> SlackSinkSettings:
    """Settings of a Slack sink ``ops`` posting to ``url``, grouping for 200 ms."""
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


async def test_rate_limited_events_leave_no_retry_state_behind(redis: Redis) -> None:
    """A 429 saves a retry state with no attempt used; delivering the event removes it."""
    events = make_events(3, 3)
    async with SlackStandIn() as stand_in:
        stand_in.respond(*[slack_reply(429, "rate_limited", retry_after=0)] * 2)
        await create_group(redis, "ops")
        await publish(redis, events)
        settings = slack(stand_in.url, group_wait="0s", retry={"schedule": ["0s", "10ms"]})
        async with running_worker(SlackSink(settings), settings, redis) as control:
            await control.wait_until(lambda c: c.delivered == 3)
        assert await redis.hlen(KEYS.retries("ops")) == 0


async def test_stream_events_share_the_message_of_their_streams_viewers(redis: Redis) -> None:
    """A stream event (subject: the streamKey) is grouped with its stream's viewer events into
    one message, its card on top; another stream's events make their own message."""
    envelope = Envelope(cluster=KEYS.cluster, epoch=EPOCH, time_ms=1_770_000_000_000)
    record = b'{"id":"v_1","streamKey":"live-1","applicationId":"app-1"}'
    other = b'{"id":"v_2","streamKey":"live-2","applicationId":"app-1"}'
    emissions: list[Emission | StreamEmission] = [
        Connected("v_1", record),
        Connected("v_2", other),
        AudienceStarted("app-1", "live-1", viewers=1, initial=False),
        AudienceStarted("app-1", "live-2", viewers=1, initial=False),
    ]
    events = []
    for sequence, emission in enumerate(emissions, 1):
        event_id, body = envelope.encode_emission(emission, sequence)
        events.append({"type": emission.type, "id": event_id, "body": body})
    async with SlackStandIn(min_interval=0) as stand_in:
        await create_group(redis, "ops")
        await publish(redis, events)
        settings = slack(stand_in.url, group_wait="500ms")
        async with running_worker(SlackSink(settings), settings, redis) as control:
            await asyncio.wait_for(control.wait_until(lambda c: c.delivered >= 4), 30)
        assert stand_in.invalid == []
        texts = sorted(message.payload["text"] for message in stand_in.messages)
        assert texts == [
            "eu-1 · live-1 audience started: 1 viewer; 1 joined",
            "eu-1 · live-2 audience started: 1 viewer; 1 joined",
        ]


async def test_a_2xx_whose_body_never_comes_is_delivered_at_once() -> None:
    """Slack's status is its answer: a 200 whose body never comes is delivered at once, not
    timed out (and posted again on every retry)."""
    never = asyncio.Event()

    async def stalled(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(status=200)
        response.content_length = 1000
        await response.prepare(request)
        await never.wait()  # the body never comes (until the server stops)
        return response

    (raw,) = make_events(1, 1)
    fields = {b"type": raw["type"].encode(), b"id": raw["id"].encode(), b"event": raw["body"]}
    event = decode_event(KEYS.cluster, "1-0", fields)
    async with scripted_storm({("POST", "/hook"): stalled}) as base:
        sink = SlackSink(slack(f"{base}/hook", timeout="2s"))
        try:
            outcome = await asyncio.wait_for(sink.deliver([event]), 1.5)
        finally:
            await sink.aclose()
    assert outcome == Delivered(status=200)
