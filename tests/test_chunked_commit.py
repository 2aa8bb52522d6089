"""Large commits in bounded chunks (detect/store.py): each chunk whole, exactly once across a
stop half-way, re-derived by the next poll."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any, ClassVar

import pytest
from redis.asyncio import Redis, RedisCluster
from redis.exceptions import ResponseError

from notifier.config import DetectionSettings
from notifier.detect.chunks import ChunkWrite, plan
from notifier.detect.encoding import encode_poll
from notifier.detect.rules import detect
from notifier.detect.scripts import CHECK, COMMIT
from notifier.detect.senders import OneByOne, Sender, Transaction, transaction
from notifier.detect.store import Checkpoint, CommitOutcome, Snapshot, StateStore, TrackCodec
from notifier.errors import StateError
from notifier.keys import ClusterKeys
from notifier.lease import Lease
from notifier.storm import Viewer
from testkit.redis_procs import RedisServer

if TYPE_CHECKING:
    from pathlib import Path

    from notifier.detect.rules import Detection
    from notifier.events import EncodedEvent
    from notifier.redis_client import AnyRedis
    from testkit.redis_procs import RedisCluster3

KEYS = ClusterKeys("t", "big")
CHUNK = 50  # operations per script in these tests (the default is 2,000)
pytestmark = pytest.mark.timeout(30)


def viewer(n: int, score: int = 90) -> Viewer:
    raw = json.dumps({"id": f"v{n}", "healthScore": score, "healthGrade": "Good"}).encode()
    return Viewer(id=f"v{n}", health=score, health_grade="Good", raw=raw)


def poll(
    snapshot: Snapshot, ids: range, *, at: int = 1000, score: int = 90, **settings: Any
) -> tuple[Detection, list[EncodedEvent]]:
    """Detection and events of one poll that sees the viewers ``ids``."""
    seen = {v.id: v for v in (viewer(n, score) for n in ids)}
    detection = detect(snapshot.tracked, seen, polled_at=at, settings=DetectionSettings(**settings))
    events = encode_poll(
        detection.emissions,
        cluster="big",
        epoch=snapshot.epoch,
        after=snapshot.sequence,
        time_ms=at,
    )
    return detection, events


async def leader(redis: AnyRedis, owner: str = "me") -> str:
    lease = Lease(redis, KEYS.lease, KEYS.fence, owner, ttl=30)
    assert await lease.acquire()
    assert lease.value is not None
    return lease.value


async def stream(redis: AnyRedis) -> list[dict[str, Any]]:
    entries: list[tuple[bytes, dict[bytes, bytes]]] = await redis.xrange(KEYS.events)  # type: ignore[assignment]
    return [json.loads(fields[b"event"]) for _, fields in entries]


async def until_applied(redis: AnyRedis, chunk: int) -> None:
    """Wait until Redis has applied chunk ``chunk`` of the commit under way (it is in flight:
    each read lets Redis take the next command)."""
    while True:
        value = await redis.hget(KEYS.meta, "commit")
        commit = value.decode() if isinstance(value, bytes) else ""
        if ":" in commit and int(commit.rsplit(":", 1)[1].split("/")[0]) >= chunk:
            return


class DiesAfter(StateStore):
    """A store whose process dies (raises) once ``chunks`` chunks have been applied: before
    chunk ``chunks + 2`` is sent, with chunk ``chunks + 1`` in Redis waiting for its EXEC (on a
    Redis Cluster, applied too: each chunk is a script there)."""

    def __init__(self, redis: AnyRedis, *args: Any, chunks: int, **kwargs: Any) -> None:
        super().__init__(redis, *args, **kwargs)
        self.redis, self.chunks = redis, chunks

    async def _before_chunk(self, number: int, *_: Any) -> None:
        if number == self.chunks + 2:
            await until_applied(self.redis, self.chunks)
            raise ConnectionError("killed")


def assert_exactly_once(got: list[dict[str, Any]], viewers: int) -> None:
    """One viewer.connected per viewer, sequences 1, 2, 3 ... in stream order."""
    assert [e["sequence"] for e in got] == list(range(1, len(got) + 1))
    connected = [e["subject"] for e in got if e["type"] == "viewer.connected"]
    assert sorted(connected) == sorted(f"v{n}" for n in range(viewers))


async def test_a_large_commit_is_written_in_bounded_chunks_in_order(redis: Redis) -> None:
    """1,000 viewers with chunks of 50: every event once, in sequence order, no script long."""
    lease = await leader(redis)
    store = StateStore(redis, KEYS, maxlen=100_000, chunk_ops=CHUNK)
    snapshot = await store.load()
    detection, events = poll(snapshot, range(1000))
    await redis.config_set("slowlog-log-slower-than", 0)
    await redis.slowlog_reset()
    outcome, generation = await store.commit(
        snapshot, detection, events, lease=lease, polled_at=1000
    )
    chunks = 2000 // CHUNK  # 1,000 events, each with its viewer's state
    assert (outcome, generation, store.chunks_applied) == (CommitOutcome.COMMITTED, chunks, chunks)
    got = await stream(redis)
    assert [e["id"] for e in got] == [e.id for e in events]
    assert_exactly_once(got, 1000)
    assert await redis.hlen(KEYS.viewers) == 1000
    meta = await redis.hgetall(KEYS.meta)
    assert (meta[b"sequence"], meta[b"polls"], meta[b"polled_at"]) == (b"1000", b"1", b"1000")
    slow = await redis.slowlog_get(1000)
    assert max(int(entry["duration"]) for entry in slow) < 50_000  # microseconds
    again = await store.load()
    assert (set(again.tracked), again.generation) == (set(detection.state), chunks)


async def test_a_poller_dying_between_chunks_leaves_whole_chunks_and_the_next_poll_emits_the_rest(
    redis: Redis,
) -> None:
    """Killed after 7 of 40 chunks: the tracked viewers are exactly those whose connected event
    is in the stream; the next poll, from the reloaded state, connects the others, once."""
    lease = await leader(redis)
    dying = DiesAfter(redis, KEYS, maxlen=100_000, chunk_ops=CHUNK, chunks=7)
    snapshot = await dying.load()
    detection, events = poll(snapshot, range(1000))
    with pytest.raises(ConnectionError, match="killed"):
        await dying.commit(snapshot, detection, events, lease=lease, polled_at=1000)
    written = await stream(redis)
    assert len(written) == 7 * CHUNK // 2
    fresh = StateStore(redis, KEYS, maxlen=100_000, chunk_ops=CHUNK)
    loaded = await fresh.load()
    assert set(loaded.tracked) == {e["subject"] for e in written}
    assert (loaded.generation, loaded.sequence) == (7, len(written))
    detection, events = poll(loaded, range(1000), at=2000)
    assert len(events) == 1000 - len(written)
    outcome, _ = await fresh.commit(loaded, detection, events, lease=lease, polled_at=2000)
    assert outcome is CommitOutcome.COMMITTED
    assert_exactly_once(await stream(redis), 1000)
    assert await redis.hget(KEYS.meta, "polls") == b"2"


async def test_a_viewers_events_and_state_are_never_split_between_chunks(redis: Redis) -> None:
    """With drops confirmed in one poll, each new viewer has two events: a chunk holds both and
    the viewer's state, so a stop half-way never leaves an event without its state."""
    lease = await leader(redis)
    dying = DiesAfter(redis, KEYS, maxlen=100_000, chunk_ops=CHUNK, chunks=5)
    snapshot = await dying.load()
    detection, events = poll(snapshot, range(300), score=10, health={"consecutive_polls": 1})
    assert len(events) == 600
    chunks = plan(detection, len(events), CHUNK)
    for chunk in chunks:
        assert 0 < chunk.end - chunk.start + len(chunk.upserts) <= CHUNK
        subjects = {e.viewer_id for e in detection.emissions[chunk.start : chunk.end]}
        assert subjects == set(chunk.upserts)
    with pytest.raises(ConnectionError, match="killed"):
        await dying.commit(snapshot, detection, events, lease=lease, polled_at=1000)
    got = await stream(redis)
    tracked = set((await StateStore(redis, KEYS, maxlen=100_000).load()).tracked)
    assert {e["subject"] for e in got} == tracked
    for subject in tracked:
        kinds = [e["type"] for e in got if e["subject"] == subject]
        assert kinds == ["viewer.connected", "viewer.health_dropped"]


async def test_a_fenced_poller_stops_and_the_new_leader_carries_on_from_its_chunks(
    redis: Redis,
) -> None:
    """The lease passes to another replica after 10 chunks, chunk 11 checked already and
    waiting for its EXEC: FENCED; the new leader's first poll emits what the refused chunks
    held, nothing twice."""

    class LosesLease(StateStore):
        async def _before_chunk(self, number: int, *_: Any) -> None:
            if number == 12:
                await until_applied(redis, 10)
                await redis.delete(KEYS.lease)
                await leader(redis, "other")

    lease = await leader(redis)
    store = LosesLease(redis, KEYS, maxlen=100_000, chunk_ops=CHUNK)
    snapshot = await store.load()
    detection, events = poll(snapshot, range(1000))
    outcome, _ = await store.commit(snapshot, detection, events, lease=lease, polled_at=1000)
    assert outcome is CommitOutcome.FENCED
    assert len(await stream(redis)) == 10 * CHUNK // 2
    holder = (await redis.get(KEYS.lease)).decode()  # type: ignore[union-attr]
    successor = StateStore(redis, KEYS, maxlen=100_000, chunk_ops=CHUNK)
    loaded = await successor.load()
    detection, events = poll(loaded, range(1000), at=2000)
    outcome, _ = await successor.commit(loaded, detection, events, lease=holder, polled_at=2000)
    assert outcome is CommitOutcome.COMMITTED
    assert_exactly_once(await stream(redis), 1000)


@pytest.mark.parametrize("kind", ["transaction", "script"])
async def test_a_chunk_sent_twice_writes_once(redis: Redis, kind: str) -> None:
    """A chunk sent again after it was applied (a lost reply, a commit resumed from the wrong
    chunk) is answered "ok" if it was the last one applied and "stale" if an earlier one, and
    writes nothing twice: as a transaction (one Redis) and as the COMMIT script (a cluster)."""

    class Records(StateStore):
        sent: ClassVar[list[ChunkWrite]] = []

        async def _before_chunk(self, _: int, write: ChunkWrite) -> None:
            self.sent.append(write)

    lease = await leader(redis)
    store = Records(redis, KEYS, maxlen=100_000, chunk_ops=CHUNK)
    snapshot = await store.load()
    detection, events = poll(snapshot, range(1000))
    outcome, generation = await store.commit(
        snapshot, detection, events, lease=lease, polled_at=1000
    )
    assert outcome is CommitOutcome.COMMITTED
    assert len(Records.sent) > 1
    sender = await again(redis, kind)
    replies = []
    try:
        for write in Records.sent:
            await sender.send(write)
            replies.append(await sender.receive())
    finally:
        await sender.close()
    assert replies[-1] == ("ok", generation)
    assert {status for status, _ in replies[:-1]} == {"stale"}
    assert [e["id"] for e in await stream(redis)] == [e.id for e in events]
    assert await redis.hget(KEYS.meta, "generation") == str(generation).encode()


async def again(redis: Redis, kind: str) -> Sender:
    """A sender of the kind asked for, on ``redis``."""
    settings: dict[str, Any] = {"maxlen": 100_000, "lease_ttl_ms": 30_000}
    if kind == "script":
        return OneByOne(redis.register_script(COMMIT), KEYS, **settings)
    check = await redis.script_load(CHECK)
    sender = await transaction(redis, KEYS, check=check, **settings)
    assert sender is not None
    return sender


async def first_chunk(redis: Redis) -> ChunkWrite:
    """The one chunk of a first poll of 10 viewers, led by this test, not sent yet."""
    lease = await leader(redis)
    store = StateStore(redis, KEYS, maxlen=100_000, chunk_ops=CHUNK)
    snapshot = await store.load()
    detection, events = poll(snapshot, range(10))
    (chunk,) = plan(detection, len(events), CHUNK)
    upserts: list[str | bytes] = []
    for viewer_id in chunk.upserts:
        upserts += (viewer_id, TrackCodec.encode(detection.upserts[viewer_id], synced=1))
    return ChunkWrite(
        generation=0, lease=lease, commit="c", sequence=len(events), polled_at=1000, keep="",
        upserts=upserts, deletes=[], events=events, start=chunk.start, end=chunk.end,
        stream_upserts=[], stream_deletes=[],
    )  # fmt: skip


async def test_a_transaction_whose_state_moves_after_its_check_writes_nothing(
    redis: Redis,
) -> None:
    """Another writer moves the meta hash between a chunk's check and its EXEC: Redis discards
    the transaction (WATCH), the chunk is reported "moved" (the store tells stale from fenced
    by the lease), and nothing of it is written."""

    class Interrupted(Transaction):
        async def _before_answer(self) -> None:
            await redis.hset(KEYS.meta, "generation", 0)  # the same value, by another client

    write = await first_chunk(redis)
    check = await redis.script_load(CHECK)
    sender = await transaction(redis, KEYS, check=check, maxlen=100_000, lease_ttl_ms=30_000)
    assert sender is not None
    interrupted = Interrupted(
        redis, sender._connection, sender._socket, KEYS,  # type: ignore[arg-type]
        check=check, maxlen=100_000, lease_ttl_ms=30_000,
    )  # fmt: skip
    try:
        await interrupted.send(write)
        assert await interrupted.receive() == ("moved", 0)
    finally:
        await interrupted.close()
    assert await stream(redis) == []
    assert await redis.hlen(KEYS.viewers) == 0
    assert await redis.hget(KEYS.meta, "commit") is None


async def test_a_chunk_whose_check_fails_is_discarded(redis: Redis) -> None:
    """A check that cannot run (here: a script Redis does not know, as after a restart between
    loading it and the chunk) is no "go": the transaction is discarded, the error raised."""
    write = await first_chunk(redis)
    sender = await transaction(redis, KEYS, check="0" * 40, maxlen=100_000, lease_ttl_ms=30_000)
    assert sender is not None
    try:
        await sender.send(write)
        with pytest.raises(ResponseError, match="NOSCRIPT"):
            await sender.receive()
    finally:
        await sender.close()
    assert await stream(redis) == []
    assert await redis.hlen(KEYS.viewers) == 0
    assert await redis.ping()


async def test_a_commit_after_redis_forgot_its_scripts_goes_through_once(redis: Redis) -> None:
    """Redis forgets the scripts between the load and the commit (a restart, SCRIPT FLUSH): the
    chunk whose check is unknown is discarded, the scripts are loaded again and the commit is
    resumed; every event once."""
    lease = await leader(redis)
    store = StateStore(redis, KEYS, maxlen=100_000, chunk_ops=CHUNK)
    snapshot = await store.load()
    await redis.script_flush()
    detection, events = poll(snapshot, range(1000))
    outcome, generation = await store.commit(
        snapshot, detection, events, lease=lease, polled_at=1000
    )
    assert outcome is CommitOutcome.COMMITTED
    assert generation == store.generations(detection, len(events))
    assert_exactly_once(await stream(redis), 1000)


@pytest.mark.timeout(60)
async def test_a_commit_after_redis_restarted_goes_through_on_the_first_try(
    tmp_path: Path,
) -> None:
    """redis-server SIGKILLed and restarted from its AOF between two polls: the client's idle
    connections are dead and the scripts forgotten, yet the next commit goes through at once,
    every event once."""
    server = RedisServer(tmp_path / "redis", appendonly=True, appendfsync="always")
    with server:
        client = Redis.from_url(server.url)
        try:
            lease = await leader(client)
            store = StateStore(client, KEYS, maxlen=100_000, chunk_ops=CHUNK)
            snapshot = await store.load()
            detection, events = poll(snapshot, range(500))
            outcome, generation = await store.commit(
                snapshot, detection, events, lease=lease, polled_at=1000
            )
            assert outcome is CommitOutcome.COMMITTED
            snapshot = Snapshot(generation, len(events), snapshot.epoch, detection.state)
            await asyncio.to_thread(server.kill)
            await asyncio.to_thread(server.start)
            detection, events = poll(snapshot, range(1000), at=2000)
            outcome, _ = await store.commit(
                snapshot, detection, events, lease=lease, polled_at=2000
            )
            assert outcome is CommitOutcome.COMMITTED
            assert_exactly_once(await stream(client), 1000)
        finally:
            await client.aclose()


async def test_a_user_who_may_not_open_transactions_commits_with_the_script(
    redis: Redis, redis_url: str
) -> None:
    """An ACL user denied MULTI: the chunks go as the COMMIT script instead, every event once
    (no write ever goes out unchecked)."""
    await redis.acl_setuser(
        "bob", enabled=True, passwords=["+bob-pass"], keys=["*"], channels=["*"],
        commands=["+@all", "-multi"],
    )  # fmt: skip
    host = redis_url.removeprefix("redis://")
    client = Redis.from_url(f"redis://bob:bob-pass@{host}")
    try:
        lease = await leader(client)
        store = StateStore(client, KEYS, maxlen=100_000, chunk_ops=CHUNK)
        snapshot = await store.load()
        await redis.config_resetstat()
        detection, events = poll(snapshot, range(1000))
        outcome, _ = await store.commit(snapshot, detection, events, lease=lease, polled_at=1000)
        assert outcome is CommitOutcome.COMMITTED
        assert_exactly_once(await stream(client), 1000)
        stats = await redis.info("commandstats")
        assert "cmdstat_exec" not in stats
        assert stats["cmdstat_evalsha"]["calls"] == store.generations(detection, len(events))
    finally:
        await client.aclose()


async def test_a_stale_leader_writes_no_chunk(redis: Redis) -> None:
    """A, paused past its lease, wakes while B leads: its first chunk is fenced, nothing of
    A's poll reaches Redis."""
    old = await leader(redis, "a")
    stale = StateStore(redis, KEYS, maxlen=100_000, chunk_ops=CHUNK)
    snapshot = await stale.load()
    await redis.delete(KEYS.lease)
    await leader(redis, "b")
    detection, events = poll(snapshot, range(1000))
    outcome, generation = await stale.commit(snapshot, detection, events, lease=old, polled_at=1000)
    assert (outcome, generation) == (CommitOutcome.FENCED, 0)
    assert await stream(redis) == []
    assert await redis.hlen(KEYS.viewers) == 0


async def test_a_mass_disconnect_and_a_checkpoint_are_chunked_too(redis: Redis) -> None:
    """1,000 viewers leave (two missed polls) in chunks; a clean stop's checkpoint of 1,000
    records is chunked and writes no event."""
    lease = await leader(redis)
    store = StateStore(redis, KEYS, maxlen=100_000, chunk_ops=CHUNK)
    snapshot = await store.load()
    for at, ids in ((1000, range(1000)), (2000, range(0)), (3000, range(0))):
        detection, events = poll(snapshot, ids, at=at)
        outcome, generation = await store.commit(
            snapshot, detection, events, lease=lease, polled_at=at
        )
        assert outcome is CommitOutcome.COMMITTED
        snapshot = Snapshot(
            generation, snapshot.sequence + len(events), snapshot.epoch, detection.state
        )
    got = await stream(redis)
    assert [e["type"] for e in got].count("viewer.disconnected") == 1000
    assert await redis.hlen(KEYS.viewers) == 0
    detection, events = poll(snapshot, range(1000), at=4000)
    await store.commit(snapshot, detection, events, lease=lease, polled_at=4000)
    snapshot = await store.load()
    before = len(await stream(redis))
    outcome, _ = await store.commit(
        snapshot, Checkpoint(upserts=snapshot.tracked), [], lease=lease, polled_at=None
    )
    assert outcome is CommitOutcome.COMMITTED
    assert len(await stream(redis)) == before
    assert await redis.hget(KEYS.meta, "polls") == b"4"


async def test_state_half_applied_by_a_development_build_is_refused_with_a_way_out(
    redis: Redis,
) -> None:
    """A meta hash that a staged commit of a development build left ``pending`` is not read
    as if it were whole: a one-line error says what to do."""
    await redis.hset(KEYS.meta, mapping={"pending": "abc", "pending_chunks": 3, "applied": 1})
    with pytest.raises(StateError, match=r"development build.*pending_chunks"):
        await StateStore(redis, KEYS, maxlen=100_000).load()


@pytest.mark.timeout(60)
async def test_chunked_commits_and_a_stop_half_way_work_on_a_redis_cluster(
    redis_cluster: RedisCluster3,
) -> None:
    """On three masters: every key of a chunk is in the cluster's slot; a stop half-way is
    carried on by the next poll."""
    client = RedisCluster.from_url(redis_cluster.url)
    try:
        lease = await leader(client)
        dying = DiesAfter(client, KEYS, maxlen=100_000, chunk_ops=CHUNK, chunks=11)
        snapshot = await dying.load()
        detection, events = poll(snapshot, range(1000))
        with pytest.raises(ConnectionError, match="killed"):
            await dying.commit(snapshot, detection, events, lease=lease, polled_at=1000)
        fresh = StateStore(client, KEYS, maxlen=100_000, chunk_ops=CHUNK)
        loaded = await fresh.load()
        detection, events = poll(loaded, range(1000), at=2000)
        outcome, _ = await fresh.commit(loaded, detection, events, lease=lease, polled_at=2000)
        assert outcome is CommitOutcome.COMMITTED
        assert_exactly_once(await stream(client), 1000)
    finally:
        await client.aclose()
