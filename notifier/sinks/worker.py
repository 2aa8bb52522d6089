"""Delivering one sink's events from one cluster stream (docs/events.md, "Guarantees").

- **At least once.** An entry is acknowledged only once it is delivered, filtered out, or
  dead-lettered. A worker that dies leaves its entries pending; the next one claims them.
- **One worker per (sink, cluster, partition) at a time**, under a lease: per-viewer order
  cannot hold if two consumers split a viewer's events. A sink's ``partitions: K`` splits the
  viewers (``partition``); each partition has its own group and lease, and acknowledges the
  other partitions' entries unread. Replicas stand by and take over when the lease runs out,
  claiming the dead worker's entries once they have been idle longer than a delivery can take.
- **Balanced** (``notifier.fleet``): a worker takes its lease only when the fleet's share says
  so, and hands it over when another replica should have it: it stops reading, finishes the
  deliveries in hand, acknowledges, notes that it handed over cleanly (so the next holder claims
  its retries at once instead of waiting for them to look abandoned) and releases the lease.
- **Layout** (``layout``): before leading, the worker makes sure the stream is delivered in its
  K partitions, carrying over what an earlier K had done; it stands by while replicas of
  another K still deliver.
- **Per viewer, in stream order; retries; batching; the backlog bound**: the pure
  ``schedule.Schedule``, run by ``delivery.DeliveryEngine``. Retry states are saved in Redis
  (``stream.SinkStream``), so a new worker carries on where the last stopped; a permanent
  failure or an exhausted schedule dead-letters the event (``dead_letters.DeadLetters``).
- **Pause.** A sink whose endpoint is gone (410, a revoked Slack webhook) stops delivering,
  says so loudly, and keeps its events until an operator resumes it (SIGHUP, or a restart).
- **Report.** While it leads, the worker keeps the lane's ``P:{C}:sinkstate:<sink>`` up to
  date for the status model (``lane.LaneReporter``): paused at once, the last delivery and the
  last error at most once a second; a report that cannot be written fails nothing.

This module keeps the lease, the take-over, the reading and the tasks that live while the
lease is held.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from typing import TYPE_CHECKING

import structlog

from notifier._aio import cancel_firmly, wait_event
from notifier.events import DeadLetter, UnreadableEvent, decode_event
from notifier.fleet import OPEN, Gate
from notifier.lease import Lease
from notifier.metrics import Metrics
from notifier.redis_client import REDIS_ERRORS
from notifier.sinks.acks import AckBuffer
from notifier.sinks.alarms import Alarms
from notifier.sinks.dead_letters import DeadLetters
from notifier.sinks.delivery import DeliveryEngine
from notifier.sinks.filter import event_filter
from notifier.sinks.lane import LaneReporter
from notifier.sinks.layout import Layout
from notifier.sinks.ledger import RedisLedger
from notifier.sinks.partition import Partition
from notifier.sinks.schedule import RetryPolicy, Schedule
from notifier.sinks.stream import SinkStream

if TYPE_CHECKING:
    from collections.abc import Callable

    from notifier.keys import ClusterKeys
    from notifier.redis_client import AnyRedis
    from notifier.sinks.base import Sink
    from notifier.sinks.control import SinkControl
    from notifier.sinks.layout import Carry
    from notifier.sinks.settings import SinkBaseSettings
    from notifier.sinks.stream import Entry, RetryState

__all__ = ["SinkWorker"]

READ_COUNT = 500
READ_BLOCK_MS = 1000
HANDED_TTL = 600.0  # seconds a clean hand-over's note lives: the next holder reads it at once
TRIM_CHECK_INTERVAL = 5.0


class SinkWorker:
    """Delivers the events of one cluster stream to one sink (one partition of them). Pass in
    the sink and Redis."""

    def __init__(
        self,
        sink: Sink,
        settings: SinkBaseSettings,
        control: SinkControl,
        *,
        cluster: str,
        redis: AnyRedis,
        keys: ClusterKeys,
        owner: str,
        maxlen: int,
        concurrency: int = 8,
        lease_ttl: float = 5.0,
        claim_idle: float = 20.0,
        backlog: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        metrics: Metrics | None = None,
        stream: SinkStream | None = None,
        report_every: float = 1.0,
        partition: Partition | None = None,
        gate: Gate = OPEN,
    ) -> None:
        """``stream`` defaults to the partition's group on ``keys.events``; pass one to observe
        it. ``report_every``: seconds between two writes of the lane's report (``lane``).
        ``partition`` defaults to the sink's only one; ``gate`` is the fleet's say on its lease."""
        part = partition or Partition(settings.name, 0, settings.partitions)
        self.partition = part
        self._gate = gate
        self._keys = keys
        self._redis = redis
        self._layout = Layout(redis, keys, settings.name, part.count)
        self._carry: Carry | None = None
        self._handing_over = False
        self._said_waiting = ""
        self._sink = sink
        self._settings = settings
        self._control = control
        self._cluster = cluster
        self._owner = owner
        self._metrics = metrics or Metrics()
        self._stream = stream or SinkStream(redis, keys, settings.name, group=part.group)
        self._letters = DeadLetters(
            redis, keys, settings.name, maxlen=maxlen, wall_clock=wall_clock, group=part.group
        )
        self._lease = Lease(
            redis,
            part.lease_key(keys),
            part.fence_key(keys),
            owner,
            ttl=lease_ttl,
            guard=(self._layout.key, str(part.count)),
        )
        self._lease_ttl = lease_ttl
        self._claim_idle = claim_idle
        self._concurrency = concurrency
        self._backlog = backlog
        self._clock = clock
        self._wall_clock = wall_clock
        self._rng = rng or random.Random()
        self._policy = RetryPolicy(settings.retry.schedule)
        self._takes = event_filter(settings)  # None: the sink takes every event
        self._log = structlog.get_logger("notifier.sink").bind(sink=settings.name, cluster=cluster)
        if part.count > 1:
            self._log = self._log.bind(partition=part.index, partitions=part.count)
        self._reporter = LaneReporter(
            redis,
            keys.sink_state(part.lane),
            every=report_every,
            clock=clock,
            wall_clock=wall_clock,
            log=self._log,
        )
        self._alarms = Alarms(settings.name, self._log, self._metrics)
        self.lease_valid_until = 0.0

    # --- leadership ----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver while holding the (sink, cluster, partition) lease, until ``stop``."""
        leading = self._metrics.partition_leading.labels(
            self._settings.name, self._cluster, self.partition.label
        )
        try:
            while not stop.is_set():
                try:
                    if await self._may_lead() and await self._lease.acquire():
                        self._alarms.redis(ok=True)
                        leading.set(1)
                        await self._lead(stop)
                        leading.set(0)
                        if self._handing_over:
                            await self._hand_over()
                    elif await wait_event(stop, self._lease_ttl / 3):
                        return
                except REDIS_ERRORS as exc:
                    leading.set(0)
                    self._alarms.redis(ok=False, error=exc)
                    self._lease.forget()
                    if await wait_event(stop, 1.0):
                        return
        finally:
            with contextlib.suppress(*REDIS_ERRORS):
                await self._lease.release()

    async def _may_lead(self) -> bool:
        """The fleet gives this replica the lease, and the stream is in this worker's layout."""
        if not self._gate.may_take():
            return False
        outcome = await self._layout.ensure()
        if outcome == "busy":
            if self._said_waiting != (reason := self._layout.reason):
                self._said_waiting = reason
                self._log.warning(  # effect: the old layout delivers until its workers stop
                    "sink.waiting_for_layout", partitions=self.partition.count, reason=reason
                )
            return False
        if outcome == "migrated":
            self._log.warning("sink.partitions_changed", partitions=self.partition.count)
        self._said_waiting = ""
        return True

    async def _lead(self, stop: asyncio.Event) -> None:
        self._handing_over = False
        self._log.info("sink.leading", lease=self._lease.value)
        self.lease_valid_until = self._clock() + self._lease_ttl
        self._carry = await self._layout.carry()
        if not await self._take_over(stop) or stop.is_set():
            return
        await self._serve(stop)

    async def _hand_over(self) -> None:
        """Note the clean hand-over for the next holder, release the lease, tell the fleet."""
        self._handing_over = False
        lane = self._keys.sink_handed(self.partition.lane)
        await self._redis.set(lane, self._owner, px=int(HANDED_TTL * 1000))
        await self._lease.release()
        self._gate.handed_over()
        self._log.info("sink.handed_over")

    async def _renew(self) -> bool:
        """Extend the lease; False (and no longer leading) if it is gone or Redis is slow."""
        started = self._clock()
        try:
            async with asyncio.timeout(self._lease_ttl / 3):
                held = await self._lease.acquire()
        except TimeoutError:
            held = False
        if held:
            self.lease_valid_until = started + self._lease_ttl
        return held

    async def _take_over(self, stop: asyncio.Event) -> bool:
        """Claim what dead workers left, once it has been idle longer than a delivery takes.

        The lease is renewed while waiting; False if it was lost meanwhile (then another
        worker delivers, and this one must not).
        """
        min_idle = int(self._claim_idle * 1000)
        handed = await self._redis.getdel(self._keys.sink_handed(self.partition.lane))
        previous = handed.decode() if isinstance(handed, bytes) else str(handed or "")
        if previous and previous != self._owner:  # its own note: its entries are its own
            moved = await self._stream.claim_from(previous, self._owner)
            if moved:
                self._log.info("sink.claimed_handed_over", entries=moved)
        while not stop.is_set():
            claimed, gone = await self._stream.claim(self._owner, min_idle)
            if claimed:
                self._log.info("sink.claimed", entries=claimed)
            for entry_id in gone:
                self._log.error(
                    "sink.entry_trimmed",
                    entry=entry_id,
                    hint="the stream was trimmed before this event was delivered",
                )
                await self._stream.ack([entry_id], [entry_id])
            left, youngest_idle = await self._stream.foreign_pending(self._owner)
            if not left:
                await self._stream.drop_idle_consumers(self._owner, min_idle_ms=min_idle)
                return True
            wait = max(self._claim_idle - youngest_idle, 0.05)
            self._log.info("sink.waiting_to_claim", entries=left, seconds=round(wait, 1))
            deadline = self._clock() + wait
            while self._clock() < deadline:  # renew in slices: the wait outlasts the lease
                if await wait_event(stop, min(self._lease_ttl / 3, deadline - self._clock())):
                    return False
                if not await self._renew():
                    self._log.info("sink.lease_lost_while_waiting")
                    return False
        return False

    # --- while leading -------------------------------------------------------------------------

    async def _serve(self, stop: asyncio.Event) -> None:
        """Read, deliver, acknowledge and keep the lease until ``stop`` or the lease is lost."""
        acks = AckBuffer(self._stream)
        schedule = Schedule(self._sink.batching, self._policy, self._rng, capacity=self._backlog)
        engine = DeliveryEngine(
            self._sink,
            schedule,
            RedisLedger(self._stream, self._letters, acks, self._wall_clock, self._reporter),
            self._control,
            concurrency=self._concurrency,
            metrics=self._metrics,
            log=self._log,
            clock=self._clock,
        )
        work = [
            asyncio.create_task(self._read(engine, acks), name="read"),
            asyncio.create_task(
                engine.run(may_start=lambda: self._clock() < self.lease_valid_until),
                name="deliver",
            ),
        ]
        acking = asyncio.create_task(acks.run(), name="ack")
        handing, finished = asyncio.Event(), asyncio.Event()
        keeper = asyncio.create_task(self._keep_lease(handing, finished), name="lease")
        reporting = asyncio.create_task(self._report(), name="report")
        waits = [asyncio.create_task(stop.wait()), asyncio.create_task(handing.wait())]
        ended = [*work, acking, keeper, *waits]
        failure: BaseException | None = None
        try:
            done, _ = await asyncio.wait(ended, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    failure = task.exception()
                    break
        finally:  # the lease is still renewed: no one else delivers what is in hand here
            await cancel_firmly(work)
            await engine.drain()  # finish the deliveries in hand; their outcomes are kept
            acks.close()
            await cancel_firmly([reporting, *waits])  # the report may be in a Redis call
            await asyncio.gather(acking, return_exceptions=True)
            with contextlib.suppress(*REDIS_ERRORS):
                await acks.flush()
            finished.set()  # and a cancel, again if a Redis call in hand swallowed the first
            await cancel_firmly([keeper])
            self._handing_over = (
                handing.is_set() and self._lease.held and self._clock() < self.lease_valid_until
            )
            with contextlib.suppress(TimeoutError):  # a report must not hold up a stop
                async with asyncio.timeout(self._lease_ttl / 3):
                    await self._reporter.sync(self._control.paused, force=True)
        if failure is None:
            failure = engine.failure
        if failure is not None:
            raise failure

    async def _read(self, engine: DeliveryEngine, acks: AckBuffer) -> None:
        """Feed the schedule: first this consumer's pending entries (claimed ones included),
        in order, with their saved retry states; then new entries."""
        cursor = "0-0"
        next_trim_check = 0.0
        while True:
            count = await engine.wanted(READ_COUNT)  # wakes once a good read fits
            if cursor != ">":
                entries = await self._stream.read(self._owner, cursor, count, None)
                if not entries:
                    cursor = ">"
                    continue
                cursor = entries[-1][0]
                states = await self._stream.retry_states([e for e, _ in entries])
            else:
                if self._carry is None and self._clock() >= next_trim_check:
                    await self._alarms.check_trimmed(self._stream)
                    next_trim_check = self._clock() + TRIM_CHECK_INTERVAL
                entries = await self._stream.read(self._owner, ">", count, READ_BLOCK_MS)
                states = {}
            await self._admit(engine, acks, entries, states)

    async def _admit(
        self,
        engine: DeliveryEngine,
        acks: AckBuffer,
        entries: list[Entry],
        states: dict[str, RetryState],
    ) -> None:
        """Hand each entry's event to the engine, in order; acknowledge the filtered out ones
        and dead-letter the unreadable ones."""
        takes, cluster, part = self._takes, self._cluster, self.partition
        carry = self._carry
        if carry is not None and entries and not carry.applies(entries[0][0]):
            carry = self._carry = None  # read past every entry the earlier layout saw
        filtered = 0
        for entry_id, fields in entries:
            try:
                event = decode_event(cluster, entry_id, fields)
            except UnreadableEvent as exc:
                if part.index == 0 and not (carry and carry.unreadable_done(entry_id)):
                    await self._unreadable(entry_id, fields, exc)
                else:
                    acks.add(entry_id, retried=False)
                continue
            if not part.owns(event) or (
                carry is not None and carry.applies(entry_id) and carry.handled(entry_id, event)
            ):
                acks.add(entry_id, retried=False)  # another partition's, or done before K changed
                continue
            state = states.get(entry_id) if states else None
            if state is None and carry is not None and carry.owed(entry_id, event):
                state = (await self._stream.retry_states([entry_id])).get(entry_id)
            if takes is not None and not takes(event):
                filtered += 1
                acks.add(entry_id, retried=state is not None)
            elif state is None:
                engine.admit(event)
            else:
                wait = max(0.0, state.next_at - self._wall_clock())
                engine.admit(
                    event,
                    attempts=state.attempts,
                    not_before=self._clock() + wait,
                    status=state.status,
                    reason=state.reason,
                )
        if filtered:
            engine.count_filtered(filtered)
            await self._control.changed()

    async def _unreadable(
        self, entry_id: str, fields: dict[bytes, bytes], exc: UnreadableEvent
    ) -> None:
        self._log.error("sink.unreadable_event", entry=entry_id, error=str(exc))
        letter = DeadLetter.of_entry(
            entry_id, fields, reason=f"unreadable: {exc}", failed_at=self._letters.now()
        )
        await self._letters.move(entry_id, letter)
        self._control.dead_lettered += 1

    async def _report(self) -> None:
        """Keep the lane's report current: a pause or resume at once, the rest once a second."""
        wake = asyncio.Event()
        unwatch = self._control.watch(wake.set)
        try:
            while True:
                wake.clear()
                await self._reporter.sync(self._control.paused)
                await wait_event(wake, self._reporter.every)
        finally:
            unwatch()

    async def _keep_lease(self, handing: asyncio.Event, finished: asyncio.Event) -> None:
        """Renew every third of the TTL until ``finished`` (the deliveries in hand are done, a
        stop's or a hand-over's included); returns (ending the leadership) when it is lost.
        Sets ``handing`` when the fleet gives the lease to another replica."""
        while True:
            if await wait_event(finished, self._lease_ttl / 3):
                return
            if not await self._renew():
                self._log.warning("sink.lease_lost", action="another worker delivers now")
                return
            if not handing.is_set() and self._gate.should_give():
                self._log.info("sink.handing_over", action="finishing the deliveries in hand")
                handing.set()
