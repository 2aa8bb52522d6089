"""The delivery engine: the schedule's batches through a sink, with a ledger, in asyncio."""

from __future__ import annotations

import asyncio
import random
from typing import TYPE_CHECKING

import pytest

from notifier.events import Event
from notifier.metrics import Metrics
from notifier.sinks.base import Batching, Delivered, Failed, Outcome, Retry
from notifier.sinks.control import SinkControl
from notifier.sinks.delivery import DeliveryEngine
from notifier.sinks.schedule import RetryPolicy, Schedule

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from prometheus_client.metrics import MetricWrapperBase

    from notifier.sinks.schedule import Decision

pytestmark = pytest.mark.timeout(20)


def event(n: int, viewer: str) -> Event:
    return Event("c", f"{n}-0", f"e{n}", "viewer.connected", viewer, n, b"{}")


class ScriptedSink:
    """Answers with ``answer(events)``, after yielding to the loop; counts calls in flight."""

    def __init__(self, answer: Callable[[Sequence[Event]], Outcome] | None = None) -> None:
        self.answer = answer or (lambda _: Delivered())
        self.inflight = 0
        self.most_inflight = 0
        self.calls: list[list[str]] = []

    @property
    def batching(self) -> Batching:
        return Batching()

    async def deliver(self, events: Sequence[Event]) -> Outcome:
        self.inflight += 1
        self.most_inflight = max(self.most_inflight, self.inflight)
        await asyncio.sleep(0)
        self.calls.append([e.id for e in events])
        self.inflight -= 1
        return self.answer(events)

    async def aclose(self) -> None:
        """Nothing to close."""


class MemoryLedger:
    """Keeps decisions; can be told to fail."""

    def __init__(self) -> None:
        self.decisions: list[Decision] = []
        self.fail_with: Exception | None = None

    async def record(self, decision: Decision) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.decisions.append(decision)


def engine(
    sink: ScriptedSink,
    ledger: MemoryLedger,
    *,
    concurrency: int,
    control: SinkControl | None = None,
    policy: RetryPolicy | None = None,
) -> DeliveryEngine:
    schedule = Schedule(
        sink.batching,
        policy or RetryPolicy(delays=(0.0, 0.0, 0.0), jitter=0.0),
        random.Random(1),
        capacity=1000,
    )
    return DeliveryEngine(
        sink, schedule, ledger, control or SinkControl("t"), concurrency=concurrency
    )


async def test_at_most_concurrency_deliveries_and_each_viewer_in_order() -> None:
    """Many viewers, concurrency 3: never more than 3 calls at once, every event once, in order."""
    sink, ledger = ScriptedSink(), MemoryLedger()
    run = engine(sink, ledger, concurrency=3)
    for n in range(60):
        run.admit(event(n, f"v{n % 7}"))
    await run.run(until_idle=True)
    assert sink.most_inflight == 3
    delivered = [i.event for d in ledger.decisions for i in d.delivered]
    assert sorted(e.id for e in delivered) == sorted(f"e{n}" for n in range(60))
    for v in range(7):
        mine = [e.sequence for e in delivered if e.subject == f"v{v}"]
        assert mine == sorted(mine)


async def test_one_slot_never_stalls() -> None:
    """With concurrency 1 a finished delivery frees its slot before the loop looks again."""
    sink, ledger = ScriptedSink(), MemoryLedger()
    run = engine(sink, ledger, concurrency=1)
    for n in range(200):
        run.admit(event(n, f"v{n % 3}"))
    await asyncio.wait_for(run.run(until_idle=True), 5)
    assert len(sink.calls) == 200


async def test_retries_then_gives_up_and_the_viewer_moves_on() -> None:
    """A failing head is retried on the schedule, then dead; the viewer's next event goes."""
    sink = ScriptedSink(lambda events: Retry("503") if events[0].id == "e0" else Delivered())
    ledger = MemoryLedger()
    run = engine(sink, ledger, concurrency=2)
    run.admit(event(0, "a"))
    run.admit(event(1, "a"))
    await run.run(until_idle=True)
    assert sink.calls == [["e0"], ["e0"], ["e0"], ["e1"]]
    (dead,) = [d for decision in ledger.decisions for d in decision.dead]
    assert (dead.item.event.id, dead.attempts) == ("e0", 3)


async def test_a_ledger_that_fails_ends_the_run_and_settles_nothing() -> None:
    """The error comes out of run(); the batch stays held, to be read again by whoever leads."""
    sink, ledger = ScriptedSink(), MemoryLedger()
    ledger.fail_with = ConnectionError("redis went away")
    run = engine(sink, ledger, concurrency=2)
    run.admit(event(0, "a"))
    with pytest.raises(ConnectionError, match="redis went away"):
        await run.run()
    assert run.schedule.size == 1
    assert ledger.decisions == []


async def test_a_pause_holds_everything_until_resumed() -> None:
    """410 pauses: no attempt is used and nothing more is sent until the operator resumes."""
    gone = True
    sink = ScriptedSink(lambda _: Failed("410", status=410, pause=True) if gone else Delivered())
    control, ledger = SinkControl("t"), MemoryLedger()
    run = engine(sink, ledger, concurrency=4, control=control)
    for n in range(5):
        run.admit(event(n, f"v{n}"))
    task = asyncio.create_task(run.run(until_idle=True))
    await control.wait_until(lambda c: c.paused is not None)
    for _ in range(50):  # turns of the loop: anything that would wrongly go out goes out now
        await asyncio.sleep(0)
    calls_while_paused = len(sink.calls)
    assert calls_while_paused <= 4  # only what was already in flight when it paused
    assert run.schedule.size == 5
    gone = False
    control.resume()
    await asyncio.wait_for(task, 5)
    assert run.schedule.size == 0
    assert all(item.attempts == 0 for d in ledger.decisions for item in d.delivered)


class GatedSink(ScriptedSink):
    """Holds every call until ``gate`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.started = 0

    async def deliver(self, events: Sequence[Event]) -> Outcome:
        self.started += 1
        self.inflight += 1
        self.most_inflight = max(self.most_inflight, self.inflight)
        await self.gate.wait()
        self.calls.append([e.id for e in events])
        self.inflight -= 1
        return Delivered()


class EagerSink(ScriptedSink):
    """Answers without ever waiting (like writing to a pipe)."""

    async def deliver(self, events: Sequence[Event]) -> Outcome:
        self.calls.append([e.id for e in events])
        return Delivered()


async def test_long_lived_lanes_keep_the_limit_and_stop_after_the_batch_in_hand() -> None:
    """A cancelled run starts nothing new; the deliveries in flight finish and are recorded."""
    sink, ledger = GatedSink(), MemoryLedger()
    run = engine(sink, ledger, concurrency=3)
    for n in range(20):
        run.admit(event(n, f"v{n}"))
    task = asyncio.create_task(run.run())
    while sink.started < 3:
        await asyncio.sleep(0)
    for _ in range(20):  # turns of the loop: a fourth call would start now
        await asyncio.sleep(0)
    assert (sink.started, sink.most_inflight, run.busy) == (3, 3, True)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    sink.gate.set()
    await run.drain()
    assert sink.started == 3
    assert len(ledger.decisions) == 3
    assert run.schedule.size == 17
    assert not run.busy


async def test_an_idle_engine_picks_up_later_admissions_and_timers() -> None:
    """Lanes waiting idle are handed what is admitted later, and retries when they fall due."""
    answers: Iterator[Outcome] = iter([Retry("503"), Delivered(), Delivered()])
    sink, ledger = ScriptedSink(lambda _: next(answers)), MemoryLedger()
    policy = RetryPolicy(delays=(0.0, 0.05, 0.05), jitter=0.0)
    run = engine(sink, ledger, concurrency=2, policy=policy)
    task = asyncio.create_task(run.run())
    await asyncio.sleep(0)
    run.admit(event(1, "a"))
    run.admit(event(2, "b"))
    while len(sink.calls) < 3:  # e1 fails, e2 goes, e1 again after its delay
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await run.drain()
    assert sorted(map(tuple, sink.calls)) == [("e1",), ("e1",), ("e2",)]
    assert run.schedule.size == 0


async def test_a_sink_that_never_waits_still_lets_the_loop_turn() -> None:
    """Other tasks run while a long backlog goes through a sink that never suspends."""
    sink, ledger = EagerSink(), MemoryLedger()
    run = engine(sink, ledger, concurrency=2)
    for n in range(600):
        run.admit(event(n, f"v{n % 50}"))
    turns = 0

    async def ticker() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    other = asyncio.create_task(ticker())
    await run.run(until_idle=True)
    other.cancel()
    assert len(sink.calls) == 600
    assert turns >= 600 // 32  # a turn at least every YIELD_EVERY batches of each lane


async def test_metrics_and_waiters_see_every_delivery_although_reported_in_batches() -> None:
    """Counters, the duration histogram and ``wait_until`` waiters all catch up by the end."""
    metrics, control, ledger = Metrics(), SinkControl("t"), MemoryLedger()
    sink = ScriptedSink()
    schedule = Schedule(
        sink.batching, RetryPolicy(delays=(0.0,), jitter=0.0), random.Random(1), capacity=1000
    )
    run = DeliveryEngine(sink, schedule, ledger, control, concurrency=4, metrics=metrics)
    for n in range(101):
        run.admit(event(n, f"v{n % 9}"))
    waiter = asyncio.create_task(control.wait_until(lambda c: c.delivered == 101))
    await run.run(until_idle=True)
    await run.drain()
    await asyncio.wait_for(waiter, 5)
    assert _sample(metrics.deliveries, "_total", outcome="delivered") == 101
    assert _sample(metrics.delivery_duration, "_count") == 101


async def test_the_reader_waits_for_room_and_wakes_once_it_fits() -> None:
    """``wanted`` is 0 while the schedule is full, and wakes the reader once a read fits."""
    sink, ledger = GatedSink(), MemoryLedger()
    schedule = Schedule(
        sink.batching, RetryPolicy(delays=(0.0,), jitter=0.0), random.Random(1), capacity=10
    )
    run = DeliveryEngine(sink, schedule, ledger, SinkControl("t"), concurrency=10)
    for n in range(10):
        run.admit(event(n, f"v{n}"))
    reader = asyncio.create_task(run.wanted(4))
    task = asyncio.create_task(run.run())
    for _ in range(20):
        await asyncio.sleep(0)
    assert not reader.done()  # full: nothing fits
    sink.gate.set()
    assert await asyncio.wait_for(reader, 5) >= 4
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await run.drain()


def _sample(metric: MetricWrapperBase, suffix: str, **labels: str) -> float:
    """The value of one sample of sink ``t``, read the way a scrape reads it."""
    for family in metric.collect():
        for sample in family.samples:
            wanted = {"sink": "t", **labels}
            if sample.name.endswith(suffix) and wanted.items() <= sample.labels.items():
                return sample.value
    return 0.0
