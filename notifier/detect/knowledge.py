"""What a poller knows between two polls besides the tracked viewers: the audiences of the
streams (``audiences``) and how old each stored record is (``refresh``), and the three things it
does with them: load them with the state from Redis, run one poll's detection against them (in
a worker thread: pure CPU work), and move on to the state after a poll, before that poll is
written (the next poll is detected against it, also while Redis is away: ``backlog``).
"""

from __future__ import annotations

import asyncio
import functools
import time
from typing import TYPE_CHECKING

from notifier.detect.audiences import Audiences
from notifier.detect.refresh import RecordAges
from notifier.detect.rules import detect
from notifier.detect.store import KeepStreams, Snapshot

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from structlog.typing import FilteringBoundLogger

    from notifier.detect.audiences import StreamCommit
    from notifier.detect.rules import Detection
    from notifier.detect.settings import DetectionSettings
    from notifier.detect.store import StateStore
    from notifier.detect.streams import StreamId, StreamState
    from notifier.storm import Poll, Viewer
    from notifier.storm.settings import ClusterSettings

__all__ = ["Knowledge"]


class Knowledge:
    """The audiences and record ages of one cluster's poller (module doc)."""

    def __init__(
        self,
        cluster: ClusterSettings,
        detection: DetectionSettings,
        *,
        wall_clock: Callable[[], float] = time.time,
        log: FilteringBoundLogger,
    ) -> None:
        self._detection = detection
        self._wall_clock = wall_clock
        self._log = log
        self._audiences = Audiences(detection.streams) if detection.streams.enabled else None
        self._said_unplaced = False
        self._ages = RecordAges(
            refresh=detection.record_refresh, interval=cluster.poll_interval, wall_clock=wall_clock
        )

    @property
    def states(self) -> Mapping[StreamId, StreamState] | None:
        """The live audiences (None with stream events off)."""
        return self._audiences.states if self._audiences is not None else None

    async def load(self, store: StateStore) -> Snapshot:
        """The state from Redis, the audiences and record ages with it."""
        snapshot = await store.load()
        self._ages.loaded(snapshot.tracked)
        if self._audiences is not None:
            now = int(self._wall_clock() * 1000)
            load = functools.partial(self._audiences.load, kept=snapshot.audiences, now=now)
            await asyncio.to_thread(load, snapshot.tracked, snapshot.streams)
        return snapshot

    def compute(
        self,
        snapshot: Snapshot,
        poll: Poll,
        confirmed: Mapping[str, Viewer],
        count_misses: bool,
        polled_at: int,
    ) -> tuple[Detection, StreamCommit | None]:
        """Detection of one poll, viewers then streams (runs in a worker thread)."""
        initial = snapshot.polls == 0  # no poll committed yet: the viewers were there before
        detection = detect(
            snapshot.tracked,
            poll.viewers,
            confirmed=confirmed,
            count_misses=count_misses,
            polled_at=polled_at,
            settings=self._detection,
            initial=initial,
        )
        detection = self._ages.with_refreshed(detection)
        if self._audiences is None:
            return detection, None
        return detection, self._audiences.decide(
            snapshot.tracked, detection, polled_at=polled_at, initial=initial
        )

    def keep_streams(self, snapshot: Snapshot) -> KeepStreams:
        """From which chunk of the next commit the stream states are kept (``KeepStreams``)."""
        if self._audiences is None:  # forget the states once, if kept
            return KeepStreams.OFF if snapshot.audiences else KeepStreams.KEPT
        if snapshot.polls == 0:
            return KeepStreams.FIRST
        return self._audiences.keep

    def advance(
        self,
        snapshot: Snapshot,
        detection: Detection,
        audiences: StreamCommit | None,
        generation: int,
        events: int,
    ) -> Snapshot:
        """The state after a poll computed against ``snapshot``, at ``generation`` once it is
        written; the audiences and record ages move on with it."""
        after = Snapshot(
            generation=generation,
            sequence=snapshot.sequence + events,
            epoch=snapshot.epoch,
            tracked=detection.state,
            polls=snapshot.polls + 1,
            audiences=self._audiences is not None,  # (their states: self._audiences)
        )
        if self._audiences is not None and audiences is not None:
            self._audiences.settle(audiences)
            if self._audiences.unplaced and not self._said_unplaced:
                self._said_unplaced = True
                self._log.info(
                    "poller.viewers_in_no_stream",
                    viewers=self._audiences.unplaced,
                    effect="viewers of an audience harness type whose records have no usable"
                    " applicationId or streamKey count in no stream's audience",
                )
        self._ages.committed(detection)
        return after
