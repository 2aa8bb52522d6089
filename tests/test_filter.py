"""Which events a sink's ``events`` and ``filter`` settings let through (pure matching)."""

from __future__ import annotations

from notifier.events import decode_event
from notifier.sinks.filter import matches
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
