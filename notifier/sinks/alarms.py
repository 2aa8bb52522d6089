"""A sink worker's log lines that are said once per change of state, not once per attempt:
Redis lost and back, and the stream trimmed past events the sink never read."""

from __future__ import annotations

from typing import TYPE_CHECKING

from notifier.redis_client import redis_reason

if TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger

    from notifier.metrics import Metrics
    from notifier.sinks.stream import SinkStream

__all__ = ["Alarms"]


class Alarms:
    """What one worker has said so far (pass in its log and metrics)."""

    def __init__(self, sink: str, log: FilteringBoundLogger, metrics: Metrics) -> None:
        self._sink = sink
        self._log = log
        self._metrics = metrics
        self._redis_ok = True
        self._trim_reported = False

    def redis(self, *, ok: bool, error: BaseException | None = None) -> None:
        """Redis answered (``ok``) or failed with ``error``: said when that changes."""
        if ok and not self._redis_ok:
            self._log.info("sink.redis_recovered")
        elif not ok and self._redis_ok:
            self._log.warning("sink.redis_unavailable", error=redis_reason(error or Exception()))
        self._redis_ok = ok

    async def check_trimmed(self, stream: SinkStream) -> None:
        """Say loudly when the stream was trimmed past events this sink never read."""
        unread_lost = await stream.trimmed_unread()
        if unread_lost and not self._trim_reported:
            self._metrics.deliveries.labels(self._sink, "trimmed_unread").inc()
            self._log.error(
                "sink.events_trimmed_unread",
                hint="the stream was trimmed (streams.maxlen) past events this sink had not"
                " read: they are gone for it; raise streams.maxlen or keep its workers running",
            )
        self._trim_reported = unread_lost
