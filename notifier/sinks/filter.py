"""Which events a sink takes: its ``events`` types and ``filter`` (docs/configuration.md)."""

from __future__ import annotations

import fnmatch
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from notifier.events import Event
    from notifier.sinks.settings import SinkBaseSettings

__all__ = ["matches"]


def matches(settings: SinkBaseSettings, event: Event) -> bool:
    """Does the sink take this event? Empty filter lists match everything."""
    if settings.events is not None and event.type not in settings.events:
        return False
    f = settings.filter
    if f.clusters and event.cluster not in f.clusters:
        return False
    if f.stream_keys and not (
        event.stream_key is not None
        and any(fnmatch.fnmatchcase(event.stream_key, pattern) for pattern in f.stream_keys)
    ):
        return False
    if f.application_ids and event.application_id not in f.application_ids:
        return False
    if f.harness_types and event.harness_type not in f.harness_types:
        return False
    return not (
        f.countries and (event.country or "").upper() not in {c.upper() for c in f.countries}
    )
