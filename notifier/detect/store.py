"""The tracked state of one cluster in Redis, and the atomic commit of one poll.

Layout (see ``notifier.keys``): ``P:{C}:viewers`` maps viewer id -> tracked state (``TrackCodec``),
``P:{C}:meta`` holds ``generation`` (bumped by every commit), ``sequence`` (the last event's),
``epoch`` (a UUID that seeds event ids), ``polls`` and ``polled_at``.

One Lua script per poll checks the generation the poller computed against and the leader's
fencing token, writes only the changed entries, XADDs the events and bumps the generation:
all or nothing. Each commit carries an id, so a copy re-sent by the client after a lost reply
is answered "ok" rather than "stale". A crash or a lost reply at any point therefore emits no
event twice and loses none: a poller that is unsure drops the poll, reloads the state, and
computes the next poll from what Redis holds.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from notifier.detect.rules import Track
from notifier.errors import StateError
from notifier.events import ENTRY_FIELDS

if TYPE_CHECKING:
    from collections.abc import Sequence

    from notifier.detect.rules import Detection
    from notifier.events import EncodedEvent
    from notifier.keys import ClusterKeys
    from notifier.redis_client import AnyRedis

__all__ = ["Checkpoint", "CommitOutcome", "Snapshot", "StateStore", "TrackCodec"]

_LOAD = """
redis.call('HSETNX', KEYS[1], 'epoch', ARGV[1])
return {redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2])}
"""

_COMMIT = """
local meta, viewers, events, lease = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local generation = tonumber(redis.call('HGET', meta, 'generation') or '0')
if generation ~= tonumber(ARGV[1]) then
  -- The same commit sent twice (a client that re-sends after a lost reply) is not stale.
  if redis.call('HGET', meta, 'commit') == ARGV[9] then return {'ok', generation} end
  return {'stale', generation}
end
if redis.call('GET', lease) ~= ARGV[2] then return {'fenced', generation} end
local maxlen = ARGV[3]
local upserts, deletes, count = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local i = 13
while upserts > 0 do
  local batch = {}
  local n = math.min(upserts, 500)
  for _ = 1, n do
    batch[#batch + 1] = ARGV[i]
    batch[#batch + 1] = ARGV[i + 1]
    i = i + 2
  end
  redis.call('HSET', viewers, unpack(batch))
  upserts = upserts - n
end
while deletes > 0 do
  local batch = {}
  local n = math.min(deletes, 1000)
  for _ = 1, n do
    batch[#batch + 1] = ARGV[i]
    i = i + 1
  end
  redis.call('HDEL', viewers, unpack(batch))
  deletes = deletes - n
end
local f1, f2, f3 = ARGV[10], ARGV[11], ARGV[12]  -- the entry's field names (events.entry)
for _ = 1, count do
  redis.call('XADD', events, 'MAXLEN', '~', maxlen, '*',
             f1, ARGV[i], f2, ARGV[i + 1], f3, ARGV[i + 2])
  i = i + 3
end
if ARGV[5] == '' then
  redis.call('HSET', meta, 'generation', generation + 1, 'sequence', ARGV[4], 'commit', ARGV[9])
else
  redis.call('HSET', meta, 'generation', generation + 1, 'sequence', ARGV[4], 'commit', ARGV[9],
             'polled_at', ARGV[5])
  redis.call('HINCRBY', meta, 'polls', 1)
end
return {'ok', generation + 1}
"""


class _TrackV1(msgspec.Struct, array_like=True, tag=1, gc=False):
    """Layout 1 of a tracked viewer: a msgpack array whose first element is the tag ``1``.

    The field order here *is* the stored layout: append fields (with defaults) in a new tag,
    never reorder. ``Track`` (the rules' view) may change freely.
    """

    record: bytes
    seen_at: int
    missed: int
    dropped: bool
    streak: int
    anchor_score: float | None
    anchor_grade: str | None
    last_score: float | None
    last_grade: str | None
    unlisted: int


class _TrackV0(msgspec.Struct, array_like=True, gc=False):
    """The layout before tags (release 0.1): the same fields, untagged; read, never written."""

    record: bytes
    seen_at: int
    missed: int = 0
    dropped: bool = False
    streak: int = 0
    anchor_score: float | None = None
    anchor_grade: str | None = None
    last_score: float | None = None
    last_grade: str | None = None
    unlisted: int = 0


class TrackCodec:
    """How a tracked viewer is stored in ``P:{C}:viewers``: tagged msgpack, older layouts read."""

    _encode = msgspec.msgpack.Encoder().encode
    _decode_v1 = msgspec.msgpack.Decoder(_TrackV1).decode
    _decode_v0 = msgspec.msgpack.Decoder(_TrackV0).decode

    @classmethod
    def encode(cls, track: Track) -> bytes:
        """The stored form of ``track`` (the current layout)."""
        return cls._encode(
            _TrackV1(
                track.record,
                track.seen_at,
                track.missed,
                track.dropped,
                track.streak,
                track.anchor_score,
                track.anchor_grade,
                track.last_score,
                track.last_grade,
                track.unlisted,
            )
        )

    @classmethod
    def decode(cls, blob: bytes) -> Track:
        """A stored track of any known layout; ``msgspec`` errors if it is none of them."""
        stored: _TrackV1 | _TrackV0
        try:
            stored = cls._decode_v1(blob)
        except msgspec.ValidationError:
            stored = cls._decode_v0(blob)
        return Track(
            record=stored.record,
            seen_at=stored.seen_at,
            missed=stored.missed,
            dropped=stored.dropped,
            streak=stored.streak,
            anchor_score=stored.anchor_score,
            anchor_grade=stored.anchor_grade,
            last_score=stored.last_score,
            last_grade=stored.last_grade,
            unlisted=stored.unlisted,
        )


class CommitOutcome(enum.Enum):
    """What the commit script did."""

    COMMITTED = "ok"  # applied; the generation moved on by one
    STALE = "stale"  # Redis is not at the generation the poll was computed against
    FENCED = "fenced"  # this poller no longer holds the cluster's lease


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

    def __init__(self, redis: AnyRedis, keys: ClusterKeys, *, maxlen: int) -> None:
        self._redis = redis
        self._keys = keys
        self._maxlen = maxlen
        self._load = redis.register_script(_LOAD)
        self._commit = redis.register_script(_COMMIT)

    async def load(self) -> Snapshot:
        """Everything tracked, read atomically with the generation it belongs to."""
        # Load the commit script now: a first EVALSHA that misses would send a large first
        # commit twice (NOSCRIPT, then again after loading).
        await self._redis.script_load(_COMMIT)
        keys = [self._keys.meta, self._keys.viewers]
        meta_pairs, viewer_pairs = await self._load(keys=keys, args=[str(uuid.uuid4())])
        meta = _pairs(meta_pairs)
        tracked: dict[str, Track] = {}
        for raw_id, blob in zip(viewer_pairs[::2], viewer_pairs[1::2], strict=True):
            viewer_id = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
            try:
                tracked[viewer_id] = TrackCodec.decode(blob)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                raise StateError(
                    f"{self._keys.viewers}: entry {viewer_id!r} is not a state this version"
                    f" wrote ({exc}); fix or delete that field"
                ) from None
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
        """Apply one poll atomically; returns the outcome and the generation Redis is now at.

        ``polled_at`` is the poll's start (ms); None for a checkpoint, which counts no poll.
        """
        args: list[Any] = [
            snapshot.generation,
            lease,
            self._maxlen,
            snapshot.sequence + len(events),
            "" if polled_at is None else polled_at,
            len(detection.upserts),
            len(detection.deletes),
            len(events),
            commit_id or uuid.uuid4().hex,  # a re-sent copy is recognised, not called stale
            *ENTRY_FIELDS,
        ]
        encode = TrackCodec.encode
        for viewer_id, track in detection.upserts.items():
            args += (viewer_id, encode(track))
        args += detection.deletes
        for event in events:
            args += event.values()
        keys = [self._keys.meta, self._keys.viewers, self._keys.events, self._keys.lease]
        outcome, generation = await self._commit(keys=keys, args=args)
        status = outcome.decode() if isinstance(outcome, bytes) else str(outcome)
        return CommitOutcome(status), int(generation)


def _pairs(flat: list[Any]) -> dict[str, str]:
    def text(value: Any) -> str:
        return value.decode() if isinstance(value, bytes) else str(value)

    return {text(k): text(v) for k, v in zip(flat[::2], flat[1::2], strict=True)}
