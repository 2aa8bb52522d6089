"""A poll's events as they go into the stream: numbered, given ids, encoded when read.

The first poll of a big audience has 100k events to encode. ``PollEvents`` encodes a slice at a
time when the store reads it, so the store can send one chunk to Redis and encode the next while
Redis applies it, instead of encoding everything before Redis has anything to do.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, overload

from notifier.events import EncodedEvent, Envelope

if TYPE_CHECKING:
    from collections.abc import Iterator

    from notifier.detect.resp import XaddFrame
    from notifier.events import Emission, StreamEmission

__all__ = ["PollEvents", "encode_poll"]


class PollEvents(Sequence[EncodedEvent]):
    """The events of ``emissions``, numbered on from ``after``; each encoded when it is read.

    Encoding is deterministic, so reading an event twice gives the same bytes (and costs twice).
    """

    def __init__(
        self,
        emissions: Sequence[Emission | StreamEmission],
        *,
        cluster: str,
        epoch: str,
        after: int,
        time_ms: int,
    ) -> None:
        self._emissions = emissions
        self._envelope = Envelope(cluster=cluster, epoch=epoch, time_ms=time_ms)
        self._after = after

    def __len__(self) -> int:
        return len(self._emissions)

    @overload
    def __getitem__(self, index: int) -> EncodedEvent: ...

    @overload
    def __getitem__(self, index: slice) -> list[EncodedEvent]: ...

    def __getitem__(self, index: int | slice) -> EncodedEvent | list[EncodedEvent]:
        if isinstance(index, slice):
            return [self._encode(i) for i in range(*index.indices(len(self._emissions)))]
        if index < 0:
            index += len(self._emissions)
        if not 0 <= index < len(self._emissions):
            raise IndexError(index)
        return self._encode(index)

    def __iter__(self) -> Iterator[EncodedEvent]:
        return (self._encode(i) for i in range(len(self._emissions)))

    def xadds(self, start: int, end: int, frame: XaddFrame) -> list[bytes]:
        """Events ``[start, end)`` as the XADD commands of their stream entries, framed: what
        their ``values()`` would be packed into, without the events made on the way."""
        encode, entry = self._envelope.encode_emission, frame.entry
        commands = []
        sequence = self._after + start
        for emission in self._emissions[start:end]:
            sequence += 1
            event_id, body = encode(emission, sequence)
            commands.append(entry(emission.type, event_id.encode(), body))
        return commands

    def types(self) -> Iterator[str]:
        """The events' types, in order (nothing is encoded)."""
        return (emission.type for emission in self._emissions)

    def _encode(self, index: int) -> EncodedEvent:
        emission = self._emissions[index]
        event_id, body = self._envelope.encode_emission(emission, self._after + index + 1)
        return EncodedEvent(type=emission.type, id=event_id, body=body)


def encode_poll(
    emissions: Sequence[Emission | StreamEmission],
    *,
    cluster: str,
    epoch: str,
    after: int,
    time_ms: int,
) -> list[EncodedEvent]:
    """Every event of a poll at once, in emission order (what ``PollEvents`` reads one by one)."""
    return list(PollEvents(emissions, cluster=cluster, epoch=epoch, after=after, time_ms=time_ms))
