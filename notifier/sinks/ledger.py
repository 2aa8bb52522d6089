"""What a sink worker keeps while it leads: the record of outcomes.

``RedisLedger`` is the delivery engine's ledger (dead letters moved, retry states saved, acks
queued, the lane's report told).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from notifier.events import DeadLetter
from notifier.sinks.base import Delivered, Retry
from notifier.sinks.stream import RetryState

if TYPE_CHECKING:
    from collections.abc import Callable

    from notifier.sinks.acks import AckBuffer
    from notifier.sinks.dead_letters import DeadLetters
    from notifier.sinks.lane import LaneReporter
    from notifier.sinks.schedule import Decision
    from notifier.sinks.stream import SinkStream

__all__ = ["RedisLedger"]


class RedisLedger:
    """The worker's record of outcomes: dead letters moved, retry states saved, acks queued,
    and the lane's report told (in memory: its write never holds up a delivery)."""

    def __init__(
        self,
        stream: SinkStream,
        letters: DeadLetters,
        acks: AckBuffer,
        wall_clock: Callable[[], float],
        reporter: LaneReporter,
    ) -> None:
        self._stream = stream
        self._letters = letters
        self._acks = acks
        self._wall_clock = wall_clock
        self._reporter = reporter

    async def record(self, decision: Decision) -> None:
        """Redis first; acks of delivered events go out with the next batch of acks."""
        outcome = decision.outcome
        if isinstance(outcome, Delivered):
            self._reporter.delivered()
        elif not isinstance(outcome, Retry) or outcome.counted:  # a rate limit is no failure
            self._reporter.failed(outcome.reason)
        if decision.dead or decision.retrying:
            await self._keep_failures(decision)
        for item in decision.delivered:  # a rate-limited retry used no attempt, but was saved
            self._acks.add(item.event.entry_id, retried=item.attempts > 0 or bool(item.reason))

    async def _keep_failures(self, decision: Decision) -> None:
        outcome = decision.outcome
        status = getattr(outcome, "status", None)
        reason = getattr(outcome, "reason", "")
        for dead in decision.dead:
            event = dead.item.event
            letter = DeadLetter.of(
                event,
                reason=dead.reason,
                attempts=dead.attempts,
                status=status,
                failed_at=self._letters.now(),
            )
            await self._letters.move(event.entry_id, letter)
        for retry in decision.retrying:
            next_at = self._wall_clock() + (retry.not_before - decision.now)
            await self._stream.save_retry(
                retry.item.event.entry_id,
                RetryState(attempts=retry.attempts, status=status, next_at=next_at, reason=reason),
            )
