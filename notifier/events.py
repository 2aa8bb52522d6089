"""The event types storm-notifier emits (SPEC section 4)."""

from __future__ import annotations

from typing import Final, Literal, get_args

__all__ = ["EVENT_TYPES", "EventType"]

EventType = Literal[
    "viewer.connected",
    "viewer.disconnected",
    "viewer.health_dropped",
    "viewer.health_recovered",
]
EVENT_TYPES: Final[tuple[EventType, ...]] = get_args(EventType)
