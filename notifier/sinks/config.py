"""Settings of the built-in sinks (SPEC section 2, ``sinks:``), selected by their ``type``."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Literal

from pydantic import AfterValidator, Discriminator, Field, SecretStr, Tag, field_validator

from notifier._model import Frozen, Name, PositiveSeconds, Seconds
from notifier.events import EventType

__all__ = [
    "BUILTIN_SINK_TYPES",
    "RetrySettings",
    "SinkFilter",
    "SinkSettings",
    "SlackSinkSettings",
    "StdoutSinkSettings",
    "WebhookSinkSettings",
]

_DEFAULT_SCHEDULE = (0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 50400.0, 72000.0, 86400.0)


class SinkFilter(Frozen):
    """Which events a sink takes; an empty list means "all"."""

    clusters: tuple[str, ...] = ()
    stream_keys: tuple[str, ...] = Field(default=(), description="glob patterns, e.g. 'live-*'")
    application_ids: tuple[str, ...] = ()
    harness_types: tuple[str, ...] = ()
    countries: tuple[str, ...] = Field(default=(), description="ISO country codes, e.g. PL")


class RetrySettings(Frozen):
    """Delays before each delivery attempt; the first is usually 0s. +-20% jitter is added."""

    schedule: tuple[Seconds, ...] = Field(default=_DEFAULT_SCHEDULE, min_length=1)


class _SinkBase(Frozen):
    name: Name
    events: tuple[EventType, ...] | None = Field(
        default=None, description="event types to deliver; omitted: all types"
    )
    filter: SinkFilter = SinkFilter()

    @field_validator("events")
    @classmethod
    def _events_not_empty(cls, value: tuple[EventType, ...] | None) -> tuple[EventType, ...] | None:
        if value is not None and not value:
            raise ValueError("an empty list delivers nothing; omit the key to deliver every type")
        return value


def _check_http_url(value: SecretStr) -> SecretStr:
    url = value.get_secret_value()
    if not url.startswith(("http://", "https://")) or len(url) < len("http://x"):
        raise ValueError("must be an http:// or https:// URL")
    return value


def _check_webhook_secret(value: SecretStr) -> SecretStr:
    secret = value.get_secret_value().removeprefix("whsec_")
    try:
        key = base64.b64decode(secret, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError('must be "whsec_" followed by base64 (Standard Webhooks)') from None
    if len(key) < 16:
        raise ValueError("is too short: use at least 16 random bytes (24 to 64 recommended)")
    return value


HttpUrlSecret = Annotated[SecretStr, AfterValidator(_check_http_url)]
WebhookSecret = Annotated[SecretStr, AfterValidator(_check_webhook_secret)]


class WebhookSinkSettings(_SinkBase):
    """POSTs each event, signed per Standard Webhooks, to one URL."""

    type: Literal["webhook"] = "webhook"
    url: HttpUrlSecret = Field(description="receiver URL; secret: it often carries a token")
    secret: tuple[WebhookSecret, ...] = Field(
        min_length=1,
        description='"whsec_" + base64; a list signs with each (key rotation)',
    )
    headers: dict[str, SecretStr] = Field(default_factory=dict, description="extra headers")
    retry: RetrySettings = RetrySettings()
    timeout: PositiveSeconds = 15.0
    concurrency: int = Field(default=16, ge=1, le=256, description="requests in flight at once")

    @field_validator("secret", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return (value,) if isinstance(value, str | SecretStr) else value


class SlackSinkSettings(_SinkBase):
    """Posts Block Kit digests to a Slack incoming webhook."""

    type: Literal["slack"] = "slack"
    webhook_url: HttpUrlSecret = Field(description="Slack incoming-webhook URL (secret)")
    group_wait: Seconds = Field(
        default=10.0,
        description="events of one (cluster, streamKey) within this become one message",
    )
    retry: RetrySettings = RetrySettings()
    timeout: PositiveSeconds = 15.0


class StdoutSinkSettings(_SinkBase):
    """Writes each event as one JSON line to standard output."""

    type: Literal["stdout"] = "stdout"


BUILTIN_SINK_TYPES = ("webhook", "slack", "stdout")


def _sink_type(value: object) -> str | None:
    if isinstance(value, dict):
        kind = value.get("type")
        return kind if isinstance(kind, str) else None
    return getattr(value, "type", None)


SinkSettings = Annotated[
    Annotated[WebhookSinkSettings, Tag("webhook")]
    | Annotated[SlackSinkSettings, Tag("slack")]
    | Annotated[StdoutSinkSettings, Tag("stdout")],
    Discriminator(
        _sink_type,
        custom_error_type="sink_type",
        custom_error_message="unknown sink type (built in: webhook, slack, stdout)",
    ),
]
