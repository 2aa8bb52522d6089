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

Every message is one line a person can act on and never holds a secret.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "NotifierError",
    "StateError",
    "StormAuthError",
    "StormError",
    "StormRequestError",
    "StormSchemaError",
    "StormUnavailable",
]


class NotifierError(Exception):
    """Base of every error storm-notifier raises on purpose."""


class ConfigError(NotifierError):
    """The configuration is invalid; the message names the file and the key."""


class StormError(NotifierError):
    """A Storm cluster could not be read."""


class StormAuthError(StormError):
    """Login was refused, or the cluster rejected a token even after a fresh login."""


class StormRequestError(StormError):
    """The cluster answered with a status that retrying will not change (a 4xx)."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


class StormUnavailable(StormError):  # noqa: N818 - reads as a state, like httpx's names
    """The cluster kept failing (5xx, 429, timeouts, bad bodies) until the poll budget ran out."""


class StormSchemaError(StormError):
    """The cluster answered 200 with a body that does not have the documented shape."""


class StateError(NotifierError):
    """The state in Redis cannot be read; the message names the key and the entry."""
