"""Stream events end to end: a real poller over the simulator's scripted incident and ramp, with
real Redis: exactly once, in causal order, across restarts and a stop between chunks."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import pytest

from notifier.config import DetectionSettings
from notifier.detect.audiences import Audiences, member_of
from notifier.detect.codec import StreamCodec
from notifier.detect.poller import Poller
from notifier.detect.rules import detect
from notifier.detect.store import StateStore
from notifier.detect.streams import StreamId, StreamState
from notifier.keys import ClusterKeys
from notifier.lease import Lease
from notifier.simulator import Faults, Incident, PopulationSettings, Ramp, SimulatorSettings
from notifier.storm import StormClient, create_session
from notifier.storm.decode import decode_viewer
from testkit.detection_support import (
    assert_streams_causal,
    assert_well_formed,
    by_stream,
    lockstep,
    stream_events,
)
from tests.conftest import FAST_BACKOFF, cluster_settings

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from redis.asyncio import Redis

KEYS = ClusterKeys("notifier", "sim")
pytestmark = pytest.mark.timeout(120)

DETECTION = DetectionSettings.model_validate(
    {
        "health": {"consecutive_polls": 1},
        "streams": {"audience_thresholds": [5, 20], "degraded_min_viewers": 2},
    }
)
SCENARIO = SimulatorSettings(
    population=PopulationSettings(
        seed=11,
        viewers=60,
        streams=3,
        join_rate=0.05,
        leave_rate=0.05,
        health_change_rate=0.05,
        incidents=(Incident("live-1", start_ms=4000, duration_ms=6000, share=0.6),),
        ramps=(Ramp("launch", viewers=30, duration_ms=6000, hold_ms=3000),),
    )
)


@asynccontextmanager
async def poller_for(
    url: str, redis: Redis, detection: DetectionSettings = DETECTION, store: Any = None
) -> AsyncIterator[Poller]:
    settings = cluster_settings(url, page_size=50)
    async with create_session(settings) as session:
        client = StormClient(settings, session, backoff=FAST_BACKOFF)
        lease = Lease(redis, KEYS.lease, KEYS.fence, f"test-{uuid.uuid4().hex[:6]}", ttl=30)
        yield Poller(
            settings,
            detection,
            client=client,
            store=store or StateStore(redis, KEYS, maxlen=100_000),
            lease=lease,
        )
        await client.aclose()


async def assert_counts_match_the_viewers(redis: Redis) -> None:
    """The stored stream states count exactly the tracked viewers of each audience."""
    snapshot = await StateStore(redis, KEYS, maxlen=100_000).load()
    recount: Counter[StreamId] = Counter()
    for track in snapshot.tracked.values():
        one = member_of(track, DETECTION.streams)
        if one is not None:
            recount[one.stream] += 1
    stored = {}
    entries: dict[bytes, bytes] = await redis.hgetall(KEYS.streams)  # type: ignore[assignment]
    for name, blob in entries.items():
        stream, state = StreamCodec.decode(name, blob)
        stored[stream] = state.viewers
    assert stored == dict(recount)


async def test_an_incident_and_a_ramp_become_stream_events_exactly_once(
    redis_url: str, redis: Redis
) -> None:
    """The scripted incident degrades live-1 and recovers it; the ramp starts "launch", crosses
    5 and 20 up and down, and ends it; every stream's events are causal; counts match."""
    async with lockstep(SCENARIO, Faults(), redis_url, KEYS) as sim:
        async with poller_for(sim.url, redis) as poller:
            while await sim.polls() < 20:
                await poller.cycle()
        events = await stream_events(redis, KEYS.events)
    assert_well_formed(events, "sim")
    assert_streams_causal(events)
    streams = by_stream(events)
    live_1 = [e["type"] for e in streams["live-1"]]
    assert "stream.health_degraded" in live_1
    assert live_1.index("stream.health_degraded") < live_1.index("stream.health_recovered")
    launch = [
        (e["type"], e["data"].get("threshold"), e["data"].get("direction"))
        for e in streams["launch"]
        if e["type"].startswith("stream.audience_")
    ]
    assert launch == [
        ("stream.audience_started", None, None),
        ("stream.audience_crossed", 5, "up"),
        ("stream.audience_crossed", 20, "up"),
        ("stream.audience_crossed", 20, "down"),
        ("stream.audience_crossed", 5, "down"),
        ("stream.audience_ended", None, None),
    ]
    ended = streams["launch"][-1]["data"]["summary"]
    assert ended["peakViewers"] == 30
    assert ended["sessions"] == 30
    first_poll = [e for e in events if e["sequence"] <= 60]
    assert {e["data"].get("initial") for e in first_poll if e["type"] == "viewer.connected"} == {
        True
    }
    started = [e for e in events if e["type"] == "stream.audience_started"]
    assert started[0]["data"]["initial"] is True
    assert "initial" not in streams["launch"][0]["data"]
    kinds = [e["type"] for e in events]
    last_viewer = max(i for i, k in enumerate(kinds[:100]) if k.startswith("viewer."))
    assert all(k.startswith("stream.") for k in kinds[last_viewer + 1 : 70])
    await assert_counts_match_the_viewers(redis)


async def test_restarts_emit_no_stream_event_twice(redis_url: str, redis: Redis) -> None:
    """Four pollers in a row (empty memory each, two of them without a clean stop) over the
    scenario: the stream events are causal and each audience started once."""
    async with lockstep(SCENARIO, Faults(), redis_url, KEYS) as sim:
        for clean in (True, False, True, False):
            async with poller_for(sim.url, redis) as poller:
                for _ in range(4):
                    await poller.cycle()
                if clean:
                    await poller.close()
        events = await stream_events(redis, KEYS.events)
    assert_well_formed(events, "sim")
    assert_streams_causal(events)
    started = Counter(e["subject"] for e in events if e["type"] == "stream.audience_started")
    ended = Counter(e["subject"] for e in events if e["type"] == "stream.audience_ended")
    assert started["launch"] == 1
    assert all(started[k] - ended[k] in (0, 1) for k in started)
    await assert_counts_match_the_viewers(redis)


class DiesAfter(StateStore):
    """A store whose process dies before sending chunk ``chunks`` + 1, once (then heals)."""

    def __init__(self, *args: Any, chunks: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.chunks = chunks

    async def _before_chunk(self, number: int, *_: Any) -> None:
        if number == self.chunks + 1:
            self.chunks = -1
            raise ConnectionError("killed")


async def test_a_stop_before_the_last_chunk_is_reconciled_from_the_viewers(
    redis_url: str, redis: Redis
) -> None:
    """The first poll (60 viewers, chunks of 20) stops after 2 chunks, before its stream states
    are written: the next poll counts the audiences from the viewers written, nothing twice."""
    async with lockstep(SCENARIO, Faults(), redis_url, KEYS) as sim:
        store = DiesAfter(redis, KEYS, maxlen=100_000, chunk_ops=20, chunks=2)
        async with poller_for(sim.url, redis, store=store) as poller:
            await poller.cycle()  # dies half-way: the poller drops its state and reloads
            assert await redis.hlen(KEYS.streams) == 0
            assert 0 < await redis.hlen(KEYS.viewers) < 60
            while await sim.polls() < 12:
                await poller.cycle()
        events = await stream_events(redis, KEYS.events)
    assert_well_formed(events, "sim")
    assert_streams_causal(events)
    connected = Counter(e["subject"] for e in events if e["type"] == "viewer.connected")
    assert max(connected.values()) == 1
    await assert_counts_match_the_viewers(redis)


async def test_turning_stream_events_on_over_existing_state_takes_the_audiences_as_they_are(
    redis_url: str, redis: Redis
) -> None:
    """Three polls with stream events off, then on: no audience_started for the audiences
    already there (the ramp's included), yet the ramp's crossing of 20 comes as it grows."""
    off = DETECTION.model_copy(
        update={"streams": DETECTION.streams.model_copy(update={"enabled": False})}
    )
    async with lockstep(SCENARIO, Faults(), redis_url, KEYS) as sim:
        async with poller_for(sim.url, redis, off) as poller:
            for _ in range(3):
                await poller.cycle()
            await poller.close()
        before = len(await stream_events(redis, KEYS.events))
        async with poller_for(sim.url, redis) as poller:
            while await sim.polls() < 10:
                await poller.cycle()
        events = (await stream_events(redis, KEYS.events))[before:]
    assert [e for e in events if e["type"] == "stream.audience_started"] == []
    launch = [(e["type"], e["data"].get("threshold")) for e in by_stream(events)["launch"]]
    assert ("stream.audience_crossed", 20) in launch
    assert ("stream.audience_crossed", 5) not in launch[:1]  # 5 was reached before: adopted
    await assert_counts_match_the_viewers(redis)


def test_a_stream_state_round_trips_through_its_stored_form() -> None:
    """Field ``["app", "key"]`` (readable), value a tagged msgpack array."""
    state = StreamState(
        3, 2, 1, {"PL": (3, 1)}, {"STORM_HLS_VIEWER": (3, 1)}, {"": (3, 1)}, 1, 3, 1, 3
    )
    name, blob = StreamCodec.encode(StreamId("app", "key"), state)
    assert json.loads(name) == ["app", "key"]
    assert StreamCodec.decode(name, blob) == (StreamId("app", "key"), state)


def test_viewers_without_a_stream_are_counted_apart_and_start_no_audience() -> None:
    """Records of a viewer type without streamKey (or with a numeric one) join no audience;
    the poller can say how many there are; a publisher without one is not counted."""
    records: list[dict[str, Any]] = [
        {"id": "a", "harnessType": "STORM_HLS_VIEWER", "applicationId": "app", "healthScore": 90},
        {"id": "b", "harnessType": "STORM_HLS_VIEWER", "streamKey": 7, "applicationId": "app"},
        {"id": "c", "harnessType": "RTMP_PUSH", "applicationId": "app"},
    ]
    seen = {str(r["id"]): decode_viewer(json.dumps(r).encode()) for r in records}
    detection = detect({}, seen, polled_at=1000, settings=DETECTION, initial=True)
    audiences = Audiences(DETECTION.streams)
    audiences.load({}, {}, kept=False, now=1000)
    decided = audiences.decide({}, detection, polled_at=1000, initial=True)
    assert (decided.emissions, decided.writes, audiences.unplaced) == ([], {}, 2)
