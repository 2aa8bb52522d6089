"""How tracked state and staged commits are laid out in Redis (the store's private formats).

- A **tracked viewer** (a value of ``P:{C}:viewers``) is a tagged msgpack array, ``TrackCodec``:
  the tag says the layout, so a new release reads what an older one wrote.
- A **staged chunk** (a value of ``P:{C}:stage:<commit>``) is a run of length-prefixed items,
  ``<decimal length>:<bytes>`` one after the other, that the apply script reads with
  ``string.find`` and ``string.sub`` alone (no Lua library that every Redis may lack). Its
  first item is ``"<upserts>,<deletes>,<events>"``; then id and state per upsert, id per
  delete, type, id and JSON per event.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from notifier.detect.rules import Track

if TYPE_CHECKING:
    from collections.abc import Sequence

    from notifier.events import EncodedEvent

__all__ = ["TrackCodec", "pack_chunk"]


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


def pack_chunk(
    upserts: Sequence[tuple[str, bytes]], deletes: Sequence[str], events: Sequence[EncodedEvent]
) -> bytes:
    """One staged chunk: ``upserts`` (viewer id, encoded state), ``deletes``, ``events``."""
    items: list[bytes] = [f"{len(upserts)},{len(deletes)},{len(events)}".encode()]
    for viewer_id, blob in upserts:
        items += (viewer_id.encode(), blob)
    items += [viewer_id.encode() for viewer_id in deletes]
    for event in events:
        items += (event.type.encode(), event.id.encode(), event.body)
    return b"".join(b"%d:%b" % (len(item), item) for item in items)
