"""The delivery engine: a schedule's due batches through one sink, a few at a time.

The same engine serves the worker (``worker.SinkWorker``, which feeds it from a consumer group
and records outcomes in Redis) and the commands that deliver by hand (``redeliver``: ``replay``
and ``dlq redrive``), so there is one way events are ordered, retried and given up on.

For each finished delivery: the schedule ``decide``\\ s what the outcome means, the ``Ledger``
records it where it must be kept (for the worker: dead letters, retry states, acks), and only
then does the schedule ``settle`` it. A ledger that fails ends the run with its error: what
was not recorded was not settled either, and is read again by whoever delivers next.

How it runs: ``run`` starts ``concurrency`` long-lived *lanes*, each delivering one batch at a
time, so at most ``concurrency`` deliveries are ever in flight. A lane that settles a batch takes
the next due one itself; one that finds nothing due waits idle, and ``run`` (the dispatcher)
hands it a batch when an admission, a retry time or a batch's wait makes one due. A backlog thus
costs no task and no extra turn of the event loop per delivery. When ``run`` ends (returns,
raises or is cancelled), idle lanes stop and busy ones stop after the batch in hand, whose
outcome is recorded; ``drain`` waits for them. A lane whose sink never waits lets the loop turn
every ``YIELD_EVERY`` batches.

Per-delivery bookkeeping is done a batch of deliveries at a time: the metrics (the delivered
counter and the duration histogram) get every ``REPORT_EVERY`` deliveries, and the control's
waiters are told every ``NOTIFY_EVERY``; both also whenever a lane runs out of work, so nothing
lags once the engine is idle. The reader waits for room with ``wanted``, woken once a read fits.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import TYPE_CHECKING, Protocol

import structlog

from notifier._aio import wait_event
from notifier.metrics import Metrics
from notifier.sinks.base import Delivered, Failed, Retry

if TYPE_CHECKING:
    from collections.abc import Callable

    from structlog.typing import FilteringBoundLogger

    from notifier.events import Event
    from notifier.sinks.base import Outcome, Sink
    from notifier.sinks.control import SinkControl
    from notifier.sinks.schedule import Batch, Decision, Schedule

__all__ = ["DeliveryEngine", "Ledger"]

OUTCOMES = ("delivered", "retried", "failed", "paused", "dead_lettered", "filtered")
YIELD_EVERY = 16  # batches a lane delivers back to back before it lets the loop turn once
REPORT_EVERY = 64  # deliveries timed and counted before the metrics get them (or a lane idles)
NOTIFY_EVERY = 16  # deliveries settled before the control's waiters are told (or a lane idles)


def _always() -> bool:
    return True


class Ledger(Protocol):
    """Where outcomes are kept before the schedule moves on."""

    async def record(self, decision: Decision) -> None:
        """Keep what ``decision`` says (raise if it cannot be kept)."""
        ...


class DeliveryEngine:
    """Delivers what a ``Schedule`` says is due, at most ``concurrency`` calls at once."""

    def __init__(
        self,
        sink: Sink,
        schedule: Schedule,
        ledger: Ledger,
        control: SinkControl,
        *,
        concurrency: int,
        metrics: Metrics | None = None,
        log: FilteringBoundLogger | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.schedule = schedule
        self._sink = sink
        self._ledger = ledger
        self._control = control
        self._concurrency = concurrency
        self._clock = clock
        self._log = log or structlog.get_logger("notifier.sink").bind(sink=control.name)
        metrics = metrics or Metrics()
        self._counters = {o: metrics.deliveries.labels(control.name, o) for o in OUTCOMES}
        self._duration = metrics.delivery_duration.labels(control.name)
        self._paused_gauge = metrics.sink_paused.labels(control.name)
        self._lanes: list[asyncio.Task[None]] = []
        self._idle: deque[asyncio.Future[Batch | None]] = deque()  # lanes waiting for a batch
        self._open = False  # lanes may take batches: only while run() runs
        self._may_start: Callable[[], bool] = _always
        self._running = 0  # batches taken and not settled yet
        self._wake = asyncio.Event()  # for the dispatcher: a lane went idle, or work came
        self._room: tuple[int, asyncio.Future[None]] | None = None  # a reader in wanted()
        self._failing = False
        self._unreported = 0  # deliveries not added to the metric yet (see _report)
        self._took: list[float] = []  # their durations, not observed by the histogram yet
        self._unnotified = 0  # deliveries settled since the control's waiters were told
        self.failure: BaseException | None = None

    @property
    def busy(self) -> bool:
        """True while any delivery is in flight."""
        return self._running > 0

    def admit(
        self,
        event: Event,
        *,
        attempts: int = 0,
        not_before: float | None = None,
        status: int | None = None,
        reason: str = "",
    ) -> None:
        """Hand an event to the schedule (see ``Schedule.admit``); an idle lane may take it."""
        self.schedule.admit(
            event,
            self._clock(),
            attempts=attempts,
            not_before=not_before,
            status=status,
            reason=reason,
        )
        if self._idle:
            self._wake.set()

    def count_filtered(self, count: int = 1) -> None:
        """Events the sink does not take (acknowledged by the caller)."""
        self._control.filtered += count
        self._counters["filtered"].inc(count)

    async def wanted(self, read_count: int) -> int:
        """How many entries to read next (``Schedule.wanted``), waiting while that is 0.

        A settled delivery that makes room ends the wait: the reader wakes once per read, not
        once per delivery.
        """
        wanted = self.schedule.wanted(read_count)
        while not wanted:
            room = asyncio.get_running_loop().create_future()
            self._room = (read_count, room)
            try:
                await room
            finally:
                self._room = None
            wanted = self.schedule.wanted(read_count)
        return wanted

    async def run(
        self, *, may_start: Callable[[], bool] = _always, until_idle: bool = False
    ) -> None:
        """Deliver batches as they fall due until cancelled.

        Returns when ``may_start()`` turns false (the worker's lease was not renewed in time),
        or with ``until_idle`` once nothing is held or in flight; raises a ledger failure.
        Either way no batch is started after it ends (see ``drain``).
        """
        schedule = self.schedule
        self._may_start = may_start
        self._open = True
        self._lanes = [lane for lane in self._lanes if not lane.done()]
        self._lanes += [
            asyncio.create_task(self._lane(), name=f"deliver-{n}")
            for n in range(len(self._lanes), self._concurrency)
        ]
        try:
            while True:
                if self.failure is not None:
                    raise self.failure
                if until_idle and schedule.size == 0 and not self._running:
                    return
                if not may_start():
                    return
                if self._control.paused is not None:  # until resumed, or a lane goes idle
                    self._wake.clear()
                    await _either(self._control.resumed, self._wake)
                    continue
                self._hand_out()
                # Only idle lanes wait for a time; busy ones look for themselves when done.
                deadline = schedule.next_deadline() if self._idle else None
                timeout = None if deadline is None else max(deadline - self._clock(), 0.0)
                if timeout != 0.0:
                    self._wake.clear()
                    await wait_event(self._wake, timeout)
        finally:
            self._close()

    async def drain(self) -> None:
        """Wait for the deliveries in hand (after ``run``); their outcomes are recorded."""
        self._close()
        if self._lanes:
            await asyncio.gather(*self._lanes, return_exceptions=True)
        self._report()
        if self._unnotified:
            self._unnotified = 0
            await self._control.changed()

    def _close(self) -> None:
        """No batch is taken any more: idle lanes end now, busy ones after their batch."""
        self._open = False
        while self._idle:
            waiting = self._idle.popleft()
            if not waiting.done():
                waiting.set_result(None)

    def _hand_out(self) -> None:
        """Give the due batches to idle lanes, oldest idle first."""
        idle = self._idle = deque(waiting for waiting in self._idle if not waiting.done())
        if idle:  # (a done one: its lane was cancelled while idle)
            for batch in self.schedule.due(self._clock(), len(idle)):
                self._running += 1
                idle.popleft().set_result(batch)

    def _take(self) -> Batch | None:
        """The next due batch for a lane that just finished, if one may start now."""
        if (
            not self._open
            or self.failure is not None
            or self._control.paused is not None
            or not self._may_start()
        ):
            return None
        due = self.schedule.due(self._clock(), 1)
        if not due:
            return None
        self._running += 1
        return due[0]

    async def _lane(self) -> None:
        """Deliver one batch after another; wait idle when none is due; end when closed."""
        loop = asyncio.get_running_loop()
        sink, clock = self._sink, self._clock
        streak = 0
        while True:
            batch = self._take()
            if batch is None:
                streak = 0
                self._report()
                if self._unnotified:  # before waiting; then look again, as that may wait
                    self._unnotified = 0
                    await self._control.changed()
                    continue
                if not self._open:
                    return
                waiting: asyncio.Future[Batch | None] = loop.create_future()
                self._idle.append(waiting)
                self._wake.set()
                batch = await waiting
                if batch is None:
                    return
            elif streak >= YIELD_EVERY:  # a sink that never waits must not hold the loop
                streak = 0
                await asyncio.sleep(0)
            streak += 1
            started = clock()
            try:
                try:
                    outcome: Outcome = await sink.deliver([item.event for item in batch.items])
                except Exception as exc:  # noqa: BLE001 - a sink that raises: retry, never lose
                    self._log.exception("sink.deliver_raised", error=f"{type(exc).__name__}: {exc}")
                    outcome = Retry(f"the sink raised {type(exc).__name__}")
                await self._finish(batch, outcome, started)
            except Exception as exc:  # noqa: BLE001 - a bug must not cost the lane
                self._log.exception("sink.delivery_crashed", error=f"{type(exc).__name__}: {exc}")
            finally:
                self._running -= 1
                self._settled()
            self._unnotified += 1
            if self._unnotified >= NOTIFY_EVERY:
                self._unnotified = 0
                await self._control.changed()

    async def _finish(self, batch: Batch, outcome: Outcome, started: float) -> None:
        """Decide what the outcome means, record it (the ledger), then settle and count it."""
        now = self._clock()
        took = now - started
        self._took.append(took)
        decision = self.schedule.decide(batch, outcome, now)
        try:
            await self._ledger.record(decision)
        except Exception as exc:  # noqa: BLE001 - kept for run() to raise
            self.failure = exc  # the batch stays unsettled: nothing of it is lost
            self._wake.set()
            return
        self.schedule.settle(decision)
        self._account(decision, took)

    def _settled(self) -> None:
        """After a delivery: wake a reader waiting for room, and the dispatcher if lanes idle
        (a settled batch can make other viewers' next events due)."""
        if self._room is not None:
            read_count, room = self._room
            if not room.done() and self.schedule.wanted(read_count) > 0:
                room.set_result(None)
        if self._idle:
            self._wake.set()

    def _account(self, decision: Decision, took: float) -> None:
        """Counters and log lines of a settled decision."""
        outcome, control = decision.outcome, self._control
        if len(self._took) >= REPORT_EVERY:
            self._report()
        if isinstance(outcome, Delivered):  # the usual case: counted, reported a batch at a time
            self._unreported += len(decision.delivered)
            control.delivered += len(decision.delivered)
            if self._failing:
                self._delivery_state(outcome)
            return  # nothing of a delivered batch is dead, retrying or paused
        self._counters[_outcome_name(outcome)].inc(len(decision.batch.items))
        self._delivery_state(outcome)
        control.delivered += len(decision.delivered)
        for dead in decision.dead:
            control.dead_lettered += 1
            self._counters["dead_lettered"].inc()
            self._log.warning(
                "sink.dead_lettered",
                event_id=dead.item.event.id,
                reason=dead.reason,
                attempts=dead.attempts,
                status=getattr(outcome, "status", None),
            )
        for retry in decision.retrying:
            control.retried += 1
            self._log.debug(
                "sink.retry_scheduled",
                event_id=retry.item.event.id,
                attempt=retry.attempts,
                status=getattr(outcome, "status", None),
                reason=getattr(outcome, "reason", ""),
                delay=round(retry.delay, 2),
                took=round(took, 3),
            )
        if decision.paused and isinstance(outcome, Failed):
            self._paused_gauge.set(1)
            if control.pause(outcome.reason):
                self._log.error(
                    "sink.paused",
                    reason=outcome.reason,
                    status=outcome.status,
                    action="fix the endpoint, then resume (SIGHUP) or restart",
                )

    def _report(self) -> None:
        """Hand the metrics what was timed and counted since the last report."""
        if self._took:
            observe = self._duration.observe
            for took in self._took:
                observe(took)
            self._took.clear()
        if self._unreported:
            self._counters["delivered"].inc(self._unreported)
            self._unreported = 0

    def _delivery_state(self, outcome: Outcome) -> None:
        """One log line when deliveries start failing and one when they work again.

        Only a delivery is a recovery: a permanent failure (dead-lettered) or a pause
        (``sink.paused`` says so) leaves the state as it was.
        """
        if isinstance(outcome, Delivered):
            if self._failing:
                self._log.info("sink.recovered")
            self._failing = False
        elif isinstance(outcome, Retry):
            if not self._failing:
                self._log.warning(
                    "sink.failing",
                    reason=outcome.reason,
                    status=outcome.status,
                    effect="events are retried on the schedule",
                )
            self._failing = True


async def _either(first: asyncio.Event, second: asyncio.Event) -> None:
    waiters = [asyncio.ensure_future(first.wait()), asyncio.ensure_future(second.wait())]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


def _outcome_name(outcome: Outcome) -> str:
    if isinstance(outcome, Delivered):
        return "delivered"
    if isinstance(outcome, Failed):
        return "paused" if outcome.pause else "failed"
    return "retried"
