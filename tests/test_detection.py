"""Detection against a real redis-server: the store, the lease, and the poller end to end."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import structlog.testing
from aiohttp import web

from notifier.config import DetectionSettings
from notifier.detect.encoding import encode_poll
from notifier.detect.poller import Poller, next_slot
from notifier.detect.rules import Detection, Track, detect
from notifier.detect.store import CommitOutcome, StateStore, TrackCodec
from notifier.errors import StateError
from notifier.events import EncodedEvent
from notifier.keys import ClusterKeys
from notifier.lease import Lease
from notifier.metrics import Metrics
from notifier.simulator import Change, Faults, PopulationSettings, SimulatorSettings
from notifier.storm import StormClient, Viewer, create_session
from testkit.detection_support import (
    actual_events,
    assert_well_formed,
    expected_events,
    lockstep,
    stream_events,
)

from .conftest import FAST_BACKOFF, cluster_settings, scripted_storm

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping

    from redis.asyncio import Redis

KEYS = ClusterKeys("t", "sim")


def _viewer(vid: str, score: int = 90) -> Viewer:
    raw = json.dumps({"id": vid, "healthScore": score, "healthGrade": "Good"}).encode()
    return Viewer(id=vid, health=score, health_grade="Good", raw=raw)


def _detect(tracked: Mapping[str, Track], *ids: str) -> Detection:
    return detect(tracked, {i: _viewer(i) for i in ids}, polled_at=1, settings=DetectionSettings())


def _event(n: int) -> EncodedEvent:
    return EncodedEvent(type="viewer.connected", id=str(uuid.uuid4()), body=b'{"n":%d}' % n)


# --- the store and the lease -----------------------------------------------------------------


async def test_an_empty_cluster_loads_at_generation_zero_with_a_stable_epoch(redis: Redis) -> None:
    """First load creates the epoch; later loads keep it."""
    store = StateStore(redis, KEYS, maxlen=1000)
    first = await store.load()
    assert (first.generation, first.sequence, first.tracked) == (0, 0, {})
    assert (await store.load()).epoch == first.epoch


async def test_state_written_by_release_0_1_still_loads(redis: Redis) -> None:
    """Tracked viewers stored by 0.1 (untagged layout, tests/fixtures) load, and carry on."""
    fixture = Path(__file__).parent / "fixtures" / "viewers-0.1.json"
    blobs = {vid: bytes.fromhex(hexed) for vid, hexed in json.loads(fixture.read_text()).items()}
    await redis.hset(KEYS.viewers, mapping=blobs)
    store = StateStore(redis, KEYS, maxlen=1000)
    snapshot = await store.load()
    assert set(snapshot.tracked) == {"v_fresh", "v_dropped", "v_nodata"}
    dropped = snapshot.tracked["v_dropped"]
    assert (dropped.seen_at, dropped.missed, dropped.dropped, dropped.streak) == (
        1770000005000,
        1,
        True,
        1,
    )
    assert (dropped.anchor_score, dropped.anchor_grade) == (31.5, "Bad")
    assert (dropped.last_score, dropped.last_grade, dropped.unlisted) == (20, "Very Bad", 2)
    assert json.loads(snapshot.tracked["v_fresh"].record)["healthGrade"] == "Very Good"
    lease = Lease(redis, KEYS.lease, KEYS.fence, "me", ttl=10)
    assert await lease.acquire()
    assert lease.value is not None
    detection = detect(
        snapshot.tracked,
        {"v_fresh": _viewer("v_fresh"), "v_dropped": _viewer("v_dropped", 95)},
        polled_at=1770000015000,
        settings=DetectionSettings(),
    )
    events = encode_poll(
        detection.emissions, cluster="t", epoch=snapshot.epoch, after=0, time_ms=1770000015000
    )
    assert [e.type for e in events] == ["viewer.health_recovered"]
    outcome, _ = await store.commit(
        snapshot, detection, events, lease=lease.value, polled_at=1770000015000
    )
    assert outcome is CommitOutcome.COMMITTED
    rewritten = await store.load()  # old and new layouts side by side in one hash
    assert set(rewritten.tracked) == set(detection.state)
    assert rewritten.tracked["v_nodata"].missed == 1
    assert TrackCodec.decode(TrackCodec.encode(dropped, synced=3), polls=3) == dropped


async def test_commit_applies_changes_events_and_generation_atomically(redis: Redis) -> None:
    """A commit writes the changed entries, the events with their fields, and generation + 1."""
    store = StateStore(redis, KEYS, maxlen=1000)
    lease = Lease(redis, KEYS.lease, KEYS.fence, "me", ttl=10)
    assert await lease.acquire()
    assert lease.value is not None
    snapshot = await store.load()
    detection = _detect({}, "a", "b")
    events = [_event(1), _event(2)]
    outcome, generation = await store.commit(
        snapshot, detection, events, lease=lease.value, polled_at=7
    )
    assert (outcome, generation) == (CommitOutcome.COMMITTED, 1)
    loaded = await store.load()
    assert (loaded.generation, loaded.sequence) == (1, 2)
    assert loaded.tracked == detection.state
    entries: list[tuple[bytes, dict[bytes, bytes]]] = await redis.xrange(KEYS.events)  # type: ignore[assignment]
    assert [(f[b"type"], f[b"id"].decode(), f[b"event"]) for _, f in entries] == [
        (b"viewer.connected", e.id, e.body) for e in events
    ]
    meta = await redis.hgetall(KEYS.meta)
    assert (meta[b"polls"], meta[b"polled_at"]) == (b"1", b"7")
    once = _detect(loaded.tracked, "a")  # b missed once: an upsert
    outcome, _ = await store.commit(loaded, once, [], lease=lease.value, polled_at=8)
    assert outcome is CommitOutcome.COMMITTED
    reloaded = await store.load()
    assert reloaded.tracked["b"].missed == 1
    twice = _detect(reloaded.tracked, "a")  # b missed twice: a delete
    assert twice.deletes == ["b"]
    outcome, _ = await store.commit(reloaded, twice, [_event(3)], lease=lease.value, polled_at=9)
    assert outcome is CommitOutcome.COMMITTED
    assert set(await redis.hkeys(KEYS.viewers)) == {b"a"}
    assert (await store.load()).sequence == 3


async def test_a_stale_or_fenced_commit_writes_nothing(redis: Redis) -> None:
    """A commit computed against an old generation, or without the lease, changes nothing."""
    store = StateStore(redis, KEYS, maxlen=1000)
    lease = Lease(redis, KEYS.lease, KEYS.fence, "me", ttl=10)
    assert await lease.acquire()
    assert lease.value is not None
    snapshot = await store.load()
    ok, _ = await store.commit(
        snapshot, _detect({}, "a"), [_event(1)], lease=lease.value, polled_at=1
    )
    assert ok is CommitOutcome.COMMITTED
    # The same commit again (a retry after a lost reply) is stale: no duplicate event.
    again, generation = await store.commit(
        snapshot, _detect({}, "a"), [_event(1)], lease=lease.value, polled_at=1
    )
    assert (again, generation) == (CommitOutcome.STALE, 1)
    fresh = await store.load()
    fenced, _ = await store.commit(
        fresh, _detect(fresh.tracked, "a", "b"), [_event(2)], lease="someone-else:99", polled_at=2
    )
    assert fenced is CommitOutcome.FENCED
    assert await redis.xlen(KEYS.events) == 1
    assert (await store.load()).tracked.keys() == {"a"}


async def test_the_stream_is_trimmed_approximately(redis: Redis) -> None:
    """XADD carries MAXLEN ~ streams.maxlen."""
    store = StateStore(redis, KEYS, maxlen=100)
    lease = Lease(redis, KEYS.lease, KEYS.fence, "me", ttl=10)
    assert await lease.acquire()
    assert lease.value is not None
    for round_ in range(5):
        snapshot = await store.load()
        events = [_event(round_ * 1000 + i) for i in range(300)]
        outcome, _ = await store.commit(
            snapshot, _detect(snapshot.tracked), events, lease=lease.value, polled_at=round_
        )
        assert outcome is CommitOutcome.COMMITTED
    assert 100 <= await redis.xlen(KEYS.events) < 600
    assert (await store.load()).sequence == 1500


async def test_unreadable_state_is_a_clear_error(redis: Redis) -> None:
    """An entry this version did not write is named in a one-line StateError."""
    store = StateStore(redis, KEYS, maxlen=1000)
    await redis.hset(KEYS.viewers, "v_bad", b"not msgpack of a track")
    with pytest.raises(StateError, match=r"t:\{sim\}:viewers: entry 'v_bad' is not a state"):
        await store.load()


async def test_leases_exclude_others_and_hand_out_rising_fencing_tokens(redis: Redis) -> None:
    """One holder at a time; renewal keeps the token; a new holder gets a higher one."""
    a = Lease(redis, KEYS.lease, KEYS.fence, "a", ttl=10)
    b = Lease(redis, KEYS.lease, KEYS.fence, "b", ttl=10)
    assert await a.acquire()
    assert not await b.acquire()
    first = a.value
    assert await a.acquire()
    assert a.value == first
    await a.release()
    assert await b.acquire()
    assert b.value is not None
    assert first is not None
    assert int(b.value.rsplit(":", 1)[1]) > int(first.rsplit(":", 1)[1])
    await redis.pexpire(KEYS.lease, 1)  # b's lease runs out
    await redis.delete(KEYS.lease)
    assert await a.acquire()
    assert a.value is not None
    assert int(a.value.rsplit(":", 1)[1]) > int(b.value.rsplit(":", 1)[1])


def test_polls_start_on_a_fixed_grid_and_skip_missed_slots() -> None:
    """The next slot stays on the grid; an overrun skips slots instead of piling up."""
    assert next_slot(10.0, 5.0, 11.0) == 15.0
    assert next_slot(10.0, 5.0, 15.0) == 15.0
    assert next_slot(10.0, 5.0, 27.5) == 30.0


# --- the poller against the simulator --------------------------------------------------------


@asynccontextmanager
async def poller_for(
    url: str,
    redis: Redis,
    detection: DetectionSettings,
    metrics: Metrics | None = None,
    **cluster: Any,
) -> AsyncIterator[Poller]:
    settings = cluster_settings(url, **cluster)
    async with create_session(settings) as session:
        client = StormClient(settings, session, backoff=FAST_BACKOFF)
        store = StateStore(redis, KEYS, maxlen=100_000)
        lease = Lease(redis, KEYS.lease, KEYS.fence, f"test-{uuid.uuid4().hex[:6]}", ttl=30)
        yield Poller(settings, detection, client=client, store=store, lease=lease, metrics=metrics)
        await client.aclose()


VIEWERS_ONLY = DetectionSettings.model_validate({"streams": {"enabled": False}})
SMALL = SimulatorSettings(population=PopulationSettings(seed=5, viewers=30))


async def test_a_fenced_commit_is_an_error_line_and_a_metric(redis_url: str, redis: Redis) -> None:
    """Another replica took the lease while this one polled: nothing written, said loudly."""
    metrics = Metrics()
    with structlog.testing.capture_logs() as logs:
        async with (
            lockstep(SMALL, Faults(), redis_url, KEYS) as sim,
            poller_for(sim.url, redis, DetectionSettings(), metrics) as poller,
        ):
            await poller.cycle()
            assert await sim.polls() == 1
            await redis.delete(KEYS.lease)
            assert await Lease(redis, KEYS.lease, KEYS.fence, "other", ttl=30).acquire()
            await poller.cycle()
            assert await sim.polls() == 1
    (fenced,) = [e for e in logs if e["event"] == "poller.commit_fenced"]
    assert fenced["log_level"] == "error"
    labels = {"cluster": "sim", "outcome": "fenced"}
    assert metrics.registry.get_sample_value("notifier_polls_total", labels) == 1


async def test_a_poll_slower_than_its_interval_is_said_once_with_its_slowest_phase(
    redis_url: str, redis: Redis
) -> None:
    """poll_interval 1ms: every cycle overruns; one warning names the phase, and the whole
    cycle is in notifier_poll_duration_seconds, each phase in notifier_poll_phase_seconds."""
    metrics = Metrics()
    with structlog.testing.capture_logs() as logs:
        async with (
            lockstep(SMALL, Faults(), redis_url, KEYS) as sim,
            poller_for(sim.url, redis, DetectionSettings(), metrics, poll_interval="1ms") as poller,
        ):
            for _ in range(3):
                await poller.cycle()
    (slow,) = [e for e in logs if e["event"] == "poller.poll_slow"]
    assert slow["log_level"] == "warning"
    assert slow["slowest_phase"] in ("fetch", "lookup", "detect", "commit")
    assert slow["seconds"] >= 0.001
    count = metrics.registry.get_sample_value
    assert count("notifier_poll_duration_seconds_count", {"cluster": "sim"}) == 3
    for phase in ("fetch", "lookup", "detect", "commit"):
        assert count("notifier_poll_phase_seconds_count", {"cluster": "sim", "phase": phase}) == 3
    whole = count("notifier_poll_duration_seconds_sum", {"cluster": "sim"})
    fetch = count("notifier_poll_phase_seconds_sum", {"cluster": "sim", "phase": "fetch"})
    assert whole is not None
    assert fetch is not None
    assert whole >= fetch


async def test_events_match_the_ground_truth_through_faults(redis_url: str, redis: Redis) -> None:
    """Churn, health changes, No Data, capped pages, 5xx, 429, bad bodies, expiring tokens:
    the stream holds exactly the events the rules give over the true population states."""
    faults = Faults(
        seed=2,
        max_rows_per_page=25,
        error_rate=0.05,
        rate_limit_rate=0.03,
        retry_after=0.01,
        malformed_rate=0.03,
    )
    population = PopulationSettings(
        seed=3,
        viewers=150,
        join_rate=0.08,
        leave_rate=0.08,
        health_change_rate=0.3,
        no_data_rate=0.15,
    )
    detection = DetectionSettings()
    async with (
        lockstep(SimulatorSettings(population=population), faults, redis_url, KEYS) as sim,
        poller_for(sim.url, redis, detection, page_size=100) as poller,
    ):
        cycles = 0
        while await sim.polls() < 40:
            if cycles in (5, 25):  # tokens die now and then (logins are capped at 5 a minute)
                sim.simulator.faults.script("expire-token")
            if cycles % 13 == 0:
                sim.simulator.faults.script("503", "429", "truncated")
            await poller.cycle()
            cycles += 1
            assert cycles < 400
        final = await sim.polls()
        events = await stream_events(redis, KEYS.events)
    assert_well_formed(events, "sim")
    assert actual_events(events) == expected_events(sim.states[:final], detection)
    kinds = {e["type"] for e in events if e["type"].startswith("viewer.")}
    assert kinds == {
        "viewer.connected",
        "viewer.disconnected",
        "viewer.health_dropped",
        "viewer.health_recovered",
    }


async def test_a_restarted_poller_carries_on_from_redis(redis_url: str, redis: Redis) -> None:
    """A new poller (empty memory) picks up the state, sequence and epoch where Redis has them."""
    population = PopulationSettings(
        seed=5, viewers=80, join_rate=0.1, leave_rate=0.1, health_change_rate=0.3
    )
    detection = DetectionSettings()
    async with lockstep(SimulatorSettings(population=population), Faults(), redis_url, KEYS) as sim:
        for _ in range(3):  # three processes in a row, each doing a few polls
            async with poller_for(sim.url, redis, detection) as poller:
                for _ in range(6):
                    await poller.cycle()
                await poller.close()  # a clean stop: newest records saved, lease given back
        final = await sim.polls()
        events = await stream_events(redis, KEYS.events)
    assert final == 18
    assert_well_formed(events, "sim")
    assert actual_events(events) == expected_events(sim.states[:final], detection)


async def test_an_incomplete_poll_changes_nothing(redis_url: str, redis: Redis) -> None:
    """A poll that fails part-way commits nothing: no disconnects for the unread viewers."""
    async with lockstep(
        SimulatorSettings(population=PopulationSettings(viewers=60)),
        Faults(max_rows_per_page=10),
        redis_url,
        KEYS,
    ) as sim:
        async with poller_for(
            sim.url, redis, DetectionSettings(), page_size=10, poll_budget="200ms"
        ) as poller:
            await poller.cycle()
            assert await sim.polls() == 1
            sim.simulator.faults.script("ok", "ok", *["500"] * 100)
            for _ in range(3):
                await poller.cycle()
            sim.simulator.faults.script()
        assert await sim.polls() == 1
        kinds = Counter(e["type"].split(".")[0] for e in await stream_events(redis, KEYS.events))
        assert kinds["viewer"] == 60  # the first poll's connects, nothing since


async def test_paging_drift_causes_no_false_disconnect_and_no_duplicate(
    redis_url: str, redis: Redis
) -> None:
    """Viewers shifting between pages mid-pass (and pages read in a reshuffled order) are
    confirmed by lookup: nobody still connected is disconnected, nobody is connected twice."""
    faults = Faults(seed=9, max_rows_per_page=20, churn_per_request=2, reorder_rate=0.15)
    population = PopulationSettings(seed=4, viewers=300, join_rate=0.03, leave_rate=0.03)
    left_at: dict[str, int] = {}
    async with lockstep(SimulatorSettings(population=population), faults, redis_url, KEYS) as sim:

        def record(changes: list[Change]) -> None:
            for change in changes:
                if change.kind == "left":
                    left_at[change.viewer_id] = sim.committed

        sim.simulator.change_listeners.append(record)
        original_step = sim.simulator.population.step

        def step_and_record() -> list[Change]:
            changes = original_step()
            record(changes)
            return changes

        sim.simulator.population.step = step_and_record  # type: ignore[method-assign]
        async with poller_for(sim.url, redis, DetectionSettings(), page_size=20) as poller:
            while await sim.polls() < 30:
                await poller.cycle()
        final = await sim.polls()
        present = sim.simulator.population.ids()
        events = await stream_events(redis, KEYS.events)
    assert_well_formed(events, "sim")
    history: dict[str, list[str]] = {}
    for event in events:
        if event["type"].startswith("viewer."):
            history.setdefault(event["subject"], []).append(event["type"])
    for vid, kinds in history.items():
        lifecycle = [k for k in kinds if k in ("viewer.connected", "viewer.disconnected")]
        assert lifecycle in (["viewer.connected"], ["viewer.connected", "viewer.disconnected"])
        if "viewer.disconnected" in lifecycle:
            assert vid not in present, f"{vid} was disconnected while still connected"
    for vid in present:
        if vid not in left_at:
            assert history.get(vid, [None])[0] in ("viewer.connected", None)
    for vid, when in left_at.items():
        if when <= final - 4 and vid in history:
            assert history[vid][-1] == "viewer.disconnected", f"{vid} left but stayed tracked"
    stored: dict[bytes, bytes] = await redis.hgetall(KEYS.viewers)  # type: ignore[assignment]
    tracked = {k.decode() for k in stored}
    assert tracked <= present | {v for v, w in left_at.items() if w > final - 4}
    for blob in stored.values():
        TrackCodec.decode(blob, polls=0)


async def test_redis_work_per_poll_follows_the_changes_not_the_audience(
    redis_url: str, redis: Redis
) -> None:
    """A steady audience costs one small write per poll; changes cost one batch, not a reload."""
    settings = SimulatorSettings(population=PopulationSettings(seed=1, viewers=500))
    async with (
        lockstep(settings, Faults(max_rows_per_page=100), redis_url, KEYS) as sim,
        poller_for(sim.url, redis, VIEWERS_ONLY, page_size=100) as poller,
    ):
        sim.simulator.population.step = list  # type: ignore[method-assign]
        await poller.cycle()  # the first poll: everyone connects
        assert await redis.xlen(KEYS.events) == 500
        await poller.cycle()  # the second: low health confirmed, as drops
        await redis.config_resetstat()
        for _ in range(3):
            await poller.cycle()
        stats = await redis.info("commandstats")
        assert stats["cmdstat_hset"]["calls"] == 3  # the meta hash, once a poll
        assert "cmdstat_xadd" not in stats
        assert "cmdstat_hgetall" not in stats  # the cached state was trusted
        population = sim.simulator.population
        gone = sorted(population.ids())[:4]
        population.leave(gone)
        for joined in population.join(3):
            population.set_health(joined, 95, "Very Good")
        await redis.config_resetstat()
        await poller.cycle()  # 4 missed once (one HSET batch), 3 connected
        await poller.cycle()  # 4 disconnected (one HDEL batch)
        stats = await redis.info("commandstats")
        assert stats["cmdstat_xadd"]["calls"] == 7
        assert stats["cmdstat_hset"]["calls"] == 2 + 1  # meta twice, one batch of 7 entries
        assert stats["cmdstat_hdel"]["calls"] == 1
        assert "cmdstat_hgetall" not in stats


async def test_without_a_batch_endpoint_the_plain_rules_apply(redis: Redis) -> None:
    """A deployment without /viewers/batch: lookups are switched off, misses count as misses."""
    listed = [["v_a", "v_b"], ["v_a"], ["v_a"]]

    async def viewers(request: web.Request) -> web.Response:
        ids = listed[min(len(calls), len(listed) - 1)]
        calls.append(1)
        rows = [{"id": i, "healthScore": 90, "healthGrade": "Very Good"} for i in ids]
        return web.json_response({"data": {"list": rows, "totalPages": 1}})

    calls: list[int] = []
    async with (
        scripted_storm({("GET", "/api/cluster/viewers"): viewers}) as url,
        poller_for(url, redis, DetectionSettings(), auth={"token": "t"}) as poller,
    ):
        for _ in range(3):
            await poller.cycle()
    events = await stream_events(redis, KEYS.events)
    assert [(e["type"], e["subject"]) for e in events] == [
        ("viewer.connected", "v_a"),
        ("viewer.connected", "v_b"),
        ("viewer.disconnected", "v_b"),
    ]


async def test_a_commit_sent_twice_is_applied_once(redis: Redis) -> None:
    """A client re-sending a commit after a lost reply gets "ok", and nothing is applied twice."""
    store = StateStore(redis, KEYS, maxlen=1000)
    lease = Lease(redis, KEYS.lease, KEYS.fence, "me", ttl=10)
    assert await lease.acquire()
    assert lease.value is not None
    snapshot = await store.load()
    detection = _detect({}, "a")
    for _ in range(2):
        outcome, generation = await store.commit(
            snapshot, detection, [_event(1)], lease=lease.value, polled_at=1, commit_id="c-1"
        )
        assert (outcome, generation) == (CommitOutcome.COMMITTED, 1)
    assert await redis.xlen(KEYS.events) == 1
    assert (await redis.hget(KEYS.meta, "polls")) == b"1"


async def test_a_failing_lookup_freezes_misses_but_not_the_stream(redis: Redis) -> None:
    """Batch lookups answering 503: joins still commit; nobody is disconnected meanwhile."""
    listed = [["v_a", "v_b"], ["v_a", "v_c"], ["v_a", "v_c"], ["v_a", "v_c"], ["v_a", "v_c"]]
    batch_ok = {"value": False}
    calls: list[int] = []

    async def viewers(request: web.Request) -> web.Response:
        ids = listed[min(len(calls), len(listed) - 1)]
        calls.append(1)
        rows = [{"id": i, "healthScore": 90, "healthGrade": "Very Good"} for i in ids]
        return web.json_response({"data": {"list": rows, "totalPages": 1}})

    async def batch(request: web.Request) -> web.Response:
        if not batch_ok["value"]:
            return web.json_response({"message": "busy"}, status=503)
        return web.json_response({"data": {"found": [], "notFound": ["v_b"]}})

    routes = {
        ("GET", "/api/cluster/viewers"): viewers,
        ("POST", "/api/cluster/viewers/batch"): batch,
    }
    async with (
        scripted_storm(routes) as url,
        poller_for(
            url, redis, DetectionSettings(), auth={"token": "t"}, poll_budget="300ms"
        ) as poller,
    ):
        for _ in range(3):
            await poller.cycle()
        kinds = [(e["type"], e["subject"]) for e in await stream_events(redis, KEYS.events)]
        assert kinds == [
            ("viewer.connected", "v_a"),
            ("viewer.connected", "v_b"),
            ("viewer.connected", "v_c"),
        ]
        batch_ok["value"] = True
        for _ in range(2):
            await poller.cycle()
    kinds = [(e["type"], e["subject"]) for e in await stream_events(redis, KEYS.events)]
    assert kinds[-1] == ("viewer.disconnected", "v_b")
    assert len(kinds) == 4


async def test_after_a_crash_disconnects_carry_a_recent_record(
    redis_url: str, redis: Redis
) -> None:
    """A restarted poller rewrites the stale records it loaded, so after another crash a
    disconnect still carries the record of the last poll that saw the viewer."""
    population = PopulationSettings(seed=6, viewers=20, join_rate=0, leave_rate=0)
    detection = DetectionSettings()
    async with lockstep(SimulatorSettings(population=population), Faults(), redis_url, KEYS) as sim:
        async with poller_for(sim.url, redis, detection) as first:
            for _ in range(5):
                await first.cycle()  # then it "dies": no clean stop, no checkpoint
        await redis.delete(KEYS.lease)
        async with poller_for(sim.url, redis, detection) as second:
            await second.cycle()  # sees everyone, rewrites the stale records it loaded; dies
        await redis.delete(KEYS.lease)
        polls = await sim.polls()
        gone = sorted(sim.simulator.population.ids())[0]
        last_seen = next(r for r in sim.states[polls - 1] if r["id"] == gone)
        sim.simulator.population.leave([gone])
        async with poller_for(sim.url, redis, detection) as third:
            for _ in range(3):
                await third.cycle()
    events = await stream_events(redis, KEYS.events)
    (disconnect,) = [e for e in events if e["type"] == "viewer.disconnected"]
    assert disconnect["subject"] == gone
    assert disconnect["data"]["viewer"] == last_seen
