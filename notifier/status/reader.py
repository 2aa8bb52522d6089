"""Reading the status from Redis only, so that every replica answers the same.

The work is bounded whatever the audience or the backlog; it never lists the keyspace (no
KEYS, no SCAN). Per cluster, concurrently, one pipeline:

    HGETALL P:{C}:status     the newest poll cycle (written by the leading poller)
    HGETALL P:{C}:meta       polled_at (the newest complete poll) and sequence
    GET     P:{C}:lease      owner:token of the leading replica
    HLEN    P:{C}:viewers    tracked viewers (when the poll cycle does not say)
    HLEN    P:{C}:streams    live audiences
    LRANGE  P:{C}:history    the audience samples of the last hour (at most HISTORY_SAMPLES)
    XREVRANGE P:{C}:events + - COUNT 50    the newest events
    XINFO GROUPS P:{C}:events              each sink partition's lag and pending
    per sink partition: HGETALL P:{C}:sinkstate:<lane>    its report (``Partition.lane``)
                        GET P:{C}:sinklease:<...>         its lease (``Partition.lease_key``)
    per sink: HLEN P:{C}:retries:<s>, XLEN P:{C}:dlq:<s>

then one more round trip for the stream states: the whole ``P:{C}:streams`` hash while it
holds at most ``SCAN_LIMIT`` audiences, else the states of the largest ones of the newest
audience sample (HMGET), or without a sample one HSCAN page of ``SCAN_LIMIT``.

A sink of ``partitions: K`` has K partitions (``notifier.sinks.partition``), each with its own
group, lease and report; for K = 1 their names are the sink's own (``sink:<s>``, ``<s>``).

``detail=False`` reads only what health needs (the first five and each sink partition's
report, for ``paused``): what ``/readyz`` asks several times a minute. Redis that does not
answer within ``READ_TIMEOUT`` is ``StatusUnavailable`` (``redis: unreachable (...)``).
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, cast

import msgspec

from notifier import __version__
from notifier.detect.codec import StreamCodec
from notifier.detect.report import decode_sample, read_status_fields
from notifier.detect.tally import StreamId
from notifier.durations import format_duration
from notifier.errors import NotifierError
from notifier.events import UnreadableEvent, decode_event
from notifier.keys import HISTORY_EVERY, ClusterKeys
from notifier.redis_client import REDIS_ERRORS, redis_reason
from notifier.sinks.lane import LaneReport
from notifier.sinks.partition import Partition, partitions
from notifier.status.build import (
    EVENTS_LAST,
    HOUR_MS,
    ClusterReading,
    LaneReading,
    PartitionReading,
    build_status,
)

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from notifier.config import Settings
    from notifier.detect.report import Sample
    from notifier.detect.tally import StreamState
    from notifier.events import Event
    from notifier.redis_client import AnyRedis
    from notifier.status.model import Status

__all__ = ["HISTORY_SAMPLES", "READ_TIMEOUT", "SCAN_LIMIT", "StatusUnavailable", "read_status"]

READ_TIMEOUT = 2.0
"""Seconds Redis has to answer every round trip of one read."""
SCAN_LIMIT = 1000
"""Audiences of a cluster read whole; above this, only the largest of the newest sample."""
HISTORY_SAMPLES = int(HOUR_MS / 1000 / HISTORY_EVERY) + 5
"""Samples read at most: an hour of them, and a few to spare."""


class StatusUnavailable(NotifierError):  # noqa: N818 - reads as a state, like StormUnavailable
    """Redis did not answer; the message is one line (``redis: unreachable (...)``)."""


async def read_status(
    redis: AnyRedis,
    settings: Settings,
    *,
    now: float | None = None,
    cluster: str | None = None,
    detail: bool = True,
) -> Status:
    """The status of every configured cluster (or of ``cluster``) and sink, from Redis.

    ``now`` (Unix seconds, default the clock after reading) is what "recent" is measured
    against. With ``detail`` False only health is read: clusters, sinks paused or not; no
    streams, events, lags or counts (``/readyz``).
    """
    names = [settings.cluster(cluster).name] if cluster else [c.name for c in settings.clusters]
    sinks = [(s.name, partitions(s.name, s.partitions)) for s in settings.sinks]
    prefix = settings.redis.key_prefix
    try:
        async with asyncio.timeout(READ_TIMEOUT):
            readings = await asyncio.gather(
                *(
                    _read_cluster(redis, ClusterKeys(prefix, name), sinks, detail=detail)
                    for name in names
                )
            )
    except TimeoutError:
        raise StatusUnavailable(
            f"redis: unreachable (no answer within {format_duration(READ_TIMEOUT)})"
        ) from None
    except REDIS_ERRORS as exc:
        raise StatusUnavailable(f"redis: unreachable ({redis_reason(exc)})") from None
    now_ms = int((time.time() if now is None else now) * 1000)
    return build_status(settings, readings, now_ms=now_ms, version=__version__)


async def _read_cluster(
    redis: AnyRedis,
    keys: ClusterKeys,
    sinks: Sequence[tuple[str, Sequence[Partition]]],
    *,
    detail: bool,
) -> ClusterReading:
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.status)
        pipe.hgetall(keys.meta)
        pipe.get(keys.lease)
        pipe.hlen(keys.viewers)
        pipe.hlen(keys.streams)
        if detail:
            pipe.lrange(keys.history, 0, HISTORY_SAMPLES - 1)
            pipe.xrevrange(keys.events, "+", "-", count=EVENTS_LAST)
            pipe.xinfo_groups(keys.events)
        for sink, parts in sinks:
            for part in parts:
                pipe.hgetall(keys.sink_state(part.lane))
                if detail:
                    pipe.get(part.lease_key(keys))
            if detail:
                pipe.hlen(keys.retries(sink))
                pipe.xlen(keys.dlq(sink))
        replies = iter(await pipe.execute(raise_on_error=False))
    status, meta, lease, viewers, stream_count = (_ok(next(replies)) for _ in range(5))
    samples: tuple[Sample, ...] = ()
    events: tuple[Event, ...] = ()
    groups: dict[str, dict[str, Any]] = {}
    if detail:
        samples = _samples(_ok(next(replies)))
        events = _events(keys.cluster, _ok(next(replies)))
        groups = _groups(next(replies))
    lanes = []
    for sink, parts in sinks:
        readings = []
        for part in parts:
            report = LaneReport.decode(
                {_bytes(k): _bytes(v) for k, v in _ok(next(replies)).items()}
            )
            part_lease = _ok(next(replies)) if detail else None
            lag, pending = _lag_and_pending(groups.get(part.group))
            readings.append(
                PartitionReading(
                    index=part.index,
                    lag=lag,
                    pending=pending,
                    leader=_owner(part_lease),
                    report=report,
                )
            )
        retrying = dead = 0
        if detail:
            retrying, dead = int(_ok(next(replies))), int(_ok(next(replies)))
        lanes.append(
            LaneReading(sink=sink, retrying=retrying, dead_letters=dead, partitions=tuple(readings))
        )
    fields = _fields(meta)
    streams = await _stream_states(redis, keys, int(stream_count), samples) if detail else ()
    return ClusterReading(
        name=keys.cluster,
        poll=read_status_fields(_fields(status)),
        polled_at_ms=_int(fields.get("polled_at")),
        sequence=_int(fields.get("sequence")) or 0,
        leader=_owner(lease),
        viewers=int(viewers),
        stream_count=int(stream_count),
        samples=samples,
        events=events,
        lanes=tuple(lanes),
        streams=streams,
    )


async def _stream_states(
    redis: AnyRedis, keys: ClusterKeys, count: int, samples: Sequence[Sample]
) -> tuple[tuple[StreamId, StreamState], ...]:
    """The live audiences' states, bounded (see the module docstring)."""
    if not count:
        return ()
    pairs: list[tuple[bytes, bytes]]
    if count <= SCAN_LIMIT:
        found = cast("dict[bytes, bytes]", await redis.hgetall(keys.streams))
        pairs = list(found.items())
    elif samples:
        names = [StreamCodec.name(StreamId(app, key)) for app, key, _ in samples[0].streams if app]
        values = cast("list[bytes | None]", await redis.hmget(keys.streams, names))
        pairs = [(n, v) for n, v in zip(names, values, strict=True) if v is not None]
    else:
        reply = await redis.hscan(keys.streams, 0, count=SCAN_LIMIT)
        pairs = list(cast("dict[bytes, bytes]", reply[1]).items())
    states = []
    for name, blob in pairs:
        try:
            states.append(StreamCodec.decode(_bytes(name), _bytes(blob)))
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue  # not a state this version reads: the poller says so, not the status
    return tuple(states)


# --- decoding what Redis holds ----------------------------------------------------------------


def _samples(raw: list[bytes]) -> tuple[Sample, ...]:
    return tuple(sample for item in raw if (sample := decode_sample(item)) is not None)


def _events(cluster: str, raw: list[tuple[bytes, dict[bytes, bytes]]]) -> tuple[Event, ...]:
    out = []
    for entry_id, fields in raw:
        try:
            out.append(decode_event(cluster, _text(entry_id), fields))
        except UnreadableEvent:
            continue  # the sinks dead-letter it; the status shows events
    return tuple(out)


def _groups(reply: object) -> dict[str, dict[str, Any]]:
    """XINFO GROUPS by group name; none while the stream does not exist."""
    if isinstance(reply, Exception):
        if "no such key" in str(reply).lower():
            return {}
        raise reply
    groups = cast("list[dict[str, Any]]", reply)
    return {_text(g["name"]): g for g in groups}


def _lag_and_pending(group: Mapping[str, Any] | None) -> tuple[int | None, int]:
    """One partition's lag and pending entries, from its group's XINFO GROUPS entry. Lag None:
    no group yet, or Redis cannot count it (the stream was trimmed past what it had read).
    The lane's figures are the aggregate of these (``build``: the largest lag, pending summed)."""
    if group is None:
        return None, 0
    lag = group.get("lag")
    return (None if lag is None else int(lag)), int(group.get("pending") or 0)


def _owner(lease: Any) -> str | None:
    """The owner id of a lease's ``owner:token`` value; None when nobody holds it."""
    owner = _text(lease).rpartition(":")[0] if lease else ""
    return owner or None


def _ok(reply: Any) -> Any:
    if isinstance(reply, Exception):
        raise reply
    return reply


def _fields(raw: Mapping[Any, Any]) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in raw.items()}


def _int(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(float(text))
    except (ValueError, OverflowError):
        return None


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()
