"""Connecting to Redis, single node or Redis Cluster, from ``RedisSettings``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from redis.asyncio import Redis, RedisCluster

if TYPE_CHECKING:
    from notifier.config import RedisSettings

__all__ = ["AnyRedis", "connect_redis"]

AnyRedis = Redis | RedisCluster
"""A client for either kind of deployment; both speak the commands this package uses."""


def connect_redis(settings: RedisSettings, *, timeout: float = 5.0) -> AnyRedis:
    """A client for ``settings.url``; nothing is sent until the first command."""
    url = settings.url.get_secret_value()
    if settings.cluster:
        return RedisCluster.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    return Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
