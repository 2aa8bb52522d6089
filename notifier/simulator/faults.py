"""Fault switches and the scripted fault queue of the simulator.

Per viewer-list request the server calls `Faults.draw()`: a scripted entry, if one is
queued, wins (an "ok" entry suppresses random faults for that request); otherwise the
random switches are tried in a fixed order (429, 5xx, malformed, slow), each drawing from
the fault's own `random.Random(seed)` only when its rate is above zero.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field
from typing import Final

__all__ = ["ERROR_FAULTS", "FAULT_NAMES", "Faults"]

#: Status faults answered with a JSON `{"message"}` or (``-html``) an HTML error page.
ERROR_FAULTS: Final = frozenset({"500", "502", "503", "500-html", "502-html", "503-html"})
_MALFORMED: Final = ("truncated", "html-200", "garbage")

#: Every name `Faults.script` accepts.
FAULT_NAMES: Final = ERROR_FAULTS | frozenset(
    {
        "ok",
        "429",
        "slow",
        *_MALFORMED,
        "schema-no-id",
        "expire-token",
        "401",
        "403",
        "disconnect",
    }
)


@dataclass(slots=True)
class Faults:
    """Switches the tests flip while the server runs, and a queue of one-shot faults."""

    seed: int = 0
    error_rate: float = 0.0
    rate_limit_rate: float = 0.0
    retry_after: float = 1.0
    slow_rate: float = 0.0
    slow_seconds: float = 2.0
    malformed_rate: float = 0.0
    reorder_rate: float = 0.0
    churn_per_request: int = 0
    max_rows_per_page: int = 100
    token_ttl: float = 900.0
    auth_failure_status: int = 401
    _rng: random.Random = field(init=False, repr=False, compare=False)
    _queue: deque[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._queue = deque()

    def script(self, *faults: str) -> None:
        """Queue one-shot faults for the next viewer-list requests, in order."""
        unknown = [name for name in faults if name not in FAULT_NAMES]
        if unknown:
            raise ValueError(f"unknown fault(s) {unknown}; expected some of {sorted(FAULT_NAMES)}")
        self._queue.extend(faults)

    @property
    def pending(self) -> tuple[str, ...]:
        """The scripted faults not consumed yet."""
        return tuple(self._queue)

    def draw(self) -> str:
        """The fault for the next viewer-list request ("ok" for none)."""
        if self._queue:
            return self._queue.popleft()
        if self._hit(self.rate_limit_rate):
            return "429"
        if self._hit(self.error_rate):
            status = self._rng.choice(("500", "502", "503"))
            return status + "-html" if self._rng.random() < 0.5 else status
        if self._hit(self.malformed_rate):
            return self._rng.choice(_MALFORMED)
        if self._hit(self.slow_rate):
            return "slow"
        return "ok"

    def draw_reorder(self) -> bool:
        """Whether to shuffle the population before serving the next page."""
        return self._hit(self.reorder_rate)

    @property
    def retry_after_header(self) -> str:
        """`retry_after` as a Retry-After value: integer seconds when whole."""
        value = self.retry_after
        return str(int(value)) if value == int(value) else str(value)

    def _hit(self, rate: float) -> bool:
        return rate > 0 and self._rng.random() < rate
