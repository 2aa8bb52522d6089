"""Delivering one sink's events from one cluster stream (SPEC section 5).

- **At least once.** An entry is acknowledged only once it is delivered, filtered out, or
  dead-lettered. A worker that dies leaves its entries pending; the next one claims them.
- **One worker per (sink, cluster) at a time**, under a lease: per-viewer order cannot hold if
  two consumers split a stream. Replicas stand by and take over when the lease runs out,
  claiming the dead worker's entries once they have been idle longer than a delivery can take.
- **Per viewer, in stream order.** Each viewer has a queue; only its oldest event is ever
  in flight or waiting for a retry, so a later event waits, and other viewers are not held up.
- **Retries** follow the sink's schedule with +-20% jitter, never before ``Retry-After``;
  the state of a retry is saved in Redis, so a new worker carries on where the last stopped.
  A permanent failure or an exhausted schedule dead-letters the event with the reason.
- **Pause.** A sink whose endpoint is gone (410, a revoked Slack webhook) stops delivering,
  says so loudly, and keeps its events until an operator resumes it (SIGHUP, or a restart).
- **Bounded**: at most ``backlog`` entries in memory, ``concurrency`` deliveries in flight,
  acknowledgements batched.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import heapq
import itertools
import random
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog
from redis.exceptions import RedisError

from notifier._aio import wait_event
from notifier.detect.lease import Lease
from notifier.metrics import Metrics
from notifier.sinks.base import Delivered, Failed, Retry, UnreadableEvent, decode_event
from notifier.sinks.stream import RetryState, SinkStream

if TYPE_CHECKING:
    from collections.abc import Callable, Hashable, Sequence

    from notifier.keys import ClusterKeys
    from notifier.redis_client import AnyRedis
    from notifier.sinks.base import Event, Outcome, Sink
    from notifier.sinks.settings import SinkBaseSettings

__all__ = ["SinkControl", "SinkWorker", "matches"]

REDIS_ERRORS = (RedisError, OSError, TimeoutError)
ACK_BATCH = 256
ACK_INTERVAL = 0.02
READ_COUNT = 500
READ_BLOCK_MS = 1000
JITTER = 0.2
TRIM_CHECK_INTERVAL = 5.0


def matches(settings: SinkBaseSettings, event: Event) -> bool:
    """Does the sink take this event (its ``events`` and ``filter``)?"""
    if settings.events is not None and event.type not in settings.events:
        return False
    f = settings.filter
    if f.clusters and event.cluster not in f.clusters:
        return False
    if f.stream_keys and not (
        event.stream_key is not None
        and any(fnmatch.fnmatchcase(event.stream_key, pattern) for pattern in f.stream_keys)
    ):
        return False
    if f.application_ids and event.application_id not in f.application_ids:
        return False
    if f.harness_types and event.harness_type not in f.harness_types:
        return False
    return not (
        f.countries and (event.country or "").upper() not in {c.upper() for c in f.countries}
    )


class SinkControl:
    """State one sink's workers share: paused or not, and the counters."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.paused: str | None = None
        self.resumed = asyncio.Event()
        self.delivered = 0
        self.retried = 0
        self.dead_lettered = 0
        self.filtered = 0
        self._changed = asyncio.Condition()

    async def changed(self) -> None:
        """Tell whoever waits in ``wait_until`` that a counter moved."""
        async with self._changed:
            self._changed.notify_all()

    async def wait_until(self, predicate: Callable[[SinkControl], bool]) -> None:
        """Until ``predicate(self)`` holds (re-checked whenever a counter moves)."""
        async with self._changed:
            await self._changed.wait_for(lambda: predicate(self))

    def pause(self, reason: str) -> bool:
        """Pause (once); True if this call paused it."""
        if self.paused is not None:
            return False
        self.paused = reason
        self.resumed.clear()
        return True

    def resume(self) -> None:
        """An operator says the endpoint is fixed."""
        self.paused = None
        self.resumed.set()


@dataclass(slots=True, eq=False)  # identity: "is this item in that batch"
class _Pending:
    event: Event
    fields: dict[bytes, bytes]
    attempts: int = 0
    not_before: float = 0.0  # monotonic
    status: int | None = None
    reason: str = ""


@dataclass(slots=True)
class _Batch:
    started: float
    items: list[_Pending] = field(default_factory=list)


class SinkWorker:
    """Delivers the events of one cluster stream to one sink. Pass in the sink and Redis."""

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
    ) -> None:
        self._sink = sink
        self._metrics = metrics or Metrics()
        self._counters = {
            outcome: self._metrics.deliveries.labels(settings.name, outcome)
            for outcome in ("delivered", "retried", "failed", "paused", "dead_lettered", "filtered")
        }
        self._duration = self._metrics.delivery_duration.labels(settings.name)
        self._settings = settings
        self._control = control
        self._cluster = cluster
        self._owner = owner
        self._stream = SinkStream(redis, keys, settings.name, maxlen=maxlen)
        self._lease = Lease(
            redis,
            keys.sink_lease(settings.name),
            keys.sink_fence(settings.name),
            owner,
            ttl=lease_ttl,
        )
        self._lease_ttl = lease_ttl
        self._claim_idle = claim_idle
        self._concurrency = concurrency
        self._backlog_limit = backlog
        self._clock = clock
        self._wall_clock = wall_clock
        self._rng = rng or random.Random()
        self._batching = sink.batching
        self._schedule = settings.retry.schedule
        self._log = structlog.get_logger("notifier.sink").bind(sink=settings.name, cluster=cluster)
        self._redis_ok = True
        self.lease_valid_until = 0.0
        self._trim_reported = False
        self._failing = False

    # --- leadership ------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver while holding the (sink, cluster) lease, until ``stop``."""
        try:
            while not stop.is_set():
                try:
                    if await self._lease.acquire():
                        self._redis_state(ok=True)
                        await self._lead(stop)
                    elif await _wait(stop, self._lease_ttl / 3):
                        return
                except REDIS_ERRORS as exc:
                    self._redis_state(ok=False, error=exc)
                    self._lease.forget()
                    if await _wait(stop, 1.0):
                        return
        finally:
            with contextlib.suppress(*REDIS_ERRORS):
                await self._lease.release()

    async def _lead(self, stop: asyncio.Event) -> None:
        self._log.info("sink.leading", lease=self._lease.value)
        self.lease_valid_until = self._clock() + self._lease_ttl
        await self._stream.ensure_group()
        if not await self._take_over(stop) or stop.is_set():
            return
        run = _Leadership(self, stop)
        await run.serve()

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
                if await _wait(stop, min(self._lease_ttl / 3, deadline - self._clock())):
                    return False
                if not await self._renew():
                    self._log.info("sink.lease_lost_while_waiting")
                    return False
        return False

    def _delivery_state(self, outcome: Outcome) -> None:
        """One log line when deliveries start failing and one when they work again."""
        ok = not isinstance(outcome, Retry)
        if ok and self._failing:
            self._log.info("sink.recovered")
        elif isinstance(outcome, Retry) and not self._failing:
            self._log.warning(
                "sink.failing",
                reason=outcome.reason,
                status=outcome.status,
                effect="events are retried on the schedule",
            )
        self._failing = not ok

    async def _check_trimmed(self) -> None:
        """Say loudly when the stream was trimmed past events this sink never read."""
        unread_lost = await self._stream.trimmed_unread()
        if unread_lost and not self._trim_reported:
            self._metrics.deliveries.labels(self._settings.name, "trimmed_unread").inc()
            self._log.error(
                "sink.events_trimmed_unread",
                hint="the stream was trimmed (streams.maxlen) past events this sink had not"
                " read: they are gone for it; raise streams.maxlen or keep its workers running",
            )
        self._trim_reported = unread_lost

    def _redis_state(self, *, ok: bool, error: BaseException | None = None) -> None:
        if ok and not self._redis_ok:
            self._log.info("sink.redis_recovered")
        elif not ok and self._redis_ok:
            self._log.warning("sink.redis_unavailable", error=" ".join(str(error).split())[:200])
        self._redis_ok = ok

    def _retry_delay(self, attempts: int, after: float | None) -> float:
        delay = self._schedule[attempts] * self._rng.uniform(1 - JITTER, 1 + JITTER)
        return max(delay, after or 0.0)


class _Leadership:
    """Everything that lives while one worker holds the lease: queues, timers, deliveries."""

    def __init__(self, worker: SinkWorker, stop: asyncio.Event) -> None:
        self.w = worker
        self.stop = stop
        self.lost = asyncio.Event()
        self.wake = asyncio.Event()
        self.queues: dict[str, deque[_Pending]] = {}
        self.timers: list[tuple[float, int, str]] = []  # (not_before, tiebreak, viewer)
        self.batches: dict[Hashable, _Batch] = {}  # filling up
        self.ready: deque[_Batch] = deque()  # full or due, waiting for a delivery slot
        self.busy: set[str] = set()  # viewers whose head is in flight or batched
        self.in_memory = 0
        self.space = asyncio.Event()
        self.space.set()
        self.inflight: set[asyncio.Task[None]] = set()
        self.slots = asyncio.Semaphore(worker._concurrency)
        self.acks: list[str] = []
        self.acked_retries: list[str] = []
        self.ack_wanted = asyncio.Event()
        self.tiebreak = itertools.count()
        self.failure: BaseException | None = None
        self.next_trim_check = 0.0
        self.closing = False

    def done(self) -> bool:
        return self.stop.is_set() or self.lost.is_set()

    async def serve(self) -> None:
        tasks = [
            asyncio.create_task(self._read(), name="read"),
            asyncio.create_task(self._dispatch(), name="dispatch"),
            asyncio.create_task(self._acknowledge(), name="ack"),
            asyncio.create_task(self._keep_lease(), name="lease"),
        ]
        stopper = asyncio.create_task(self._until_done())
        try:
            finished, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
            for task in finished:
                if task is not stopper and not task.cancelled() and task.exception():
                    raise task.exception()  # type: ignore[misc]
        finally:
            self.lost.set()
            for task in tasks[:2]:
                task.cancel()
            await asyncio.gather(*tasks[:2], return_exceptions=True)
            if self.inflight:  # finish the deliveries in hand; their outcomes are acknowledged
                await asyncio.gather(*self.inflight, return_exceptions=True)
            self.closing = True
            self.ack_wanted.set()
            for task in tasks[2:]:
                task.cancel()
            await asyncio.gather(*tasks[2:], return_exceptions=True)
            stopper.cancel()
            with contextlib.suppress(*REDIS_ERRORS):
                await self._flush_acks()
        if self.failure is not None:
            raise self.failure

    async def _until_done(self) -> None:
        stop = asyncio.create_task(self.stop.wait())
        lost = asyncio.create_task(self.lost.wait())
        try:
            await asyncio.wait([stop, lost], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            lost.cancel()

    # --- reading ---------------------------------------------------------------------------------

    async def _read(self) -> None:
        w = self.w
        cursor = "0-0"  # first this consumer's pending entries (claimed ones included), in order
        while not self.done():
            if self.in_memory > w._backlog_limit - min(READ_COUNT, w._backlog_limit // 2):
                # Refill only when a good read fits: a handful of freed slots is not worth a
                # round trip per delivery.
                self.space.clear()
                await self.space.wait()
                continue
            count = min(READ_COUNT, w._backlog_limit - self.in_memory)
            if cursor != ">":
                entries = await w._stream.read(w._owner, cursor, count, None)
                if not entries:
                    cursor = ">"
                    continue
                cursor = entries[-1][0]
                states = await w._stream.retry_states([e for e, _ in entries])
            else:
                if w._clock() >= self.next_trim_check:
                    await w._check_trimmed()
                    self.next_trim_check = w._clock() + TRIM_CHECK_INTERVAL
                entries = await w._stream.read(w._owner, ">", count, READ_BLOCK_MS)
                states = {}
            for entry_id, fields in entries:
                await self._admit(entry_id, fields, states.get(entry_id))

    async def _admit(
        self, entry_id: str, fields: dict[bytes, bytes], state: RetryState | None
    ) -> None:
        w = self.w
        try:
            event = decode_event(w._cluster, entry_id, fields)
        except UnreadableEvent as exc:
            w._log.error("sink.unreadable_event", entry=entry_id, error=str(exc))
            await w._stream.dead_letter(
                entry_id, fields, reason=f"unreadable: {exc}", attempts=0, status=None
            )
            w._control.dead_lettered += 1
            return
        if not _matches(w, event):
            w._control.filtered += 1
            w._counters["filtered"].inc()
            self._ack(entry_id, retried=state is not None)
            await w._control.changed()
            return
        pending = _Pending(event=event, fields=fields)
        if state is not None:
            pending.attempts, pending.status, pending.reason = (
                state.attempts,
                state.status,
                state.reason,
            )
            pending.not_before = w._clock() + max(0.0, state.next_at - w._wall_clock())
        else:
            pending.not_before = w._clock() + w._retry_delay(0, None)
        queue = self.queues.setdefault(event.subject, deque())
        queue.append(pending)
        self.in_memory += 1
        if len(queue) == 1:
            self._arm(event.subject, pending.not_before)

    # --- scheduling ------------------------------------------------------------------------------

    def _arm(self, viewer: str, when: float) -> None:
        heapq.heappush(self.timers, (when, next(self.tiebreak), viewer))
        self.wake.set()

    async def _dispatch(self) -> None:
        w = self.w
        batching = w._batching
        while not self.done():
            now = w._clock()
            paused = w._control.paused is not None
            if not paused:
                self._batch_due_heads(now)
            for key in [k for k, b in self.batches.items() if now - b.started >= batching.wait]:
                self.ready.append(self.batches.pop(key))
            if w._clock() >= w.lease_valid_until:  # not renewed in time: another may lead
                self.lost.set()
                return
            while self.ready and not self.slots.locked() and w._control.paused is None:
                await self.slots.acquire()
                task = asyncio.create_task(self._deliver(self.ready.popleft().items))
                self.inflight.add(task)
                task.add_done_callback(self.inflight.discard)
            deadline = self._next_deadline(paused)
            self.wake.clear()
            waiters = [asyncio.ensure_future(self.wake.wait())]
            if paused:
                waiters.append(asyncio.ensure_future(w._control.resumed.wait()))
            timeout = None if deadline is None else max(deadline - w._clock(), 0.0)
            try:
                await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()

    def _batch_due_heads(self, now: float) -> None:
        """Move every viewer whose oldest event is due into a batch (with its followers)."""
        batching = self.w._batching
        while self.timers and self.timers[0][0] <= now:
            _, _, viewer = heapq.heappop(self.timers)
            queue = self.queues.get(viewer)
            if not queue or viewer in self.busy:
                continue
            head = queue[0]
            if head.not_before > now:  # re-armed later
                self._arm(viewer, head.not_before)
                continue
            self.busy.add(viewer)
            key = batching.key(head.event) if batching.key else None
            batch = self.batches.setdefault(key, _Batch(started=now))
            batch.items.append(head)
            for follower in itertools.islice(queue, 1, None):  # the viewer's next events,
                if (  # in order, may ride along: they would wait for the head anyway
                    len(batch.items) >= batching.size
                    or follower.not_before > now
                    or (batching.key and batching.key(follower.event) != key)
                ):
                    break
                batch.items.append(follower)
            if len(batch.items) >= batching.size:
                self.ready.append(self.batches.pop(key))

    def _next_deadline(self, paused: bool) -> float | None:
        if self.ready or paused:
            return None  # waiting for a delivery slot: a finishing delivery wakes us
        wait = self.w._batching.wait
        times = [batch.started + wait for batch in self.batches.values()]
        if self.timers and not paused:
            times.append(self.timers[0][0])
        return min(times) if times else None

    # --- delivering ------------------------------------------------------------------------------

    async def _deliver(self, items: list[_Pending]) -> None:
        w = self.w
        started = w._clock()
        try:
            try:
                outcome: Outcome = await w._sink.deliver([p.event for p in items])
            except Exception as exc:  # noqa: BLE001 - a sink that raises: retry, never lose
                w._log.exception("sink.deliver_raised", error=f"{type(exc).__name__}: {exc}")
                outcome = Retry(f"the sink raised {type(exc).__name__}")
            w._duration.observe(w._clock() - started)
            await self._settle(items, outcome, w._clock() - started)
        except REDIS_ERRORS as exc:  # the outcome could not be recorded: end this leadership;
            self.failure = exc  # the entries stay pending and are read again
            self.lost.set()
        finally:
            self.slots.release()
            self.wake.set()
            await w._control.changed()

    async def _settle(self, items: list[_Pending], outcome: Outcome, took: float) -> None:
        """Record the outcome: first what Redis must hold, then, with no await in between,
        what the queues hold (so the dispatcher never sees a half-settled batch)."""
        w = self.w
        control = w._control
        w._counters[_outcome_name(outcome)].inc(len(items))
        w._delivery_state(outcome)
        if isinstance(outcome, Delivered):
            control.delivered += len(items)
            self._complete(done=items, acked=(), retried=())
            return
        if isinstance(outcome, Failed) and outcome.pause:
            for item in items:  # no attempt is used up: the events wait for the operator
                item.status, item.reason = outcome.status, outcome.reason
            self._complete(done=(), acked=(), retried=items)
            w._metrics.sink_paused.labels(w._settings.name).set(1)
            if control.pause(outcome.reason):
                w._log.error(
                    "sink.paused",
                    reason=outcome.reason,
                    status=outcome.status,
                    action="fix the endpoint, then resume (SIGHUP) or restart",
                )
            return
        dead: list[_Pending] = []
        again: list[_Pending] = []
        counted = not (isinstance(outcome, Retry) and not outcome.counted)
        for item in items:
            item.attempts += 1 if counted else 0
            item.status, item.reason = outcome.status, outcome.reason
            if isinstance(outcome, Failed) or item.attempts >= len(w._schedule):
                why = (
                    outcome.reason
                    if isinstance(outcome, Failed)
                    else f"gave up after {item.attempts} attempts: {outcome.reason}"
                )
                await w._stream.dead_letter(
                    item.event.entry_id,
                    item.fields,
                    reason=why,
                    attempts=item.attempts,
                    status=outcome.status,
                )
                control.dead_lettered += 1
                w._counters["dead_lettered"].inc()
                w._log.warning(
                    "sink.dead_lettered",
                    event_id=item.event.id,
                    reason=why,
                    attempts=item.attempts,
                    status=outcome.status,
                )
                dead.append(item)
                continue
            delay = w._retry_delay(
                item.attempts, outcome.after if isinstance(outcome, Retry) else None
            )
            item.not_before = w._clock() + delay
            await w._stream.save_retry(
                item.event.entry_id,
                RetryState(
                    attempts=item.attempts,
                    status=outcome.status,
                    next_at=w._wall_clock() + delay,
                    reason=outcome.reason,
                ),
            )
            control.retried += 1
            w._log.debug(
                "sink.retry_scheduled",
                event_id=item.event.id,
                attempt=item.attempts,
                status=outcome.status,
                reason=outcome.reason,
                delay=round(delay, 2),
                took=round(took, 3),
            )
            again.append(item)
        if len(again) > 1:  # the batch stays together: one time for all of it
            latest = max(item.not_before for item in again)
            for item in again:
                item.not_before = latest
        self._complete(done=(), acked=dead, retried=again)

    def _complete(
        self,
        *,
        done: Sequence[_Pending],
        acked: Sequence[_Pending],
        retried: Sequence[_Pending],
    ) -> None:
        """Final items leave their viewer's queue (in order: they are its oldest); each
        viewer touched gets its next event armed. Runs without awaiting."""
        viewers: dict[str, None] = {}
        for item in (*done, *acked):
            viewer = item.event.subject
            if item in done:
                self._ack(item.event.entry_id, retried=item.attempts > 0)
            queue = self.queues[viewer]
            queue.popleft()  # final items of a viewer are always at the front, in order
            self.in_memory -= 1
            viewers[viewer] = None
        for item in retried:
            viewers[item.event.subject] = None
        if done or acked:
            self.space.set()
        now = self.w._clock()
        for viewer in viewers:
            self.busy.discard(viewer)
            remaining = self.queues.get(viewer)
            if not remaining:
                self.queues.pop(viewer, None)
                continue
            head = remaining[0]
            if head not in retried:
                head.not_before = max(head.not_before, now)
            self._arm(viewer, head.not_before)

    # --- acknowledging and the lease ------------------------------------------------------------

    def _ack(self, entry_id: str, *, retried: bool) -> None:
        self.acks.append(entry_id)
        if retried:
            self.acked_retries.append(entry_id)
        if len(self.acks) >= ACK_BATCH:
            self.ack_wanted.set()

    async def _acknowledge(self) -> None:
        while not self.closing:
            await wait_event(self.ack_wanted, ACK_INTERVAL)
            self.ack_wanted.clear()
            await self._flush_acks()

    async def _flush_acks(self) -> None:
        if not self.acks:
            return
        acks, retried = self.acks, self.acked_retries
        self.acks, self.acked_retries = [], []
        try:
            await self.w._stream.ack(acks, retried)
        except BaseException:
            self.acks[:0], self.acked_retries[:0] = acks, retried  # try again next time
            raise

    async def _keep_lease(self) -> None:
        w = self.w
        while not self.done():
            if await _wait(self.stop, w._lease_ttl / 3):
                return
            if not await w._renew():
                w._log.warning("sink.lease_lost", action="another worker delivers now")
                self.lost.set()
                return


def _outcome_name(outcome: Outcome) -> str:
    if isinstance(outcome, Delivered):
        return "delivered"
    if isinstance(outcome, Failed):
        return "paused" if outcome.pause else "failed"
    return "retried"


def _matches(worker: SinkWorker, event: Event) -> bool:
    return matches(worker._settings, event)


_wait = wait_event
