"""Events of a stream's life, encoded the way the poller writes them, for the Slack app tests.

story = Story()
story.degraded("live-1")               # each call is one poll later (5 s) and returns
story.drop("v_1", "live-1")            # the entry fields ``sink_support.publish`` takes
story.recovered("live-1")
await publish(redis, story.events)
"""

from __future__ import annotations

import json
from typing import Any

from notifier.events import (
    AudienceCrossed,
    AudienceEnded,
    AudienceStarted,
    AudienceSummary,
    Breakdown,
    BreakdownRow,
    Connected,
    Envelope,
    HealthChanged,
    Incident,
    StreamDegraded,
    StreamRecovered,
)
from testkit.sink_support import EPOCH

__all__ = ["APP", "Story"]

APP = "app-1"
POLL_MS = 5000

_BREAKDOWN = Breakdown(
    country_code=(BreakdownRow("PL", 60, 21), BreakdownRow("DE", 30, 6), BreakdownRow(None, 10, 3)),
    harness_type=(BreakdownRow("STORM_HLS_VIEWER", 70, 25),),
    device_type=(BreakdownRow("MOBILE", 50, 20),),
)


class Story:
    """One cluster's events in stream order; every event is one poll after the last."""

    def __init__(self, cluster: str = "eu-1", *, start_ms: int = 1_770_000_000_000) -> None:
        self.cluster = cluster
        self.time_ms = start_ms
        self.sequence = 0
        self.events: list[dict[str, Any]] = []
        self.degraded_at: dict[str, int] = {}

    def _add(self, emission: Any) -> dict[str, Any]:
        self.sequence += 1
        self.time_ms += POLL_MS
        envelope = Envelope(cluster=self.cluster, epoch=EPOCH, time_ms=self.time_ms)
        event_id, body = envelope.encode_emission(emission, self.sequence)
        event = {"type": emission.type, "id": event_id, "body": body, "sequence": self.sequence}
        self.events.append(event)
        return event

    @staticmethod
    def _record(viewer: str, key: str, score: int) -> bytes:
        return json.dumps(
            {
                "id": viewer,
                "streamKey": key,
                "applicationId": APP,
                "harnessType": "STORM_HLS_VIEWER",
                "countryCode": "PL",
                "deviceType": "MOBILE",
                "browserName": "Chrome",
                "healthScore": score,
                "healthGrade": "Bad" if score < 50 else "Good",
            }
        ).encode()

    def connected(self, viewer: str, key: str) -> dict[str, Any]:
        """``viewer.connected``."""
        return self._add(Connected(viewer, self._record(viewer, key, 90)))

    def drop(self, viewer: str, key: str) -> dict[str, Any]:
        """``viewer.health_dropped``: 85 → 30."""
        return self._add(
            HealthChanged(
                "viewer.health_dropped", viewer, self._record(viewer, key, 30), 85, "Good", 50
            )
        )

    def recover(self, viewer: str, key: str) -> dict[str, Any]:
        """``viewer.health_recovered``: 30 → 80."""
        return self._add(
            HealthChanged(
                "viewer.health_recovered", viewer, self._record(viewer, key, 80), 30, "Bad", 70
            )
        )

    def degraded(self, key: str, *, dropped: int = 30, viewers: int = 100) -> dict[str, Any]:
        """``stream.health_degraded``."""
        self.degraded_at[key] = self.time_ms + POLL_MS
        share = dropped / viewers
        return self._add(StreamDegraded(APP, key, viewers, viewers, dropped, share, _BREAKDOWN))

    def recovered(self, key: str, *, dropped: int = 4, viewers: int = 100) -> dict[str, Any]:
        """``stream.health_recovered``, its incident since the last degradation."""
        since = self.degraded_at.get(key, self.time_ms)
        incident = Incident(since, self.time_ms + POLL_MS - since, 35, 0.35)
        return self._add(
            StreamRecovered(
                APP, key, viewers, viewers, dropped, dropped / viewers, _BREAKDOWN, incident
            )
        )

    def started(self, key: str, *, viewers: int = 1) -> dict[str, Any]:
        """``stream.audience_started``."""
        return self._add(AudienceStarted(APP, key, viewers, initial=False))

    def crossed(self, key: str, threshold: int, *, down: bool = False) -> dict[str, Any]:
        """``stream.audience_crossed`` up (or down) through ``threshold``."""
        viewers = threshold - 10 if down else threshold + 2
        return self._add(
            AudienceCrossed(
                APP,
                key,
                threshold,
                "down" if down else "up",
                viewers,
                threshold + 50,
                initial=False,
            )
        )

    def ended(self, key: str, *, degraded: bool = False) -> dict[str, Any]:
        """``stream.audience_ended``."""
        summary = AudienceSummary(
            self.time_ms - 600_000,
            600_000 + POLL_MS,
            150,
            self.time_ms - 300_000,
            180,
            60_000 if degraded else 0,
            degraded,
        )
        return self._add(AudienceEnded(APP, key, summary))
