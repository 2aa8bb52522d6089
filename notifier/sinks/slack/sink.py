"""The ``slack`` sink with a ``webhook_url``: Block Kit digests to an incoming webhook, at most
one a second (app mode, ``token`` + ``channel``, is ``app.SlackAppSink``).

Events of one (cluster, streamKey) that become ready within ``group_wait`` make one message
(``message.build_message`` keeps it inside Block Kit's limits by summarising): a stream event
(its subject is the streamKey) goes with the viewer events of its stream, on top. Slack's answers:
``ok`` (any 2xx) is delivered once its status arrives, the body not awaited; 429 waits
``Retry-After``; ``400 invalid_payload`` is dead-lettered; 403/404/410 (revoked token, channel
gone) pause the sink; 5xx and timeouts are retried.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import TYPE_CHECKING, ClassVar

import aiohttp
import msgspec

from notifier import __version__
from notifier.http import parse_retry_after
from notifier.sinks.base import Batching, Delivered, Failed, Outcome, Retry
from notifier.sinks.http import classify, transport_failure
from notifier.sinks.slack.message import build_message
from notifier.sinks.slack.routing import group_key, stream_key_of

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from notifier.sinks.base import Event
    from notifier.sinks.slack.config import SlackSinkSettings

__all__ = ["SlackSink"]

MIN_INTERVAL = 1.0  # Slack allows one message a second per incoming webhook
LONG_WAIT = 5.0  # a longer pause is not slept inside a delivery (shutdown would wait for it)
GROUP_LIMIT = 1000  # events summarised in one message at most


class _Pacer:
    """One message a second per webhook URL, shared by every sink posting to it."""

    pacers: ClassVar[dict[str, _Pacer]] = {}

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.next_at = 0.0

    @classmethod
    def for_url(cls, url: str) -> _Pacer:
        key = hashlib.sha256(url.encode()).hexdigest()
        return cls.pacers.setdefault(key, cls())


class SlackSink:
    """Posts grouped events to one Slack incoming webhook."""

    def __init__(
        self,
        settings: SlackSinkSettings,
        session: aiohttp.ClientSession | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if settings.webhook_url is None:
            raise ValueError("an incoming-webhook Slack sink needs webhook_url")
        self.settings = settings
        self._url = settings.webhook_url.get_secret_value()
        self._timeout = aiohttp.ClientTimeout(total=settings.timeout)
        self._own_session = session is None
        self._session = session or aiohttp.ClientSession(trust_env=False)
        self._pacer = _Pacer.for_url(self._url)
        self._clock = clock

    @property
    def batching(self) -> Batching:
        """Group by (cluster, streamKey) for ``group_wait``."""
        return Batching(size=GROUP_LIMIT, wait=self.settings.group_wait, key=group_key)

    async def deliver(self, events: Sequence[Event]) -> Outcome:
        """One message for the group, paced to one a second per URL."""
        first = events[0]
        message = build_message(first.cluster, stream_key_of(first), [e.payload() for e in events])
        body = msgspec.json.encode(message)
        async with self._pacer.lock:
            wait = self._pacer.next_at - self._clock()
            if wait > LONG_WAIT:  # Slack asked for a pause: hand it back to the schedule
                return Retry("waiting for Slack's rate limit", after=wait, counted=False)
            if wait > 0:
                await asyncio.sleep(wait)
            outcome = await self._post(body)
            after = outcome.after if isinstance(outcome, Retry) and outcome.after else 0.0
            self._pacer.next_at = self._clock() + max(MIN_INTERVAL, after)
        return outcome

    async def _post(self, body: bytes) -> Outcome:
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"storm-notifier/{__version__}",
        }
        try:
            async with self._session.post(
                self._url, data=body, headers=headers, timeout=self._timeout, allow_redirects=False
            ) as response:
                status = response.status
                if 200 <= status < 300:  # the status is the answer: its body is not awaited
                    return Delivered(status=status)
                answer = await response.content.read(1024)
                retry_after = response.headers.get("Retry-After")
        except (TimeoutError, aiohttp.ClientError) as exc:
            return transport_failure(exc, self.settings.timeout)
        text = answer.decode("utf-8", "replace").strip()[:100]
        if status == 429:
            after = parse_retry_after(retry_after, time.time())
            return Retry(
                f"HTTP 429: {text or 'rate_limited'}", status=status, after=after, counted=False
            )
        if status in (403, 404, 410):
            return Failed(f"HTTP {status}: {text or 'webhook gone'}", status=status, pause=True)
        if status == 400:
            return Failed(f"HTTP 400: {text or 'invalid_payload'}", status=status)
        return classify(status, {"Retry-After": retry_after or ""}, answer)

    async def aclose(self) -> None:
        """Close the session if it is ours."""
        if self._own_session and not self._session.closed:
            await self._session.close()
