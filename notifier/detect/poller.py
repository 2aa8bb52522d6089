"""The poll loop of one cluster: lead, poll, confirm, detect, commit; on a fixed schedule.

- Polls start every ``poll_interval`` (no drift build-up); a poll that overruns its slot
  skips the missed slots instead of overlapping.
- Only the holder of the cluster's lease polls; the lease is kept alive in the background,
  and a replica takes it over when it expires.
- Tracked viewers missing from a poll are looked up with the batch endpoint before they count
  as missed: offset paging over a live audience can skip a viewer that never left.
- The state is cached in memory and trusted only while the commit script finds Redis at the
  same generation; after any doubt (a stale or failed commit) it is reloaded.
- Redis and Storm outages are logged once when they start and once when they end.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import math
import time
from collections import Counter
from typing import TYPE_CHECKING

import structlog

from notifier._aio import wait_event
from notifier.detect.audiences import Audiences
from notifier.detect.encoding import PollEvents
from notifier.detect.pace import Pace
from notifier.detect.rules import Track, detect
from notifier.detect.store import Checkpoint, CommitOutcome, KeepStreams, Snapshot
from notifier.errors import StateError, StormError, StormRequestError, StormSchemaError
from notifier.metrics import Metrics
from notifier.redis_client import REDIS_ERRORS, redis_reason

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from notifier.detect.audiences import StreamCommit
    from notifier.detect.rules import Detection
    from notifier.detect.settings import DetectionSettings
    from notifier.detect.store import StateStore
    from notifier.events import Emission, StreamEmission
    from notifier.lease import Lease
    from notifier.storm import Poll, StormClient, Viewer
    from notifier.storm.settings import ClusterSettings

__all__ = ["MAX_LOOKUPS", "Poller", "next_slot"]

MAX_LOOKUPS = 2000  # absent viewers confirmed per poll; a larger exodus is real, not drift


def next_slot(previous: float, interval: float, now: float) -> float:
    """The next start time on the ``previous + k * interval`` grid that is not in the past."""
    slot = previous + interval
    if slot < now:
        slot += ((now - slot) // interval + 1) * interval
    return slot


class Poller:
    """Polls one cluster and commits what changed. Pass in the client, store and lease."""

    def __init__(
        self,
        cluster: ClusterSettings,
        detection: DetectionSettings,
        *,
        client: StormClient,
        store: StateStore,
        lease: Lease,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._cluster = cluster
        self._detection = detection
        self._audiences = Audiences(detection.streams) if detection.streams.enabled else None
        self._said_unplaced = False
        self._client = client
        self._store = store
        self._lease = lease
        self._clock = clock
        self._wall_clock = wall_clock
        self._snapshot: Snapshot | None = None
        self._written: dict[str, int] = {}  # viewer -> when Redis got its record (ms), oldest first
        self._lookups = detection.confirm_with_lookup
        self._lookup_ok = True
        self._metrics = metrics or Metrics()
        self.last_commit: float | None = None  # monotonic time of the last committed poll
        self._storm_ok: bool | None = None
        self._redis_ok: bool | None = None
        self._leading = False
        self.commits = 0
        self.events = 0
        self.tracked = 0  # viewers tracked after the last committed poll
        self._log = structlog.get_logger("notifier.poller").bind(cluster=cluster.name)
        self._pace = Pace(
            cluster.name,
            interval=cluster.poll_interval,
            lease=detection.leader_lease,
            metrics=self._metrics,
            clock=clock,
            log=self._log,
        )

    # --- the loop --------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Poll on schedule until ``stop`` is set; the poll in hand is finished first."""
        keeper = asyncio.create_task(self._keep_lease(stop))
        slot = self._clock()
        try:
            while not stop.is_set():
                wait = slot - self._clock()
                if wait > 0 and await wait_event(stop, wait):
                    break
                await self.cycle()
                slot = next_slot(slot, self._cluster.poll_interval, self._clock())
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            await self.close()

    async def close(self) -> None:
        """Write the newest records to Redis and give the lease back (a clean stop)."""
        snapshot, lease = self._snapshot, self._lease.value
        if snapshot is not None and lease is not None and snapshot.tracked:
            try:
                outcome, generation = await self._store.commit(
                    snapshot,
                    Checkpoint(upserts=snapshot.tracked),
                    [],
                    lease=lease,
                    polled_at=None,
                )
            except REDIS_ERRORS as exc:
                self._log.info("poller.checkpoint_failed", error=str(exc))
            else:
                self._log.debug("poller.checkpoint", outcome=outcome.value, generation=generation)
        self._snapshot = None
        await self._give_up_lease()

    async def cycle(self) -> None:
        """One scheduled slot: make sure we lead, then poll and commit.

        ``notifier_poll_duration_seconds`` times the whole of it (fetch, decode, lookup, detect,
        encode, commit), ``notifier_poll_phase_seconds`` each phase.
        """
        if not self._lease.held and not await self._try_lead():
            return
        started = self._pace.start()
        poll = await self._client.poll()
        self._pace.phase("fetch", poll.duration)
        try:
            await self._apply_complete(poll)
        finally:
            self._pace.finish(started)

    async def _apply_complete(self, poll: Poll) -> None:
        """Commit a complete poll; an incomplete one changes nothing (and is said once)."""
        name = self._cluster.name
        if not poll.complete:
            self._metrics.polls.labels(name, "incomplete").inc()
            self._storm_state(ok=False, error=poll.error)
            return
        self._metrics.polls.labels(name, "complete").inc()
        self._storm_state(ok=True)
        try:
            await self.apply(poll)
        except REDIS_ERRORS as exc:
            self._snapshot = None  # the commit may or may not have happened: reload next time
            self._redis_state(ok=False, error=exc)
        except StateError as exc:
            self._snapshot = None
            self._log.error("poller.state_unreadable", error=str(exc))
        else:
            self._redis_state(ok=True)

    async def apply(self, poll: Poll) -> None:
        """Turn one complete poll into one commit.

        If Redis is not at the generation the poll was computed against (another writer, or
        a commit whose reply was lost), the poll is dropped rather than applied to a state
        it was not computed for: that would count its misses twice. The next poll is
        computed from the reloaded state.
        """
        polled_at = int(poll.started_at * 1000)
        began = self._clock()
        snapshot = self._snapshot or await self._load()
        confirmed, count_misses = await self._confirm_absent(poll, snapshot)
        began = self._pace.phase("lookup", self._clock() - began)
        # Pure CPU work, off the event loop: the lease keeper and I/O run meanwhile.
        detection, audiences = await asyncio.to_thread(
            self._compute, snapshot, poll, confirmed, count_misses, polled_at
        )
        began = self._pace.phase("detect", self._clock() - began)
        lease = self._lease.value
        if lease is None:
            return
        emissions: list[Emission | StreamEmission] = [*detection.emissions]
        if audiences is not None:
            emissions += audiences.emissions  # a poll's stream events after its viewer events
        events = PollEvents(
            emissions,
            cluster=self._cluster.name,
            epoch=snapshot.epoch,
            after=snapshot.sequence,
            time_ms=polled_at,
        )  # encoded chunk by chunk while the store writes the chunk before
        outcome, generation = await self._store.commit(
            snapshot,
            detection,
            events,
            lease=lease,
            polled_at=polled_at,
            streams=audiences.writes if audiences is not None else None,
            keep_streams=self._keep_streams(snapshot),
        )
        self._pace.phase("commit", self._clock() - began)
        if outcome is not CommitOutcome.COMMITTED:
            self._snapshot = None  # reload: the poll was not written, or only its first chunks
            if outcome is CommitOutcome.FENCED:
                self._metrics.polls.labels(self._cluster.name, "fenced").inc()
                self._log.error(
                    "poller.commit_fenced",
                    events=len(events),
                    effect="this replica no longer leads the cluster: the poll was not written"
                    " (or only its first chunks; the replica that leads now carries on from"
                    " them)",
                    hint="a poll that outlasts detection.leader_lease, or a paused process",
                )
                self._lease.forget()
                self._set_leading(leading=False, reason="fenced")
            else:
                self._metrics.polls.labels(self._cluster.name, "dropped").inc()
                self._log.info(
                    "poller.poll_dropped",
                    reason="the state in Redis moved on",
                    generation=generation,
                    expected=snapshot.generation,
                )
            return
        self._snapshot = Snapshot(
            generation=generation,
            sequence=snapshot.sequence + len(events),
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
        now = int(self._wall_clock() * 1000)
        for viewer_id in detection.upserts:
            self._written.pop(viewer_id, None)
            self._written[viewer_id] = now
        for viewer_id in detection.deletes:
            self._written.pop(viewer_id, None)
        self.commits += 1
        self.events += len(events)
        self.tracked = len(detection.state)
        self.last_commit = self._clock()
        name = self._cluster.name
        self._metrics.polls.labels(name, "committed").inc()
        self._metrics.viewers.labels(name).set(len(detection.state))
        for event_type, count in Counter(e.type for e in emissions).items():
            self._metrics.events.labels(name, event_type).inc(count)
        self._log.debug(
            "poller.committed",
            generation=generation,
            events=len(events),
            viewers=len(detection.state),
            writes=len(detection.upserts),
        )

    def _compute(
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
        detection = self._with_refreshed_records(detection)
        if self._audiences is None:
            return detection, None
        return detection, self._audiences.decide(
            snapshot.tracked, detection, polled_at=polled_at, initial=initial
        )

    def _keep_streams(self, snapshot: Snapshot) -> KeepStreams:
        if self._audiences is None:  # forget the states once, if kept
            return KeepStreams.OFF if snapshot.audiences else KeepStreams.KEPT
        if snapshot.polls == 0:
            return KeepStreams.FIRST
        return self._audiences.keep

    async def _load(self) -> Snapshot:
        snapshot = await self._store.load()
        self._written = dict.fromkeys(snapshot.tracked, 0)  # unknown age: refresh them first
        if self._audiences is not None:
            now = int(self._wall_clock() * 1000)
            load = functools.partial(self._audiences.load, kept=snapshot.audiences, now=now)
            await asyncio.to_thread(load, snapshot.tracked, snapshot.streams)
        return snapshot

    def _with_refreshed_records(self, detection: Detection) -> Detection:
        """Add the oldest records Redis holds, so none is older than ``record_refresh``.

        Redis gets a viewer's record whenever anything else about it changes; a steady viewer's
        record would otherwise be as old as its last change, and a disconnect after a crash
        or failover would carry it. Each poll rewrites a slice, at most the audience times
        ``poll_interval / record_refresh`` viewers.
        """
        refresh = self._detection.record_refresh
        if not refresh or not self._written:
            return detection
        state = detection.state
        limit = max(100, math.ceil(len(state) * self._cluster.poll_interval / refresh))
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

    # --- confirmation of absent viewers --------------------------------------------------------

    async def _confirm_absent(
        self, poll: Poll, snapshot: Snapshot
    ) -> tuple[Mapping[str, Viewer], bool]:
        """Tracked viewers the list skipped but the server still knows, and whether the
        others may count a miss (not when the lookup failed: then we cannot tell)."""
        if not self._lookups:
            return {}, True
        seen = poll.viewers
        absent = [vid for vid in snapshot.tracked if vid not in seen]
        if not absent:
            return {}, True
        if len(absent) > MAX_LOOKUPS:
            tracked = snapshot.tracked
            absent.sort(key=lambda vid: tracked[vid].missed, reverse=True)
            absent = absent[:MAX_LOOKUPS]
        try:
            lookup = await self._client.lookup(absent)
        except (StormRequestError, StormSchemaError) as exc:
            self._lookups = False  # this deployment's batch endpoint cannot help
            self._log.warning("poller.lookup_unsupported", error=str(exc))
            return {}, True
        except StormError as exc:
            if self._lookup_ok:
                self._log.warning(
                    "poller.lookup_failed",
                    error=str(exc),
                    effect="missing viewers count no miss until lookups work",
                )
            self._lookup_ok = False
            return {}, False
        if not self._lookup_ok:
            self._log.info("poller.lookup_recovered")
        self._lookup_ok = True
        return lookup.found, True

    # --- leadership -----------------------------------------------------------------------------

    async def _try_lead(self) -> bool:
        try:
            leading = await self._lease.acquire()
        except REDIS_ERRORS as exc:
            self._redis_state(ok=False, error=exc)
            return False
        self._redis_state(ok=True)
        self._set_leading(leading=leading)
        return leading

    async def _keep_lease(self, stop: asyncio.Event) -> None:
        """Renew (or try to take) the lease every third of its TTL."""
        period = self._detection.leader_lease / 3
        while not stop.is_set():
            if await wait_event(stop, period):
                return
            was = self._lease.value
            await self._try_lead()
            if was is not None and self._lease.value != was:
                self._snapshot = None  # someone else led in between: trust nothing cached

    async def _give_up_lease(self) -> None:
        try:
            await self._lease.release()
        except REDIS_ERRORS as exc:
            self._log.info("poller.lease_not_released", error=str(exc))

    def _set_leading(self, *, leading: bool, reason: str | None = None) -> None:
        self._metrics.leading.labels(self._cluster.name).set(1 if leading else 0)
        if leading != self._leading:
            self._leading = leading
            if leading:
                self._log.info("poller.leading", lease=self._lease.value)
            else:
                self._log.warning("poller.following", reason=reason or "another replica leads")

    # --- one log line per change of state ---------------------------------------------------------

    def _storm_state(self, *, ok: bool, error: str | None = None) -> None:
        if ok and self._storm_ok is False:
            self._log.info("poller.storm_recovered")
        elif not ok and self._storm_ok is not False:
            self._log.warning("poller.storm_unavailable", error=error)
        self._storm_ok = ok

    def _redis_state(self, *, ok: bool, error: BaseException | None = None) -> None:
        if ok and self._redis_ok is False:
            self._log.info("poller.redis_recovered")
        elif not ok and self._redis_ok is not False:
            reason = redis_reason(error) if error else "unknown"
            self._log.warning("poller.redis_unavailable", error=reason)
        self._redis_ok = ok
