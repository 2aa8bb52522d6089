"""The tracked state of one cluster in Redis, and the commit of one poll: exactly once, in
bounded pieces.

Layout (see ``notifier.keys``): ``P:{C}:viewers`` maps viewer id -> tracked state (``codec``),
``P:{C}:meta`` holds ``generation`` (bumped by every commit script), ``sequence`` (the last
event's), ``epoch`` (a UUID that seeds event ids), ``polls``, ``polled_at`` and ``commit`` (the
id of the last script applied).

A poll's writes go in **chunks** of at most ``chunk_ops`` operations (state changes and events),
planned by ``chunks``, one transaction each (``senders``: MULTI/EXEC behind a fenced check on a
single Redis, one ``scripts.COMMIT`` on a Redis Cluster), so that Redis is never busy with one
for long. Each chunk is atomic and carries every write of the viewers in it: a viewer's
new state (or its removal) together with all of its events of this poll. Each one checks the
generation it was computed against and the leader's fencing token, writes, XADDs, and bumps the
generation.

Why that is exactly once, even when a poll's chunks stop half-way (kill -9, a lost lease, a
Redis fault): every chunk leaves Redis in a state that some run of the rules could have
produced, with the events that went with it. The viewers of the chunks that were not applied
still hold their state from before the poll, so the next poll (computed from the state reloaded
from Redis) emits what those chunks would have emitted: a viewer whose ``viewer.connected`` was
lost is still untracked and connects again; one whose event reached the stream is tracked, and
does not. Nothing is emitted twice and nothing is lost; a lost chunk's misses and health counts
are re-counted from the next poll on, as for a poll that was never committed.

Chunks are sent one after the other, the next one encoded while Redis applies the one before.
Each carries an id (``<commit>:<n>/<chunks>``, which ``meta`` keeps as ``commit``), so a copy
re-sent by the client after a lost reply is answered "ok" rather than "stale". After any
outcome but COMMITTED the poller drops its cached state and reloads it.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import msgspec
from redis.asyncio import RedisCluster
from redis.exceptions import ResponseError

from notifier.detect.chunks import ChunkWrite, KeepStreams, keep_flag, plan
from notifier.detect.codec import StreamCodec, TrackCodec
from notifier.detect.scripts import CHECK, COMMIT, META
from notifier.detect.senders import OneByOne, transaction
from notifier.errors import StateError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from notifier.detect.chunks import Chunk
    from notifier.detect.rules import Detection, Track
    from notifier.detect.senders import Sender
    from notifier.detect.streams import StreamId, StreamState
    from notifier.events import EncodedEvent
    from notifier.keys import ClusterKeys
    from notifier.redis_client import AnyRedis

__all__ = [
    "CHUNK_OPS",
    "Checkpoint",
    "CommitOutcome",
    "KeepStreams",
    "Snapshot",
    "StateStore",
    "TrackCodec",
]

CHUNK_OPS = 2000
"""Upserts, deletes and events in one script at most: about 20 ms of Redis time."""
LOAD_PAGE = 2000  # viewers per HSCAN page


class CommitOutcome(enum.Enum):
    """What a commit did."""

    COMMITTED = "ok"  # every chunk applied; the generation moved on by one per chunk
    STALE = "stale"  # Redis is not at the generation the poll (or this chunk) was computed
    # against: no chunk, or only the first ones, were applied (each is whole)
    FENCED = "fenced"  # this poller no longer holds the cluster's lease (the chunks before
    # the one refused were applied; the next leader carries on from them)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The cluster's state as of one generation."""

    generation: int
    sequence: int
    epoch: str
    tracked: Mapping[str, Track]  # (after a poll: a rules.Tracked)
    polls: int = 0  # complete polls committed so far (``meta.polls``)
    streams: dict[StreamId, StreamState] = field(default_factory=dict)  # live audiences
    audiences: bool = False  # the stream states are kept (``streams`` is the truth)

    def header(self) -> Snapshot:
        """Where Redis stands, without the tracked state (what a commit needs of it)."""
        return Snapshot(
            self.generation, self.sequence, self.epoch, {}, self.polls, {}, self.audiences
        )


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Writes the newest record of every tracked viewer (on a clean stop): no events."""

    upserts: Mapping[str, Track]
    deletes: tuple[str, ...] = ()
    emissions: tuple[()] = ()


class StateStore:
    """Loads and commits one cluster's state. Pass in the Redis client."""

    def __init__(
        self,
        redis: AnyRedis,
        keys: ClusterKeys,
        *,
        maxlen: int,
        chunk_ops: int = CHUNK_OPS,
        lease_ttl: float = 5.0,
    ) -> None:
        """``lease_ttl``: the poller lease's TTL in seconds, for a chunk that takes back a
        lease that ran out with nobody taking it since (``scripts``)."""
        self._redis = redis
        self._lease_ttl_ms = max(int(lease_ttl * 1000), 1)
        self._keys = keys
        self._maxlen = maxlen
        self._chunk_ops = chunk_ops
        self._meta = redis.register_script(META)
        self._commit = redis.register_script(COMMIT)
        self._check = redis.register_script(CHECK)
        self.chunks_applied = 0  # commit chunks applied by this store
        # The writes last planned (held, so that ``is`` compares them), their counts, the plan.
        self._planned: tuple[tuple[object, ...], tuple[int, int], list[Chunk]] | None = None

    # --- loading -------------------------------------------------------------------------------

    async def load(self) -> Snapshot:
        """Everything tracked, as of one generation, read in pages (no long command).

        Should a commit land while the pages are read (another replica's, say), the read
        starts again.
        """
        await self._load_scripts()
        for _ in range(3):
            meta = await self._read_meta()
            if "pending" in meta:
                raise StateError(
                    f"{self._keys.meta}: commit {meta['pending']} was staged by a development"
                    " build of storm-notifier and is half applied; finish it with that build"
                    " (or delete the fields pending, pending_chunks and applied to forget it)"
                )
            tracked = await self._read_viewers(_number(meta, "polls"))
            streams = await self._read_streams()
            if (await self._read_meta()).get("generation") == meta.get("generation"):
                return self._snapshot(meta, tracked, streams)
        raise StateError(f"{self._keys.meta}: the generation kept moving while the state was read")

    async def _load_scripts(self) -> None:
        """Load the scripts the commits run. A chunk whose script Redis does not know (it was
        restarted since) is refused as a whole, and its commit is resumed after a load: a
        first EVALSHA that missed would send a large chunk twice."""
        await self._redis.script_load(COMMIT)
        await self._redis.script_load(CHECK)

    async def _read_meta(self) -> dict[str, str]:
        return _pairs(await self._meta(keys=[self._keys.meta], args=[str(uuid.uuid4())]))

    async def _read_viewers(self, polls: int) -> dict[str, Track]:
        tracked: dict[str, Track] = {}
        cursor = 0
        decode = functools.partial(TrackCodec.decode, polls=polls)
        while True:
            reply = await self._redis.hscan(self._keys.viewers, cursor, count=LOAD_PAGE)
            cursor, page = int(reply[0]), cast("dict[bytes, bytes]", reply[1])
            for raw_id, blob in page.items():
                viewer_id = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
                try:
                    tracked[viewer_id] = decode(blob)
                except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                    raise StateError(
                        f"{self._keys.viewers}: entry {viewer_id!r} is not a state this version"
                        f" wrote ({exc}); fix or delete that field"
                    ) from None
            if not cursor:
                return tracked
            await asyncio.sleep(0)  # let the lease keeper run between pages

    async def _read_streams(self) -> dict[StreamId, StreamState]:
        streams: dict[StreamId, StreamState] = {}
        cursor = 0
        while True:
            reply = await self._redis.hscan(self._keys.streams, cursor, count=LOAD_PAGE)
            cursor, page = int(reply[0]), cast("dict[bytes, bytes]", reply[1])
            for name, blob in page.items():
                try:
                    stream, state = StreamCodec.decode(name, blob)
                except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                    raise StateError(
                        f"{self._keys.streams}: entry {name!r} is not a stream state this"
                        f" version wrote ({exc}); delete it (the audience is counted again)"
                    ) from None
                streams[stream] = state
            if not cursor:
                return streams

    def _snapshot(
        self,
        meta: dict[str, str],
        tracked: dict[str, Track],
        streams: dict[StreamId, StreamState],
    ) -> Snapshot:
        try:
            return Snapshot(
                generation=int(meta.get("generation", 0)),
                sequence=int(meta.get("sequence", 0)),
                epoch=str(uuid.UUID(meta["epoch"])),
                tracked=tracked,
                polls=int(meta.get("polls", 0)),
                streams=streams,
                audiences="audiences" in meta,
            )
        except (KeyError, ValueError) as exc:
            raise StateError(
                f"{self._keys.meta}: unreadable generation, sequence or epoch ({exc})"
            ) from None

    # --- committing ----------------------------------------------------------------------------

    async def commit(
        self,
        snapshot: Snapshot,
        detection: Detection | Checkpoint,
        events: Sequence[EncodedEvent],
        *,
        lease: str,
        polled_at: int | None,
        streams: Mapping[StreamId, StreamState | None] | None = None,
        keep_streams: KeepStreams | None = None,
        commit_id: str | None = None,
        resume: bool = False,
    ) -> tuple[CommitOutcome, int]:
        """Commit one poll in chunks (module doc); the outcome and the generation Redis is at.

        ``events`` are the events of ``detection.emissions``, one each, in the same order, then
        the poll's stream events; it may encode them as they are read (a slice at a time). The
        stream events and the ``streams`` writes (None: delete) go in the last chunk.
        ``keep_streams`` says from which chunk on the stream states are kept (``KeepStreams``).
        ``polled_at`` is the poll's start (ms); None for a checkpoint, which counts no poll.

        ``resume``: this commit (same ``commit_id``, same content) was sent before and its
        outcome is unknown (a Redis outage cut it off): Redis is asked how many of its chunks
        it applied, and only the rest are sent.
        """
        commit = commit_id or uuid.uuid4().hex  # a re-sent copy is recognised, not stale
        stream_writes = dict(streams or {})
        chunks = self._plan(detection, len(events), len(stream_writes))
        self._planned = None  # (not held past its commit: a first poll's events are large)
        send = functools.partial(
            self._send, snapshot, detection, events, chunks=chunks, lease=lease,
            polled_at=polled_at, stream_writes=stream_writes, keep_streams=keep_streams,
            commit=commit,
        )  # fmt: skip
        try:
            return await send(resume=resume)
        except ResponseError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        return await send(resume=True)  # Redis restarted since the scripts were loaded

    async def _send(
        self,
        snapshot: Snapshot,
        detection: Detection | Checkpoint,
        events: Sequence[EncodedEvent],
        *,
        chunks: list[Chunk],
        lease: str,
        polled_at: int | None,
        stream_writes: Mapping[StreamId, StreamState | None],
        keep_streams: KeepStreams | None,
        commit: str,
        resume: bool,
    ) -> tuple[CommitOutcome, int]:
        """The chunks of ``commit``, the first ones Redis applied already skipped if
        ``resume``."""
        first = 1
        if resume:
            await self._load_scripts()  # a restarted Redis has forgotten them
            found = _resume_point(await self._read_meta(), snapshot.generation, commit, len(chunks))
            if found is None:
                return CommitOutcome.STALE, snapshot.generation
            first = found
            if first > len(chunks):
                return CommitOutcome.COMMITTED, snapshot.generation + len(chunks)
        generation, sequence = snapshot.generation, snapshot.sequence
        synced = snapshot.polls + (polled_at is not None)
        encode = functools.partial(TrackCodec.encode, synced=synced)
        stream_upserts, stream_deletes = _stored_streams(stream_writes)
        sender = await self._sender()
        outcome, at = CommitOutcome.COMMITTED, generation
        try:
            for number, chunk in enumerate(chunks, start=1):
                if number < first:
                    continue
                upserts: list[str | bytes] = []
                for viewer_id in chunk.upserts:
                    upserts += (viewer_id, encode(detection.upserts[viewer_id]))
                write = ChunkWrite(
                    generation=generation + number - 1,
                    lease=lease,
                    commit=commit if len(chunks) == 1 else f"{commit}:{number}/{len(chunks)}",
                    sequence=sequence + chunk.end,
                    polled_at=polled_at if number == 1 else None,
                    keep=keep_flag(keep_streams, number, len(chunks)),
                    upserts=upserts,
                    deletes=chunk.deletes,
                    events=events,
                    start=chunk.start,
                    end=chunk.end,
                    stream_upserts=stream_upserts if chunk.streams else [],
                    stream_deletes=stream_deletes if chunk.streams else [],
                )
                await self._before_chunk(number, write)
                await sender.send(write)
                while sender.in_flight >= sender.window or (
                    sender.in_flight and number == len(chunks)
                ):  # the chunk before (Redis applied it while this one was encoded)
                    status, at = await sender.receive()
                    outcome = await self._outcome(status, lease)
                    if outcome is not CommitOutcome.COMMITTED:
                        return outcome, at
                    self.chunks_applied += 1
        finally:
            await sender.close()
        return outcome, at

    async def _outcome(self, status: str, lease: str) -> CommitOutcome:
        """A chunk's status as an outcome; a chunk another writer interrupted ("moved") is
        FENCED if the lease is someone else's now, STALE if it is still this one's."""
        if status != "moved":
            return CommitOutcome(status)
        holder = await self._redis.get(self._keys.lease)
        text = holder.decode() if isinstance(holder, bytes) else holder
        return CommitOutcome.STALE if text == lease else CommitOutcome.FENCED

    def generations(self, detection: Detection, events: int, stream_writes: int = 0) -> int:
        """How far a commit of these writes moves the generation on: one per chunk."""
        return len(self._plan(detection, events, stream_writes))

    def _plan(
        self, detection: Detection | Checkpoint, events: int, stream_writes: int
    ) -> list[Chunk]:
        """``chunks.plan``, kept from ``generations()`` to the commit of the same writes: the
        poller asks how many generations a poll takes before it commits it (a first poll of
        100k: some 20 ms a plan)."""
        writes = (detection.emissions, detection.upserts, detection.deletes)
        last = self._planned
        if (
            last is not None
            and all(mine is theirs for mine, theirs in zip(last[0], writes, strict=True))
            and last[1] == (events, stream_writes)
        ):
            return last[2]
        chunks = plan(detection, events, self._chunk_ops, stream_writes)
        self._planned = (writes, (events, stream_writes), chunks)
        return chunks

    async def _before_chunk(self, number: int, write: ChunkWrite) -> None:
        """Called before chunk ``number`` is sent (the seam where tests let a process die, or
        the lease pass on, between chunks). On a single Redis, chunk ``number - 1`` is in Redis
        then, waiting for its EXEC, which goes out with chunk ``number``."""

    async def _sender(self) -> Sender:
        if not isinstance(self._redis, RedisCluster):
            sender = await transaction(
                self._redis,
                self._keys,
                check=self._check.sha,
                maxlen=self._maxlen,
                lease_ttl_ms=self._lease_ttl_ms,
            )
            if sender is not None:
                return sender
        return OneByOne(
            self._commit, self._keys, maxlen=self._maxlen, lease_ttl_ms=self._lease_ttl_ms
        )


def _stored_streams(
    writes: Mapping[StreamId, StreamState | None],
) -> tuple[list[str | bytes], list[str | bytes]]:
    """A commit's stream writes as its last chunk sends them: name, state, ... and names."""
    upserts: list[str | bytes] = []
    deletes: list[str | bytes] = []
    for stream, state in writes.items():
        if state is None:
            deletes.append(StreamCodec.name(stream))
        else:
            upserts += StreamCodec.encode(stream, state)
    return upserts, deletes


def _resume_point(meta: dict[str, str], generation: int, commit: str, chunks: int) -> int | None:
    """The first chunk of ``commit`` Redis has not applied (``chunks + 1``: all were), going
    by the id of the last chunk applied; None if Redis moved on without it (stale)."""
    applied = meta.get("commit", "")
    if applied == commit:
        return chunks + 1
    if applied.startswith(f"{commit}:"):
        return int(applied[len(commit) + 1 :].split("/")[0]) + 1
    return 1 if _number(meta, "generation") == generation else None


def _number(meta: dict[str, str], field: str) -> int:
    try:
        return int(meta.get(field, 0))
    except ValueError:
        raise StateError(f"meta field {field} is not a number: {meta[field]!r}") from None


def _pairs(flat: list[Any]) -> dict[str, str]:
    def text(value: Any) -> str:
        return value.decode() if isinstance(value, bytes) else str(value)

    return {text(k): text(v) for k, v in zip(flat[::2], flat[1::2], strict=True)}
