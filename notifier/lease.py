"""Leader leases with a fencing token: one poller per cluster, one worker per (sink, cluster).

``P:{C}:lease`` holds ``owner:token`` with a TTL; ``token`` comes from ``INCR P:{C}:fence`` at
every new acquisition, so a poller that lost the lease (paused, partitioned) holds a value no
longer in Redis, and the commit script rejects its writes.

A lease that ran out while nobody took it (Redis paused or restarted from its AOF, a renewal
that could not reach it) is taken back with the same token: the fence has not moved, so no
other holder can have written in between, and what the holder computed meanwhile (a poller's
polls buffered through a Redis outage) is still its to write.
"""

from __future__ import annotations

import os
import socket
import uuid
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from notifier.redis_client import AnyRedis

__all__ = ["Lease", "new_owner_id", "owner_of"]

_ACQUIRE = """
local current = redis.call('GET', KEYS[1])
if current and string.sub(current, 1, string.len(ARGV[1]) + 1) == ARGV[1] .. ':' then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return current
end
if current then return false end
if ARGV[3] ~= '' and redis.call('GET', KEYS[2]) == ARGV[3] then
  current = ARGV[1] .. ':' .. ARGV[3]
  redis.call('SET', KEYS[1], current, 'PX', ARGV[2])
  return current
end
local value = ARGV[1] .. ':' .. redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], value, 'PX', ARGV[2])
return value
"""

_ACQUIRE_GUARDED = (
    """
if redis.call('GET', KEYS[3]) ~= ARGV[4] then
  local current = redis.call('GET', KEYS[1])
  if current and string.sub(current, 1, string.len(ARGV[1]) + 1) == ARGV[1] .. ':' then
    redis.call('DEL', KEYS[1])
  end
  return false
end
"""
    + _ACQUIRE
)

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def owner_of(value: str) -> str:
    """The owner id in a lease value ``owner:token``."""
    return value.rsplit(":", 1)[0]


def new_owner_id() -> str:
    """A name for this poller that no other process shares: host, pid and a random part."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class Lease:
    """Acquire, keep and give back one lease (a cluster's poller, or a sink's worker)."""

    def __init__(
        self,
        redis: AnyRedis,
        key: str,
        fence: str,
        owner: str,
        *,
        ttl: float,
        guard: tuple[str, str] | None = None,
    ) -> None:
        """``guard``: ``(key, value)``: the lease is taken or kept only while that key holds
        that value (a sink partition's layout: ``sinks.layout``); otherwise ``acquire`` gives
        it back and returns False."""
        if ":" in owner:
            raise ValueError("a lease owner id cannot contain ':'")
        self._key = key
        self._fence = fence
        self._owner = owner
        self._ttl_ms = max(int(ttl * 1000), 1)
        self._redis = redis
        self._guard = guard
        self._acquire = redis.register_script(_ACQUIRE if guard is None else _ACQUIRE_GUARDED)
        self._release = redis.register_script(_RELEASE)
        self.value: str | None = None

    @property
    def held(self) -> bool:
        """True while the last acquire or renew succeeded."""
        return self.value is not None

    async def acquire(self) -> bool:
        """Take the lease if it is free, or extend it if it is ours; False if another holds it."""
        keys = [self._key, self._fence]
        token = self.value.rsplit(":", 1)[1] if self.value is not None else ""
        args: list[str | int] = [self._owner, self._ttl_ms, token]
        if self._guard is not None:
            keys.append(self._guard[0])
            args.append(self._guard[1])
        value = await self._acquire(keys=keys, args=args)
        if not value:
            self.value = None
            return False
        self.value = value.decode() if isinstance(value, bytes) else str(value)
        return True

    async def release(self) -> None:
        """Give the lease back at once, so a replica takes over without waiting for the TTL."""
        value, self.value = self.value, None
        if value is not None:
            await self._release(keys=[self._key], args=[value])

    async def holder(self) -> str | None:
        """The owner id of whoever holds the lease now; None if nobody does."""
        value = await self._redis.get(self._key)
        if value is None:
            return None
        return owner_of(value.decode() if isinstance(value, bytes) else str(value))

    def forget(self) -> None:
        """Stop believing we hold the lease (a commit was fenced, or Redis was lost)."""
        self.value = None
