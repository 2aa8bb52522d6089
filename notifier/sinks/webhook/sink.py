"""The ``webhook`` sink: CloudEvents JSON, signed per Standard Webhooks.

Headers: ``webhook-id`` (the event id; for a batch, an id derived from its events' ids),
``webhook-timestamp`` (seconds, at sending), ``webhook-signature`` (``v1,<base64 HMAC-SHA256
of "id.timestamp.body">``, one per configured secret, space-separated, for key rotation).

The answer's status decides (``http.classify``). A 2xx is delivered as soon as its status
line arrives: its body is never waited for (one that is slow, huge or never comes must not
turn an accepted event into a timeout and a redelivery); of any other answer at most
``ANSWER_LIMIT`` bytes are read, for the reason.

Requests go out through a ``poster.Poster`` of the sink's own (keep-alive connections to the
one URL, a request written as prepared bytes): the headers that are the same for every request
are serialised once, here, and each request adds only its id, timestamp and signature.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import time
import uuid
from typing import TYPE_CHECKING

import structlog

from notifier import __version__
from notifier.events import CONTENT_TYPE
from notifier.http import client_ssl, transport_reason
from notifier.sinks.base import Batching, Outcome, Retry
from notifier.sinks.http import classify
from notifier.sinks.webhook.config import WebhookSinkSettings, signing_key
from notifier.sinks.webhook.poster import Poster, PostError, Target

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
    """POSTs events to one URL over connections of its own."""

    def __init__(
        self, settings: WebhookSinkSettings, *, wall_clock: Callable[[], float] = time.time
    ) -> None:
        self.settings = settings
        self._keys = [
            hmac.new(signing_key(secret), digestmod=hashlib.sha256) for secret in settings.secret
        ]
        extra = {k: v.get_secret_value() for k, v in settings.headers.items()}
        given = {name.lower() for name in extra}
        target = Target.of(settings.url.get_secret_value(), auth="authorization" not in given)
        common = [*extra.items(), ("User-Agent", f"storm-notifier/{__version__}")]
        self._head = _lines([*common, ("Content-Type", CONTENT_TYPE)])
        self._batch_head = _lines([*common, ("Content-Type", BATCH_CONTENT_TYPE)])
        verify = client_ssl(verify_tls=settings.verify_tls, ca_file=settings.ca_file)
        if not settings.verify_tls:
            structlog.get_logger("notifier.sink").warning(
                "sink.tls_unverified",
                sink=settings.name,
                effect="the receiver's certificate is not checked: anyone on the path can read"
                " events and the URL's token",
                hint="give ca_file for a private CA, or remove verify_tls: false",
            )
        self._poster = Poster(target, verify=verify)
        self._wall_clock = wall_clock
        self._second = (-1, b"")  # the last timestamp, and its header line

    @property
    def batching(self) -> Batching:
        """One event a request, or up to ``batch_size`` within ``batch_wait``."""
        if self.settings.batch_size == 1:
            return Batching()
        return Batching(size=self.settings.batch_size, wait=self.settings.batch_wait)

    async def deliver(self, events: Sequence[Event]) -> Outcome:
        """One signed POST (in batch mode, always a JSON array); the answer decides."""
        if self.settings.batch_size == 1:
            body, message_id, head = events[0].body, events[0].id, self._head
        else:
            body = b"[" + b",".join(e.body for e in events) + b"]"
            message_id = str(uuid.uuid5(_BATCH_NAMESPACE, ",".join(e.id for e in events)))
            head = self._batch_head
        timestamp = int(self._wall_clock())
        if timestamp != self._second[0]:
            self._second = (timestamp, b"webhook-timestamp: %d\r\n" % timestamp)
        signature = sign(self._keys, message_id, timestamp, body)
        head = b"%swebhook-id: %s\r\n%swebhook-signature: %s\r\n" % (
            head,
            message_id.encode(),
            self._second[1],
            signature.encode(),
        )
        try:
            answer = await self._poster.post(
                head, body, within=self.settings.timeout, read=ANSWER_LIMIT
            )
        except TimeoutError as exc:
            return Retry(transport_reason(exc, self.settings.timeout))
        except PostError as exc:
            return Retry(str(exc))
        return classify(answer.status, answer.headers, answer.body)

    async def aclose(self) -> None:
        """Close the connections."""
        await self._poster.aclose()


def _lines(headers: Sequence[tuple[str, str]]) -> bytes:
    """Header lines, each ending in CRLF (names and values were checked by the settings)."""
    return "".join(f"{name}: {value}\r\n" for name, value in headers).encode("latin-1")
