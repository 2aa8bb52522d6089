"""The ``detection:`` section: when a change in the viewer list becomes an event."""

from __future__ import annotations

from itertools import pairwise
from typing import Annotated

from pydantic import Field, ValidationInfo, field_validator, model_validator

from notifier._model import Frozen, PositiveSeconds, Seconds
from notifier.storm.settings import HarnessType

__all__ = ["AudienceSettings", "DetectionSettings", "HealthSettings", "OutageSettings"]

_VIEWER_HARNESS_TYPES: tuple[HarnessType, ...] = (
    "STORM_MSE_VIEWER",
    "STORM_HLS_VIEWER",
    "GENERIC_HLS_VIEWER",
    "GENERIC_DASH_VIEWER",
    "RTMP_VIEWER",
)


class HealthSettings(Frozen):
    """Health-drop detection with hysteresis."""

    drop_below: float = Field(default=50, ge=0, le=100)
    recover_at: float = Field(default=70, ge=0, le=100)
    consecutive_polls: int = Field(default=2, ge=1, le=1000)

    @model_validator(mode="after")
    def _hysteresis(self) -> HealthSettings:
        if self.recover_at < self.drop_below:
            raise ValueError("recover_at must be at least drop_below")
        return self


class OutageSettings(Frozen):
    """How much the leader keeps detecting while Redis is unreachable."""

    max_age: PositiveSeconds = Field(
        default=600.0,
        description="polls detected while Redis is unreachable wait in memory at most this long"
        " to be written, in order, when it answers; past it they are dropped (said in a log"
        " line and a metric) and the state is read again from Redis",
    )
    max_events: int = Field(
        default=100_000,
        ge=0,
        le=10_000_000,
        description="events waiting to be written at most (0: nothing waits; a poll Redis does"
        " not take is thrown away and detected again from the state in Redis)",
    )


# Not "StreamSettings": that is the unrelated top-level ``streams:`` section (the Redis event
# streams, ``config.StreamSettings``), and the schema's $defs are named by class.
class AudienceSettings(Frozen):
    """Stream (audience) events: who counts as a stream's audience, and when it is news."""

    enabled: bool = Field(
        default=True,
        description="emit stream.* events; turning them on over existing viewer state takes"
        " the audiences as they are (no burst of stream.audience_started)",
    )
    harness_types: tuple[HarnessType, ...] = Field(
        default=_VIEWER_HARNESS_TYPES,
        min_length=1,
        description="the viewers that count toward an audience (publishers, transcoders and"
        " system clients do not)",
    )
    audience_thresholds: tuple[Annotated[int, Field(gt=0)], ...] = Field(
        default=(100, 1000, 10000),
        description="stream.audience_crossed when the audience reaches each of these, strictly"
        " increasing; [] for none",
    )
    audience_hysteresis: float = Field(
        default=0.1,
        ge=0,
        lt=1,
        description="a down-crossing when the audience falls below threshold * (1 - this);"
        " at least 0, below 1",
    )
    degraded_share: float = Field(
        default=0.2,
        ge=0,
        le=1,
        description="stream.health_degraded when dropped / measured viewers >= this ...",
    )
    degraded_min_viewers: int = Field(
        default=3, ge=1, description="... and at least this many audience viewers are dropped"
    )
    recovered_share: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="stream.health_recovered when the share falls below this (at most"
        " degraded_share) or fewer than degraded_min_viewers are dropped",
    )

    @field_validator("audience_thresholds")
    @classmethod
    def _increasing(cls, thresholds: tuple[int, ...]) -> tuple[int, ...]:
        if any(low >= high for low, high in pairwise(thresholds)):
            raise ValueError("must be strictly increasing")
        return thresholds

    @field_validator("recovered_share")
    @classmethod
    def _below_degraded(cls, share: float, info: ValidationInfo) -> float:
        degraded = info.data.get("degraded_share")  # absent when it failed on its own
        if degraded is not None and share > degraded:
            raise ValueError("must be at most degraded_share")
        return share


class DetectionSettings(Frozen):
    """When a change becomes an event."""

    disconnect_after_missed_polls: int = Field(default=2, ge=1, le=1000)
    health: HealthSettings = HealthSettings()
    confirm_with_lookup: bool = Field(
        default=True,
        description="look tracked viewers missing from a poll up (batch endpoint) before they"
        " count as missed: offset paging over a live audience can skip a viewer",
    )
    leader_lease: PositiveSeconds = Field(
        default=5.0, description="lease of the poller leading a cluster; replicas take over after"
    )
    commit_chunk: int = Field(
        default=2000,
        ge=10,
        le=100_000,
        description="state changes and events per Redis transaction at most: a larger poll (a"
        " first poll of a big audience) is written in chunks of this size, each holding all the"
        " writes of its viewers, so that Redis is never busy with one for long",
    )
    record_refresh: Seconds = Field(
        default=60.0,
        description="rewrite each tracked viewer's newest record in Redis at least this often"
        " (0: only when something else about it changes); after a crash or failover a"
        " disconnect carries a record at most this old",
    )
    streams: AudienceSettings = AudienceSettings()
    redis_outage: OutageSettings = OutageSettings()
