"""The delivery engine: the schedule's batches through a sink, with a ledger, in asyncio."""

from __future__ import annotations

import asyncio
import random
from typing import TYPE_CHECKING

import pytest

from notifier.events import Event
from notifier.sinks.base import Batching, Delivered, Failed, Outcome, Retry
from notifier.sinks.control import SinkControl
from notifier.sinks.delivery import DeliveryEngine
from notifier.sinks.schedule import RetryPolicy, Schedule

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

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
