"""The ``server:`` section: where the HTTP endpoint listens, and the token it asks for."""

from __future__ import annotations

import ipaddress
import re

from pydantic import Field, SecretStr, field_validator, model_validator

from notifier._model import Frozen

__all__ = ["ServerSettings", "is_loopback"]

_TOKEN = re.compile(r"[\x21-\x7e]+")
"""Printable ASCII without spaces: what a ``Bearer`` credential can carry in a header."""


def is_loopback(host: str) -> bool:
    """``localhost``, 127.0.0.0/8 or ::1 (brackets allowed); any other name or address is not."""
    host = host.strip().removeprefix("[").removesuffix("]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ServerSettings(Frozen):
    """The HTTP endpoint: /metrics, /healthz, /readyz, the console at / and /api/status."""

    listen: str = Field(default="127.0.0.1:9464", description="host:port")
    auth_token: SecretStr | None = Field(
        default=None,
        description=(
            "every path but /healthz then needs Authorization: Bearer <token>;"
            " required when listen is not a loopback address"
        ),
    )

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError("must be host:port, e.g. 127.0.0.1:9464")
        return value

    @field_validator("auth_token")
    @classmethod
    def _header_safe(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not _TOKEN.fullmatch(value.get_secret_value()):
            raise ValueError("must be printable ASCII without spaces, e.g. openssl rand -hex 32")
        return value

    @model_validator(mode="after")
    def _token_off_loopback(self) -> ServerSettings:
        host = self.listen.rpartition(":")[0]
        if self.auth_token is None and not is_loopback(host):
            raise ValueError(
                f"listen {self.listen} is not a loopback address: set server.auth_token"
                " (every path but /healthz then needs Authorization: Bearer <token>)"
            )
        return self
