"""Large commits in bounded chunks (detect/store.py): staged, published, applied, exactly once."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest
from redis.asyncio import RedisCluster

from notifier.config import DetectionSettings
from notifier.detect.rules import detect
from notifier.detect.store import CommitOutcome, Snapshot, StateStore
from notifier.errors import StateError
from notifier.events import EncodedEvent, encode_emission
from notifier.keys import ClusterKeys
from notifier.lease import Lease
from notifier.storm import Viewer

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from notifier.detect.rules import Detection
    from testkit.redis_procs import RedisCluster3

KEYS = ClusterKeys("t", "big")
CHUNK = 50  # operations per script in these tests (the default is 2,000)
pytestmark = pytest.mark.timeout(30)


def viewer(n: int, score: int = 90) -> Viewer:
    raw = json.dumps({"id": f"v{n}", "healthScore": score, "healthGrade": "Good"}).encode()
    return Viewer(id=f"v{n}", health=score, health_grade="Good", raw=raw)


def first_poll(snapshot: Snapshot, count: int) -> tuple[Detection, list[EncodedEvent]]:
    seen = {v.id: v for v in map(viewer, range(count))}
    detection = detect(snapshot.tracked, seen, polled_at=1000, settings=DetectionSettings())
    events = []
    for offset, emission in enumerate(detection.emissions, start=1):
        sequence = snapshot.sequence + offset
        event_id, body = encode_emission(
            emission, cluster="big", sequence=sequence, epoch=snapshot.epoch, time_ms=1000
        )
        events.append(EncodedEvent(emission.type, event_id, body))
    return detection, events


async def leader(redis: Redis, owner: str = "me") -> Lease:
    lease = Lease(redis, KEYS.lease, KEYS.fence, owner, ttl=30)
    assert await lease.acquire()
    return lease


async def stream(redis: Redis) -> list[dict[str, Any]]:
    entries: list[tuple[bytes, dict[bytes, bytes]]] = await redis.xrange(KEYS.events)  # type: ignore[assignment]
    return [json.loads(fields[b"event"]) for _, fields in entries]


async def stage_keys(redis: Redis) -> list[bytes]:
    return [KEYS.stage.encode()] if await redis.exists(KEYS.stage) else []


class DiesAfter(StateStore):
    """A store whose process dies (raises) once it has applied ``chunks`` chunks."""

    def __init__(self, *args: Any, chunks: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.left = chunks

    async def _apply_chunk(self, commit: str, chunk: int, lease: str) -> str:
        if self.left == 0:
            raise ConnectionError("killed")
        self.left -= 1
        return await super()._apply_chunk(commit, chunk, lease)


async def test_a_large_commit_is_applied_in_bounded_chunks_in_order(redis: Redis) -> None:
    """1,000 viewers with chunks of 50: every event once, in sequence order, no script long."""
    lease = await leader(redis)
    assert lease.value is not None
    store = StateStore(redis, KEYS, maxlen=100_000, chunk_ops=CHUNK)
    snapshot = await store.load(lease=lease.value)
    detection, events = first_poll(snapshot, 1000)
    await redis.config_set("slowlog-log-slower-than", 0)
    await redis.slowlog_reset()
    outcome, generation = await store.commit(
        snapshot, detection, events, lease=lease.value, polled_at=1000
    )
    assert (outcome, generation) == (CommitOutcome.COMMITTED, 1)
    assert store.chunks_applied == 2000 // CHUNK  # 1,000 upserts and 1,000 events
    got = await stream(redis)
    assert [e["sequence"] for e in got] == list(range(1, 1001))
    assert [e["id"] for e in got] == [e.id for e in events]
    assert await redis.hlen(KEYS.viewers) == 1000
    meta = await redis.hgetall(KEYS.meta)
    assert (meta[b"generation"], meta[b"sequence"], meta[b"polls"]) == (b"1", b"1000", b"1")
    assert b"pending" not in meta
    assert await stage_keys(redis) == []
    slow = await redis.slowlog_get(1000)
    assert max(int(entry["duration"]) for entry in slow) < 50_000  # microseconds
    again = await store.load(lease=lease.value)
    assert set(again.tracked) == set(detection.state)


async def test_a_poller_that_dies_after_publishing_is_finished_by_the_next_load(
    redis: Redis,
) -> None:
    """Killed with 7 of 40 chunks applied: the next leader's load applies the rest, once."""
    lease = await leader(redis)
    assert lease.value is not None
    dying = DiesAfter(redis, KEYS, maxlen=100_000, chunk_ops=CHUNK, chunks=7)
    snapshot = await dying.load(lease=lease.value)
    detection, events = first_poll(snapshot, 1000)
    with pytest.raises(ConnectionError, match="killed"):
        await dying.commit(snapshot, detection, events, lease=lease.value, polled_at=1000)
    assert len(await stream(redis)) < 1000
    with pytest.raises(StateError, match="half applied"):
        await StateStore(redis, KEYS, maxlen=100_000).load()  # a reader without the lease
    await lease.release()
    successor = await leader(redis, "successor")
    assert successor.value is not None
    fresh = StateStore(redis, KEYS, maxlen=100_000, chunk_ops=CHUNK)
    loaded = await fresh.load(lease=successor.value)
    assert fresh.chunks_applied == 40 - 7
    assert set(loaded.tracked) == set(detection.state)
    assert (loaded.generation, loaded.sequence) == (1, 1000)
    got = await stream(redis)
    assert [e["id"] for e in got] == [e.id for e in events]
    assert await stage_keys(redis) == []


async def test_a_poller_that_dies_before_publishing_changes_nothing(redis: Redis) -> None:
    """Staged but never published: state, stream and meta as before; the stage expires."""

    class DiesBeforePublish(StateStore):
        async def _commit_staged(self, *args: Any) -> tuple[CommitOutcome, int]:
            self._publish = _dead  # type: ignore[assignment]
            return await super()._commit_staged(*args)

    async def _dead(**_: Any) -> list[Any]:
        raise ConnectionError("killed")

    lease = await leader(redis)
    assert lease.value is not None
    store = DiesBeforePublish(redis, KEYS, maxlen=100_000, chunk_ops=CHUNK)
    snapshot = await store.load(lease=lease.value)
    detection, events = first_poll(snapshot, 1000)
    with pytest.raises(ConnectionError, match="killed"):
        await store.commit(snapshot, detection, events, lease=lease.value, polled_at=1000)
    assert await stream(redis) == []
    assert await redis.hlen(KEYS.viewers) == 0
    (stage,) = await stage_keys(redis)
    assert 0 < await redis.pttl(stage) <= 15 * 60 * 1000
    healthy = StateStore(redis, KEYS, maxlen=100_000, chunk_ops=CHUNK)
    reloaded = await healthy.load(lease=lease.value)
    assert (reloaded.generation, reloaded.tracked) == (0, {})
    detection, events = first_poll(reloaded, 1000)  # the next poll: the abandoned stage goes
    outcome, _ = await healthy.commit(
        reloaded, detection, events, lease=lease.value, polled_at=2000
    )
    assert outcome is CommitOutcome.COMMITTED
    assert len(await stream(redis)) == 1000
    assert await stage_keys(redis) == []


async def test_a_fenced_poller_stops_applying_and_the_new_leader_finishes(redis: Redis) -> None:
    """The lease passes to another replica half-way: FENCED, nothing twice, nothing lost."""

    class LosesLease(StateStore):
        async def _apply_chunk(self, commit: str, chunk: int, lease: str) -> str:
            if chunk == 25:  # after 20 chunks of state and 4 of events
                await redis.delete(KEYS.lease)
                assert await Lease(redis, KEYS.lease, KEYS.fence, "other", ttl=30).acquire()
            return await super()._apply_chunk(commit, chunk, lease)

    lease = await leader(redis)
    assert lease.value is not None
    store = LosesLease(redis, KEYS, maxlen=100_000, chunk_ops=CHUNK)
    snapshot = await store.load(lease=lease.value)
    detection, events = first_poll(snapshot, 1000)
    outcome, _ = await store.commit(snapshot, detection, events, lease=lease.value, polled_at=1000)
    assert outcome is CommitOutcome.HANDED_OVER  # published: committed, finished by B
    assert len(await stream(redis)) == 4 * CHUNK
    holder = (await redis.get(KEYS.lease)).decode()  # type: ignore[union-attr]
    await StateStore(redis, KEYS, maxlen=100_000).load(lease=holder)
    got = await stream(redis)
    assert [e["id"] for e in got] == [e.id for e in events]


async def test_a_new_commit_waits_for_a_half_applied_one(redis: Redis) -> None:
    """While a commit is pending, another commit (even a small one) is refused: reload first."""
    lease = await leader(redis)
    assert lease.value is not None
    dying = DiesAfter(redis, KEYS, maxlen=100_000, chunk_ops=CHUNK, chunks=1)
    snapshot = await dying.load(lease=lease.value)
    detection, events = first_poll(snapshot, 1000)
    with pytest.raises(ConnectionError):
        await dying.commit(snapshot, detection, events, lease=lease.value, polled_at=1000)
    after = Snapshot(generation=1, sequence=1000, epoch=snapshot.epoch, tracked=detection.state)
    small, _ = first_poll(after, 3)
    store = StateStore(redis, KEYS, maxlen=100_000, chunk_ops=CHUNK)
    outcome, _ = await store.commit(after, small, [], lease=lease.value, polled_at=2000)
    assert outcome is CommitOutcome.PENDING
    chunks_before = await redis.hlen(KEYS.stage)
    large, large_events = first_poll(after, 1000)
    outcome, _ = await store.commit(after, large, large_events, lease=lease.value, polled_at=2000)
    assert outcome is CommitOutcome.PENDING  # and the pending commit's chunks are untouched
    assert await redis.hlen(KEYS.stage) == chunks_before


async def test_an_apply_sent_twice_writes_once(redis: Redis) -> None:
    """A client that re-sends an apply after a lost reply (and one sent out of turn) changes
    nothing: every event is in the stream once."""

    class Resends(StateStore):
        async def _apply_chunk(self, commit: str, chunk: int, lease: str) -> str:
            status = await super()._apply_chunk(commit, chunk, lease)
            assert await super()._apply_chunk(commit, chunk, lease) in ("ok", "done")  # re-sent
            if chunk < 40:
                assert await super()._apply_chunk(commit, chunk + 2, lease) == "gap"
            return status

    lease = await leader(redis)
    assert lease.value is not None
    store = Resends(redis, KEYS, maxlen=100_000, chunk_ops=CHUNK)
    snapshot = await store.load(lease=lease.value)
    detection, events = first_poll(snapshot, 1000)
    outcome, _ = await store.commit(snapshot, detection, events, lease=lease.value, polled_at=1000)
    assert outcome is CommitOutcome.COMMITTED
    assert [e["id"] for e in await stream(redis)] == [e.id for e in events]


@pytest.mark.timeout(60)
async def test_staged_commits_and_their_roll_forward_work_on_a_redis_cluster(
    redis_cluster: RedisCluster3,
) -> None:
    """On three masters: every key of the commit is in the cluster's slot; a half-applied
    commit is finished by the next load."""
    client = RedisCluster.from_url(redis_cluster.url)
    try:
        lease = Lease(client, KEYS.lease, KEYS.fence, "me", ttl=30)
        assert await lease.acquire()
        assert lease.value is not None
        dying = DiesAfter(client, KEYS, maxlen=100_000, chunk_ops=CHUNK, chunks=11)
        snapshot = await dying.load(lease=lease.value)
        detection, events = first_poll(snapshot, 1000)
        with pytest.raises(ConnectionError, match="killed"):
            await dying.commit(snapshot, detection, events, lease=lease.value, polled_at=1000)
        fresh = StateStore(client, KEYS, maxlen=100_000, chunk_ops=CHUNK)
        loaded = await fresh.load(lease=lease.value)
        assert set(loaded.tracked) == set(detection.state)
        entries: list[tuple[bytes, dict[bytes, bytes]]] = await client.xrange(KEYS.events)  # type: ignore[assignment]
        assert [json.loads(f[b"event"])["id"] for _, f in entries] == [e.id for e in events]
    finally:
        await client.aclose()


async def test_a_stale_leader_cannot_touch_a_published_stage(redis: Redis) -> None:
    """B publishes and dies half-way; A, paused with an old lease, wakes and commits: refused
    without writing a chunk or an expiry, so B's commit is finished whole by the next load."""
    old = await leader(redis, "a")
    assert old.value is not None
    stale = StateStore(redis, KEYS, maxlen=100_000, chunk_ops=CHUNK)
    snapshot = await stale.load(lease=old.value)
    await redis.delete(KEYS.lease)  # A paused past its lease; B takes it
    new = await leader(redis, "b")
    assert new.value is not None
    dying = DiesAfter(redis, KEYS, maxlen=100_000, chunk_ops=CHUNK, chunks=3)
    b_snapshot = await dying.load(lease=new.value)
    detection, events = first_poll(b_snapshot, 1000)
    with pytest.raises(ConnectionError):
        await dying.commit(b_snapshot, detection, events, lease=new.value, polled_at=1000)
    chunks = await redis.hlen(KEYS.stage)
    assert await redis.pttl(KEYS.stage) == -1  # published: no expiry
    a_detection, a_events = first_poll(snapshot, 1000)
    outcome, _ = await stale.commit(snapshot, a_detection, a_events, lease=old.value, polled_at=900)
    assert outcome is CommitOutcome.FENCED
    assert await redis.pttl(KEYS.stage) == -1
    assert await redis.hlen(KEYS.stage) == chunks
    await StateStore(redis, KEYS, maxlen=100_000).load(lease=new.value)
    assert [e["id"] for e in await stream(redis)] == [e.id for e in events]


async def test_stage_writes_are_fenced_for_a_leader_that_lost_the_lease_while_staging(
    redis: Redis,
) -> None:
    """A is staging when B takes over, publishes and dies: A's next chunk writes are refused,
    so B's published stage keeps no expiry and none of A's chunks."""
    a = await leader(redis, "a")
    assert a.value is not None
    store_a = StateStore(redis, KEYS, maxlen=100_000, chunk_ops=CHUNK)
    snapshot = await store_a.load(lease=a.value)
    real_stage = store_a._stage  # the seam of this test: what happens between two writes
    b_events: list[EncodedEvent] = []
    took_over: list[bool] = []

    async def takeover_then_stage(**kwargs: Any) -> Any:
        if not took_over:  # before A's first chunk lands, B leads, publishes and dies
            took_over.append(True)
            await redis.delete(KEYS.lease)
            b = await leader(redis, "b")
            assert b.value is not None
            dying = DiesAfter(redis, KEYS, maxlen=100_000, chunk_ops=CHUNK, chunks=3)
            b_snapshot = await dying.load(lease=b.value)
            detection, events = first_poll(b_snapshot, 1000)
            b_events.extend(events)
            with pytest.raises(ConnectionError):
                await dying.commit(b_snapshot, detection, events, lease=b.value, polled_at=1000)
        return await real_stage(**kwargs)

    store_a._stage = takeover_then_stage  # type: ignore[assignment]
    detection, events = first_poll(snapshot, 1000)
    outcome, _ = await store_a.commit(snapshot, detection, events, lease=a.value, polled_at=900)
    assert outcome is CommitOutcome.FENCED
    assert await redis.pttl(KEYS.stage) == -1
    fields = [f.decode() if isinstance(f, bytes) else str(f) for f in await redis.hkeys(KEYS.stage)]
    assert len({f.split(":")[0] for f in fields}) == 1  # only B's commit is staged
    holder = (await redis.get(KEYS.lease)).decode()  # type: ignore[union-attr]
    await StateStore(redis, KEYS, maxlen=100_000).load(lease=holder)
    assert [e["id"] for e in await stream(redis)] == [e.id for e in b_events]
