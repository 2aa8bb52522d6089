"""Delivery partitions (SPEC 8) on a real redis-server: which partition an event belongs to, the
layout script that makes and changes the groups, K workers splitting the viewers, and a live
change of K that loses nothing and delivers nothing twice."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from typing import TYPE_CHECKING, Any

import pytest
from pydantic import ValidationError

from notifier.events import Event
from notifier.fleet import Gate
from notifier.logs import configure_logging
from notifier.sinks.layout import Layout, parse_id
from notifier.sinks.partition import Partition, partition_of, partitions
from notifier.sinks.slack.config import SlackSinkSettings
from notifier.sinks.webhook import WebhookSink
from testkit.receivers import Reply, WebhookReceiver
from testkit.sink_support import (
    KEYS,
    SECRET,
    by_viewer,
    create_group,
    make_events,
    pending,
    publish,
    received_events,
    running_worker,
    webhook,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from redis.asyncio import Redis

    from notifier.sinks.control import SinkControl
    from notifier.sinks.webhook import WebhookSinkSettings

CHECK_VALUE = 0xCBF43926
"""CRC-32 of b"123456789", the algorithm's published check value."""


def event(subject: str, *, kind: str = "viewer.connected", app: str | None = None) -> Event:
    return Event(
        "eu-1", "1-0", "id", kind, subject, 1, b"{}", stream_key=subject, application_id=app
    )


def test_an_event_belongs_to_the_crc32_of_its_viewer_or_stream_mod_k() -> None:
    assert partition_of(event("123456789"), 1000) == CHECK_VALUE % 1000
    assert partition_of(event("123456789"), 7) == CHECK_VALUE % 7
    stream = event("live-1", kind="stream.started", app="app-1")
    same = event("app-1/live-1")  # a viewer whose id happens to be the stream's key text
    assert partition_of(stream, 13) == partition_of(same, 13)
    assert partition_of(event("live-1", kind="stream.ended"), 13) == partition_of(
        event("/live-1"), 13
    )
    assert {partition_of(event(f"v{i}"), 1) for i in range(50)} == {0}
    assert {partition_of(event(f"v{i}"), 4) for i in range(200)} == {0, 1, 2, 3}


def test_one_partition_keeps_the_names_of_a_sink_without_partitions() -> None:
    one = Partition("hooks")
    assert (one.group, one.lane, one.lease_key(KEYS)) == (
        "sink:hooks",
        "hooks",
        KEYS.sink_lease("hooks"),
    )
    third = partitions("hooks", 4)[2]
    assert (third.group, third.lane, third.label) == ("sink:hooks:2", "hooks:2", "2")
    assert third.lease_key(KEYS) != Partition("hooks", 2, 3).lease_key(KEYS)
    with pytest.raises(ValueError, match="does not exist"):
        Partition("hooks", 4, 4)


async def groups(redis: Redis) -> dict[str, str]:
    return {
        g["name"].decode(): g["last-delivered-id"].decode()
        for g in await redis.xinfo_groups(KEYS.events)
    }


async def test_a_fresh_layout_starts_k_groups_at_the_end_of_the_stream(redis: Redis) -> None:
    await publish(redis, make_events(3, 2))
    tail: Any = await redis.xrevrange(KEYS.events, count=1)
    newest = tail[0][0].decode()
    assert await Layout(redis, KEYS, "hooks", 3).ensure() == "fresh"
    assert await groups(redis) == {f"sink:hooks:{k}": newest for k in range(3)}
    assert await redis.get(KEYS.sink_layout("hooks")) == b"3"
    assert await Layout(redis, KEYS, "hooks", 3).ensure() == "ok"


async def test_a_sink_without_the_setting_keeps_its_group(redis: Redis) -> None:
    await create_group(redis, "hooks")
    assert await Layout(redis, KEYS, "hooks", 1).ensure() == "ok"
    assert set(await groups(redis)) == {"sink:hooks"}


async def test_changing_k_records_what_the_old_group_did_and_starts_where_it_owed(
    redis: Redis,
) -> None:
    events = make_events(10, 10)  # ten viewers: one event each
    await create_group(redis, "hooks")
    await publish(redis, events)
    read: Any = await redis.xreadgroup("sink:hooks", "old", {KEYS.events: ">"}, count=6)
    ids = [entry_id.decode() for entry_id, _ in read[0][1]]
    await redis.xack(KEYS.events, "sink:hooks", ids[0], ids[1], ids[3], ids[5])  # 3rd, 5th owed
    await redis.set(KEYS.sink_lease("hooks"), "old:1")
    layout = Layout(redis, KEYS, "hooks", 2)
    assert await layout.ensure() == "busy"  # the old worker still holds its lease
    assert "still holds its lease" in layout.reason
    assert set(await groups(redis)) == {"sink:hooks"}

    await redis.delete(KEYS.sink_lease("hooks"))
    assert await layout.ensure() == "migrated"
    assert await groups(redis) == {"sink:hooks:0": ids[1], "sink:hooks:1": ids[1]}
    carry = await layout.carry()
    assert carry is not None
    assert (carry.count, carry.until) == (1, parse_id(ids[5]))
    assert carry.pending == (frozenset({ids[2], ids[4]}),)
    entries: Any = await redis.xrange(KEYS.events)
    decoded = [(e.decode(), event(json.loads(f[b"event"])["subject"])) for e, f in entries]
    handled = [carry.handled(i, e) for i, e in decoded if carry.applies(i)]
    assert handled == [True, True, False, True, False, True]
    assert not carry.applies(decoded[6][0])

    assert await Layout(redis, KEYS, "hooks", 3).ensure() == "busy"  # not read past yet


@contextlib.asynccontextmanager
async def workers(
    settings: WebhookSinkSettings, redis: Redis, count: int
) -> AsyncIterator[list[SinkControl]]:
    async with contextlib.AsyncExitStack() as stack:
        controls = [
            await stack.enter_async_context(
                running_worker(
                    WebhookSink(settings), settings, redis, partition=part, claim_idle=0.3
                )
            )
            for part in partitions(settings.name, count)
        ]
        yield controls


def ids_of(items: list[dict[str, Any]]) -> list[str]:
    return [item["id"] for item in items]


async def test_k_workers_split_the_viewers_and_deliver_every_event_once_in_order(
    redis: Redis,
) -> None:
    events = make_events(300, 30)
    async with WebhookReceiver(SECRET) as receiver:
        settings = webhook(receiver.url, partitions=3)
        await Layout(redis, KEYS, "hooks", 3).ensure()
        await publish(redis, events)
        async with workers(settings, redis, 3) as controls:
            await receiver.wait_for(300)
            for control in controls:
                await control.wait_until(lambda c: c.delivered > 0)
        got = received_events(receiver)
        assert sorted(ids_of(got)) == sorted(e["id"] for e in events)
        assert by_viewer(got) == by_viewer(events)
        for part in partitions("hooks", 3):
            assert await pending(redis, "hooks", group=part.group) == 0


async def test_a_live_change_of_k_loses_nothing_and_delivers_nothing_twice(
    redis: Redis,
) -> None:
    everything = make_events(120, 40, seed=2)
    first, owed, rest = everything[:60], everything[60], everything[61:]
    async with WebhookReceiver(SECRET) as receiver:
        one = webhook(receiver.url, retry={"schedule": ["0s", "300ms", "300ms"]})
        await create_group(redis, "hooks")
        await publish(redis, first)
        async with running_worker(WebhookSink(one), one, redis):
            await receiver.wait_for(60)
        receiver.default = Reply(status=503)  # one event left retrying when K=1 stops
        await publish(redis, [owed])
        async with running_worker(WebhookSink(one), one, redis) as control:
            await control.wait_until(lambda c: c.retried >= 1)
        receiver.default = Reply(status=200)
        await publish(redis, rest)

        four = webhook(receiver.url, partitions=4, retry={"schedule": ["0s", "300ms", "300ms"]})
        async with workers(four, redis, 4):
            await receiver.wait_for(120)
        got = received_events(receiver)
        assert sorted(ids_of(got)) == sorted(e["id"] for e in everything)  # once each
        assert by_viewer(got) == by_viewer(everything)
        assert set(await groups(redis)) == {f"sink:hooks:{k}" for k in range(4)}
        assert await redis.hlen(KEYS.retries("hooks")) == 0


async def test_a_worker_of_the_old_k_stands_by_while_the_new_partitions_deliver(
    redis: Redis,
) -> None:
    out = io.StringIO()
    configure_logging(fmt="json", level="info", stream=out)
    events = make_events(40, 8)
    async with WebhookReceiver(SECRET) as receiver:
        two = webhook(receiver.url, partitions=2)
        one = webhook(receiver.url)
        await Layout(redis, KEYS, "hooks", 2).ensure()
        async with workers(two, redis, 2):
            for part in partitions("hooks", 2):
                await until_set(redis, part.lease_key(KEYS))
            async with running_worker(WebhookSink(one), one, redis) as old:
                await until_logged(out, "sink.waiting_for_layout")
                await publish(redis, events)
                await receiver.wait_for(40)
                assert old.delivered == 0
        assert sorted(ids_of(received_events(receiver))) == sorted(e["id"] for e in events)
        assert await redis.get(KEYS.sink_layout("hooks")) in (b"1", b"2")


async def until_logged(out: io.StringIO, name: str, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while name not in out.getvalue():
            await asyncio.sleep(0.02)


async def until_set(redis: Redis, key: str, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not await redis.exists(key):
            await asyncio.sleep(0.02)


class Steered(Gate):
    """A gate the test flips: take while ``take``, give while ``give``."""

    def __init__(self, *, take: bool) -> None:
        self.take = take
        self.give = False
        self.handed = 0

    def may_take(self) -> bool:
        return self.take

    def should_give(self) -> bool:
        return self.give

    def handed_over(self) -> None:
        self.handed += 1
        self.give = self.take = False


async def test_a_worker_told_to_hand_over_finishes_and_the_next_claims_its_retries_at_once(
    redis: Redis,
) -> None:
    """A clean hand-over: the deliveries in hand finish, the lease is released, and the next
    holder claims the retrying entries without waiting for them to look abandoned (claim_idle
    is an hour here): every event arrives exactly once, in viewer order."""
    everything = make_events(80, 20, seed=3)
    async with WebhookReceiver(SECRET) as receiver:
        settings = webhook(receiver.url, retry={"schedule": ["0s", "1s", "1s", "1s", "1s", "1s"]})
        await create_group(redis, "hooks")
        await publish(redis, everything[:40])
        first, second = Steered(take=True), Steered(take=False)
        async with contextlib.AsyncExitStack() as stack:
            a = await stack.enter_async_context(
                running_worker(WebhookSink(settings), settings, redis, gate=first, claim_idle=3600)
            )
            await receiver.wait_for(40)
            receiver.default = Reply(status=503)
            await publish(redis, everything[40:41])
            await a.wait_until(lambda c: c.retried >= 1)
            b = await stack.enter_async_context(
                running_worker(WebhookSink(settings), settings, redis, gate=second, claim_idle=3600)
            )
            first.give, second.take = True, True
            async with asyncio.timeout(10):
                while not first.handed:
                    await asyncio.sleep(0.02)
            receiver.default = Reply(status=200)
            await publish(redis, everything[41:])
            await receiver.wait_for(80)
        assert (a.delivered, b.delivered) == (40, 40)  # the retried one went with the lease
        got = received_events(receiver)
        assert sorted(ids_of(got)) == sorted(e["id"] for e in everything)
        assert by_viewer(got) == by_viewer(everything)


def test_partitions_are_validated_and_a_slack_sink_keeps_one() -> None:
    with pytest.raises(ValidationError, match="greater than or equal to 1"):
        webhook("http://127.0.0.1:9/h", partitions=0)
    with pytest.raises(ValidationError, match="less than or equal to 64"):
        webhook("http://127.0.0.1:9/h", partitions=65)
    with pytest.raises(ValidationError, match="partitions must be 1 for a Slack sink"):
        SlackSinkSettings.model_validate(
            {"name": "ops", "webhook_url": "https://hooks.slack.test/x", "partitions": 2}
        )


async def test_a_garbled_or_missing_layout_stops_the_change_and_says_why(redis: Redis) -> None:
    """Nothing is guessed: a layout that is not a number, or missing beside groups of several
    partitions, leaves every group as it is (and the service starts: ``busy`` is no error)."""
    await Layout(redis, KEYS, "hooks", 2).ensure()
    before = await groups(redis)
    await redis.set(KEYS.sink_layout("hooks"), "0")
    layout = Layout(redis, KEYS, "hooks", 4)
    assert await layout.ensure() == "busy"
    assert "holds 0, not a number of partitions" in layout.reason
    await redis.delete(KEYS.sink_layout("hooks"))
    assert await layout.ensure() == "busy"
    assert "the layout key is missing but group sink:hooks:" in layout.reason
    assert await groups(redis) == before


async def test_a_worker_that_takes_back_the_lane_it_handed_over_carries_on(
    redis: Redis,
) -> None:
    """Nobody took the lane it handed over, so the same worker leads again: its own hand-over
    note is no reason to claim from itself, and it delivers and stops as usual."""
    events = make_events(40, 10, seed=4)
    async with WebhookReceiver(SECRET) as receiver:
        settings = webhook(receiver.url)
        await create_group(redis, "hooks")
        gate = Steered(take=True)
        gate.give = True
        async with running_worker(WebhookSink(settings), settings, redis, gate=gate):
            await publish(redis, events[:20])
            async with asyncio.timeout(10):
                while not gate.handed:
                    await asyncio.sleep(0.02)
            gate.take = True  # nobody else came: it takes the lane back
            await publish(redis, events[20:])
            await receiver.wait_for(40)
        assert sorted(ids_of(received_events(receiver))) == sorted(e["id"] for e in events)
        assert await pending(redis, "hooks") == 0


async def test_a_hand_over_keeps_the_lease_until_a_slow_delivery_in_hand_is_done(
    redis: Redis,
) -> None:
    """The delivery in hand outlasts the lease (1 s) three times over: the worker keeps renewing
    until it is done, so the next holder does not claim it and nothing arrives twice."""
    events = make_events(10, 10, seed=5)
    async with WebhookReceiver(SECRET) as receiver:
        settings = webhook(receiver.url, timeout="10s")
        await create_group(redis, "hooks")
        receiver.respond(Reply(delay=3.0))  # the first request is slow
        first, second = Steered(take=True), Steered(take=False)
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(
                running_worker(
                    WebhookSink(settings),
                    settings,
                    redis,
                    gate=first,
                    lease_ttl=1.0,
                    claim_idle=0.2,
                )
            )
            await publish(redis, events[:1])
            async with asyncio.timeout(10):
                while not receiver.attempts:
                    await asyncio.sleep(0.02)
            await stack.enter_async_context(
                running_worker(
                    WebhookSink(settings),
                    settings,
                    redis,
                    gate=second,
                    lease_ttl=1.0,
                    claim_idle=0.2,
                )
            )
            first.give, second.take = True, True
            await publish(redis, events[1:])
            await receiver.wait_for(10)
            async with asyncio.timeout(10):
                while not first.handed:
                    await asyncio.sleep(0.02)
        got = ids_of(received_events(receiver))
        assert sorted(got) == sorted(e["id"] for e in events)  # each once
