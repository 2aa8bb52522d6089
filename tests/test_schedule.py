"""The pure delivery schedule: examples, and properties over random admissions and outcomes."""

from __future__ import annotations

import gc
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from notifier.events import Event
from notifier.sinks.base import Batching, Delivered, Failed, Retry
from notifier.sinks.schedule import RetryPolicy, Schedule

if TYPE_CHECKING:
    from notifier.sinks.base import Outcome
    from notifier.sinks.schedule import Batch

POLICY = RetryPolicy(delays=(0.0, 5.0, 60.0), jitter=0.2)
VIEWERS = ["a", "b", "c", "d"]


def event(n: int, viewer: str, stream: str = "s1") -> Event:
    return Event(
        cluster="c",
        entry_id=f"{n}-0",
        id=f"e{n}",
        type="viewer.connected",
        subject=viewer,
        sequence=n,
        body=b"{}",
        stream_key=stream,
    )


def schedule(
    batching: Batching | None = None, *, capacity: int = 100, policy: RetryPolicy = POLICY
) -> Schedule:
    return Schedule(batching or Batching(), policy, random.Random(1), capacity=capacity)


def ids(batch: Batch) -> list[str]:
    return [item.event.id for item in batch.items]


def test_a_viewers_later_event_waits_for_its_earlier_one() -> None:
    """Only a viewer's head is due; its next event goes out once the head is settled."""
    s = schedule()
    s.admit(event(1, "a"), 0.0)
    s.admit(event(2, "a"), 0.0)
    s.admit(event(3, "b"), 0.0)
    first = s.due(0.0, limit=10)
    assert sorted(ids(b)[0] for b in first) == ["e1", "e3"]
    assert s.due(0.0, limit=10) == []
    a_batch = next(b for b in first if ids(b) == ["e1"])
    s.settle(s.decide(a_batch, Delivered(), 0.1))
    assert [ids(b) for b in s.due(0.1, limit=10)] == [["e2"]]


def test_a_retry_holds_the_viewer_and_honours_retry_after() -> None:
    """A retried head keeps its followers back and is not due before Retry-After."""
    s = schedule()
    s.admit(event(1, "a"), 0.0)
    s.admit(event(2, "a"), 0.0)
    (batch,) = s.due(0.0, limit=1)
    decision = s.decide(batch, Retry("HTTP 503", status=503, after=30.0), 1.0)
    assert [r.attempts for r in decision.retrying] == [1]
    assert decision.retrying[0].not_before >= 31.0
    s.settle(decision)
    assert s.due(30.9, limit=10) == []
    assert s.next_deadline() == pytest.approx(decision.retrying[0].not_before)
    (again,) = s.due(decision.retrying[0].not_before, limit=10)
    assert ids(again) == ["e1"]
    assert again.items[0].status == 503
    assert again.items[0].reason == "HTTP 503"


def test_a_rate_limit_uses_up_no_attempt_and_a_pause_waits() -> None:
    """Retry(counted=False) keeps the attempt count; a pause keeps everything as it was."""
    s = schedule()
    s.admit(event(1, "a"), 0.0)
    (batch,) = s.due(0.0, limit=1)
    limited = s.decide(batch, Retry("429", after=2.0, counted=False), 0.0)
    assert [r.attempts for r in limited.retrying] == [0]
    s.settle(limited)
    (batch,) = s.due(2.5, limit=1)
    paused = s.decide(batch, Failed("410 Gone", status=410, pause=True), 2.5)
    assert paused.paused == tuple(batch.items)
    assert not paused.dead
    s.settle(paused)
    assert s.size == 1
    assert batch.items[0].attempts == 0


def test_a_pause_is_a_failure_when_nobody_can_resume() -> None:
    """With pause=False (commands run by hand) an endpoint that is gone is final."""
    s = schedule(policy=RetryPolicy(delays=(0.0,), pause=False))
    s.admit(event(1, "a"), 0.0)
    (batch,) = s.due(0.0, limit=1)
    decision = s.decide(batch, Failed("410 Gone", pause=True), 0.0)
    assert [d.reason for d in decision.dead] == ["410 Gone"]


def test_an_exhausted_schedule_is_final_and_says_so() -> None:
    """After len(delays) counted attempts the event is dead, with the count in the reason."""
    s = schedule(policy=RetryPolicy(delays=(0.0, 0.0), jitter=0.0))
    s.admit(event(1, "a"), 0.0)
    s.admit(event(2, "a"), 0.0)
    for attempt in (1, 2):
        (batch,) = s.due(float(attempt), limit=1)
        decision = s.decide(batch, Retry("timeout"), float(attempt))
        s.settle(decision)
    assert [(d.item.event.id, d.attempts) for d in decision.dead] == [("e1", 2)]
    assert decision.dead[0].reason == "gave up after 2 attempts: timeout"
    assert s.size == 1
    assert [ids(b) for b in s.due(3.0, limit=1)] == [["e2"]]


def test_batches_group_by_key_take_followers_and_wait_to_fill() -> None:
    """Heads of one key share a batch, a viewer's due followers ride along, ``wait`` holds it."""
    batching = Batching(size=3, wait=1.0, key=lambda e: e.stream_key)
    s = schedule(batching)
    s.admit(event(1, "a", "s1"), 0.0)
    s.admit(event(2, "a", "s1"), 0.0)
    s.admit(event(3, "b", "s2"), 0.0)
    s.admit(event(4, "c", "s1"), 0.0)
    full = s.due(0.0, limit=5)
    assert [ids(b) for b in full] == [["e1", "e2", "e4"]]  # size 3: ready at once
    assert s.due(0.5, limit=5) == []  # s2 waits to fill up
    assert s.next_deadline() == pytest.approx(1.0)
    assert [ids(b) for b in s.due(1.0, limit=5)] == [["e3"]]


def test_the_backlog_is_bounded() -> None:
    """``wanted`` reads only what fits (and only a useful amount); a full schedule refuses."""
    s = schedule(capacity=10)
    assert s.wanted(500) == 10
    for n in range(6):
        s.admit(event(n, f"v{n}"), 0.0)
    assert s.wanted(500) == 0  # 4 free slots: less than half of the capacity
    for n in range(6, 10):
        s.admit(event(n, f"v{n}"), 0.0)
    with pytest.raises(ValueError, match="holds 10 events"):
        s.admit(event(11, "x"), 0.0)


# --- properties --------------------------------------------------------------------------------

OUTCOMES: list[Outcome] = [
    Delivered(),
    Retry("HTTP 503", status=503),
    Retry("HTTP 503", status=503, after=7.0),
    Retry("429", after=3.0, counted=False),
    Failed("HTTP 400", status=400),
    Failed("HTTP 410", status=410, pause=True),
]
batchings = st.sampled_from(
    [
        Batching(),
        Batching(size=3, wait=0.0),
        Batching(size=4, wait=2.0),
        Batching(size=5, wait=1.0, key=lambda e: e.stream_key),
    ]
)


@dataclass
class Run:
    """The history of one random run, to check the properties against."""

    admitted: dict[str, list[str]] = field(default_factory=dict)  # viewer -> ids, in order
    final: list[str] = field(default_factory=list)  # ids, in the order they became final
    handed_out: list[HandOut] = field(default_factory=list)
    earliest: dict[str, float] = field(default_factory=dict)  # id -> its decided retry time

    def hand_out(self, now: float, batch: Batch) -> None:
        items = [
            (i.event.subject, i.event.id, self.earliest.get(i.event.id, 0.0)) for i in batch.items
        ]
        self.handed_out.append(HandOut(now, items, frozenset(self.final)))


@dataclass(frozen=True)
class HandOut:
    """One batch as it was handed out: when, its items, and what was final by then."""

    when: float
    items: list[tuple[str, str, float]]  # (viewer, event id, earliest allowed time)
    final: frozenset[str]


def drive(
    batching: Batching, capacity: int, steps: list[tuple[str, int]], outcome_picks: list[int]
) -> tuple[Schedule, Run]:
    """Apply random admissions, clock moves, hand-outs and outcomes; then deliver everything."""
    s = Schedule(batching, POLICY, random.Random(0), capacity=capacity)
    run = Run()
    now, n = 0.0, 0
    inflight: list[Batch] = []
    picks = iter(outcome_picks)

    def hand_out(limit: int) -> None:
        for batch in s.due(now, limit):
            assert 1 <= len(batch.items) <= batching.size
            if batching.key is not None:
                assert len({batching.key(i.event) for i in batch.items}) == 1
            run.hand_out(now, batch)
            inflight.append(batch)

    def settle(batch: Batch, outcome: Outcome) -> None:
        decision = s.decide(batch, outcome, now)
        for retry in decision.retrying:
            if isinstance(outcome, Retry) and outcome.after is not None:
                assert retry.not_before >= now + outcome.after  # Retry-After is honoured
            run.earliest[retry.item.event.id] = retry.not_before
        s.settle(decision)
        run.final += [i.event.id for i in decision.delivered]
        run.final += [d.item.event.id for d in decision.dead]

    for action, value in steps:
        if action == "admit":
            if s.size >= capacity:
                with pytest.raises(ValueError, match="holds"):
                    s.admit(event(n, "x"), now)
                continue
            viewer = VIEWERS[value % len(VIEWERS)]
            n += 1
            s.admit(event(n, viewer, stream=f"s{value % 2}"), now)
            run.admitted.setdefault(viewer, []).append(f"e{n}")
        elif action == "tick":
            now += value / 4
        elif action == "due":
            hand_out(value)
        elif action == "settle" and inflight:
            batch = inflight.pop(value % len(inflight))
            settle(batch, OUTCOMES[next(picks, 0) % len(OUTCOMES)])
        assert 0 <= s.size <= capacity
    for batch in inflight:  # the rest succeeds: everything must come out, once
        settle(batch, Delivered())
    for _ in range(10_000):
        if not s.size:
            break
        deadline = s.next_deadline()
        assert deadline is not None, "events held but nothing will ever be due"
        now = max(now, deadline)
        for batch in s.due(now, 100):
            run.hand_out(now, batch)
            settle(batch, Delivered())  # paused and retried events, too, go out in the end
    return s, run


steps_strategy = st.lists(
    st.tuples(st.sampled_from(["admit", "admit", "tick", "due", "settle"]), st.integers(0, 7)),
    max_size=80,
)


random_runs = given(
    batching=batchings,
    capacity=st.integers(1, 12),
    steps=steps_strategy,
    picks=st.lists(st.integers(0, 5), max_size=40),
)
"""A random sequence of admissions, clock moves, hand-outs and outcomes."""


@settings(max_examples=300, deadline=None)
@random_runs
def test_every_event_becomes_final_exactly_once_in_viewer_order(
    batching: Batching, capacity: int, steps: list[tuple[str, int]], picks: list[int]
) -> None:
    """No event is lost or finalised twice, and each viewer's events end in admission order."""
    s, run = drive(batching, capacity, steps, picks)
    assert s.size == 0
    everything = [i for ids in run.admitted.values() for i in ids]
    assert sorted(run.final) == sorted(everything)
    assert len(run.final) == len(set(run.final))
    for viewer_ids in run.admitted.values():
        assert [i for i in run.final if i in set(viewer_ids)] == viewer_ids


@settings(max_examples=300, deadline=None)
@random_runs
def test_a_later_event_never_goes_out_before_an_earlier_one_is_final(
    batching: Batching, capacity: int, steps: list[tuple[str, int]], picks: list[int]
) -> None:
    """Whenever an event is handed out, every earlier event of its viewer is final or ahead
    of it in the same batch; and nothing goes out before its time."""
    _, run = drive(batching, capacity, steps, picks)
    order = {i: k for ids in run.admitted.values() for k, i in enumerate(ids)}
    for out in run.handed_out:
        in_batch: dict[str, list[str]] = {}
        for viewer, event_id, earliest in out.items:
            assert earliest <= out.when + 1e-9
            in_batch.setdefault(viewer, []).append(event_id)
        for viewer, batch_ids in in_batch.items():
            positions = [order[i] for i in batch_ids]
            assert positions == list(range(positions[0], positions[0] + len(positions)))
            assert set(run.admitted[viewer][: positions[0]]) <= out.final
            assert not set(batch_ids) & out.final


def test_held_events_are_invisible_to_the_garbage_collector() -> None:
    """A full schedule adds nothing for the cyclic GC to walk: items and events are untracked."""
    s = schedule()
    item = s.admit(event(1, "a"), 0.0)
    assert not gc.is_tracked(item)
    assert not gc.is_tracked(item.event)


def test_a_zero_delay_is_zero_whatever_the_jitter() -> None:
    """The first attempt of the default schedule goes at once, with or without jitter."""
    rng = random.Random(3)
    assert RetryPolicy(delays=(0.0, 5.0), jitter=0.2).delay(0, None, rng) == 0.0
    assert RetryPolicy(delays=(0.0, 5.0), jitter=0.2).delay(0, 2.5, rng) == 2.5
    assert 4.0 <= RetryPolicy(delays=(0.0, 5.0), jitter=0.2).delay(1, None, rng) <= 6.0
