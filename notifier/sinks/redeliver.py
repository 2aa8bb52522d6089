"""Delivering by hand (``notifier replay``, ``notifier dlq redrive``) with the worker's engine.

The events go through the same ``Schedule`` and ``DeliveryEngine`` as the worker's, so they
keep per-viewer order, the sink's batching (a Slack replay is grouped per stream as live
events are) and its outcome rules. What differs is the policy (``BY_HAND``): a few quick
retries that honour ``Retry-After`` up to a minute, and an endpoint that is gone is a failure
to report rather than a pause to wait out (nobody is there to resume it).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from notifier.metrics import Metrics
from notifier.sinks.control import SinkControl
from notifier.sinks.delivery import DeliveryEngine
from notifier.sinks.schedule import RetryPolicy, Schedule

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from notifier.events import Event
    from notifier.sinks.base import Sink
    from notifier.sinks.schedule import Decision
    from notifier.sinks.settings import SinkBaseSettings

__all__ = ["BY_HAND", "Failure", "Progress", "redeliver"]

BY_HAND = RetryPolicy(delays=(0.0, 1.0, 5.0), max_after=60.0, pause=False)
"""Three attempts within seconds; ``Retry-After`` believed up to a minute; no pausing."""


@dataclass(frozen=True, slots=True)
class Failure:
    """An event that could not be delivered: the last reason and HTTP status."""

    event: Event
    reason: str
    status: int | None


class Progress(Protocol):
    """Told of outcomes as they come in, and once at the end (``notifier.commands.progress``
    draws a bar on a terminal, or prints a line every few seconds)."""

    def advance(self, *, delivered: int = 0, failed: int = 0) -> None:
        """Count outcomes."""
        ...

    def finish(self) -> None:
        """The delivery is over (done, failed, or interrupted): say how it went."""
        ...


class _HandLedger:
    """Outcomes of a delivery by hand: reported at once to the caller's callbacks."""

    def __init__(
        self,
        progress: Progress,
        on_delivered: Callable[[Sequence[Event]], Awaitable[None]] | None,
        on_failed: Callable[[Failure], Awaitable[None]] | None,
    ) -> None:
        self._progress = progress
        self._on_delivered = on_delivered
        self._on_failed = on_failed
        self.failures: list[Failure] = []

    async def record(self, decision: Decision) -> None:
        delivered = [item.event for item in decision.delivered]
        if delivered and self._on_delivered is not None:
            await self._on_delivered(delivered)
        status = getattr(decision.outcome, "status", None)
        for dead in decision.dead:
            failure = Failure(dead.item.event, dead.reason, status)
            self.failures.append(failure)
            if self._on_failed is not None:
                await self._on_failed(failure)
        self._progress.advance(delivered=len(delivered), failed=len(decision.dead))


async def redeliver(
    sink: Sink,
    settings: SinkBaseSettings,
    events: Sequence[Event],
    progress: Progress,
    *,
    on_delivered: Callable[[Sequence[Event]], Awaitable[None]] | None = None,
    on_failed: Callable[[Failure], Awaitable[None]] | None = None,
    policy: RetryPolicy = BY_HAND,
    rng: random.Random | None = None,
) -> list[Failure]:
    """Deliver ``events`` through ``sink`` (configured by ``settings``); returns what failed
    for good, in order. Concurrency is the sink's own (``delivery_needs``).

    ``on_delivered`` and ``on_failed`` run as outcomes come in (``dlq redrive`` removes a
    delivered dead letter at once, so an interrupted redrive does not send it again).
    """
    ledger = _HandLedger(progress, on_delivered, on_failed)
    schedule = Schedule(sink.batching, policy, rng or random.Random(), capacity=max(1, len(events)))
    engine = DeliveryEngine(
        sink,
        schedule,
        ledger,
        SinkControl(settings.name),
        concurrency=settings.delivery_needs().concurrency,
        metrics=Metrics(),
    )
    for event in events:
        engine.admit(event)
    try:
        await engine.run(until_idle=True)
    finally:
        await engine.drain()
        progress.finish()
    return ledger.failures
