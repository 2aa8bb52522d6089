"""Slack app mode's pure parts: where events go (``routing.plan``), what Slack's answers mean
(``answers.outcome``), and the incident and audience messages (valid Block Kit, whatever the
events hold)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from notifier.events import decode_event
from notifier.sinks.base import Delivered, Failed, Retry
from notifier.sinks.slack.answers import PAUSE_ERRORS, outcome
from notifier.sinks.slack.book import AudienceRecord, IncidentRecord, compact
from notifier.sinks.slack.incidents import audience_message, incident_message
from notifier.sinks.slack.routing import (
    Audience,
    Digest,
    Item,
    Open,
    Reply,
    Resolve,
    StreamRef,
    Window,
    plan,
    stream_of,
    window_of,
)
from notifier.sinks.slack.webapi import Answer
from testkit.slack_validation import assert_valid_slack_payload
from testkit.stories import APP, Story

OPEN = Window(datetime.min.replace(tzinfo=UTC))
"""An incident open since before any event."""


def items(events: list[dict[str, Any]]) -> list[Item]:
    """Stream entries as a delivery hands them to the sink."""
    out = []
    for n, event in enumerate(events):
        decoded = decode_event("eu-1", f"{n}-0", {b"event": event["body"]})
        out.append(Item(decoded, msgspec.json.decode(event["body"])))
    return out


def shape(steps: list[Any]) -> list[tuple[str, list[str]]]:
    """Each step's kind and the types of its events."""
    out = []
    for step in steps:
        held = step.items if isinstance(step, Digest | Reply) else (step.item,)
        out.append((type(step).__name__, [item.event.type for item in held]))
    return out


def test_a_stream_event_and_a_viewer_event_know_their_stream() -> None:
    """``data.stream`` of a stream event, the record of a viewer event."""
    story = Story()
    degraded, drop = items([story.degraded("live-1"), story.drop("v_1", "live-1")])
    assert stream_of(degraded) == stream_of(drop) == StreamRef(APP, "live-1")


def test_viewer_health_goes_to_the_thread_of_an_open_incident_and_the_rest_to_the_channel() -> None:
    """With an incident open: drops to the thread, a join to the channel digest."""
    story = Story()
    batch = items([story.connected("v_9", "live-1"), story.drop("v_1", "live-1")])
    assert shape(plan(batch, OPEN)) == [
        ("Digest", ["viewer.connected"]),
        ("Reply", ["viewer.health_dropped"]),
    ]
    assert shape(plan(batch, None)) == [
        ("Digest", ["viewer.connected", "viewer.health_dropped"]),
    ]


def test_the_drops_before_a_degradation_go_to_its_thread() -> None:
    """Drops of the poll that degraded the stream come first in the stream: its thread."""
    story = Story()
    batch = items([story.drop("v_1", "live-1"), story.degraded("live-1"), story.drop("v_2", "l")])
    steps = plan(batch[:2], None)
    assert shape(steps) == [
        ("Open", ["stream.health_degraded"]),
        ("Reply", ["viewer.health_dropped"]),
    ]


def test_a_whole_incident_in_one_delivery() -> None:
    """Degraded, drops, recovered, more drops: open, reply, resolve, the later drops to the
    channel (the incident is over)."""
    story = Story()
    batch = items(
        [
            story.degraded("live-1"),
            story.drop("v_1", "live-1"),
            story.recovered("live-1"),
            story.drop("v_2", "live-1"),
        ]
    )
    assert shape(plan(batch, None)) == [
        ("Digest", ["viewer.health_dropped"]),
        ("Open", ["stream.health_degraded"]),
        ("Reply", ["viewer.health_dropped"]),
        ("Resolve", ["stream.health_recovered"]),
    ]


def test_recovery_and_end_without_an_open_incident() -> None:
    """A recovery with no incident open is told in the channel; an end goes to the audience
    message; an end while degraded resolves and quietly finishes the audience message."""
    story = Story()
    recovered, ended = items([story.recovered("live-1"), story.ended("live-1")])
    assert shape(plan([recovered, ended], None)) == [
        ("Digest", ["stream.health_recovered"]),
        ("Audience", ["stream.audience_ended"]),
    ]
    steps = plan([ended], OPEN)
    assert [type(s) for s in steps] == [Resolve, Audience]
    assert isinstance(steps[1], Audience)
    assert steps[1].quiet
    started, crossed = items([story.started("live-1"), story.crossed("live-1", 100)])
    assert [type(s) for s in plan([started, crossed], None)] == [Audience] * 2
    assert [type(s) for s in plan(items([story.degraded("x")]), OPEN)] == [Open]


def test_a_viewer_event_belongs_to_the_incident_of_its_time_whatever_order_it_arrives_in() -> None:
    """The worker orders per subject only: a drop of the opening poll, or one before the
    recovery, may arrive after it. The incident's window (opening poll to resolving event) says
    it is the incident's; a drop after the recovery is the channel's."""
    story = Story()
    early = story.drop("v_0", "live-1")
    story.time_ms -= 5000  # the same poll as the degradation
    degraded = story.degraded("live-1")
    during = story.drop("v_1", "live-1")
    recovered = story.recovered("live-1")
    after = story.drop("v_2", "live-1")
    opened, resolved = (msgspec.json.decode(e["body"]) for e in (degraded, recovered))
    window = window_of(compact(opened), compact(resolved))
    assert window is not None
    late = items([early, during, after])
    assert shape(plan(late, window)) == [
        ("Digest", ["viewer.health_dropped"]),
        ("Reply", ["viewer.health_dropped", "viewer.health_dropped"]),
    ]
    digest = plan(late, window)[0]
    assert isinstance(digest, Digest)
    assert [i.event.subject for i in digest.items] == ["v_2"]
    before = items([story.drop("v_9", "live-1")])
    assert shape(plan(before, window_of(compact(opened), None))) == [
        ("Reply", ["viewer.health_dropped"])
    ]


def test_a_new_degradation_does_not_take_the_old_incidents_events() -> None:
    """Drops of a resolved incident's time go to its thread; the drops of the poll that
    degrades the stream again go to the new one's."""
    story = Story()
    old = Window(datetime.min.replace(tzinfo=UTC), "r", 3)
    batch = items([story.drop("v_1", "s"), story.drop("v_2", "s"), story.drop("v_3", "s")])
    batch += items([story.degraded("s")])
    steps = plan(batch, old)
    assert shape(steps) == [
        ("Reply", ["viewer.health_dropped", "viewer.health_dropped"]),
        ("Open", ["stream.health_degraded"]),
        ("Reply", ["viewer.health_dropped"]),
    ]


def answer(**fields: Any) -> Answer:
    """A refusal of chat.postMessage."""
    return Answer("chat.postMessage", ok=False, **fields)


@pytest.mark.parametrize("error", sorted(PAUSE_ERRORS))
def test_errors_of_the_token_or_channel_pause(error: str) -> None:
    """The six errors no retry fixes pause the sink, with what to do."""
    got = outcome(answer(error=error, status=200))
    assert isinstance(got, Failed)
    assert got.pause
    assert got.reason == f"Slack chat.postMessage: {error} ({PAUSE_ERRORS[error]})"


def test_what_each_other_answer_means() -> None:
    """ok delivers; rate limits wait without using an attempt; a message's own errors are
    permanent; other codes, transport failures and 5xx retry; another 4xx is permanent."""
    assert isinstance(outcome(Answer("chat.update", ok=True, status=200)), Delivered)
    for limited in (answer(error="ratelimited", status=200), answer(status=429)):
        got = outcome(limited)
        assert isinstance(got, Retry)
        assert (got.counted, got.after) == (False, 1.0)
    got = outcome(answer(error="ratelimited", status=429, retry_after=7.0))
    assert isinstance(got, Retry)
    assert got.after == 7.0
    for error in ("msg_too_long", "invalid_blocks"):
        got = outcome(answer(error=error, status=200))
        assert isinstance(got, Failed)
        assert not got.pause
    for retried in (
        answer(error="internal_error", status=200),
        answer(transport="no answer within 15 s"),
        answer(status=503),
    ):
        got = outcome(retried)
        assert isinstance(got, Retry)
        assert got.counted
    got = outcome(answer(status=404))
    assert isinstance(got, Failed)
    assert got.reason.startswith("Slack chat.postMessage: HTTP 404")


def _record(**extra: Any) -> IncidentRecord:
    story = Story()
    opened = compact(msgspec.json.decode(story.degraded("live-1")["body"]))
    return IncidentRecord(incident=opened["id"], opened=opened, ts="1.2", **extra)


def test_an_open_incident_message_shows_the_degradation_and_the_thread() -> None:
    """Header, the degradation's card with its breakdown, the thread's figures, since when."""
    message = incident_message("eu-1", _record(dropped=12, recovered=5, latest=None))
    assert_valid_slack_payload(message)
    texts = [b.get("text", {}).get("text", "") for b in message["blocks"]]
    assert texts[0] == "🚨 Incident · live-1 · eu-1"
    assert texts[1].startswith("🚨 *live-1 degraded*: 30% of 100 viewers dropped (30)")
    assert "country" in texts[1]
    assert texts[2] == "*In the thread:* 12 viewers dropped · 5 recovered"
    assert message["text"] == "eu-1 · live-1 degraded: 30% of 100 viewers dropped (30) (open)"


@pytest.mark.parametrize("how", ["recovered", "ended"])
def test_a_resolved_incident_message_says_how_it_ended_and_how_long_it_lasted(how: str) -> None:
    """Resolved by a recovery (its duration and peak) or by the audience ending while degraded
    (the duration from the two times)."""
    story = Story()
    opened = compact(msgspec.json.decode(story.degraded("live-1")["body"]))
    end = story.recovered("live-1") if how == "recovered" else story.ended("live-1", degraded=True)
    record = IncidentRecord(
        incident=opened["id"],
        opened=opened,
        ts="1.2",
        resolved=compact(msgspec.json.decode(end["body"])),
    )
    message = incident_message("eu-1", record)
    assert_valid_slack_payload(message)
    texts = [b.get("text", {}).get("text", "") for b in message["blocks"]]
    assert texts[0] == "✅ Resolved · live-1 · eu-1"
    context = message["blocks"][-1]["elements"][0]["text"]
    assert "resolved after 5 s" in context
    if how == "recovered":
        assert "peak 35 dropped (35%)" in texts[1]
    else:
        assert "audience ended while degraded" in texts[1]


def test_hostile_stream_values_cannot_break_the_messages() -> None:
    """A streamKey that is long, has markup, a mention and control characters: both messages
    stay valid and show it escaped."""
    story = Story()
    key = "<!channel> *bold* & `code`\n\u202e" + "x" * 500
    opened = compact(msgspec.json.decode(story.degraded(key)["body"]))
    record = IncidentRecord(incident="i", opened=opened)
    assert_valid_slack_payload(incident_message("eu-1" * 30, record))
    crossings = [
        compact(msgspec.json.decode(story.crossed(key, 100 * (n + 1))["body"])) for n in range(25)
    ]
    audience = AudienceRecord(audience="a", crossings=crossings)
    message = audience_message("eu-1", audience)
    assert_valid_slack_payload(message)
    assert "&lt;!channel&gt;" in message["blocks"][0]["text"]["text"]
    assert "_…17 earlier crossings_" in [b.get("text", {}).get("text") for b in message["blocks"]]
