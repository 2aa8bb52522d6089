"""How a tracked viewer is laid out in Redis (the store's private format).

A tracked viewer (a value of ``P:{C}:viewers``) is a tagged msgpack array, ``TrackCodec``: the
tag says the layout, so a new release reads what an older one wrote.
"""

from __future__ import annotations

import msgspec

from notifier.detect.rules import Track

__all__ = ["TrackCodec"]


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
