"""The only place that configures structlog.

Events are dotted names with flat keys (``log.info("poll.completed", cluster=..., viewers=...)``).
Logs go to standard error, so that commands which print data (snapshot, tail) keep stdout clean.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Any, Literal, TextIO

import structlog
from pydantic import Field, SecretStr, field_validator

from notifier._model import Frozen

if TYPE_CHECKING:
    from collections.abc import MutableMapping

__all__ = ["LoggingSettings", "configure_logging", "redact"]


class LoggingSettings(Frozen):
    """Log output on standard error."""

    format: Literal["json", "console"] = Field(
        default="json", description="json: one object a line; console: for people"
    )
    level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("level", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value


_SECRET_KEYS = frozenset(
    {"token", "password", "secret", "api_key", "authorization", "webhook_url", "access_token"}
)
_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def redact(
    _logger: object, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Mask values under secret-looking keys and every ``SecretStr``, whoever logged them."""
    for key, value in event_dict.items():
        if (key.lower() in _SECRET_KEYS and value is not None) or isinstance(value, SecretStr):
            event_dict[key] = "***"
    return event_dict


def configure_logging(
    *,
    fmt: Literal["json", "console"] = "json",
    level: str = "info",
    stream: TextIO | None = None,
) -> None:
    """Set up structlog once for the process: JSON lines or a console view on ``stream``."""
    out = stream if stream is not None else sys.stderr
    renderer: structlog.types.Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer(sort_keys=False)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=out.isatty())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
