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
import time
from typing import TYPE_CHECKING

import structlog
from redis.exceptions import RedisError

from notifier._aio import wait_event
from notifier.detect.rules import detect
from notifier.detect.store import Checkpoint, CommitOutcome, EncodedEvent, Snapshot
from notifier.errors import StateError, StormError, StormRequestError, StormSchemaError
from notifier.events import encode_event

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from notifier.config import ClusterSettings, DetectionSettings
    from notifier.detect.lease import Lease
    from notifier.detect.rules import Detection
    from notifier.detect.store import StateStore
    from notifier.storm import Poll, StormClient, Viewer

__all__ = ["MAX_LOOKUPS", "Poller", "next_slot"]

MAX_LOOKUPS = 2000  # absent viewers confirmed per poll; a larger exodus is real, not drift
MAX_STALE_RETRIES = 3
REDIS_ERRORS = (RedisError, OSError, TimeoutError)


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
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._cluster = cluster
        self._detection = detection
        self._client = client
        self._store = store
        self._lease = lease
        self._clock = clock
        self._snapshot: Snapshot | None = None
        self._lookups = detection.confirm_with_lookup
        self._storm_ok: bool | None = None
        self._redis_ok: bool | None = None
        self._leading = False
        self.commits = 0
        self.events = 0
        self._log = structlog.get_logger("notifier.poller").bind(cluster=cluster.name)

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
        """One scheduled slot: make sure we lead, then poll and commit."""
        if not self._lease.held and not await self._try_lead():
            return
        poll = await self._client.poll()
        if not poll.complete:
            self._storm_state(ok=False, error=poll.error)
            return
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
        """Turn one complete poll into a commit; reload and recompute if Redis moved on."""
        polled_at = int(poll.started_at * 1000)
        for _ in range(MAX_STALE_RETRIES):
            snapshot = self._snapshot or await self._store.load()
            confirmed = await self._confirm_absent(poll, snapshot)
            if confirmed is None:
                return
            detection = detect(
                snapshot.tracked,
                poll.viewers,
                confirmed=confirmed,
                polled_at=polled_at,
                settings=self._detection,
            )
            events = self._encode(detection, snapshot, polled_at)
            lease = self._lease.value
            if lease is None:
                return
            outcome, generation = await self._store.commit(
                snapshot, detection, events, lease=lease, polled_at=polled_at
            )
            if outcome is CommitOutcome.COMMITTED:
                self._snapshot = Snapshot(
                    generation=generation,
                    sequence=snapshot.sequence + len(events),
                    epoch=snapshot.epoch,
                    tracked=detection.state,
                )
                self.commits += 1
                self.events += len(events)
                self._log.debug(
                    "poller.committed",
                    generation=generation,
                    events=len(events),
                    viewers=len(detection.state),
                )
                return
            self._snapshot = None
            if outcome is CommitOutcome.FENCED:
                self._lease.forget()
                self._set_leading(leading=False, reason="fenced")
                return
            self._log.info(
                "poller.state_moved", generation=generation, expected=snapshot.generation
            )
        self._log.warning("poller.commit_abandoned", attempts=MAX_STALE_RETRIES)

    # --- confirmation of absent viewers --------------------------------------------------------

    async def _confirm_absent(self, poll: Poll, snapshot: Snapshot) -> Mapping[str, Viewer] | None:
        """Tracked viewers the list skipped but the server still knows; None if unsure."""
        if not self._lookups:
            return {}
        seen = poll.viewers
        absent = [vid for vid in snapshot.tracked if vid not in seen]
        if not absent:
            return {}
        if len(absent) > MAX_LOOKUPS:
            tracked = snapshot.tracked
            absent.sort(key=lambda vid: tracked[vid].missed, reverse=True)
            absent = absent[:MAX_LOOKUPS]
        try:
            lookup = await self._client.lookup(absent)
        except (StormRequestError, StormSchemaError) as exc:
            self._lookups = False  # this deployment's batch endpoint cannot help
            self._log.warning("poller.lookup_unsupported", error=str(exc))
            return {}
        except StormError as exc:
            self._storm_state(ok=False, error=f"batch lookup: {exc}")
            return None
        return lookup.found

    def _encode(
        self, detection: Detection, snapshot: Snapshot, polled_at: int
    ) -> list[EncodedEvent]:
        events = []
        name = self._cluster.name
        for offset, emission in enumerate(detection.emissions, start=1):
            event_id, body = encode_event(
                cluster=name,
                event_type=emission.type,
                viewer_id=emission.viewer_id,
                record=emission.record,
                data=emission.data,
                sequence=snapshot.sequence + offset,
                epoch=snapshot.epoch,
                time_ms=polled_at,
            )
            events.append(EncodedEvent(type=emission.type, id=event_id, body=body))
        return events

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
            reason = " ".join(str(error).split())[:200] if error else None
            self._log.warning("poller.redis_unavailable", error=reason or type(error).__name__)
        self._redis_ok = ok
