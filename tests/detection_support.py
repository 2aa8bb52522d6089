"""Ground truth for detection tests: what a perfect observer of the simulator would emit.

``Lockstep`` serves a simulator whose population advances by one step each time a new pass
begins (a request for page 1) *and* the poller has committed since the last step (Redis
``meta.polls`` grew). Every state of the population is then committed exactly once, whatever
crashes, faults or outages happen in between, so the events in the stream must equal the rules
applied to the sequence of states.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec
from aiohttp import web
from redis.asyncio import Redis, RedisCluster
from redis.exceptions import RedisError

from notifier.detect.rules import Track, detect
from notifier.simulator import Faults, Simulator, SimulatorSettings
from notifier.storm.decode import decode_viewer

if TYPE_CHECKING:
    from notifier.config import DetectionSettings
    from notifier.keys import ClusterKeys
    from notifier.redis_client import AnyRedis

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def expected_events(
    states: list[list[dict[str, Any]]], settings: DetectionSettings
) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """Per viewer, the (type, data without lastSeenAt) the rules give over ``states``."""
    tracked: dict[str, Track] = {}
    out: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for at, records in enumerate(states):
        seen = {}
        for record in records:
            viewer = decode_viewer(json.dumps(record, separators=(",", ":")).encode())
            seen[viewer.id] = viewer
        detection = detect(tracked, seen, polled_at=at, settings=settings)
        for emission in detection.emissions:
            data = {"viewer": json.loads(emission.record), **emission.data}
            data.pop("lastSeenAt", None)
            out.setdefault(emission.viewer_id, []).append((emission.type, data))
        tracked = detection.state
    return out


async def stream_events(redis: AnyRedis, key: str) -> list[dict[str, Any]]:
    """The events of a stream, checking that each entry's fields agree with its event."""
    entries: list[tuple[bytes, dict[bytes, bytes]]] = await redis.xrange(key)  # type: ignore[assignment]
    events = []
    for _, fields in entries:
        event = json.loads(fields[b"event"])
        assert fields[b"type"].decode() == event["type"]
        assert fields[b"id"].decode() == event["id"]
        events.append(event)
    return events


def actual_events(events: list[dict[str, Any]]) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """Per viewer, (type, data without lastSeenAt) as found in the stream."""
    out: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for event in events:
        data = dict(event["data"])
        if event["type"] == "viewer.disconnected":
            assert isinstance(data.pop("lastSeenAt"), str)
        out.setdefault(event["subject"], []).append((event["type"], data))
    return out


def assert_well_formed(events: list[dict[str, Any]], cluster: str) -> None:
    """Sequence 1..n in stream order, unique ids, the CloudEvents envelope of SPEC section 4."""
    assert [e["sequence"] for e in events] == list(range(1, len(events) + 1))
    assert len({e["id"] for e in events}) == len(events)
    for event in events:
        assert event["specversion"] == "1.0"
        assert event["source"] == f"/clusters/{cluster}"
        assert event["cluster"] == cluster
        assert event["datacontenttype"] == "application/json"
        assert event["subject"] == event["data"]["viewer"]["id"]
        assert event["time"].endswith("Z")


@dataclass(repr=False)
class Lockstep:
    """A simulator that moves on one population step per committed poll."""

    simulator: Simulator
    redis: AnyRedis
    keys: ClusterKeys
    url: str = ""
    states: list[list[dict[str, Any]]] = field(default_factory=list)
    committed: int = 0

    async def gate(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path == "/api/cluster/viewers" and request.query.get("page", "1") == "1":
            await self._maybe_step()
        return await handler(request)

    async def _maybe_step(self) -> None:
        try:
            polls = int(await self.redis.hget(self.keys.meta, "polls") or 0)
        except (RedisError, OSError):
            return  # Redis is away: nothing committed can be seen, so nothing moves
        if polls > self.committed:
            self.committed = polls
            self.simulator.population.step()
            self.states.append(self.simulator.population.records())

    async def polls(self) -> int:
        return int(await self.redis.hget(self.keys.meta, "polls") or 0)


@asynccontextmanager
async def lockstep(
    settings: SimulatorSettings,
    faults: Faults,
    redis_url: str,
    keys: ClusterKeys,
    *,
    cluster: bool = False,
) -> AsyncIterator[Lockstep]:
    """Serve a lockstep simulator on 127.0.0.1; ``states[0]`` is the starting population."""
    simulator = Simulator(settings, faults)
    redis: AnyRedis = RedisCluster.from_url(redis_url) if cluster else Redis.from_url(redis_url)
    stepper = Lockstep(simulator, redis, keys)
    stepper.states.append(simulator.population.records())
    app = simulator.app()

    @web.middleware
    async def gate(request: web.Request, handler: Handler) -> web.StreamResponse:
        return await stepper.gate(request, handler)

    app.middlewares.insert(0, gate)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    stepper.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield stepper
    finally:
        await runner.cleanup()
        await redis.aclose()


def records_equal(a: bytes, b: dict[str, Any]) -> bool:
    """A stored raw record against a dict record."""
    return bool(msgspec.json.decode(a) == b)
