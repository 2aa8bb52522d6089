"""What an HTTP answer means for a delivery: its ``Outcome`` (docs/events.md, receivers).

2xx delivered; redirects are not followed (permanent); 408, 429, 5xx, timeouts and connection
errors are retried, honouring ``Retry-After``; 410 pauses the sink; any other 4xx is permanent.
Reasons never carry a URL: receivers' URLs hold tokens. The status policy itself, beside
the Storm client's, is in ``notifier.http``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from notifier.http import delivery_retryable, parse_retry_after, transport_reason
from notifier.sinks.base import Delivered, Failed, Outcome, Retry

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["classify", "transport_failure"]

_DELIVERED = {status: Delivered(status=status) for status in range(200, 300)}  # immutable: shared


def classify(
    status: int, headers: Mapping[str, str], body: bytes, *, now: float | None = None
) -> Outcome:
    """The outcome of an HTTP answer."""
    if 200 <= status < 300:
        return _DELIVERED[status]
    reason = f"HTTP {status}" + _snippet(body)
    if 300 <= status < 400:
        return Failed(f"HTTP {status}: redirects are not followed", status=status)
    if delivery_retryable(status):
        after = parse_retry_after(headers.get("Retry-After"), time.time() if now is None else now)
        return Retry(reason, status=status, after=after)
    if status == 410:
        return Failed(reason + " (Gone: the endpoint was removed)", status=status, pause=True)
    return Failed(reason, status=status)


def transport_failure(exc: BaseException, timeout: float) -> Retry:
    """A request that got no HTTP answer: worth another attempt."""
    return Retry(transport_reason(exc, timeout))


def _snippet(body: bytes) -> str:
    text = " ".join(body[:200].decode("utf-8", "replace").split())
    return f": {text[:120]}" if text and not text.startswith("<") else ""
