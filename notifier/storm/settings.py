"""The ``clusters:`` section: one Storm cluster to poll, how to log in, what to ask for."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, FilePath, SecretStr, field_validator, model_validator

from notifier._model import Frozen, Name, PositiveSeconds

__all__ = ["ClusterAuth", "ClusterFilters", "ClusterSettings", "HarnessType"]

HarnessType = Literal[
    "STORM_MSE_VIEWER",
    "STORM_HLS_VIEWER",
    "CLUSTER_DATA_CLIENT",
    "GENERIC_HLS_VIEWER",
    "GENERIC_DASH_VIEWER",
    "RTMP_VIEWER",
    "RTMP_PUSH",
    "TRANSCODER",
    "FILE_WRITER",
]


class ClusterAuth(Frozen):
    """Either a static Bearer ``token``, or ``username`` + ``password`` for POST /api/auth/login."""

    token: SecretStr | None = Field(default=None, description="a static Bearer token (secret)")
    username: str | None = Field(default=None, description="for POST /api/auth/login")
    password: SecretStr | None = Field(default=None, description="for POST /api/auth/login")
    api_key: SecretStr | None = Field(default=None, description="sent as X-Api-Key when set")

    @model_validator(mode="after")
    def _one_method(self) -> ClusterAuth:
        login = self.username is not None or self.password is not None
        if self.token is not None and login:
            raise ValueError("set either token, or username and password, not both")
        if login and (not self.username or self.password is None):
            raise ValueError("username and password go together")
        if self.token is None and not login:
            raise ValueError("set token, or username and password")
        if self.token is not None and not self.token.get_secret_value():
            raise ValueError("token is empty (is its environment variable set?)")
        return self

    @property
    def uses_login(self) -> bool:
        """True when tokens come from POST /api/auth/login."""
        return self.token is None


class ClusterFilters(Frozen):
    """Query filters of GET /api/cluster/viewers."""

    harness_types: tuple[HarnessType, ...] = Field(
        default=(), description="empty: all; several: one request series per type"
    )
    system_clients: bool | None = Field(default=None, description="null: the server's default")
    search: str | None = None


class ClusterSettings(Frozen):
    """One Storm cluster, polled on its own."""

    name: Name
    base_url: str = Field(description="e.g. https://storm.example.com")
    auth: ClusterAuth
    poll_interval: PositiveSeconds = 5.0
    page_size: int = Field(default=100, ge=1, le=100_000, description="rowsPerPage asked for")
    concurrency: int = Field(default=4, ge=1, le=64, description="pages fetched at once")
    timeout: PositiveSeconds = Field(default=10.0, description="one HTTP request")
    poll_budget: PositiveSeconds = Field(
        default=30.0, description="time a poll may spend, retries included, before it is given up"
    )
    max_page_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=1024,
        description="bytes one answer may hold (64 MiB); a larger one is not read and the poll"
        " is incomplete (too_large)",
    )
    verify_tls: bool = Field(
        default=True, description="verify the server's certificate; false only for test clusters"
    )
    ca_file: FilePath | None = Field(
        default=None,
        description="PEM file of the CAs to trust instead of the system's (a private CA)",
    )
    filters: ClusterFilters = ClusterFilters()

    @model_validator(mode="after")
    def _ca_needs_verification(self) -> ClusterSettings:
        if self.ca_file is not None and not self.verify_tls:
            raise ValueError("ca_file has no effect with verify_tls: false (drop one)")
        return self

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        match = re.fullmatch(r"(https?)://([^/?#@\s]+)(/[^?#\s]*)?", value.strip())
        if match is None:
            if "@" in value:
                raise ValueError("must not hold credentials: put them under auth")
            raise ValueError("must be an http:// or https:// URL without query or fragment")
        return value.strip().rstrip("/")
