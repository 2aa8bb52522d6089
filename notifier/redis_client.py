"""Connecting to Redis, single node or Redis Cluster, from ``RedisSettings``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from redis.asyncio import Redis, RedisCluster

if TYPE_CHECKING:
    from notifier.config import RedisSettings

__all__ = ["AnyRedis", "connect_redis"]

AnyRedis = Redis | RedisCluster
"""A client for either kind of deployment; both speak the commands this package uses."""


def connect_redis(
    settings: RedisSettings, *, connect_timeout: float = 5.0, timeout: float = 30.0
) -> AnyRedis:
    """A client for ``settings.url``; nothing is sent until the first command.

    ``timeout`` bounds one reply: the first commit of a large audience (100k connected events
    in one script) takes seconds, and a timeout shorter than that would never let it finish.
    """
    url = settings.url.get_secret_value()
    if settings.cluster:
        return RedisCluster.from_url(
            url, socket_connect_timeout=connect_timeout, socket_timeout=timeout
        )
    return Redis.from_url(url, socket_connect_timeout=connect_timeout, socket_timeout=timeout)
