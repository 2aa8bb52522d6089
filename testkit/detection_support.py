"""Ground truth for detection tests: what a perfect observer of the simulator would emit.

``Lockstep`` serves a simulator whose population advances by one step each time a new pass
begins (a request for page 1) *and* the poller has committed since the last step (Redis
``meta.polls`` grew). Every state of the population is then committed exactly once, whatever
crashes, faults or outages happen in between, so the events in the stream must equal the rules
applied to the sequence of states.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec
from aiohttp import web
from redis.asyncio import Redis, RedisCluster
from redis.exceptions import RedisError

from notifier.simulator import Faults, Simulator, SimulatorSettings
from notifier.storm.decode import Viewer, decode_viewer

if TYPE_CHECKING:
    from notifier.config import DetectionSettings, HealthSettings
    from notifier.keys import ClusterKeys
    from notifier.redis_client import AnyRedis

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Measurement = tuple[float, str | None]  # (healthScore, healthGrade) of a poll with data


def expected_events(
    states: list[list[dict[str, Any]]], settings: DetectionSettings
) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """Per viewer, the (type, data without lastSeenAt) the rules give over ``states``.

    An oracle of its own, not ``notifier.detect.rules``: each viewer keeps the poll it was last
    seen in and its measurements since it connected, and every rule of ``docs/events.md`` is
    read straight off that history. ``tests/test_oracle.py`` checks it against ``detect()``.
    """
    watched: dict[str, _Watched] = {}
    out: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for at, records in enumerate(states):
        present: dict[str, tuple[dict[str, Any], Viewer]] = {}
        for record in records:
            viewer = decode_viewer(json.dumps(record, separators=(",", ":")).encode())
            present[viewer.id] = (json.loads(json.dumps(record)), viewer)
        for viewer_id, (record, viewer) in present.items():
            events = out.setdefault(viewer_id, [])
            if viewer_id not in watched:
                data: dict[str, Any] = {"viewer": record}
                if at == 0:  # the first poll starts from no state: already watching
                    data["initial"] = True
                events.append(("viewer.connected", data))
                watched[viewer_id] = _Watched()
            seen = watched[viewer_id]
            seen.record, seen.last_poll = record, at
            seen.polls += 1
            if viewer.health is not None:
                change = seen.measure((viewer.health, viewer.health_grade), settings.health)
                if change is not None:
                    kind, previous, threshold = change
                    data = {"viewer": record, "previous": previous, "threshold": threshold}
                    events.append((kind, data))
        for viewer_id, seen in list(watched.items()):
            if at - seen.last_poll >= settings.disconnect_after_missed_polls:
                session = seen.session()
                out[viewer_id].append(
                    ("viewer.disconnected", {"viewer": seen.record, "session": session})
                )
                del watched[viewer_id]
    return out


@dataclass
class _Watched:
    """One connected viewer, as the oracle sees it."""

    record: dict[str, Any] = field(default_factory=dict)  # the last record seen
    last_poll: int = 0  # index of the last poll that listed it
    dropped: bool = False
    history: list[Measurement] = field(default_factory=list)  # every measurement since connect
    polls: int = 0  # polls that listed it
    drops: int = 0

    def session(self) -> dict[str, Any]:
        """The session summary's counts (its times are checked against the stream's own)."""
        scores = [score for score, _ in self.history]
        health = None
        if scores:
            health = {
                "min": _whole(min(scores)),
                "max": _whole(max(scores)),
                "avg": _whole(round(sum(scores) / len(scores), 2)),
                "measuredPolls": len(scores),
            }
        return {"polls": self.polls, "health": health, "drops": self.drops, "complete": True}

    def measure(
        self, measurement: Measurement, health: HealthSettings
    ) -> tuple[str, dict[str, Any], float | int | None] | None:
        """Record one measurement; the (type, previous, threshold) of a change it completes.

        A change needs the last ``consecutive_polls`` measurements all across the threshold;
        those that made the change before cannot count again, as ``recover_at >= drop_below``.
        """
        self.history.append(measurement)
        n = health.consecutive_polls
        recent = self.history[-n:]
        if self.dropped:
            kind, threshold = "viewer.health_recovered", health.recover_at
            crossed = all(score >= threshold for score, _ in recent)
        else:
            kind, threshold = "viewer.health_dropped", health.drop_below
            crossed = all(score < threshold for score, _ in recent)
        if len(recent) < n or not crossed:
            return None
        before: tuple[float | None, str | None] = (None, None)
        if len(self.history) > n:  # the last measurement before the crossing began
            before = self.history[-n - 1]
        self.dropped = not self.dropped
        self.drops += self.dropped
        previous = {"healthScore": _whole(before[0]), "healthGrade": before[1]}
        return kind, previous, _whole(threshold)


def _whole(value: float | None) -> float | int | None:
    """Whole numbers as ints, as the API writes scores (and as events carry them)."""
    return int(value) if value is not None and float(value).is_integer() else value


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
    """Per viewer, (type, data without lastSeenAt) as found in the stream; a session summary
    keeps its counts, its times having been checked against the viewer's own events."""
    out: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    times: dict[str, list[tuple[str, int]]] = {}
    for event in events:
        if not event["type"].startswith("viewer."):
            continue  # stream events: detection_support.stream_lifecycles
        data = dict(event["data"])
        subject = event["subject"]
        times.setdefault(subject, []).append((event["type"], _ms(event["time"])))
        if event["type"] == "viewer.disconnected":
            last_seen = _ms(data.pop("lastSeenAt"))
            data["session"] = _session_counts(data["session"], times[subject], last_seen)
        out.setdefault(subject, []).append((event["type"], data))
    return out


def _session_counts(
    session: dict[str, Any], history: list[tuple[str, int]], last_seen: int
) -> dict[str, Any]:
    """Check a session's times against the viewer's events; return its counts."""
    connected = next(at for kind, at in history if kind == "viewer.connected")
    assert _ms(session["connectedAt"]) == connected
    assert session["durationMs"] == last_seen - connected
    degraded, since = 0, None
    for kind, at in history:
        if kind == "viewer.health_dropped":
            since = at
        elif kind == "viewer.health_recovered" and since is not None:
            degraded, since = degraded + at - since, None
    if since is not None:
        degraded += last_seen - since
    assert session["degradedMs"] == degraded
    return {key: session[key] for key in ("polls", "health", "drops", "complete")}


def _ms(text: str) -> int:
    """An event time (RFC 3339, milliseconds, UTC) as Unix milliseconds."""
    moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return round(moment.timestamp() * 1000)


def assert_well_formed(events: list[dict[str, Any]], cluster: str) -> None:
    """Sequence 1..n in stream order, unique ids, the CloudEvents envelope of SPEC section 4."""
    assert [e["sequence"] for e in events] == list(range(1, len(events) + 1))
    assert len({e["id"] for e in events}) == len(events)
    for event in events:
        assert event["specversion"] == "1.0"
        assert event["source"] == f"/clusters/{cluster}"
        assert event["cluster"] == cluster
        assert event["datacontenttype"] == "application/json"
        if event["type"].startswith("stream."):
            assert event["subject"] == event["data"]["stream"]["streamKey"]
        else:
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
async def gated(
    simulator: Simulator, gate: Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]
) -> AsyncIterator[str]:
    """Serve ``simulator`` on 127.0.0.1 with ``gate`` in front of every request; its URL."""
    app = simulator.app()

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        return await gate(request, handler)

    app.middlewares.insert(0, middleware)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


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
    try:
        async with gated(simulator, stepper.gate) as url:
            stepper.url = url
            yield stepper
    finally:
        await redis.aclose()


def records_equal(a: bytes, b: dict[str, Any]) -> bool:
    """A stored raw record against a dict record."""
    return bool(msgspec.json.decode(a) == b)


def by_stream(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The stream events, per streamKey, in stream order."""
    out: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        if event["type"].startswith("stream."):
            out.setdefault(event["subject"], []).append(event)
    return out


def assert_streams_causal(events: list[dict[str, Any]]) -> None:
    """Per stream: started/ended alternate, crossings alternate per threshold, degraded and
    recovered alternate inside an audience, an audience ending degraded says so."""
    for key, stream in by_stream(events).items():
        live, degraded = False, False
        crossed: dict[int, str] = {}
        for event in stream:
            kind, data = event["type"], event["data"]
            assert data["stream"]["streamKey"] == key
            if kind == "stream.audience_started":
                assert not live, (key, stream)
                live, crossed = True, {}
                continue
            assert live, (key, kind)
            if kind == "stream.audience_crossed":
                last = crossed.get(data["threshold"], "down")
                assert data["direction"] != last, (key, data)
                crossed[data["threshold"]] = data["direction"]
            elif kind == "stream.health_degraded":
                assert not degraded
                degraded = True
            elif kind == "stream.health_recovered":
                assert degraded
                degraded = False
            elif kind == "stream.audience_ended":
                assert all(d == "down" for d in crossed.values()), (key, crossed)
                assert data["summary"]["endedDegraded"] is degraded
                live, degraded = False, False
