"""Stand-in delivery targets: a Standard Webhooks endpoint and a Slack incoming webhook.

Both are real aiohttp servers on 127.0.0.1 (port 0), started and stopped as async context
managers, recording what arrives and answering from a script of :class:`Reply` values::

    async with WebhookReceiver("whsec_...") as hook:
        hook.respond(Reply(503), Reply(429, headers={"Retry-After": "1"}))
        ...  # point the sink at hook.url
        await hook.wait_for(1)
        assert hook.received[0].json["id"] == event_id

The webhook receiver is used by the throughput benchmark too, so a request does only what
it must: verify, parse, record, answer. Nothing is logged per request.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

__all__ = [
    "SLACK_PATH",
    "Attempt",
    "Message",
    "Received",
    "Reply",
    "SlackAttempt",
    "SlackStandIn",
    "WebhookReceiver",
    "slack_reply",
]

SLACK_PATH = "/services/T000/B000/XXXX"
"""The path of the stand-in's incoming webhook (the shape of a real one)."""

_SHUTDOWN_TIMEOUT = 0.25


@dataclass(frozen=True, slots=True)
class Reply:
    """One scripted answer.

    ``delay`` is slept before answering (to provoke client timeouts). With ``redirect_to``
    the answer carries ``Location: redirect_to`` and ``status`` if it is a 3xx, else 307.
    """

    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay: float = 0.0
    redirect_to: str | None = None

    def response(self) -> web.Response:
        """The aiohttp response this reply stands for."""
        headers = self.headers
        if self.redirect_to is not None:
            headers = {**headers, "Location": self.redirect_to}
        return web.Response(status=self.effective_status, headers=headers, body=self.body)

    @property
    def effective_status(self) -> int:
        """The status actually answered (a redirect without a 3xx status answers 307)."""
        if self.redirect_to is not None and not 300 <= self.status < 400:
            return 307
        return self.status


def slack_reply(status: int, reason: str, *, retry_after: int | None = None) -> Reply:
    """A reply the way Slack words it: a plain-text reason (``channel_not_found``...)."""
    headers = {"Content-Type": "text/plain; charset=utf-8"}
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return Reply(status=status, headers=headers, body=reason.encode())


_OK = Reply()


@dataclass(frozen=True, slots=True)
class Received:
    """A webhook request that verified and was answered 2xx."""

    id: str
    timestamp: int
    body: bytes
    json: Any
    headers: Mapping[str, str]
    """The request's headers, looked up case-insensitively."""
    content_type: str
    time: float
    """Arrival time on the receiver's clock."""


@dataclass(frozen=True, slots=True)
class Attempt:
    """Any request the webhook receiver saw, with what it answered."""

    time: float
    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes
    status: int
    verified: bool


@dataclass(frozen=True, slots=True)
class Message:
    """A Slack message the stand-in accepted."""

    payload: dict[str, Any]
    time: float
    content_type: str


@dataclass(frozen=True, slots=True)
class SlackAttempt:
    """Any request the Slack stand-in saw: the status and Slack's reason it answered.

    ``detail`` says why a payload was refused (the validator's message); ``payload`` is the
    parsed body, or None when it did not parse.
    """

    time: float
    status: int
    reason: str
    payload: Any = None
    detail: str = ""


class _StandIn:
    """An aiohttp server on 127.0.0.1 with one catch-all handler and count waiters."""

    def __init__(self, path: str) -> None:
        self._path = path
        self.script: deque[Reply] = deque()
        self._runner: web.AppRunner | None = None
        self._url: str | None = None
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    @property
    def url(self) -> str:
        """The URL to deliver to; set once the server is started."""
        if self._url is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return self._url

    def respond(self, *replies: Reply) -> None:
        """Queue replies for the next requests, in order."""
        self.script.extend(replies)

    async def start(self) -> None:
        """Listen on a free port of 127.0.0.1."""
        if self._runner is not None:
            return
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=_SHUTDOWN_TIMEOUT)
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        port = runner.addresses[0][1]
        self._url = f"http://127.0.0.1:{port}{self._path}"

    async def aclose(self) -> None:
        """Stop the server; idempotent."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def wait_for(self, count: int, timeout: float = 30) -> None:
        """Return once ``count`` requests were accepted; TimeoutError (with a summary) if not."""
        if self._accepted() >= count:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (count, future)
        self._waiters.append(entry)
        try:
            async with asyncio.timeout(timeout):
                await future
        except TimeoutError:
            raise TimeoutError(
                f"{type(self).__name__}: {self._accepted()} of {count} accepted "
                f"within {timeout}s; {self._summary()}"
            ) from None
        finally:
            if entry in self._waiters:
                self._waiters.remove(entry)

    def _notify(self, accepted: int) -> None:
        """Wake the waiters whose count is reached."""
        for count, future in self._waiters:
            if accepted >= count and not future.done():
                future.set_result(None)

    # implemented by the stand-ins

    def _accepted(self) -> int:
        raise NotImplementedError

    def _summary(self) -> str:
        raise NotImplementedError

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raise NotImplementedError


class WebhookReceiver(_StandIn):
    """A webhook endpoint on 127.0.0.1 verifying every request with ``standardwebhooks``.

    A request is verified against the receiver's secret and any ``extra_secrets`` (the
    receiver side of a rotation); the signature header may carry several signatures (the
    sender side of a rotation), one valid is enough. A request that does not verify is
    answered 401 without using the script; one to another path or with another method than
    POST is answered 404 or 405. A verified body that is not JSON is answered 400.
    Otherwise the next scripted reply is used, or ``default`` when the script is empty.

    ``attempts`` records every request when it arrives; ``received`` records the verified
    ones answered 2xx, once answered (after the reply's delay).
    """

    def __init__(
        self,
        secret: str,
        *,
        path: str = "/hook",
        extra_secrets: Iterable[str] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(path)
        self._webhooks = [Webhook(secret), *(Webhook(extra) for extra in extra_secrets)]
        self._clock = clock
        self.default: Reply = _OK
        self.received: list[Received] = []
        self.attempts: list[Attempt] = []

    async def __aenter__(self) -> WebhookReceiver:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _verify(self, body: bytes, headers: Mapping[str, str]) -> bool:
        if not headers.get("webhook-timestamp", "").isdigit():
            return False  # the library would take "1.5" or "-1"; the standard says seconds
        as_dict = dict(headers)
        for webhook in self._webhooks:
            try:
                webhook.verify(body, as_dict, json_parse=False)
            except (WebhookVerificationError, ValueError):
                # ValueError: a malformed signature list, bad base64, a body not UTF-8
                continue
            return True
        return False

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        now = self._clock()
        headers = request.headers
        parsed: Any = None
        if request.path != self._path:
            reply, verified = Reply(404), False
        elif request.method != "POST":
            reply, verified = Reply(405), False
        elif not self._verify(body, headers):
            reply, verified = Reply(401, body=b"invalid signature"), False
        else:
            verified = True
            try:
                parsed = json.loads(body)
            except ValueError:
                reply = Reply(400, body=b"body is not JSON")
            else:
                reply = self.script.popleft() if self.script else self.default
        status = reply.effective_status
        self.attempts.append(
            Attempt(now, request.method, request.path, headers, body, status, verified)
        )
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if verified and 200 <= status < 300:
            self.received.append(
                Received(
                    id=headers["webhook-id"],
                    timestamp=int(headers["webhook-timestamp"]),
                    body=body,
                    json=parsed,
                    headers=headers,
                    content_type=headers.get("Content-Type", ""),
                    time=now,
                )
            )
            if self._waiters:
                self._notify(len(self.received))
        return reply.response()

    def _accepted(self) -> int:
        return len(self.received)

    def _summary(self) -> str:
        answers = Counter(
            (attempt.status, "verified" if attempt.verified else "unverified")
            for attempt in self.attempts
        )
        return f"{len(self.attempts)} requests, answered {dict(answers)}"


class SlackStandIn(_StandIn):
    """A Slack incoming webhook on 127.0.0.1: validates, enforces 1 message/s, answers like Slack.

    Unscripted, a POST to :data:`SLACK_PATH` is answered: 429 ``rate_limited`` with
    ``Retry-After: retry_after`` when the last accepted message is less than
    ``min_interval`` old (on ``clock``); 400 ``invalid_payload`` when the body is not a JSON
    object; 400 ``invalid_blocks`` when ``validate`` raises AssertionError (the message is
    kept in ``invalid`` and the attempt's ``detail``); else 200 ``ok``. ``validate``
    defaults to ``testkit.slack_validation.assert_valid_slack_payload``, imported at start.

    A scripted reply is answered as it is, without the rate limit or validation; a scripted
    2xx still accepts a message whose body is a JSON object. Another path is answered 404
    ``no_service``, another method 405; both are recorded in ``attempts``. Requests are
    recorded (and messages accepted) on arrival, before a reply's delay.
    """

    def __init__(
        self,
        *,
        min_interval: float = 1.0,
        retry_after: int = 1,
        clock: Callable[[], float] = time.monotonic,
        validate: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        super().__init__(SLACK_PATH)
        self.min_interval = min_interval
        self.retry_after = retry_after
        self._clock = clock
        self._validate = validate
        self.messages: list[Message] = []
        self.attempts: list[SlackAttempt] = []
        self.invalid: list[SlackAttempt] = []

    async def __aenter__(self) -> SlackStandIn:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Resolve the payload validator, then listen on a free port of 127.0.0.1."""
        if self._validate is None:
            from testkit.slack_validation import assert_valid_slack_payload  # noqa: PLC0415

            self._validate = assert_valid_slack_payload
        await super().start()

    def intervals(self) -> list[float]:
        """The time between consecutive accepted messages."""
        times = [message.time for message in self.messages]
        return [later - earlier for earlier, later in itertools.pairwise(times)]

    def _refuse(self, now: float, reply: Reply, payload: Any = None, detail: str = "") -> Reply:
        attempt = SlackAttempt(
            now, reply.status, reply.body.decode(errors="replace"), payload, detail
        )
        self.attempts.append(attempt)
        if reply.status == 400:
            self.invalid.append(attempt)
        return reply

    def _accept(self, now: float, payload: dict[str, Any], content_type: str) -> None:
        self.messages.append(Message(payload, now, content_type))
        if self._waiters:
            self._notify(len(self.messages))

    def _scripted(self, now: float, reply: Reply, body: bytes, content_type: str) -> Reply:
        payload = _json_object(body)
        status = reply.effective_status
        reason = reply.body.decode(errors="replace")
        self.attempts.append(SlackAttempt(now, status, reason, payload))
        if 200 <= status < 300 and payload is not None:
            self._accept(now, payload, content_type)
        return reply

    def _decide(self, request: web.Request, body: bytes) -> Reply:
        now = self._clock()
        if request.path != self._path or request.method != "POST":
            return self._refuse(now, _NO_SERVICE if request.path != self._path else _NOT_ALLOWED)
        content_type = request.headers.get("Content-Type", "")
        if self.script:
            return self._scripted(now, self.script.popleft(), body, content_type)
        if self.messages and now - self.messages[-1].time < self.min_interval:
            return self._refuse(now, slack_reply(429, "rate_limited", retry_after=self.retry_after))
        payload = _json_object(body)
        if payload is None:
            return self._refuse(
                now, slack_reply(400, "invalid_payload"), detail="not a JSON object"
            )
        assert self._validate is not None  # set by start()
        try:
            self._validate(payload)
        except AssertionError as exc:
            return self._refuse(now, slack_reply(400, "invalid_blocks"), payload, str(exc))
        self.attempts.append(SlackAttempt(now, 200, "ok", payload))
        self._accept(now, payload, content_type)
        return _SLACK_OK

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        reply = self._decide(request, body)
        if reply.delay:
            await asyncio.sleep(reply.delay)
        return reply.response()

    def _accepted(self) -> int:
        return len(self.messages)

    def _summary(self) -> str:
        answers = Counter(attempt.status for attempt in self.attempts)
        summary = f"{len(self.attempts)} requests, answered {dict(answers)}"
        if self.invalid:
            refusals = "; ".join(f"{a.reason}: {a.detail}" for a in self.invalid[-3:])
            summary += f"; last refused as invalid: {refusals}"
        return summary


_SLACK_OK = slack_reply(200, "ok")
_NO_SERVICE = slack_reply(404, "no_service")
_NOT_ALLOWED = slack_reply(405, "method_not_allowed")


def _json_object(body: bytes) -> dict[str, Any] | None:
    """The body as a JSON object, or None."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None
