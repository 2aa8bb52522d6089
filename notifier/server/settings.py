"""The ``server:`` section: where the HTTP endpoint listens."""

from __future__ import annotations

from pydantic import Field, field_validator

from notifier._model import Frozen

__all__ = ["ServerSettings"]


class ServerSettings(Frozen):
    """The HTTP endpoint: /metrics, /healthz, /readyz."""

    listen: str = Field(default="127.0.0.1:9464", description="host:port")

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError("must be host:port, e.g. 127.0.0.1:9464")
        return value


REDIS_TIMEOUT = 2.0
