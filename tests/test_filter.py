"""Which events a sink's ``events`` and ``filter`` settings let through (pure matching)."""

from __future__ import annotations

import json

from notifier.events import decode_event
from notifier.sinks.filter import event_filter, matches
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
