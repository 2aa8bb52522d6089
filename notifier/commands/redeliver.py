"""``notifier replay`` and ``notifier dlq``: deliver past events to one sink, by hand.

Both deliver directly through the sink (not through its consumer group): per viewer in order,
viewers side by side, a few quick retries honouring ``Retry-After``. Progress goes to stderr
once a second. Nothing is dropped: a replayed event that still fails is dead-lettered; a
dead letter that still fails stays where it is.
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO, cast

import msgspec

from notifier.errors import ConfigError, NotifierError
from notifier.keys import ClusterKeys
from notifier.redis_client import connect_redis
from notifier.sinks.base import Delivered, Event, Failed, Retry, UnreadableEvent, decode_event
from notifier.sinks.registry import create_sink
from notifier.sinks.stream import SinkStream
from notifier.sinks.worker import matches

if TYPE_CHECKING:
    from collections.abc import Sequence

    from notifier.config import Settings
    from notifier.redis_client import AnyRedis
    from notifier.sinks.base import Outcome, Sink
    from notifier.sinks.settings import SinkBaseSettings

__all__ = ["dlq_list", "dlq_purge", "dlq_redrive", "parse_position", "replay"]

QUICK_RETRIES = (0.0, 1.0, 5.0)
MAX_RETRY_AFTER = 60.0
PAGE = 1000
_ID = re.compile(r"^\d+(-\d+)?$")


def parse_position(text: str, *, end: bool = False) -> str:
    """A stream position from an entry id (``1700000000000-0``), Unix ms, or an ISO time."""
    text = text.strip()
    if _ID.match(text):
        return text if "-" in text or not end else f"{text}-18446744073709551615"
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace(" ", "T"))
    except ValueError:
        raise ConfigError(
            f"{text!r}: expected an entry id (1700000000000-0), Unix ms, or a time"
            " like 2026-02-05T08:22:40Z (UTC unless an offset is given)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    ms = int(moment.timestamp() * 1000)
    return f"{ms}-18446744073709551615" if end else f"{ms}-0"


@dataclass
class _Progress:
    verb: str
    total: int
    out: TextIO
    done: int = 0
    failed: int = 0
    last: float = field(default_factory=time.monotonic)

    def tick(self, *, ok: bool) -> None:
        if ok:
            self.done += 1
        else:
            self.failed += 1
        if time.monotonic() - self.last >= 1.0:
            self.show()

    def show(self) -> None:
        self.last = time.monotonic()
        print(
            f"{self.verb}: {self.done}/{self.total} delivered, {self.failed} failed",
            file=self.out,
            flush=True,
        )


async def _deliver_one(sink: Sink, events: Sequence[Event]) -> Outcome:
    outcome: Outcome = Retry("not attempted")
    for delay in QUICK_RETRIES:
        if delay:
            wait = delay
            if isinstance(outcome, Retry) and outcome.after:
                wait = max(delay, min(outcome.after, MAX_RETRY_AFTER))
            await asyncio.sleep(wait)
        outcome = await sink.deliver(events)
        if not isinstance(outcome, Retry):
            return outcome
    return outcome


async def deliver_directly(
    sink: Sink, events: Sequence[Event], progress: _Progress, *, concurrency: int = 8
) -> list[tuple[Event, str, int | None]]:
    """Deliver per viewer in order; returns what failed (event, reason, status)."""
    by_viewer: dict[tuple[str, str], list[Event]] = defaultdict(list)
    for event in events:
        by_viewer[(event.cluster, event.subject)].append(event)
    failures: list[tuple[Event, str, int | None]] = []
    slots = asyncio.Semaphore(concurrency)

    async def one_viewer(items: list[Event]) -> None:
        async with slots:
            for index, event in enumerate(items):
                outcome = await _deliver_one(sink, [event])
                if isinstance(outcome, Delivered):
                    progress.tick(ok=True)
                    continue
                reason = outcome.reason if isinstance(outcome, Retry | Failed) else "failed"
                status = outcome.status if isinstance(outcome, Retry | Failed) else None
                failures.append((event, reason, status))
                progress.tick(ok=False)
                for later in items[index + 1 :]:  # never out of order: the rest wait
                    failures.append((later, "an earlier event of this viewer failed", None))
                    progress.tick(ok=False)
                return

    await asyncio.gather(*(one_viewer(items) for items in by_viewer.values()))
    progress.show()
    return failures


def _sink_settings(settings: Settings, name: str) -> SinkBaseSettings:
    for sink in settings.sinks:
        if sink.name == name:
            return sink
    known = ", ".join(s.name for s in settings.sinks) or "none"
    raise ConfigError(f"no sink named {name!r} (configured: {known})")


def _clusters(settings: Settings, cluster: str | None) -> list[str]:
    return [settings.cluster(cluster).name] if cluster else [c.name for c in settings.clusters]


async def replay(
    settings: Settings,
    *,
    sink_name: str,
    start: str,
    end: str = "+",
    cluster: str | None = None,
    err: TextIO = sys.stderr,
) -> int:
    """Redeliver the events between ``start`` and ``end`` (that pass the sink's filters)."""
    sink_settings = _sink_settings(settings, sink_name)
    redis = connect_redis(settings.redis)
    sink = create_sink(sink_settings)
    try:
        events: list[Event] = []
        for name in _clusters(settings, cluster):
            keys = ClusterKeys(settings.redis.key_prefix, name)
            found = await _events(redis, name, keys.events, start, end)
            events += [event for event in found if matches(sink_settings, event)]
        progress = _Progress("replay", len(events), err)
        failures = await deliver_directly(sink, events, progress)
        for event, reason, status in failures:
            stream = SinkStream(
                redis,
                ClusterKeys(settings.redis.key_prefix, event.cluster),
                sink_name,
                maxlen=settings.streams.maxlen,
            )
            await stream.dead_letter_copy(event, reason=f"replay: {reason}", status=status)
    finally:
        await sink.aclose()
        await redis.aclose()
    if failures:
        raise NotifierError(
            f"replay: {len(failures)} of {len(events)} events failed and were dead-lettered"
        )
    return 0


async def _events(redis: AnyRedis, cluster: str, key: str, start: str, end: str) -> list[Event]:
    """The readable events of a stream range (entries that are not events are skipped)."""
    events = []
    for entry_id, fields in await _range(redis, key, start, end):
        try:
            events.append(decode_event(cluster, entry_id, fields))
        except UnreadableEvent:
            continue
    return events


async def _range(
    redis: AnyRedis, key: str, start: str, end: str
) -> list[tuple[str, dict[bytes, bytes]]]:
    out: list[tuple[str, dict[bytes, bytes]]] = []
    cursor = start
    while True:
        page = cast(
            "list[tuple[bytes, dict[bytes, bytes]]]",
            await redis.xrange(key, min=cursor, max=end, count=PAGE),
        )
        out += [(entry_id.decode(), fields) for entry_id, fields in page]
        if len(page) < PAGE:
            return out
        cursor = "(" + page[-1][0].decode()


async def dlq_list(
    settings: Settings, *, sink_name: str, cluster: str | None, count: int, out: TextIO
) -> int:
    """Print dead letters as JSON lines, oldest first."""
    _sink_settings(settings, sink_name)
    redis = connect_redis(settings.redis)
    try:
        for name in _clusters(settings, cluster):
            dlq = ClusterKeys(settings.redis.key_prefix, name).dlq(sink_name)
            page = cast(
                "list[tuple[bytes, dict[bytes, bytes]]]", await redis.xrange(dlq, count=count)
            )
            for entry_id, fields in page:
                out.write(
                    msgspec.json.encode(_describe(name, entry_id.decode(), fields)).decode() + "\n"
                )
    finally:
        await redis.aclose()
    out.flush()
    return 0


def _describe(cluster: str, dlq_id: str, fields: dict[bytes, bytes]) -> dict[str, Any]:
    def text(key: bytes) -> str:
        return fields.get(key, b"").decode("utf-8", "replace")

    try:
        event: Any = msgspec.json.decode(fields.get(b"event", b"null"))
    except msgspec.DecodeError:
        event = text(b"event")
    return {
        "cluster": cluster,
        "dlq_id": dlq_id,
        "event_id": text(b"id"),
        "type": text(b"type"),
        "reason": text(b"reason"),
        "attempts": int(text(b"attempts") or 0),
        "status": int(text(b"status")) if text(b"status").isdigit() else None,
        "failed_at": text(b"failed_at"),
        "entry": text(b"entry"),
        "event": event,
    }


async def dlq_redrive(
    settings: Settings,
    *,
    sink_name: str,
    cluster: str | None,
    ids: Sequence[str] = (),
    err: TextIO = sys.stderr,
) -> int:
    """Deliver dead letters again; the ones delivered leave the dead-letter stream."""
    sink_settings = _sink_settings(settings, sink_name)
    redis = connect_redis(settings.redis)
    sink = create_sink(sink_settings)
    try:
        events: list[Event] = []
        origin: dict[str, tuple[str, str]] = {}  # event entry -> (dlq key, dlq id)
        for name in _clusters(settings, cluster):
            dlq = ClusterKeys(settings.redis.key_prefix, name).dlq(sink_name)
            for event in await _events(redis, name, dlq, "-", "+"):
                if not ids or event.entry_id in ids:
                    events.append(event)
                    origin[event.entry_id] = (dlq, event.entry_id)
        unknown = sorted(set(ids) - set(origin))
        if unknown:
            raise NotifierError(f"redrive: no dead letter with id {', '.join(unknown)}")
        progress = _Progress("redrive", len(events), err)
        failures = await deliver_directly(sink, events, progress)
        failed = {event.entry_id for event, _, _ in failures}
        for event in events:
            if event.entry_id not in failed:
                key, dlq_id = origin[event.entry_id]
                await redis.xdel(key, dlq_id)
    finally:
        await sink.aclose()
        await redis.aclose()
    if failures:
        first = failures[0][1]
        raise NotifierError(
            f"redrive: {len(failures)} of {len(events)} dead letters failed again"
            f" (first: {first}); they stay in the dead-letter stream"
        )
    return 0


async def dlq_purge(
    settings: Settings, *, sink_name: str, cluster: str | None, before: str | None, out: TextIO
) -> int:
    """Delete dead letters (all, or those older than ``before``)."""
    _sink_settings(settings, sink_name)
    redis = connect_redis(settings.redis)
    removed = 0
    try:
        for name in _clusters(settings, cluster):
            dlq = ClusterKeys(settings.redis.key_prefix, name).dlq(sink_name)
            if before is None:
                removed += int(await redis.xlen(dlq))
                await redis.delete(dlq)
            else:
                removed += int(await redis.xtrim(dlq, minid=before, approximate=False))
    finally:
        await redis.aclose()
    out.write(f"purged {removed} dead letters of sink {sink_name}\n")
    return 0
