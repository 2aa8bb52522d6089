"""The poller's side of the status model (``P:{C}:status``, ``P:{C}:history``), its outage and
standby lines, and a stop that abandons a fetch: against a real redis-server and real HTTP."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, cast

import pytest
import structlog.testing
from aiohttp import web
from redis.asyncio import Redis, RedisCluster

from notifier.config import DetectionSettings
from notifier.detect.codec import StreamCodec
from notifier.detect.outages import FAILING_ATTEMPTS, Outages
from notifier.detect.poller import Poller
from notifier.detect.report import (
    HISTORY_KEEP,
    CycleReport,
    Sample,
    StatusWriter,
    top_streams,
)
from notifier.detect.store import StateStore
from notifier.detect.tally import StreamId, StreamState
from notifier.keys import HISTORY_EVERY, HISTORY_STREAMS, ClusterKeys
from notifier.lease import Lease
from notifier.simulator import Faults, PopulationSettings, SimulatorSettings
from notifier.storm import StormClient, create_session
from notifier.storm.client import Failing
from testkit.detection_support import lockstep, stream_events

from .conftest import FAST_BACKOFF, cluster_settings, free_port, scripted_storm

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, MutableMapping, Sequence

    from testkit.redis_procs import RedisCluster3

KEYS = ClusterKeys("t", "sim")
SIM = SimulatorSettings(population=PopulationSettings(seed=7, viewers=60, streams=4))
EVERY_MS = int(HISTORY_EVERY * 1000)
pytestmark = pytest.mark.timeout(60)


@asynccontextmanager
async def poller_for(
    url: str,
    redis: Redis,
    *,
    owner: str | None = None,
    status: StatusWriter | None = None,
    detection: DetectionSettings | None = None,
    store: StateStore | None = None,
    **cluster: Any,
) -> AsyncIterator[tuple[Poller, StatusWriter]]:
    """A poller of ``url`` reporting to ``status`` (by default a writer on ``redis``)."""
    owner = owner or f"test-{uuid.uuid4().hex[:6]}"
    settings = cluster_settings(url, **cluster)
    writer = status or StatusWriter(redis, KEYS, owner)
    async with create_session(settings) as session:
        client = StormClient(settings, session, backoff=FAST_BACKOFF)
        poller = Poller(
            settings,
            detection or DetectionSettings(),
            client=client,
            store=store or StateStore(redis, KEYS, maxlen=100_000),
            lease=Lease(redis, KEYS.lease, KEYS.fence, owner, ttl=30),
            status=writer,
        )
        yield poller, writer
        await client.aclose()


async def status_of(redis: Redis) -> dict[str, str]:
    """``P:{C}:status`` as text."""
    raw = cast("dict[bytes, bytes]", await redis.hgetall(KEYS.status))
    return {k.decode(): v.decode() for k, v in raw.items()}


async def history_of(redis: Redis) -> list[dict[str, Any]]:
    """``P:{C}:history``, newest first."""
    return [json.loads(item) for item in await redis.lrange(KEYS.history, 0, -1)]


async def until(condition: Callable[[], bool], timeout: float = 10) -> None:
    """Until ``condition()`` holds, checked every 10 ms (fails after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def events_named(
    logs: Sequence[MutableMapping[str, Any]], name: str
) -> list[MutableMapping[str, Any]]:
    return [entry for entry in logs if entry["event"] == name]


# --- P:{C}:status and P:{C}:history -------------------------------------------------------------


async def test_a_committed_poll_writes_its_status_and_an_audience_sample(
    redis_url: str, redis: Redis
) -> None:
    """Every field of the status after a committed poll, and one history sample of the largest
    audiences that agrees with the stream states and the sequence in Redis."""
    async with (
        lockstep(SIM, Faults(), redis_url, KEYS) as sim,
        poller_for(sim.url, redis, owner="replica-a") as (poller, writer),
    ):
        before = time.time() * 1000
        await poller.cycle()
        await writer.flush()
        status = await status_of(redis)
        history = await history_of(redis)
    events = await stream_events(redis, KEYS.events)
    blobs = cast("dict[bytes, bytes]", await redis.hgetall(KEYS.streams))
    stored = dict(StreamCodec.decode(name, blob) for name, blob in blobs.items())
    assert set(status) == {
        "at", "duration", "complete", "reason", "events", "tracked", "streams", "owner"
    }  # fmt: skip
    assert before <= int(status["at"]) <= time.time() * 1000
    assert 0 < float(status["duration"]) < 30
    assert (status["complete"], status["reason"], status["owner"]) == ("1", "", "replica-a")
    assert int(status["events"]) == len(events) > 0
    assert int(status["tracked"]) == await redis.hlen(KEYS.viewers) == 60
    assert int(status["streams"]) == len(stored) > 1
    (sample,) = history
    assert sample["at"] == int(status["at"])
    assert sample["seq"] == int(await redis.hget(KEYS.meta, "sequence") or 0) == len(events)
    assert sample["tracked"] == 60
    largest = sorted(((s.application_id, s.stream_key, v.viewers) for s, v in stored.items()),
                     key=lambda row: -row[2])[:HISTORY_STREAMS]  # fmt: skip
    assert [tuple(row) for row in sample["streams"]] == largest
    registry = poller._metrics.registry
    assert registry.get_sample_value("notifier_streams", {"cluster": "sim"}) == len(stored)
    for app, key, viewers in largest:
        labels = {"cluster": "sim", "application": app or "", "stream": key}
        assert registry.get_sample_value("notifier_stream_viewers", labels) == viewers


async def test_an_incomplete_poll_writes_why_and_no_sample(redis: Redis) -> None:
    """Storm refuses: complete 0, the reason the poller logs, no tracked count it cannot know,
    no history sample."""
    url = f"http://127.0.0.1:{free_port()}"
    with structlog.testing.capture_logs() as logs:
        async with poller_for(url, redis, poll_budget="300ms") as (poller, writer):
            await poller.cycle()
            await writer.flush()
    status = await status_of(redis)
    assert status["complete"] == "0"
    (said,) = events_named(logs, "poller.storm_unavailable")
    assert status["reason"].startswith("storm: page 1: ")
    assert "refused" in status["reason"]
    assert said["error"] in status["reason"]
    assert "tracked" not in status
    assert "streams" not in status
    assert "127.0.0.1" not in status["reason"]
    assert await redis.llen(KEYS.history) == 0


async def test_a_standby_replica_writes_no_status(redis_url: str, redis: Redis) -> None:
    """Only the leader's cycles are reported: a replica that does not hold the lease writes
    nothing."""
    async with (
        lockstep(SIM, Faults(), redis_url, KEYS) as sim,
        poller_for(sim.url, redis, owner="leader") as (leader, writer),
        poller_for(sim.url, redis, owner="standby") as (standby, other),
    ):
        await leader.cycle()
        await writer.flush()
        await redis.delete(KEYS.status)
        await standby.cycle()
        await other.flush()
    assert await redis.exists(KEYS.status) == 0


async def test_history_keeps_one_sample_per_slot_newest_first_for_an_hour(redis: Redis) -> None:
    """Writers (two replicas) push at most one sample per HISTORY_EVERY slot, never an older
    slot than the newest, and trim the list to an hour."""
    first, second = StatusWriter(redis, KEYS, "a"), StatusWriter(redis, KEYS, "b")
    report = CycleReport(0, 0.1, None, 0, 0, 0)
    start = 1_800_000_000_000 // EVERY_MS * EVERY_MS
    for slot in range(HISTORY_KEEP + 20):
        for writer, offset in ((first, 10), (second, EVERY_MS // 2)):
            at = start + slot * EVERY_MS + offset
            writer.submit(report, Sample(at, slot, slot, (("app", "key", slot),)))
            await writer.flush()
    second.submit(report, Sample(start, 0, 0, ()))  # a replica whose clock is behind
    await second.flush()
    history = await history_of(redis)
    assert len(history) == HISTORY_KEEP
    assert [s["seq"] for s in history] == list(range(HISTORY_KEEP + 19, 19, -1))
    assert all(s["at"] % EVERY_MS == 10 for s in history)  # the first writer of each slot
    assert history[0]["streams"] == [["app", "key", HISTORY_KEEP + 19]]


def test_the_sample_holds_the_largest_audiences_largest_first() -> None:
    """top_streams: HISTORY_STREAMS rows at most, by viewers, largest first."""

    def state(viewers: int) -> StreamState:
        return StreamState(viewers, 0, 0, {}, {}, {}, 0, viewers, 0, viewers)

    states: dict[StreamId, StreamState] = {
        StreamId("app", f"s{n}"): state((n * 37) % 101) for n in range(60)
    }
    rows = top_streams(states)
    assert len(rows) == HISTORY_STREAMS
    assert [r[2] for r in rows] == sorted((s.viewers for s in states.values()), reverse=True)[
        :HISTORY_STREAMS
    ]
    assert top_streams({}) == ()


async def test_a_status_write_that_fails_neither_fails_nor_holds_the_poll(
    redis_url: str, redis: Redis
) -> None:
    """The status goes to a Redis that is not there: every poll commits all the same, and the
    failure is one info line."""
    dead = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1)
    try:
        with structlog.testing.capture_logs() as logs:
            async with (
                lockstep(SIM, Faults(), redis_url, KEYS) as sim,
                poller_for(sim.url, redis, status=StatusWriter(dead, KEYS, "x")) as (poller, w),
            ):
                for _ in range(3):
                    await poller.cycle()
                    await w.flush()
                assert await sim.polls() == 3
    finally:
        await dead.aclose()
    (failed,) = events_named(logs, "poller.status_write_failed")
    assert failed["log_level"] == "info"
    assert failed["error"]


# --- outages said early ------------------------------------------------------------------------


def test_outages_follow_the_table_of_their_module() -> None:
    """First poll: the first failed request warns; after a good poll, only the third failure
    of a request in a row (or the poll's end) does; once per outage; recovery is info."""
    with structlog.testing.capture_logs() as logs:
        outages = Outages(structlog.get_logger("t"))
        outages.storm_failing(Failing("page 1", "connection refused", 1))
        outages.storm_failing(Failing("page 1", "connection refused", 2))
        outages.storm(ok=False, error="page 1: connection refused (gave up)")
        outages.storm(ok=True)
        for attempts in range(1, FAILING_ATTEMPTS):
            outages.storm_failing(Failing("page 2", "503 Service Unavailable", attempts))
        outages.storm(ok=True)  # a hiccup that a retry mended: nothing said
        outages.storm_failing(Failing("page 2", "503 Service Unavailable", FAILING_ATTEMPTS))
        outages.storm(ok=False, error="page 2: 503 (gave up)")
        outages.storm(ok=False, error="page 2: 503 (gave up)")
        outages.storm(ok=True)
        outages.storm(ok=False, error="page 1: no answer within 10s (gave up)")
    said = [(e["event"], e.get("error")) for e in logs]
    assert said == [
        ("poller.storm_unavailable", "page 1: connection refused"),
        ("poller.storm_recovered", None),
        ("poller.storm_unavailable", "page 2: 503 Service Unavailable"),
        ("poller.storm_recovered", None),
        ("poller.storm_unavailable", "page 1: no answer within 10s (gave up)"),
    ]
    assert [e["log_level"] for e in logs] == ["warning", "info", "warning", "info", "warning"]


async def test_the_first_poll_of_a_process_warns_at_once_and_a_stop_abandons_it(
    redis: Redis,
) -> None:
    """Storm refuses from the start: the warning, with the cause, comes while the poll is still
    retrying (its budget is 20 s); a stop then abandons it at once, reporting nothing."""
    url = f"http://127.0.0.1:{free_port()}"
    stop = asyncio.Event()
    with structlog.testing.capture_logs() as logs:
        async with poller_for(url, redis, poll_budget="20s") as (poller, writer):
            cycle = asyncio.create_task(poller.cycle(stop))
            await until(lambda: bool(events_named(logs, "poller.storm_unavailable")))
            assert not cycle.done()
            stopped_at = time.monotonic()
            stop.set()
            await asyncio.wait_for(cycle, 5)
            assert time.monotonic() - stopped_at < 2
            await writer.flush()
    (said,) = events_named(logs, "poller.storm_unavailable")
    assert said["error"].startswith("page 1: ")
    assert "refused" in said["error"]
    (abandoned,) = events_named(logs, "poller.poll_abandoned")
    assert abandoned["phase"] == "fetch"
    assert await redis.exists(KEYS.status) == 0


def flaky_storm(script: list[int]) -> dict[tuple[str, str], Any]:
    """One page of one viewer; each request answers the next status of ``script`` (then 200)."""

    async def viewers(_: web.Request) -> web.Response:
        status = script.pop(0) if script else 200
        if status != 200:
            return web.json_response({"error": "busy"}, status=status)
        row = {"id": "v1", "healthScore": 90, "healthGrade": "Good"}
        body = {"data": {"list": [row], "totalItems": 1, "totalPages": 1, "itemsPerPage": 100}}
        return web.json_response(body)

    return {("GET", "/api/cluster/viewers"): viewers}


async def test_after_a_good_poll_a_hiccup_is_quiet_and_a_failing_request_warns_early(
    redis: Redis,
) -> None:
    """After a complete poll, one 503 that the retry mends says nothing; a request that keeps
    failing warns well before the poll budget (20 s) runs out."""
    script: list[int] = []
    stop = asyncio.Event()
    with structlog.testing.capture_logs() as logs:
        async with (
            scripted_storm(flaky_storm(script)) as url,
            poller_for(url, redis, auth={"token": "t"}, poll_budget="20s") as (poller, writer),
        ):
            await poller.cycle()
            script.append(503)
            await poller.cycle()
            assert events_named(logs, "poller.storm_unavailable") == []
            script.extend([503] * 10_000)
            cycle = asyncio.create_task(poller.cycle(stop))
            await until(lambda: bool(events_named(logs, "poller.storm_unavailable")))
            assert not cycle.done()
            stop.set()
            await asyncio.wait_for(cycle, 5)
            await writer.flush()
    (said,) = events_named(logs, "poller.storm_unavailable")
    assert said["error"].startswith("page 1: HTTP 503")
    assert (await status_of(redis))["complete"] == "1"  # the abandoned cycle reported nothing


class StoppingStore(StateStore):
    """A store that sets ``stop`` as a commit begins (the moment a SIGTERM may land)."""

    stop: asyncio.Event

    async def commit(self, *args: Any, **kwargs: Any) -> Any:
        self.stop.set()
        await asyncio.sleep(0)  # let the poller see the stop before the commit goes on
        return await super().commit(*args, **kwargs)


async def test_a_stop_during_the_commit_lets_the_commit_finish(
    redis_url: str, redis: Redis
) -> None:
    """A stop that comes once the commit began: the poll is committed and reported."""
    stop = asyncio.Event()
    store = StoppingStore(redis, KEYS, maxlen=100_000)
    store.stop = stop
    async with (
        lockstep(SIM, Faults(), redis_url, KEYS) as sim,
        poller_for(sim.url, redis, store=store) as (poller, writer),
    ):
        await poller.cycle(stop)
        await writer.flush()
        assert await sim.polls() == 1
    assert stop.is_set()
    assert (await status_of(redis))["complete"] == "1"
    assert len(await stream_events(redis, KEYS.events)) == int((await status_of(redis))["events"])


# --- standing by -------------------------------------------------------------------------------


async def test_a_standby_replica_says_so_once_and_again_after_it_led_and_lost(
    redis_url: str, redis: Redis
) -> None:
    """poller.standing_by with the holder, once however many slots pass; after this replica
    led and was fenced by another, once more, naming the new holder."""
    with structlog.testing.capture_logs() as logs:
        async with (
            lockstep(SIM, Faults(), redis_url, KEYS) as sim,
            poller_for(sim.url, redis, owner="first") as (first, _),
            poller_for(sim.url, redis, owner="second") as (second, _),
        ):
            await first.cycle()
            for _ in range(3):
                await second.cycle()
            await first.close()  # a clean stop: the lease is given back
            await second.cycle()  # leads now
            await redis.delete(KEYS.lease)
            assert await Lease(redis, KEYS.lease, KEYS.fence, "third", ttl=30).acquire()
            for _ in range(3):
                await second.cycle()  # fenced, then standing by
    standing = events_named(logs, "poller.standing_by")
    assert [(e["holder"], e["log_level"]) for e in standing] == [
        ("first", "info"),
        ("third", "info"),
    ]
    assert all(e["cluster"] == "sim" for e in standing)
    assert len(events_named(logs, "poller.following")) == 1


async def test_the_status_is_written_through_a_redis_cluster(redis_cluster: RedisCluster3) -> None:
    """On a Redis Cluster the status and the history script go in one pipeline to the
    cluster's slot."""
    client = RedisCluster.from_url(redis_cluster.url)
    try:
        writer = StatusWriter(client, KEYS, "a")
        writer.submit(
            CycleReport(1_000, 0.5, None, 3, 10, 2), Sample(1_000, 3, 10, (("a", "k", 7),))
        )
        await writer.flush()
        assert await client.hget(KEYS.status, "events") == b"3"
        newest = await client.lindex(KEYS.history, 0)
        assert isinstance(newest, bytes)
        assert json.loads(newest)["streams"] == [["a", "k", 7]]
    finally:
        await client.aclose()
