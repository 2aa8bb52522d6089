"""Slack app mode against a stand-in Web API (``testkit.slack_api``) and a real redis-server:
one message per incident edited in place, its thread, restarts, the shared pace, Slack's errors.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

import pytest
import structlog
from redis.asyncio import RedisCluster

from notifier.keys import ClusterKeys, slack_pace
from notifier.sinks.base import SinkContext
from notifier.sinks.control import SinkControl
from notifier.sinks.registry import create_sink
from notifier.sinks.slack import SlackAppSink, SlackSinkSettings
from notifier.sinks.slack.answers import PAUSE_ERRORS
from notifier.sinks.slack.book import IncidentRecord, MessageBook
from notifier.sinks.slack.pacer import ChannelPacer
from notifier.sinks.slack.routing import StreamRef
from testkit.sink_support import FAST, KEYS, create_group, dead_letters, pending, publish
from testkit.sink_support import running_worker as worker
from testkit.slack_api import CHANNEL, FakeSlackApi
from testkit.stories import Story

if TYPE_CHECKING:
    from pathlib import Path

    from redis.asyncio import Redis

    from testkit.redis_procs import RedisCluster3
    from testkit.slack_api import SlackMessage

TOKEN = "xoxb-1111-2222-s3cr3tT0kenValue"


def app(api_url: str, **extra: Any) -> SlackSinkSettings:
    """Settings of an app-mode Slack sink ``incidents`` on the stand-in, grouping for 200 ms."""
    return SlackSinkSettings.model_validate(
        {
            "name": "incidents",
            "token": TOKEN,
            "channel": CHANNEL,
            "api_url": api_url,
            "group_wait": "200ms",
            "timeout": "5s",
            "retry": FAST,
            **extra,
        }
    )


def sink(redis: Redis, settings: SlackSinkSettings) -> SlackAppSink:
    """The sink as ``notifier run`` makes it: through the registry, with Redis in its context."""
    made = create_sink(settings, SinkContext(redis, KEYS.prefix))
    assert isinstance(made, SlackAppSink)
    return made


def resolved(message: SlackMessage) -> bool:
    """The incident message says it is over."""
    header: str = message.blocks[0]["text"]["text"]
    return header.startswith("✅ Resolved")


def told(slack: FakeSlackApi, ts: str) -> str:
    """Every text of a message's thread, joined."""
    return "\n".join(text for reply in slack.replies(ts) for text in reply.texts)


@pytest.mark.timeout(60)
async def test_an_incident_is_one_message_edited_in_place_with_its_viewers_in_the_thread(
    redis: Redis,
) -> None:
    """Degraded, viewer drops and recoveries, recovered: one channel message, posted once and
    edited with the thread's figures, then resolved; the viewer events are in its thread."""
    story = Story()
    await create_group(redis, "incidents")
    async with FakeSlackApi(token=TOKEN) as slack:
        settings = app(slack.url, group_wait="0s")
        await publish(redis, [story.drop("v_1", "live-1"), story.degraded("live-1")])
        async with worker(sink(redis, settings), settings, redis) as control:
            await slack.wait_until(lambda s: len(s.messages) >= 2)  # the incident, a reply
            (incident,) = slack.top_level()
            await publish(redis, [story.drop("v_2", "live-1"), story.drop("v_3", "live-1")])
            await slack.wait_until(lambda s: len(s.replies(incident.ts)) >= 2)
            await publish(redis, [story.recover("v_1", "live-1"), story.recovered("live-1")])
            await slack.wait_until(
                lambda s: resolved(incident) and len(s.replies(incident.ts)) >= 4
            )
            await control.wait_until(lambda c: c.delivered == 6)
    assert [m.ts for m in slack.top_level()] == [incident.ts]  # one message, never a second
    assert len(incident.edits) >= 2  # figures while open, then resolved
    assert any("*In the thread:* 3 viewers dropped · 1 recovered" in t for t in incident.texts)
    assert "recovered after" in incident.texts[1]
    thread = told(slack, incident.ts)
    for viewer in ("v_1", "v_2", "v_3"):
        assert viewer in thread
    assert "live-1 recovered" in thread
    assert [c.error for c in slack.calls if c.error] == []  # nothing refused, nothing invalid
    assert all(gap >= 0.98 for gap in slack.post_intervals())
    assert await pending(redis, "incidents") == 0


@pytest.mark.timeout(60)
async def test_a_new_sink_on_the_same_redis_edits_the_message_of_the_open_incident(
    redis: Redis,
) -> None:
    """A restart mid-incident (a new sink instance and worker, the same Redis) replies in the
    same thread and resolves the same message; a redelivered degradation posts nothing."""
    story = Story()
    await create_group(redis, "incidents")
    async with FakeSlackApi(token=TOKEN) as slack:
        settings = app(slack.url)
        degraded = story.degraded("live-1")
        await publish(redis, [degraded, story.drop("v_1", "live-1")])
        async with worker(sink(redis, settings), settings, redis) as control:
            await control.wait_until(lambda c: c.delivered == 2)
        (incident,) = slack.top_level()
        await publish(redis, [story.drop("v_2", "live-1"), story.recovered("live-1"), degraded])
        async with worker(sink(redis, settings), settings, redis) as control:
            await control.wait_until(lambda c: c.delivered == 3)
    assert [m.ts for m in slack.top_level()] == [incident.ts]
    assert resolved(incident)
    assert all(viewer in told(slack, incident.ts) for viewer in ("v_1", "v_2"))


@pytest.mark.timeout(90)
async def test_two_sinks_posting_to_one_channel_share_its_pace_of_one_message_a_second(
    redis: Redis,
) -> None:
    """Two sink instances (two clusters, as two replicas would be) post to one channel: Slack
    never sees two posts within a second, and never has to say ``ratelimited``."""
    stories = [Story("eu-1"), Story("eu-2")]
    keys = [KEYS, ClusterKeys(KEYS.prefix, "eu-2")]
    for story, cluster_keys in zip(stories, keys, strict=True):
        events = []
        for n in range(4):
            events += [story.connected(f"v_{n}", f"live-{n}"), story.degraded(f"live-{n}")]
        await create_group(redis, "incidents", cluster_keys)
        await publish(redis, events, cluster_keys)
    async with FakeSlackApi(token=TOKEN) as slack:
        settings = app(slack.url, group_wait="0s")
        controls = [SinkControl("incidents"), SinkControl("incidents")]
        async with (
            worker(sink(redis, settings), settings, redis, keys=keys[0], control=controls[0]),
            worker(sink(redis, settings), settings, redis, keys=keys[1], control=controls[1]),
        ):
            for control in controls:
                await asyncio.wait_for(control.wait_until(lambda c: c.delivered == 8), 60)
    assert len(slack.accepted("chat.postMessage")) == 16  # 8 digests, 8 incidents
    assert [c for c in slack.calls if c.status == 429] == []
    assert min(slack.post_intervals()) >= 0.98


@pytest.mark.parametrize(("status", "retry_after"), [(200, None), (429, 1)])
@pytest.mark.timeout(30)
async def test_ratelimited_waits_and_uses_up_no_attempt(
    redis: Redis, status: int, retry_after: int | None
) -> None:
    """``ratelimited`` (HTTP 200) or HTTP 429 three times on a two-step schedule: delivered
    once Slack takes it, nothing dead-lettered."""
    story = Story()
    await create_group(redis, "incidents")
    async with FakeSlackApi(token=TOKEN) as slack:
        slack.fail(
            "chat.postMessage", "ratelimited", status=status, retry_after=retry_after, times=3
        )
        settings = app(slack.url, retry={"schedule": ["0s", "10ms"]})
        await publish(redis, [story.degraded("live-1")])
        async with worker(sink(redis, settings), settings, redis) as control:
            await control.wait_until(lambda c: c.delivered == 1)
    assert control.dead_lettered == 0
    assert [c.error for c in slack.calls] == ["ratelimited"] * 3 + [None]
    assert len(slack.top_level()) == 1


@pytest.mark.parametrize("error", sorted(PAUSE_ERRORS))
@pytest.mark.timeout(30)
async def test_errors_of_the_token_or_the_channel_pause_the_sink_and_keep_the_events(
    redis: Redis, error: str
) -> None:
    """invalid_auth, token_revoked, not_in_channel...: the sink pauses at the first answer,
    says why, dead-letters nothing and leaves the events pending."""
    story = Story()
    await create_group(redis, "incidents")
    async with FakeSlackApi(token=TOKEN) as slack:
        slack.fail("chat.postMessage", error, times=100)
        settings = app(slack.url)
        await publish(redis, [story.degraded("live-1"), story.drop("v_1", "live-1")])
        async with worker(sink(redis, settings), settings, redis) as control:
            await control.wait_until(lambda c: c.paused is not None)
            calls = len(slack.calls)
        assert error in (control.paused or "")
    assert calls == 1  # paused at once: no loop of retries
    assert await dead_letters(redis, "incidents") == []
    assert await pending(redis, "incidents") == 2


@pytest.mark.parametrize("error", ["msg_too_long", "invalid_blocks"])
@pytest.mark.timeout(30)
async def test_a_message_slack_refuses_as_such_is_dead_lettered_and_the_sink_carries_on(
    redis: Redis, error: str
) -> None:
    """msg_too_long / invalid_blocks dead-letter that delivery; the next one is delivered."""
    story = Story()
    await create_group(redis, "incidents")
    async with FakeSlackApi(token=TOKEN) as slack:
        slack.fail("chat.postMessage", error)
        settings = app(slack.url)
        await publish(redis, [story.degraded("live-1")])
        async with worker(sink(redis, settings), settings, redis) as control:
            await control.wait_until(lambda c: c.dead_lettered == 1)
            await publish(redis, [story.degraded("live-2")])
            await control.wait_until(lambda c: c.delivered == 1)
    (dead,) = await dead_letters(redis, "incidents")
    assert dead[b"reason"].decode() == f"Slack chat.postMessage: {error}"
    assert len(slack.top_level()) == 1


@pytest.mark.timeout(30)
async def test_other_slack_errors_are_retried_on_the_schedule(redis: Redis) -> None:
    """``internal_error`` twice, then ok: delivered on the third attempt, one message."""
    story = Story()
    await create_group(redis, "incidents")
    async with FakeSlackApi(token=TOKEN) as slack:
        slack.fail("chat.postMessage", "internal_error", times=2)
        settings = app(slack.url)
        await publish(redis, [story.degraded("live-1")])
        async with worker(sink(redis, settings), settings, redis) as control:
            await control.wait_until(lambda c: c.delivered == 1)
    assert control.retried == 2
    assert [c.error for c in slack.calls] == ["internal_error", "internal_error", None]
    assert len(slack.top_level()) == 1


@pytest.mark.timeout(30)
async def test_a_deleted_incident_message_is_posted_again_and_the_new_one_kept(
    redis: Redis,
) -> None:
    """``message_not_found`` on an update posts a new incident message; from then on that one
    is edited (and resolved), and the thread goes under it."""
    story = Story()
    await create_group(redis, "incidents")
    async with FakeSlackApi(token=TOKEN) as slack:
        settings = app(slack.url, group_wait="0s")
        await publish(redis, [story.degraded("live-1")])
        async with worker(sink(redis, settings), settings, redis) as control:
            await control.wait_until(lambda c: c.delivered == 1)
            (first,) = slack.top_level()
            slack.delete(first.ts)
            await publish(redis, [story.drop("v_1", "live-1")])
            await control.wait_until(lambda c: c.delivered == 2)
            (second,) = slack.top_level()
            await publish(redis, [story.recovered("live-1")])
            await control.wait_until(lambda c: c.delivered == 3)
    assert second.ts != first.ts
    assert resolved(second)
    assert not resolved(first)
    assert "live-1 recovered" in told(slack, second.ts)
    assert "message_not_found" in [c.error for c in slack.calls]


@pytest.mark.timeout(30)
async def test_an_audience_is_one_message_updated_with_its_crossings_and_its_end(
    redis: Redis,
) -> None:
    """Started, two crossings, ended: one audience message, edited three times; other events
    (a viewer joining) go to the channel as in webhook mode."""
    story = Story()
    await create_group(redis, "incidents")
    async with FakeSlackApi(token=TOKEN) as slack:
        settings = app(slack.url, group_wait="0s")
        events = [
            story.started("live-1"),
            story.connected("v_1", "live-1"),
            story.crossed("live-1", 100),
            story.crossed("live-1", 100, down=True),
            story.ended("live-1"),
        ]
        async with worker(sink(redis, settings), settings, redis) as control:
            for event in events:  # one at a time: one delivery each
                done = control.delivered + 1
                await publish(redis, [event])
                await control.wait_until(lambda c: c.delivered == done)  # noqa: B023 - awaited here
    audience, joined = slack.top_level()
    assert audience.blocks[0]["text"]["text"].startswith("📺 Audience · live-1")
    assert len(audience.edits) == 3
    texts = "\n".join(audience.texts)
    for said in ("audience started", "reached 100 viewers", "fell below 100", "audience ended"):
        assert said in texts
    assert "1 joined" in joined.text


@pytest.mark.timeout(30)
async def test_an_audience_ending_while_degraded_resolves_the_incident(redis: Redis) -> None:
    """``stream.audience_ended`` while degraded turns the incident message resolved and says
    so in its thread; with no audience message to finish, it posts none."""
    story = Story()
    await create_group(redis, "incidents")
    async with FakeSlackApi(token=TOKEN) as slack:
        settings = app(slack.url)
        await publish(redis, [story.degraded("live-1"), story.ended("live-1", degraded=True)])
        async with worker(sink(redis, settings), settings, redis) as control:
            await control.wait_until(lambda c: c.delivered == 2)
    (incident,) = slack.top_level()
    assert resolved(incident)
    assert "ended while degraded" in incident.texts[1]
    assert "resolved after 5 s" in incident.texts[-1]
    assert "audience ended while degraded" in told(slack, incident.ts)


@pytest.mark.timeout(30)
async def test_the_token_never_appears_in_logs_errors_or_dead_letters(redis: Redis) -> None:
    """The token goes in the Authorization header and nowhere else: not in log lines (a pause,
    a refusal, a dead letter), not in the pause reason or a dead letter's reason."""
    story = Story()
    await create_group(redis, "incidents")
    async with FakeSlackApi(token=TOKEN) as slack:
        slack.fail("chat.postMessage", "invalid_blocks")
        slack.fail("chat.postMessage", "internal_error")
        slack.fail("chat.postMessage", "token_revoked")
        settings = app(slack.url)
        with structlog.testing.capture_logs() as logs:
            await publish(redis, [story.degraded("live-1")])
            async with worker(sink(redis, settings), settings, redis) as control:
                await control.wait_until(lambda c: c.dead_lettered == 1)
                await publish(redis, [story.degraded("live-2")])
                await control.wait_until(lambda c: c.paused is not None)
    assert {c.authorization for c in slack.calls} == {f"Bearer {TOKEN}"}
    secret = TOKEN.rsplit("-", maxsplit=1)[-1]
    everything = json.dumps(logs, default=str) + (control.paused or "")
    everything += json.dumps(
        [str(v) for d in await dead_letters(redis, "incidents") for v in d.values()]
    )
    assert {"sink.dead_lettered", "sink.paused"} <= {line["event"] for line in logs}
    assert secret not in everything
    assert repr(settings).count(secret) == 0


async def test_the_channel_pace_is_shared_through_redis(redis: Redis) -> None:
    """Two pacers of one channel hand out turns a second apart; a turn too far off is not
    taken; ``hold`` pushes the next turn out for everyone."""
    key = slack_pace(KEYS.prefix, CHANNEL)
    first, second = ChannelPacer(redis, key, interval=0.2), ChannelPacer(redis, key, interval=0.2)
    started = time.monotonic()
    times = []
    for pacer in (first, second, first, second):
        assert await pacer.turn() is None
        times.append(time.monotonic() - started)
    assert all(later - earlier >= 0.18 for earlier, later in itertools.pairwise(times))
    far = await first.turn(longest_wait=0.05)  # the next turn is ~0.2 s away
    assert far is not None
    assert 0.05 < far <= 0.2
    await second.hold(30)
    held = await first.turn(longest_wait=1)
    assert held is not None
    assert held > 29


def _config(tmp_path: Path, sink: str) -> Path:
    path = tmp_path / "notifier.yaml"
    path.write_text(
        "clusters: [{name: eu-1, base_url: 'http://127.0.0.1:9', auth: {token: t}}]\n"
        f"sinks:\n  - {{name: incidents, type: slack, {sink}}}\n"
    )
    return path


def check_config(path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``notifier check-config --offline`` on a file, with ``env`` added."""
    return subprocess.run(
        [sys.executable, "-m", "notifier", "check-config", "--offline", "--config", str(path)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.timeout(60)
def test_check_config_masks_the_token_and_names_the_keys_of_a_wrong_mode(tmp_path: Path) -> None:
    """An app-mode sink shows its token masked; both modes, or neither, or a token without a
    channel, is one line naming the keys and exit 2, the token in none of it."""
    env = {"SLACK_BOT_TOKEN": TOKEN}
    ok = check_config(_config(tmp_path, "token: '${SLACK_BOT_TOKEN}', channel: C1"), env)
    assert ok.returncode == 0, ok.stderr
    assert "token: '**********'" in ok.stdout
    assert "channel: C1" in ok.stdout
    cases = {
        "token: '${SLACK_BOT_TOKEN}', channel: C1, webhook_url: 'https://hooks.slack.com/x'": (
            "set exactly one of webhook_url (incoming webhook) or token + channel (Slack app)"
        ),
        "group_wait: 1s": (
            "set exactly one of webhook_url (incoming webhook) or token + channel (Slack app)"
        ),
        "token: '${SLACK_BOT_TOKEN}'": "token needs channel",
    }
    for sink, said in cases.items():
        result = check_config(_config(tmp_path, sink), env)
        assert result.returncode == 2, sink
        assert result.stdout == ""
        (line,) = result.stderr.splitlines()
        assert line.startswith(f"notifier: {tmp_path / 'notifier.yaml'}: sinks[0]: {said}"), line
        assert TOKEN not in result.stderr
    assert TOKEN not in ok.stdout + ok.stderr


@pytest.mark.timeout(60)
async def test_the_records_and_the_pace_work_on_a_redis_cluster(
    redis_cluster: RedisCluster3,
) -> None:
    """On a Redis Cluster the records and told ids (one cluster's hash tag) are written in one
    transaction, and the channel's pace (a key of its own) is taken by one script."""
    client = RedisCluster.from_url(redis_cluster.url)
    try:
        book = MessageBook(client, "incidents")
        stream = StreamRef("app-1", "live-1")
        record = IncidentRecord(incident="i-1", opened={"id": "i-1"}, ts="1.2")
        await book.write(KEYS, stream, incident=record, told=["e-1", "e-2"])
        assert await book.incident(KEYS, stream) == record
        assert await book.told(KEYS, ["e-1", "e-3"]) == {"e-1"}
        pacer = ChannelPacer(client, slack_pace(KEYS.prefix, CHANNEL), interval=0.05)
        assert await pacer.turn() is None
        assert await pacer.turn() is None
    finally:
        await client.aclose()


@pytest.mark.timeout(60)
async def test_check_config_asks_slack_whose_token_it_is_and_prints_no_token(
    tmp_path: Path, redis_url: str
) -> None:
    """Online, check-config calls auth.test for each Slack app sink: a good token is ok with
    the bot's name, a refused one FAILED with Slack's reason (exit 1); no token is printed."""
    from notifier.simulator import (  # noqa: PLC0415
        PopulationSettings,
        SimulatorSettings,
        running_simulator,
    )

    simulator = SimulatorSettings(
        population=PopulationSettings(seed=1, viewers=5), static_tokens=("tok",)
    )
    async with running_simulator(simulator) as sim, FakeSlackApi(token=TOKEN) as slack:
        path = tmp_path / "notifier.yaml"
        path.write_text(
            f"redis: {{url: '{redis_url}'}}\n"
            f"clusters: [{{name: eu-1, base_url: '{sim.url}', auth: {{token: tok}}}}]\n"
            "sinks:\n"
            f"  - {{name: incidents, type: slack, token: '{TOKEN}', channel: C1,"
            f" api_url: '{slack.url}'}}\n"
            f"  - {{name: wrong, type: slack, token: 'xoxb-not-it', channel: C1,"
            f" api_url: '{slack.url}'}}\n"
        )
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "notifier", "check-config", "--config", str(path),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(process.communicate(), 50)
    stdout, stderr = out.decode(), err.decode()
    assert process.returncode == 1, stderr
    assert "slack incidents: ok (the bot storm-notifier in Storm Ops)" in stdout
    assert "slack wrong: FAILED: Slack auth.test: invalid_auth (the token is not valid)" in stdout
    assert stderr.splitlines()[-1] == "notifier: check-config: 1 of 4 dependencies failed"
    assert TOKEN not in stdout + stderr
    assert "xoxb-not-it" not in stdout + stderr


@pytest.mark.timeout(60)
async def test_a_burst_of_drops_is_one_reply_summarised_within_slacks_limits(
    redis: Redis,
) -> None:
    """400 drops of one poll with the degradation: the incident message and one thread reply
    that lists what fits and counts the rest, both accepted by the Block Kit checks."""
    story = Story()
    drops = [story.drop(f"v_{n:03d}", "live-1") for n in range(400)]
    await create_group(redis, "incidents")
    await publish(redis, [*drops, story.degraded("live-1", dropped=400, viewers=1000)])
    async with FakeSlackApi(token=TOKEN) as slack:
        settings = app(slack.url, group_wait="1s")
        async with worker(sink(redis, settings), settings, redis) as control:
            await control.wait_until(lambda c: c.delivered == 401)
    (incident,) = slack.top_level()
    (reply,) = slack.replies(incident.ts)
    assert "*400 health dropped*" in reply.texts
    assert any(text.startswith("_…and ") for text in reply.texts)
    assert [c.error for c in slack.calls if c.error] == []
