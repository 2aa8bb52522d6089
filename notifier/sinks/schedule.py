"""The delivery schedule of one sink: which events go out next, as plain synchronous code.

No asyncio, no Redis, no clock of its own: the caller passes ``now`` (monotonic seconds) and a
seeded ``random.Random`` for the jitter, so every rule below can be tested over any sequence of
admissions, outcomes and times (``tests/test_schedule.py``).

- **Per viewer, in stream order.** Each viewer (the event's ``subject``) has a queue; only its
  oldest event can be due, so a later event never overtakes an earlier one that is waiting
  for a retry, and other viewers are not held up.
- **Batching.** A due head joins the filling batch of its ``Batching.key``, and the viewer's
  next queued events that are due too ride along behind it (they would wait for it anyway).
  A batch is ready when it holds ``size`` events or has waited ``wait`` seconds.
- **Outcomes in two steps.** ``decide`` says what an outcome means for each event of a batch
  (delivered, dead-lettered with a reason, retried at a time) without changing anything;
  the caller records that where it must (Redis), then ``settle`` applies it. Between the two
  nothing of the batch's viewers is due, so no one sees a half-settled batch.
- **Retries** follow ``RetryPolicy.delays`` with jitter, never before ``Retry-After``; a
  rate limit (``Retry(counted=False)``) uses up no attempt. An exhausted schedule or a
  permanent failure is final. A pause (``Failed(pause=True)``) uses up nothing: the events wait.
- **Bounded**: at most ``capacity`` events are held; ``wanted`` says how many to read next.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgspec

from notifier.sinks.base import Delivered, Failed, Retry

if TYPE_CHECKING:
    import random
    from collections.abc import Hashable, Iterable, Iterator

    from notifier.events import Event
    from notifier.sinks.base import Batching, Outcome

__all__ = ["Batch", "Dead", "Decision", "Item", "RetryPolicy", "Retrying", "Schedule"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """What a failed delivery means: when to try again, and when to give up.

    ``delays[n]`` is the wait before attempt ``n + 1`` (the first is usually 0), each with
    +-``jitter``; after ``len(delays)`` counted attempts the event is dead-lettered.
    ``max_after`` caps a receiver's ``Retry-After`` (None: believe it). With ``pause`` False
    (commands run by hand), an endpoint that is gone is a permanent failure instead of a pause.
    """

    delays: tuple[float, ...]
    jitter: float = 0.2
    max_after: float | None = None
    pause: bool = True

    def delay(self, attempts: int, after: float | None, rng: random.Random) -> float:
        """The wait before the next attempt, after ``attempts`` counted ones."""
        base = self.delays[min(attempts, len(self.delays) - 1)]
        delay = base * rng.uniform(1 - self.jitter, 1 + self.jitter) if base else 0.0
        if after is not None and self.max_after is not None:
            after = min(after, self.max_after)
        return max(delay, after or 0.0)


# The values below are msgspec structs made per event: built in C, and, as none can take part
# in a reference cycle, not tracked by the garbage collector (``gc=False``). A full schedule
# holds thousands of items; tracked, each collection would walk them all.


class Item(msgspec.Struct, eq=False, gc=False):  # eq: identity ("is it in that batch")
    """One event held by the schedule, with how far its delivery got."""

    event: Event
    attempts: int = 0
    not_before: float = 0.0  # monotonic
    status: int | None = None
    reason: str = ""


class Batch(msgspec.Struct, eq=False, gc=False):
    """Events that go out in one ``deliver`` call: heads of viewers and their followers."""

    started: float
    items: list[Item] = msgspec.field(default_factory=list)


class Retrying(msgspec.Struct, frozen=True, gc=False):
    """A retry decided for one item: its new attempt count and time."""

    item: Item
    attempts: int
    not_before: float
    delay: float


class Dead(msgspec.Struct, frozen=True, gc=False):
    """A final failure decided for one item: why, after how many attempts."""

    item: Item
    reason: str
    attempts: int


class Decision(msgspec.Struct, frozen=True, gc=False):
    """What one outcome means for the items of one batch (``Schedule.decide``).

    ``delivered`` and ``dead`` are final (``dead`` with the reason for the dead letter);
    ``retrying`` items go again at their time; ``paused`` items wait for the operator.
    """

    batch: Batch
    outcome: Outcome
    now: float
    delivered: tuple[Item, ...] = ()
    dead: tuple[Dead, ...] = ()
    retrying: tuple[Retrying, ...] = ()
    paused: tuple[Item, ...] = ()


class Schedule:
    """Per-viewer queues, retry timers and batches of one sink's delivery (see module doc)."""

    def __init__(
        self, batching: Batching, policy: RetryPolicy, rng: random.Random, *, capacity: int
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._batching = batching
        self._policy = policy
        self._rng = rng
        self.capacity = capacity
        self._queues: dict[str, deque[Item]] = {}
        self._timers: list[tuple[float, int, str]] = []  # (not_before, tiebreak, viewer)
        self._tiebreak = itertools.count()
        self._filling: dict[Hashable, Batch] = {}
        self._ready: deque[Batch] = deque()
        self._busy: set[str] = set()  # viewers whose head is batched or in flight
        self.size = 0

    # --- admission -----------------------------------------------------------------------------

    def wanted(self, read_count: int) -> int:
        """How many entries to read now: 0 until a good read fits (a few free slots are not
        worth a round trip each), else up to ``read_count``."""
        room = self.capacity - self.size
        return 0 if room < min(read_count, self.capacity // 2) else min(read_count, room)

    def admit(
        self,
        event: Event,
        now: float,
        *,
        attempts: int = 0,
        not_before: float | None = None,
        status: int | None = None,
        reason: str = "",
    ) -> Item:
        """Queue an event behind its viewer's earlier ones; ``ValueError`` when full.

        Without ``not_before`` it is due after the policy's first delay; a restored retry
        passes its saved attempts and time.
        """
        if self.size >= self.capacity:
            raise ValueError(f"the schedule holds {self.capacity} events already")
        if not_before is None:
            not_before = now + self._policy.delay(0, None, self._rng)
        item = Item(event, attempts, not_before, status, reason)
        queue = self._queues.get(event.subject)
        if queue is None:
            self._queues[event.subject] = deque((item,))
            self._arm(event.subject, not_before)
        else:
            queue.append(item)
            if len(queue) == 1:
                self._arm(event.subject, not_before)
        self.size += 1
        return item

    # --- what is due ---------------------------------------------------------------------------

    def due(self, now: float, limit: int) -> list[Batch]:
        """Up to ``limit`` batches ready to deliver now; their viewers stay busy until settled."""
        if self._timers and self._timers[0][0] <= now:
            self._batch_due_heads(now)
        if self._filling:
            wait = self._batching.wait
            for key in [k for k, b in self._filling.items() if b.started + wait <= now]:  # below
                self._ready.append(self._filling.pop(key))
        ready = self._ready
        if not ready:
            return []
        if limit == 1:
            return [ready.popleft()]
        out: list[Batch] = []
        while ready and len(out) < limit:
            out.append(ready.popleft())
        return out

    def next_deadline(self) -> float | None:
        """The earliest time ``due`` may return more; None when nothing waits for a time."""
        if self._ready:
            return float("-inf")
        times = [batch.started + self._batching.wait for batch in self._filling.values()]
        if self._timers:
            times.append(self._timers[0][0])
        return min(times) if times else None

    def _batch_due_heads(self, now: float) -> None:
        batching = self._batching
        while self._timers and self._timers[0][0] <= now:
            _, _, viewer = heapq.heappop(self._timers)
            queue = self._queues.get(viewer)
            if not queue or viewer in self._busy:
                continue
            head = queue[0]
            if head.not_before > now:  # re-armed later
                self._arm(viewer, head.not_before)
                continue
            self._busy.add(viewer)
            if batching.size == 1:  # a batch of one: ready as it is
                self._ready.append(Batch(now, [head]))
                continue
            key = batching.key(head.event) if batching.key else None
            batch = self._filling.setdefault(key, Batch(started=now))
            batch.items.append(head)
            for follower in itertools.islice(queue, 1, None):
                if (
                    len(batch.items) >= batching.size
                    or follower.not_before > now
                    or (batching.key and batching.key(follower.event) != key)
                ):
                    break
                batch.items.append(follower)
            if len(batch.items) >= batching.size:
                self._ready.append(self._filling.pop(key))

    def _arm(self, viewer: str, when: float) -> None:
        heapq.heappush(self._timers, (when, next(self._tiebreak), viewer))

    # --- outcomes ------------------------------------------------------------------------------

    def decide(self, batch: Batch, outcome: Outcome, now: float) -> Decision:
        """What ``outcome`` means for each item of ``batch``; changes nothing (see ``settle``)."""
        if isinstance(outcome, Delivered):
            return Decision(batch, outcome, now, delivered=tuple(batch.items))
        if isinstance(outcome, Failed) and outcome.pause and self._policy.pause:
            return Decision(batch, outcome, now, paused=tuple(batch.items))
        counted = not (isinstance(outcome, Retry) and not outcome.counted)
        after = outcome.after if isinstance(outcome, Retry) else None
        limit = len(self._policy.delays)
        dead: list[Dead] = []
        retrying: list[Retrying] = []
        held: set[str] = set()  # viewers with an item retrying: their later items wait too
        for item in batch.items:
            attempts = item.attempts + (1 if counted else 0)
            viewer = item.event.subject
            if viewer not in held and isinstance(outcome, Failed):
                dead.append(Dead(item, outcome.reason, attempts))
            elif viewer not in held and attempts >= limit:
                why = f"gave up after {attempts} attempts: {outcome.reason}"
                dead.append(Dead(item, why, attempts))
            else:
                held.add(viewer)
                delay = self._policy.delay(attempts, after, self._rng)
                retrying.append(Retrying(item, attempts, now + delay, delay))
        if len(retrying) > 1:  # the batch stays together: one time for all of it
            latest = max(r.not_before for r in retrying)
            retrying = [Retrying(r.item, r.attempts, latest, r.delay) for r in retrying]
        return Decision(batch, outcome, now, dead=tuple(dead), retrying=tuple(retrying))

    def settle(self, decision: Decision) -> None:
        """Apply a decision: final items leave their queues, the viewers' next events are armed."""
        if len(decision.delivered) == 1 and not (
            decision.dead or decision.retrying or decision.paused
        ):
            self._settle_one(decision.delivered[0], decision.now)
            return
        outcome = decision.outcome
        status = getattr(outcome, "status", None)
        reason = getattr(outcome, "reason", "")
        touched: dict[str, None] = {}
        for item in _final(decision):
            viewer = item.event.subject
            queue = self._queues[viewer]
            if queue[0] is item:
                queue.popleft()
            else:  # not the head: possible only for a malformed decision; keep the rest intact
                queue.remove(item)
            self.size -= 1
            touched[viewer] = None
        waiting: set[int] = set()
        for retry in decision.retrying:
            item = retry.item
            item.attempts, item.not_before = retry.attempts, retry.not_before
            item.status, item.reason = status, reason
            touched[item.event.subject] = None
            waiting.add(id(item))
        for item in decision.paused:
            item.status, item.reason = status, reason
            touched[item.event.subject] = None
            waiting.add(id(item))
        for viewer in touched:
            self._busy.discard(viewer)
            remaining = self._queues.get(viewer)
            if not remaining:
                self._queues.pop(viewer, None)
                continue
            head = remaining[0]
            if id(head) not in waiting:
                head.not_before = max(head.not_before, decision.now)
            self._arm(viewer, head.not_before)

    def _settle_one(self, item: Item, now: float) -> None:
        """``settle`` of one delivered item, the usual decision, without the general case's
        bookkeeping (the same steps)."""
        viewer = item.event.subject
        queue = self._queues[viewer]
        if queue[0] is item:
            queue.popleft()
        else:
            queue.remove(item)
        self.size -= 1
        self._busy.discard(viewer)
        if not queue:
            del self._queues[viewer]
            return
        head = queue[0]
        head.not_before = max(head.not_before, now)
        self._arm(viewer, head.not_before)

    # --- inspection ----------------------------------------------------------------------------

    def queued(self, viewer: str) -> list[Item]:
        """The viewer's held events, oldest first (for tests and status)."""
        return list(self._queues.get(viewer, ()))

    def items(self) -> Iterator[Item]:
        """Every held event, viewer by viewer."""
        for queue in self._queues.values():
            yield from queue


def _final(decision: Decision) -> Iterable[Item]:
    yield from decision.delivered
    for dead in decision.dead:
        yield dead.item
