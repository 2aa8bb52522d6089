"""The poll loop of one cluster: lead, poll, confirm, detect, commit; on a fixed schedule.

- Polls start every ``poll_interval`` (no drift build-up); a poll that overruns its slot
  skips the missed slots instead of overlapping.
- Only the holder of the cluster's lease polls (``leadership``): it takes the lease when the
  fleet's gate allows, keeps it alive in the background, and hands it over between two polls
  when the fleet gives the cluster to another replica, saving its newest records first.
- Tracked viewers missing from a poll are looked up with the batch endpoint before they count
  as missed: offset paging over a live audience can skip a viewer that never left.
- The state is cached in memory (with the audiences and record ages: ``knowledge``) and
  trusted only while the commit script finds Redis at the same generation and the lease is
  the one it was computed under; after a stale or fenced commit it is reloaded.
- While Redis does not take the commits, polls go on against the state held in memory, and
  what they detect waits to be written in order (``backlog``: bounded, said once).
- Redis and Storm outages are logged once when they start and once when they end
  (``outages``); a standby replica says once that it stands by, and whom for.
- A stop abandons a poll still fetching or detecting (an incomplete poll changes nothing);
  a commit under way is finished.
- After every cycle it led, the poller reports it to the status model (``report``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from typing import TYPE_CHECKING

import structlog

from notifier._aio import wait_event
from notifier.detect.absent import MAX_LOOKUPS, AbsentCheck
from notifier.detect.backlog import Backlog, Unwritten
from notifier.detect.encoding import PollEvents
from notifier.detect.knowledge import Knowledge
from notifier.detect.leadership import Leadership
from notifier.detect.outages import Outages
from notifier.detect.pace import Pace
from notifier.detect.report import audience_gauges
from notifier.detect.store import Checkpoint, CommitOutcome, Snapshot
from notifier.errors import StateError
from notifier.fleet import OPEN
from notifier.metrics import Metrics
from notifier.redis_client import REDIS_ERRORS, redis_reason

if TYPE_CHECKING:
    from collections.abc import Callable

    from notifier.detect.audiences import StreamCommit
    from notifier.detect.report import StatusWriter
    from notifier.detect.rules import Detection
    from notifier.detect.settings import DetectionSettings
    from notifier.detect.store import StateStore
    from notifier.events import Emission, StreamEmission
    from notifier.fleet import Gate
    from notifier.lease import Lease
    from notifier.storm import Poll, StormClient
    from notifier.storm.settings import ClusterSettings

__all__ = ["MAX_LOOKUPS", "Poller", "next_slot"]

WATCH_EVERY = 0.1  # seconds between two looks at the poll in flight (failing? stopping?)


class _Abandoned(Exception):  # noqa: N818 - a signal inside the poller, never escapes it
    """The cycle was abandoned before its commit: the service is stopping."""


def next_slot(previous: float, interval: float, now: float) -> float:
    """The next start time on the ``previous + k * interval`` grid that is not in the past."""
    slot = previous + interval
    if slot < now:
        slot += ((now - slot) // interval + 1) * interval
    return slot


class Poller:
    """Polls one cluster and commits what changed. Pass in the client, store and lease, the
    status writer if the cycles are to be reported (``notifier run`` does), and the fleet's
    gate of the lease if replicas share the clusters (``notifier.fleet``)."""

    def __init__(
        self,
        cluster: ClusterSettings,
        detection: DetectionSettings,
        *,
        client: StormClient,
        store: StateStore,
        lease: Lease,
        metrics: Metrics | None = None,
        status: StatusWriter | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        gate: Gate = OPEN,
    ) -> None:
        self._cluster = cluster
        self._detection = detection
        self._client = client
        self._store = store
        self._status = status
        self._clock = clock
        self._wall_clock = wall_clock
        self._snapshot: Snapshot | None = None
        self._metrics = metrics or Metrics()
        self.last_commit: float | None = None  # monotonic time of the last committed poll
        self._phase = "fetch"  # of the cycle under way
        self.commits = 0
        self.events = 0
        self.tracked = 0  # viewers tracked after the last committed poll
        self._log = structlog.get_logger("notifier.poller").bind(cluster=cluster.name)
        self._known = Knowledge(cluster, detection, wall_clock=wall_clock, log=self._log)
        self._outages = Outages(self._log)
        self._backlog = Backlog(
            detection.redis_outage,
            cluster=cluster.name,
            retry_every=detection.leader_lease / 3,
            metrics=self._metrics,
            outages=self._outages,
            log=self._log,
            clock=clock,
        )
        self._leader = Leadership(
            lease,
            gate,
            cluster=cluster.name,
            ttl=detection.leader_lease,
            metrics=self._metrics,
            outages=self._outages,
            log=self._log,
        )
        self._absent = AbsentCheck(client, enabled=detection.confirm_with_lookup, log=self._log)
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
        """Poll on schedule until ``stop`` is set; a commit in hand is finished first."""
        keeper = asyncio.create_task(self._leader.keep(stop, self._forget_snapshot))
        slot = self._clock()
        try:
            while not stop.is_set():
                wait = slot - self._clock()
                if wait > 0 and await wait_event(stop, wait):
                    break
                await self.cycle(stop)
                slot = next_slot(slot, self._cluster.poll_interval, self._clock())
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            await self.close()

    async def close(self) -> None:
        """Write the newest records to Redis and give the lease back (a clean stop)."""
        await self._checkpoint()
        await self._leader.give_up()
        if self._status is not None:
            await self._status.aclose()

    async def _checkpoint(self) -> None:
        """Write the newest records (a stop or a hand-over); forget the cached state."""
        snapshot, lease = self._snapshot, self._leader.value
        reason = "stopping (or handing over) with Redis unavailable"
        if self._backlog and lease is not None and self._backlog.may_try(stopping=True):
            try:
                outcome, _ = await self._backlog.write(self._store, lease, self._written)
            except REDIS_ERRORS as exc:
                self._outages.redis(ok=False, error=exc)
            else:
                reason = f"stopping (or handing over): {outcome.value}"
                if outcome is CommitOutcome.FENCED:
                    self._leader.lost("fenced")
        if self._backlog:
            self._backlog.drop(reason)
            snapshot = None
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

    def _forget_snapshot(self) -> None:
        """Another replica led in between: nothing held in memory can be trusted."""
        self._backlog.drop("another replica took the lease")
        self._snapshot = None

    def _hold(self) -> str:
        """After Redis did not take the polls: "; what waits", or "" if nothing may wait (then
        the state is read again from Redis)."""
        held = self._backlog.hold()
        if held is None:
            self._snapshot = None
            return ""
        return f"; {held}"

    @property
    def cluster(self) -> str:
        """The name of the cluster polled."""
        return self._cluster.name

    @property
    def backlog(self) -> tuple[int, int]:
        """(polls, events) detected and not written yet (``backlog``)."""
        return len(self._backlog), self._backlog.events

    async def cycle(self, stop: asyncio.Event | None = None) -> None:
        """One scheduled slot: make sure we lead, then poll, commit and report the cycle.

        ``notifier_poll_duration_seconds`` times the whole of it (fetch, decode, lookup, detect,
        encode, commit), ``notifier_poll_phase_seconds`` each phase. If ``stop`` is set before
        the commit begins, the cycle is abandoned; a commit under way is finished. A lease the
        fleet wants elsewhere is handed over instead, before any poll.
        """
        if self._leader.should_give():
            await self._leader.hand_over(self._checkpoint)
            return
        if not self._leader.held and not await self._leader.try_lead():
            return
        started = self._pace.start()
        events = self.events
        self._phase = "fetch"
        work = asyncio.create_task(self._poll_and_apply(), name=f"poll:{self._cluster.name}")
        try:
            reason = await self._watch(work, stop)
        except _Abandoned:
            return  # not a poll: neither timed nor reported
        except BaseException:
            self._pace.finish(started)
            raise
        self._report(self._pace.finish(started), reason, self.events - events)

    async def _poll_and_apply(self) -> str | None:
        poll = await self._client.poll()
        self._pace.phase("fetch", poll.duration)
        return await self._apply_complete(poll)

    async def _watch(
        self, work: asyncio.Task[str | None], stop: asyncio.Event | None
    ) -> str | None:
        """The cycle's outcome; meanwhile a failing fetch is said early (``outages``), and a
        stop abandons the cycle unless its commit has begun."""
        stopping = asyncio.create_task(stop.wait()) if stop is not None else None
        try:
            while True:
                waits = {work} if stopping is None or self._phase == "commit" else {work, stopping}
                done, _ = await asyncio.wait(
                    waits, timeout=WATCH_EVERY, return_when=asyncio.FIRST_COMPLETED
                )
                if work in done:
                    return work.result()
                if stopping in done and self._phase != "commit":
                    work.cancel()
                    await asyncio.wait({work})  # (a cancellation of our own still gets through)
                    self._log.info("poller.poll_abandoned", phase=self._phase, reason="stopping")
                    raise _Abandoned
                failing = self._client.failing
                if failing is not None and self._phase == "fetch":
                    self._outages.storm_failing(failing)
        finally:
            if stopping is not None:
                stopping.cancel()
            work.cancel()  # a no-op once done; else we were cancelled: the work goes with us

    async def _apply_complete(self, poll: Poll) -> str | None:
        """Commit a complete poll; an incomplete one changes nothing (and is said once).
        Returns why the cycle did not commit, in the words of its log line; None if it did."""
        name = self._cluster.name
        if not poll.complete:
            self._metrics.polls.labels(name, "incomplete").inc()
            self._metrics.poll_incomplete.labels(name, poll.reason or "unavailable").inc()
            self._outages.storm(ok=False, error=poll.error, reason=poll.reason)
            return f"storm: {poll.error}"
        self._metrics.polls.labels(name, "complete").inc()
        self._outages.storm(ok=True)
        try:
            reason = await self.apply(poll)
        except REDIS_ERRORS as exc:
            self._outages.redis(ok=False, error=exc)
            self._backlog.failed(exc)
            return f"redis: {redis_reason(exc)}{self._hold()}"
        except StateError as exc:
            self._backlog.drop("state unreadable")
            self._snapshot = None
            self._log.error("poller.state_unreadable", error=str(exc))
            return f"state unreadable: {exc}"
        return reason

    async def apply(self, poll: Poll) -> str | None:
        """Turn one complete poll into one commit, written after any polls still waiting
        from a Redis outage (``backlog``); the state after it is held at once, so the next
        poll is detected against it even if Redis does not take this one.

        If Redis is not at the generation the poll was computed against (another writer, or
        a commit whose reply was lost), the poll is dropped rather than applied to a state
        it was not computed for: that would count its misses twice. The next poll is
        computed from the reloaded state. Returns why nothing was committed; None if it was.
        """
        polled_at = int(poll.started_at * 1000)
        began = self._clock()
        self._phase = "lookup"
        leading = self._leader.value  # a poll is written under the lease it was computed in
        snapshot = self._snapshot or await self._known.load(self._store)
        confirmed, count_misses = await self._absent.confirm(poll.viewers, snapshot.tracked)
        began = self._pace.phase("lookup", self._clock() - began)
        self._phase = "detect"
        # Pure CPU work, off the event loop: the lease keeper and I/O run meanwhile.
        detection, audiences = await asyncio.to_thread(
            self._known.compute, snapshot, poll, confirmed, count_misses, polled_at
        )
        began = self._pace.phase("detect", self._clock() - began)
        lease = self._leader.value
        if lease is None:
            return "lease lost before the commit"
        if lease != leading:  # another replica led meanwhile: the state held is forgotten
            return "the lease changed during the poll: it is detected again from Redis"
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
        writes = audiences.writes if audiences is not None else None
        self._backlog.add(
            Unwritten(
                snapshot.header(),
                detection.changes(),
                events,
                polled_at,
                writes,
                self._known.keep_streams(snapshot),
                viewers=len(detection.state),
                detected_at=self._clock(),
            )
        )
        self._advance(snapshot, detection, audiences, len(events))
        self._phase = "commit"  # from here on, a stop waits for the commit to finish
        if not self._backlog.may_try():
            return f"redis: unavailable{self._hold()}"
        outcome, generation = await self._backlog.write(self._store, lease, self._written)
        self._pace.phase("commit", self._clock() - began)
        if outcome is CommitOutcome.COMMITTED:
            self._outages.redis(ok=True)
            return None
        self._backlog.drop(outcome.value)
        self._outages.redis(ok=True)
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
            self._leader.lost("fenced")
            return "commit fenced: this replica no longer leads the cluster"
        self._metrics.polls.labels(self._cluster.name, "dropped").inc()
        self._log.info(
            "poller.poll_dropped",
            reason="the state in Redis moved on",
            generation=generation,
            expected=snapshot.generation,
        )
        return "poll dropped: the state in Redis moved on"

    def _advance(
        self,
        snapshot: Snapshot,
        detection: Detection,
        audiences: StreamCommit | None,
        events: int,
    ) -> None:
        """Hold the state after a poll, before it is written: the next poll is detected
        against it (also while Redis is away: ``backlog``)."""
        streams = len(audiences.writes) if audiences is not None else 0
        generation = snapshot.generation + self._store.generations(detection, events, streams)
        self._snapshot = self._known.advance(snapshot, detection, audiences, generation, events)

    def _written(self, poll: Unwritten, generation: int) -> None:
        """One poll is in Redis: count it."""
        detection, events = poll.detection, len(poll.events)
        self.commits += 1
        self.events += events
        self.tracked = poll.viewers
        self.last_commit = self._clock()
        name = self._cluster.name
        self._metrics.polls.labels(name, "committed").inc()
        self._metrics.viewers.labels(name).set(poll.viewers)
        if (states := self._known.states) is not None:
            audience_gauges(self._metrics, name, states)
        types = Counter(poll.events.types())
        for event_type, count in types.items():
            self._metrics.events.labels(name, event_type).inc(count)
        self._log.debug(
            "poller.committed",
            generation=generation,
            events=events,
            viewers=poll.viewers,
            writes=len(detection.upserts),
        )

    def _report(self, took: float, reason: str | None, events: int) -> None:
        """Hand the cycle to the status writer (with the state it may sample)."""
        if self._status is not None:
            states = self._known.states
            now = int(self._wall_clock() * 1000)
            self._status.record(now, took, reason, events, snapshot=self._snapshot, states=states)
