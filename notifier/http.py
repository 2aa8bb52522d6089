"""What HTTP answers and failures mean, for both sides of the notifier, in one place.

The poller reads from Storm and the sinks deliver to receivers; both ask the same questions of
an answer (worth another attempt? how long does the server ask us to wait? how to say what
went wrong without leaking a URL?), and the answers live here, side by side:

===================  ==========================================  ==================================
status               reading Storm (``storm_retryable``)         delivering (``delivery_retryable``)
===================  ==========================================  ==================================
2xx                  success                                     delivered
3xx                  not followed: a request error               not followed: permanent
408, 429, 5xx        retried, honouring ``Retry-After``          retried, honouring ``Retry-After``
425 Too Early        **retried**                                 **permanent** (any other 4xx)
other 4xx            a request error                             permanent (410 also pauses)
===================  ==========================================  ==================================

The one difference is deliberate: reading the viewer list is idempotent and is repeated every
poll anyway, so a 425 costs nothing to retry; a delivery follows the receiver contract of
``docs/events.md`` ("Receiving webhooks") to the letter, where 425 is not in the retryable list.

Both sides verify TLS the same way too (``client_ssl``): on by default, against the system's CAs
or, with ``ca_file``, against that file's CAs only; ``verify_tls: false`` turns it off.
"""

from __future__ import annotations

import email.utils
import errno
import math
import re
import socket
import ssl
from typing import TYPE_CHECKING

import aiohttp

from notifier.durations import format_duration
from notifier.errors import ConfigError

if TYPE_CHECKING:
    from pathlib import Path

__all__ = [
    "RETRY_AFTER_CEILING",
    "client_ssl",
    "connect_reason",
    "delivery_retryable",
    "parse_retry_after",
    "redact_url",
    "storm_retryable",
    "transport_reason",
]

_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S+")

RETRY_AFTER_CEILING = 86400.0
"""The longest ``Retry-After`` that parsing believes (a day). Callers cap it to their own
policy: the Storm client to 5 minutes (``storm.requester.MAX_RETRY_AFTER``), deliveries by hand
to a minute (``sinks.redeliver.BY_HAND``); live deliveries wait as long as the receiver asks."""


def storm_retryable(status: int) -> bool:
    """Reading Storm: 408, 425, 429 and every 5xx are worth another attempt."""
    return status in (408, 425, 429) or 500 <= status <= 599


def delivery_retryable(status: int) -> bool:
    """Delivering: 408, 429 and every 5xx are worth another attempt; any other 4xx is not."""
    return status in (408, 429) or 500 <= status <= 599


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delay-seconds or an HTTP date).

    None when the header is absent or unreadable; never negative, at most ``RETRY_AFTER_CEILING``.
    """
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - now
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), RETRY_AFTER_CEILING)


def client_ssl(*, verify_tls: bool, ca_file: Path | None) -> ssl.SSLContext | bool:
    """What aiohttp's ``ssl=`` takes: the system's CAs (True), no verification (False), or a
    context that trusts only the CAs of ``ca_file``; ``ConfigError`` if that file is no PEM."""
    if not verify_tls or ca_file is None:
        return verify_tls
    try:
        return ssl.create_default_context(cafile=str(ca_file))
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "reason", None) or exc.strerror or type(exc).__name__
        raise ConfigError(f"ca_file {ca_file}: cannot load CA certificates ({reason})") from None


def transport_reason(exc: BaseException, timeout: float) -> str:
    """One line for a request that got no HTTP answer (never the URL: it may hold a token)."""
    if isinstance(exc, TimeoutError):
        return f"no answer within {format_duration(timeout)}"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "the body was cut off"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return connect_reason(exc.os_error)
    detail = _URL.sub(lambda m: redact_url(m.group(0)), " ".join(str(exc).split()))[:200]
    return f"transport error: {type(exc).__name__}" + (f": {detail}" if detail else "")


_CONNECT_ERRNOS = {
    errno.ECONNREFUSED: "connection refused",
    errno.ECONNRESET: "connection reset",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ENETUNREACH: "network unreachable",
    errno.ETIMEDOUT: "connect timed out",
}


def connect_reason(error: OSError) -> str:
    """``connection refused``, ``cannot resolve the host``...: the cause, not asyncio's text."""
    if isinstance(error, socket.gaierror):
        return "cannot resolve the host name"
    if isinstance(error, ssl.SSLCertVerificationError):
        detail = error.verify_message or error.reason or "untrusted"
        return f"certificate verify failed: {detail} (see verify_tls and ca_file)"
    if isinstance(error, ssl.SSLError | ssl.CertificateError):
        return f"TLS handshake failed ({error.__class__.__name__})"
    known = _CONNECT_ERRNOS.get(error.errno or 0)
    if known is None and isinstance(error, ConnectionRefusedError):
        known = "connection refused"
    return known or f"cannot connect ({error.strerror or type(error).__name__})"


def redact_url(url: str) -> str:
    """``https://hooks.example.com/…``: scheme and host only, for logs and errors."""
    scheme, sep, rest = url.partition("://")
    host = rest.split("/", 1)[0].rsplit("@", 1)[-1]
    return f"{scheme}{sep}{host}/…" if sep else "…"
