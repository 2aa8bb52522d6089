"""The ``webhook`` sink: CloudEvents JSON, signed per Standard Webhooks.

Headers: ``webhook-id`` (the event id; for a batch, an id derived from its events' ids),
``webhook-timestamp`` (seconds, at sending), ``webhook-signature`` (``v1,<base64 HMAC-SHA256
of "id.timestamp.body">``, one per configured secret, space-separated, for key rotation).

The answer's status decides (``http.classify``). A 2xx is delivered as soon as its status
line arrives: its body is never waited for (one that is slow, huge or never comes must not
turn an accepted event into a timeout and a redelivery); of any other answer at most
``ANSWER_LIMIT`` bytes are read, for the reason.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import time
import uuid
from typing import TYPE_CHECKING

import aiohttp
import structlog

from notifier import __version__
from notifier.events import CONTENT_TYPE
from notifier.http import client_ssl
from notifier.sinks.base import Batching, Outcome
from notifier.sinks.http import classify, transport_failure
from notifier.sinks.webhook.config import WebhookSinkSettings, signing_key

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from notifier.sinks.base import Event

__all__ = ["BATCH_CONTENT_TYPE", "WebhookSink", "sign"]

BATCH_CONTENT_TYPE = "application/cloudevents-batch+json"
_BATCH_NAMESPACE = uuid.UUID("7f0f5d5e-8a43-4c1f-9a0e-3f4f9b7e2c11")
ANSWER_LIMIT = 4096  # bytes of a receiver's failure answer read, for the reason


def sign(keys: Sequence[bytes | hmac.HMAC], message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value: ``v1,<sig>`` per key, space-separated.

    A key may be given as an HMAC already keyed (``hmac.new(key, digestmod=sha256)``), which
    saves re-deriving it for every message.
    """
    message = f"{message_id}.{timestamp}.".encode() + body
    signatures = []
    for key in keys:
        mac = key.copy() if isinstance(key, hmac.HMAC) else hmac.new(key, digestmod=hashlib.sha256)
        mac.update(message)
        signatures.append("v1," + binascii.b2a_base64(mac.digest(), newline=False).decode())
    return " ".join(signatures)


class WebhookSink:
    """POSTs events to one URL. Pass in the session, or let it make its own."""

    def __init__(
        self,
        settings: WebhookSinkSettings,
        session: aiohttp.ClientSession | None = None,
        *,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self._url = settings.url.get_secret_value()
        self._keys = [
            hmac.new(signing_key(secret), digestmod=hashlib.sha256) for secret in settings.secret
        ]
        self._headers = {  # the same for every request; copied and completed per request
            **{k: v.get_secret_value() for k, v in settings.headers.items()},
            "Content-Type": CONTENT_TYPE,
            "User-Agent": f"storm-notifier/{__version__}",
        }
        self._timeout = aiohttp.ClientTimeout(total=settings.timeout)
        # Given per request, so that it holds for a session passed in too.
        self._ssl = client_ssl(verify_tls=settings.verify_tls, ca_file=settings.ca_file)
        if not settings.verify_tls:
            structlog.get_logger("notifier.sink").warning(
                "sink.tls_unverified",
                sink=settings.name,
                effect="the receiver's certificate is not checked: anyone on the path can read"
                " events and the URL's token",
                hint="give ca_file for a private CA, or remove verify_tls: false",
            )
        self._own_session = session is None
        self._session = session or aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=settings.concurrency), trust_env=False
        )
        self._wall_clock = wall_clock
        self._second = (-1, "")  # the last timestamp, and as text

    @property
    def batching(self) -> Batching:
        """One event a request, or up to ``batch_size`` within ``batch_wait``."""
        if self.settings.batch_size == 1:
            return Batching()
        return Batching(size=self.settings.batch_size, wait=self.settings.batch_wait)

    async def deliver(self, events: Sequence[Event]) -> Outcome:
        """One signed POST (in batch mode, always a JSON array); the answer decides."""
        headers = self._headers.copy()
        if self.settings.batch_size == 1:
            body, message_id = events[0].body, events[0].id
        else:
            body = b"[" + b",".join(e.body for e in events) + b"]"
            message_id = str(uuid.uuid5(_BATCH_NAMESPACE, ",".join(e.id for e in events)))
            headers["Content-Type"] = BATCH_CONTENT_TYPE
        timestamp = int(self._wall_clock())
        if timestamp != self._second[0]:
            self._second = (timestamp, str(timestamp))
        headers["webhook-id"] = message_id
        headers["webhook-timestamp"] = self._second[1]
        headers["webhook-signature"] = sign(self._keys, message_id, timestamp, body)
        try:
            async with self._session.post(
                self._url,
                data=body,
                headers=headers,
                timeout=self._timeout,
                allow_redirects=False,
                ssl=self._ssl,
            ) as response:
                if 200 <= response.status < 300:  # the status is the answer: no body awaited
                    return classify(response.status, response.headers, b"")
                answer = await response.content.read(ANSWER_LIMIT)
                return classify(response.status, response.headers, answer)
        except (TimeoutError, aiohttp.ClientError) as exc:
            return transport_failure(exc, self.settings.timeout)

    async def aclose(self) -> None:
        """Close the session if it is ours."""
        if self._own_session and not self._session.closed:
            await self._session.close()
