"""Which events a sink takes: its ``events`` types and ``filter`` (docs/configuration.md).

``matches`` answers for one event; ``event_filter`` builds the same test once per sink (the
country codes upper-cased once, not per event), or None when the sink takes every event, so
that the worker does no filtering work at all for such a sink.
"""

from __future__ import annotations

import fnmatch
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from notifier.events import Event
    from notifier.sinks.settings import SinkBaseSettings

__all__ = ["event_filter", "matches"]


def matches(settings: SinkBaseSettings, event: Event) -> bool:
    """Does the sink take this event? Empty filter lists match everything."""
    test = event_filter(settings)
    return test is None or test(event)


def event_filter(settings: SinkBaseSettings) -> Callable[[Event], bool] | None:
    """The sink's test of an event (as ``matches``), or None if it takes every event."""
    types = None if settings.events is None else frozenset(settings.events)
    f = settings.filter
    clusters = frozenset(f.clusters)
    stream_keys = f.stream_keys
    application_ids = frozenset(f.application_ids)
    harness_types = frozenset(f.harness_types)
    countries = frozenset(c.upper() for c in f.countries)
    skip_initial = settings.skip_initial
    if types is None and not (
        clusters or stream_keys or application_ids or harness_types or countries or skip_initial
    ):
        return None

    def test(event: Event) -> bool:
        if (
            (types is not None and event.type not in types)
            or (skip_initial and event.initial)
            or (clusters and event.cluster not in clusters)
            or (application_ids and event.application_id not in application_ids)
        ):
            return False
        if stream_keys and not (
            event.stream_key is not None
            and any(fnmatch.fnmatchcase(event.stream_key, pattern) for pattern in stream_keys)
        ):
            return False
        if event.is_stream_event:  # an audience has no harness type or country of its own
            return True
        if harness_types and event.harness_type not in harness_types:
            return False
        return not (countries and (event.country or "").upper() not in countries)

    return test
