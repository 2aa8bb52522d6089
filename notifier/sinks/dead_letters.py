"""One sink's dead letters of one cluster (``P:{C}:dlq:<sink>``): the only reader and writer.

The worker moves an entry here atomically with acknowledging it (one script: the stream, the
group's retry states and the dead letters share the cluster's hash tag, so this holds on a
Redis Cluster too); ``replay`` adds copies of events that still fail; ``notifier dlq`` lists,
redrives (removing what was delivered) and purges. The record itself is
``notifier.events.DeadLetter``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, cast

from notifier.events import DeadLetter, iso_time
from notifier.keys import sink_group
from notifier.sinks.stream import read_range

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterable

    from redis.typing import EncodableT, FieldT

    from notifier.events import Event
    from notifier.keys import ClusterKeys
    from notifier.redis_client import AnyRedis

__all__ = ["DeadLetters"]

_MOVE = """
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', unpack(ARGV, 4))
redis.call('XACK', KEYS[2], ARGV[2], ARGV[3])
redis.call('HDEL', KEYS[3], ARGV[3])
return 1
"""


class DeadLetters:
    """The dead letters of one (sink, cluster). Pass in the Redis client."""

    def __init__(
        self,
        redis: AnyRedis,
        keys: ClusterKeys,
        sink: str,
        *,
        maxlen: int,
        wall_clock: Callable[[], float] = time.time,
        group: str | None = None,
    ) -> None:
        """``group``: the consumer group whose entries are moved here (a partition's); the
        sink's only one by default."""
        self._redis = redis
        self.cluster = keys.cluster
        self.key = keys.dlq(sink)
        self._stream = keys.events
        self._group = group or sink_group(sink)
        self._retries = keys.retries(sink)
        self._maxlen = maxlen
        self._wall_clock = wall_clock
        self._move = redis.register_script(_MOVE)

    def now(self) -> str:
        """The time a dead letter is stamped with."""
        return iso_time(int(self._wall_clock() * 1000))

    async def move(self, entry_id: str, letter: DeadLetter) -> None:
        """Dead-letter a pending entry of the sink's group and acknowledge it, atomically."""
        flat = [v for pair in letter.fields().items() for v in pair]
        await self._move(
            keys=[self.key, self._stream, self._retries],
            args=[self._maxlen, self._group, entry_id, *flat],
        )

    async def add(self, letter: DeadLetter) -> None:
        """Add a dead letter for an event that is not pending (a replay that failed)."""
        fields = cast("dict[FieldT, EncodableT]", letter.fields())  # bytes are what redis-py takes
        await self._redis.xadd(self.key, fields, maxlen=self._maxlen, approximate=True)

    async def add_failed(self, event: Event, *, reason: str, status: int | None) -> None:
        """``add`` for an event delivered by hand that failed once more."""
        await self.add(
            DeadLetter.of(event, reason=reason, attempts=1, status=status, failed_at=self.now())
        )

    async def pages(
        self, *, count: int | None = None
    ) -> AsyncIterator[list[tuple[str, DeadLetter]]]:
        """Every dead letter (at most ``count``), oldest first, a page at a time."""
        left = count
        async for page in read_range(self._redis, self.key, "-", "+"):
            kept = page if left is None else page[:left]
            yield [(dlq_id, DeadLetter.from_fields(fields)) for dlq_id, fields in kept]
            if left is not None:
                left -= len(kept)
                if left <= 0:
                    return

    async def remove(self, dlq_ids: Iterable[str]) -> int:
        """Delete these dead letters (delivered again); how many there were."""
        ids = list(dlq_ids)
        return int(await self._redis.xdel(self.key, *ids)) if ids else 0

    async def purge(self, before: str | None) -> int:
        """Delete every dead letter, or those older than the stream position ``before``."""
        if before is None:
            removed = int(await self._redis.xlen(self.key))
            await self._redis.delete(self.key)
            return removed
        return int(await self._redis.xtrim(self.key, minid=before, approximate=False))

    async def count(self) -> int:
        """How many dead letters wait."""
        return int(await self._redis.xlen(self.key))
