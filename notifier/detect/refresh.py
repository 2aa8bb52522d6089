"""How old each tracked viewer's record in Redis is, and the slice of records a poll rewrites.

Redis gets a viewer's record whenever anything else about it changes; a steady viewer's record
would otherwise be as old as its last change, and a disconnect after a crash or failover would
carry it. So each poll also rewrites the oldest records, so that none is older than
``record_refresh``: at most the audience times ``poll_interval / record_refresh`` of them (at
least 100). After a load the ages are unknown: those records are refreshed first.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from notifier.detect.rules import Detection, Track

__all__ = ["RecordAges"]


class RecordAges:
    """When Redis last got each tracked viewer's record (ms), oldest first."""

    def __init__(self, *, refresh: float, interval: float, wall_clock: Callable[[], float]) -> None:
        self._refresh = refresh
        self._interval = interval
        self._wall_clock = wall_clock
        self._written: dict[str, int] = {}

    def loaded(self, viewer_ids: Iterable[str]) -> None:
        """The state was (re)loaded: its records' ages are unknown, so they come first."""
        self._written = dict.fromkeys(viewer_ids, 0)

    def with_refreshed(self, detection: Detection) -> Detection:
        """``detection`` with the oldest records added to its upserts (module doc)."""
        refresh = self._refresh
        if not refresh or not self._written:
            return detection
        state = detection.state
        limit = max(100, math.ceil(len(state) * self._interval / refresh))
        cutoff = int((self._wall_clock() - refresh) * 1000)
        extra: dict[str, Track] = {}
        for viewer_id, written in self._written.items():
            if written > cutoff or len(extra) >= limit:
                break
            track = state.get(viewer_id)
            if track is not None and viewer_id not in detection.upserts:
                extra[viewer_id] = track
        if not extra:
            return detection
        return dataclasses.replace(detection, upserts={**extra, **detection.upserts})

    def committed(self, detection: Detection) -> None:
        """The poll's writes are in Redis: its upserts are new, its deletes gone."""
        now = int(self._wall_clock() * 1000)
        written = self._written
        for viewer_id in detection.upserts:
            written.pop(viewer_id, None)
            written[viewer_id] = now
        for viewer_id in detection.deletes:
            written.pop(viewer_id, None)
