"""The status model read from a real redis-server: what a real poller and real sink workers left
there, the causes of problems, the charts' history, and `notifier status` in a terminal."""

from __future__ import annotations

import asyncio
import io
import json
import os
import sys
import time
import uuid
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, cast

import msgspec
import pytest
from redis.asyncio import Redis, RedisCluster
from rich.console import Console

from notifier.config import DetectionSettings, Settings
from notifier.detect.codec import StreamCodec
from notifier.detect.poller import Poller
from notifier.detect.report import Sample, StatusWriter
from notifier.detect.store import StateStore
from notifier.detect.tally import StreamId, StreamState
from notifier.events import decode_event, encode_event, iso_time
from notifier.keys import ClusterKeys
from notifier.lease import Lease
from notifier.simulator import PopulationSettings, SimulatorSettings, running_simulator
from notifier.sinks.partition import partitions
from notifier.sinks.webhook import WebhookSink
from notifier.status import EventLine, Status, StatusUnavailable, StreamStatus, read_status
from notifier.status.build import events_per_minute
from notifier.status.model import PartitionLane
from notifier.status.table import print_status
from notifier.status.waiting import Waiting
from notifier.storm import StormClient, create_session
from testkit.receivers import Reply, WebhookReceiver
from testkit.sink_support import FAST, SECRET, create_group, running_worker, webhook
from tests.conftest import FAST_BACKOFF, cluster_settings, free_port

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable
    from pathlib import Path

    from notifier.events import Event
    from testkit.redis_procs import RedisCluster3

pytestmark = pytest.mark.timeout(90)

KEYS = ClusterKeys("notifier", "sim")
TOKEN = "tok-status"
SIM = SimulatorSettings(
    population=PopulationSettings(seed=7, viewers=80, streams=4), static_tokens=(TOKEN,)
)
IP_PREFIXES = ("203.0.113.", "198.51.100.")
"""Every simulated viewer's ``remoteAddress`` starts with one of these."""


def settings_for(
    redis_url: str, sinks: list[dict[str, Any]] | None = None, clusters: tuple[str, ...] = ("sim",)
) -> Settings:
    """Clusters polled every 5 s (a stale poll: more than 2*5 + 20 + 5 = 35 s old)."""
    return Settings.model_validate(
        {
            "redis": {"url": redis_url},
            "clusters": [
                {"name": name, "base_url": "http://127.0.0.1:9", "auth": {"token": "t"}}
                for name in clusters
            ],
            "detection": {"leader_lease": "5s"},
            "sinks": sinks or [],
        }
    )


def hook(name: str, url: str) -> dict[str, Any]:
    """A webhook sink's configuration."""
    return {"name": name, "type": "webhook", "url": url, "secret": SECRET, "retry": FAST}


class Polling:
    """A real poller of cluster ``sim`` and the writer of its status, as ``notifier run`` has."""

    def __init__(self, poller: Poller, writer: StatusWriter) -> None:
        self.poller = poller
        self.writer = writer

    async def cycles(self, count: int = 1) -> None:
        """Poll ``count`` times; return once their status is written."""
        for _ in range(count):
            await self.poller.cycle()
        await self.writer.flush()


@asynccontextmanager
async def polling(
    url: str, redis: Redis, owner: str, *, token: str = TOKEN, **cluster: Any
) -> AsyncIterator[Polling]:
    """A real poller of cluster ``sim`` at ``url``, leading as ``owner``."""
    settings = cluster_settings(url, auth={"token": token}, **cluster)
    writer = StatusWriter(redis, KEYS, owner)
    async with create_session(settings) as session:
        client = StormClient(settings, session, backoff=FAST_BACKOFF)
        yield Polling(
            Poller(
                settings,
                DetectionSettings(),
                client=client,
                store=StateStore(redis, KEYS, maxlen=100_000),
                lease=Lease(redis, KEYS.lease, KEYS.fence, owner, ttl=30),
                status=writer,
            ),
            writer,
        )
        await writer.aclose()
        await client.aclose()


async def until(check: Callable[[], Awaitable[object]]) -> None:
    """Until ``check()`` is truthy (asked every 10 ms; the test's timeout bounds it)."""
    while not await check():
        await asyncio.sleep(0.01)


async def test_the_status_shows_what_the_poller_and_the_workers_left(
    redis_url: str, redis: Redis
) -> None:
    """Tracked viewers as the snapshot has them, the poller's lease owner as leader, a sink
    paused by a 410 with its reason, another one's dead letters and last error, the streams'
    states, and the newest events without any IP address."""
    owner = f"replica-{uuid.uuid4().hex[:6]}"
    async with (
        running_simulator(SIM) as sim,
        WebhookReceiver(SECRET) as gone,
        WebhookReceiver(SECRET) as refusing,
    ):
        gone.default = Reply(status=410)
        refusing.default = Reply(status=400, body=b'{"error": "no"}')
        for sink in ("gone", "refused"):
            await create_group(redis, sink, KEYS)
        async with polling(sim.url, redis, owner) as run:
            await run.cycles(2)
        poller = run.poller
        settings = settings_for(redis_url, [hook("gone", gone.url), hook("refused", refusing.url)])
        paused_sink = webhook(gone.url, name="gone", concurrency=1)
        dead_sink = webhook(refusing.url, name="refused")
        async with (
            running_worker(WebhookSink(paused_sink), paused_sink, redis, keys=KEYS) as paused,
            running_worker(WebhookSink(dead_sink), dead_sink, redis, keys=KEYS) as dead,
        ):
            await paused.wait_until(lambda c: c.paused is not None)
            await dead.wait_until(lambda c: c.dead_lettered >= 3)
            await until(lambda: redis.hget(KEYS.sink_state("gone"), "paused"))
            await until(lambda: redis.hget(KEYS.sink_state("refused"), "last_error"))
            status = await read_status(redis, settings)
    snapshot = await StateStore(redis, KEYS, maxlen=100_000).load()
    (cluster,) = status.clusters
    assert cluster.name == "sim"
    assert cluster.leader == owner
    assert cluster.tracked_viewers == len(snapshot.tracked) == poller.tracked > 0
    assert cluster.streams == await redis.hlen(KEYS.streams) > 0
    assert cluster.healthy
    assert cluster.last_complete_at is not None
    assert cluster.last_poll is not None
    assert (cluster.last_poll.complete, cluster.last_poll.reason) == (True, None)
    assert cluster.events_per_minute == min(await redis.xlen(KEYS.events), 50)

    gone_status, refused_status = status.sinks
    assert (gone_status.name, gone_status.type) == ("gone", "webhook")
    assert gone_status.paused is not None
    assert gone_status.paused.startswith("HTTP 410")
    assert gone_status.lanes[0].paused == gone_status.paused
    assert refused_status.paused is None
    (lane,) = refused_status.lanes
    assert lane.dead_letters == await redis.xlen(KEYS.dlq("refused")) >= 3
    assert lane.last_error is not None
    assert lane.last_error.startswith("HTTP 400")
    assert lane.last_error_at is not None
    assert not status.healthy
    assert status.problems == [f"sink gone: paused: {gone_status.paused}"]

    states = dict(snapshot.streams)
    assert [s.viewers for s in status.streams] == sorted(
        (s.viewers for s in status.streams), reverse=True
    )
    for stream in status.streams:
        state = states[StreamId(stream.application_id or "", stream.stream_key)]
        assert (stream.viewers, stream.peak_viewers) == (state.viewers, state.peak_viewers)
        assert stream.history[-1].viewers == stream.viewers
        assert len(stream.history) == 2  # the first poll's sample (one slot of 20 s), and now

    newest: list[tuple[bytes, dict[bytes, bytes]]] = await redis.xrevrange(  # type: ignore[assignment]
        KEYS.events, count=50
    )
    events = [decode_event("sim", entry.decode(), fields) for entry, fields in newest]
    assert [e.id for e in status.events] == [e.id for e in events]
    assert [e.viewer for e in status.events] == [
        None if e.is_stream_event else e.subject for e in events
    ]
    text = msgspec.json.encode(status).decode()
    assert "remoteAddress" not in text
    assert not any(prefix in text for prefix in IP_PREFIXES)
    assert SECRET not in text


async def test_the_reader_works_on_a_redis_cluster(redis_cluster: RedisCluster3) -> None:
    """Each cluster's pipeline stays in its hash slot: the same status from a Redis Cluster."""
    redis = RedisCluster.from_url(redis_cluster.url)
    try:
        await create_group(redis, "hooks", KEYS)  # type: ignore[arg-type]
        async with running_simulator(SIM) as sim, polling(sim.url, redis, "r1") as run:  # type: ignore[arg-type]
            await run.cycles(2)
        settings = settings_for(redis_cluster.url, [hook("hooks", "https://hooks.example.com/x")])
        status = await read_status(redis, settings)
        health = await read_status(redis, settings, detail=False)
        written = await redis.xlen(KEYS.events)
    finally:
        await redis.aclose()
    assert (status.healthy, health.healthy) == (True, True)
    assert status.clusters[0].tracked_viewers == run.poller.tracked > 0
    assert status.sinks[0].lanes[0].lag == written > 50  # nothing read it
    assert len(status.events) == 50
    assert status.streams


async def test_a_refused_token_is_the_cause_of_the_problem(redis: Redis) -> None:
    """A real poller whose token the cluster refuses: the cluster is "not polled yet", and the
    status says why, in the words the poller reported."""
    async with running_simulator(SIM) as sim, polling(sim.url, redis, "r1", token="bad") as run:
        await run.cycles()
    status = await read_status(redis, settings_for("redis://x"))
    (cluster,) = status.clusters
    assert cluster.last_poll is not None
    assert not cluster.last_poll.complete
    reason = cluster.last_poll.reason
    assert reason is not None
    assert status.problems == [f"cluster sim: not polled yet: {reason}"]
    assert "401" in reason or "rejected" in reason
    assert "bad" not in reason.split()


async def test_a_problem_says_its_cause(redis: Redis) -> None:
    """A cluster whose polls fail says why ("not polled yet: storm: login failed (401)"), one
    that nobody polls any more says nobody leads it; a polled one is healthy."""
    now = time.time()
    now_ms = int(now * 1000)
    failing, stale, fine = (ClusterKeys("notifier", n) for n in ("eu-1", "eu-2", "eu-3"))
    await redis.hset(
        failing.status,
        mapping={
            "at": now_ms - 1000,
            "duration": "0.412",
            "complete": "0",
            "reason": "storm: login failed (401)",
            "events": 0,
            "owner": "host-1-aaaa",
        },
    )
    await redis.set(failing.lease, "host-1-aaaa:7")
    await redis.hset(stale.meta, mapping={"polled_at": now_ms - 100_000, "sequence": 12})
    await redis.hset(fine.meta, mapping={"polled_at": now_ms - 3000, "sequence": 5})
    await redis.set(fine.lease, "host-2-bbbb:3")
    settings = settings_for("redis://x", clusters=("eu-1", "eu-2", "eu-3"))
    status = await read_status(redis, settings, now=now)
    eu_1, eu_2, eu_3 = status.clusters
    assert eu_1.leader == "host-1-aaaa"
    assert eu_1.last_poll is not None
    assert (eu_1.last_poll.complete, eu_1.last_poll.reason) == (False, "storm: login failed (401)")
    assert eu_1.last_poll.duration == 0.412
    assert eu_2.leader is None
    assert eu_3.healthy
    assert eu_3.leader == "host-2-bbbb"
    assert status.problems == [
        "cluster eu-1: not polled yet: storm: login failed (401)",
        "cluster eu-2: last complete poll 100s ago: no replica leads it",
    ]
    assert not status.healthy
    only = await read_status(redis, settings, now=now, cluster="eu-3")
    assert (only.healthy, [c.name for c in only.clusters]) == (True, ["eu-3"])


def state(viewers: int, **extra: Any) -> StreamState:
    """A live audience's stored state."""
    return StreamState(
        viewers, viewers, 0, {}, {}, {}, 1_770_000_000_000, viewers, 1_770_000_000_000, viewers,
        **extra,
    )  # fmt: skip


async def test_the_top_streams_come_with_their_hour_and_incident(redis: Redis) -> None:
    """The ten largest audiences across clusters, largest first; each with its samples of the
    last hour plus now, and the open incident of a degraded one."""
    now_ms = int(time.time() * 1000)
    a, b = ClusterKeys("notifier", "a"), ClusterKeys("notifier", "b")
    for keys, sizes in ((a, range(1, 8)), (b, range(10, 80, 10))):
        for size in sizes:
            extra = {}
            if size == 70:
                extra = {"degraded_since": now_ms - 60_000, "peak_dropped": 9, "peak_share": 0.3}
            name, blob = StreamCodec.encode(StreamId("app", f"s{size}"), state(size, **extra))
            await redis.hset(keys.streams, name, blob)
        await redis.hset(keys.meta, mapping={"polled_at": now_ms, "sequence": 0})
    samples = [
        {"at": now_ms - 5_000_000, "seq": 0, "tracked": 1, "streams": [["app", "s70", 1]]},
        {"at": now_ms - 600_000, "seq": 0, "tracked": 60, "streams": [["app", "s70", 60]]},
        {"at": now_ms - 20_000, "seq": 0, "tracked": 65, "streams": [["app", "s70", 65]]},
    ]
    for sample in samples:  # newest first, as LPUSH leaves them
        await redis.lpush(b.history, json.dumps(sample))
    status = await read_status(redis, settings_for("redis://x", clusters=("a", "b")))
    assert [(s.cluster, s.viewers) for s in status.streams] == [
        ("b", 70), ("b", 60), ("b", 50), ("b", 40), ("b", 30), ("b", 20), ("b", 10),
        ("a", 7), ("a", 6), ("a", 5),
    ]  # fmt: skip
    top = status.streams[0]
    assert [(p.at_ms, p.viewers) for p in top.history[:2]] == [
        (now_ms - 600_000, 60),
        (now_ms - 20_000, 65),
    ]
    assert top.history[-1].viewers == 70
    assert len(top.history) == 3
    assert top.incident is not None
    assert (top.incident.peak_dropped, top.incident.peak_share) == (9, 0.3)
    assert status.streams[1].incident is None
    assert [p.viewers for p in status.streams[1].history] == [60]


def fake_events(stamps_ms: list[int]) -> list[Event]:
    """Events whose stream entries were added at ``stamps_ms``, newest first."""
    out = []
    for n, ms in enumerate(sorted(stamps_ms, reverse=True)):
        _, body = encode_event(
            cluster="a",
            event_type="viewer.connected",
            viewer_id=f"v{n}",
            record=b'{"id": "v"}',
            data={},
            sequence=n + 1,
            epoch=str(uuid.UUID(int=1)),
            time_ms=ms,
        )
        out.append(decode_event("a", f"{ms}-{n}", {b"event": body}))
    return out


def test_events_per_minute_counts_or_uses_the_sequence() -> None:
    """Counted when the newest 50 events reach back past the minute; over 50 in the minute,
    from the sequence since the newest sample a minute old (else the oldest, 20 s old at
    least); without one, or after the sequence restarted, the count read."""
    now = 1_770_000_000_000
    few = fake_events([now - 120_000] * 10 + [now - 5_000] * 7)
    assert events_per_minute(few, [], 100, now) == 7.0
    burst = fake_events([now - 1_000] * 50)
    samples = [Sample(now - 20_000, 900, 0, ()), Sample(now - 80_000, 100, 0, ())]
    assert events_per_minute(burst, samples, 1300, now) == 900.0  # 1200 over 80 s
    assert events_per_minute(burst, samples[:1], 1300, now) == 1200.0  # 400 over 20 s
    assert events_per_minute(burst, [Sample(now - 5_000, 1290, 0, ())], 1300, now) == 50.0
    assert events_per_minute(burst, [Sample(now - 90_000, 5000, 0, ())], 1300, now) == 50.0
    assert events_per_minute(fake_events([now - 1000] * 3), [], 3, now) == 3.0


async def test_redis_that_does_not_answer_is_one_line() -> None:
    """A refused Redis port: StatusUnavailable, "redis: unreachable (...)"."""
    redis = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1)
    try:
        with pytest.raises(StatusUnavailable, match=r"^redis: unreachable \(.+\)$"):
            await read_status(redis, settings_for("redis://x"))
    finally:
        await redis.aclose()


# --- delivery partitions -----------------------------------------------------------------------


PARTED = [hook("hooks", "https://hooks.example.com/x") | {"partitions": 3}]
"""A sink whose delivery of each cluster is split into three partitions."""
OWNER_A, OWNER_B = "web-a-11-0a1b2c3d", "web-b-22-4e5f6a7b"


async def add_events(redis: Redis, count: int) -> None:
    """``count`` viewer events on the cluster stream, as a poller writes them."""
    for n in range(count):
        _, body = encode_event(
            cluster="sim",
            event_type="viewer.connected",
            viewer_id=f"v{n}",
            record=b'{"id": "v"}',
            data={},
            sequence=n + 1,
            epoch=str(uuid.UUID(int=1)),
            time_ms=1_770_000_000_000 + n,
        )
        await redis.xadd(KEYS.events, {"event": body})


async def read_as(redis: Redis, group: str, count: int, *, ack: int = 0) -> None:
    """Make ``group`` at the start of the stream, read ``count`` entries through it, then
    acknowledge the first ``ack`` of them."""
    await redis.xgroup_create(KEYS.events, group, id="0")
    if not count:
        return
    reply = cast(
        "list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]]",
        await redis.xreadgroup(group, "c1", {KEYS.events: ">"}, count=count),
    )
    ids = [entry_id for entry_id, _ in reply[0][1]]
    assert len(ids) == count
    if ack:
        await redis.xack(KEYS.events, group, *ids[:ack])


async def write_partitioned(redis: Redis, now_ms: int) -> None:
    """Ten events; partition 0 read them all (6 not acknowledged), 1 read three, 2 none;
    0 and 1 led by two replicas, 2 by nobody; 1 paused with the newest error and delivery;
    one retry and two dead letters of the sink."""
    await add_events(redis, 10)
    await read_as(redis, "sink:hooks:0", 10, ack=4)
    await read_as(redis, "sink:hooks:1", 3, ack=3)
    await read_as(redis, "sink:hooks:2", 0)
    parts = partitions("hooks", 3)
    await redis.set(parts[0].lease_key(KEYS), f"{OWNER_A}:5")
    await redis.set(parts[1].lease_key(KEYS), f"{OWNER_B}:9")
    await redis.hset(
        KEYS.sink_state("hooks:0"),
        mapping={
            "last_error": "HTTP 500 (older)",
            "last_error_at": now_ms - 60_000,
            "last_delivered_at": now_ms - 30_000,
        },
    )
    await redis.hset(
        KEYS.sink_state("hooks:1"),
        mapping={
            "paused": "HTTP 410 (Gone)",
            "last_error": "HTTP 410 (Gone)",
            "last_error_at": now_ms - 5_000,
            "last_delivered_at": now_ms - 10_000,
        },
    )
    await redis.hset(KEYS.retries("hooks"), "some-event", "1")
    for _ in range(2):
        await redis.xadd(KEYS.dlq("hooks"), {"event": "x"})


async def test_a_lane_of_three_partitions_shows_each_and_their_aggregate(redis: Redis) -> None:
    """Per partition its group's lag and pending, its lease holder and its report; the lane's
    lag the largest of them, pending their sum, the newest error and delivery, the pause of
    the paused one (one problem line for the sink), retries and dead letters per sink."""
    now = time.time()
    now_ms = int(now * 1000)
    await write_partitioned(redis, now_ms)
    await redis.hset(KEYS.meta, mapping={"polled_at": now_ms, "sequence": 10})
    status = await read_status(redis, settings_for("redis://x", PARTED), now=now)
    (sink,) = status.sinks
    (lane,) = sink.lanes
    assert [(p.index, p.lag, p.pending, p.leader) for p in lane.partitions] == [
        (0, 0, 6, OWNER_A),
        (1, 7, 0, OWNER_B),
        (2, 10, 0, None),
    ]
    assert [p.leader_short for p in lane.partitions] == ["web-a-11", "web-b-22", None]
    first, second, third = lane.partitions
    assert (first.last_error, first.paused) == ("HTTP 500 (older)", None)
    assert first.last_delivered_at == iso_time(now_ms - 30_000)
    assert (second.paused, second.last_delivered_at) == (
        "HTTP 410 (Gone)",
        iso_time(now_ms - 10_000),
    )
    assert (third.last_error, third.last_delivered_at, third.paused) == (None, None, None)
    assert (lane.lag, lane.pending, lane.retrying, lane.dead_letters) == (10, 6, 1, 2)
    assert (lane.last_error, lane.last_error_at) == ("HTTP 410 (Gone)", iso_time(now_ms - 5_000))
    assert lane.last_delivered_at == iso_time(now_ms - 10_000)
    assert lane.paused == sink.paused == "HTTP 410 (Gone)"
    assert status.problems == ["sink hooks: paused: HTTP 410 (Gone)"]

    health = await read_status(redis, settings_for("redis://x", PARTED), now=now, detail=False)
    (health_lane,) = health.sinks[0].lanes
    assert [p.paused for p in health_lane.partitions] == [None, "HTTP 410 (Gone)", None]
    assert health.problems == status.problems
    assert health_lane.partitions[0].leader is None  # the leases are not read for health


async def test_a_partition_without_its_group_leaves_the_lag_unknown(redis: Redis) -> None:
    """Before every partition's group exists the lane's lag is unknown (None); the others'
    figures are still shown."""
    await add_events(redis, 4)
    await read_as(redis, "sink:hooks:0", 1)
    await read_as(redis, "sink:hooks:2", 0)
    status = await read_status(redis, settings_for("redis://x", PARTED))
    (lane,) = status.sinks[0].lanes
    assert [(p.lag, p.pending) for p in lane.partitions] == [(3, 1), (None, 0), (4, 0)]
    assert (lane.lag, lane.pending) == (None, 1)


async def test_one_partition_keeps_the_names_of_a_sink_without_partitions(redis: Redis) -> None:
    """K = 1: the group ``sink:<name>``, the report ``sinkstate:<name>`` and the lease
    ``sinklease:<name>``, one partition (index 0) whose figures are the lane's; groups of
    partitions of another K do not count."""
    now_ms = int(time.time() * 1000)
    await add_events(redis, 5)
    await read_as(redis, "sink:hooks", 2, ack=1)
    await read_as(redis, "sink:hooks:0", 0)  # left by a layout of K = 2, say
    await redis.set(KEYS.sink_lease("hooks"), f"{OWNER_A}:1")
    await redis.hset(KEYS.sink_state("hooks"), "last_delivered_at", now_ms - 1000)
    settings = settings_for("redis://x", [hook("hooks", "https://hooks.example.com/x")])
    (lane,) = (await read_status(redis, settings)).sinks[0].lanes
    assert (lane.lag, lane.pending, lane.last_delivered_at) == (3, 1, iso_time(now_ms - 1000))
    assert lane.partitions == [
        PartitionLane(
            index=0,
            lag=3,
            pending=1,
            leader=OWNER_A,
            last_delivered_at=iso_time(now_ms - 1000),
            last_error=None,
        )
    ]


async def test_the_table_shows_a_row_per_partition(redis: Redis) -> None:
    """``notifier status`` prints a sub-row per partition under a lane of three (index, the
    leader's short id, lag, pending), error text as it is; a lane of one has none."""
    now = time.time()
    await write_partitioned(redis, int(now * 1000))
    await redis.hset(KEYS.sink_state("hooks:2"), "last_error", "[bold]HTTP 500[/]")
    settings = settings_for("redis://x", [*PARTED, hook("single", "https://hooks.example.com/y")])
    out = io.StringIO()
    print_status(await read_status(redis, settings, now=now), Console(file=out, width=250))
    lines = out.getvalue().splitlines()
    rows = {n: next(line for line in lines if f"partition {n} " in line) for n in range(3)}
    cells = [[cell.strip() for cell in rows[n].split("│")[1:6]] for n in range(3)]
    assert cells == [
        ["partition 0", "", "web-a-11", "0", "6"],
        ["partition 1", "", "paused: HTTP 410 (Gone)", "7", "0"],
        ["partition 2", "", "no leader", "10", "0"],
    ]
    assert "[bold]HTTP 500[/]" in rows[2]
    assert sum("partition" in line for line in lines) == 3  # none for the sink of one
    assert any("single (webhook)" in line for line in lines)


# --- notifier status ----------------------------------------------------------------------------


SECRETS = ("STORM_TOKEN", "HOOK_SECRET")
"""The configuration's ${VAR}s, left unset: `notifier status` needs neither."""


async def notifier_status(config: Path, *args: str) -> tuple[int, str, str]:
    """Run ``notifier status`` as a process, without the Storm or sink secrets in its
    environment: exit status, stdout, stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "notifier",
        "status",
        "--config",
        str(config),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if k not in SECRETS} | {"COLUMNS": "200"},
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_notifier_status_exits_with_the_health(
    tmp_path: Path, redis_url: str, redis: Redis
) -> None:
    """Exit 1 with the problem on stderr before any poll; 0 with the tables after a real poll;
    --json is the model; 1 again when a sink is paused; 2 for an unknown cluster. The Storm
    token and the webhook secret are never needed."""
    config = tmp_path / "notifier.yaml"
    async with running_simulator(SIM) as sim:
        config.write_text(
            f"redis: {{url: '{redis_url}'}}\n"
            f"clusters:\n  - {{name: sim, base_url: '{sim.url}',"
            " auth: {token: '${STORM_TOKEN}'}}\n"
            "sinks:\n"
            "  - {name: hooks, type: webhook, url: 'https://hooks.example.com/x',"
            " secret: '${HOOK_SECRET}'}\n"
        )
        code, out, err = await notifier_status(config)
        assert code == 1
        assert err.splitlines() == ["notifier: cluster sim: not polled yet: no replica leads it"]
        assert "Clusters" in out
        async with polling(sim.url, redis, "replica-1") as run:
            await run.cycles()
        poller = run.poller
        code, out, err = await notifier_status(config)
        assert (code, err) == (0, "")
        assert "healthy" in out
        assert "replica-1" in out
        assert f"{poller.tracked:,}" in out
        assert "hooks (webhook)" in out

        code, out, err = await notifier_status(config, "--json")
        assert (code, err) == (0, "")
        status = msgspec.json.decode(out, type=Status)
        assert status.clusters[0].tracked_viewers == poller.tracked
        assert [s.name for s in status.sinks] == ["hooks"]

        await redis.hset(KEYS.sink_state("hooks"), "paused", "HTTP 410 (Gone)")
        code, out, err = await notifier_status(config, "--json")
        assert code == 1
        assert err.splitlines() == ["notifier: sink hooks: paused: HTTP 410 (Gone)"]
        assert msgspec.json.decode(out, type=Status).sinks[0].paused == "HTTP 410 (Gone)"

        code, out, err = await notifier_status(config, "--cluster", "nope")
        assert code == 2
        assert "no cluster named 'nope'" in err


def test_the_tables_print_storm_text_as_it_is() -> None:
    """A stream key or viewer id that looks like rich markup is printed literally."""
    status = Status(
        generated_at="2026-02-05T08:22:41.200Z",
        version="0",
        healthy=True,
        problems=[],
        clusters=[],
        streams=[
            StreamStatus(
                cluster="eu-1",
                application_id="app",
                stream_key="[bold red]live[/]",
                viewers=3,
                peak_viewers=3,
                dropped=0,
                measured=3,
                dropped_share=0.0,
                incident=None,
                history=[],
            )
        ],
        sinks=[],
        events=[
            EventLine(
                cluster="eu-1",
                id="e1",
                type="viewer.connected",
                time="2026-02-05T08:22:40.071Z",
                stream_key="[bold red]live[/]",
                viewer="[link=http://x]v1[/link]",
                country="PL",
                health=80,
                initial=False,
            )
        ],
    )
    out = io.StringIO()
    print_status(status, Console(file=out, width=200, color_system=None))
    text = out.getvalue()
    assert text.count("[bold red]live[/]") == 2
    assert "[link=http://x]v1[/link]" in text
    assert "1 s ago" in text


def test_what_waits_is_counted_one_way_for_the_metric_and_the_status() -> None:
    """``Waiting.of``: the furthest-behind partition's lag (unknown if any is), pending less the
    retry states (never below 0, as while partitions change)."""
    assert Waiting.of([4, 9], [30, 12], 5) == Waiting(unread=9, in_hand=37, retrying=5)
    assert Waiting.of([4, None], [3], 0).unread is None
    assert Waiting.of([], [], 0).unread is None
    assert Waiting.of([0], [2], 5) == Waiting(unread=0, in_hand=0, retrying=5)
    assert Waiting(1, 2, 3).by_state() == {"unread": 1, "in_hand": 2, "retrying": 3}
