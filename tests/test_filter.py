"""Which events a sink's ``events`` and ``filter`` settings let through (pure matching)."""

from __future__ import annotations

import json

from notifier.events import decode_event
from notifier.sinks.filter import event_filter, matches
from notifier.sinks.slack import SlackSinkSettings
from notifier.sinks.webhook import WebhookSinkSettings
from testkit.sink_support import SECRET, make_events


def test_filter_matching_rules() -> None:
    """Each filter key narrows; an empty list lets everything through."""
    (event,) = [decode_event("eu-1", "1-0", {b"event": e["body"]}) for e in make_events(1, 1)]
    base = {"name": "x", "url": "http://x", "secret": SECRET}
    assert matches(WebhookSinkSettings.model_validate(base), event)
    for key, good, bad in [
        ("clusters", ["eu-1"], ["us-1"]),
        ("stream_keys", ["live-?"], ["back*"]),
        ("application_ids", ["app-1"], ["app-2"]),
        ("harness_types", ["STORM_MSE_VIEWER"], ["RTMP_VIEWER"]),
        ("countries", ["pl"], ["DE"]),
    ]:
        assert matches(WebhookSinkSettings.model_validate({**base, "filter": {key: good}}), event)
        assert not matches(
            WebhookSinkSettings.model_validate({**base, "filter": {key: bad}}), event
        )


def test_a_sink_without_filters_needs_no_test_and_one_with_filters_gets_one() -> None:
    """``event_filter`` is None when everything passes; otherwise it keeps the wanted events."""
    made = make_events(60, 9)
    events = [decode_event("eu-1", f"1-{i}", {b"event": e["body"]}) for i, e in enumerate(made)]
    base = {"name": "x", "url": "http://x", "secret": SECRET}
    assert event_filter(WebhookSinkSettings.model_validate(base)) is None
    settings = WebhookSinkSettings.model_validate(
        {
            **base,
            "events": ["viewer.connected", "viewer.health_dropped"],
            "filter": {"stream_keys": ["live-*"], "countries": ["pl", "De"]},
        }
    )
    test = event_filter(settings)
    assert test is not None
    wanted = [
        e["type"] != "viewer.health_recovered"
        and e["streamKey"].startswith("live-")
        and e["country"] in ("PL", "DE")
        for e in made
    ]
    assert [test(e) for e in events] == wanted
    assert any(wanted)
    assert not all(wanted)


def test_viewer_fields_that_are_not_text_are_read_as_before() -> None:
    """Numbers are read as text and booleans as missing, whichever way the entry is decoded."""
    body = json.loads(make_events(1, 1)[0]["body"])
    body["data"]["viewer"].update(streamKey=7, countryCode=True, applicationId=None)
    event = decode_event("eu-1", "1-0", {b"event": json.dumps(body).encode()})
    assert (event.stream_key, event.country, event.application_id) == ("7", None, None)
    assert event.harness_type == "STORM_MSE_VIEWER"


def stream_event(**data: object) -> bytes:
    """A ``stream.health_degraded`` event's JSON (only what decoding reads)."""
    stream = {"applicationId": "app-1", "streamKey": "live-1"}
    return json.dumps(
        {
            "id": "e-1",
            "type": "stream.health_degraded",
            "subject": "live-1",
            "sequence": 5,
            "data": {"stream": stream, "viewers": 10, **data},
        }
    ).encode()


def test_a_stream_event_is_filtered_by_its_stream_and_passes_viewer_only_filters() -> None:
    """Stream key and application come from ``data.stream``; an audience has no harness type
    or country, so those filters (of viewer events) let it through."""
    event = decode_event("eu-1", "1-0", {b"event": stream_event()})
    assert (event.stream_key, event.application_id, event.is_stream_event) == (
        "live-1",
        "app-1",
        True,
    )
    base = {"name": "x", "url": "http://x", "secret": SECRET}
    for key, good, bad in [
        ("stream_keys", ["live-*"], ["back*"]),
        ("application_ids", ["app-1"], ["app-2"]),
    ]:
        assert matches(WebhookSinkSettings.model_validate({**base, "filter": {key: good}}), event)
        assert not matches(
            WebhookSinkSettings.model_validate({**base, "filter": {key: bad}}), event
        )
    for key, values in [("harness_types", ["RTMP_VIEWER"]), ("countries", ["DE"])]:
        only = WebhookSinkSettings.model_validate({**base, "filter": {key: values}})
        assert matches(only, event)


def test_skip_initial_holds_back_only_events_marked_initial() -> None:
    """``data.initial: true`` events are not for a sink with ``skip_initial``; others are."""
    initial = decode_event("eu-1", "1-0", {b"event": stream_event(initial=True)})
    later = decode_event("eu-1", "1-1", {b"event": stream_event()})
    odd = decode_event("eu-1", "1-2", {b"event": stream_event(initial="yes")})
    assert (initial.initial, later.initial, odd.initial) == (True, False, False)
    base = {"name": "x", "url": "http://x", "secret": SECRET}
    skipping = WebhookSinkSettings.model_validate({**base, "skip_initial": True})
    assert not matches(skipping, initial)
    assert matches(skipping, later)
    assert matches(WebhookSinkSettings.model_validate(base), initial)


def test_slack_skips_initial_events_by_default_and_webhooks_do_not() -> None:
    """A first start posts nobody already watching to Slack; webhooks get everything."""
    slack = SlackSinkSettings.model_validate(
        {"name": "ops", "type": "slack", "webhook_url": "https://hooks.slack.com/services/x"}
    )
    hook = WebhookSinkSettings.model_validate({"name": "x", "url": "http://x", "secret": SECRET})
    assert (slack.skip_initial, hook.skip_initial) == (True, False)
