"""The live replicas of one kind of lease: a heartbeat in Redis with a TTL.

``P:replicas:<kind>`` is a sorted set: member = a replica's owner id, score = when its
heartbeat runs out (milliseconds, Redis time, so the replicas' clocks need not agree). A beat
is one single-key script, so it runs the same on one Redis and on a Redis Cluster: it reads
``TIME``, writes this replica's new expiry, drops every expired member and returns the rest.
A replica that dies stops beating and drops out one TTL later; a clean stop leaves at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from notifier.keys import replicas_key

if TYPE_CHECKING:
    from notifier.redis_client import AnyRedis

__all__ = ["Registry", "replicas_key"]

_BEAT = """
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], ms + ttl, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ms)
redis.call('PEXPIRE', KEYS[1], ttl)
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""


class Registry:
    """This replica's heartbeat among the replicas of one kind (module doc)."""

    def __init__(self, redis: AnyRedis, prefix: str, kind: str, owner: str, *, ttl: float) -> None:
        """``ttl``: seconds a heartbeat stays fresh; beat more often than that."""
        self.key = replicas_key(prefix, kind)
        self._redis = redis
        self._owner = owner
        self._ttl_ms = max(int(ttl * 1000), 1)
        self._beat = redis.register_script(_BEAT)

    async def beat(self) -> tuple[str, ...]:
        """Say this replica is alive; the owner ids of every live replica, sorted."""
        members = await self._beat(keys=[self.key], args=[self._owner, self._ttl_ms])
        return tuple(sorted(m.decode() if isinstance(m, bytes) else str(m) for m in members))

    async def leave(self) -> None:
        """Drop out now (a clean stop), so the others share the leases without waiting."""
        await self._redis.zrem(self.key, self._owner)
