"""Polls detected while Redis does not answer: kept in order, written when it answers again.

A Redis outage must not blind the notifier: a viewer who joins and leaves while Redis is away,
a health drop and its recovery, are real events. So the leader goes on polling Storm and
detecting against the state it holds in memory, and each poll's commit waits here until Redis
answers. The rules that keep that exactly once:

- **In order.** Poll n + 1 was computed from the result of poll n, so it is written after it.
  Each entry carries the state it was computed against, whose generation is the one Redis
  will be at once the entries before it are written (a commit moves it on by one per chunk).
- **Half-written commits are finished, not repeated.** The entry an outage cut off may be
  partly applied; it is sent again with ``resume``: the store asks Redis which of its chunks
  (by their ids) it applied and sends the rest.
- **Only by the lease's holder.** Every chunk is fenced as usual. A lease that ran out while
  nobody took it (Redis paused, or restarted from its AOF) comes back with the same token
  (``notifier.lease``); one that another replica took fences the first chunk, and everything
  waiting is dropped: that replica polled meanwhile, and its state is the truth.
- **Bounded.** ``detection.redis_outage``: the oldest waiting poll at most ``max_age`` old and
  ``max_events`` in all. Past either bound everything waiting is dropped, said in one log
  line and a metric, and the state is read again from Redis once it answers (the next poll is
  detected against that: connects and disconnects are found again, the health changes of the
  dropped polls are not).
"""

from __future__ import annotations

import collections
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from redis.exceptions import TimeoutError as RedisTimeoutError

from notifier.detect.store import CommitOutcome

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from structlog.typing import FilteringBoundLogger

    from notifier.detect.encoding import PollEvents
    from notifier.detect.outages import Outages
    from notifier.detect.rules import Detection
    from notifier.detect.settings import OutageSettings
    from notifier.detect.store import KeepStreams, Snapshot, StateStore
    from notifier.detect.streams import StreamId, StreamState
    from notifier.metrics import Metrics

__all__ = ["Backlog", "Unwritten"]


@dataclass(slots=True)
class Unwritten:
    """One poll's commit: computed, and not (known to be) written yet."""

    before: Snapshot  # where Redis stood when it was computed (``Snapshot.header``)
    detection: Detection  # its writes (``Detection.changes``: not the whole state)
    events: PollEvents
    polled_at: int
    streams: Mapping[StreamId, StreamState | None] | None
    keep_streams: KeepStreams
    viewers: int  # tracked after it
    detected_at: float  # monotonic
    commit_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    sent: bool = False  # a commit of it was sent: Redis may hold some of its chunks


class Backlog:
    """The polls of one cluster waiting to be written, oldest first (module doc), and what is
    said of them: ``poller.holding_polls`` when they begin to wait, ``poller.backlog_written``
    when Redis took them, ``poller.backlog_dropped`` (error) when they are given up; the
    ``notifier_poll_backlog*`` metrics."""

    def __init__(
        self,
        settings: OutageSettings,
        *,
        cluster: str,
        retry_every: float,
        metrics: Metrics,
        outages: Outages,
        log: FilteringBoundLogger,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``retry_every``: how long after a failure the polls waiting are tried again even
        if nothing said Redis answers (a Redis that hangs is not waited on by every poll)."""
        self._settings = settings
        self._cluster = cluster
        self._retry_every = retry_every
        self._metrics = metrics
        self._outages = outages
        self._log = log
        self._clock = clock
        self._items: collections.deque[Unwritten] = collections.deque()
        self.events = 0  # events of the polls waiting
        self._held_since: float | None = None  # when polls began to wait for Redis
        self._failed_at = 0.0  # when Redis last failed to take them
        self._hung = False  # ... by not answering in time (not by refusing)

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item: Unwritten) -> None:
        """Queue a poll's commit after those waiting."""
        self._items.append(item)
        self.events += len(item.events)

    def may_try(self, *, stopping: bool = False) -> bool:
        """Whether to try writing now: nothing waits from before, the lease keeper reached
        Redis since the last failure, or ``retry_every`` went by since a Redis that refused
        (one that did not answer in time is left to the lease keeper's renewals, which wait
        on it in the background: each try would hold the polls up for the reply timeout).
        ``stopping``: a stop tries only a Redis that answers (it has seconds to finish)."""
        if len(self._items) <= 1 and not stopping:
            return True
        if self._outages.redis_answers:
            return True
        waited = self._clock() - self._failed_at >= self._retry_every
        return waited and not self._hung and not stopping

    def failed(self, error: BaseException) -> None:
        """Redis failed to take the polls: it refused, or did not answer in time."""
        self._failed_at = self._clock()
        self._hung = isinstance(error, TimeoutError | RedisTimeoutError)

    def hold(self) -> str | None:
        """Keep what waits, while the bounds allow: the words that say how much waits; None
        if it was dropped (or nothing waited), and the state must be read again."""
        if not self._items:
            return None
        if self._settings.max_events == 0:  # nothing waits: detected again from Redis
            self.drop("detection.redis_outage.max_events is 0")
            return None
        overflow = self._overflow()
        if overflow is not None:
            if self._held_since is None:  # (held back, if only for a moment: said)
                self._held_since = self._clock()
            self.drop(overflow)
            return None
        self._outages.holding = True
        if self._held_since is None:
            self._held_since = self._clock()
            self._log.warning(
                "poller.holding_polls",
                effect="polls go on; what they detect waits in memory and is written, in order,"
                " when Redis answers",
                bound=f"{self._settings.max_events} events, {self._settings.max_age:g} s",
            )
        self._gauges()
        return f"{len(self._items)} polls ({self.events} events) wait to be written"

    def drop(self, reason: str) -> None:
        """Forget what waits; said (log line, metric) if it was held back from an outage (a
        poll that was simply not committed is said by the line of its own outcome)."""
        held, self._held_since = self._held_since is not None, None
        self._outages.holding = False
        polls, events = len(self._items), self.events
        self._items.clear()
        self.events = 0
        if polls and held:
            self._metrics.backlog_dropped.labels(self._cluster).inc(events)
            self._log.error(
                "poller.backlog_dropped",
                polls=polls,
                events=events,
                reason=reason,
                effect="the events these polls detected are lost; the state is read again from"
                " Redis and the next poll is detected against it",
            )
        self._gauges()

    async def write(
        self,
        store: StateStore,
        lease: str,
        written: Callable[[Unwritten, int], None],
    ) -> tuple[CommitOutcome, int]:
        """Write every waiting poll, oldest first, calling ``written(poll, generation)`` after
        each; stops at the first that is not committed (stale or fenced) and returns its
        outcome. A Redis error propagates, leaving the poll it cut off first in line (sent:
        the next attempt resumes it)."""
        outcome, generation = CommitOutcome.COMMITTED, 0
        while self._items:
            item = self._items[0]
            resume, item.sent = item.sent, True
            outcome, generation = await store.commit(
                item.before,
                item.detection,
                item.events,
                lease=lease,
                polled_at=item.polled_at,
                streams=item.streams,
                keep_streams=item.keep_streams,
                commit_id=item.commit_id,
                resume=resume,
            )
            if outcome is not CommitOutcome.COMMITTED:
                return outcome, generation
            if not self._items or self._items[0] is not item:  # dropped meanwhile (the lease
                return CommitOutcome.STALE, generation  # changed): what follows is not ours
            self._items.popleft()
            self.events -= len(item.events)
            written(item, generation)
        self._outages.holding = False
        if self._held_since is not None:
            self._log.info(
                "poller.backlog_written",
                waited=round(self._clock() - self._held_since, 3),
                effect="the polls detected while Redis was unavailable are written, in order",
            )
            self._held_since = None
            self._gauges()
        return outcome, generation

    def _overflow(self) -> str | None:
        settings = self._settings
        if self.events > settings.max_events:
            return f"more than detection.redis_outage.max_events ({settings.max_events}) events"
        age = self._clock() - self._items[0].detected_at
        if age > settings.max_age:
            return f"older than detection.redis_outage.max_age ({settings.max_age:g} s)"
        return None

    def _gauges(self) -> None:
        self._metrics.backlog_polls.labels(self._cluster).set(len(self._items))
        self._metrics.backlog_events.labels(self._cluster).set(self.events)
