"""What a sink worker tells the status model about its lane (one sink, one cluster).

The hash ``P:{C}:sinkstate:<sink>`` (``ClusterKeys.sink_state``) holds:

=====================  =============================================================
``paused``             why the lane's sink is paused (as ``last_error``); absent while not
``last_error``         the newest failed delivery, one line, URLs cut to scheme and host
``last_error_at``      when it failed (Unix ms)
``last_delivered_at``  when the newest delivery succeeded (Unix ms)
=====================  =============================================================

``LaneReporter`` writes it for the worker that holds the lane's lease: a change of ``paused``
at once, the rest at most once every ``every`` seconds. It is a report, never part of the data
path: a write that fails is logged once and retried with the next one, and never fails a
delivery. ``LaneReport.decode`` reads it back (``notifier.status``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import structlog

from notifier.http import redact_url
from notifier.redis_client import REDIS_ERRORS, redis_reason

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from structlog.typing import FilteringBoundLogger

    from notifier.redis_client import AnyRedis

__all__ = ["ERROR_LENGTH", "LaneReport", "LaneReporter", "one_line_error"]

PAUSED: Final = "paused"
LAST_ERROR: Final = "last_error"
LAST_ERROR_AT: Final = "last_error_at"
LAST_DELIVERED_AT: Final = "last_delivered_at"
ERROR_LENGTH = 300
"""The longest ``last_error`` kept, in characters."""

_UNKNOWN: Final = object()


def one_line_error(reason: str) -> str:
    """``reason`` on one line of at most ``ERROR_LENGTH`` characters, URLs scheme + host only."""
    words = [redact_url(word) if "://" in word else word for word in reason.split()]
    return " ".join(words)[:ERROR_LENGTH]


@dataclass(frozen=True, slots=True)
class LaneReport:
    """The hash read back; times are Unix ms."""

    paused: str | None = None
    last_error: str | None = None
    last_error_at: int | None = None
    last_delivered_at: int | None = None

    @classmethod
    def decode(cls, fields: Mapping[bytes, bytes]) -> LaneReport:
        """From ``HGETALL``; fields that are missing or unreadable are None."""

        def text(name: str) -> str | None:
            raw = fields.get(name.encode())
            return raw.decode("utf-8", "replace") if raw else None

        def ms(name: str) -> int | None:
            raw = text(name)
            return int(raw) if raw is not None and raw.isdigit() else None

        return cls(text(PAUSED), text(LAST_ERROR), ms(LAST_ERROR_AT), ms(LAST_DELIVERED_AT))


class LaneReporter:
    """Keeps one lane's hash up to date for the worker leading it. Pass in Redis."""

    def __init__(
        self,
        redis: AnyRedis,
        key: str,
        *,
        every: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        log: FilteringBoundLogger | None = None,
    ) -> None:
        self.every = every
        self._redis = redis
        self._key = key
        self._clock = clock
        self._wall_clock = wall_clock
        self._log = log or structlog.get_logger("notifier.sink")
        self._pending: dict[str, str] = {}
        self._written_paused: object = _UNKNOWN  # so the first sync clears a stale pause
        self._next_write = 0.0
        self._write_ok = True

    def delivered(self) -> None:
        """A delivery succeeded just now (kept until the next write)."""
        self._pending[LAST_DELIVERED_AT] = str(int(self._wall_clock() * 1000))

    def failed(self, reason: str) -> None:
        """A delivery failed just now, for ``reason`` (kept until the next write)."""
        self._pending[LAST_ERROR] = one_line_error(reason)
        self._pending[LAST_ERROR_AT] = str(int(self._wall_clock() * 1000))

    async def sync(self, paused: str | None, *, force: bool = False) -> None:
        """Write what changed: a different ``paused`` at once (removed when None), the rest
        when ``every`` seconds have passed since the last write, or with ``force``."""
        pause_changed = paused != self._written_paused
        if not pause_changed and (not self._pending or (not force and not self._due())):
            return
        fields, self._pending = self._pending, {}
        if paused is not None and pause_changed:
            fields[PAUSED] = one_line_error(paused)
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                if fields:
                    pipe.hset(self._key, mapping=fields)  # type: ignore[arg-type]
                if paused is None and pause_changed:
                    pipe.hdel(self._key, PAUSED)
                await pipe.execute()
        except REDIS_ERRORS as exc:
            self._pending = {**fields, **self._pending}  # newer values win; retried next time
            self._pending.pop(PAUSED, None)
            if self._write_ok:
                self._log.info(
                    "sink.report_failed",
                    error=redis_reason(exc),
                    effect="the status page shows this lane's last state until Redis answers",
                )
            self._write_ok = False
            return
        self._write_ok = True
        self._written_paused = paused
        self._next_write = self._clock() + self.every

    def _due(self) -> bool:
        return self._clock() >= self._next_write
