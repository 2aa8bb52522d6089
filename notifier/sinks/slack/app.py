"""The ``slack`` sink in app mode (SPEC 5.1): one message per incident, edited in place.

A delivery is the events of one (cluster, streamKey) within ``group_wait``; ``routing.plan``
says where each goes (the channel digest, the incident message and its thread, the audience
message) and this module carries the steps out against the Web API, in order, stopping at the
first that fails (its ``Outcome`` is the delivery's).

**One incident message per incident.** The incident is the ``stream.health_degraded`` event
that opened it; its record (``book``), keyed by the stream, holds that event's id and the
message's ``ts``. The record is written before the post (``posting``) and with the ``ts``
as soon as Slack answers, before the delivery returns and so before any of its events is
acknowledged. A redelivery, a restart or a replica finds the record with the same incident
id and edits that message; a new degradation of the stream (another id) posts a new one. Every
step is idempotent the same way: the ids of the events already put in a digest or a thread are
kept (``book.told``), so a delivery that failed half-way and runs again skips what was done.
The one window left is a process killed between Slack's answer and the record's write (a few
milliseconds): the next attempt finds ``posting`` without a ``ts``, posts again and says so
(``slack.incident_may_be_duplicated``): without ``channels:history`` there is no way to look.

**Updates** of the incident message (its figures: what the thread told) go at most once per
``group_wait``; the one that resolves it always goes. ``message_not_found`` (someone deleted
it) posts a new incident message and keeps its ``ts``. Every ``chat.postMessage`` takes a turn
of the channel's pacer (``pacer``, shared through Redis by every process); a delivery starts
calls for up to ``timeout`` seconds and hands the rest back to the schedule (no attempt used).
Deliveries of one cluster take turns in the process (a lock): each reads a stream's records
and writes them back, and the worker's lease keeps other processes off the cluster.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import structlog

from notifier.keys import slack_pace
from notifier.redis_client import REDIS_ERRORS, redis_reason
from notifier.sinks.base import Batching, Delivered, Outcome, Retry
from notifier.sinks.slack.answers import (
    DEFAULT_RETRY_AFTER,
    MESSAGE_NOT_FOUND,
    PACED,
    is_rate_limit,
    outcome,
)
from notifier.sinks.slack.book import AudienceRecord, IncidentRecord, MessageBook, compact
from notifier.sinks.slack.incidents import audience_message, incident_message
from notifier.sinks.slack.message import build_message
from notifier.sinks.slack.pacer import LONGEST_WAIT, ChannelPacer
from notifier.sinks.slack.routing import (
    VIEWER_HEALTH,
    Digest,
    Item,
    Open,
    Reply,
    Resolve,
    group_key,
    plan,
    stream_of,
    window_of,
)
from notifier.sinks.slack.webapi import Answer, SlackWebApi

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from notifier.keys import ClusterKeys
    from notifier.sinks.base import Event, SinkContext
    from notifier.sinks.slack.config import SlackSinkSettings
    from notifier.sinks.slack.routing import Step, StreamRef

__all__ = ["SlackAppSink"]

GROUP_LIMIT: Final = 1000  # events in one delivery at most
_DELIVERED: Final = Delivered(status=200)
_STARTED, _CROSSED = "stream.audience_started", "stream.audience_crossed"
POST: Final = "chat.postMessage"
DROPPED: Final = "viewer.health_dropped"


@dataclass(slots=True)
class _Run:
    """One delivery's state: its cluster and keys, its deadline, what is told, the stream in
    hand and its incident record."""

    cluster: str
    keys: ClusterKeys
    deadline: float
    told: set[str] = field(default_factory=set)
    stream: StreamRef | None = None
    incident: IncidentRecord | None = None

    @property
    def stream_key(self) -> str | None:
        """The stream in hand's key, for log lines."""
        return self.stream.stream_key if self.stream else None


class SlackAppSink:
    """Posts and edits messages in one Slack channel through the Web API."""

    def __init__(
        self,
        settings: SlackSinkSettings,
        context: SinkContext,
        *,
        api: SlackWebApi | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if settings.token is None or settings.channel is None:
            raise ValueError("a Slack app sink needs token and channel")
        self.settings = settings
        self.channel = settings.channel
        self._api = api or SlackWebApi(settings.token, settings.api_url, timeout=settings.timeout)
        self._context = context
        self._book = MessageBook(context.redis, settings.name, wall_clock=wall_clock)
        self._pacer = ChannelPacer(context.redis, slack_pace(context.key_prefix, self.channel))
        self._clock = clock
        self._log = structlog.get_logger("notifier.sink").bind(sink=settings.name)
        self._turns: dict[str, asyncio.Lock] = {}  # one delivery at a time per cluster

    @property
    def batching(self) -> Batching:
        """Group by (cluster, streamKey) for ``group_wait``."""
        return Batching(size=GROUP_LIMIT, wait=self.settings.group_wait, key=group_key)

    async def deliver(self, events: Sequence[Event]) -> Outcome:
        """Carry out the steps of each stream's events; the first failure is the outcome."""
        items = sorted((Item(e, e.payload()) for e in events), key=lambda i: i.event.sequence)
        streams: dict[StreamRef | None, list[Item]] = {}
        for item in items:
            streams.setdefault(stream_of(item), []).append(item)
        cluster = events[0].cluster
        keys = self._context.keys(cluster)
        async with self._turns.setdefault(cluster, asyncio.Lock()):  # records: read, then write
            run = _Run(cluster, keys, deadline=self._clock() + self.settings.timeout)
            try:
                run.told = await self._book.told(keys, [e.id for e in events])
                for stream, group in streams.items():
                    if (failure := await self._stream(run, stream, group)) is not None:
                        return failure
            except REDIS_ERRORS as exc:
                return Retry(f"redis: {redis_reason(exc)}")
        return _DELIVERED

    async def aclose(self) -> None:
        """Close the Web API client's session; idempotent."""
        await self._api.aclose()

    async def _stream(
        self, run: _Run, stream: StreamRef | None, items: list[Item]
    ) -> Outcome | None:
        """The steps of one stream's events; None when all went well."""
        run.stream = stream
        run.incident = None if stream is None else await self._book.incident(run.keys, stream)
        record = run.incident
        window = None if record is None else window_of(record.opened, record.resolved)
        for step in plan(items, window):
            if (failure := await self._step(run, step)) is not None:
                return failure
        return None

    async def _step(self, run: _Run, step: Step) -> Outcome | None:
        if isinstance(step, Digest):
            return await self._digest(run, step.items)
        if isinstance(step, Open):
            return await self._open(run, step.item)
        if isinstance(step, Reply):
            return await self._reply(run, step.items)
        if isinstance(step, Resolve):
            return await self._resolve(run, step.item)
        return await self._audience(run, step.item, quiet=step.quiet)

    # --- the channel digest and the thread -----------------------------------------------------

    async def _digest(
        self, run: _Run, items: Sequence[Item], thread_ts: str | None = None
    ) -> Outcome | None:
        """Post the events not told yet as one message (in a thread with ``thread_ts``)."""
        fresh = [item for item in items if item.event.id not in run.told]
        if not fresh:
            return None
        key = run.stream.stream_key if run.stream else fresh[0].event.stream_key
        message = build_message(run.cluster, key, [item.payload for item in fresh])
        answer = await self._post(run, message, thread_ts=thread_ts)
        if not answer.ok:
            return outcome(answer)
        ids = [item.event.id for item in fresh]
        incident = run.incident if thread_ts is not None else None
        if incident is not None:
            _count_in_thread(incident, fresh)
        await self._book.write(run.keys, run.stream, incident=incident, told=ids)
        run.told.update(ids)
        return None

    async def _reply(self, run: _Run, items: Sequence[Item]) -> Outcome | None:
        """Viewer health events in the open incident's thread, then the message's figures."""
        incident = run.incident
        if incident is None or incident.ts is None:  # its message was never posted
            return await self._digest(run, items)
        if (failure := await self._digest(run, items, thread_ts=incident.ts)) is not None:
            return failure
        wait = self.settings.group_wait
        if incident.stale and self._book.now() - incident.updated_at >= wait:
            return await self._edit_incident(run, incident)
        return None

    # --- the incident message ------------------------------------------------------------------

    async def _open(self, run: _Run, item: Item) -> Outcome | None:
        """Post the incident message, unless the record says it was posted already."""
        record = run.incident
        if record is not None and record.incident == item.event.id:
            if record.ts is not None:
                return None
            if record.posting:
                self._log.warning(
                    "slack.incident_may_be_duplicated",
                    cluster=run.cluster,
                    stream_key=run.stream_key,
                    hint="an earlier post of this incident message got no answer; if Slack"
                    " took it, the channel shows it twice",
                )
        else:
            record = IncidentRecord(incident=item.event.id, opened=compact(item.payload))
        run.incident = record
        failure = await self._publish(run, record, incident_message(run.cluster, record))
        if failure is None:
            self._log.info(
                "slack.incident_opened",
                cluster=run.cluster,
                stream_key=run.stream_key,
                ts=record.ts,
            )
        return failure

    async def _resolve(self, run: _Run, item: Item) -> Outcome | None:
        """Turn the incident message resolved, then say so in its thread."""
        record = run.incident
        if record is None or record.ts is None:
            return await self._digest(run, [item])
        resolving = compact(item.payload)
        if (record.resolved or {}).get("id") != resolving.get("id"):
            record.resolved = resolving
            record.stale = True
        if record.stale and (failure := await self._edit_incident(run, record)) is not None:
            record.resolved = None  # not kept: the next attempt resolves it again
            return failure
        if (failure := await self._digest(run, [item], thread_ts=record.ts)) is not None:
            return failure
        self._log.info(
            "slack.incident_resolved",
            cluster=run.cluster,
            stream_key=run.stream_key,
            ts=record.ts,
        )
        return None

    async def _edit_incident(self, run: _Run, record: IncidentRecord) -> Outcome | None:
        """``chat.update`` the incident message with what the record holds."""
        message = incident_message(run.cluster, record)
        failure = await self._edit(run, record, message)
        if failure is None:
            record.updated_at, record.stale = self._book.now(), False
            await self._book.write(run.keys, run.stream, incident=record)
        return failure

    # --- the audience message ------------------------------------------------------------------

    async def _audience(self, run: _Run, item: Item, *, quiet: bool) -> Outcome | None:
        """Post or update the stream's audience message with a start, a crossing or an end."""
        if run.stream is None:
            return await self._digest(run, [item])
        record = await self._book.audience(run.keys, run.stream)
        event, kind = compact(item.payload), item.event.type
        live = record is not None and record.ended is None
        changed = True
        if record is not None and record.audience == item.event.id:
            changed = False  # this event posted it: redelivered
        elif kind == _STARTED:
            record = AudienceRecord(audience=item.event.id, started=event)
        elif kind == _CROSSED and record is not None and live:
            changed = record.add_crossing(event)
        elif kind == _CROSSED:
            record = AudienceRecord(audience=item.event.id, crossings=[event])
        elif record is not None and (live or (record.ended or {}).get("id") == event.get("id")):
            changed = record.ended is None
            record.ended = event
        elif quiet:
            return None  # the incident message told the end; no audience message to finish
        else:
            record = AudienceRecord(audience=item.event.id, ended=event)
        message = audience_message(run.cluster, record)
        if record.ts is None:
            return await self._publish(run, record, message)
        if not changed:
            return None
        if (failure := await self._edit(run, record, message)) is not None:
            return failure
        await self._book.write(run.keys, run.stream, audience=record)
        return None

    # --- posting and editing a record's message ------------------------------------------------

    async def _publish(
        self,
        run: _Run,
        record: IncidentRecord | AudienceRecord,
        message: dict[str, Any],
    ) -> Outcome | None:
        """Post a record's message: the record first says a post is under way, then keeps its
        ``ts``. A definite refusal clears ``posting`` (Slack posted nothing)."""
        record.posting = True
        await self._keep(run, record)
        answer = await self._post(run, message)
        if not answer.ok:
            if answer.transport is None:
                record.posting = False
                await self._keep(run, record)
            return outcome(answer)
        record.ts, record.channel, record.posting = answer.ts, answer.channel, False
        if isinstance(record, IncidentRecord):
            record.updated_at, record.stale = self._book.now(), False
        await self._keep(run, record)
        return None

    async def _edit(
        self,
        run: _Run,
        record: IncidentRecord | AudienceRecord,
        message: dict[str, Any],
    ) -> Outcome | None:
        """``chat.update`` a record's message; one deleted meanwhile is posted anew."""
        assert record.ts is not None  # noqa: S101 - callers edit posted messages only
        answer = await self._api.update(record.channel or self.channel, record.ts, message)
        if answer.ok:
            return None
        if answer.error == MESSAGE_NOT_FOUND:
            self._log.warning(
                "slack.message_not_found",
                cluster=run.cluster,
                ts=record.ts,
                effect="posting it again; the new message is kept and edited from now on",
            )
            record.ts = None
            return await self._publish(run, record, message)
        return outcome(answer)

    async def _keep(self, run: _Run, record: IncidentRecord | AudienceRecord) -> None:
        if isinstance(record, IncidentRecord):
            await self._book.write(run.keys, run.stream, incident=record)
        else:
            await self._book.write(run.keys, run.stream, audience=record)

    async def _post(
        self, run: _Run, message: dict[str, Any], *, thread_ts: str | None = None
    ) -> Answer:
        """``chat.postMessage`` in the channel's turn; a turn too far off, or a delivery past its
        time, answers as a rate limit (the schedule tries again, no attempt used)."""
        left = run.deadline - self._clock()
        if left <= 0:  # the rest of the delivery starts afresh, right away
            return Answer(POST, ok=False, error=PACED, retry_after=0.0)
        wait = await self._pacer.turn(min(LONGEST_WAIT, left))
        if wait is not None:
            return Answer(POST, ok=False, error=PACED, retry_after=wait)
        answer = await self._api.post(self.channel, message, thread_ts=thread_ts)
        if is_rate_limit(answer):
            await self._pacer.hold(answer.retry_after or DEFAULT_RETRY_AFTER)
        return answer


def _count_in_thread(incident: IncidentRecord, told: Sequence[Item]) -> None:
    """What a thread reply adds to the incident message's figures."""
    for item in told:
        if item.event.type not in VIEWER_HEALTH:
            continue
        if item.event.type == DROPPED:
            incident.dropped += 1
        else:
            incident.recovered += 1
        when = item.payload.get("time")
        incident.latest = when if isinstance(when, str) else incident.latest
        incident.stale = True
