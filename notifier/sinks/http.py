"""What an HTTP answer means for delivery, in one place (SPEC section 5).

2xx delivered; redirects are not followed (permanent); 408, 429, 5xx, timeouts and connection
errors are retried, honouring ``Retry-After``; 410 pauses the sink; any other 4xx is permanent.
Reasons never carry a URL: receivers' URLs hold tokens.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import aiohttp

from notifier.durations import format_duration
from notifier.sinks.base import Delivered, Failed, Outcome, Retry
from notifier.storm._retry import parse_retry_after

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["classify", "redact_url", "transport_failure"]


def classify(
    status: int, headers: Mapping[str, str], body: bytes, *, now: float | None = None
) -> Outcome:
    """The outcome of an HTTP answer."""
    if 200 <= status < 300:
        return Delivered(status=status)
    reason = f"HTTP {status}" + _snippet(body)
    if 300 <= status < 400:
        return Failed(f"HTTP {status}: redirects are not followed", status=status)
    if status in (408, 429) or 500 <= status <= 599:
        after = parse_retry_after(headers.get("Retry-After"), time.time() if now is None else now)
        return Retry(reason, status=status, after=after)
    if status == 410:
        return Failed(reason + " (Gone: the endpoint was removed)", status=status, pause=True)
    return Failed(reason, status=status)


def transport_failure(exc: BaseException, timeout: float) -> Retry:
    """A request that got no HTTP answer."""
    if isinstance(exc, TimeoutError):
        return Retry(f"no answer within {format_duration(timeout)}")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return Retry(f"cannot connect ({exc.os_error.strerror or type(exc.os_error).__name__})")
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return Retry("the server closed the connection")
    return Retry(f"transport error: {type(exc).__name__}")


def redact_url(url: str) -> str:
    """``https://hooks.example.com/…``: scheme and host only, for logs."""
    scheme, sep, rest = url.partition("://")
    host = rest.split("/", 1)[0].rsplit("@", 1)[-1]
    return f"{scheme}{sep}{host}/…" if sep else "…"


def _snippet(body: bytes) -> str:
    text = " ".join(body[:200].decode("utf-8", "replace").split())
    return f": {text[:120]}" if text and not text.startswith("<") else ""
