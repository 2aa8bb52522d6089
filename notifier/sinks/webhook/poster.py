"""POSTing to one receiver URL over HTTP/1.1 keep-alive connections, with little per request.

A webhook sink sends one kind of request, to one URL, thousands of times a second: a signed
body, and back a status. A general client (aiohttp) spends about 50 µs of CPU per request on
what this never needs (cookies, redirects, proxies, middlewares, a task per request body); here
a request is one write of bytes prepared up front and an answer read by llhttp
(``httptools``) in C, about a third of the CPU (``bench/README.md``, ``bench.deliver``).

What a caller gets for one ``Poster.post``:

- an ``Answer``: the status, ``Retry-After`` if given, and for a status that is not 2xx up to
  ``read`` bytes of the body (the reason). A 2xx is the answer as soon as its head arrives: its
  body is never waited for;
- or ``TimeoutError`` when no answer came within the timeout (connecting included);
- or ``PostError`` with a one-line reason (never the URL): no connection, the connection
  closed before an answer, an answer that is not HTTP.

Connections: one request at a time each. A connection goes back to the pool only when its
answer was read to the end and the receiver keeps it open. An answer whose body is still
coming when the caller has what it needs (a 2xx's head; a failure's first ``read`` bytes)
keeps its connection waiting for the rest, at most ``DRAIN_LIMIT`` more bytes within the
request's time, and closes it otherwise; so does a timeout, a cancellation or a parse error.
Idle connections are dropped after ``IDLE_TIMEOUT`` and whenever the receiver closes them. A
request on a reused connection that the receiver closed before a single byte of answer (it
was closing that idle connection as the request went out) is sent once more on a new
connection. That receiver most likely never read it; if it did, the copy carries the same
``webhook-id`` (deliveries are at least once: receivers deduplicate).
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httptools
from yarl import URL

from notifier.http import connect_reason

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = ["Answer", "PostError", "Poster", "Target"]

IDLE_TIMEOUT = 15.0  # seconds an unused connection is kept (aiohttp's keep-alive default)
MAX_HEAD = 64 * 1024  # bytes of an answer's status line and headers at most
DRAIN_LIMIT = 64 * 1024  # bytes of a 2xx's late body waited for to keep the connection
_EMPTY: dict[str, str] = {}


class PostError(Exception):
    """A request that got no HTTP answer; ``str()`` is a one-line reason without the URL."""


class _ClosedError(PostError):
    """The receiver closed the connection; ``answered``: some of an answer had come."""

    def __init__(self, reason: str, *, answered: bool) -> None:
        super().__init__(reason)
        self.answered = answered


@dataclass(frozen=True, slots=True)
class Answer:
    """A receiver's answer: its status, ``Retry-After`` (as ``headers``) and a failure's body."""

    status: int
    headers: Mapping[str, str]
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class Target:
    """Where requests go, parsed once: the address and the start of every request's head."""

    host: str
    port: int
    tls: bool
    head: bytes  # "POST <path> HTTP/1.1", Host, and Authorization from the URL's user info

    @classmethod
    def of(cls, url: str, *, auth: bool = True) -> Target:
        """``ValueError`` (never naming the URL: it may hold a token) unless it is
        http(s)://host[:port][/path][?query]; the path and query are sent percent-encoded.
        The URL's user info becomes Basic authorization (with ``auth``; else it is ignored)."""
        try:
            parts = URL(url)
            port = parts.port
        except ValueError:
            raise ValueError("the URL cannot be parsed") from None
        if parts.scheme not in ("http", "https") or not parts.raw_host or port is None:
            raise ValueError("the URL must be http:// or https:// with a host")
        host = parts.raw_host
        shown = f"[{host}]" if ":" in host else host
        if parts.explicit_port is not None:
            shown += f":{port}"
        lines = [f"POST {parts.raw_path_qs or '/'} HTTP/1.1", f"Host: {shown}"]
        if auth and parts.user is not None:
            user = f"{parts.user}:{parts.password or ''}".encode()
            lines.append(f"Authorization: Basic {base64.b64encode(user).decode()}")
        head = "".join(line + "\r\n" for line in lines)
        if any(ord(c) <= 32 or ord(c) == 127 for c in host) or any(
            ord(c) < 32 or ord(c) == 127 for line in lines for c in line
        ):
            raise ValueError("the URL's host holds spaces or control characters")
        return cls(host, port, parts.scheme == "https", head.encode("latin-1"))


def tls_context(verify: ssl.SSLContext | bool) -> ssl.SSLContext:
    """The context of ``notifier.http.client_ssl``'s answer: the system's CAs for True, no
    verification for False, the given context as it is."""
    if isinstance(verify, ssl.SSLContext):
        return verify
    context = ssl.create_default_context()
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class _Connection(asyncio.Protocol):
    """One connection to the receiver: one request at a time, its answer parsed as it comes."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[int] | None = None  # the answer's head (its status)
        self._body_waiter: asyncio.Future[None] | None = None
        self._head_bytes = 0
        self._status = 0
        self._started = False  # a byte of the answer came
        self.complete = False  # the answer came to its end
        self.keep_alive = False
        self.retry_after: str | None = None
        self.body = bytearray()
        self.body_limit = 0
        self._drain_left = 0  # bytes of a 2xx's body still allowed to come (draining)
        self._drained: Callable[[], None] | None = None

    # --- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        if self._waiter is None and self._body_waiter is None and self._drained is None:
            self.close()  # an answer to no request: nothing here can be trusted any more
            return
        self._started = True
        if self._status == 0:
            self._head_bytes += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(PostError("the receiver answered with a protocol upgrade"))
        except httptools.HttpParserError as exc:
            self._fail(PostError(f"the answer is not HTTP/1.1 ({_parser_reason(exc)})"))
        else:
            if self._status == 0 and self._head_bytes > MAX_HEAD:
                self._fail(PostError(f"the answer's headers exceed {MAX_HEAD // 1024} KiB"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is not None and not self._waiter.done():
            reset = isinstance(exc, ConnectionResetError)
            reason = "connection reset" if reset else "the server closed the connection"
            self._waiter.set_exception(_ClosedError(reason, answered=self._started))
        if self._body_waiter is not None and not self._body_waiter.done():
            self._body_waiter.set_result(None)  # a failure's body: what came is the reason

    # --- httptools callbacks -------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"retry-after":
            self.retry_after = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if status < 200:  # 1xx: informational, the answer follows
            self.retry_after = None
            return
        self._status = status
        self.keep_alive = self._parser.should_keep_alive()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(status)

    def on_body(self, body: bytes) -> None:
        if self._drained is not None:
            self._drain_left -= len(body)
            if self._drain_left < 0:
                self.close()  # too much to wait for: the connection is not worth it
            return
        room = self.body_limit - len(self.body)
        if room > 0:
            self.body += body[:room]
            if len(self.body) >= self.body_limit:
                self._body_done()

    def on_message_complete(self) -> None:
        if self._status:
            self.complete = True
            self._body_done()
            drained, self._drained = self._drained, None
            if drained is not None:
                drained()

    def drain(self, limit: int, then: Callable[[], None]) -> None:
        """Let the rest of a 2xx's body come (at most ``limit`` bytes), then call ``then``;
        more than that, or a close, and the connection is closed instead."""
        self._drain_left = limit
        self._drained = then

    def stop_draining(self) -> None:
        """The body did not end in time: close the connection."""
        if self._drained is not None:
            self._drained = None
            self.close()

    # --- one exchange --------------------------------------------------------------------------

    def send(
        self, request: bytes, read: int, loop: asyncio.AbstractEventLoop
    ) -> asyncio.Future[int]:
        """Write one request; the future is the answer's status, once its head is read. Up to
        ``read`` bytes of its body are kept as they come (for a failure's reason)."""
        self._status = self._head_bytes = 0
        self._started = self.complete = self.keep_alive = False
        self.retry_after = None
        self.body = bytearray()
        self.body_limit = read
        waiter = self._waiter = loop.create_future()
        self._drained = None
        if self.transport is None or self.closed:
            waiter.set_exception(_ClosedError("the server closed the connection", answered=False))
        else:
            self.transport.write(request)
        return waiter

    async def read_body(self, loop: asyncio.AbstractEventLoop) -> bytes:
        """The kept body: what came by its end, by the limit given to ``send`` or a close."""
        if not (self.complete or self.closed or len(self.body) >= self.body_limit):
            self._body_waiter = loop.create_future()
            await self._body_waiter
        return bytes(self.body)

    def finished(self) -> None:
        """The exchange is over (``reusable`` says whether the connection may serve another)."""
        self._waiter = self._body_waiter = None

    @property
    def reusable(self) -> bool:
        return self.complete and self.keep_alive and not self.closed

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()  # no lingering: an unread body or a half-sent request

    def time_out(self) -> None:
        """The deadline passed: no answer (or not all of a failure's body) in time."""
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(TimeoutError())
        self._body_done()
        self.close()

    def _body_done(self) -> None:
        if self._body_waiter is not None and not self._body_waiter.done():
            self._body_waiter.set_result(None)

    def _fail(self, error: PostError) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(error)
        self._body_done()
        self.close()


def _parser_reason(exc: Exception) -> str:
    text = " ".join(str(exc).split())[:80]
    return text or type(exc).__name__


class Poster:
    """POSTs to one ``Target`` over a pool of keep-alive connections (module doc)."""

    def __init__(
        self,
        target: Target,
        *,
        verify: ssl.SSLContext | bool = True,
        idle_timeout: float = IDLE_TIMEOUT,
    ) -> None:
        """``verify``: what ``notifier.http.client_ssl`` says, for an https target."""
        self._target = target
        self._ssl = tls_context(verify) if target.tls else None
        self._idle: deque[_Connection] = deque()
        self._idle_timeout = idle_timeout
        self._closed = False

    async def post(self, head: bytes, body: bytes, *, within: float, read: int) -> Answer:
        """One request: the target's head, then ``head`` (header lines, each ending in CRLF),
        then ``body``; ``within``: seconds for the whole of it, connecting included; ``read``:
        bytes of a failure's body to read for the reason."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        request = b"%s%sContent-Length: %d\r\n\r\n%s" % (self._target.head, head, len(body), body)
        connection = self._take(loop.time())
        if connection is not None:
            try:
                return await self._exchange(connection, request, deadline, read, loop)
            except _ClosedError as exc:
                if exc.answered:
                    raise
                # The receiver was closing this idle connection as the request went out (module
                # doc). Once more, on a new connection.
        connection = await self._connect(deadline, loop)
        return await self._exchange(connection, request, deadline, read, loop)

    @property
    def idle(self) -> int:
        """Connections open and waiting for a request."""
        return sum(not connection.closed for connection in self._idle)

    async def aclose(self) -> None:
        """Close every idle connection; those in use close when their request ends."""
        self._closed = True
        while self._idle:
            self._idle.pop().close()

    def _take(self, now: float) -> _Connection | None:
        """The most recently used idle connection still open, if any (older ones expire)."""
        idle = self._idle
        while idle and (idle[0].closed or now - idle[0].idle_since > self._idle_timeout):
            idle.popleft().close()
        while idle:
            connection = idle.pop()
            if not connection.closed:
                return connection
        return None

    async def _connect(self, deadline: float, loop: asyncio.AbstractEventLoop) -> _Connection:
        target = self._target
        try:
            async with asyncio.timeout_at(deadline):
                _, connection = await loop.create_connection(
                    _Connection,
                    target.host,
                    target.port,
                    ssl=self._ssl,
                    server_hostname=target.host if self._ssl is not None else None,
                )
        except OSError as exc:  # ssl.SSLError and socket.gaierror are OSErrors too
            raise PostError(connect_reason(exc)) from None
        return connection

    async def _exchange(
        self,
        connection: _Connection,
        request: bytes,
        deadline: float,
        read: int,
        loop: asyncio.AbstractEventLoop,
    ) -> Answer:
        waiter = connection.send(request, read, loop)
        timer = loop.call_at(deadline, connection.time_out)
        try:
            status = await waiter
            failed = not 200 <= status < 300  # a 2xx's body is never waited for
            body = await connection.read_body(loop) if failed and read else b""
        except BaseException:  # a timeout, a close, a cancellation: this connection is done
            connection.close()
            raise
        finally:
            timer.cancel()
            connection.finished()
        headers = (
            _EMPTY if connection.retry_after is None else {"Retry-After": connection.retry_after}
        )
        if not (connection.complete or connection.closed) and connection.keep_alive:
            # The body is still coming: the connection is reused once it has all come (a
            # little of it, in the request's time), closed otherwise.
            drain_timer = loop.call_at(deadline, connection.stop_draining)
            connection.drain(DRAIN_LIMIT, lambda: self._keep(connection, loop, drain_timer))
        else:
            self._keep(connection, loop)
        return Answer(status, headers, body)

    def _keep(
        self,
        connection: _Connection,
        loop: asyncio.AbstractEventLoop,
        timer: asyncio.TimerHandle | None = None,
    ) -> None:
        """Back to the pool after an answer read to its end, if the receiver keeps it open."""
        if timer is not None:
            timer.cancel()
        if connection.reusable and not self._closed:
            connection.idle_since = loop.time()
            self._idle.append(connection)
        else:
            connection.close()
