"""The webhook sink's HTTP/1.1 client (``poster``) against a raw TCP server on 127.0.0.1 that
answers each request with scripted bytes: keep-alive and when a connection is not reused,
bodies, 1xx, chunked answers, answers that are not HTTP, timeouts, stale connections, the
request's exact bytes, and the URL and header checks."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pytest

from notifier.sinks.webhook import WebhookSinkSettings
from notifier.sinks.webhook.poster import Answer, Poster, PostError, Target
from testkit.lane_watch import until

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


@dataclass
class Script:
    """What the server answers: ``answer(n)`` for the n-th request (from 0) gives the bytes to
    write, or None to close the connection without answering. ``requests`` holds each request
    as received (head and body), ``connections`` how many were opened."""

    answer: Callable[[int], bytes | None]
    later: dict[int, tuple[asyncio.Event, bytes]] = field(default_factory=dict)  # more, on cue
    requests: list[bytes] = field(default_factory=list)
    connections: int = 0
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                self.requests.append(head + await reader.readexactly(length))
                reply = self.answer(len(self.requests) - 1)
                if reply is None:
                    writer.close()
                    return
                writer.write(reply)
                await writer.drain()
                if (n := len(self.requests) - 1) in self.later:
                    cue, rest = self.later[n]
                    await cue.wait()
                    writer.write(rest)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            return


@contextlib.asynccontextmanager
async def server(answer: Callable[[int], bytes | None]) -> AsyncIterator[tuple[str, Script]]:
    script = Script(answer)
    srv = await asyncio.start_server(script.serve, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", script
    finally:
        for writer in script.writers:
            writer.close()
        srv.close()
        await srv.wait_closed()


async def post(
    poster: Poster, body: bytes = b"{}", within: float = 5.0, read: int = 4096
) -> Answer:
    """One request with one extra header line."""
    return await poster.post(b"X-Test: 1\r\n", body, within=within, read=read)


async def test_answers_on_one_keep_alive_connection() -> None:
    """Three requests, one connection; the status and nothing of a 2xx's body."""
    async with server(lambda _: OK) as (url, script):
        poster = Poster(Target.of(url + "/hook"))
        answers = [await post(poster) for _ in range(3)]
        await poster.aclose()
    assert [(a.status, a.body) for a in answers] == [(200, b"")] * 3
    assert script.connections == 1


async def test_the_request_is_exactly_what_is_sent() -> None:
    """Request line with the encoded path and query, Host with the port, Basic auth from the
    URL's user info, the caller's lines, Content-Length, the body."""
    async with server(lambda _: OK) as (url, script):
        port = url.rsplit(":", 1)[1]
        poster = Poster(Target.of(f"http://us%40r:p%3Ass@127.0.0.1:{port}/a b?t=ü"))
        await post(poster, b'{"x":1}')
        await poster.aclose()
    assert (
        script.requests
        == [
            b"POST /a%20b?t=%C3%BC HTTP/1.1\r\n"
            b"Host: 127.0.0.1:" + port.encode() + b"\r\n"
            b"Authorization: Basic dXNAcjpwOnNz\r\n"  # us@r:p:ss
            b"X-Test: 1\r\n"
            b"Content-Length: 7\r\n\r\n"
            b'{"x":1}'
        ]
    )


async def test_connection_close_and_an_unfinished_2xx_body_are_not_reused() -> None:
    """``Connection: close``, and a 2xx whose body has not all come (delivered at once): each
    next request opens a new connection."""
    answers = [
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nonly this",
        OK,
    ]
    async with server(lambda n: answers[n]) as (url, script):
        poster = Poster(Target.of(url))
        statuses = [(await post(poster)).status for _ in range(4)]
        await poster.aclose()
    assert statuses == [200, 204, 200, 200]
    assert script.connections == 3  # 204 kept its connection; the other two did not


async def test_a_2xx_body_that_comes_later_keeps_its_connection() -> None:
    """A 2xx answered at its head; its body comes afterwards (a server writing the head and the
    body apart): the connection goes back to the pool once the body is in, and is reused."""
    cue = asyncio.Event()
    async with server(lambda _: OK) as (url, script):
        head_only = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"
        script.answer = lambda n: head_only if n == 0 else OK
        script.later[0] = (cue, b"later")
        poster = Poster(Target.of(url))
        assert (await post(poster)).status == 200
        assert poster.idle == 0  # waiting for the body
        cue.set()
        await until(lambda: poster.idle == 1, "the connection back in the pool")
        assert (await post(poster)).status == 200
        await poster.aclose()
    assert script.connections == 1


async def test_a_failure_s_body_is_read_up_to_the_limit_with_retry_after() -> None:
    """A 503 with a long chunked body and Retry-After: the first ``read`` bytes, the header."""
    chunk = b"x" * 3000
    answer = (
        b"HTTP/1.1 503 Busy\r\nretry-after: 7\r\nTransfer-Encoding: chunked\r\n\r\n"
        + (b"%x\r\n%s\r\n" % (len(chunk), chunk)) * 3
        + b"0\r\n\r\n"
    )
    async with server(lambda _: answer) as (url, _script):
        poster = Poster(Target.of(url))
        got = await post(poster, read=4096)
        small = await post(poster, read=10)
        await poster.aclose()
    assert (got.status, got.headers, got.body) == (503, {"Retry-After": "7"}, b"x" * 4096)
    assert small.body == b"x" * 10


async def test_an_informational_answer_is_skipped() -> None:
    """A 100 Continue before the answer: the answer is the 201."""
    answer = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"
    async with server(lambda _: answer) as (url, script):
        poster = Poster(Target.of(url))
        assert (await post(poster)).status == 201
        assert (await post(poster)).status == 201
        await poster.aclose()
    assert script.connections == 1


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (b"SSH-2.0-OpenSSH_9.6\r\n", "the answer is not HTTP/1.1"),
        (b"HTTP/1.1 200 OK\r\nX: " + b"y" * 70_000, "the answer's headers exceed 64 KiB"),
    ],
)
async def test_an_answer_that_is_not_http_is_a_one_line_error(answer: bytes, reason: str) -> None:
    async with server(lambda _: answer) as (url, _script):
        poster = Poster(Target.of(url + "/secret-token"))
        with pytest.raises(PostError) as caught:
            await post(poster)
        await poster.aclose()
    assert str(caught.value).startswith(reason)
    assert "secret-token" not in str(caught.value)
    assert "\n" not in str(caught.value)


async def test_no_answer_in_time_is_a_timeout_and_the_connection_is_dropped() -> None:
    """The first request is never answered: TimeoutError at the deadline; the next request
    goes out on a new connection and is answered."""

    def answer(n: int) -> bytes | None:
        return OK if n else b""  # the first: nothing at all

    async with server(answer) as (url, script):
        poster = Poster(Target.of(url))
        started = asyncio.get_running_loop().time()
        with pytest.raises(TimeoutError):
            await post(poster, within=0.2)
        assert asyncio.get_running_loop().time() - started < 2.0
        assert (await post(poster)).status == 200
        await poster.aclose()
    assert script.connections == 2


async def test_a_stale_keep_alive_connection_is_retried_once_on_a_new_one() -> None:
    """The receiver closes a kept connection as the next request arrives (no byte of answer):
    that request is sent again on a new connection and answered."""

    def answer(n: int) -> bytes | None:
        return None if n == 1 else OK

    async with server(answer) as (url, script):
        poster = Poster(Target.of(url))
        assert (await post(poster)).status == 200
        assert (await post(poster)).status == 200
        await poster.aclose()
    assert script.connections == 2
    assert len(script.requests) == 3


async def test_a_new_connection_closed_without_an_answer_is_an_error() -> None:
    """On a fresh connection the same close is the receiver's doing: an error, not a resend."""
    async with server(lambda _: None) as (url, script):
        poster = Poster(Target.of(url))
        with pytest.raises(PostError, match="the server closed the connection"):
            await post(poster)
        await poster.aclose()
    assert len(script.requests) == 1


async def test_nobody_listening_is_connection_refused() -> None:
    async with server(lambda _: OK) as (url, _script):
        pass  # closed again: the port is free
    poster = Poster(Target.of(url))
    with pytest.raises(PostError, match=r"^connection refused$"):
        await post(poster)
    await poster.aclose()


async def test_a_cancelled_request_does_not_leave_its_connection_for_the_next() -> None:
    """Cancelled while waiting for the answer: the connection is closed, not reused (its late
    answer would be taken for the next request's)."""
    answers = [b"", OK]
    async with server(lambda n: answers[n]) as (url, script):
        poster = Poster(Target.of(url))
        task = asyncio.create_task(post(poster))
        while not script.requests:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert (await post(poster)).status == 200
        await poster.aclose()
    assert script.connections == 2


@pytest.mark.parametrize(
    "url",
    ["ftp://host/tok3n", "http:///tok3n", "http://host:99999/tok3n", "http://ho st/tok3n"],
)
def test_a_url_that_cannot_be_sent_to_is_refused_without_naming_it(url: str) -> None:
    with pytest.raises(ValueError, match="URL") as caught:
        Target.of(url)
    assert "tok3n" not in str(caught.value)


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({"X-Token": "a\r\nX-Evil: 1"}, "printable Latin-1 text on one line"),
        ({"Bad Name": "x"}, "is not an HTTP token"),
        ({"content-length": "1"}, "is set by the sink itself"),
        ({"Webhook-Signature": "v1,x"}, "is set by the sink itself"),
    ],
)
def test_headers_that_cannot_be_sent_are_config_errors(
    headers: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        WebhookSinkSettings.model_validate(
            {
                "name": "hooks",
                "url": "http://127.0.0.1/hook",
                "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                "headers": headers,
            }
        )
