"""Delivery as an operator runs it: `notifier run --role sinks`, SIGKILL, `dlq`, `replay`,
and a third-party sink installed from a package."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from testkit.receivers import Reply, WebhookReceiver
from testkit.sink_support import KEYS, by_viewer, create_group, make_events, pending, publish
from testkit.slack_api import CHANNEL, FakeSlackApi
from testkit.stories import Story

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from testkit.redis_procs import RedisServer
    from testkit.reliability import Tally
    from testkit.slack_api import SlackMessage

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SLACK_TOKEN = "xoxb-1111-2222-s3cr3tT0kenValue"
PLUGIN = Path(__file__).parent / "plugin"


def write_config(tmp_path: Path, redis_url: str, sink: str) -> Path:
    path = tmp_path / "notifier.yaml"
    path.write_text(
        f"redis: {{url: '{redis_url}'}}\n"
        "clusters:\n"
        "  - name: eu-1\n"
        "    base_url: http://127.0.0.1:9\n"
        "    auth: {token: t}\n"
        "detection: {leader_lease: 1s}\n"
        "sinks:\n" + sink + "logging: {format: json, level: info}\n"
    )
    return path


def hook_sink(url: str, **extra: str) -> str:
    more = "".join(f"    {k}: {v}\n" for k, v in extra.items())
    return (
        "  - name: hooks\n    type: webhook\n"
        f"    url: '{url}'\n    secret: {SECRET}\n"
        "    retry: {schedule: [0s, 100ms, 200ms]}\n    timeout: 2s\n" + more
    )


async def notifier(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "notifier",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def start_sinks(
    config: Path, log: Path, env: dict[str, str] | None = None
) -> asyncio.subprocess.Process:
    with log.open("ab") as err:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "notifier",
            "run",
            "--role",
            "sinks",
            "--config",
            str(config),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=err,
            env={**os.environ, **(env or {})},
        )


async def stop(worker: asyncio.subprocess.Process) -> int:
    """SIGTERM, and the exit status once it has stopped gracefully."""
    worker.terminate()
    return await asyncio.wait_for(worker.wait(), 30)


async def reap(worker: asyncio.subprocess.Process) -> None:
    """Whatever happened in the test, leave no process behind."""
    if worker.returncode is None:
        worker.kill()
        await worker.wait()


def first_receipts(receiver: WebhookReceiver) -> list[dict[str, Any]]:
    """Each event once, in the order it first arrived (at least once may repeat some)."""
    seen: set[str] = set()
    out = []
    for item in receiver.received:
        if item.json["id"] not in seen:
            seen.add(item.json["id"])
            out.append(item.json)
    return out


@pytest.mark.timeout(120)
@pytest.mark.reliability(
    fault="Sink worker killed mid-delivery",
    injected=(
        "SIGKILL of notifier run --role sinks while 50 ms deliveries are in flight, then a restart"
    ),
    checked="every one of 200 events arrives, in per-viewer order; nothing left pending",
)
async def test_a_sink_worker_killed_mid_delivery_loses_nothing(
    tmp_path: Path, redis_server: RedisServer, redis: Redis, tally: Tally
) -> None:
    """SIGKILL while deliveries are in flight; after a restart every event arrives, in order."""
    events = make_events(200, 20, seed=5)
    async with WebhookReceiver(SECRET) as receiver:
        receiver.default = Reply(delay=0.05)  # deliveries take a while: some are in flight
        config = write_config(tmp_path, redis_server.url, hook_sink(receiver.url))
        await create_group(redis, "hooks")
        await publish(redis, events)
        worker = await start_sinks(config, tmp_path / "run.log")
        try:
            await receiver.wait_for(60)
            worker.kill()
            tally.tried += 1
            await worker.wait()
            delivered_before = len(receiver.received)
            assert delivered_before < 200
            worker = await start_sinks(config, tmp_path / "run.log")
            while len(first_receipts(receiver)) < 200:
                await receiver.wait_for(len(receiver.received) + 1, timeout=60)
            assert await stop(worker) == 0
        finally:
            await reap(worker)
    got = first_receipts(receiver)
    tally.events = len(got)
    assert sorted(e["id"] for e in got) == sorted(e["id"] for e in events)
    assert by_viewer(got) == by_viewer(events)
    assert await pending(redis, "hooks") == 0
    assert "service.stopped" in (tmp_path / "run.log").read_text()


def resolved(message: SlackMessage) -> bool:
    header: str = message.blocks[0]["text"]["text"]
    return header.startswith("✅ Resolved")


def told(slack: FakeSlackApi, ts: str) -> str:
    return " ".join(text for reply in slack.replies(ts) for text in reply.texts)


def slack_app_sink(api_url: str) -> str:
    return (
        "  - name: incidents\n    type: slack\n"
        f"    token: {SLACK_TOKEN}\n    channel: {CHANNEL}\n    api_url: '{api_url}'\n"
        "    group_wait: 200ms\n    timeout: 2s\n    retry: {schedule: [0s, 100ms, 200ms]}\n"
    )


@pytest.mark.timeout(120)
@pytest.mark.reliability(
    fault="Slack worker killed mid-incident",
    injected=(
        "SIGKILL of the Slack app-mode worker just after a reply in an open incident's thread, "
        "then a restart"
    ),
    checked=(
        "one incident message only, replied to and resolved in place; every viewer named in its "
        "thread; nothing pending"
    ),
)
async def test_a_slack_app_worker_killed_mid_incident_keeps_editing_its_one_message(
    tmp_path: Path, redis_server: RedisServer, redis: Redis, tally: Tally
) -> None:
    """SIGKILL while an incident is open (just after a reply in its thread): the restarted
    worker replies in the same thread and resolves the same message; no second one is posted."""
    story = Story()
    async with FakeSlackApi(token=SLACK_TOKEN) as slack:
        config = write_config(tmp_path, redis_server.url, slack_app_sink(slack.url))
        await create_group(redis, "incidents")
        first = [story.drop("v_1", "live-1"), story.degraded("live-1"), story.drop("v_2", "live-1")]
        await publish(redis, first)
        worker = await start_sinks(config, tmp_path / "run.log")
        try:
            await slack.wait_until(
                lambda s: any(s.replies(m.ts) for m in s.top_level()), timeout=60
            )
            worker.kill()  # mid-delivery, maybe: the acknowledgements may not be written yet
            tally.tried += 1
            await worker.wait()
            (incident,) = slack.top_level()
            rest = [story.drop("v_3", "live-1"), story.recover("v_1", "live-1")]
            await publish(redis, [*rest, story.recovered("live-1")])
            worker = await start_sinks(config, tmp_path / "run.log")
            await slack.wait_until(lambda _: resolved(incident), timeout=90)
            await slack.wait_until(lambda s: "v_3" in told(s, incident.ts), timeout=30)
            assert await stop(worker) == 0  # graceful: what was delivered is acknowledged
        finally:
            await reap(worker)
    assert [m.ts for m in slack.top_level()] == [incident.ts]
    thread = told(slack, incident.ts)
    for viewer in ("v_1", "v_2", "v_3"):
        assert viewer in thread
    assert "live-1 recovered" in thread
    assert SLACK_TOKEN not in (tmp_path / "run.log").read_text()
    assert await pending(redis, "incidents") == 0


@pytest.mark.timeout(120)
async def test_dead_letters_can_be_listed_redriven_and_purged(
    tmp_path: Path, redis_server: RedisServer, redis: Redis
) -> None:
    """A receiver that refuses (400) dead-letters; after the fix `dlq redrive` delivers them."""
    events = make_events(6, 6, seed=3)
    async with WebhookReceiver(SECRET) as receiver:
        receiver.default = Reply(status=400, body=b"schema mismatch")
        config = write_config(tmp_path, redis_server.url, hook_sink(receiver.url))
        await create_group(redis, "hooks")
        await publish(redis, events)
        worker = await start_sinks(config, tmp_path / "run.log")
        try:
            while await redis.xlen(KEYS.dlq("hooks")) < 6:
                await asyncio.sleep(0.02)  # polling Redis for a count, not pacing the test
            assert await stop(worker) == 0
        finally:
            await reap(worker)
        status, out, _ = await notifier("dlq", "list", "--sink", "hooks", "--config", str(config))
        assert status == 0
        listed = [json.loads(line) for line in out.splitlines()]
        assert len(listed) == 6
        assert listed[0]["reason"] == "HTTP 400: schema mismatch"
        assert listed[0]["status"] == 400
        assert listed[0]["event"]["id"] == listed[0]["event_id"]
        receiver.default = Reply(status=200)
        status, _, err = await notifier(
            "dlq", "redrive", "--sink", "hooks", "--config", str(config)
        )
        assert status == 0, err
        assert "redrive: 6 of 6 events delivered, 0 failed" in err
        assert sorted(e["id"] for e in first_receipts(receiver)) == sorted(e["id"] for e in events)
        assert await redis.xlen(KEYS.dlq("hooks")) == 0
        await redis.xadd(KEYS.dlq("hooks"), {"event": b"{}", "reason": b"x"})
        status, out, _ = await notifier(
            "dlq", "purge", "--sink", "hooks", "--yes", "--config", str(config)
        )
        assert (status, out) == (0, "purged 1 dead letters of sink hooks\n")
        assert await redis.xlen(KEYS.dlq("hooks")) == 0


async def test_redrive_that_fails_again_keeps_the_dead_letters(
    tmp_path: Path, redis_server: RedisServer, redis: Redis
) -> None:
    """A redrive against a still-broken receiver exits 1 and loses nothing."""
    events = make_events(2, 2)
    async with WebhookReceiver(SECRET) as receiver:
        receiver.default = Reply(status=422)
        config = write_config(tmp_path, redis_server.url, hook_sink(receiver.url))
        for event in events:
            await redis.xadd(
                KEYS.dlq("hooks"),
                {"event": event["body"], "id": event["id"], "type": event["type"], "reason": "x"},
            )
        status, _, err = await notifier(
            "dlq", "redrive", "--sink", "hooks", "--config", str(config)
        )
        assert status == 1
        assert err.splitlines()[-1].startswith("notifier: redrive: 2 of 2 dead letters failed")
        assert await redis.xlen(KEYS.dlq("hooks")) == 2


async def test_replay_redelivers_a_time_range(
    tmp_path: Path, redis_server: RedisServer, redis: Redis
) -> None:
    """`replay --from ID` sends past events again, in order, through the sink's filters."""
    events = make_events(30, 5)
    await publish(redis, events)
    entries: list[tuple[bytes, Any]] = await redis.xrange(KEYS.events)  # type: ignore[assignment]
    start = entries[10][0].decode()
    async with WebhookReceiver(SECRET) as receiver:
        sink = hook_sink(receiver.url, events="[viewer.health_dropped]")
        config = write_config(tmp_path, redis_server.url, sink)
        status, _, err = await notifier(
            "replay", "--sink", "hooks", "--from", start, "--config", str(config)
        )
        assert status == 0, err
    wanted = [e for e in events[10:] if e["type"] == "viewer.health_dropped"]
    assert by_viewer(first_receipts(receiver)) == by_viewer(wanted)
    assert sorted(e["id"] for e in first_receipts(receiver)) == sorted(e["id"] for e in wanted)
    status, _, err = await notifier(
        "replay", "--sink", "hooks", "--from", "yesterday", "--config", str(config)
    )
    assert status == 2
    assert "expected an entry id" in err


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny third-party sink package, installed with pip into a folder of its own."""
    target = tmp_path_factory.mktemp("site")
    source = tmp_path_factory.mktemp("src") / "plugin"
    shutil.copytree(PLUGIN, source)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(source),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return target


@pytest.mark.timeout(120)
async def test_a_third_party_sink_is_found_through_its_entry_point(
    tmp_path: Path, redis_server: RedisServer, redis: Redis, plugin_path: Path
) -> None:
    """A sink type from an installed package (entry point notifier.sinks) validates and runs."""
    env = {"PYTHONPATH": str(plugin_path)}
    out = tmp_path / "events.jsonl"
    sink = f"  - {{name: archive, type: file, path: '{out}', events: [viewer.connected]}}\n"
    config = write_config(tmp_path, redis_server.url, sink)
    events = make_events(40, 10)
    await create_group(redis, "archive")
    await publish(redis, events)
    worker = await start_sinks(config, tmp_path / "run.log", env)
    try:
        wanted = {e["id"] for e in events if e["type"] == "viewer.connected"}
        while not out.exists() or len(out.read_text().splitlines()) < len(wanted):
            await asyncio.sleep(0.02)  # polling a file for lines, not pacing the test
        assert await stop(worker) == 0
    finally:
        await reap(worker)
    assert {json.loads(line)["id"] for line in out.read_text().splitlines()} == wanted
    bad = write_config(tmp_path, redis_server.url, "  - {name: archive, type: file}\n")
    status, _, err = await notifier("check-config", "--offline", "--config", str(bad), env=env)
    assert status == 2
    assert err == f"notifier: {bad}: sinks[0].path: Field required\n"
    status, _, err = await notifier("check-config", "--offline", "--config", str(bad))
    assert status == 2
    assert "sinks[0]: unknown sink type (built in: webhook, slack, stdout)" in err


@pytest.mark.timeout(120)
async def test_run_all_polls_and_delivers_in_one_process(
    tmp_path: Path, redis_server: RedisServer, redis: Redis
) -> None:
    """`notifier run` (role all): the simulator's audience reaches the webhook, every event once
    or more, and a SIGTERM leaves nothing unacknowledged."""
    from notifier.simulator import PopulationSettings, SimulatorSettings, running_simulator  # noqa: PLC0415

    settings = SimulatorSettings(
        population=PopulationSettings(seed=2, viewers=150), static_tokens=("tok",), tick=0.2
    )
    async with running_simulator(settings) as sim, WebhookReceiver(SECRET) as receiver:
        path = tmp_path / "notifier.yaml"
        path.write_text(
            f"redis: {{url: '{redis_server.url}'}}\n"
            f"clusters:\n  - {{name: eu-1, base_url: '{sim.url}', auth: {{token: tok}},"
            " poll_interval: 200ms}\n"
            "detection: {leader_lease: 1s}\n"
            "sinks:\n" + hook_sink(receiver.url) + "logging: {format: json, level: info}\n"
        )
        service = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "notifier",
            "run",
            "--config",
            str(path),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            await receiver.wait_for(150, timeout=60)  # everyone connected, then some changes
            await receiver.wait_for(len(receiver.received) + 20, timeout=60)
            service.terminate()
            assert await asyncio.wait_for(service.wait(), 60) == 0
        finally:
            if service.returncode is None:
                service.kill()
                await service.wait()
    entries: list[tuple[bytes, dict[bytes, bytes]]] = await redis.xrange(KEYS.events)  # type: ignore[assignment]
    emitted = {fields[b"id"].decode() for _, fields in entries}
    assert {e["id"] for e in first_receipts(receiver)} == emitted
    assert await pending(redis, "hooks") == 0


@pytest.mark.timeout(120)
@pytest.mark.reliability(
    fault="Stop under load",
    injected="SIGTERM while a slow receiver answers 30 x 503 among 400 events",
    checked=(
        "nothing acknowledged that had not arrived; a restart delivers the rest, in per-viewer "
        "order"
    ),
)
async def test_sigterm_under_load_acknowledges_only_what_was_delivered(
    tmp_path: Path, redis_server: RedisServer, redis: Redis, tally: Tally
) -> None:
    """SIGTERM while a slow, flaky receiver is being fed: every acknowledged event had arrived,
    the rest stays pending, and a restart delivers it."""
    events = make_events(400, 40, seed=8)
    async with WebhookReceiver(SECRET) as receiver:
        receiver.default = Reply(delay=0.02)
        receiver.respond(*[Reply(status=503)] * 30)
        config = write_config(tmp_path, redis_server.url, hook_sink(receiver.url))
        await create_group(redis, "hooks")
        await publish(redis, events)
        worker = await start_sinks(config, tmp_path / "run.log")
        try:
            await receiver.wait_for(100)
            worker.terminate()  # under load: deliveries in flight, retries waiting
            tally.tried += 1
            assert await asyncio.wait_for(worker.wait(), 30) == 0
            arrived = {r.json["id"] for r in receiver.received}
            entries: list[tuple[bytes, dict[bytes, bytes]]] = await redis.xrange(KEYS.events)  # type: ignore[assignment]
            ids = {entry_id: fields[b"id"].decode() for entry_id, fields in entries}
            waiting: list[dict[str, Any]] = await redis.xpending_range(
                KEYS.events, "sink:hooks", min="-", max="+", count=1000
            )
            still_pending = {ids[p["message_id"]] for p in waiting}
            info = await redis.xinfo_groups(KEYS.events)
            read_up_to = info[0]["last-delivered-id"]
            acked = {
                event_id
                for entry_id, event_id in ids.items()
                if _order(entry_id) <= _order(read_up_to) and event_id not in still_pending
            }
            assert acked <= arrived  # nothing acknowledged that was not delivered
            assert len(acked) < 400
            worker = await start_sinks(config, tmp_path / "run.log")
            while len(first_receipts(receiver)) < 400:
                await receiver.wait_for(len(receiver.received) + 1, timeout=60)
            assert await stop(worker) == 0
        finally:
            await reap(worker)
    assert by_viewer(first_receipts(receiver)) == by_viewer(events)
    tally.events = len(events)
    assert await pending(redis, "hooks") == 0


def _order(entry_id: bytes) -> tuple[int, int]:
    ms, _, seq = entry_id.partition(b"-")
    return int(ms), int(seq or 0)


async def test_dlq_commands_fail_clearly(tmp_path: Path) -> None:
    """Redis down, a bad --count, an unknown id or sink: one line each, the right status."""
    from .conftest import free_port  # noqa: PLC0415

    config = write_config(
        tmp_path, f"redis://127.0.0.1:{free_port()}/0", hook_sink("https://receiver.example/h")
    )
    status, _, err = await notifier("dlq", "list", "--sink", "hooks", "--config", str(config))
    assert status == 1
    assert err.startswith("notifier: redis: ")
    assert len(err.splitlines()) == 1
    status, _, err = await notifier(
        "dlq", "list", "--sink", "hooks", "--count", "-1", "--config", str(config)
    )
    assert status == 2
    assert len(err.splitlines()) == 1
    status, _, err = await notifier("dlq", "list", "--sink", "nope", "--config", str(config))
    assert (status, err) == (2, "notifier: no sink named 'nope' (configured: hooks)\n")


async def test_redrive_of_an_unknown_id_says_so(tmp_path: Path, redis_server: RedisServer) -> None:
    """`dlq redrive --id X` with no such dead letter exits 1 and names it."""
    config = write_config(tmp_path, redis_server.url, hook_sink("https://receiver.example/h"))
    status, _, err = await notifier(
        "dlq", "redrive", "--sink", "hooks", "--id", "1-0", "--config", str(config)
    )
    assert status == 1
    assert err == "notifier: redrive: no dead letter with id 1-0\n"
