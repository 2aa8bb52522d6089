"""Slack app mode's book-keeping in Redis: which message is each incident's and audience's.

Per (sink, cluster, stream), two JSON records (``keys.slack_incident``, ``keys.slack_audience``)
hold the ``ts`` of the stream's incident message and audience message and what they show; one
sorted set (``keys.slack_told``) holds the ids of the events already put in a message. A record
is written before the post it is about (``posting``), again with the ``ts`` as soon as Slack
answers, and always before the delivery returns, so before the worker acknowledges the
events: a restart, a replica or a redelivery reads it and edits the message instead of
posting another (``app.SlackAppSink``). The records of one delivery and its told ids are
written in one transaction: the cluster's keys share a hash slot.

Records expire: an open one a month after its last change, a closed one after a week (longer
than a retry schedule lasts, so a late redelivery still finds it); told ids after a day.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Final

import msgspec

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from notifier.keys import ClusterKeys
    from notifier.redis_client import AnyRedis
    from notifier.sinks.slack.routing import StreamRef

__all__ = ["AudienceRecord", "IncidentRecord", "MessageBook", "compact"]

OPEN_TTL: Final = 30 * 86400
CLOSED_TTL: Final = 7 * 86400
TOLD_TTL_MS: Final = 86_400_000
MAX_CROSSINGS: Final = 20  # kept in an audience record, newest last


class IncidentRecord(msgspec.Struct, kw_only=True):
    """A stream's incident message: what it shows and where it is."""

    incident: str  # the id of the stream.health_degraded event that opened it
    opened: dict[str, Any]  # that event, compact
    ts: str | None = None  # the message, once posted
    channel: str | None = None  # its channel's ID, as chat.update wants it
    posting: bool = False  # a post went out and its answer was not seen (a crash, a timeout)
    dropped: int = 0  # viewer drops replied in the thread
    recovered: int = 0  # viewer recoveries replied in the thread
    latest: str | None = None  # the time of the newest event replied in the thread
    updated_at: float = 0.0  # wall clock of the last post or update of the message
    stale: bool = False  # the thread told more than the message shows
    resolved: dict[str, Any] | None = None  # the event that ended it, compact

    @property
    def is_open(self) -> bool:
        """Not resolved yet."""
        return self.resolved is None


class AudienceRecord(msgspec.Struct, kw_only=True):
    """A stream's audience message: its start, crossings and end."""

    audience: str  # the id of the event the message was first posted for
    ts: str | None = None
    channel: str | None = None
    posting: bool = False
    started: dict[str, Any] | None = None
    crossings: list[dict[str, Any]] = msgspec.field(default_factory=list)
    ended: dict[str, Any] | None = None

    def add_crossing(self, event: dict[str, Any]) -> bool:
        """Add a crossing once (by event id); False if it was there already."""
        if any(c.get("id") == event.get("id") for c in self.crossings):
            return False
        self.crossings = [*self.crossings, event][-MAX_CROSSINGS:]
        return True


def compact(payload: Mapping[str, Any]) -> dict[str, Any]:
    """An event as a record keeps it: the envelope's fields a message shows, ``data`` without
    a viewer record."""
    data = payload.get("data")
    kept = {k: v for k, v in data.items() if k != "viewer"} if isinstance(data, dict) else {}
    out = {k: payload[k] for k in ("id", "type", "time", "subject", "sequence") if k in payload}
    out["data"] = kept
    return out


_incident_decoder = msgspec.json.Decoder(IncidentRecord)
_audience_decoder = msgspec.json.Decoder(AudienceRecord)


class MessageBook:
    """The records of one app-mode sink. Pass in the Redis client."""

    def __init__(
        self, redis: AnyRedis, sink: str, *, wall_clock: Callable[[], float] = time.time
    ) -> None:
        self._redis = redis
        self._sink = sink
        self._wall_clock = wall_clock

    async def incident(self, keys: ClusterKeys, stream: StreamRef) -> IncidentRecord | None:
        """The stream's latest incident record, open or resolved; None if there is none."""
        raw = await self._redis.get(self._incident_key(keys, stream))
        return None if raw is None else _incident_decoder.decode(raw)

    async def audience(self, keys: ClusterKeys, stream: StreamRef) -> AudienceRecord | None:
        """The stream's audience record; None if there is none."""
        raw = await self._redis.get(self._audience_key(keys, stream))
        return None if raw is None else _audience_decoder.decode(raw)

    async def told(self, keys: ClusterKeys, ids: Iterable[str]) -> set[str]:
        """Which of ``ids`` are in a message already."""
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return set()
        scores = await self._redis.zmscore(keys.slack_told(self._sink), wanted)
        return {
            event_id for event_id, score in zip(wanted, scores, strict=True) if score is not None
        }

    async def write(
        self,
        keys: ClusterKeys,
        stream: StreamRef | None,
        *,
        incident: IncidentRecord | None = None,
        audience: AudienceRecord | None = None,
        told: Iterable[str] = (),
    ) -> None:
        """Keep the stream's records and told ids, all or nothing (a record needs a stream)."""
        if stream is None and (incident is not None or audience is not None):
            raise ValueError("a record belongs to a stream")
        now_ms = int(self._wall_clock() * 1000)
        told_key = keys.slack_told(self._sink)
        marks = dict.fromkeys(told, now_ms)
        async with self._redis.pipeline(transaction=True) as pipe:
            if incident is not None and stream is not None:
                ttl = OPEN_TTL if incident.is_open else CLOSED_TTL
                pipe.set(self._incident_key(keys, stream), msgspec.json.encode(incident), ex=ttl)
            if audience is not None and stream is not None:
                ttl = OPEN_TTL if audience.ended is None else CLOSED_TTL
                pipe.set(self._audience_key(keys, stream), msgspec.json.encode(audience), ex=ttl)
            if marks:
                pipe.zadd(told_key, marks)
                pipe.zremrangebyscore(told_key, "-inf", now_ms - TOLD_TTL_MS)
                pipe.pexpire(told_key, TOLD_TTL_MS)
            await pipe.execute()

    def now(self) -> float:
        """Wall-clock seconds, as records keep them."""
        return self._wall_clock()

    def _incident_key(self, keys: ClusterKeys, stream: StreamRef) -> str:
        return keys.slack_incident(self._sink, stream.application_id, stream.stream_key)

    def _audience_key(self, keys: ClusterKeys, stream: StreamRef) -> str:
        return keys.slack_audience(self._sink, stream.application_id, stream.stream_key)
