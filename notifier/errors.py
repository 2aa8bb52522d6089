"""The exceptions storm-notifier raises, in one tree.

    NotifierError                 anything this package raises on purpose
    ├── ConfigError               the configuration file or environment is invalid (exit 2)
    ├── StormError                talking to a Storm cluster went wrong
    │   ├── StormAuthError        login refused, or a token rejected even after a fresh login
    │   ├── StormRequestError     the cluster refused the request itself (a non-retryable 4xx)
    │   ├── StormUnavailable      retries exhausted within the poll budget (5xx, 429, timeouts,
    │   │                         connection errors, malformed bodies)
    │   └── StormSchemaError      a body that does not have the documented shape
    └── StateError                what Redis holds for a cluster is not what this version wrote

Every message is one line a person can act on and never holds a secret. A ``StormError`` also
carries a ``kind``, one word of ``STORM_ERROR_KINDS``: why a poll was incomplete, small and fixed
enough to be a metric label (``notifier_poll_incomplete_total{reason}``).
"""

from __future__ import annotations

__all__ = [
    "STORM_ERROR_KINDS",
    "ConfigError",
    "NotifierError",
    "StateError",
    "StormAuthError",
    "StormError",
    "StormRequestError",
    "StormSchemaError",
    "StormUnavailable",
]


STORM_ERROR_KINDS = (
    "auth",  # login refused, or a token rejected after a fresh login
    "refused",  # a 4xx that retrying will not change
    "unavailable",  # 5xx, 429, connection refused or reset, until the poll budget ran out
    "timeout",  # requests that got no whole answer within ``timeout`` (a slow or dripping server)
    "budget",  # the poll's requests succeeded, but not all of them within ``poll_budget``
    "malformed",  # bodies that are not JSON (an HTML page with 200, garbage, cut off)
    "schema",  # JSON of the wrong shape: missing fields, wrong types
    "viewer_id",  # an id that is not a string, not acceptable, or repeated within a page
    "paging",  # paging facts that contradict themselves (repeated pages, lying totals)
    "too_large",  # a body over ``max_page_bytes``
)
"""Every ``StormError.kind``, in the order the docs list them."""


class NotifierError(Exception):
    """Base of every error storm-notifier raises on purpose."""


class ConfigError(NotifierError):
    """The configuration is invalid; the message names the file and the key."""


class StormError(NotifierError):
    """A Storm cluster could not be read; ``kind`` says why in one word (``STORM_ERROR_KINDS``)."""

    kind: str = "unavailable"

    def __init__(self, message: str, *, kind: str | None = None) -> None:
        super().__init__(message)
        if kind is not None:
            self.kind = kind


class StormAuthError(StormError):
    """Login was refused, or the cluster rejected a token even after a fresh login."""

    kind = "auth"


class StormRequestError(StormError):
    """The cluster answered with a status that retrying will not change (a 4xx)."""

    kind = "refused"

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


class StormUnavailable(StormError):  # noqa: N818 - reads as a state, like httpx's names
    """The cluster kept failing (5xx, 429, timeouts, bad bodies) until the poll budget ran out."""


class StormSchemaError(StormError):
    """The cluster answered 200 with a body that does not have the documented shape."""

    kind = "schema"


class StateError(NotifierError):
    """The state in Redis cannot be read; the message names the key and the entry."""
