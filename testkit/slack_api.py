"""A stand-in Slack Web API on 127.0.0.1: ``chat.postMessage``, ``chat.update`` and ``auth.test``
the way a bot of one workspace sees them, with a channel to read back what Slack would show.

    async with FakeSlackApi(token=TOKEN) as slack:
        ...  # a sink with api_url=slack.url, token=TOKEN, channel=slack.channel
        await slack.wait_until(lambda s: len(s.top_level()) == 1)
        (incident,) = slack.top_level()
        assert slack.replies(incident.ts)

What it checks, answering ``HTTP 200 {"ok": false, "error": ...}`` like Slack does:

- ``Authorization: Bearer <token>``: none is ``not_authed``, another token ``invalid_auth``;
- the channel is one of ``channels`` (``channel_not_found``); ``chat.update`` names a message
  that exists (``message_not_found``; ``delete`` makes one disappear); ``thread_ts`` is a
  message of the channel (``thread_not_found``);
- ``text`` and ``blocks`` pass ``testkit.slack_validation`` (built from slack_sdk's models),
  else ``invalid_blocks`` (the reason is kept in the call's ``detail``);
- at most one ``chat.postMessage`` per ``min_interval`` per channel: a faster one is answered
  ``HTTP 429`` with ``Retry-After`` and ``ratelimited``, the way Slack limits a channel.

``fail(method, error, ...)`` scripts the next answers of one method (any error code, an HTTP
status, a ``Retry-After``). Every call is recorded in ``calls``, accepted posts in ``messages``
(each with the history of its edits), in arrival order on ``clock``.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from testkit.slack_validation import assert_valid_slack_payload

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["CHANNEL", "ApiCall", "FakeSlackApi", "SlackMessage"]

CHANNEL = "C0123456789"
"""The channel the stand-in knows by default."""


@dataclass(slots=True)
class SlackMessage:
    """A message in the channel: its latest text and blocks, and every earlier version."""

    channel: str
    ts: str
    text: str
    blocks: list[dict[str, Any]]
    thread_ts: str | None
    posted_at: float
    edits: list[tuple[str, list[dict[str, Any]]]] = field(default_factory=list)

    @property
    def texts(self) -> list[str]:
        """The mrkdwn and plain texts of its blocks, in order."""
        out = []
        for block in self.blocks:
            if "text" in block:
                out.append(block["text"]["text"])
            out += [e["text"] for e in block.get("elements", []) if "text" in e]
        return out


@dataclass(frozen=True, slots=True)
class ApiCall:
    """One request, with what was answered."""

    time: float
    method: str
    status: int
    error: str | None  # None: ok
    channel: str | None = None
    ts: str | None = None
    thread_ts: str | None = None
    detail: str = ""
    authorization: str = ""


@dataclass(frozen=True, slots=True)
class _Scripted:
    error: str
    status: int
    retry_after: int | None


class FakeSlackApi:
    """The stand-in; see the module docstring. Start it with ``async with``."""

    def __init__(
        self,
        *,
        token: str,
        channels: tuple[str, ...] = (CHANNEL,),
        min_interval: float = 1.0,
        retry_after: int = 1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.token = token
        self.channels = channels
        self.min_interval = min_interval
        self.retry_after = retry_after
        self._clock = clock
        self.messages: dict[str, SlackMessage] = {}
        self.calls: list[ApiCall] = []
        self._script: dict[str, deque[_Scripted]] = defaultdict(deque)
        self._deleted: set[str] = set()
        self._last_post: dict[str, float] = {}
        self._ts = itertools.count(1)
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self._url: str | None = None

    @property
    def channel(self) -> str:
        """The first channel, the one tests post to."""
        return self.channels[0]

    @property
    def url(self) -> str:
        """The Web API base URL (``api_url``), once started."""
        if self._url is None:
            raise RuntimeError("FakeSlackApi is not started")
        return self._url

    async def __aenter__(self) -> FakeSlackApi:
        app = web.Application()
        app.router.add_post("/api/{method}", self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.25)
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", 0).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._url = f"http://127.0.0.1:{runner.addresses[0][1]}/api/"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    # --- scripting and reading back --------------------------------------------------------------

    def fail(
        self,
        method: str,
        error: str,
        *,
        status: int = 200,
        retry_after: int | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` calls of ``method`` with ``error`` (and that status)."""
        self._script[method].extend([_Scripted(error, status, retry_after)] * times)

    def delete(self, ts: str) -> None:
        """The message is gone (someone deleted it): updates answer ``message_not_found``."""
        self._deleted.add(ts)

    def top_level(self, channel: str | None = None) -> list[SlackMessage]:
        """The channel's messages (not thread replies, not deleted), oldest first."""
        wanted = channel or self.channel
        return [
            m
            for m in self.messages.values()
            if m.channel == wanted and m.thread_ts is None and m.ts not in self._deleted
        ]

    def replies(self, ts: str) -> list[SlackMessage]:
        """The replies in the thread of ``ts``, oldest first."""
        return [m for m in self.messages.values() if m.thread_ts == ts]

    def accepted(self, method: str) -> list[ApiCall]:
        """The calls of ``method`` answered ``ok``."""
        return [c for c in self.calls if c.method == method and c.error is None]

    def post_intervals(self, channel: str | None = None) -> list[float]:
        """Seconds between consecutive accepted posts to a channel."""
        wanted = channel or self.channel
        times = [c.time for c in self.accepted("chat.postMessage") if c.channel == wanted]
        return [later - earlier for earlier, later in itertools.pairwise(times)]

    async def wait_until(
        self, predicate: Callable[[FakeSlackApi], bool], timeout: float = 30
    ) -> None:
        """Return once ``predicate(self)`` holds (checked after every call); TimeoutError
        with a summary of the calls if it does not within ``timeout``."""
        try:
            async with asyncio.timeout(timeout), self._changed:
                await self._changed.wait_for(lambda: predicate(self))
        except TimeoutError:
            answers = [(c.method, c.error or "ok") for c in self.calls[-8:]]
            raise TimeoutError(
                f"FakeSlackApi: not there within {timeout}s; {len(self.calls)} calls,"
                f" the last: {answers}"
            ) from None

    # --- the API -------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        now = self._clock()
        authorization = request.headers.get("Authorization", "")
        try:
            body = await request.json()
        except ValueError:
            body = None
        args: dict[str, Any] = body if isinstance(body, dict) else {}
        channel, thread_ts = _text(args.get("channel")), _text(args.get("thread_ts"))
        try:
            ts, answer = self._answer(method, now, authorization, body, args)
        except _Refusal as refusal:
            status, headers = refusal.status, refusal.headers
            call = ApiCall(
                now,
                method,
                status,
                refusal.error,
                channel,
                None,
                thread_ts,
                refusal.detail,
                authorization,
            )
            answer = {"ok": False, "error": refusal.error}
        else:
            status, headers = 200, {}
            call = ApiCall(now, method, 200, None, channel, ts, thread_ts, "", authorization)
        self.calls.append(call)
        async with self._changed:
            self._changed.notify_all()
        return web.json_response(answer, status=status, headers=headers)

    def _answer(
        self, method: str, now: float, authorization: str, body: Any, args: dict[str, Any]
    ) -> tuple[str | None, dict[str, Any]]:
        """The ts and the answer of an accepted call; ``_Refusal`` for any other."""
        if not authorization.startswith("Bearer "):
            raise _Refusal("not_authed")
        if authorization != f"Bearer {self.token}":
            raise _Refusal("invalid_auth")
        if self._script[method]:
            scripted = self._script[method].popleft()
            retry = {"Retry-After": str(scripted.retry_after)} if scripted.retry_after else {}
            raise _Refusal(scripted.error, scripted.status, retry)
        if method == "auth.test":
            return None, {"ok": True, "team": "Storm Ops", "user": "storm-notifier"}
        if method not in ("chat.postMessage", "chat.update"):
            raise _Refusal("unknown_method", 404)
        if body is None:
            raise _Refusal("invalid_json")
        channel = _text(args.get("channel"))
        if channel is None or channel not in self.channels:
            raise _Refusal("channel_not_found")
        text, blocks = args.get("text"), args.get("blocks")
        try:
            assert_valid_slack_payload({"text": text, "blocks": blocks})
        except AssertionError as exc:
            raise _Refusal("invalid_blocks", detail=str(exc)) from None
        assert isinstance(text, str)
        assert isinstance(blocks, list)
        if method == "chat.update":
            return self._update(channel, _text(args.get("ts")), text, blocks)
        return self._post(now, channel, _text(args.get("thread_ts")), text, blocks)

    def _post(
        self, now: float, channel: str, thread_ts: str | None, text: str, blocks: list[Any]
    ) -> tuple[str, dict[str, Any]]:
        if thread_ts is not None and (
            thread_ts not in self.messages or self.messages[thread_ts].channel != channel
        ):
            raise _Refusal("thread_not_found")
        last = self._last_post.get(channel)
        if last is not None and now - last < self.min_interval:
            raise _Refusal("ratelimited", 429, {"Retry-After": str(self.retry_after)})
        self._last_post[channel] = now
        ts = f"{1770000000 + next(self._ts)}.000100"
        self.messages[ts] = SlackMessage(channel, ts, text, blocks, thread_ts, now)
        return ts, {"ok": True, "channel": channel, "ts": ts}

    def _update(
        self, channel: str, ts: str | None, text: str, blocks: list[Any]
    ) -> tuple[str, dict[str, Any]]:
        message = self.messages.get(ts) if ts is not None else None
        if message is None or message.channel != channel or message.ts in self._deleted:
            raise _Refusal("message_not_found")
        message.edits.append((message.text, message.blocks))
        message.text, message.blocks = text, blocks
        return message.ts, {"ok": True, "channel": channel, "ts": message.ts}


class _Refusal(Exception):  # noqa: N818 - reads as what is answered
    """An answer that is not ok: Slack's error code, the HTTP status, headers, why."""

    def __init__(
        self,
        error: str,
        status: int = 200,
        headers: dict[str, str] | None = None,
        detail: str = "",
    ) -> None:
        super().__init__(error)
        self.error, self.status, self.headers, self.detail = error, status, headers or {}, detail


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None
