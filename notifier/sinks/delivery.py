"""The delivery engine: a schedule's due batches through one sink, a few at a time.

The same engine serves the worker (``worker.SinkWorker``, which feeds it from a consumer group
and records outcomes in Redis) and the commands that deliver by hand (``redeliver``: ``replay``
and ``dlq redrive``), so there is one way events are ordered, retried and given up on.

For each finished delivery: the schedule ``decide``\\ s what the outcome means, the ``Ledger``
records it where it must be kept (for the worker: dead letters, retry states, acks), and only
then does the schedule ``settle`` it. A ledger that fails ends the run with its error: what
was not recorded was not settled either, and is read again by whoever delivers next.
"""

from __future__ import annotations

import asyncio
import time
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
        self._inflight: set[asyncio.Task[None]] = set()
        self._running = 0  # deliveries not finished yet; counted down before the wake-up
        self._wake = asyncio.Event()
        self._failing = False
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
        """Hand an event to the schedule (see ``Schedule.admit``) and wake the loop."""
        self.schedule.admit(
            event,
            self._clock(),
            attempts=attempts,
            not_before=not_before,
            status=status,
            reason=reason,
        )
        self._wake.set()

    def count_filtered(self) -> None:
        """An event the sink does not take (acknowledged by the caller)."""
        self._control.filtered += 1
        self._counters["filtered"].inc()

    async def run(
        self, *, may_start: Callable[[], bool] = lambda: True, until_idle: bool = False
    ) -> None:
        """Start deliveries as they fall due until cancelled.

        Returns when ``may_start()`` turns false (the worker's lease was not renewed in time),
        or with ``until_idle`` once nothing is held or in flight; raises a ledger failure.
        """
        schedule = self.schedule
        while True:
            if self.failure is not None:
                raise self.failure
            if until_idle and schedule.size == 0 and not self._running:
                return
            if not may_start():
                return
            paused = self._control.paused is not None
            if not paused:
                for batch in schedule.due(self._clock(), self._concurrency - self._running):
                    self._start(batch)
            free = self._concurrency - self._running
            if paused:  # until the operator resumes, or a delivery in hand finishes (or fails)
                self._wake.clear()
                await _either(self._control.resumed, self._wake)
                continue
            # Waiting for a slot, a time or an admission: each sets the wake-up (no task made).
            deadline = None if free <= 0 else schedule.next_deadline()
            timeout = None if deadline is None else max(deadline - self._clock(), 0.0)
            if timeout != 0.0:
                self._wake.clear()
                await wait_event(self._wake, timeout)

    async def drain(self) -> None:
        """Wait for the deliveries in hand; their outcomes are recorded."""
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)

    def _start(self, batch: Batch) -> None:
        self._running += 1
        task = asyncio.create_task(self._deliver(batch))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def _deliver(self, batch: Batch) -> None:
        started = self._clock()
        try:
            try:
                outcome: Outcome = await self._sink.deliver([item.event for item in batch.items])
            except Exception as exc:  # noqa: BLE001 - a sink that raises: retry, never lose
                self._log.exception("sink.deliver_raised", error=f"{type(exc).__name__}: {exc}")
                outcome = Retry(f"the sink raised {type(exc).__name__}")
            took = self._clock() - started
            self._duration.observe(took)
            decision = self.schedule.decide(batch, outcome, self._clock())
            try:
                await self._ledger.record(decision)
            except Exception as exc:  # noqa: BLE001 - kept for run() to raise
                self.failure = exc  # the batch stays unsettled: nothing of it is lost
                return
            self.schedule.settle(decision)
            self._account(decision, took)
        finally:
            self._running -= 1
            self._wake.set()
            await self._control.changed()

    def _account(self, decision: Decision, took: float) -> None:
        """Counters and log lines of a settled decision."""
        outcome, control = decision.outcome, self._control
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
