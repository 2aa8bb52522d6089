"""How a tracked viewer is laid out in Redis (the store's private format).

A tracked viewer (a value of ``P:{C}:viewers``) is a tagged msgpack array, ``TrackCodec``: the
tag says the layout, so a new release reads what an older one wrote. Layout 2 adds the
session's counts and ``synced``, the cluster's poll count when the entry was written: an entry
read back with fewer polls than the cluster's has counts that may lack the polls since (the
session is then not ``complete``). Layouts 0 and 1 had no session: it is read as begun at the
last poll seen, not complete.
"""

from __future__ import annotations

from typing import overload

import msgspec

from notifier.detect.rules import Track
from notifier.detect.streams import StreamId, StreamState

__all__ = ["StreamCodec", "TrackCodec"]


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


class _TrackV2(msgspec.Struct, array_like=True, tag=2, gc=False):
    """Layout 2: layout 1, then the session's counts and the poll count when written."""

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
    connected_at: int
    polls: int
    health_min: float | None
    health_max: float | None
    health_sum: float
    measured_polls: int
    drops: int
    dropped_at: int | None
    degraded_ms: int
    complete: bool
    synced: int


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


@overload
def _compact(score: float) -> float: ...
@overload
def _compact(score: float | None) -> float | None: ...
def _compact(score: float | None) -> float | None:
    """A whole-number float as an int (msgpack's shortest form); anything else as it is."""
    return int(score) if type(score) is float and score.is_integer() else score


class TrackCodec:
    """How a tracked viewer is stored in ``P:{C}:viewers``: tagged msgpack, older layouts read."""

    _encode = msgspec.msgpack.Encoder().encode
    _decode_new = msgspec.msgpack.Decoder(_TrackV2 | _TrackV1).decode
    _decode_v0 = msgspec.msgpack.Decoder(_TrackV0).decode

    @classmethod
    def encode(cls, track: Track, *, synced: int) -> bytes:
        """The stored form of ``track`` (the current layout), written at poll ``synced``.

        A score that is a whole number (Storm sends integers) is stored as an integer: one byte
        of msgpack instead of nine, and read back as the same float. Five of them take a
        typical entry under 512 bytes, the allocation size Redis's allocator rounds it up to
        (the next is 640): a tracked viewer costs Redis about a fifth less memory.
        """
        return cls._encode(
            _TrackV2(
                track.record,
                track.seen_at,
                track.missed,
                track.dropped,
                track.streak,
                _compact(track.anchor_score),
                track.anchor_grade,
                _compact(track.last_score),
                track.last_grade,
                track.unlisted,
                track.connected_at,
                track.polls,
                _compact(track.health_min),
                _compact(track.health_max),
                _compact(track.health_sum),
                track.measured_polls,
                track.drops,
                track.dropped_at,
                track.degraded_ms,
                track.complete,
                synced,
            )
        )

    @classmethod
    def decode(cls, blob: bytes, *, polls: int) -> Track:
        """A stored track of any known layout, read when the cluster has counted ``polls``
        polls; ``msgspec`` errors if it is none of the layouts."""
        stored: _TrackV2 | _TrackV1 | _TrackV0
        try:
            stored = cls._decode_new(blob)
        except msgspec.ValidationError:
            stored = cls._decode_v0(blob)
        if isinstance(stored, _TrackV2):
            return Track(
                stored.record,
                stored.seen_at,
                stored.missed,
                stored.dropped,
                stored.streak,
                stored.anchor_score,
                stored.anchor_grade,
                stored.last_score,
                stored.last_grade,
                stored.unlisted,
                stored.connected_at,
                stored.polls,
                stored.health_min,
                stored.health_max,
                stored.health_sum,
                stored.measured_polls,
                stored.drops,
                stored.dropped_at,
                stored.degraded_ms,
                stored.complete and stored.synced >= polls,
            )
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
            connected_at=stored.seen_at,
            dropped_at=stored.seen_at if stored.dropped else None,
            complete=False,
        )


class _StreamV1(msgspec.Struct, array_like=True, tag=1, gc=False):
    """Layout 1 of a stream state (a value of ``P:{C}:streams``): the tag, then the state."""

    state: StreamState


class StreamCodec:
    """How a live audience's state is stored: field ``["<applicationId>", "<streamKey>"]`` (JSON,
    readable in ``redis-cli``), value a tagged msgpack array."""

    _encode_value = msgspec.msgpack.Encoder().encode
    _decode_value = msgspec.msgpack.Decoder(_StreamV1).decode
    _decode_name = msgspec.json.Decoder(tuple[str, str]).decode

    @classmethod
    def name(cls, stream: StreamId) -> bytes:
        """The hash field of ``stream``."""
        return msgspec.json.encode(tuple(stream))

    @classmethod
    def encode(cls, stream: StreamId, state: StreamState) -> tuple[bytes, bytes]:
        """The field and value of ``stream``'s state."""
        return cls.name(stream), cls._encode_value(_StreamV1(state))

    @classmethod
    def decode(cls, name: bytes, blob: bytes) -> tuple[StreamId, StreamState]:
        """A stored stream state; ``msgspec`` errors if it is not one."""
        application_id, stream_key = cls._decode_name(name)
        return StreamId(application_id, stream_key), cls._decode_value(blob).state
