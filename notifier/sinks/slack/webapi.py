"""The Slack Web API calls of app mode, through ``slack_sdk``'s aiohttp client: what Slack said.

``post`` (``chat.postMessage``, in a thread with ``thread_ts``), ``update`` (``chat.update``)
and ``identity`` (``auth.test``, for ``check-config``) never raise for a failure: every call
ends in an ``Answer``, and ``answers.outcome`` says what it means. The client fetches;
``answers`` decides. Retries are not the SDK's business (its retry handlers are off): the
worker's schedule decides.

The token goes only into the ``Authorization`` header. Nothing here logs, and no answer carries
the SDK's messages (they name the URL); the SDK gets a logger of its own that drops its debug
lines, which would otherwise describe every request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from notifier import __version__
from notifier.http import parse_retry_after, transport_reason

if TYPE_CHECKING:
    from collections.abc import Mapping

    from pydantic import SecretStr

__all__ = ["Answer", "SlackWebApi"]

_QUIET = logging.getLogger("notifier.slack_sdk")
_QUIET.setLevel(logging.INFO)  # the SDK formats its per-request debug lines only below INFO


@dataclass(frozen=True, slots=True)
class Answer:
    """What Slack said to one call.

    ``ok`` with the message's ``ts`` and ``channel`` (its ID); else Slack's ``error`` code
    (``channel_not_found``...) and the HTTP ``status``, or ``transport`` when no answer came
    (then Slack may or may not have acted on the call). ``retry_after`` from ``Retry-After``.
    """

    method: str
    ok: bool
    ts: str | None = None
    channel: str | None = None
    error: str | None = None
    status: int | None = None
    retry_after: float | None = None
    transport: str | None = None
    who: str | None = None  # auth.test: the bot user and its workspace


class SlackWebApi:
    """``chat.postMessage`` and ``chat.update`` for one bot token. Pass a session to share one."""

    def __init__(
        self,
        token: SecretStr,
        api_url: str,
        *,
        timeout: float,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self._timeout = timeout
        self._own_session = session is None
        self._session = session or aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=timeout), trust_env=False
        )
        self._client = AsyncWebClient(
            token=token.get_secret_value(),
            base_url=api_url,
            timeout=max(int(timeout), 1),
            session=self._session,
            logger=_QUIET,
            retry_handlers=[],
            user_agent_prefix=f"storm-notifier/{__version__}",
        )

    async def post(
        self, channel: str, message: Mapping[str, Any], *, thread_ts: str | None = None
    ) -> Answer:
        """Post ``message`` (``text`` and ``blocks``) to the channel, or in a thread of it."""
        return await self._call(
            "chat.postMessage",
            self._client.chat_postMessage(
                channel=channel,
                text=message["text"],
                blocks=message["blocks"],
                thread_ts=thread_ts,
                unfurl_links=False,
                unfurl_media=False,
            ),
        )

    async def update(self, channel: str, ts: str, message: Mapping[str, Any]) -> Answer:
        """Replace the text and blocks of the message ``ts`` of the channel (its ID)."""
        return await self._call(
            "chat.update",
            self._client.chat_update(
                channel=channel, ts=ts, text=message["text"], blocks=message["blocks"]
            ),
        )

    async def identity(self) -> Answer:
        """``auth.test``: is the token good, and whose is it (``who``)."""
        return await self._call("auth.test", self._client.auth_test())

    async def _call(self, method: str, call: Any) -> Answer:
        try:
            async with asyncio.timeout(self._timeout):
                response = await call
        except SlackApiError as exc:
            return _refused(method, exc)
        except (TimeoutError, aiohttp.ClientError) as exc:
            return Answer(method, ok=False, transport=transport_reason(exc, self._timeout))
        except SlackClientError as exc:  # the SDK's own refusal of a request: not Slack's
            return Answer(method, ok=False, transport=f"slack_sdk: {type(exc).__name__}")
        data = response.data if isinstance(response.data, dict) else {}
        user, team = _text(data.get("user")), _text(data.get("team"))
        return Answer(
            method,
            ok=True,
            ts=_text(data.get("ts")),
            channel=_text(data.get("channel")),
            status=response.status_code,
            who=f"{user} in {team}" if user and team else user,
        )

    async def aclose(self) -> None:
        """Close the session if it is ours; idempotent."""
        if self._own_session and not self._session.closed:
            await self._session.close()


def _refused(method: str, exc: SlackApiError) -> Answer:
    """An answer that is not ``ok``: Slack's error code, the status and any ``Retry-After``."""
    response = exc.response
    data = response.data if isinstance(response.data, dict) else {}
    headers = response.headers or {}
    retry_after = headers.get("Retry-After") or headers.get("retry-after")
    return Answer(
        method,
        ok=False,
        error=(_text(data.get("error")) or "")[:80] or None,
        status=response.status_code,
        retry_after=parse_retry_after(retry_after, time.time()),
    )


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
