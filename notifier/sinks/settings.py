"""What every sink's settings share: name, event types, filters, retry schedule, needs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from pydantic import AfterValidator, Field, SecretStr, field_validator

from notifier._model import Frozen, Name, Seconds
from notifier.events import EventType
from notifier.unset import is_unset

__all__ = ["DeliveryNeeds", "HttpUrlSecret", "RetrySettings", "SinkBaseSettings", "SinkFilter"]

MAX_PARTITIONS = 64
DEFAULT_SCHEDULE = (0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 50400.0, 72000.0, 86400.0)


@dataclass(frozen=True, slots=True)
class DeliveryNeeds:
    """What a sink asks of the worker that feeds it.

    ``concurrency``: deliveries in flight at once. ``worst_delivery``: seconds one delivery can
    take at worst (a request's timeout, a batch's wait, some slack); a new worker waits this long
    before it claims a dead worker's entries, so that no delivery in hand is duplicated.
    """

    concurrency: int
    worst_delivery: float


class SinkFilter(Frozen):
    """Which events a sink takes; an empty list means "all"."""

    clusters: tuple[str, ...] = Field(default=(), description="cluster names")
    stream_keys: tuple[str, ...] = Field(default=(), description="glob patterns, e.g. 'live-*'")
    application_ids: tuple[str, ...] = Field(default=(), description="applicationId values")
    harness_types: tuple[str, ...] = Field(
        default=(), description="harnessType values (viewer events; stream events pass)"
    )
    countries: tuple[str, ...] = Field(
        default=(), description="ISO country codes, e.g. PL (viewer events; stream events pass)"
    )


class RetrySettings(Frozen):
    """Delays before each delivery attempt (the first is usually 0s), each with +-20% jitter."""

    schedule: tuple[Seconds, ...] = Field(default=DEFAULT_SCHEDULE, min_length=1, max_length=100)


class SinkBaseSettings(Frozen):
    """The keys every sink has; a sink type adds its own."""

    name: Name = Field(description="[a-z0-9_-]{1,40}; names its consumer group and dead letters")
    type: str = Field(description="webhook, slack, stdout, or an installed plugin's type")
    events: tuple[EventType, ...] | None = Field(
        default=None, description="event types to deliver; omitted: all types"
    )
    filter: SinkFilter = SinkFilter()
    skip_initial: bool = Field(
        default=False,
        description="acknowledge events with data.initial (the first poll's: viewers and"
        " audiences already there when the notifier began) without delivering them",
    )
    retry: RetrySettings = RetrySettings()
    partitions: int = Field(
        default=1,
        ge=1,
        le=MAX_PARTITIONS,
        description="workers per cluster, each delivering the events of a share of the viewers"
        " (CRC32 of the viewer id mod K), under its own lease and consumer group; may be"
        " changed on a running system (docs/operations.md, Scaling)",
    )

    def delivery_needs(self) -> DeliveryNeeds:
        """Eight deliveries at once, 15 s at worst; a sink type with knobs of its own overrides."""
        return DeliveryNeeds(concurrency=8, worst_delivery=15.0)

    @field_validator("events")
    @classmethod
    def _events_not_empty(cls, value: tuple[EventType, ...] | None) -> tuple[EventType, ...] | None:
        if value is not None and not value:
            raise ValueError("an empty list delivers nothing; omit the key to deliver every type")
        return value


def _check_http_url(value: SecretStr) -> SecretStr:
    if is_unset(value):  # a ${VAR} the command does not need (notifier.unset)
        return value
    url = value.get_secret_value()
    if not url.startswith(("http://", "https://")) or len(url) < len("http://x"):
        raise ValueError("must be an http:// or https:// URL")
    return value


HttpUrlSecret = Annotated[SecretStr, AfterValidator(_check_http_url)]
"""A URL that may carry a token: validated, then only ever shown redacted."""
