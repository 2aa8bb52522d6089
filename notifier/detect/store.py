"""The tracked state of one cluster in Redis, and the atomic commit of one poll.

Layout (see ``notifier.keys``): ``P:{C}:viewers`` maps viewer id -> tracked state (msgpack),
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

if TYPE_CHECKING:
    from collections.abc import Sequence

    from notifier.detect.rules import Detection
    from notifier.keys import ClusterKeys
    from notifier.redis_client import AnyRedis

__all__ = ["Checkpoint", "CommitOutcome", "EncodedEvent", "Snapshot", "StateStore"]

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
local i = 10
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
for _ = 1, count do
  redis.call('XADD', events, 'MAXLEN', '~', maxlen, '*',
             'type', ARGV[i], 'id', ARGV[i + 1], 'event', ARGV[i + 2])
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

_encode_track = msgspec.msgpack.Encoder().encode
_decode_track = msgspec.msgpack.Decoder(Track).decode


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


@dataclass(frozen=True, slots=True)
class EncodedEvent:
    """An event ready for the stream: its type, id and JSON."""

    type: str
    id: str
    body: bytes


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
                tracked[viewer_id] = _decode_track(blob)
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
        ]
        for viewer_id, track in detection.upserts.items():
            args += (viewer_id, _encode_track(track))
        args += detection.deletes
        for event in events:
            args += (event.type, event.id, event.body)
        keys = [self._keys.meta, self._keys.viewers, self._keys.events, self._keys.lease]
        outcome, generation = await self._commit(keys=keys, args=args)
        status = outcome.decode() if isinstance(outcome, bytes) else str(outcome)
        return CommitOutcome(status), int(generation)


def _pairs(flat: list[Any]) -> dict[str, str]:
    def text(value: Any) -> str:
        return value.decode() if isinstance(value, bytes) else str(value)

    return {text(k): text(v) for k, v in zip(flat[::2], flat[1::2], strict=True)}
