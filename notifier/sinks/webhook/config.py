"""Settings of the ``webhook`` sink."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, FilePath, SecretStr, field_validator, model_validator

from notifier._model import PositiveSeconds, Seconds
from notifier.sinks.settings import DeliveryNeeds, HttpUrlSecret, SinkBaseSettings
from notifier.unset import is_unset

__all__ = ["WebhookSinkSettings", "signing_key"]


_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 field names
_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")  # no control characters, no line breaks
_SET_BY_THE_SINK = frozenset(
    {
        "host",
        "content-length",
        "content-type",
        "transfer-encoding",
        "connection",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
    }
)


def signing_key(secret: SecretStr) -> bytes:
    """The HMAC key of a Standard Webhooks secret (``whsec_`` + base64)."""
    return base64.b64decode(secret.get_secret_value().removeprefix("whsec_"), validate=True)


def _check_webhook_secret(value: SecretStr) -> SecretStr:
    if is_unset(value):  # a ${VAR} the command does not need (notifier.unset)
        return value
    try:
        key = signing_key(value)
    except (binascii.Error, ValueError):
        raise ValueError('must be "whsec_" followed by base64 (Standard Webhooks)') from None
    if len(key) < 16:
        raise ValueError("is too short: use at least 16 random bytes (24 to 64 recommended)")
    return value


WebhookSecret = Annotated[SecretStr, AfterValidator(_check_webhook_secret)]


class WebhookSinkSettings(SinkBaseSettings):
    """POSTs each event, signed per Standard Webhooks, to one URL."""

    type: Literal["webhook"] = "webhook"
    url: HttpUrlSecret = Field(description="receiver URL; secret: it often carries a token")
    secret: tuple[WebhookSecret, ...] = Field(
        min_length=1,
        description='"whsec_" + base64; a list signs with each (key rotation)',
    )
    headers: dict[str, SecretStr] = Field(default_factory=dict, description="extra headers")
    timeout: PositiveSeconds = Field(default=15.0, description="one request, answer included")
    concurrency: int = Field(default=16, ge=1, le=256, description="requests in flight at once")
    batch_size: int = Field(
        default=1, ge=1, le=1000, description="events per request; above 1, a JSON array"
    )
    batch_wait: Seconds = Field(default=1.0, description="how long a batch may wait to fill up")
    verify_tls: bool = Field(
        default=True, description="verify the receiver's certificate; false only for tests"
    )
    ca_file: FilePath | None = Field(
        default=None,
        description="PEM file of the CAs to trust instead of the system's (a private CA)",
    )

    @model_validator(mode="after")
    def _ca_needs_verification(self) -> WebhookSinkSettings:
        if self.ca_file is not None and not self.verify_tls:
            raise ValueError("ca_file has no effect with verify_tls: false (drop one)")
        return self

    def delivery_needs(self) -> DeliveryNeeds:
        """``concurrency`` requests at once; one takes its timeout plus a batch's wait."""
        return DeliveryNeeds(self.concurrency, self.timeout + self.batch_wait + 5.0)

    @field_validator("headers")
    @classmethod
    def _sendable_headers(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for name, secret in value.items():
            if not _TOKEN.fullmatch(name):
                raise ValueError(f"header name {name!r} is not an HTTP token")
            if name.lower() in _SET_BY_THE_SINK:
                raise ValueError(f"header {name} is set by the sink itself: remove it")
            if not is_unset(secret) and not _VALUE.fullmatch(secret.get_secret_value()):
                raise ValueError(
                    f"header {name}: the value must be printable Latin-1 text on one line"
                )
        return value

    @field_validator("secret", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return (value,) if isinstance(value, str | SecretStr) else value
