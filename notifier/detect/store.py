"""The tracked state of one cluster in Redis, and the commit of one poll: exactly once, in
bounded pieces.

Layout (see ``notifier.keys``): ``P:{C}:viewers`` maps viewer id -> tracked state (``codec``),
``P:{C}:meta`` holds ``generation`` (bumped by every commit), ``sequence`` (the last event's),
``epoch`` (a UUID that seeds event ids), ``polls``, ``polled_at``, ``commit`` (the last commit's
id) and, while a staged commit is being applied, ``pending``, ``pending_chunks`` and ``applied``.

**A small poll** (at most ``CHUNK_OPS`` upserts, deletes and events) is one Lua script: it
checks the generation the poller computed against and the leader's fencing token, writes the
changed entries, XADDs the events and bumps the generation; all or nothing.

**A large poll** (a first poll of 100k viewers) would block Redis for seconds as one script, so
it goes in three steps, none of which runs long:

1. *stage*: its chunks (each at most ``CHUNK_OPS`` operations) are written to ``P:{C}:stage``,
   a hash that nothing else reads, cleared first (by the leader, never while a commit is
   pending) and expiring if abandoned; a crash here leaves the state as it was, and the next
   poll re-derives everything;
2. *publish*: one short script checks generation and fencing token and marks the commit
   ``pending`` with its generation, sequence and poll count: from here on the poll *is*
   committed;
3. *apply*: one script per chunk, fenced, writes that chunk's state changes and XADDs its
   events together and advances ``applied``; applying a chunk twice does nothing. If the poller
   dies or loses its lease half-way, whoever loads the state next (``load``, under the lease)
   applies the rest first, so every event reaches the stream exactly once and in order.

Each commit carries an id, so a copy re-sent by the client after a lost reply is answered "ok"
rather than "stale". A poller that is unsure of an outcome drops its cached state and reloads.
"""

from __future__ import annotations

import asyncio
import enum
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import msgspec

from notifier.detect.codec import TrackCodec, pack_chunk
from notifier.detect.scripts import APPLY, CLEAR_STAGE, COMMIT, META, PUBLISH, STAGE
from notifier.errors import StateError
from notifier.events import ENTRY_FIELDS

if TYPE_CHECKING:
    from collections.abc import Sequence

    from notifier.detect.rules import Detection, Track
    from notifier.events import EncodedEvent
    from notifier.keys import ClusterKeys
    from notifier.redis_client import AnyRedis

__all__ = [
    "CHUNK_OPS",
    "Checkpoint",
    "CommitOutcome",
    "Snapshot",
    "StateStore",
    "TrackCodec",
]

CHUNK_OPS = 2000
"""Upserts, deletes and events in one script at most: about 20 ms of Redis time."""
LOAD_PAGE = 2000  # viewers per HSCAN page
STAGE_TTL_MS = 15 * 60 * 1000  # an abandoned stage (a crash before publishing) goes away


class CommitOutcome(enum.Enum):
    """What a commit did."""

    COMMITTED = "ok"  # applied; the generation moved on by one
    STALE = "stale"  # Redis is not at the generation the poll was computed against
    FENCED = "fenced"  # this poller no longer holds the cluster's lease
    PENDING = "pending"  # another commit is half applied: reload (which finishes it) first
    UNSTAGED = "unstaged"  # the staged chunks were not all there (expired): nothing changed
    HANDED_OVER = "handed_over"  # published, then the lease passed on: the next leader applies
    # the rest when it loads (the poll is committed; this poller no longer leads)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The cluster's state as of one generation."""

    generation: int
    sequence: int
    epoch: str
    tracked: dict[str, Track]


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Writes the newest record of every tracked viewer (on a clean stop): no events."""

    upserts: dict[str, Track]
    deletes: tuple[str, ...] = ()


class StateStore:
    """Loads and commits one cluster's state. Pass in the Redis client."""

    def __init__(
        self, redis: AnyRedis, keys: ClusterKeys, *, maxlen: int, chunk_ops: int = CHUNK_OPS
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._maxlen = maxlen
        self._chunk_ops = chunk_ops
        self._meta = redis.register_script(META)
        self._commit = redis.register_script(COMMIT)
        self._publish = redis.register_script(PUBLISH)
        self._apply = redis.register_script(APPLY)
        self._clear_stage = redis.register_script(CLEAR_STAGE)
        self._stage = redis.register_script(STAGE)
        self.chunks_applied = 0  # staged chunks this store applied (its own and rolled forward)

    # --- loading -------------------------------------------------------------------------------

    async def load(self, *, lease: str | None = None) -> Snapshot:
        """Everything tracked, as of one generation, read in pages (no long command).

        A commit left half applied is finished first, under ``lease`` (``StateError`` without
        one). Pages are read under the lease, so no commit lands in between; should the
        generation move all the same, the read starts again.
        """
        # Load the scripts now: a first EVALSHA that misses would send a large commit twice.
        for script in (COMMIT, APPLY):
            await self._redis.script_load(script)
        for _ in range(3):
            meta = await self._read_meta()
            if "pending" in meta:
                if lease is None:
                    raise StateError(
                        f"{self._keys.meta}: commit {meta['pending']} is half applied;"
                        " it is finished by the cluster's leader when it loads the state"
                    )
                await self._roll_forward(meta, lease)
                meta = await self._read_meta()
            tracked = await self._read_viewers()
            if (await self._read_meta()).get("generation") == meta.get("generation"):
                return self._snapshot(meta, tracked)
        raise StateError(f"{self._keys.meta}: the generation kept moving while the state was read")

    async def _read_meta(self) -> dict[str, str]:
        return _pairs(await self._meta(keys=[self._keys.meta], args=[str(uuid.uuid4())]))

    async def _read_viewers(self) -> dict[str, Track]:
        tracked: dict[str, Track] = {}
        cursor = 0
        decode = TrackCodec.decode
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

    def _snapshot(self, meta: dict[str, str], tracked: dict[str, Track]) -> Snapshot:
        try:
            return Snapshot(
                generation=int(meta.get("generation", 0)),
                sequence=int(meta.get("sequence", 0)),
                epoch=str(uuid.UUID(meta["epoch"])),
                tracked=tracked,
            )
        except (KeyError, ValueError) as exc:
            raise StateError(
                f"{self._keys.meta}: unreadable generation, sequence or epoch ({exc})"
            ) from None

    async def _roll_forward(self, meta: dict[str, str], lease: str) -> None:
        commit = meta["pending"]
        try:
            first, last = int(meta.get("applied", 0)) + 1, int(meta["pending_chunks"])
        except (KeyError, ValueError):
            raise StateError(f"{self._keys.meta}: unreadable pending commit {commit}") from None
        for chunk in range(first, last + 1):
            status = await self._apply_chunk(commit, chunk, lease)
            if status == "fenced":
                raise StateError(f"{self._keys.lease}: lost the lease while finishing {commit}")
            if status not in ("ok", "done"):
                raise StateError(
                    f"{self._keys.stage}: chunk {chunk} of published commit {commit} is"
                    f" {status}; the stream may lack its events"
                )

    # --- committing ----------------------------------------------------------------------------

    async def commit(
        self,
        snapshot: Snapshot,
        detection: Detection | Checkpoint,
        events: Sequence[EncodedEvent],
        *,
        lease: str,
        polled_at: int | None,
        commit_id: str | None = None,
    ) -> tuple[CommitOutcome, int]:
        """Commit one poll; returns the outcome and the generation Redis is now at.

        ``polled_at`` is the poll's start (ms); None for a checkpoint, which counts no poll.
        Small polls are one script, large ones staged and applied in chunks (module doc).
        """
        commit = commit_id or uuid.uuid4().hex  # a re-sent copy is recognised, not stale
        head = [
            snapshot.generation,
            lease,
            commit,
            snapshot.sequence + len(events),
            "" if polled_at is None else polled_at,
        ]
        ops = len(detection.upserts) + len(detection.deletes) + len(events)
        if ops <= self._chunk_ops:
            return await self._commit_one(head, detection, events)
        return await self._commit_staged(head, detection, events)

    async def _commit_one(
        self, head: list[Any], detection: Detection | Checkpoint, events: Sequence[EncodedEvent]
    ) -> tuple[CommitOutcome, int]:
        encode = TrackCodec.encode
        args: list[Any] = [
            *head,
            self._maxlen,
            len(detection.upserts),
            len(detection.deletes),
            len(events),
            *ENTRY_FIELDS,
        ]
        for viewer_id, track in detection.upserts.items():
            args += (viewer_id, encode(track))
        args += detection.deletes
        for event in events:
            args += event.values()
        keys = [self._keys.meta, self._keys.lease, self._keys.viewers, self._keys.events]
        return _outcome(await self._commit(keys=keys, args=args))

    async def _commit_staged(
        self, head: list[Any], detection: Detection | Checkpoint, events: Sequence[EncodedEvent]
    ) -> tuple[CommitOutcome, int]:
        commit, lease = head[2], head[1]
        stage = self._keys.stage
        keys = [self._keys.meta, self._keys.lease, stage]
        cleared = _text(await self._clear_stage(keys=keys, args=[lease]))
        if cleared != "ok":
            return CommitOutcome(cleared), head[0]
        chunks = 0
        writes: list[asyncio.Future[Any]] = []
        try:
            for upserts, deletes, chunk_events in _split(detection, events, self._chunk_ops):
                chunks += 1
                blob = pack_chunk(upserts, deletes, chunk_events)
                args = [lease, f"{commit}:{chunks}", blob, STAGE_TTL_MS]
                writes.append(asyncio.ensure_future(self._stage(keys=keys, args=args)))
                await asyncio.sleep(0)  # Redis takes this chunk while the next is packed
            staged = {_text(reply) for reply in await asyncio.gather(*writes)}
        except BaseException:
            for write in writes:
                write.cancel()
            raise
        if staged - {"ok"}:  # fenced or pending: publishing would only refuse
            return CommitOutcome(sorted(staged - {"ok"})[0]), head[0]
        outcome, generation = _outcome(await self._publish(keys=keys, args=[*head, chunks]))
        if outcome is not CommitOutcome.COMMITTED:
            return outcome, generation  # the stage is cleared by the next large commit, or expires
        for chunk in range(1, chunks + 1):
            status = await self._apply_chunk(commit, chunk, lease)
            if status == "fenced":  # published: the next leader applies the rest when it loads
                return CommitOutcome.HANDED_OVER, generation
            if status not in ("ok", "done"):
                raise StateError(f"{stage}: chunk {chunk} of a published commit is {status}")
        return outcome, generation

    async def _apply_chunk(self, commit: str, chunk: int, lease: str) -> str:
        keys = [
            self._keys.meta,
            self._keys.lease,
            self._keys.viewers,
            self._keys.events,
            self._keys.stage,
        ]
        status = await self._apply(
            keys=keys, args=[lease, commit, chunk, self._maxlen, *ENTRY_FIELDS]
        )
        text = status.decode() if isinstance(status, bytes) else str(status)
        if text == "ok":
            self.chunks_applied += 1
        return text


def _split(
    detection: Detection | Checkpoint, events: Sequence[EncodedEvent], limit: int
) -> list[tuple[list[tuple[str, bytes]], list[str], list[EncodedEvent]]]:
    """The commit in chunks of at most ``limit`` operations: state changes first, then the
    events in stream order (a chunk may hold both)."""
    encode = TrackCodec.encode
    ops: list[tuple[int, Any]] = [(0, (v, encode(t))) for v, t in detection.upserts.items()]
    ops += [(1, viewer_id) for viewer_id in detection.deletes]
    ops += [(2, event) for event in events]
    chunks = []
    for start in range(0, len(ops), limit):
        part = ops[start : start + limit]
        chunks.append(
            (
                [item for kind, item in part if kind == 0],
                [item for kind, item in part if kind == 1],
                [item for kind, item in part if kind == 2],
            )
        )
    return chunks


def _text(reply: Any) -> str:
    return reply.decode() if isinstance(reply, bytes) else str(reply)


def _outcome(reply: list[Any]) -> tuple[CommitOutcome, int]:
    status, generation = reply
    text = status.decode() if isinstance(status, bytes) else str(status)
    return CommitOutcome(text), int(generation)


def _pairs(flat: list[Any]) -> dict[str, str]:
    def text(value: Any) -> str:
        return value.decode() if isinstance(value, bytes) else str(value)

    return {text(k): text(v) for k, v in zip(flat[::2], flat[1::2], strict=True)}
