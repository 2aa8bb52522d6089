"""Connecting to Redis, single node or Redis Cluster, and what a Redis failure looks like.

``RedisSettings`` is the ``redis:`` section; ``connect_redis`` makes a client from it;
``REDIS_ERRORS`` is the one tuple of exceptions that mean "Redis did not answer as it should"
(every loop that survives an outage catches exactly these), and ``redis_reason`` says it in
one line for a log.

TLS: a ``rediss://`` URL verifies the server against the system's CAs, or against ``ca_file``
(redis-py's ``ssl_ca_certs``; ``?ssl_ca_certs=/path`` in the URL does the same). An ACL user
logs in with ``rediss://user:password@host:port/0``; a refused login reads "invalid
username-password pair or user is disabled", never the password.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, FilePath, SecretStr, field_validator, model_validator
from redis.asyncio import Redis, RedisCluster
from redis.exceptions import RedisError

from notifier._model import Frozen

__all__ = ["REDIS_ERRORS", "AnyRedis", "RedisSettings", "connect_redis", "redis_reason"]

AnyRedis = Redis | RedisCluster
"""A client for either kind of deployment; both speak the commands this package uses."""

REDIS_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError)
"""What a command against an unreachable, slow or failing Redis raises."""


def redis_reason(exc: BaseException) -> str:
    """A Redis failure in one line of at most 200 characters (never the URL's password)."""
    return " ".join(str(exc).split())[:200] or type(exc).__name__


class RedisSettings(Frozen):
    """Where events and state live."""

    url: SecretStr = Field(
        default=SecretStr("redis://127.0.0.1:6379/0"),
        description="redis:// or rediss:// (TLS) URL; secret because it may hold a password",
    )
    cluster: bool = Field(default=False, description="talk to a Redis Cluster")
    key_prefix: str = Field(default="notifier", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    ca_file: FilePath | None = Field(
        default=None,
        description="PEM file of the CAs a rediss:// server's certificate is checked against,"
        " instead of the system's",
    )

    @field_validator("url")
    @classmethod
    def _scheme(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    @model_validator(mode="after")
    def _ca_needs_tls(self) -> RedisSettings:
        if self.ca_file is not None and not self.url.get_secret_value().startswith("rediss://"):
            raise ValueError("ca_file needs a rediss:// url (TLS)")
        return self

    def display_url(self) -> str:
        """The URL with any password replaced by ``***`` (it may itself contain ``@``)."""
        url = self.url.get_secret_value()
        scheme, sep, rest = url.partition("://")
        userinfo, at, host = rest.rpartition("@")
        if not sep or not at:
            return url
        user = userinfo.partition(":")[0]
        return f"{scheme}://{user}:***@{host}"


def connect_redis(
    settings: RedisSettings, *, connect_timeout: float = 5.0, timeout: float = 5.0
) -> AnyRedis:
    """A client for ``settings.url``; nothing is sent until the first command.

    ``timeout`` bounds one reply. No command of this package is meant to take long (a commit
    goes in chunks of ``detection.commit_chunk`` writes, a blocking read waits a second), so
    a Redis that does not answer within it (paused, or its host gone) counts as unavailable,
    and the poller goes on detecting (``detect.backlog``) instead of waiting on it.
    """
    url = settings.url.get_secret_value()
    tls: dict[str, Any] = {}
    if settings.ca_file is not None:
        tls["ssl_ca_certs"] = str(settings.ca_file)
    if settings.cluster:
        return RedisCluster.from_url(
            url, socket_connect_timeout=connect_timeout, socket_timeout=timeout, **tls
        )
    return Redis.from_url(
        url, socket_connect_timeout=connect_timeout, socket_timeout=timeout, **tls
    )
