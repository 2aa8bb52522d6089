"""The Redis side of a sink worker: its consumer group, pending entries and retry states.

Per (cluster, sink): the consumer group ``sink:<sink>`` (a partition's ``sink:<sink>:<k>``)
on ``P:{C}:events`` and the hash
``P:{C}:retries:<sink>`` (entry id -> attempts, last status, next attempt, reason: only for
events being retried). Dead letters are ``dead_letters.DeadLetters``; ``read_range`` pages
through any stream (``replay`` and ``dlq`` read with it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from redis.exceptions import ResponseError

from notifier.keys import sink_group

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from notifier.keys import ClusterKeys
    from notifier.redis_client import AnyRedis

__all__ = ["Entry", "RetryState", "SinkStream", "read_range"]

Entry = tuple[str, dict[bytes, bytes]]
PAGE = 1000


@dataclass(frozen=True, slots=True)
class RetryState:
    """How far the retries of one event got (kept in Redis, so a new worker carries on)."""

    attempts: int
    status: int | None
    next_at: float  # wall-clock seconds
    reason: str

    def encode(self) -> str:
        return f"{self.attempts}|{self.status or ''}|{self.next_at:.3f}|{self.reason}"

    @classmethod
    def decode(cls, raw: bytes | str) -> RetryState | None:
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        parts = text.split("|", 3)
        if len(parts) != 4:
            return None
        try:
            return cls(
                int(parts[0]), int(parts[1]) if parts[1] else None, float(parts[2]), parts[3]
            )
        except ValueError:
            return None


class SinkStream:
    """One sink's view of one cluster stream."""

    def __init__(
        self, redis: AnyRedis, keys: ClusterKeys, sink: str, *, group: str | None = None
    ) -> None:
        """``group``: a partition's (``partition.Partition.group``); the sink's only one by
        default."""
        self._redis = redis
        self.stream = keys.events
        self.group = group or sink_group(sink)
        self.retries = keys.retries(sink)

    async def ensure_group(self) -> None:
        """Create the consumer group at the end of the stream if it does not exist yet.

        Groups are created when a poller or worker starts with the sink in its configuration,
        so a sink receives every event emitted from then on.
        """
        try:
            await self._redis.xgroup_create(self.stream, self.group, id="$", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def read(
        self, consumer: str, start: str, count: int, block_ms: int | None
    ) -> list[Entry]:
        """``start`` ``>``: new entries; an id: this consumer's pending entries after it."""
        reply = await self._redis.xreadgroup(
            self.group, consumer, {self.stream: start}, count=count, block=block_ms
        )
        entries: list[Entry] = []
        for _, items in cast(
            "list[tuple[Any, list[tuple[bytes, dict[bytes, bytes]]]]]", reply or []
        ):
            for entry_id, fields in items:
                entries.append((entry_id.decode(), fields or {}))
        return entries

    async def claim(self, consumer: str, min_idle_ms: int) -> tuple[int, list[str]]:
        """Take over other consumers' entries idle for ``min_idle_ms``.

        Returns how many were claimed, and the ids of entries that no longer exist in the
        stream (trimmed while pending: they cannot be delivered).
        """
        claimed, gone, cursor = 0, [], "0-0"
        while True:
            # Not JUSTID: redis-py drops the cursor of a JUSTID reply.
            reply = await self._redis.xautoclaim(
                self.stream, self.group, consumer, min_idle_ms, start_id=cursor, count=500
            )
            cursor = _text(reply[0])
            claimed += len(reply[1])
            if len(reply) > 2:
                gone += [_text(i) for i in reply[2]]
            if cursor == "0-0":
                return claimed, gone

    async def claim_from(self, previous: str, consumer: str) -> int:
        """Take every entry pending with ``previous`` at once (it handed over cleanly: what it
        left is retries, not deliveries in flight). Returns how many moved."""
        if previous == consumer:
            return 0
        moved, cursor = 0, "-"
        while True:
            detail = await self._redis.xpending_range(
                self.stream, self.group, min=cursor, max="+", count=PAGE, consumername=previous
            )
            ids: list[int | bytes | str | memoryview] = [_text(d["message_id"]) for d in detail]
            if ids:
                await self._redis.xclaim(self.stream, self.group, consumer, 0, ids, justid=True)
                moved += len(ids)
            if len(ids) < PAGE:
                return moved
            cursor = f"({ids[-1]!s}"

    async def foreign_pending(self, consumer: str) -> tuple[int, float]:
        """Entries pending with other consumers, and how long until the youngest is claimable."""
        info = await self._redis.xpending(self.stream, self.group)
        consumers = info.get("consumers") or []
        others = sum(int(c["pending"]) for c in consumers if _text(c["name"]) != consumer)
        if not others:
            return 0, 0.0
        detail = await self._redis.xpending_range(
            self.stream, self.group, min="-", max="+", count=1000
        )
        idle = [int(d["time_since_delivered"]) for d in detail if _text(d["consumer"]) != consumer]
        return others, (min(idle) / 1000 if idle else 0.0)

    async def drop_idle_consumers(self, consumer: str, *, min_idle_ms: int) -> None:
        """Forget consumers (dead workers) that hold nothing and have been silent a while."""
        for info in await self._redis.xinfo_consumers(self.stream, self.group):
            name = _text(info["name"])
            idle = int(info.get("inactive", info.get("idle", 0)) or 0)
            if name != consumer and int(info["pending"]) == 0 and idle >= min_idle_ms:
                await self._redis.xgroup_delconsumer(self.stream, self.group, name)

    async def trimmed_unread(self) -> bool:
        """True when trimming removed entries this group had not read yet.

        Checked before reading: removed entries are ``entries-added - length``; while the
        group keeps up, Redis counts what it read (``entries-read``) and it covers them. When
        trimming overtook the group, Redis can no longer count (``entries-read`` is null).
        """
        stream = await self._redis.xinfo_stream(self.stream)
        removed = int(stream.get("entries-added") or 0) - int(stream.get("length") or 0)
        if removed <= 0:
            return False
        for group in await self._redis.xinfo_groups(self.stream):
            if _text(group["name"]) == self.group:
                read = group.get("entries-read")
                return read is None or removed > int(read)
        return False

    async def retry_states(self, entry_ids: list[str]) -> dict[str, RetryState]:
        """Saved retry states of the given entries."""
        if not entry_ids:
            return {}
        values = await self._redis.hmget(self.retries, entry_ids)
        states = {}
        for entry_id, raw in zip(entry_ids, values, strict=True):
            if raw is not None and (state := RetryState.decode(raw)) is not None:
                states[entry_id] = state
        return states

    async def save_retry(self, entry_id: str, state: RetryState) -> None:
        """Remember a failed attempt."""
        await self._redis.hset(self.retries, entry_id, state.encode())

    async def ack(self, entry_ids: list[str], retried: list[str]) -> None:
        """Acknowledge final outcomes in one round trip."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.xack(self.stream, self.group, *entry_ids)
            if retried:
                pipe.hdel(self.retries, *retried)
            await pipe.execute()


async def read_range(redis: AnyRedis, key: str, start: str, end: str) -> AsyncIterator[list[Entry]]:
    """The entries of a stream from ``start`` to ``end`` (inclusive ids), a page at a time."""
    cursor = start
    while True:
        page = cast(
            "list[tuple[bytes, dict[bytes, bytes]]]",
            await redis.xrange(key, min=cursor, max=end, count=PAGE),
        )
        if page:
            yield [(entry_id.decode(), fields) for entry_id, fields in page]
        if len(page) < PAGE:
            return
        cursor = "(" + page[-1][0].decode()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
