"""The ``detection:`` section: when a change in the viewer list becomes an event."""

from __future__ import annotations

from pydantic import Field, model_validator

from notifier._model import Frozen, PositiveSeconds, Seconds

__all__ = ["DetectionSettings", "HealthSettings"]


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
        description="state changes and events per Redis script at most: a larger poll (a first"
        " poll of a big audience) is staged, then applied in chunks of this size, so that Redis"
        " is never busy with one script for long",
    )
    record_refresh: Seconds = Field(
        default=60.0,
        description="rewrite each tracked viewer's newest record in Redis at least this often"
        " (0: only when something else about it changes); after a crash or failover a"
        " disconnect carries a record at most this old",
    )
