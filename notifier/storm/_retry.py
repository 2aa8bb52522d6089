"""Retrying inside the Storm client: the signal a failed attempt raises, and the backoff.

What a status means and how to read ``Retry-After`` are shared with the sinks: ``notifier.http``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["Backoff", "RetryableFailure"]


class RetryableFailure(Exception):  # noqa: N818 - a signal inside the client, never escapes it
    """An attempt failed in a way another attempt may fix."""

    def __init__(
        self, reason: str, *, retry_after: float | None = None, kind: str = "unavailable"
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.kind = kind  # the StormError kind if the retries run out


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with full jitter: attempt n waits up to ``base * 2**(n-1)``, capped."""

    base: float = 0.2
    cap: float = 5.0

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """The wait after failed attempt number ``attempt`` (1-based)."""
        ceiling = min(self.cap, self.base * 2 ** min(attempt - 1, 30))
        return (rng or random).uniform(self.base / 2, ceiling)
