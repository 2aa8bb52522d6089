"""What a failed request means, and how long to wait before the next attempt."""

from __future__ import annotations

import email.utils
import math
import random
from dataclasses import dataclass

__all__ = ["Backoff", "RetryableFailure", "is_retryable_status", "parse_retry_after"]


class RetryableFailure(Exception):  # noqa: N818 - a signal inside the client, never escapes it
    """An attempt failed in a way another attempt may fix."""

    def __init__(self, reason: str, *, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


def is_retryable_status(status: int) -> bool:
    """408, 425, 429 and every 5xx are worth another attempt."""
    return status in (408, 425, 429) or 500 <= status <= 599


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delay-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - now
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), 86400.0)


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with full jitter: attempt n waits up to ``base * 2**(n-1)``, capped."""

    base: float = 0.2
    cap: float = 5.0

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """The wait after failed attempt number ``attempt`` (1-based)."""
        ceiling = min(self.cap, self.base * 2 ** min(attempt - 1, 30))
        return (rng or random).uniform(self.base / 2, ceiling)
