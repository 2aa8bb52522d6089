"""Polls held through a Redis outage (detect/backlog.py), in process against a real redis-server
the tests stop and start: written in order when it is back, dropped past a bound or when another
replica took the lease meanwhile; and the two pieces that make a late write safe: a lease that
ran out with nobody taking it comes back with its token, and a half-written commit resumes."""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

import pytest
import structlog.testing
from redis.asyncio import Redis

from notifier.config import DetectionSettings
from notifier.detect.encoding import PollEvents
from notifier.detect.poller import Poller
from notifier.detect.rules import detect
from notifier.detect.store import CommitOutcome, StateStore
from notifier.keys import ClusterKeys
from notifier.lease import Lease
from notifier.metrics import Metrics
from notifier.simulator import PopulationSettings, SimulatorSettings
from notifier.storm import StormClient, create_session
from notifier.storm.decode import decode_viewer
from testkit.detection_support import assert_streams_causal, stream_events
from testkit.fault_support import EveryPoll, every_poll, verify_exact

from .conftest import FAST_BACKOFF, cluster_settings

if TYPE_CHECKING:
    from pathlib import Path

    from testkit.redis_procs import RedisServer

KEYS = ClusterKeys("t", "sim")
POPULATION = PopulationSettings(
    seed=41, viewers=60, join_rate=0.1, leave_rate=0.1, health_change_rate=0.3, no_data_rate=0.1
)
SIM = SimulatorSettings(population=POPULATION, static_tokens=("tok-sim",))
pytestmark = pytest.mark.timeout(30)


def detection(**outage: Any) -> DetectionSettings:
    return DetectionSettings.model_validate({"leader_lease": "1s", "redis_outage": outage})


async def poller(
    stack: AsyncExitStack, sim: EveryPoll, redis: Redis, settings: DetectionSettings, owner: str
) -> tuple[Poller, Metrics]:
    cluster = cluster_settings(sim.url, auth={"token": "tok-sim"}, poll_interval="50ms")
    session = await stack.enter_async_context(create_session(cluster))
    client = StormClient(cluster, session, backoff=FAST_BACKOFF)
    stack.push_async_callback(client.aclose)
    metrics = Metrics()
    lease = Lease(redis, KEYS.lease, KEYS.fence, owner, ttl=settings.leader_lease)
    store = StateStore(redis, KEYS, maxlen=100_000, chunk_ops=20, lease_ttl=1.0)
    return Poller(
        cluster, settings, client=client, store=store, lease=lease, metrics=metrics
    ), metrics


def sample(metrics: Metrics, name: str) -> float:
    return metrics.registry.get_sample_value(name, {"cluster": "sim"}) or 0.0


async def test_polls_held_through_an_outage_are_written_in_order_when_redis_is_back(
    redis_server: RedisServer,
) -> None:
    """Redis stopped for ten polls: each is detected and held (the gauges say how many); once
    Redis is back the next poll writes them all, oldest first; the stream is exact."""
    settings = detection()
    redis = Redis.from_url(redis_server.url)
    async with AsyncExitStack() as stack, every_poll(SIM) as sim:
        stack.push_async_callback(redis.aclose)
        leader, metrics = await poller(stack, sim, redis, settings, "a")
        for _ in range(3):
            await leader.cycle()
        redis_server.stop()
        with structlog.testing.capture_logs() as logs:
            for held in range(1, 11):
                await leader.cycle()
                assert leader.backlog[0] == held
            assert sample(metrics, "notifier_poll_backlog") == 10
            redis_server.start()
            while leader.backlog[0]:
                await leader.cycle()  # (a third of the lease after the last failure)
        assert [e["event"] for e in logs if "backlog" in e["event"] or "holding" in e["event"]] == [
            "poller.holding_polls",
            "poller.backlog_written",
        ]
        assert sample(metrics, "notifier_poll_backlog_events") == 0
        events = await verify_exact(sim, redis, KEYS, settings)
        assert leader.commits == int(await redis.hget(KEYS.meta, "polls") or 0)
    assert events


async def test_past_max_events_the_held_polls_are_dropped_and_the_state_read_again(
    redis_server: RedisServer,
) -> None:
    """A bound of 5 events: the outage's polls pass it, are dropped (an error line, the dropped
    counter), and after the outage the state is read again from Redis: nothing twice."""
    settings = detection(max_events=5)
    redis = Redis.from_url(redis_server.url)
    async with AsyncExitStack() as stack, every_poll(SIM) as sim:
        stack.push_async_callback(redis.aclose)
        leader, metrics = await poller(stack, sim, redis, settings, "a")
        for _ in range(3):
            await leader.cycle()
        redis_server.stop()
        with structlog.testing.capture_logs() as logs:
            for _ in range(10):
                await leader.cycle()
            redis_server.start()
            before = leader.commits
            while leader.commits < before + 3:
                await leader.cycle()
        (dropped,) = [e for e in logs if e["event"] == "poller.backlog_dropped"]
        assert "max_events (5)" in dropped["reason"]
        assert dropped["log_level"] == "error"
        assert sample(metrics, "notifier_poll_backlog_dropped_events_total") == dropped["events"]
        events = await stream_events(redis, KEYS.events)
    assert_streams_causal(events)
    assert [e["sequence"] for e in events] == list(range(1, len(events) + 1))


async def test_a_replica_that_led_meanwhile_wins_and_the_held_polls_are_dropped(
    redis_server: RedisServer,
) -> None:
    """Redis back, and another replica takes the lease before this one writes: its write is
    fenced, what it held is dropped, and none of it reaches the stream."""
    settings = detection()
    redis = Redis.from_url(redis_server.url)
    async with AsyncExitStack() as stack, every_poll(SIM) as sim:
        stack.push_async_callback(redis.aclose)
        leader, _ = await poller(stack, sim, redis, settings, "a")
        for _ in range(3):
            await leader.cycle()
        length = await redis.xlen(KEYS.events)
        redis_server.stop()
        for _ in range(4):
            await leader.cycle()
        redis_server.start()
        await redis.delete(KEYS.lease)  # (its TTL ran out)
        assert await Lease(redis, KEYS.lease, KEYS.fence, "b", ttl=30).acquire()
        with structlog.testing.capture_logs() as logs:
            while leader.backlog[0]:
                await leader.cycle()
        assert [e["reason"] for e in logs if e["event"] == "poller.backlog_dropped"] == ["fenced"]
        assert await redis.xlen(KEYS.events) == length


async def test_a_lease_that_ran_out_with_nobody_taking_it_comes_back_with_its_token(
    redis: Redis,
) -> None:
    lease = Lease(redis, KEYS.lease, KEYS.fence, "a", ttl=30)
    assert await lease.acquire()
    first = lease.value
    await redis.delete(KEYS.lease)  # ran out (Redis paused, or restarted from its AOF)
    assert await lease.acquire()
    assert lease.value == first
    await redis.delete(KEYS.lease)
    other = Lease(redis, KEYS.lease, KEYS.fence, "b", ttl=30)
    assert await other.acquire()  # somebody took it in between ...
    await other.release()  # ... and gave it back: the fence moved on
    assert await lease.acquire()
    assert lease.value != first
    assert lease.value == "a:3"


def _poll(records: list[bytes], **settings: Any) -> Any:
    viewers = {viewer.id: viewer for viewer in map(decode_viewer, records)}
    return detect(
        {},
        viewers,
        confirmed={},
        count_misses=True,
        polled_at=1_770_000_000_000,
        settings=DetectionSettings.model_validate(settings),
        initial=True,
    )


async def test_a_commit_cut_off_half_way_resumes_from_the_chunk_redis_lacks(
    redis: Redis, tmp_path: Path
) -> None:
    """Chunks 1 and 2 of 4 applied (the outage cut the rest off): ``resume`` sends the rest; a
    second resume of the whole commit sends nothing; one Redis moved past is stale. A chunk
    whose lease ran out with nobody taking it takes the lease back and applies."""
    records = [f'{{"id":"v{i}","healthScore":90}}'.encode() for i in range(40)]
    found = _poll(records)
    store = StateStore(redis, KEYS, maxlen=1000, chunk_ops=20, lease_ttl=5.0)
    snapshot = await store.load()
    lease = Lease(redis, KEYS.lease, KEYS.fence, "a", ttl=30)
    assert await lease.acquire()
    assert lease.value is not None
    events = PollEvents(found.emissions, cluster="sim", epoch=snapshot.epoch, after=0, time_ms=1)
    chunks = store.generations(found, len(events))
    assert chunks == 4

    class CutOff(StateStore):
        async def _before_chunk(self, number: int, *_: Any) -> None:
            if number == 3:
                raise ConnectionError("cut off")

    with pytest.raises(ConnectionError):
        await CutOff(redis, KEYS, maxlen=1000, chunk_ops=20).commit(
            snapshot, found, events, lease=lease.value, polled_at=1, commit_id="c1"
        )
    assert int(await redis.hget(KEYS.meta, "generation") or 0) in {1, 2}  # (2: sent, unread)
    await redis.delete(KEYS.lease)  # and the lease ran out meanwhile, nobody taking it
    done = await store.commit(
        snapshot, found, events, lease=lease.value, polled_at=1, commit_id="c1", resume=True
    )
    assert done == (CommitOutcome.COMMITTED, 4)
    assert await redis.get(KEYS.lease) == lease.value.encode()
    assert await redis.xlen(KEYS.events) == 40
    again = await store.commit(
        snapshot, found, events, lease=lease.value, polled_at=1, commit_id="c1", resume=True
    )
    assert again == (CommitOutcome.COMMITTED, 4)
    other = await store.commit(
        snapshot, found, events, lease=lease.value, polled_at=1, commit_id="c2", resume=True
    )
    assert other == (CommitOutcome.STALE, 0)
    assert await redis.xlen(KEYS.events) == 40


async def test_a_poll_detected_while_the_lease_changed_hands_is_not_written(
    redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lease ran out and another replica led (and let go) while a poll was detected: the
    poll was computed from a history Redis no longer holds, so it is not written at all."""
    settings = detection()
    async with AsyncExitStack() as stack, every_poll(SIM) as sim:
        leader, _ = await poller(stack, sim, redis, settings, "a")
        for _ in range(3):
            await leader.cycle()
        length, polls = await redis.xlen(KEYS.events), await redis.hget(KEYS.meta, "polls")
        absent = leader._absent  # (the moment inside a poll is the point)
        confirm = absent.confirm

        async def meanwhile(*args: Any) -> Any:
            await redis.delete(KEYS.lease)
            other = Lease(redis, KEYS.lease, KEYS.fence, "b", ttl=30)
            assert await other.acquire()
            await other.release()
            assert await leader._leader._lease.acquire()  # a renewal: a new token
            return await confirm(*args)

        monkeypatch.setattr(absent, "confirm", meanwhile)
        with structlog.testing.capture_logs():
            await leader.cycle()
        assert leader.backlog == (0, 0)
        assert await redis.xlen(KEYS.events) == length
        assert await redis.hget(KEYS.meta, "polls") == polls
