"""The delivery stand-ins themselves: signature checks, scripted replies, Slack's rules."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
from standardwebhooks import Webhook

from testkit.receivers import SLACK_PATH, Reply, SlackStandIn, WebhookReceiver, slack_reply

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

pytestmark = pytest.mark.timeout(15)

SECRET = "whsec_" + base64.b64encode(b"storm-notifier-test-secret-1").decode()
OLD_SECRET = "whsec_" + base64.b64encode(b"storm-notifier-test-secret-0").decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"somebody-else-entirely-xxxx").decode()
CLOUDEVENTS = "application/cloudevents+json"
EVENT = {"specversion": "1.0", "id": "evt_1", "type": "viewer.joined", "data": {"n": 1}}
SLACK_MESSAGE = {
    "text": "viewer joined live/cam1",
    "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "*viewer joined*"}}],
}


class FakeClock:
    """A clock the tests move by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def signature_headers(
    body: bytes,
    *secrets: str,
    msg_id: str = "evt_1",
    at: datetime | None = None,
) -> dict[str, str]:
    """Standard Webhooks headers for ``body``, with one signature per secret."""
    at = at or datetime.now(tz=UTC)
    signatures = " ".join(Webhook(secret).sign(msg_id, at, body.decode()) for secret in secrets)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signatures,
        "Content-Type": CLOUDEVENTS,
    }


def encode(payload: Any) -> bytes:
    """Compact JSON, as a sink sends it."""
    return json.dumps(payload, separators=(",", ":")).encode()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A client session that never follows redirects, closed after the test."""
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def hook() -> AsyncIterator[WebhookReceiver]:
    """A running webhook receiver holding ``SECRET``."""
    async with WebhookReceiver(SECRET) as receiver:
        yield receiver


@pytest.fixture
async def slack() -> AsyncIterator[SlackStandIn]:
    """A running Slack stand-in with the default validator and the real clock."""
    async with SlackStandIn() as stand_in:
        yield stand_in


async def post(
    http: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]
) -> tuple[int, dict[str, str], bytes]:
    """POST without following redirects: status, headers, body."""
    async with http.post(url, data=body, headers=headers, allow_redirects=False) as response:
        return response.status, dict(response.headers), await response.read()


async def post_event(
    http: aiohttp.ClientSession, hook: WebhookReceiver, payload: Any = EVENT, msg_id: str = "evt_1"
) -> int:
    """POST ``payload`` signed with ``SECRET``; the status answered."""
    body = encode(payload)
    status, _, _ = await post(http, hook.url, body, signature_headers(body, SECRET, msg_id=msg_id))
    return status


# --- webhook receiver -------------------------------------------------------------------------


async def test_valid_signature_is_received(
    http: aiohttp.ClientSession, hook: WebhookReceiver
) -> None:
    """A correctly signed POST is answered 200 and recorded with id, timestamp, JSON and type."""
    body = encode(EVENT)
    headers = signature_headers(body, SECRET, msg_id="evt_42")
    status, _, _ = await post(http, hook.url, body, headers)
    assert status == 200
    assert hook.url.startswith("http://127.0.0.1:")
    assert hook.url.endswith("/hook")
    [received] = hook.received
    assert received.id == "evt_42"
    assert received.timestamp == int(headers["webhook-timestamp"])
    assert received.body == body
    assert received.json == EVENT
    assert received.content_type == CLOUDEVENTS
    assert received.headers["WEBHOOK-ID"] == "evt_42"
    [attempt] = hook.attempts
    assert (attempt.status, attempt.verified, attempt.method, attempt.path) == (
        200,
        True,
        "POST",
        "/hook",
    )


async def test_batch_array_body_is_received(
    http: aiohttp.ClientSession, hook: WebhookReceiver
) -> None:
    """A signed JSON array (batch mode) is received, its json being the list."""
    batch = [EVENT, {**EVENT, "id": "evt_2"}]
    assert await post_event(http, hook, batch) == 200
    assert hook.received[0].json == batch


@pytest.mark.parametrize(
    "tamper",
    ["wrong secret", "tampered body", "stale timestamp", "fractional timestamp", "malformed"],
)
async def test_bad_signature_is_rejected(
    http: aiohttp.ClientSession, hook: WebhookReceiver, tamper: str
) -> None:
    """A request that does not verify is answered 401, recorded unverified, never received."""
    body = encode(EVENT)
    headers = signature_headers(body, SECRET)
    if tamper == "wrong secret":
        headers = signature_headers(body, OTHER_SECRET)
    elif tamper == "tampered body":
        body = encode({**EVENT, "id": "evt_forged"})
    elif tamper == "stale timestamp":
        headers = signature_headers(body, SECRET, at=datetime.now(tz=UTC) - timedelta(minutes=6))
    elif tamper == "fractional timestamp":
        headers["webhook-timestamp"] += ".0"  # the library alone would accept it
    else:
        headers["webhook-signature"] = "v1;not-base64!"
    hook.respond(Reply(200))
    status, _, _ = await post(http, hook.url, body, headers)
    assert status == 401
    assert hook.received == []
    [attempt] = hook.attempts
    assert (attempt.status, attempt.verified) == (401, False)
    assert list(hook.script) == [Reply(200)], "a rejected request leaves the script alone"


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
async def test_missing_header_is_rejected(
    http: aiohttp.ClientSession, hook: WebhookReceiver, missing: str
) -> None:
    """A request without one of the three Standard Webhooks headers is answered 401."""
    body = encode(EVENT)
    headers = signature_headers(body, SECRET)
    del headers[missing]
    status, _, _ = await post(http, hook.url, body, headers)
    assert status == 401
    assert hook.received == []
    assert [a.verified for a in hook.attempts] == [False]


async def test_sender_rotation_one_valid_signature_is_enough(
    http: aiohttp.ClientSession, hook: WebhookReceiver
) -> None:
    """A signature header with two signatures, only the second valid, is accepted."""
    body = encode(EVENT)
    headers = signature_headers(body, OTHER_SECRET, SECRET)
    assert len(headers["webhook-signature"].split(" ")) == 2
    status, _, _ = await post(http, hook.url, body, headers)
    assert status == 200
    assert len(hook.received) == 1


async def test_receiver_rotation_accepts_extra_secrets(http: aiohttp.ClientSession) -> None:
    """A receiver with extra secrets accepts requests signed with any of them, no others."""
    body = encode(EVENT)
    async with WebhookReceiver(SECRET, extra_secrets=[OLD_SECRET], path="/in") as receiver:
        assert receiver.url.endswith("/in")
        for secret in (SECRET, OLD_SECRET, OTHER_SECRET):
            await post(http, receiver.url, body, signature_headers(body, secret))
    assert [a.status for a in receiver.attempts] == [200, 200, 401]
    assert len(receiver.received) == 2


async def test_scripted_replies_in_order_then_default(
    http: aiohttp.ClientSession, hook: WebhookReceiver
) -> None:
    """Scripted replies answer the next requests in order, then the default 200 does."""
    hook.respond(
        Reply(503, body=b"busy"),
        Reply(429, headers={"Retry-After": "7"}),
        Reply(202),
    )
    body = encode(EVENT)
    answers = [await post(http, hook.url, body, signature_headers(body, SECRET)) for _ in range(4)]
    assert [status for status, _, _ in answers] == [503, 429, 202, 200]
    assert answers[0][2] == b"busy"
    assert answers[1][1]["Retry-After"] == "7"
    assert [(a.status, a.verified) for a in hook.attempts] == [
        (503, True),
        (429, True),
        (202, True),
        (200, True),
    ]
    assert len(hook.received) == 2, "only the 2xx answers are received"


async def test_default_reply_answers_when_script_is_empty(
    http: aiohttp.ClientSession, hook: WebhookReceiver
) -> None:
    """Setting ``default`` changes the answer for every unscripted request."""
    hook.default = Reply(500)
    assert await post_event(http, hook) == 500
    assert await post_event(http, hook) == 500
    hook.default = Reply()
    assert await post_event(http, hook) == 200
    assert len(hook.received) == 1


async def test_non_json_body_is_refused(http: aiohttp.ClientSession, hook: WebhookReceiver) -> None:
    """A verified body that is not JSON is answered 400 and not received."""
    body = b"not json"
    status, _, _ = await post(http, hook.url, body, signature_headers(body, SECRET))
    assert status == 400
    assert hook.received == []
    assert [(a.status, a.verified) for a in hook.attempts] == [(400, True)]


async def test_delayed_reply_answers_late(
    http: aiohttp.ClientSession, hook: WebhookReceiver
) -> None:
    """A reply with a delay is answered no sooner than the delay, and then received."""
    hook.respond(Reply(delay=0.2))
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await post_event(http, hook) == 200
    assert loop.time() - started >= 0.2
    assert len(hook.received) == 1


async def test_delay_longer_than_client_timeout_times_out(hook: WebhookReceiver) -> None:
    """A client with a shorter timeout than the delay gets a timeout; the attempt is recorded."""
    hook.respond(Reply(delay=30))
    body = encode(EVENT)
    timeout = aiohttp.ClientTimeout(total=0.2)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        with pytest.raises(TimeoutError):
            await post(http, hook.url, body, signature_headers(body, SECRET))
    assert [(a.status, a.verified) for a in hook.attempts] == [(200, True)]
    assert hook.received == [], "received only once answered"


@pytest.mark.parametrize(("scripted", "answered"), [(200, 307), (302, 302), (308, 308)])
async def test_redirect_reply(
    http: aiohttp.ClientSession, hook: WebhookReceiver, scripted: int, answered: int
) -> None:
    """A redirect reply answers a 3xx (307 unless given) with Location, and is not received."""
    hook.respond(Reply(scripted, redirect_to="http://127.0.0.1:9/elsewhere"))
    body = encode(EVENT)
    status, headers, _ = await post(http, hook.url, body, signature_headers(body, SECRET))
    assert status == answered
    assert headers["Location"] == "http://127.0.0.1:9/elsewhere"
    assert hook.received == []
    assert [a.status for a in hook.attempts] == [answered]


async def test_wrong_path_and_method_are_recorded(
    http: aiohttp.ClientSession, hook: WebhookReceiver
) -> None:
    """Another path is answered 404 and a GET 405, both recorded as unverified attempts."""
    body = encode(EVENT)
    headers = signature_headers(body, SECRET)
    status, _, _ = await post(http, hook.url.replace("/hook", "/nope"), body, headers)
    assert status == 404
    async with http.get(hook.url) as response:
        assert response.status == 405
    assert [(a.path, a.method, a.status, a.verified) for a in hook.attempts] == [
        ("/nope", "POST", 404, False),
        ("/hook", "GET", 405, False),
    ]


async def test_wait_for_resolves_when_count_is_reached(
    http: aiohttp.ClientSession, hook: WebhookReceiver
) -> None:
    """wait_for returns once the count of received requests is reached, not before."""
    waiter = asyncio.create_task(hook.wait_for(3, timeout=10))
    await post_event(http, hook, msg_id="a")
    await post_event(http, hook, msg_id="b")
    assert not waiter.done()
    await post_event(http, hook, msg_id="c")
    await waiter
    assert [r.id for r in hook.received] == ["a", "b", "c"]
    await hook.wait_for(2, timeout=0)


async def test_wait_for_times_out_with_a_summary(
    http: aiohttp.ClientSession, hook: WebhookReceiver
) -> None:
    """wait_for raises TimeoutError naming what did arrive."""
    hook.respond(Reply(503))
    await post_event(http, hook)
    with pytest.raises(TimeoutError, match=r"0 of 1 accepted.*\(503, 'verified'\): 1"):
        await hook.wait_for(1, timeout=0.05)


async def test_many_concurrent_requests_are_all_received(
    http: aiohttp.ClientSession, hook: WebhookReceiver
) -> None:
    """Concurrent deliveries are all verified and received."""
    statuses = await asyncio.gather(
        *(post_event(http, hook, {**EVENT, "id": f"e{i}"}, f"e{i}") for i in range(200))
    )
    await hook.wait_for(200, timeout=5)
    assert set(statuses) == {200}
    assert {r.id for r in hook.received} == {f"e{i}" for i in range(200)}


async def test_url_before_start_and_idempotent_close() -> None:
    """url is refused before start; aclose can be called twice."""
    receiver = WebhookReceiver(SECRET)
    with pytest.raises(RuntimeError, match="not started"):
        _ = receiver.url
    await receiver.start()
    await receiver.aclose()
    await receiver.aclose()


# --- Slack stand-in ---------------------------------------------------------------------------


async def post_slack(
    http: aiohttp.ClientSession, slack: SlackStandIn, payload: Any = SLACK_MESSAGE
) -> tuple[int, dict[str, str], bytes]:
    """POST a Slack payload as JSON."""
    body = payload if isinstance(payload, bytes) else encode(payload)
    return await post(http, slack.url, body, {"Content-Type": "application/json"})


async def test_slack_valid_payload_is_accepted(
    http: aiohttp.ClientSession, slack: SlackStandIn
) -> None:
    """A valid Block Kit message is answered 200 ``ok`` and kept."""
    assert slack.url.endswith(SLACK_PATH)
    status, _, body = await post_slack(http, slack)
    assert (status, body) == (200, b"ok")
    [message] = slack.messages
    assert message.payload == SLACK_MESSAGE
    assert message.content_type == "application/json"
    assert [(a.status, a.reason) for a in slack.attempts] == [(200, "ok")]
    assert slack.invalid == []


async def test_slack_second_message_within_a_second_is_rate_limited(
    http: aiohttp.ClientSession,
) -> None:
    """A message less than min_interval after the last accepted one gets 429 + Retry-After."""
    clock = FakeClock()
    async with SlackStandIn(clock=clock, retry_after=3) as slack:
        assert (await post_slack(http, slack))[0] == 200
        clock.now += 0.999
        status, headers, body = await post_slack(http, slack)
        assert (status, headers["Retry-After"], body) == (429, "3", b"rate_limited")
        clock.now += 0.001
        assert (await post_slack(http, slack))[0] == 200, "one second after the last accepted"
    assert [a.status for a in slack.attempts] == [200, 429, 200]
    assert slack.intervals() == [pytest.approx(1.0)]


async def test_slack_rate_limit_with_the_real_clock(
    http: aiohttp.ClientSession, slack: SlackStandIn
) -> None:
    """Two messages sent back to back: the second is refused with 429 and Retry-After: 1."""
    first, _, _ = await post_slack(http, slack)
    second, headers, _ = await post_slack(http, slack)
    assert (first, second, headers["Retry-After"]) == (200, 429, "1")
    assert len(slack.messages) == 1


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b'"text"'])
async def test_slack_unparsable_payload_is_invalid(
    http: aiohttp.ClientSession, slack: SlackStandIn, body: bytes
) -> None:
    """A body that is not a JSON object is answered 400 ``invalid_payload``."""
    status, _, answer = await post_slack(http, slack, body)
    assert (status, answer) == (400, b"invalid_payload")
    assert slack.messages == []
    [invalid] = slack.invalid
    assert invalid.reason == "invalid_payload"


async def test_slack_default_validator_refuses_too_many_blocks(
    http: aiohttp.ClientSession, slack: SlackStandIn
) -> None:
    """A message over Block Kit's 50-block limit is answered 400 ``invalid_blocks`` and kept."""
    block = SLACK_MESSAGE["blocks"][0]
    payload = {"text": "too much", "blocks": [block] * 51}
    status, _, answer = await post_slack(http, slack, payload)
    assert (status, answer) == (400, b"invalid_blocks")
    assert slack.messages == []
    [invalid] = slack.invalid
    assert (invalid.status, invalid.reason, invalid.payload) == (400, "invalid_blocks", payload)
    assert invalid.detail, "the validator's reason is kept"


async def test_slack_invalid_message_does_not_count_for_the_rate_limit(
    http: aiohttp.ClientSession,
) -> None:
    """An injected validator's refusal is recorded with its message and leaves the rate alone."""

    def validate(payload: dict[str, Any]) -> None:
        assert payload.get("text") != "bad", "text must not be bad"

    clock = FakeClock()
    async with SlackStandIn(clock=clock, validate=validate) as slack:
        status, _, _ = await post_slack(http, slack, {"text": "bad"})
        assert status == 400
        assert (await post_slack(http, slack, {"text": "good"}))[0] == 200
    assert slack.invalid[0].detail.startswith("text must not be bad")
    assert [m.payload for m in slack.messages] == [{"text": "good"}]


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (403, "invalid_token"),
        (404, "channel_not_found"),
        (410, "channel_is_archived"),
        (500, "rollup_error"),
    ],
)
async def test_slack_scripted_errors(http: aiohttp.ClientSession, status: int, reason: str) -> None:
    """A scripted error is answered as Slack words it, then the default behaviour resumes."""
    clock = FakeClock()
    async with SlackStandIn(clock=clock) as slack:
        slack.respond(slack_reply(status, reason))
        assert (await post_slack(http, slack))[::2] == (status, reason.encode())
        assert (await post_slack(http, slack))[::2] == (200, b"ok")
    assert [(a.status, a.reason) for a in slack.attempts] == [(status, reason), (200, "ok")]
    assert len(slack.messages) == 1


async def test_slack_scripted_reply_bypasses_rate_limit(http: aiohttp.ClientSession) -> None:
    """A scripted 429 answers as given; a scripted 2xx accepts the message."""
    clock = FakeClock()
    async with SlackStandIn(clock=clock) as slack:
        slack.respond(slack_reply(429, "rate_limited", retry_after=30), Reply(200, body=b"ok"))
        status, headers, _ = await post_slack(http, slack)
        assert (status, headers["Retry-After"]) == (429, "30")
        assert (await post_slack(http, slack))[0] == 200
        assert (await post_slack(http, slack))[0] == 429, "the default rate limit again"
    assert len(slack.messages) == 1


async def test_slack_unknown_path_is_no_service(
    http: aiohttp.ClientSession, slack: SlackStandIn
) -> None:
    """A POST to another webhook path is answered 404 ``no_service``."""
    url = slack.url.replace("XXXX", "YYYY")
    status, _, body = await post(http, url, encode(SLACK_MESSAGE), {})
    assert (status, body) == (404, b"no_service")
    assert slack.messages == []


async def test_slack_wait_for(http: aiohttp.ClientSession) -> None:
    """wait_for resolves on accepted messages and times out naming the refusals."""
    clock = FakeClock()
    async with SlackStandIn(clock=clock) as slack:
        waiter = asyncio.create_task(slack.wait_for(2, timeout=10))
        await post_slack(http, slack, b"{")
        await post_slack(http, slack)
        assert not waiter.done()
        clock.now += 1
        await post_slack(http, slack)
        await waiter
        with pytest.raises(TimeoutError, match=r"2 of 3 accepted.*invalid_payload"):
            await slack.wait_for(3, timeout=0.05)
