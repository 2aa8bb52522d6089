"""What the leading poller tells the status model (``notifier.status``): its newest cycle, and
the largest audiences over the last hour.

After every cycle it led, the poller hands the writer a ``CycleReport``: one HSET of
``P:{C}:status`` (the fields: ``status_fields``). After a complete, committed poll in a new
``HISTORY_EVERY`` slot of the wall clock it adds a ``Sample``, pushed onto ``P:{C}:history``
(newest first) and trimmed to an hour (``HISTORY_KEEP`` samples) by a script that pushes only
when the newest sample there is of an earlier slot: replicas taking over from one another never
put two samples in one slot, and one whose clock is behind never puts one out of order. Both go
in one pipelined round trip.

Nothing here may delay or fail a poll: writes run in the background, one at a time; a report
that arrives while one is in flight waits, replacing any older one still waiting (only the
newest cycle matters; a waiting sample is kept). A failed write is logged once, at info, until
one succeeds again. The data path never reads these keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgspec
import structlog

from notifier.keys import HISTORY_EVERY, HISTORY_STREAMS
from notifier.metrics import TOP_STREAMS
from notifier.redis_client import REDIS_ERRORS, redis_reason

if TYPE_CHECKING:
    from collections.abc import Mapping

    from structlog.typing import FilteringBoundLogger

    from notifier.detect.store import Snapshot
    from notifier.detect.tally import StreamId, StreamState
    from notifier.keys import ClusterKeys
    from notifier.metrics import Metrics
    from notifier.redis_client import AnyRedis

__all__ = [
    "HISTORY_KEEP",
    "CycleReport",
    "PollRecord",
    "Sample",
    "StatusWriter",
    "audience_gauges",
    "decode_sample",
    "encode_sample",
    "read_status_fields",
    "status_fields",
    "top_streams",
]

EVERY_MS = int(HISTORY_EVERY * 1000)
HISTORY_KEEP = int(3600 / HISTORY_EVERY)
"""Samples kept in ``P:{C}:history``: one hour."""
WRITE_TIMEOUT = 5.0  # one status write at most; the next report is written after it
CLOSE_WAIT = 1.0  # a stop waits this long for the write in flight

# KEYS[1] history; ARGV: sample JSON, its slot, slot length (ms), samples kept.
_PUSH = """
local head = redis.call('LINDEX', KEYS[1], 0)
if head then
  local ok, last = pcall(cjson.decode, head)
  if ok and type(last) == 'table' and tonumber(last['at'])
      and math.floor(tonumber(last['at']) / tonumber(ARGV[3])) >= tonumber(ARGV[2]) then
    return 0
  end
end
redis.call('LPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[4]) - 1)
return 1
"""


@dataclass(frozen=True, slots=True)
class CycleReport:
    """One poll cycle the poller led, as the status model shows it."""

    at_ms: int
    """Wall clock at the end of the cycle."""
    duration: float
    """Seconds, the whole cycle (as ``notifier_poll_duration_seconds`` measures it)."""
    reason: str | None
    """Why the cycle did not commit a complete poll, one line; None: it did."""
    events: int
    """Events the cycle wrote."""
    tracked: int | None
    """Viewers tracked after the cycle; None: not known (no state loaded yet)."""
    streams: int | None
    """Live audiences after the cycle (0 with stream events off); None: not known."""


@dataclass(frozen=True, slots=True)
class PollRecord:
    """``P:{C}:status`` read back (``read_status_fields``): a ``CycleReport`` and its writer."""

    at_ms: int
    duration: float
    complete: bool
    reason: str | None = None
    events: int = 0
    tracked: int | None = None
    streams: int | None = None
    owner: str | None = None


@dataclass(frozen=True, slots=True)
class Sample:
    """The audiences after one committed poll, for the console's charts."""

    at_ms: int
    seq: int
    """The cluster's sequence after the commit: the last event written."""
    tracked: int
    streams: tuple[tuple[str | None, str, int], ...]
    """``(applicationId, streamKey, viewers)`` of the largest audiences, largest first."""


def status_fields(report: CycleReport, owner: str) -> dict[str, str]:
    """The fields of ``P:{C}:status`` for one cycle (``tracked``, ``streams``: when known)."""
    fields = {
        "at": str(report.at_ms),
        "duration": f"{report.duration:.3f}",
        "complete": "0" if report.reason else "1",
        "reason": report.reason or "",
        "events": str(report.events),
        "owner": owner,
    }
    if report.tracked is not None:
        fields["tracked"] = str(report.tracked)
    if report.streams is not None:
        fields["streams"] = str(report.streams)
    return fields


def read_status_fields(fields: Mapping[str, str]) -> PollRecord | None:
    """``status_fields`` read back; None before the first cycle. Unreadable numbers count as
    absent (the hash is for people: a bad field must not hide the rest)."""
    at = _int(fields.get("at"))
    if at is None:
        return None
    try:
        duration = float(fields.get("duration") or 0)
    except ValueError:
        duration = 0.0
    return PollRecord(
        at_ms=at,
        duration=duration,
        complete=fields.get("complete") == "1",
        reason=" ".join(fields.get("reason", "").split()) or None,
        events=_int(fields.get("events")) or 0,
        tracked=_int(fields.get("tracked")),
        streams=_int(fields.get("streams")),
        owner=fields.get("owner") or None,
    )


def _int(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(float(text))
    except (ValueError, OverflowError):
        return None


class _SampleWire(msgspec.Struct):
    at: int
    seq: int = 0
    tracked: int = 0
    streams: list[tuple[str | None, str, int]] = msgspec.field(default_factory=list)


_decode_sample = msgspec.json.Decoder(_SampleWire).decode


def decode_sample(raw: bytes) -> Sample | None:
    """``encode_sample`` read back; None for an entry that is not one."""
    try:
        wire = _decode_sample(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    return Sample(wire.at, wire.seq, wire.tracked, tuple(wire.streams))


def encode_sample(sample: Sample) -> bytes:
    """``{"at": ms, "seq": n, "tracked": n, "streams": [[app, key, viewers], ...]}``."""
    return msgspec.json.encode(
        {
            "at": sample.at_ms,
            "seq": sample.seq,
            "tracked": sample.tracked,
            "streams": sample.streams,
        }
    )


def top_streams(
    states: Mapping[StreamId, StreamState], count: int = HISTORY_STREAMS
) -> tuple[tuple[str | None, str, int], ...]:
    """The ``count`` largest audiences, largest first: one pass over the live streams."""
    largest = heapq.nlargest(count, states.items(), key=lambda item: item[1].viewers)
    return tuple(
        (stream.application_id, stream.stream_key, state.viewers) for stream, state in largest
    )


def audience_gauges(metrics: Metrics, cluster: str, states: Mapping[StreamId, StreamState]) -> None:
    """After a committed poll: the live audiences and the largest ones as Prometheus gauges."""
    top = ((app or "", key, n) for app, key, n in top_streams(states, TOP_STREAMS))
    metrics.set_audiences(cluster, len(states), top)


class StatusWriter:
    """Writes one cluster's ``P:{C}:status`` and ``P:{C}:history`` in the background."""

    def __init__(
        self,
        redis: AnyRedis,
        keys: ClusterKeys,
        owner: str,
        *,
        log: FilteringBoundLogger | None = None,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._owner = owner
        self._log = log or structlog.get_logger("notifier.poller").bind(cluster=keys.cluster)
        self._waiting: tuple[CycleReport, Sample | None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._slot: int | None = None  # the newest history slot this process sampled
        self._failing = False

    def sample_due(self, at_ms: int) -> bool:
        """Whether a poll committed at ``at_ms`` starts a new history slot (for this process;
        the script settles it between replicas)."""
        return self._slot is None or at_ms // EVERY_MS > self._slot

    def record(
        self,
        at_ms: int,
        took: float,
        reason: str | None,
        events: int,
        *,
        snapshot: Snapshot | None,
        states: Mapping[StreamId, StreamState] | None,
    ) -> None:
        """One cycle the poller led: its report, and an audience sample when one is due (a
        complete, committed poll in a new slot). ``snapshot`` None: no state loaded yet;
        ``states`` None: stream events are off."""
        tracked = streams = None
        sample = None
        if snapshot is not None:
            tracked = len(snapshot.tracked)
            streams = len(states) if states is not None else 0
            if reason is None and self.sample_due(at_ms):
                top = top_streams(states) if states is not None else ()
                sample = Sample(at_ms, snapshot.sequence, tracked, top)
        self.submit(CycleReport(at_ms, took, reason, events, tracked, streams), sample)

    def submit(self, report: CycleReport, sample: Sample | None = None) -> None:
        """Write ``report`` (and ``sample``) soon; returns at once."""
        if sample is not None:
            self._slot = sample.at_ms // EVERY_MS
        elif self._waiting is not None:
            sample = self._waiting[1]
        self._waiting = (report, sample)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain(), name=f"status:{self._keys.cluster}")

    async def flush(self) -> None:
        """Until every report submitted so far is written (or its write failed)."""
        while self._task is not None and not self._task.done():
            await asyncio.wait({self._task})

    async def aclose(self) -> None:
        """Give the write in flight ``CLOSE_WAIT`` to finish; drop what waits."""
        task, self._task, self._waiting = self._task, None, None
        if task is not None and not task.done():
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                async with asyncio.timeout(CLOSE_WAIT):
                    await task

    async def _drain(self) -> None:
        while self._waiting is not None:
            (report, sample), self._waiting = self._waiting, None
            await self._write(report, sample)

    async def _write(self, report: CycleReport, sample: Sample | None) -> None:
        keys = self._keys
        try:
            async with asyncio.timeout(WRITE_TIMEOUT):
                async with self._redis.pipeline(transaction=False) as pipe:
                    fields = status_fields(report, self._owner)
                    pipe.hset(keys.status, mapping=fields)  # type: ignore[arg-type] # invariant key
                    if sample is not None:
                        args = (encode_sample(sample), sample.at_ms // EVERY_MS, EVERY_MS)
                        pipe.eval(_PUSH, 1, keys.history, *args, HISTORY_KEEP)
                    await pipe.execute()
        except REDIS_ERRORS as exc:
            if not self._failing:
                self._log.info(
                    "poller.status_write_failed",
                    error=redis_reason(exc),
                    effect="the status page shows an older poll; polling goes on",
                )
            self._failing = True
            return
        if self._failing:
            self._log.debug("poller.status_write_recovered")
        self._failing = False
