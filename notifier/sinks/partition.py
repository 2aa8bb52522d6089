"""Delivery partitions (SPEC 8): a sink's events of one cluster split over K workers.

Partition ``k`` of ``K`` reads the cluster stream through its own consumer group (``sink:<name>``
when K is 1, ``sink:<name>:<k>`` otherwise), under its own lease, and delivers the events whose
partition is ``k``: CRC32 of the viewer id (the event's subject), or of
``applicationId/streamKey`` for a stream event (an audience without an application id:
``/streamKey``), mod K. Every event of a viewer, or of a stream, lands in one partition, so
per-viewer and per-stream order hold as they do with one worker. Entries of other partitions are
acknowledged unread.

K = 1 keeps the names of a notifier without partitions (group, lease, report), so adding the
setting to a running deployment changes nothing until K changes.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from notifier.events import Event
    from notifier.keys import ClusterKeys

__all__ = ["Partition", "partition_key", "partition_of", "partitions"]


def partition_key(event: Event) -> bytes:
    """What an event is partitioned by: its viewer id, or ``applicationId/streamKey``."""
    if event.is_stream_event:
        return f"{event.application_id or ''}/{event.stream_key or ''}".encode()
    return event.subject.encode()


def partition_of(event: Event, count: int) -> int:
    """The partition (0 .. count-1) that delivers ``event``: CRC32 of its key, mod ``count``."""
    if count == 1:
        return 0
    return zlib.crc32(partition_key(event)) % count


@dataclass(frozen=True, slots=True)
class Partition:
    """Partition ``index`` of ``count`` of one sink's delivery: the names it lives under."""

    sink: str
    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise ValueError(f"partition {self.index} of {self.count} does not exist")

    @property
    def group(self) -> str:
        """The consumer group: ``sink:<name>``, or ``sink:<name>:<k>`` when there are several."""
        return f"sink:{self.sink}" if self.count == 1 else f"sink:{self.sink}:{self.index}"

    @property
    def lane(self) -> str:
        """The name of its report and lease: ``<name>``, or ``<name>:<k>``."""
        return self.sink if self.count == 1 else f"{self.sink}:{self.index}"

    @property
    def label(self) -> str:
        """The ``partition`` label of its metrics."""
        return str(self.index)

    def lease_key(self, keys: ClusterKeys) -> str:
        """Its lease. The count is part of the name when K > 1, so that partition 0 of 2 and
        partition 0 of 4 are different leases while K changes (``layout``)."""
        return keys.sink_lease(self.leased_name)

    def fence_key(self, keys: ClusterKeys) -> str:
        """The counter of its lease's fencing tokens."""
        return keys.sink_fence(self.leased_name)

    @property
    def leased_name(self) -> str:
        """The name its lease goes by: ``<name>``, or ``<name>:<k>of<K>``."""
        return self.sink if self.count == 1 else f"{self.sink}:{self.index}of{self.count}"

    def owns(self, event: Event) -> bool:
        """True if this partition delivers ``event``."""
        return self.count == 1 or partition_of(event, self.count) == self.index

    def __str__(self) -> str:
        return self.lane


def partitions(sink: str, count: int) -> list[Partition]:
    """Every partition of a sink's delivery of one cluster."""
    return [Partition(sink, index, count) for index in range(count)]
